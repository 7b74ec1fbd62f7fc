#include "storage_vol.h"

#include <string>
#include <utility>

#include "addon_data.h"
#include "counters.h"
#include "storage_pool.h"
#include "vir_error.h"
#include "worker.h"

namespace kvmbak {

namespace {

struct VolInfo {
  virStorageVolInfo info{};
};

}  // namespace

Napi::Function StorageVol::Init(Napi::Env env) {
  return DefineClass(env, "StorageVol",
                     {
                         InstanceMethod<&StorageVol::GetName>("getName"),
                         InstanceMethod<&StorageVol::GetKey>("getKey"),
                         InstanceMethod<&StorageVol::GetPath>("getPath"),
                         InstanceMethod<&StorageVol::GetInfo>("getInfo"),
                         InstanceMethod<&StorageVol::LookupPoolByVolume>("lookupPoolByVolume"),
                         InstanceMethod<&StorageVol::Free>("free"),
                         InstanceMethod<&StorageVol::IsFreed>("isFreed"),
                     });
}

Napi::Object StorageVol::NewInstance(Napi::Env env, StorageVolHandle handle, Napi::Value connection) {
  Napi::External<virStorageVol> ext = Napi::External<virStorageVol>::New(env, handle.get());
  Napi::Object obj = GetAddonData(env).storage_vol.New({ext, connection});
  handle.release();  // the wrapper owns the reference now
  return obj;
}

StorageVol::StorageVol(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StorageVol>(info) {
  if (info.Length() != 2 || !info[0].IsExternal() || !info[1].IsObject()) {
    throw Napi::TypeError::New(info.Env(), "StorageVol objects come from other libvirt objects' methods");
  }
  vol_ = info[0].As<Napi::External<virStorageVol>>().Data();
  connection_ = Napi::Persistent(info[1].As<Napi::Object>());
  GlobalCounters().storage_vols++;
}

StorageVol::~StorageVol() {
  if (vol_ != nullptr) {
    virStorageVolFree(vol_);
    vol_ = nullptr;
    GlobalCounters().storage_vols--;
  }
}

virStorageVolPtr StorageVol::Ptr(Napi::Env env) const {
  if (vol_ == nullptr) throw ClosedHandleError(env, "StorageVol");
  return vol_;
}

Napi::Value StorageVol::GetName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* name = virStorageVolGetName(Ptr(env));
  if (name == nullptr) {
    VirErrorInfo error;
    error.CaptureOnThisThread();
    throw error.ToJs(env, "virStorageVolGetName");
  }
  return Napi::String::New(env, name);
}

Napi::Value StorageVol::GetKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* key = virStorageVolGetKey(Ptr(env));
  if (key == nullptr) {
    VirErrorInfo error;
    error.CaptureOnThisThread();
    throw error.ToJs(env, "virStorageVolGetKey");
  }
  return Napi::String::New(env, key);
}

Napi::Value StorageVol::GetPath(const Napi::CallbackInfo& info) {
  virStorageVolPtr vol = Ptr(info.Env());
  return VirWorker<std::string>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStorageVolGetPath", PinStorageVol(vol),
      [vol](std::string& out) {
        char* path = virStorageVolGetPath(vol);
        if (path == nullptr) return false;
        out = path;
        free(path);  // NOLINT: libvirt returns a malloc'd string
        return true;
      },
      [](Napi::Env env, Napi::Object, std::string& out) -> Napi::Value { return Napi::String::New(env, out); });
}

Napi::Value StorageVol::GetInfo(const Napi::CallbackInfo& info) {
  virStorageVolPtr vol = Ptr(info.Env());
  return VirWorker<VolInfo>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStorageVolGetInfo", PinStorageVol(vol),
      [vol](VolInfo& out) { return virStorageVolGetInfo(vol, &out.info) == 0; },
      [](Napi::Env env, Napi::Object, VolInfo& out) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", Napi::Number::New(env, out.info.type));
        o.Set("capacity", Napi::Number::New(env, static_cast<double>(out.info.capacity)));
        o.Set("allocation", Napi::Number::New(env, static_cast<double>(out.info.allocation)));
        return o;
      });
}

Napi::Value StorageVol::LookupPoolByVolume(const Napi::CallbackInfo& info) {
  virStorageVolPtr vol = Ptr(info.Env());
  return VirWorker<StoragePoolHandle>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStoragePoolLookupByVolume", PinStorageVol(vol),
      [vol](StoragePoolHandle& out) {
        out.reset(virStoragePoolLookupByVolume(vol));
        return out != nullptr;
      },
      [](Napi::Env env, Napi::Object self, StoragePoolHandle& pool) -> Napi::Value {
        StorageVol* wrapper = StorageVol::Unwrap(self);
        // The pool shares the volume's connection. If the volume was freed
        // meanwhile, its reference to the connection is gone: wrap with the
        // volume object itself, which is still a valid keep-alive anchor.
        Napi::Value connection = wrapper->connection_.IsEmpty() ? Napi::Value(self) : wrapper->connection_.Value();
        return StoragePool::NewInstance(env, std::move(pool), connection);
      });
}

Napi::Value StorageVol::Free(const Napi::CallbackInfo& info) {
  if (vol_ != nullptr) {
    virStorageVolFree(vol_);
    vol_ = nullptr;
    GlobalCounters().storage_vols--;
    connection_.Reset();
  }
  return info.Env().Undefined();
}

Napi::Value StorageVol::IsFreed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), vol_ == nullptr);
}

}  // namespace kvmbak
