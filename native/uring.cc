// io_uring through liburing (owned by the io_uring bdev work).
#include "common.h"

namespace vhostd {
void InitUring(Napi::Env env, Napi::Object exports) {}
}  // namespace vhostd
