// FdWatch: a libuv poll handle on the calling thread's event loop, so the main thread (vhost-user
// sockets) and each reactor worker (kick eventfds) sleep in epoll until an fd is readable.
#include "common.h"
#include <uv.h>
#include <memory>

namespace vhostd {
namespace {

class FdWatch : public Napi::ObjectWrap<FdWatch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatch", {
      InstanceMethod("start", &FdWatch::Start),
      InstanceMethod("stop", &FdWatch::Stop),
      InstanceMethod("close", &FdWatch::Close),
    });
  }

  // new FdWatch(fd, callback(status, events))
  explicit FdWatch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatch>(info) {
    Napi::Env env = info.Env();
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "vhostd:FdWatch");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, ArgInt(info, 0));
    if (rc != 0) {
      delete handle_;
      handle_ = nullptr;
      Napi::Error::New(env, uv_strerror(rc)).ThrowAsJavaScriptException();
      return;
    }
    handle_->data = this;
  }

  ~FdWatch() override { CloseHandle(); }

 private:
  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<FdWatch*>(h->data);
    if (!self) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    self->callback_.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Number::New(env, events)},
                                 *self->context_);
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (!handle_) return info.Env().Undefined();
    if (!active_) { Ref(); active_ = true; }
    uv_poll_start(handle_, UV_READABLE, OnPoll);
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_) uv_poll_stop(handle_);
    if (active_) { active_ = false; Unref(); }
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop(info);
    CloseHandle();
    return info.Env().Undefined();
  }

  void CloseHandle() {
    if (!handle_) return;
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  uv_poll_t* handle_ = nullptr;
  bool active_ = false;
};

}  // namespace

void InitFdWatch(Napi::Env env, Napi::Object exports) {
  exports.Set("FdWatch", FdWatch::Define(env));
}

}  // namespace vhostd
