#include "common.h"

// librbd's binding is an addon of its own, loaded on the first RBD bdev: loading librbd and
// librados (and the Ceph libraries behind them) costs every vhostd process about 18 MiB of
// resident memory, which a target without RBD bdevs should not pay.
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vhostd::InitRbd(env, exports);
  return exports;
}

NODE_API_MODULE(vhostd_rbd, Init)
