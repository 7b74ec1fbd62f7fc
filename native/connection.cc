#include "connection.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "addon_data.h"
#include "args.h"
#include "counters.h"
#include "domain.h"
#include "storage_pool.h"
#include "storage_vol.h"
#include "vir_error.h"
#include "worker.h"

namespace kvmbak {

Napi::Function Connection::Init(Napi::Env env) {
  return DefineClass(env, "Connection",
                     {
                         StaticMethod<&Connection::Open>("open"),
                         InstanceMethod<&Connection::Close>("close"),
                         InstanceMethod<&Connection::GetHostname>("getHostname"),
                         InstanceMethod<&Connection::GetLibVersion>("getLibVersion"),
                         InstanceMethod<&Connection::GetVersion>("getVersion"),
                         InstanceMethod<&Connection::GetURI>("getURI"),
                         InstanceMethod<&Connection::ListAllDomains>("listAllDomains"),
                         InstanceMethod<&Connection::LookupDomainByName>("lookupDomainByName"),
                         InstanceMethod<&Connection::LookupDomainByUUIDString>("lookupDomainByUUIDString"),
                         InstanceMethod<&Connection::DefineXML>("defineXML"),
                         InstanceMethod<&Connection::Restore>("restore"),
                         InstanceMethod<&Connection::SaveImageGetXMLDesc>("saveImageGetXMLDesc"),
                         InstanceMethod<&Connection::LookupStorageVolByPath>("lookupStorageVolByPath"),
                         InstanceMethod<&Connection::LookupStoragePoolByName>("lookupStoragePoolByName"),
                         InstanceMethod<&Connection::ListAllStoragePools>("listAllStoragePools"),
                         InstanceMethod<&Connection::IsClosed>("isClosed"),
                     });
}

Napi::Object Connection::NewInstance(Napi::Env env, ConnectHandle handle) {
  Napi::External<virConnect> ext = Napi::External<virConnect>::New(env, handle.get());
  Napi::Object obj = GetAddonData(env).connection.New({ext});
  handle.release();  // the wrapper owns the reference now
  return obj;
}

Connection::Connection(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Connection>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "Connection objects come from Connection.open()");
  }
  conn_ = info[0].As<Napi::External<virConnect>>().Data();
  GlobalCounters().connections++;
}

Connection::~Connection() {
  if (conn_ != nullptr) {
    virConnectClose(conn_);
    conn_ = nullptr;
    GlobalCounters().connections--;
  }
}

virConnectPtr Connection::Ptr(Napi::Env env) const {
  if (conn_ == nullptr) throw ClosedHandleError(env, "Connection");
  return conn_;
}

Napi::Value Connection::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::optional<std::string> uri = OptionalStringArg(info, 0, "uri");
  return VirWorker<ConnectHandle>::Start(
      env, Napi::Object(), "virConnectOpen", nullptr,
      [uri](ConnectHandle& out) {
        out.reset(virConnectOpen(uri ? uri->c_str() : nullptr));
        return out != nullptr;
      },
      [](Napi::Env e, Napi::Object, ConnectHandle& out) -> Napi::Value { return NewInstance(e, std::move(out)); });
}

Napi::Value Connection::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (conn_ == nullptr) return Napi::Number::New(env, 0);
  virConnectPtr conn = conn_;
  conn_ = nullptr;
  GlobalCounters().connections--;
  int remaining = virConnectClose(conn);
  if (remaining < 0) {
    VirErrorInfo error;
    error.CaptureOnThisThread();
    throw error.ToJs(env, "virConnectClose");
  }
  return Napi::Number::New(env, remaining);
}

Napi::Value Connection::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), conn_ == nullptr);
}

namespace {

Napi::Value ResolveString(Napi::Env env, Napi::Object, std::string& s) { return Napi::String::New(env, s); }

Napi::Value ResolveNumber(Napi::Env env, Napi::Object, unsigned long& v) {  // NOLINT(runtime/int)
  return Napi::Number::New(env, static_cast<double>(v));
}

Napi::Value ResolveDomain(Napi::Env env, Napi::Object self, DomainHandle& dom) {
  return Domain::NewInstance(env, std::move(dom), self);
}

// Copies a string libvirt allocated and frees it.
bool TakeString(char* s, std::string& out) {
  if (s == nullptr) return false;
  out = s;
  free(s);  // NOLINT: libvirt returns malloc'd strings
  return true;
}

}  // namespace

Napi::Value Connection::GetHostname(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  return VirWorker<std::string>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virConnectGetHostname", PinConnect(conn),
      [conn](std::string& out) { return TakeString(virConnectGetHostname(conn), out); }, ResolveString);
}

Napi::Value Connection::GetURI(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  return VirWorker<std::string>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virConnectGetURI", PinConnect(conn),
      [conn](std::string& out) { return TakeString(virConnectGetURI(conn), out); }, ResolveString);
}

Napi::Value Connection::GetLibVersion(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  return VirWorker<unsigned long>::Start(  // NOLINT(runtime/int)
      info.Env(), info.This().As<Napi::Object>(), "virConnectGetLibVersion", PinConnect(conn),
      [conn](unsigned long& out) { return virConnectGetLibVersion(conn, &out) == 0; },  // NOLINT(runtime/int)
      ResolveNumber);
}

Napi::Value Connection::GetVersion(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  return VirWorker<unsigned long>::Start(  // NOLINT(runtime/int)
      info.Env(), info.This().As<Napi::Object>(), "virConnectGetVersion", PinConnect(conn),
      [conn](unsigned long& out) { return virConnectGetVersion(conn, &out) == 0; },  // NOLINT(runtime/int)
      ResolveNumber);
}

Napi::Value Connection::ListAllDomains(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  unsigned int flags = FlagsArg(info, 0);
  using List = std::vector<DomainHandle>;
  return VirWorker<List>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virConnectListAllDomains", PinConnect(conn),
      [conn, flags](List& out) {
        virDomainPtr* doms = nullptr;
        int n = virConnectListAllDomains(conn, &doms, flags);
        if (n < 0) return false;
        out.reserve(static_cast<size_t>(n));
        for (int k = 0; k < n; k++) out.emplace_back(doms[k]);
        free(doms);  // NOLINT: libvirt allocated the array with malloc
        return true;
      },
      [](Napi::Env env, Napi::Object self, List& list) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, list.size());
        for (size_t k = 0; k < list.size(); k++) {
          arr.Set(static_cast<uint32_t>(k), Domain::NewInstance(env, std::move(list[k]), self));
        }
        return arr;
      });
}

Napi::Value Connection::LookupDomainByName(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  std::string name = StringArg(info, 0, "name");
  return VirWorker<DomainHandle>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainLookupByName", PinConnect(conn),
      [conn, name](DomainHandle& out) {
        out.reset(virDomainLookupByName(conn, name.c_str()));
        return out != nullptr;
      },
      ResolveDomain);
}

Napi::Value Connection::LookupDomainByUUIDString(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  std::string uuid = StringArg(info, 0, "uuid");
  return VirWorker<DomainHandle>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainLookupByUUIDString", PinConnect(conn),
      [conn, uuid](DomainHandle& out) {
        out.reset(virDomainLookupByUUIDString(conn, uuid.c_str()));
        return out != nullptr;
      },
      ResolveDomain);
}

Napi::Value Connection::DefineXML(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  std::string xml = StringArg(info, 0, "xml");
  return VirWorker<DomainHandle>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainDefineXML", PinConnect(conn),
      [conn, xml](DomainHandle& out) {
        out.reset(virDomainDefineXML(conn, xml.c_str()));
        return out != nullptr;
      },
      ResolveDomain);
}

Napi::Value Connection::Restore(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  std::string path = StringArg(info, 0, "path");
  std::optional<std::string> dxml = OptionalStringArg(info, 1, "xml");
  unsigned int flags = FlagsArg(info, 2);
  return VirWorker<Done>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainRestoreFlags", PinConnect(conn),
      [conn, path, dxml, flags](Done&) {
        return virDomainRestoreFlags(conn, path.c_str(), dxml ? dxml->c_str() : nullptr, flags) == 0;
      },
      [](Napi::Env env, Napi::Object, Done&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value Connection::SaveImageGetXMLDesc(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  std::string path = StringArg(info, 0, "path");
  unsigned int flags = FlagsArg(info, 1);
  return VirWorker<std::string>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainSaveImageGetXMLDesc", PinConnect(conn),
      [conn, path, flags](std::string& out) {
        return TakeString(virDomainSaveImageGetXMLDesc(conn, path.c_str(), flags), out);
      },
      ResolveString);
}

Napi::Value Connection::LookupStorageVolByPath(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  std::string path = StringArg(info, 0, "path");
  return VirWorker<StorageVolHandle>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStorageVolLookupByPath", PinConnect(conn),
      [conn, path](StorageVolHandle& out) {
        out.reset(virStorageVolLookupByPath(conn, path.c_str()));
        return out != nullptr;
      },
      [](Napi::Env env, Napi::Object self, StorageVolHandle& vol) -> Napi::Value {
        return StorageVol::NewInstance(env, std::move(vol), self);
      });
}

Napi::Value Connection::LookupStoragePoolByName(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  std::string name = StringArg(info, 0, "name");
  return VirWorker<StoragePoolHandle>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virStoragePoolLookupByName", PinConnect(conn),
      [conn, name](StoragePoolHandle& out) {
        out.reset(virStoragePoolLookupByName(conn, name.c_str()));
        return out != nullptr;
      },
      [](Napi::Env env, Napi::Object self, StoragePoolHandle& pool) -> Napi::Value {
        return StoragePool::NewInstance(env, std::move(pool), self);
      });
}

Napi::Value Connection::ListAllStoragePools(const Napi::CallbackInfo& info) {
  virConnectPtr conn = Ptr(info.Env());
  unsigned int flags = FlagsArg(info, 0);
  using List = std::vector<StoragePoolHandle>;
  return VirWorker<List>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virConnectListAllStoragePools", PinConnect(conn),
      [conn, flags](List& out) {
        virStoragePoolPtr* pools = nullptr;
        int n = virConnectListAllStoragePools(conn, &pools, flags);
        if (n < 0) return false;
        out.reserve(static_cast<size_t>(n));
        for (int k = 0; k < n; k++) out.emplace_back(pools[k]);
        free(pools);  // NOLINT: libvirt allocated the array with malloc
        return true;
      },
      [](Napi::Env env, Napi::Object self, List& list) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, list.size());
        for (size_t k = 0; k < list.size(); k++) {
          arr.Set(static_cast<uint32_t>(k), StoragePool::NewInstance(env, std::move(list[k]), self));
        }
        return arr;
      });
}

}  // namespace kvmbak
