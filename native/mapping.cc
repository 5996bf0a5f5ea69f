// mmap of guest-memory fds (memfd, hugetlbfs) into SharedArrayBuffers that worker threads share.
// The backing store's deleter unmaps once no thread references the buffer any more; release()
// drops the guest file at once (QEMU removed the region) by replacing the mapping in place with
// anonymous memory, so a late access from JS reads zeros instead of faulting.
#include "common.h"
#include <v8.h>
#include <sys/mman.h>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace vhostd {
namespace {

struct Mapping { void* addr; size_t len; };
std::mutex g_mu;
std::unordered_map<uint32_t, Mapping> g_maps;
uint32_t g_next_id = 1;

napi_value ToNapi(v8::Local<v8::Value> v) {
  napi_value out;
  static_assert(sizeof(out) == sizeof(v), "napi_value is a v8::Local");
  memcpy(static_cast<void*>(&out), &v, sizeof(out));
  return out;
}

void Unmap(void* data, size_t len, void* deleter_data) {
  uint32_t id = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(deleter_data));
  munmap(data, len);
  std::lock_guard<std::mutex> lock(g_mu);
  g_maps.erase(id);
}

// mmapShared(fd, length, offset) -> { id, buffer: SharedArrayBuffer } | -errno.
Napi::Value MmapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0);
  int64_t len = ArgInt64(info, 1), off = ArgInt64(info, 2);
  if (len <= 0 || off < 0) { errno = EINVAL; return Errno(env); }
  void* p = mmap(nullptr, static_cast<size_t>(len), PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
  if (p == MAP_FAILED) return Errno(env);
  uint32_t id;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    id = g_next_id++;
    g_maps[id] = Mapping{p, static_cast<size_t>(len)};
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  auto store = v8::SharedArrayBuffer::NewBackingStore(p, static_cast<size_t>(len), Unmap,
                                                      reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(isolate, std::move(store));
  Napi::Object result = Napi::Object::New(env);
  result.Set("id", Napi::Number::New(env, id));
  result.Set("buffer", Napi::Value(env, ToNapi(sab)));
  return result;
}

// releaseMapping(id) -> 0 | -errno: drop the guest file now, keep the address range valid.
Napi::Value ReleaseMapping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = static_cast<uint32_t>(ArgInt(info, 0));
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_maps.find(id);
  if (it == g_maps.end()) { errno = ENOENT; return Errno(env); }
  void* p = mmap(it->second.addr, it->second.len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? Errno(env) : Napi::Number::New(env, 0);
}

Napi::Value MappingCount(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_mu);
  return Napi::Number::New(info.Env(), static_cast<double>(g_maps.size()));
}

}  // namespace

void InitMapping(Napi::Env env, Napi::Object exports) {
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared));
  exports.Set("releaseMapping", Napi::Function::New(env, ReleaseMapping));
  exports.Set("mappingCount", Napi::Function::New(env, MappingCount));
}

}  // namespace vhostd
