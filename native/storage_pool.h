// StoragePool: wraps a virStoragePoolPtr. Created only by other wrappers'
// methods; holds a reference to its Connection's JS wrapper.
#ifndef KVMBAK_NATIVE_STORAGE_POOL_H_
#define KVMBAK_NATIVE_STORAGE_POOL_H_

#include "common.h"
#include "handles.h"

namespace kvmbak {

class StoragePool : public Napi::ObjectWrap<StoragePool> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object NewInstance(Napi::Env env, StoragePoolHandle handle, Napi::Value connection);

  explicit StoragePool(const Napi::CallbackInfo& info);
  ~StoragePool() override;  // finalizer: frees a pool never freed

 private:
  virStoragePoolPtr Ptr(Napi::Env env) const;

  // virStoragePoolGetName (synchronous: answered from the local object).
  Napi::Value GetName(const Napi::CallbackInfo& info);
  // virStoragePoolGetInfo -> {state, capacity, allocation, available}.
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  // virStorageVolLookupByName(name) -> StorageVol.
  Napi::Value LookupVolumeByName(const Napi::CallbackInfo& info);
  // virStoragePoolGetXMLDesc(pool, flags) -> string.
  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info);
  // virStoragePoolRefresh(pool, 0): rescans the pool's volumes (after LVs
  // were created, renamed or removed behind libvirt's back).
  Napi::Value Refresh(const Napi::CallbackInfo& info);
  // virStoragePoolFree; synchronous and idempotent.
  Napi::Value Free(const Napi::CallbackInfo& info);
  // True after free().
  Napi::Value IsFreed(const Napi::CallbackInfo& info);

  virStoragePoolPtr pool_ = nullptr;
  Napi::ObjectReference connection_;
};

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_STORAGE_POOL_H_
