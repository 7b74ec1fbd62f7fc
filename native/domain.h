// Domain: wraps a virDomainPtr (one VM). Created only by Connection methods;
// holds a reference to its Connection's JS wrapper, so the connection cannot
// be collected (and closed) while a domain of it is still reachable.
#ifndef KVMBAK_NATIVE_DOMAIN_H_
#define KVMBAK_NATIVE_DOMAIN_H_

#include "common.h"
#include "handles.h"

namespace kvmbak {

class Domain : public Napi::ObjectWrap<Domain> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps `handle` (taking over its reference); `connection` is the JS
  // Connection it came from.
  static Napi::Object NewInstance(Napi::Env env, DomainHandle handle, Napi::Object connection);

  explicit Domain(const Napi::CallbackInfo& info);
  ~Domain() override;  // finalizer: frees a domain never freed

 private:
  virDomainPtr Ptr(Napi::Env env) const;

  // virDomainGetName (synchronous: answered from the local object).
  Napi::Value GetName(const Napi::CallbackInfo& info);
  // virDomainGetUUIDString (synchronous).
  Napi::Value GetUUIDString(const Napi::CallbackInfo& info);
  // virDomainGetID (synchronous: the id cached at lookup; -1 when inactive).
  Napi::Value GetID(const Napi::CallbackInfo& info);
  // virDomainGetInfo -> {state, maxMem, memory, nrVirtCpu, cpuTime (bigint)}.
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  // virDomainGetState(flags) -> {state, reason}.
  Napi::Value GetState(const Napi::CallbackInfo& info);
  // virDomainGetXMLDesc(flags) -> string.
  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info);
  // virDomainGetBlockInfo(disk, flags) -> {capacity, allocation, physical}.
  Napi::Value GetBlockInfo(const Napi::CallbackInfo& info);
  // virDomainSaveFlags(path, dxml | null, flags).
  Napi::Value Save(const Napi::CallbackInfo& info);
  // virDomainSuspend.
  Napi::Value Suspend(const Napi::CallbackInfo& info);
  // virDomainResume.
  Napi::Value Resume(const Napi::CallbackInfo& info);
  // virDomainCreate.
  Napi::Value Create(const Napi::CallbackInfo& info);
  // virDomainShutdown.
  Napi::Value Shutdown(const Napi::CallbackInfo& info);
  // virDomainDestroy.
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  // virDomainUndefineFlags(flags).
  Napi::Value UndefineFlags(const Napi::CallbackInfo& info);
  // virDomainFSFreeze(mountpoints, flags) -> number of frozen filesystems.
  Napi::Value FSFreeze(const Napi::CallbackInfo& info);
  // virDomainFSThaw(mountpoints, flags) -> number of thawed filesystems.
  Napi::Value FSThaw(const Napi::CallbackInfo& info);
  // virDomainAgentSetResponseTimeout(timeout, flags).
  Napi::Value AgentSetResponseTimeout(const Napi::CallbackInfo& info);
  // virDomainGetJobStats(flags) -> {type, params: {name: value}}.
  Napi::Value GetJobStats(const Napi::CallbackInfo& info);
  // virDomainFree; synchronous and idempotent. Also drops the reference to
  // the Connection wrapper.
  Napi::Value Free(const Napi::CallbackInfo& info);
  // True after free().
  Napi::Value IsFreed(const Napi::CallbackInfo& info);

  // Queues a call that takes only flags-free arguments and returns 0 on
  // success (suspend, resume, create, shutdown, destroy).
  Napi::Value SimpleCall(const Napi::CallbackInfo& info, const char* operation, int (*fn)(virDomainPtr));

  virDomainPtr dom_ = nullptr;
  Napi::ObjectReference connection_;
};

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_DOMAIN_H_
