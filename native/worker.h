// VirWorker<T>: runs one libvirt call on the libuv thread pool and settles a
// Promise with its result, so the event loop never waits on libvirt.
//
//  - Arguments are converted to std::string/integers on the JS thread and
//    captured by value in `run`; Execute touches only libvirt and those.
//  - On failure, the libvirt error is copied on the worker thread right after
//    the call (VirErrorInfo::CaptureOnThisThread) and becomes a JS Error in
//    OnError; virGetLastError is never read on the JS thread.
//  - The worker pins both worlds until it is destroyed: a persistent
//    reference to the JS wrapper (so GC cannot collect it mid-call) and its
//    own libvirt reference (so free()/close() during the call is harmless).
#ifndef KVMBAK_NATIVE_WORKER_H_
#define KVMBAK_NATIVE_WORKER_H_

#include <functional>
#include <string>
#include <utility>

#include "common.h"
#include "counters.h"
#include "handles.h"
#include "quiet.h"
#include "vir_error.h"

namespace kvmbak {

template <typename T>
class VirWorker final : public Napi::AsyncWorker {
 public:
  // Runs on the worker thread: fills `result`, returns false when the libvirt
  // call failed (its error is still the thread's last error).
  using RunFn = std::function<bool(T& result)>;
  // Runs on the JS thread after success: turns `result` into a JS value.
  // `self` is the wrapper the call was made on (empty for static calls).
  using ResolveFn = std::function<Napi::Value(Napi::Env env, Napi::Object self, T& result)>;

  // Queues the call and returns its promise. `operation` is the libvirt C
  // function name reported in errors; it must be a string literal.
  static Napi::Promise Start(Napi::Env env, Napi::Object self, const char* operation, Pin pin, RunFn run,
                             ResolveFn resolve) {
    auto* worker = new VirWorker(env, self, operation, std::move(pin), std::move(run), std::move(resolve));
    Napi::Promise promise = worker->deferred_.Promise();
    worker->Queue();
    return promise;
  }

  ~VirWorker() override { GlobalCounters().workers--; }

 protected:
  void Execute() override {
    QuietLibxml2OnThisThread();
    if (!run_(result_)) {
      error_.CaptureOnThisThread();
      // AsyncWorker treats an empty message as success: never pass one.
      SetError(error_.message.empty() ? std::string(operation_) : error_.message);
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      Napi::Object self = self_.IsEmpty() ? Napi::Object() : self_.Value();
      deferred_.Resolve(resolve_(env, self, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& /*unused*/) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    deferred_.Reject(error_.ToJs(env, operation_).Value());
  }

 private:
  VirWorker(Napi::Env env, Napi::Object self, const char* operation, Pin pin, RunFn run, ResolveFn resolve)
      : Napi::AsyncWorker(env, operation),
        deferred_(Napi::Promise::Deferred::New(env)),
        operation_(operation),
        pin_(std::move(pin)),
        run_(std::move(run)),
        resolve_(std::move(resolve)) {
    if (!self.IsEmpty()) self_ = Napi::Persistent(self);
    GlobalCounters().workers++;
  }

  Napi::Promise::Deferred deferred_;
  const char* operation_;
  Napi::ObjectReference self_;  // the JS wrapper, alive until we are deleted
  Pin pin_;                     // our own libvirt reference, released in ~VirWorker
  RunFn run_;
  ResolveFn resolve_;
  T result_{};
  VirErrorInfo error_;
};

// The result type for calls that only succeed or fail.
struct Done {};

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_WORKER_H_
