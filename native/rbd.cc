// Ceph RBD through librados/librbd (owned by the RBD bdev work). A thin layer, no policy:
//
// * Handles. Clusters (rados_t), pool contexts (rados_ioctx_t) and images (rbd_image_t) live in one
//   process-wide table keyed by small integer ids, so the control thread and every reactor worker
//   (each its own napi env, all in one process) name the same objects. Each handle is refcounted:
//   the table holds one reference (dropped by close), a pool context holds its cluster, an image its
//   pool context, and every RbdQueue its image. The last release closes the librados/librbd object.
// * Blocking calls (rados_connect, rados_ioctx_create, rbd_open, rbd_close, rados_shutdown) run on a
//   fresh thread each and settle a Promise through a thread-safe function, so an unreachable cluster
//   never stalls a JS thread nor occupies libuv's small thread pool. A last release that happens on a
//   JS thread or on a librbd callback thread (where rbd_close would deadlock) is moved to a thread too.
// * RbdQueue: one per reactor channel. Submits rbd_aio_* straight from guest-memory iovecs (data
//   pointers of the Uint8Array windows, no copy); librbd's completion callbacks append (slot, result)
//   to a mutex-protected list and signal an eventfd that the reactor watches; drain() hands the list
//   to JS in preallocated typed arrays (an atomic count makes an empty drain nearly free, for
//   reactors that poll).
// Every function returns a non-negative result or -errno, like the rest of native/.
#include "common.h"
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace vhostd {
namespace {

enum class Kind { Cluster, Ioctx, Image };

struct Handle {
  explicit Handle(Kind k) : kind(k) {}
  Kind kind;
  std::atomic<int> refs{1};
  Handle* parent = nullptr;  // the reference this handle holds on its cluster / pool context
  rados_t cluster = nullptr;
  rados_ioctx_t ioctx = nullptr;
  rbd_image_t image = nullptr;
  uint64_t size = 0;  // image size in bytes, read right after open
  std::atomic<bool> connected{false};
  std::vector<int> cpus;  // cluster: affinity for the threads that connect and open (core_mask)
  std::mutex close_mu;            // serializes the final close with closeAllSync at exit
  std::atomic<bool> closed{false};  // image closed (submissions fail with -ESHUTDOWN)
};

std::mutex g_mu;
std::unordered_map<uint32_t, Handle*> g_handles;
uint32_t g_next_id = 1;

uint32_t Register(Handle* h) {
  std::lock_guard<std::mutex> lock(g_mu);
  uint32_t id = g_next_id++;
  g_handles[id] = h;
  return id;
}

// Looks up `id` of `kind` and takes a reference on it (nullptr if unknown).
Handle* Acquire(uint32_t id, Kind kind) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_handles.find(id);
  if (it == g_handles.end() || it->second->kind != kind) return nullptr;
  it->second->refs.fetch_add(1);
  return it->second;
}

// Removes `id` from the table; its table reference passes to the caller.
Handle* Unregister(uint32_t id, Kind kind) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_handles.find(id);
  if (it == g_handles.end() || it->second->kind != kind) return nullptr;
  Handle* h = it->second;
  g_handles.erase(it);
  return h;
}

void CloseImage(Handle* h) {
  std::lock_guard<std::mutex> lock(h->close_mu);
  if (h->image && !h->closed.exchange(true)) {
    rbd_flush(h->image);
    rbd_close(h->image);
  }
}

// Drops one reference; the last one closes the object and releases its parent. Blocks (librbd and
// librados teardown talk to the cluster): call only from a thread that may block.
void ReleaseInline(Handle* h) {
  while (h && h->refs.fetch_sub(1) == 1) {
    Handle* parent = h->parent;
    switch (h->kind) {
      case Kind::Image: CloseImage(h); break;
      case Kind::Ioctx: if (h->ioctx) rados_ioctx_destroy(h->ioctx); break;
      case Kind::Cluster: if (h->cluster) rados_shutdown(h->cluster); break;
    }
    delete h;
    h = parent;
  }
}

// Drops one reference from a thread that must not block; a last release moves to its own thread.
void ReleaseDetached(Handle* h) {
  if (h->refs.fetch_sub(1) != 1) return;
  h->refs.store(1);
  try {
    std::thread([h] { ReleaseInline(h); }).detach();
  } catch (const std::system_error&) {
    // No thread to spare: leak the handle rather than block this thread.
  }
}

// ---- Promises settled from a helper thread ---------------------------------------------------

struct AsyncOp {
  Napi::Promise::Deferred deferred;
  double result = 0;
};

// Runs `work` on a new thread; the returned Promise resolves with its result (>= 0 or -errno).
Napi::Value RunOnThread(Napi::Env env, std::function<double()> work) {
  auto deferred = Napi::Promise::Deferred::New(env);
  auto* op = new AsyncOp{deferred};
  auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "vhostd:rbd", 0, 1);
  try {
    std::thread([tsfn, op, work = std::move(work)]() mutable {
      op->result = work();
      napi_status st = tsfn.BlockingCall(op, [](Napi::Env env, Napi::Function, AsyncOp* op) {
        op->deferred.Resolve(Napi::Number::New(env, op->result));
        delete op;
      });
      if (st != napi_ok) delete op;  // the env is going away
      tsfn.Release();
    }).detach();
  } catch (const std::system_error&) {
    tsfn.Release();
    op->deferred.Resolve(Napi::Number::New(env, -EAGAIN));
    delete op;
  }
  return deferred.Promise();
}

// Pins the calling thread to `cpus` (no-op if empty); librados/librbd threads started from it
// inherit the mask. Returns 0 or -errno.
int PinTo(const std::vector<int>& cpus) {
  if (cpus.empty()) return 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &set);
  return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Uint32Value(); }

// Optional string argument: undefined/null -> nullptr.
bool ArgOptString(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return false;
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

// ---- Cluster and image handles (control thread) ----------------------------------------------

// rbdClusterCreate(userId | null) -> id | -errno  (rados_create: no I/O)
Napi::Value ClusterCreate(const Napi::CallbackInfo& info) {
  std::string user;
  bool has_user = ArgOptString(info, 0, &user);
  rados_t cluster;
  int rc = rados_create(&cluster, has_user ? user.c_str() : nullptr);
  if (rc < 0) return Napi::Number::New(info.Env(), rc);
  auto* h = new Handle(Kind::Cluster);
  h->cluster = cluster;
  return Napi::Number::New(info.Env(), Register(h));
}

// rbdConfReadFile(clusterId, path | null) -> 0 | -errno  (null: $CEPH_CONF, then the default paths)
Napi::Value ConfReadFile(const Napi::CallbackInfo& info) {
  Handle* h = Acquire(ArgU32(info, 0), Kind::Cluster);
  if (!h) return Napi::Number::New(info.Env(), -ENOENT);
  std::string path;
  bool has_path = ArgOptString(info, 1, &path);
  int rc = h->connected ? -EISCONN : rados_conf_read_file(h->cluster, has_path ? path.c_str() : nullptr);
  ReleaseDetached(h);
  return Napi::Number::New(info.Env(), rc);
}

// rbdConfSet(clusterId, key, value) -> 0 | -errno
Napi::Value ConfSet(const Napi::CallbackInfo& info) {
  Handle* h = Acquire(ArgU32(info, 0), Kind::Cluster);
  if (!h) return Napi::Number::New(info.Env(), -ENOENT);
  std::string key = info[1].As<Napi::String>().Utf8Value(), value = info[2].As<Napi::String>().Utf8Value();
  int rc = rados_conf_set(h->cluster, key.c_str(), value.c_str());
  ReleaseDetached(h);
  return Napi::Number::New(info.Env(), rc);
}

// rbdConfGet(clusterId, key) -> string | -errno
Napi::Value ConfGet(const Napi::CallbackInfo& info) {
  Handle* h = Acquire(ArgU32(info, 0), Kind::Cluster);
  if (!h) return Napi::Number::New(info.Env(), -ENOENT);
  std::string key = info[1].As<Napi::String>().Utf8Value();
  std::vector<char> buf(4096);
  int rc = rados_conf_get(h->cluster, key.c_str(), buf.data(), buf.size());
  ReleaseDetached(h);
  if (rc < 0) return Napi::Number::New(info.Env(), rc);
  return Napi::String::New(info.Env(), buf.data());
}

// rbdConnect(clusterId, cpus: number[]) -> Promise<0 | -errno>. The connecting thread is pinned to
// `cpus` (if any) first, so the threads librados starts inherit that affinity; so are the threads
// that later create pool contexts and open images on this cluster.
Napi::Value Connect(const Napi::CallbackInfo& info) {
  Handle* h = Acquire(ArgU32(info, 0), Kind::Cluster);
  if (!h) return RunOnThread(info.Env(), [] { return -ENOENT; });
  std::vector<int> cpus;
  if (info.Length() > 1 && info[1].IsArray()) {
    Napi::Array a = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) cpus.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  }
  return RunOnThread(info.Env(), [h, cpus] {
    int rc = h->connected ? -EISCONN : PinTo(cpus);
    if (rc == 0) rc = rados_connect(h->cluster);
    if (rc == 0) {
      h->cpus = cpus;
      h->connected = true;
    }
    ReleaseInline(h);
    return static_cast<double>(rc);
  });
}

// rbdIoctxCreate(clusterId, pool) -> Promise<ioctxId | -errno>
Napi::Value IoctxCreate(const Napi::CallbackInfo& info) {
  Handle* c = Acquire(ArgU32(info, 0), Kind::Cluster);
  std::string pool = info[1].As<Napi::String>().Utf8Value();
  if (!c) return RunOnThread(info.Env(), [] { return -ENOENT; });
  return RunOnThread(info.Env(), [c, pool] {
    if (!c->connected) { ReleaseInline(c); return static_cast<double>(-ENOTCONN); }
    PinTo(c->cpus);
    rados_ioctx_t io;
    int rc = rados_ioctx_create(c->cluster, pool.c_str(), &io);
    if (rc < 0) { ReleaseInline(c); return static_cast<double>(rc); }
    auto* h = new Handle(Kind::Ioctx);
    h->ioctx = io;
    h->parent = c;  // keeps the reference taken above
    return static_cast<double>(Register(h));
  });
}

// rbdImageOpen(ioctxId, name, readOnly) -> Promise<imageId | -errno>; the size is read right after.
Napi::Value ImageOpen(const Napi::CallbackInfo& info) {
  Handle* io = Acquire(ArgU32(info, 0), Kind::Ioctx);
  std::string name = info[1].As<Napi::String>().Utf8Value();
  bool read_only = info.Length() > 2 && info[2].ToBoolean().Value();
  if (!io) return RunOnThread(info.Env(), [] { return -ENOENT; });
  return RunOnThread(info.Env(), [io, name, read_only] {
    PinTo(io->parent->cpus);  // librbd starts its threads with the first open
    rbd_image_t img;
    int rc = read_only ? rbd_open_read_only(io->ioctx, name.c_str(), &img, nullptr)
                       : rbd_open(io->ioctx, name.c_str(), &img, nullptr);
    if (rc < 0) { ReleaseInline(io); return static_cast<double>(rc); }
    uint64_t size = 0;
    rc = rbd_get_size(img, &size);
    if (rc < 0) { rbd_close(img); ReleaseInline(io); return static_cast<double>(rc); }
    auto* h = new Handle(Kind::Image);
    h->image = img;
    h->size = size;
    h->parent = io;
    return static_cast<double>(Register(h));
  });
}

// rbdImageSize(imageId) -> bytes (as read at open) | -errno
Napi::Value ImageSize(const Napi::CallbackInfo& info) {
  Handle* h = Acquire(ArgU32(info, 0), Kind::Image);
  if (!h) return Napi::Number::New(info.Env(), -ENOENT);
  double size = static_cast<double>(h->size);
  ReleaseDetached(h);
  return Napi::Number::New(info.Env(), size);
}

// rbdClose(kind, id) -> Promise<0 | -errno>: drops the table's reference; the object is closed (and
// the Promise settles) once nothing else holds it, or later by the last holder.
Napi::Value Close(const Napi::CallbackInfo& info, Kind kind) {
  Handle* h = Unregister(ArgU32(info, 0), kind);
  if (!h) return RunOnThread(info.Env(), [] { return -ENOENT; });
  return RunOnThread(info.Env(), [h] {
    ReleaseInline(h);
    return 0.0;
  });
}

// rbdCloseAllSync(timeoutMs, exitCode) -> number of handles. For process exit: flushes and closes
// every image still in the table (even if a queue still holds it), then drops the table's
// references, on a helper thread. If that takes longer than timeoutMs (a cluster that stopped
// answering), the process ends at once with _exit(exitCode) rather than hang in librbd or run
// static destructors under librados threads still at work.
Napi::Value CloseAllSync(const Napi::CallbackInfo& info) {
  double timeout_ms = info[0].As<Napi::Number>().DoubleValue();
  int exit_code = ArgInt(info, 1);
  std::vector<Handle*> hs;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (auto& [id, h] : g_handles) hs.push_back(h);
    g_handles.clear();
  }
  if (hs.empty()) return Napi::Number::New(info.Env(), 0);
  struct Done {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto done = std::make_shared<Done>();
  std::thread([hs, done] {
    for (Handle* h : hs) if (h->kind == Kind::Image) CloseImage(h);
    // Images before pool contexts before clusters, so parents go last.
    for (Kind k : {Kind::Image, Kind::Ioctx, Kind::Cluster})
      for (Handle* h : hs) if (h->kind == k) ReleaseInline(h);
    std::lock_guard<std::mutex> lock(done->mu);
    done->done = true;
    done->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(done->mu);
  if (!done->cv.wait_for(lock, std::chrono::duration<double, std::milli>(timeout_ms), [&] { return done->done; })) {
    _exit(exit_code);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(hs.size()));
}

Napi::Value HandleCount(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_mu);
  return Napi::Number::New(info.Env(), static_cast<double>(g_handles.size()));
}

// ---- RbdQueue: the data path of one reactor channel ------------------------------------------

struct Queue;

struct Slot {
  Slot(Queue* queue, uint32_t i) : q(queue), index(i) {}
  Queue* q;
  uint32_t index;
  bool busy = false;
  std::vector<iovec> iov;  // must outlive rbd_aio_readv: librbd keeps the pointer
};

struct Queue {
  Queue(Handle* img, int fd) : image(img), efd(fd) {}
  Handle* image;
  int efd;
  std::mutex mu;
  std::vector<std::pair<uint32_t, double>> done;  // guarded by mu
  std::atomic<size_t> ready{0};                   // done.size(), readable without the lock
  int inflight = 0;                               // guarded by mu
  bool closed = false;                            // guarded by mu
  std::vector<std::unique_ptr<Slot>> slots;       // touched by the JS thread only
};

constexpr uint32_t kMaxSlots = 1u << 20;

void DestroyQueue(Queue* q) {
  close(q->efd);
  ReleaseDetached(q->image);
  delete q;
}

void OnAioComplete(rbd_completion_t c, void* arg) {
  auto* slot = static_cast<Slot*>(arg);
  Queue* q = slot->q;
  double result = static_cast<double>(rbd_aio_get_return_value(c));
  rbd_aio_release(c);
  bool wake, destroy;
  {
    std::lock_guard<std::mutex> lock(q->mu);
    wake = q->done.empty();
    q->done.emplace_back(slot->index, result);
    q->ready.store(q->done.size(), std::memory_order_release);
    destroy = --q->inflight == 0 && q->closed;
  }
  if (destroy) {
    DestroyQueue(q);
  } else if (wake) {
    uint64_t one = 1;
    ssize_t n = write(q->efd, &one, sizeof(one));
    (void)n;
  }
}

class RbdQueue : public Napi::ObjectWrap<RbdQueue> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RbdQueue", {
      InstanceAccessor("fd", &RbdQueue::Fd, nullptr),
      InstanceMethod("readv", &RbdQueue::Readv),
      InstanceMethod("writev", &RbdQueue::Writev),
      InstanceMethod("flush", &RbdQueue::Flush),
      InstanceMethod("discard", &RbdQueue::Discard),
      InstanceMethod("writeZeroes", &RbdQueue::WriteZeroes),
      InstanceMethod("drain", &RbdQueue::Drain),
      InstanceMethod("close", &RbdQueue::CloseQueue),
    });
  }

  // new RbdQueue(imageId): takes a reference on the image; throws if there is no such image.
  explicit RbdQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RbdQueue>(info) {
    Napi::Env env = info.Env();
    Handle* img = Acquire(ArgU32(info, 0), Kind::Image);
    if (!img) {
      Napi::Error::New(env, "no open rbd image with that id").ThrowAsJavaScriptException();
      return;
    }
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
      int err = errno;
      ReleaseDetached(img);
      Napi::Error::New(env, std::string("eventfd: ") + strerror(err)).ThrowAsJavaScriptException();
      return;
    }
    q_ = new Queue(img, efd);
  }

  ~RbdQueue() override { Shutdown(); }

 private:
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), q_ ? q_->efd : -1); }

  // The slot for a new request, or nullptr (-EINVAL / -EBUSY in *rc).
  Slot* TakeSlot(const Napi::CallbackInfo& info, int* rc) {
    if (!q_) { *rc = -EBADF; return nullptr; }
    if (q_->image->closed.load(std::memory_order_relaxed)) { *rc = -ESHUTDOWN; return nullptr; }
    uint32_t index = ArgU32(info, 0);
    if (index >= kMaxSlots) { *rc = -EINVAL; return nullptr; }
    auto& slots = q_->slots;
    if (index >= slots.size()) slots.resize(index + 1);
    if (!slots[index]) slots[index] = std::make_unique<Slot>(q_, index);
    Slot* s = slots[index].get();
    if (s->busy) { *rc = -EBUSY; return nullptr; }
    return s;
  }

  // Creates the completion and counts the request in flight; `start` issues the rbd_aio_* call.
  template <typename Start>
  Napi::Value Submit(Napi::Env env, Slot* s, Start start) {
    rbd_completion_t c;
    int rc = rbd_aio_create_completion(s, OnAioComplete, &c);
    if (rc < 0) return Napi::Number::New(env, rc);
    s->busy = true;
    {
      std::lock_guard<std::mutex> lock(q_->mu);
      q_->inflight++;
    }
    rc = start(q_->image->image, c);
    if (rc < 0) {
      rbd_aio_release(c);
      s->busy = false;
      std::lock_guard<std::mutex> lock(q_->mu);
      q_->inflight--;
    }
    return Napi::Number::New(env, rc < 0 ? rc : 0);
  }

  // Fills the slot's iovecs from (bufs[i], offs[i], lens[i]) for i < count; -errno on bad input.
  static int BuildIov(const Napi::CallbackInfo& info, Slot* s) {
    Napi::Env env = info.Env();
    if (!info[2].IsArray() || !info[3].IsTypedArray() || !info[4].IsTypedArray()) return -EINVAL;
    Napi::Array bufs = info[2].As<Napi::Array>();
    Napi::Uint32Array offs = info[3].As<Napi::Uint32Array>();
    Napi::Uint32Array lens = info[4].As<Napi::Uint32Array>();
    uint32_t count = ArgU32(info, 5);
    if (count == 0 || count > bufs.Length() || count > offs.ElementLength() || count > lens.ElementLength()) return -EINVAL;
    s->iov.resize(count);
    for (uint32_t i = 0; i < count; i++) {
      napi_value v;
      if (napi_get_element(env, bufs, i, &v) != napi_ok) return -EINVAL;
      napi_typedarray_type type;
      size_t length;
      void* data;
      if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok || type != napi_uint8_array)
        return -EINVAL;
      uint64_t off = offs[i], len = lens[i];
      if (off + len > length || data == nullptr) return -EFAULT;
      s->iov[i].iov_base = static_cast<uint8_t*>(data) + off;
      s->iov[i].iov_len = len;
    }
    return 0;
  }

  // readv(slot, offset, bufs: Uint8Array[], offs: Uint32Array, lens: Uint32Array, count) -> 0 | -errno
  Napi::Value Readv(const Napi::CallbackInfo& info) { return Rw(info, false); }
  // writev(slot, offset, bufs, offs, lens, count) -> 0 | -errno
  Napi::Value Writev(const Napi::CallbackInfo& info) { return Rw(info, true); }

  Napi::Value Rw(const Napi::CallbackInfo& info, bool write) {
    Napi::Env env = info.Env();
    int rc;
    Slot* s = TakeSlot(info, &rc);
    if (!s) return Napi::Number::New(env, rc);
    int64_t offset = ArgInt64(info, 1);
    if (offset < 0) return Napi::Number::New(env, -EINVAL);
    if ((rc = BuildIov(info, s)) < 0) return Napi::Number::New(env, rc);
    return Submit(env, s, [s, offset, write](rbd_image_t img, rbd_completion_t c) {
      const iovec* iov = s->iov.data();
      int n = static_cast<int>(s->iov.size());
      if (n == 1) {
        return write ? rbd_aio_write(img, offset, iov[0].iov_len, static_cast<const char*>(iov[0].iov_base), c)
                     : rbd_aio_read(img, offset, iov[0].iov_len, static_cast<char*>(iov[0].iov_base), c);
      }
      return write ? rbd_aio_writev(img, iov, n, offset, c) : rbd_aio_readv(img, iov, n, offset, c);
    });
  }

  // flush(slot) -> 0 | -errno
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    int rc;
    Slot* s = TakeSlot(info, &rc);
    if (!s) return Napi::Number::New(info.Env(), rc);
    return Submit(info.Env(), s, [](rbd_image_t img, rbd_completion_t c) { return rbd_aio_flush(img, c); });
  }

  // discard(slot, offset, length) -> 0 | -errno
  Napi::Value Discard(const Napi::CallbackInfo& info) {
    int rc;
    Slot* s = TakeSlot(info, &rc);
    if (!s) return Napi::Number::New(info.Env(), rc);
    int64_t off = ArgInt64(info, 1), len = ArgInt64(info, 2);
    if (off < 0 || len < 0) return Napi::Number::New(info.Env(), -EINVAL);
    return Submit(info.Env(), s, [off, len](rbd_image_t img, rbd_completion_t c) {
      return rbd_aio_discard(img, off, len, c);
    });
  }

  // writeZeroes(slot, offset, length) -> 0 | -errno
  Napi::Value WriteZeroes(const Napi::CallbackInfo& info) {
    int rc;
    Slot* s = TakeSlot(info, &rc);
    if (!s) return Napi::Number::New(info.Env(), rc);
    int64_t off = ArgInt64(info, 1), len = ArgInt64(info, 2);
    if (off < 0 || len < 0) return Napi::Number::New(info.Env(), -EINVAL);
    return Submit(info.Env(), s, [off, len](rbd_image_t img, rbd_completion_t c) {
      return rbd_aio_write_zeroes(img, off, len, c, 0, 0);
    });
  }

  // drain(slots: Int32Array, results: Float64Array) -> n: moves up to min(slots.length,
  // results.length) completions out (result: bytes or 0 on success, -errno). Cheap when there is
  // nothing (one atomic load), so a polling reactor may call it every pass. It does not reset the
  // eventfd: a woken caller reads the eventfd first, then drains.
  Napi::Value Drain(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!q_) return Napi::Number::New(env, -EBADF);
    if (q_->ready.load(std::memory_order_acquire) == 0) return Napi::Number::New(env, 0);
    Napi::Int32Array slots = info[0].As<Napi::Int32Array>();
    Napi::Float64Array results = info[1].As<Napi::Float64Array>();
    size_t cap = std::min(slots.ElementLength(), results.ElementLength());
    std::lock_guard<std::mutex> lock(q_->mu);
    auto& done = q_->done;
    size_t n = std::min(cap, done.size());
    for (size_t i = 0; i < n; i++) {
      slots[i] = static_cast<int32_t>(done[i].first);
      results[i] = done[i].second;
      q_->slots[done[i].first]->busy = false;
    }
    done.erase(done.begin(), done.begin() + n);
    q_->ready.store(done.size(), std::memory_order_release);
    return Napi::Number::New(env, static_cast<double>(n));
  }

  // close(): no more submissions; the queue (eventfd, image reference) goes away with its last
  // in-flight request. The caller stops watching the eventfd first.
  Napi::Value CloseQueue(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    if (!q_) return;
    Queue* q = q_;
    q_ = nullptr;
    bool destroy;
    {
      std::lock_guard<std::mutex> lock(q->mu);
      q->closed = true;
      destroy = q->inflight == 0;
    }
    if (destroy) DestroyQueue(q);
  }

  Queue* q_ = nullptr;
};

}  // namespace

void InitRbd(Napi::Env env, Napi::Object exports) {
  exports.Set("rbdClusterCreate", Napi::Function::New(env, ClusterCreate));
  exports.Set("rbdConfReadFile", Napi::Function::New(env, ConfReadFile));
  exports.Set("rbdConfSet", Napi::Function::New(env, ConfSet));
  exports.Set("rbdConfGet", Napi::Function::New(env, ConfGet));
  exports.Set("rbdConnect", Napi::Function::New(env, Connect));
  exports.Set("rbdIoctxCreate", Napi::Function::New(env, IoctxCreate));
  exports.Set("rbdImageOpen", Napi::Function::New(env, ImageOpen));
  exports.Set("rbdImageSize", Napi::Function::New(env, ImageSize));
  exports.Set("rbdImageClose", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Close(info, Kind::Image); }));
  exports.Set("rbdIoctxClose", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Close(info, Kind::Ioctx); }));
  exports.Set("rbdClusterClose", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Close(info, Kind::Cluster); }));
  exports.Set("rbdCloseAllSync", Napi::Function::New(env, CloseAllSync));
  exports.Set("rbdHandleCount", Napi::Function::New(env, HandleCount));
  exports.Set("RbdQueue", RbdQueue::Define(env));
}

}  // namespace vhostd
