// StorageVol: wraps a virStorageVolPtr. Created only by Connection and
// StoragePool methods; holds a reference to its Connection's JS wrapper.
#ifndef KVMBAK_NATIVE_STORAGE_VOL_H_
#define KVMBAK_NATIVE_STORAGE_VOL_H_

#include "common.h"
#include "handles.h"

namespace kvmbak {

class StorageVol : public Napi::ObjectWrap<StorageVol> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object NewInstance(Napi::Env env, StorageVolHandle handle, Napi::Value connection);

  explicit StorageVol(const Napi::CallbackInfo& info);
  ~StorageVol() override;  // finalizer: frees a volume never freed

 private:
  virStorageVolPtr Ptr(Napi::Env env) const;

  // virStorageVolGetName (synchronous: answered from the local object).
  Napi::Value GetName(const Napi::CallbackInfo& info);
  // virStorageVolGetKey (synchronous: answered from the local object).
  Napi::Value GetKey(const Napi::CallbackInfo& info);
  // virStorageVolGetPath -> string (asks the driver: a worker).
  Napi::Value GetPath(const Napi::CallbackInfo& info);
  // virStorageVolGetInfo -> {type, capacity, allocation}.
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  // virStoragePoolLookupByVolume -> StoragePool.
  Napi::Value LookupPoolByVolume(const Napi::CallbackInfo& info);
  // virStorageVolFree; synchronous and idempotent.
  Napi::Value Free(const Napi::CallbackInfo& info);
  // True after free().
  Napi::Value IsFreed(const Napi::CallbackInfo& info);

  virStorageVolPtr vol_ = nullptr;
  Napi::ObjectReference connection_;
};

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_STORAGE_VOL_H_
