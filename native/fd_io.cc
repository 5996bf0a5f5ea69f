// Unix sockets with SCM_RIGHTS, eventfd, memfd, CPU affinity: one syscall per function.
#include "common.h"
#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <cstring>

namespace vhostd {
namespace {

bool FillSockaddr(const std::string& path, sockaddr_un* addr) {
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr->sun_path)) { errno = ENAMETOOLONG; return false; }
  memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// socketListen(path, backlog) -> fd | -errno. Non-blocking, close-on-exec.
Napi::Value SocketListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  sockaddr_un addr;
  if (!FillSockaddr(path, &addr)) return Errno(env);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno(env);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(fd, ArgInt(info, 1)) < 0) {
    int e = errno; close(fd); errno = e; return Errno(env);
  }
  return Napi::Number::New(env, fd);
}

// socketConnect(path) -> fd | -errno. Blocking connect, then non-blocking fd.
Napi::Value SocketConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  sockaddr_un addr;
  if (!FillSockaddr(path, &addr)) return Errno(env);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno(env);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) { int e = errno; close(fd); errno = e; return Errno(env); }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return Napi::Number::New(env, fd);
}

// accept(fd) -> fd | -errno (-EAGAIN when nothing is pending).
Napi::Value Accept(const Napi::CallbackInfo& info) {
  int fd = accept4(ArgInt(info, 0), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return fd < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), fd);
}

// recvMsg(fd, buffer, fdsOut: Int32Array) -> bytes | -errno; fdsOut[0] = count, fdsOut[1..] = fds.
// Descriptors beyond fdsOut's capacity are closed (and the count says how many arrived), so a
// peer cannot leak descriptors into the process by sending too many.
Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0);
  auto buf = info[1].As<Napi::Uint8Array>();
  auto fdsOut = info[2].As<Napi::Int32Array>();
  constexpr size_t kMaxFds = 64;
  char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  iovec iov{buf.Data(), buf.ByteLength()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return Errno(env);
  size_t cap = fdsOut.ElementLength() - 1, count = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int* fds = reinterpret_cast<int*>(CMSG_DATA(c));
    for (size_t i = 0; i < k; i++, count++) {
      if (count < cap) fdsOut[count + 1] = fds[i]; else close(fds[i]);
    }
  }
  fdsOut[0] = static_cast<int32_t>(count);
  if (msg.msg_flags & MSG_CTRUNC) fdsOut[0] = static_cast<int32_t>(count > cap ? count : cap + 1);
  return Napi::Number::New(env, static_cast<double>(n));
}

// sendMsg(fd, buffer, fds: number[]) -> bytes | -errno.
Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0);
  auto buf = info[1].As<Napi::Uint8Array>();
  auto arr = info[2].As<Napi::Array>();
  size_t nfds = arr.Length();
  if (nfds > 64) { errno = EINVAL; return Errno(env); }
  char control[CMSG_SPACE(sizeof(int) * 64)];
  memset(control, 0, sizeof(control));
  iovec iov{buf.Data(), buf.ByteLength()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    int* out = reinterpret_cast<int*>(CMSG_DATA(c));
    for (size_t i = 0; i < nfds; i++) out[i] = arr.Get(i).As<Napi::Number>().Int32Value();
  }
  ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  return n < 0 ? Errno(env) : Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  return close(ArgInt(info, 0)) < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), 0);
}

// eventfd(initval) -> fd, non-blocking and close-on-exec.
Napi::Value EventFd(const Napi::CallbackInfo& info) {
  int fd = eventfd(static_cast<unsigned>(ArgInt(info, 0)), EFD_NONBLOCK | EFD_CLOEXEC);
  return fd < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), fd);
}

// eventfdWrite(fd) -> 0 | -errno: adds 1 to the counter.
Napi::Value EventFdWrite(const Napi::CallbackInfo& info) {
  uint64_t one = 1;
  ssize_t n = write(ArgInt(info, 0), &one, sizeof(one));
  return n < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), 0);
}

// eventfdRead(fd) -> counter value | -errno (-EAGAIN when zero).
Napi::Value EventFdRead(const Napi::CallbackInfo& info) {
  uint64_t v = 0;
  ssize_t n = read(ArgInt(info, 0), &v, sizeof(v));
  return n < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), static_cast<double>(v));
}

// memfdCreate(name, size) -> fd | -errno. Used by the userspace initiator to play QEMU's role.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  int fd = static_cast<int>(syscall(SYS_memfd_create, name.c_str(), MFD_CLOEXEC));
  if (fd < 0) return Errno(env);
  if (ftruncate(fd, ArgInt64(info, 1)) < 0) { int e = errno; close(fd); errno = e; return Errno(env); }
  return Napi::Number::New(env, fd);
}

// setAffinity(cpus: number[]) -> 0 | -errno, for the calling thread only.
Napi::Value SetAffinity(const Napi::CallbackInfo& info) {
  auto arr = info[0].As<Napi::Array>();
  cpu_set_t set;
  CPU_ZERO(&set);
  for (uint32_t i = 0; i < arr.Length(); i++) CPU_SET(arr.Get(i).As<Napi::Number>().Int32Value(), &set);
  pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  return sched_setaffinity(tid, sizeof(set), &set) < 0 ? Errno(info.Env()) : Napi::Number::New(info.Env(), 0);
}

// schedYield(): sched_yield(2), returns nothing (it cannot fail on Linux).
void SchedYield(const Napi::CallbackInfo& info) { sched_yield(); }

Napi::Value GetTid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(syscall(SYS_gettid)));
}

}  // namespace

void InitFdIo(Napi::Env env, Napi::Object exports) {
  exports.Set("socketListen", Napi::Function::New(env, SocketListen));
  exports.Set("socketConnect", Napi::Function::New(env, SocketConnect));
  exports.Set("accept", Napi::Function::New(env, Accept));
  exports.Set("recvMsg", Napi::Function::New(env, RecvMsg));
  exports.Set("sendMsg", Napi::Function::New(env, SendMsg));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("eventfd", Napi::Function::New(env, EventFd));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventFdWrite));
  exports.Set("eventfdRead", Napi::Function::New(env, EventFdRead));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("setAffinity", Napi::Function::New(env, SetAffinity));
  exports.Set("getTid", Napi::Function::New(env, GetTid));
  exports.Set("schedYield", Napi::Function::New(env, SchedYield));
}

}  // namespace vhostd
