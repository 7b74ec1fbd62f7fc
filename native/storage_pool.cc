#include "storage_pool.h"

#include <string>
#include <utility>

#include "addon_data.h"
#include "args.h"
#include "counters.h"
#include "storage_vol.h"
#include "vir_error.h"
#include "worker.h"

namespace kvmbak {

namespace {

struct PoolInfo {
  virStoragePoolInfo info{};
};

}  // namespace

Napi::Function StoragePool::Init(Napi::Env env) {
  return DefineClass(env, "StoragePool",
                     {
                         InstanceMethod<&StoragePool::GetName>("getName"),
                         InstanceMethod<&StoragePool::GetInfo>("getInfo"),
                         InstanceMethod<&StoragePool::LookupVolumeByName>("lookupVolumeByName"),
                         InstanceMethod<&StoragePool::GetXMLDesc>("getXMLDesc"),
                         InstanceMethod<&StoragePool::Refresh>("refresh"),
                         InstanceMethod<&StoragePool::Free>("free"),
                         InstanceMethod<&StoragePool::IsFreed>("isFreed"),
                     });
}

Napi::Object StoragePool::NewInstance(Napi::Env env, StoragePoolHandle handle, Napi::Value connection) {
  Napi::External<virStoragePool> ext = Napi::External<virStoragePool>::New(env, handle.get());
  Napi::Object obj = GetAddonData(env).storage_pool.New({ext, connection});
  handle.release();  // the wrapper owns the reference now
  return obj;
}

StoragePool::StoragePool(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StoragePool>(info) {
  if (info.Length() != 2 || !info[0].IsExternal() || !info[1].IsObject()) {
    throw Napi::TypeError::New(info.Env(), "StoragePool objects come from other libvirt objects' methods");
  }
  pool_ = info[0].As<Napi::External<virStoragePool>>().Data();
  connection_ = Napi::Persistent(info[1].As<Napi::Object>());
  GlobalCounters().storage_pools++;
}

StoragePool::~StoragePool() {
  if (pool_ != nullptr) {
    virStoragePoolFree(pool_);
    pool_ = nullptr;
    GlobalCounters().storage_pools--;
  }
}

virStoragePoolPtr StoragePool::Ptr(Napi::Env env) const {
  if (pool_ == nullptr) throw ClosedHandleError(env, "StoragePool");
  return pool_;
}

Napi::Value StoragePool::GetName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* name = virStoragePoolGetName(Ptr(env));
  if (name == nullptr) {
    VirErrorInfo error;
    error.CaptureOnThisThread();
    throw error.ToJs(env, "virStoragePoolGetName");
  }
  return Napi::String::New(env, name);
}

Napi::Value StoragePool::GetInfo(const Napi::CallbackInfo& info) {
  virStoragePoolPtr pool = Ptr(info.Env());
  return VirWorker<PoolInfo>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStoragePoolGetInfo", PinStoragePool(pool),
      [pool](PoolInfo& out) { return virStoragePoolGetInfo(pool, &out.info) == 0; },
      [](Napi::Env env, Napi::Object, PoolInfo& out) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("state", Napi::Number::New(env, out.info.state));
        o.Set("capacity", Napi::Number::New(env, static_cast<double>(out.info.capacity)));
        o.Set("allocation", Napi::Number::New(env, static_cast<double>(out.info.allocation)));
        o.Set("available", Napi::Number::New(env, static_cast<double>(out.info.available)));
        return o;
      });
}

Napi::Value StoragePool::LookupVolumeByName(const Napi::CallbackInfo& info) {
  virStoragePoolPtr pool = Ptr(info.Env());
  std::string name = StringArg(info, 0, "name");
  return VirWorker<StorageVolHandle>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStorageVolLookupByName", PinStoragePool(pool),
      [pool, name](StorageVolHandle& out) {
        out.reset(virStorageVolLookupByName(pool, name.c_str()));
        return out != nullptr;
      },
      [](Napi::Env env, Napi::Object self, StorageVolHandle& vol) -> Napi::Value {
        StoragePool* wrapper = StoragePool::Unwrap(self);
        // The volume shares the pool's connection. If the pool was freed
        // meanwhile, its reference to the connection is gone: wrap with the
        // pool object itself, which is still a valid keep-alive anchor.
        Napi::Value connection = wrapper->connection_.IsEmpty() ? Napi::Value(self) : wrapper->connection_.Value();
        return StorageVol::NewInstance(env, std::move(vol), connection);
      });
}

Napi::Value StoragePool::GetXMLDesc(const Napi::CallbackInfo& info) {
  virStoragePoolPtr pool = Ptr(info.Env());
  unsigned int flags = FlagsArg(info, 0);
  return VirWorker<std::string>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStoragePoolGetXMLDesc", PinStoragePool(pool),
      [pool, flags](std::string& out) {
        char* xml = virStoragePoolGetXMLDesc(pool, flags);
        if (xml == nullptr) return false;
        out = xml;
        free(xml);  // NOLINT: libvirt returns a malloc'd string
        return true;
      },
      [](Napi::Env env, Napi::Object, std::string& xml) -> Napi::Value { return Napi::String::New(env, xml); });
}

Napi::Value StoragePool::Refresh(const Napi::CallbackInfo& info) {
  virStoragePoolPtr pool = Ptr(info.Env());
  return VirWorker<Done>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStoragePoolRefresh", PinStoragePool(pool),
      [pool](Done&) { return virStoragePoolRefresh(pool, 0) == 0; },
      [](Napi::Env env, Napi::Object, Done&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value StoragePool::Free(const Napi::CallbackInfo& info) {
  if (pool_ != nullptr) {
    virStoragePoolFree(pool_);
    pool_ = nullptr;
    GlobalCounters().storage_pools--;
    connection_.Reset();
  }
  return info.Env().Undefined();
}

Napi::Value StoragePool::IsFreed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), pool_ == nullptr);
}

}  // namespace kvmbak
