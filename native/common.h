// Shared helpers for the thin syscall layer. No policy lives in native/: every function
// maps one-to-one onto a syscall (or a libuv watch) and reports errno as a negative number.
#pragma once
#include <napi.h>
#include <cerrno>

namespace vhostd {

// Return -errno from the last failing syscall as a JS number.
inline Napi::Number Errno(Napi::Env env) { return Napi::Number::New(env, -errno); }

inline int ArgInt(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }
inline int64_t ArgInt64(const Napi::CallbackInfo& info, size_t i) {
  // A number (the common case) in one N-API call; a BigInt, or the TypeError, after that.
  int64_t v;
  if (napi_get_value_int64(info.Env(), info[i], &v) == napi_ok) return v;
  if (info[i].IsBigInt()) { bool lossless; return info[i].As<Napi::BigInt>().Int64Value(&lossless); }
  return info[i].As<Napi::Number>().Int64Value();
}

void InitFdIo(Napi::Env env, Napi::Object exports);
void InitMapping(Napi::Env env, Napi::Object exports);
void InitFdWatch(Napi::Env env, Napi::Object exports);
void InitUring(Napi::Env env, Napi::Object exports);
void InitRbd(Napi::Env env, Napi::Object exports);
void InitMemCopy(Napi::Env env, Napi::Object exports);
void InitClock(Napi::Env env, Napi::Object exports);

}  // namespace vhostd
