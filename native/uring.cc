// io_uring through liburing, plus the file syscalls the file bdevs (uring, aio) need: open, statx,
// block-device ioctls, fdatasync, fallocate, and synchronous preadv/pwritev for the fallback path.
// Thin layer only: every function maps onto one syscall (or one ring operation); retries, bounce
// buffers, chunking and error policy live in TypeScript (src/bdev/modules/uring/).
//
// Scatter lists come from JS as parallel arrays (IoVecs: bufs[i] Uint8Array windows over guest
// memory SharedArrayBuffers, offs[i], lens[i]); iovecs point straight into those buffers, no copy.
// N-API cannot hand out the data pointer of a SharedArrayBuffer view, so the V8 API is used.
#include "common.h"
#include <v8.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace vhostd {
namespace {

constexpr int kMaxSyncIov = 1024;  // IOV_MAX

v8::Local<v8::Value> ToV8(napi_value v) {
  v8::Local<v8::Value> out;
  static_assert(sizeof(out) == sizeof(v), "napi_value is a v8::Local");
  memcpy(static_cast<void*>(&out), &v, sizeof(out));
  return out;
}

napi_value ToNapi(v8::Local<v8::Value> v) {
  napi_value out;
  memcpy(static_cast<void*>(&out), &v, sizeof(out));
  return out;
}

// First byte and length of an ArrayBufferView's window; works for views of SharedArrayBuffers.
bool ViewSpan(v8::Local<v8::Value> v, uint8_t** data, size_t* len) {
  if (v.IsEmpty() || !v->IsArrayBufferView()) return false;
  auto view = v.As<v8::ArrayBufferView>();
  // Data(), not GetBackingStore()->Data(): the shared_ptr's atomic reference count cost three
  // round trips per I/O (the buffer and the offset and length arrays).
  *data = static_cast<uint8_t*>(view->Buffer()->Data()) + view->ByteOffset();
  *len = view->ByteLength();
  return true;
}

// Fills `out` (room for `cap`) with the byte range [skip, skip + len) of the scatter list passed at
// info[a..a+6]: bufs (Array of Uint8Array), offs (Uint32Array), lens (Uint32Array), count, skip,
// len, align. Returns the number of iovecs or -E2BIG (needs more than cap), -EINVAL (align > 0 and
// an iovec's address or length is not a multiple of it), -EFAULT (bad arguments: a range outside
// its view, or fewer than skip + len bytes in the list).
int BuildIov(const Napi::CallbackInfo& info, size_t a, iovec* out, int cap) {
  v8::Local<v8::Value> bufsV = ToV8(info[a]);
  uint8_t *offsP, *lensP;
  size_t offsLen, lensLen;
  if (!bufsV->IsArray() || !ViewSpan(ToV8(info[a + 1]), &offsP, &offsLen) || !ViewSpan(ToV8(info[a + 2]), &lensP, &lensLen)) {
    return -EFAULT;
  }
  auto bufs = bufsV.As<v8::Array>();
  const uint32_t* offs = reinterpret_cast<const uint32_t*>(offsP);
  const uint32_t* lens = reinterpret_cast<const uint32_t*>(lensP);
  int64_t count = ArgInt64(info, a + 3);
  int64_t skip = ArgInt64(info, a + 4);
  int64_t want = ArgInt64(info, a + 5);
  uint64_t mask = static_cast<uint64_t>(ArgInt64(info, a + 6));
  mask = mask > 0 ? mask - 1 : 0;
  if (count < 0 || skip < 0 || want <= 0 || static_cast<size_t>(count) > offsLen / 4 || static_cast<size_t>(count) > lensLen / 4 ||
      count > static_cast<int64_t>(bufs->Length())) {
    return -EFAULT;
  }
  v8::Local<v8::Context> ctx = v8::Isolate::GetCurrent()->GetCurrentContext();
  int n = 0;
  for (int64_t i = 0; i < count && want > 0; i++) {
    int64_t segLen = lens[i];
    if (skip >= segLen) { skip -= segLen; continue; }
    v8::Local<v8::Value> el;
    uint8_t* data;
    size_t viewLen;
    if (!bufs->Get(ctx, static_cast<uint32_t>(i)).ToLocal(&el) || !ViewSpan(el, &data, &viewLen)) return -EFAULT;
    if (static_cast<uint64_t>(offs[i]) + static_cast<uint64_t>(segLen) > viewLen) return -EFAULT;
    int64_t take = segLen - skip < want ? segLen - skip : want;
    uint8_t* p = data + offs[i] + skip;
    if (mask && ((reinterpret_cast<uintptr_t>(p) | static_cast<uint64_t>(take)) & mask)) return -EINVAL;
    if (n == cap) return -E2BIG;
    out[n].iov_base = p;
    out[n].iov_len = static_cast<size_t>(take);
    n++;
    want -= take;
    skip = 0;
  }
  return want > 0 ? -EFAULT : n;
}

// The single-segment calls (prepRw1, filePread1, filePwrite1) take their arguments as raw N-API
// values: node-addon-api puts more than 6 arguments in a vector on the heap, and a scatter list's
// arrays cost a V8 API round trip per element. A 4 KiB request is one segment nearly always:
// 135-155 ns per prepRw1 against 280-305 per prepRw (SQ full, alternated).
struct OneSegment {
  int64_t offset;  // file offset
  uint8_t* data;
  uint32_t len;
};

// argv[a..a+4] = offset, buf (Uint8Array), off, len, align -> 0 | -EFAULT (range outside the view,
// or len 0) | -EINVAL (align > 0 and the address or length is not a multiple of it).
int OneSegmentArgs(napi_env env, napi_value* argv, OneSegment* seg) {
  uint32_t off = 0, len = 0, align = 0;
  if (napi_get_value_int64(env, argv[0], &seg->offset) != napi_ok || napi_get_value_uint32(env, argv[2], &off) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &len) != napi_ok || napi_get_value_uint32(env, argv[4], &align) != napi_ok) {
    return -EFAULT;
  }
  uint8_t* data;
  size_t viewLen;
  if (!ViewSpan(ToV8(argv[1]), &data, &viewLen) || len == 0 || static_cast<uint64_t>(off) + len > viewLen) return -EFAULT;
  seg->data = data + off;
  seg->len = len;
  uint64_t mask = align > 0 ? align - 1 : 0;
  if (mask && ((reinterpret_cast<uintptr_t>(seg->data) | len) & mask)) return -EINVAL;
  return 0;
}

napi_value Int(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

// One io_uring with an eventfd registered, and per-slot preallocated iovec arrays: slot s (the
// SQE's user_data) owns iovecs [s * maxIov, (s + 1) * maxIov) until its completion is reaped.
class Uring : public Napi::ObjectWrap<Uring> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Uring", {
      InstanceMethod("init", &Uring::Init),
      InstanceMethod("eventFd", &Uring::EventFd),
      InstanceMethod("setupFlags", &Uring::SetupFlags),
      InstanceMethod("prepRw", &Uring::PrepRw),
      InstanceMethod("prepFsync", &Uring::PrepFsync),
      InstanceMethod("registerBuffers", &Uring::RegisterBuffers),
      InstanceMethod("setBuffer", &Uring::SetBuffer),
      InstanceMethod("prepFallocate", &Uring::PrepFallocate),
      InstanceMethod("submit", &Uring::Submit),
      InstanceMethod("reap", &Uring::Reap),
      InstanceMethod("wait", &Uring::Wait),
      InstanceMethod("close", &Uring::Close),
    });
  }

  // new Uring(entries, maxIovPerSlot): nothing is set up until init().
  explicit Uring(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Uring>(info) {
    entries_ = static_cast<uint32_t>(ArgInt(info, 0));
    maxIov_ = static_cast<uint32_t>(ArgInt(info, 1));
  }

  ~Uring() override { Teardown(); }

  // What prepRw1 and prepRwFixed share: (write, slot, fd, offset, buf, off, len, align, ...) at
  // argv, `argc` of them, checked; the SQE is taken last, so a refused call queues nothing.
  struct OneRw {
    Uring* ring;
    bool write;
    uint32_t slot;
    int32_t fd;
    OneSegment seg;
  };
  static int ParseOneRw(napi_env env, napi_callback_info cbinfo, napi_value* argv, size_t argc, OneRw* rw) {
    size_t got = argc;
    napi_value self;
    if (napi_get_cb_info(env, cbinfo, &got, argv, &self, nullptr) != napi_ok || got < argc) return -EFAULT;
    rw->ring = nullptr;
    if (napi_unwrap(env, self, reinterpret_cast<void**>(&rw->ring)) != napi_ok || rw->ring == nullptr) return -EBADF;
    rw->write = false;
    napi_get_value_bool(env, argv[0], &rw->write);
    if (napi_get_value_uint32(env, argv[1], &rw->slot) != napi_ok || napi_get_value_int32(env, argv[2], &rw->fd) != napi_ok) return -EFAULT;
    if (!rw->ring->open_) return -EBADF;
    if (rw->slot >= rw->ring->entries_) return -ERANGE;
    return OneSegmentArgs(env, argv + 3, &rw->seg);
  }

  // prepRw1(write, slot, fd, offset, buf, off, len, align) -> 0 | -errno: prepRw for the one
  // segment buf[off, off+len) (a raw N-API method, added to the prototype by InitUring).
  static napi_value PrepRw1(napi_env env, napi_callback_info cbinfo) { return PrepOne(env, cbinfo, false); }

  // prepRwFixed(write, slot, fd, offset, buf, off, len, align, index) -> 0 | -errno:
  // IORING_OP_READ_FIXED/WRITE_FIXED of buf[off, off+len), which must lie in fixed buffer `index`
  // (setBuffer): the kernel uses the pages it pinned then instead of pinning them per I/O.
  static napi_value PrepRwFixed(napi_env env, napi_callback_info cbinfo) { return PrepOne(env, cbinfo, true); }

  static napi_value PrepOne(napi_env env, napi_callback_info cbinfo, bool fixed) {
    napi_value argv[9];
    OneRw rw;
    int rc = ParseOneRw(env, cbinfo, argv, fixed ? 9 : 8, &rw);
    if (rc < 0) return Int(env, rc);
    Uring* u = rw.ring;
    uint32_t index = 0;
    if (fixed) {
      if (napi_get_value_uint32(env, argv[8], &index) != napi_ok) return Int(env, -EFAULT);
      if (index >= u->fixed_.size() || u->fixed_[index].iov_base == nullptr) return Int(env, -ENOENT);
      uint8_t* base = static_cast<uint8_t*>(u->fixed_[index].iov_base);
      if (rw.seg.data < base || rw.seg.data + rw.seg.len > base + u->fixed_[index].iov_len) return Int(env, -EFAULT);
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&u->ring_);
    if (!sqe) return Int(env, -EAGAIN);
    uint64_t at = static_cast<uint64_t>(rw.seg.offset);
    if (fixed) {
      if (rw.write) io_uring_prep_write_fixed(sqe, rw.fd, rw.seg.data, rw.seg.len, at, static_cast<int>(index));
      else io_uring_prep_read_fixed(sqe, rw.fd, rw.seg.data, rw.seg.len, at, static_cast<int>(index));
    } else {
      iovec* iov = u->iovs_.data() + static_cast<size_t>(rw.slot) * u->maxIov_;
      iov->iov_base = rw.seg.data;
      iov->iov_len = rw.seg.len;
      if (rw.write) io_uring_prep_writev(sqe, rw.fd, iov, 1, at);
      else io_uring_prep_readv(sqe, rw.fd, iov, 1, at);
    }
    sqe->user_data = rw.slot;
    return Int(env, 0);
  }

 private:
  // init(flags = 0) -> 0 | -errno: io_uring_queue_init(entries, flags) + eventfd + io_uring_register_eventfd.
  Napi::Value Init(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (open_) return Napi::Number::New(env, -EALREADY);
    if (entries_ == 0 || entries_ > 32768 || maxIov_ == 0 || maxIov_ > kMaxSyncIov) return Napi::Number::New(env, -EINVAL);
    unsigned flags = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 0;
    int rc = io_uring_queue_init(entries_, &ring_, flags);
    if (rc < 0) return Napi::Number::New(env, rc);
    efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0) {
      int e = errno;
      io_uring_queue_exit(&ring_);
      return Napi::Number::New(env, -e);
    }
    rc = io_uring_register_eventfd(&ring_, efd_);
    if (rc < 0) {
      close(efd_);
      efd_ = -1;
      io_uring_queue_exit(&ring_);
      return Napi::Number::New(env, rc);
    }
    iovs_.assign(static_cast<size_t>(entries_) * maxIov_, iovec{nullptr, 0});
    open_ = true;
    return Napi::Number::New(env, 0);
  }

  Napi::Value EventFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), efd_); }

  // setupFlags() -> the IORING_SETUP_* flags the open ring was created with (0 when closed).
  Napi::Value SetupFlags(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), open_ ? ring_.flags : 0); }

  io_uring_sqe* Sqe(uint32_t slot, int* err) {
    if (!open_) { *err = -EBADF; return nullptr; }
    if (slot >= entries_) { *err = -ERANGE; return nullptr; }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) *err = -EAGAIN;
    return sqe;
  }

  // prepRw(write, slot, fd, offset, bufs, offs, lens, count, skip, len, align) -> 0 | -errno:
  // queues IORING_OP_READV/WRITEV for bytes [skip, skip+len) of the scatter list at file offset.
  Napi::Value PrepRw(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool write = info[0].ToBoolean().Value();
    uint32_t slot = static_cast<uint32_t>(ArgInt(info, 1));
    int fd = ArgInt(info, 2);
    int64_t offset = ArgInt64(info, 3);
    if (!open_) return Napi::Number::New(env, -EBADF);
    if (slot >= entries_) return Napi::Number::New(env, -ERANGE);
    iovec* iov = iovs_.data() + static_cast<size_t>(slot) * maxIov_;
    int n = BuildIov(info, 4, iov, static_cast<int>(maxIov_));
    if (n < 0) return Napi::Number::New(env, n);
    int err = 0;
    io_uring_sqe* sqe = Sqe(slot, &err);
    if (!sqe) return Napi::Number::New(env, err);
    if (write) io_uring_prep_writev(sqe, fd, iov, static_cast<unsigned>(n), static_cast<uint64_t>(offset));
    else io_uring_prep_readv(sqe, fd, iov, static_cast<unsigned>(n), static_cast<uint64_t>(offset));
    sqe->user_data = slot;
    return Napi::Number::New(env, 0);
  }

  // registerBuffers(n) -> 0 | -errno: an empty table of n fixed buffers (io_uring_register_buffers_sparse).
  Napi::Value RegisterBuffers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) return Napi::Number::New(env, -EBADF);
    if (!fixed_.empty()) return Napi::Number::New(env, -EALREADY);
    int n = ArgInt(info, 0);
    if (n <= 0 || n > 16384) return Napi::Number::New(env, -EINVAL);
    int rc = io_uring_register_buffers_sparse(&ring_, static_cast<unsigned>(n));
    if (rc < 0) return Napi::Number::New(env, rc);
    fixed_.assign(static_cast<size_t>(n), iovec{nullptr, 0});
    return Napi::Number::New(env, 0);
  }

  // setBuffer(index, view | null) -> 0 | -errno: fixed buffer `index` becomes the view's bytes
  // (the kernel pins their pages until the entry is replaced or the ring closes), or empty.
  Napi::Value SetBuffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) return Napi::Number::New(env, -EBADF);
    int64_t index = ArgInt64(info, 0);
    if (index < 0 || static_cast<size_t>(index) >= fixed_.size()) return Napi::Number::New(env, -ERANGE);
    iovec iov{nullptr, 0};
    if (!info[1].IsNull()) {
      uint8_t* data;
      size_t len;
      if (!ViewSpan(ToV8(info[1]), &data, &len) || len == 0) return Napi::Number::New(env, -EFAULT);
      iov.iov_base = data;
      iov.iov_len = len;
    }
    int rc = io_uring_register_buffers_update_tag(&ring_, static_cast<unsigned>(index), &iov, nullptr, 1);
    if (rc < 0) return Napi::Number::New(env, rc);
    fixed_[static_cast<size_t>(index)] = iov;
    return Napi::Number::New(env, 0);
  }

  // prepFsync(slot, fd, datasync) -> 0 | -errno: IORING_OP_FSYNC (IORING_FSYNC_DATASYNC = fdatasync).
  Napi::Value PrepFsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int err = 0;
    io_uring_sqe* sqe = Sqe(static_cast<uint32_t>(ArgInt(info, 0)), &err);
    if (!sqe) return Napi::Number::New(env, err);
    io_uring_prep_fsync(sqe, ArgInt(info, 1), info[2].ToBoolean().Value() ? IORING_FSYNC_DATASYNC : 0);
    sqe->user_data = static_cast<uint32_t>(ArgInt(info, 0));
    return Napi::Number::New(env, 0);
  }

  // prepFallocate(slot, fd, mode, offset, len) -> 0 | -errno: IORING_OP_FALLOCATE.
  Napi::Value PrepFallocate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int err = 0;
    io_uring_sqe* sqe = Sqe(static_cast<uint32_t>(ArgInt(info, 0)), &err);
    if (!sqe) return Napi::Number::New(env, err);
    io_uring_prep_fallocate(sqe, ArgInt(info, 1), ArgInt(info, 2), static_cast<off_t>(ArgInt64(info, 3)),
                            static_cast<off_t>(ArgInt64(info, 4)));
    sqe->user_data = static_cast<uint32_t>(ArgInt(info, 0));
    return Napi::Number::New(env, 0);
  }

  // submit() -> SQEs submitted | -errno (io_uring_enter).
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    if (!open_) return Napi::Number::New(info.Env(), -EBADF);
    return Napi::Number::New(info.Env(), io_uring_submit(&ring_));
  }

  // reap(out: Int32Array, max) -> n: copies up to `max` CQEs as pairs out[2i] = user_data (slot),
  // out[2i+1] = res, and marks them seen. Never blocks.
  Napi::Value Reap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) return Napi::Number::New(env, 0);
    uint8_t* p;
    size_t len;
    if (!ViewSpan(ToV8(info[0]), &p, &len)) return Napi::Number::New(env, -EFAULT);
    int32_t* out = reinterpret_cast<int32_t*>(p);
    unsigned max = static_cast<unsigned>(ArgInt(info, 1));
    if (max > len / 8) max = static_cast<unsigned>(len / 8);
    io_uring_cqe* cqes[64];
    unsigned total = 0;
    while (total < max) {
      unsigned want = max - total < 64 ? max - total : 64;
      unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, want);
      if (n == 0) break;
      for (unsigned i = 0; i < n; i++) {
        out[2 * (total + i)] = static_cast<int32_t>(cqes[i]->user_data);
        out[2 * (total + i) + 1] = cqes[i]->res;
      }
      io_uring_cq_advance(&ring_, n);
      total += n;
    }
    return Napi::Number::New(env, total);
  }

  // wait(timeoutMs) -> 0 | -errno (-ETIME on timeout): blocks until a CQE is available.
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) return Napi::Number::New(env, -EBADF);
    int64_t ms = ArgInt64(info, 0);
    __kernel_timespec ts{ms / 1000, (ms % 1000) * 1000000};
    io_uring_cqe* cqe = nullptr;
    return Napi::Number::New(env, io_uring_wait_cqe_timeout(&ring_, &cqe, &ts));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Teardown();
    return info.Env().Undefined();
  }

  void Teardown() {
    if (!open_) return;
    open_ = false;
    io_uring_queue_exit(&ring_);
    close(efd_);
    efd_ = -1;
    std::vector<iovec>().swap(iovs_);
    std::vector<iovec>().swap(fixed_);
  }

  io_uring ring_{};
  bool open_ = false;
  int efd_ = -1;
  uint32_t entries_ = 0;
  uint32_t maxIov_ = 0;
  std::vector<iovec> iovs_;
  // The fixed buffers as registered (empty entries: iov_base null); empty until registerBuffers().
  std::vector<iovec> fixed_;
};

// filePreadv / filePwritev(fd, offset, bufs, offs, lens, count, skip, len, align) -> bytes | -errno:
// one preadv/pwritev(2) of bytes [skip, skip+len) of the scatter list (the no-io_uring fallback).
Napi::Value FileRw(const Napi::CallbackInfo& info, bool write) {
  Napi::Env env = info.Env();
  thread_local std::vector<iovec> iov(kMaxSyncIov);
  int n = BuildIov(info, 2, iov.data(), kMaxSyncIov);
  if (n < 0) return Napi::Number::New(env, n);
  int fd = ArgInt(info, 0);
  off_t off = static_cast<off_t>(ArgInt64(info, 1));
  ssize_t r;
  do r = write ? pwritev(fd, iov.data(), n, off) : preadv(fd, iov.data(), n, off);
  while (r < 0 && errno == EINTR);
  return r < 0 ? Errno(env) : Napi::Number::New(env, static_cast<double>(r));
}
Napi::Value FilePreadv(const Napi::CallbackInfo& info) { return FileRw(info, false); }
Napi::Value FilePwritev(const Napi::CallbackInfo& info) { return FileRw(info, true); }

// filePread1 / filePwrite1(fd, offset, buf, off, len, align) -> bytes | -errno: one pread/pwrite(2)
// of buf[off, off+len) (the single-segment filePreadv / filePwritev).
napi_value FileRw1(napi_env env, napi_callback_info cbinfo, bool write) {
  size_t argc = 6;
  napi_value argv[6];
  int32_t fd = -1;
  if (napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, nullptr) != napi_ok || argc < 6 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    return Int(env, -EFAULT);
  }
  OneSegment seg;
  int rc = OneSegmentArgs(env, argv + 1, &seg);
  if (rc < 0) return Int(env, rc);
  ssize_t r;
  do r = write ? pwrite(fd, seg.data, seg.len, static_cast<off_t>(seg.offset)) : pread(fd, seg.data, seg.len, static_cast<off_t>(seg.offset));
  while (r < 0 && errno == EINTR);
  return Int(env, r < 0 ? -errno : r);
}
napi_value FilePread1(napi_env env, napi_callback_info cbinfo) { return FileRw1(env, cbinfo, false); }
napi_value FilePwrite1(napi_env env, napi_callback_info cbinfo) { return FileRw1(env, cbinfo, true); }

// fileOpen(path, flags) -> fd | -errno (O_CLOEXEC is always added).
Napi::Value FileOpen(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>();
  int fd;
  do fd = open(path.c_str(), ArgInt(info, 1) | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), fd);
}

// fileStat(fd, out: Float64Array(8)) -> 0 | -errno: statx(fd) into out = [mode, size, blksize,
// blocks (512-byte units), dio_mem_align, dio_offset_align, rdev_major, rdev_minor]. The two DIO
// alignments are -1 when the kernel does not report them, 0 when the file has no direct I/O.
Napi::Value FileStat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t* p;
  size_t len;
  if (!ViewSpan(ToV8(info[1]), &p, &len) || len < 8 * sizeof(double)) return Napi::Number::New(env, -EFAULT);
  double* out = reinterpret_cast<double*>(p);
  struct statx st;
  if (statx(ArgInt(info, 0), "", AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_DIOALIGN, &st) < 0) return Errno(env);
  bool dio = (st.stx_mask & STATX_DIOALIGN) != 0;
  out[0] = st.stx_mode;
  out[1] = static_cast<double>(st.stx_size);
  out[2] = st.stx_blksize;
  out[3] = static_cast<double>(st.stx_blocks);
  out[4] = dio ? static_cast<double>(st.stx_dio_mem_align) : -1.0;
  out[5] = dio ? static_cast<double>(st.stx_dio_offset_align) : -1.0;
  out[6] = st.stx_rdev_major;
  out[7] = st.stx_rdev_minor;
  return Napi::Number::New(env, 0);
}

// fileFsType(fd) -> f_type of fstatfs(2) | -errno (which file system holds the file).
Napi::Value FileFsType(const Napi::CallbackInfo& info) {
  struct statfs sf;
  if (fstatfs(ArgInt(info, 0), &sf) < 0) return Errno(info.Env());
  return Napi::Number::New(info.Env(), static_cast<double>(static_cast<uint64_t>(sf.f_type) & 0xffffffffu));
}

// blkGetSize64(fd) -> bytes | -errno (BLKGETSIZE64).
Napi::Value BlkGetSize64(const Napi::CallbackInfo& info) {
  uint64_t size = 0;
  if (ioctl(ArgInt(info, 0), BLKGETSIZE64, &size) < 0) return Errno(info.Env());
  return Napi::Number::New(info.Env(), static_cast<double>(size));
}

// blkGetSectorSize(fd) -> logical block size | -errno (BLKSSZGET).
Napi::Value BlkGetSectorSize(const Napi::CallbackInfo& info) {
  int ssz = 0;
  if (ioctl(ArgInt(info, 0), BLKSSZGET, &ssz) < 0) return Errno(info.Env());
  return Napi::Number::New(info.Env(), ssz);
}

// blkRange(fd, offset, len) with BLKDISCARD / BLKZEROOUT -> 0 | -errno (synchronous).
Napi::Value BlkRange(const Napi::CallbackInfo& info, unsigned long req) {
  uint64_t range[2] = {static_cast<uint64_t>(ArgInt64(info, 1)), static_cast<uint64_t>(ArgInt64(info, 2))};
  int rc;
  do rc = ioctl(ArgInt(info, 0), req, range);
  while (rc < 0 && errno == EINTR);
  return rc < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), 0);
}
Napi::Value BlkDiscard(const Napi::CallbackInfo& info) { return BlkRange(info, BLKDISCARD); }
Napi::Value BlkZeroout(const Napi::CallbackInfo& info) { return BlkRange(info, BLKZEROOUT); }

// fileFdatasync(fd) -> 0 | -errno.
Napi::Value FileFdatasync(const Napi::CallbackInfo& info) {
  int rc;
  do rc = fdatasync(ArgInt(info, 0));
  while (rc < 0 && errno == EINTR);
  return rc < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), 0);
}

// fileFallocate(fd, mode, offset, len) -> 0 | -errno.
Napi::Value FileFallocate(const Napi::CallbackInfo& info) {
  int rc;
  do rc = fallocate(ArgInt(info, 0), ArgInt(info, 1), static_cast<off_t>(ArgInt64(info, 2)), static_cast<off_t>(ArgInt64(info, 3)));
  while (rc < 0 && errno == EINTR);
  return rc < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), 0);
}

// allocAligned(size, align) -> SharedArrayBuffer | -errno: posix_memalign'ed, zero-filled memory
// (bounce and zero buffers for O_DIRECT), freed when the last reference goes.
Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t size = ArgInt64(info, 0), align = ArgInt64(info, 1);
  if (size <= 0 || align < static_cast<int64_t>(sizeof(void*)) || (align & (align - 1))) return Napi::Number::New(env, -EINVAL);
  void* p = nullptr;
  int rc = posix_memalign(&p, static_cast<size_t>(align), static_cast<size_t>(size));
  if (rc != 0) return Napi::Number::New(env, -rc);
  memset(p, 0, static_cast<size_t>(size));
  auto store = v8::SharedArrayBuffer::NewBackingStore(
      p, static_cast<size_t>(size), [](void* data, size_t, void*) { free(data); }, nullptr);
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(v8::Isolate::GetCurrent(), std::move(store));
  return Napi::Value(env, ToNapi(sab));
}

}  // namespace

void InitUring(Napi::Env env, Napi::Object exports) {
  Napi::Function uring = Uring::Define(env);
  napi_value fn;
  napi_create_function(env, "prepRw1", NAPI_AUTO_LENGTH, Uring::PrepRw1, nullptr, &fn);
  uring.Get("prototype").As<Napi::Object>().Set("prepRw1", Napi::Value(env, fn));
  napi_create_function(env, "prepRwFixed", NAPI_AUTO_LENGTH, Uring::PrepRwFixed, nullptr, &fn);
  uring.Get("prototype").As<Napi::Object>().Set("prepRwFixed", Napi::Value(env, fn));
  exports.Set("Uring", uring);
  napi_create_function(env, "filePread1", NAPI_AUTO_LENGTH, FilePread1, nullptr, &fn);
  exports.Set("filePread1", Napi::Value(env, fn));
  napi_create_function(env, "filePwrite1", NAPI_AUTO_LENGTH, FilePwrite1, nullptr, &fn);
  exports.Set("filePwrite1", Napi::Value(env, fn));
  exports.Set("filePreadv", Napi::Function::New(env, FilePreadv));
  exports.Set("filePwritev", Napi::Function::New(env, FilePwritev));
  exports.Set("fileOpen", Napi::Function::New(env, FileOpen));
  exports.Set("fileStat", Napi::Function::New(env, FileStat));
  exports.Set("fileFsType", Napi::Function::New(env, FileFsType));
  exports.Set("fileFdatasync", Napi::Function::New(env, FileFdatasync));
  exports.Set("fileFallocate", Napi::Function::New(env, FileFallocate));
  exports.Set("blkGetSize64", Napi::Function::New(env, BlkGetSize64));
  exports.Set("blkGetSectorSize", Napi::Function::New(env, BlkGetSectorSize));
  exports.Set("blkDiscard", Napi::Function::New(env, BlkDiscard));
  exports.Set("blkZeroout", Napi::Function::New(env, BlkZeroout));
  exports.Set("allocAligned", Napi::Function::New(env, AllocAligned));
  Napi::Object c = Napi::Object::New(env);
  c.Set("O_RDONLY", O_RDONLY);
  c.Set("O_RDWR", O_RDWR);
  c.Set("O_DIRECT", O_DIRECT);
  c.Set("S_IFMT", S_IFMT);
  c.Set("S_IFREG", S_IFREG);
  c.Set("S_IFBLK", S_IFBLK);
  c.Set("FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  c.Set("FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  c.Set("IORING_SETUP_COOP_TASKRUN", IORING_SETUP_COOP_TASKRUN);
  c.Set("IORING_SETUP_TASKRUN_FLAG", IORING_SETUP_TASKRUN_FLAG);
  c.Set("IORING_SETUP_SINGLE_ISSUER", IORING_SETUP_SINGLE_ISSUER);
  c.Set("IORING_SETUP_DEFER_TASKRUN", IORING_SETUP_DEFER_TASKRUN);
  c.Set("FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  exports.Set("uringConstants", c);
}

}  // namespace vhostd
