// CLOCK_MONOTONIC into a Float64Array the caller registered once. Every clock Node 20 offers
// allocates per read (performance.now() boxes a double, hrtime() builds an array), and the
// reactors read the clock on every poll pass; writing into fixed memory allocates nothing.
#include "common.h"
#include <time.h>

namespace vhostd {
namespace {

// One cell per thread: each reactor (worker thread) registers its own.
thread_local double* g_cell = nullptr;

// clockRegister(cell: Float64Array over a SharedArrayBuffer) -> 0 | -EINVAL. The array must stay
// alive for the thread's lifetime (the caller keeps it in a module constant).
napi_value Register(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, nullptr);
  int rc = -EINVAL;
  napi_typedarray_type type;
  size_t length;
  void* data;
  napi_value ab;
  size_t byteOffset;
  if (argc == 1 && napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &byteOffset) == napi_ok &&
      type == napi_float64_array && length >= 1) {
    g_cell = static_cast<double*>(data);
    rc = 0;
  }
  napi_value out;
  napi_create_int32(env, rc, &out);
  return out;
}

// clockTick(): cell[0] = CLOCK_MONOTONIC in milliseconds.
napi_value Tick(napi_env env, napi_callback_info cbinfo) {
  if (g_cell != nullptr) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    g_cell[0] = static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
  }
  return nullptr;
}

}  // namespace

void InitClock(Napi::Env env, Napi::Object exports) {
  napi_value fn;
  napi_create_function(env, "clockRegister", NAPI_AUTO_LENGTH, Register, nullptr, &fn);
  exports.Set("clockRegister", Napi::Value(env, fn));
  napi_create_function(env, "clockTick", NAPI_AUTO_LENGTH, Tick, nullptr, &fn);
  exports.Set("clockTick", Napi::Value(env, fn));
}

}  // namespace vhostd
