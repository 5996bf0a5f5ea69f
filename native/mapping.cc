// mmap of guest-memory fds (memfd, hugetlbfs) into SharedArrayBuffers that worker threads share.
// The backing store's deleter unmaps once no thread references the buffer any more; release()
// drops the guest file at once (QEMU removed the region) by replacing the mapping in place with
// anonymous memory, so a late access from JS reads zeros instead of faulting.
//
// A file mapped here can shrink under us (a front-end truncating its guest memory fd, someone
// truncating a bdev's file, a hugetlbfs pool running dry): the next access raises SIGBUS, which
// would kill the whole daemon. A SIGBUS handler catches faults inside these mappings, replaces
// the mapping with anonymous memory (the access then reads zeros and completes), marks it faulted
// and bumps a counter JS can read without a call; faults elsewhere keep their default action.
#include "common.h"
#include <v8.h>
#include <signal.h>
#include <sys/mman.h>
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace vhostd {
namespace {

struct Mapping { void* addr; size_t len; };
std::mutex g_mu;
std::unordered_map<uint32_t, Mapping> g_maps;
uint32_t g_next_id = 1;

// Guarded ranges, read by the signal handler without locks (slots are written under g_mu).
constexpr size_t kGuardSlots = 4096;
struct GuardSlot {
  std::atomic<uintptr_t> start{0};
  std::atomic<size_t> len{0};
  std::atomic<uint32_t> id{0};
  std::atomic<int> faulted{0};
};
GuardSlot g_guard[kGuardSlots];
// Faults handled so far; JS reads it through a SharedArrayBuffer (faultCounter()).
alignas(8) int32_t g_fault_cell[2] = {0, 0};
struct sigaction g_prev_sigbus;
std::once_flag g_guard_once;

void OnSigbus(int sig, siginfo_t* si, void* uc) {
  uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  for (size_t i = 0; i < kGuardSlots; i++) {
    uintptr_t s = g_guard[i].start.load(std::memory_order_acquire);
    if (s == 0 || a < s || a - s >= g_guard[i].len.load(std::memory_order_relaxed)) continue;
    void* p = mmap(reinterpret_cast<void*>(s), g_guard[i].len.load(std::memory_order_relaxed), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) break;
    g_guard[i].faulted.store(1, std::memory_order_release);
    __atomic_add_fetch(&g_fault_cell[0], 1, __ATOMIC_SEQ_CST);
    return;  // the faulting access runs again, on anonymous memory
  }
  // Not one of ours: what would have happened without this handler.
  if (g_prev_sigbus.sa_flags & SA_SIGINFO) {
    if (g_prev_sigbus.sa_sigaction != nullptr) return g_prev_sigbus.sa_sigaction(sig, si, uc);
  } else if (g_prev_sigbus.sa_handler != SIG_DFL && g_prev_sigbus.sa_handler != SIG_IGN) {
    return g_prev_sigbus.sa_handler(sig);
  }
  signal(SIGBUS, SIG_DFL);  // returning re-raises the fault with the default action
}

void InstallGuard() {
  std::call_once(g_guard_once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_prev_sigbus);
  });
}

// Called with g_mu held.
void GuardAdd(uint32_t id, void* addr, size_t len) {
  for (size_t i = 0; i < kGuardSlots; i++) {
    if (g_guard[i].start.load(std::memory_order_relaxed) != 0) continue;
    g_guard[i].id.store(id, std::memory_order_relaxed);
    g_guard[i].faulted.store(0, std::memory_order_relaxed);
    g_guard[i].len.store(len, std::memory_order_relaxed);
    g_guard[i].start.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
    return;
  }
  // More live mappings than slots: this one is simply not guarded.
}

// Called with g_mu held.
GuardSlot* GuardFind(uint32_t id) {
  for (size_t i = 0; i < kGuardSlots; i++) {
    if (g_guard[i].start.load(std::memory_order_relaxed) != 0 && g_guard[i].id.load(std::memory_order_relaxed) == id) return &g_guard[i];
  }
  return nullptr;
}

napi_value ToNapi(v8::Local<v8::Value> v) {
  napi_value out;
  static_assert(sizeof(out) == sizeof(v), "napi_value is a v8::Local");
  memcpy(static_cast<void*>(&out), &v, sizeof(out));
  return out;
}

void Unmap(void* data, size_t len, void* deleter_data) {
  uint32_t id = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(deleter_data));
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (GuardSlot* g = GuardFind(id)) g->start.store(0, std::memory_order_release);
    g_maps.erase(id);
  }
  munmap(data, len);
}

// Registers a fresh mapping (with the SIGBUS guard when the file behind it can shrink) and wraps
// it in a SharedArrayBuffer that unmaps it once the last isolate lets go.
Napi::Value Share(Napi::Env env, void* p, size_t len, bool guard) {
  uint32_t id;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    id = g_next_id++;
    g_maps[id] = Mapping{p, len};
    if (guard) GuardAdd(id, p, len);
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  auto store = v8::SharedArrayBuffer::NewBackingStore(p, len, Unmap, reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(isolate, std::move(store));
  Napi::Object result = Napi::Object::New(env);
  result.Set("id", Napi::Number::New(env, id));
  result.Set("buffer", Napi::Value(env, ToNapi(sab)));
  return result;
}

// mmapShared(fd, length, offset) -> { id, buffer: SharedArrayBuffer } | -errno.
Napi::Value MmapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0);
  int64_t len = ArgInt64(info, 1), off = ArgInt64(info, 2);
  if (len <= 0 || off < 0) { errno = EINVAL; return Errno(env); }
  void* p = mmap(nullptr, static_cast<size_t>(len), PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
  if (p == MAP_FAILED) return Errno(env);
  return Share(env, p, static_cast<size_t>(len), true);
}

// mmapAnon(length) -> { id, buffer: SharedArrayBuffer } | -errno: private anonymous memory (a
// malloc bdev's RAM disk), the same kind calloc hands out for large sizes, but with an id, so
// releaseMapping() returns its pages to the system at once: a SharedArrayBuffer's own memory goes
// only once every isolate that ever saw it (the reactors too) collected its last reference, and
// idle isolates do not collect. Never shrinks under us, so it needs no SIGBUS guard.
Napi::Value MmapAnon(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t len = ArgInt64(info, 0);
  if (len <= 0) { errno = EINVAL; return Errno(env); }
  void* p = mmap(nullptr, static_cast<size_t>(len), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Errno(env);
  return Share(env, p, static_cast<size_t>(len), false);
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

// mappingFaulted(id) -> 1 if a SIGBUS inside the mapping replaced it with anonymous memory, else 0.
Napi::Value MappingFaulted(const Napi::CallbackInfo& info) {
  uint32_t id = static_cast<uint32_t>(ArgInt(info, 0));
  std::lock_guard<std::mutex> lock(g_mu);
  GuardSlot* g = GuardFind(id);
  return Napi::Number::New(info.Env(), g != nullptr && g->faulted.load(std::memory_order_acquire) ? 1 : 0);
}

// faultCounter() -> SharedArrayBuffer whose first int32 counts the SIGBUS faults handled (process-wide).
Napi::Value FaultCounter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  auto store = v8::SharedArrayBuffer::NewBackingStore(g_fault_cell, sizeof(g_fault_cell), v8::BackingStore::EmptyDeleter, nullptr);
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(isolate, std::move(store));
  return Napi::Value(env, ToNapi(sab));
}

Napi::Value MappingCount(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_mu);
  return Napi::Number::New(info.Env(), static_cast<double>(g_maps.size()));
}

}  // namespace

void InitMapping(Napi::Env env, Napi::Object exports) {
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared));
  exports.Set("mmapAnon", Napi::Function::New(env, MmapAnon));
  exports.Set("releaseMapping", Napi::Function::New(env, ReleaseMapping));
  exports.Set("mappingCount", Napi::Function::New(env, MappingCount));
  exports.Set("mappingFaulted", Napi::Function::New(env, MappingFaulted));
  exports.Set("faultCounter", Napi::Function::New(env, FaultCounter));
  InstallGuard();
}

}  // namespace vhostd
