// Ceph RBD through librbd (owned by the RBD bdev work).
#include "common.h"

namespace vhostd {
void InitRbd(Napi::Env env, Napi::Object exports) {}
}  // namespace vhostd
