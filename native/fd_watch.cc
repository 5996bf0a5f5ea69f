// FdWatch: a libuv poll handle on the calling thread's event loop, so the main thread (vhost-user
// sockets) and each reactor worker (kick eventfds) sleep in epoll until an fd is readable.
#include "common.h"
#include <uv.h>
#include <cstdlib>
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
    handle_ = static_cast<uv_poll_t*>(calloc(1, sizeof(uv_poll_t)));
    int rc = uv_poll_init(loop, handle_, ArgInt(info, 0));
    if (rc != 0) {
      free(handle_);
      handle_ = nullptr;
      Napi::Error::New(env, uv_strerror(rc)).ThrowAsJavaScriptException();
      return;
    }
    handle_->data = this;
  }

  ~FdWatch() override { CloseHandle(); }

 private:
  // Raw N-API rather than node-addon-api's MakeCallback: while a worker terminates, JS cannot run
  // and node-addon-api turns that failure into a fatal error (abort). Here it drops the event; an
  // exception thrown by the callback itself still reaches the thread's uncaughtException path.
  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<FdWatch*>(h->data);
    if (!self) return;
    napi_env env = self->Env();
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value argv[2];
    napi_value global = nullptr;
    napi_value fn = nullptr;
    napi_value result;
    if (napi_get_reference_value(env, self->callback_, &fn) == napi_ok && fn != nullptr &&
        napi_create_int32(env, status, &argv[0]) == napi_ok && napi_create_int32(env, events, &argv[1]) == napi_ok &&
        napi_get_global(env, &global) == napi_ok && global != nullptr) {
      napi_status st = napi_make_callback(env, *self->context_, global, fn, 2, argv, &result);
      if (st == napi_pending_exception) {
        napi_value exc;
        if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
      }
    }
    napi_close_handle_scope(env, scope);
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
    // The callback is a strong global handle, and it usually closes over the object that holds
    // this watch (a controller, a connection, a reactor's device): kept after close, it roots that
    // object, the watch's own wrapper with it, and so never lets the finalizer below run — every
    // closed watch leaked its owner. OnPoll cannot run any more (the handle is closing), and a
    // callback closing its own watch is safe: OnPoll holds the function in a local handle.
    callback_.Reset();
    return info.Env().Undefined();
  }

  void CloseHandle() {
    if (!handle_) return;
    handle_->data = nullptr;
    // The close callback must not live in this addon: when a worker ends, Node unloads the addon
    // before its loop runs pending close callbacks (a lambda here crashed). libc's free is always
    // mapped, and takes the handle pointer as is.
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), reinterpret_cast<uv_close_cb>(reinterpret_cast<void (*)()>(&free)));
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
