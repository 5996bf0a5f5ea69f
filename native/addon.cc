#include "common.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vhostd::InitFdIo(env, exports);
  vhostd::InitMapping(env, exports);
  vhostd::InitFdWatch(env, exports);
  vhostd::InitUring(env, exports);
  vhostd::InitMemCopy(env, exports);
  vhostd::InitClock(env, exports);
  return exports;
}

NODE_API_MODULE(vhostd_native, Init)
