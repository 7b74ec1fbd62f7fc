// Connection: wraps a virConnectPtr, one ObjectWrap per libvirt object. Created only by the static
// Connection.open(); JS code cannot construct one directly.
#ifndef KVMBAK_NATIVE_CONNECTION_H_
#define KVMBAK_NATIVE_CONNECTION_H_

#include "common.h"
#include "handles.h"

namespace kvmbak {

class Connection : public Napi::ObjectWrap<Connection> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps `handle` (taking over its reference) in a new JS Connection.
  static Napi::Object NewInstance(Napi::Env env, ConnectHandle handle);

  explicit Connection(const Napi::CallbackInfo& info);
  ~Connection() override;  // finalizer: closes a connection never closed

  // The live pointer; throws ClosedHandleError after close().
  virConnectPtr Ptr(Napi::Env env) const;

 private:
  // virConnectOpen(uri | NULL), in a worker. Resolves to a Connection.
  static Napi::Value Open(const Napi::CallbackInfo& info);
  // virConnectClose; synchronous and idempotent. Returns virConnectClose's
  // result: 0 when this was the last reference, 1 when others remain (live
  // Domain/StorageVol/StoragePool handles or calls in flight still hold the
  // connection). A repeated call returns 0.
  Napi::Value Close(const Napi::CallbackInfo& info);
  // virConnectGetHostname -> string.
  Napi::Value GetHostname(const Napi::CallbackInfo& info);
  // virConnectGetLibVersion -> number (major * 1000000 + minor * 1000 + micro).
  Napi::Value GetLibVersion(const Napi::CallbackInfo& info);
  // virConnectGetVersion -> number (same encoding; the hypervisor's version).
  Napi::Value GetVersion(const Napi::CallbackInfo& info);
  // virConnectGetURI -> string.
  Napi::Value GetURI(const Napi::CallbackInfo& info);
  // virConnectListAllDomains(flags) -> Domain[].
  Napi::Value ListAllDomains(const Napi::CallbackInfo& info);
  // virDomainLookupByName(name) -> Domain.
  Napi::Value LookupDomainByName(const Napi::CallbackInfo& info);
  // virDomainLookupByUUIDString(uuid) -> Domain.
  Napi::Value LookupDomainByUUIDString(const Napi::CallbackInfo& info);
  // virDomainDefineXML(xml) -> Domain.
  Napi::Value DefineXML(const Napi::CallbackInfo& info);
  // virDomainRestoreFlags(path, dxml | null, flags) -> undefined.
  Napi::Value Restore(const Napi::CallbackInfo& info);
  // virDomainSaveImageGetXMLDesc(path, flags) -> string: the domain XML
  // stored in a save image.
  Napi::Value SaveImageGetXMLDesc(const Napi::CallbackInfo& info);
  // virStorageVolLookupByPath(path) -> StorageVol.
  Napi::Value LookupStorageVolByPath(const Napi::CallbackInfo& info);
  // virStoragePoolLookupByName(name) -> StoragePool.
  Napi::Value LookupStoragePoolByName(const Napi::CallbackInfo& info);
  // virConnectListAllStoragePools(flags) -> StoragePool[].
  Napi::Value ListAllStoragePools(const Napi::CallbackInfo& info);
  // True after close().
  Napi::Value IsClosed(const Napi::CallbackInfo& info);

  virConnectPtr conn_ = nullptr;
};

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_CONNECTION_H_
