#include "domain.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "addon_data.h"
#include "args.h"
#include "counters.h"
#include "vir_error.h"
#include "worker.h"

namespace kvmbak {

namespace {

struct BlockInfo {
  virDomainBlockInfo info{};
};

struct DomainInfo {
  virDomainInfo info{};
};

struct DomainState {
  int state = 0;
  int reason = 0;
};

// One typed parameter, copied out of libvirt's array on the worker thread.
struct TypedParam {
  std::string name;
  int type = 0;
  double number = 0;
  bool boolean = false;
  std::string text;
};

struct JobStats {
  int type = 0;
  std::vector<TypedParam> params;
};

Napi::Value ResolveUndefined(Napi::Env env, Napi::Object, Done&) { return env.Undefined(); }
Napi::Value ResolveInt(Napi::Env env, Napi::Object, int& v) { return Napi::Number::New(env, v); }

}  // namespace

Napi::Function Domain::Init(Napi::Env env) {
  return DefineClass(env, "Domain",
                     {
                         InstanceMethod<&Domain::GetName>("getName"),
                         InstanceMethod<&Domain::GetUUIDString>("getUUIDString"),
                         InstanceMethod<&Domain::GetID>("getID"),
                         InstanceMethod<&Domain::GetInfo>("getInfo"),
                         InstanceMethod<&Domain::GetState>("getState"),
                         InstanceMethod<&Domain::GetXMLDesc>("getXMLDesc"),
                         InstanceMethod<&Domain::GetBlockInfo>("getBlockInfo"),
                         InstanceMethod<&Domain::Save>("save"),
                         InstanceMethod<&Domain::Suspend>("suspend"),
                         InstanceMethod<&Domain::Resume>("resume"),
                         InstanceMethod<&Domain::Create>("create"),
                         InstanceMethod<&Domain::Shutdown>("shutdown"),
                         InstanceMethod<&Domain::Destroy>("destroy"),
                         InstanceMethod<&Domain::UndefineFlags>("undefineFlags"),
                         InstanceMethod<&Domain::FSFreeze>("fsFreeze"),
                         InstanceMethod<&Domain::FSThaw>("fsThaw"),
                         InstanceMethod<&Domain::AgentSetResponseTimeout>("agentSetResponseTimeout"),
                         InstanceMethod<&Domain::GetJobStats>("getJobStats"),
                         InstanceMethod<&Domain::Free>("free"),
                         InstanceMethod<&Domain::IsFreed>("isFreed"),
                     });
}

Napi::Object Domain::NewInstance(Napi::Env env, DomainHandle handle, Napi::Object connection) {
  Napi::External<virDomain> ext = Napi::External<virDomain>::New(env, handle.get());
  Napi::Object obj = GetAddonData(env).domain.New({ext, connection});
  handle.release();  // the wrapper owns the reference now
  return obj;
}

Domain::Domain(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Domain>(info) {
  if (info.Length() != 2 || !info[0].IsExternal() || !info[1].IsObject()) {
    throw Napi::TypeError::New(info.Env(), "Domain objects come from Connection methods");
  }
  dom_ = info[0].As<Napi::External<virDomain>>().Data();
  connection_ = Napi::Persistent(info[1].As<Napi::Object>());
  GlobalCounters().domains++;
}

Domain::~Domain() {
  if (dom_ != nullptr) {
    virDomainFree(dom_);
    dom_ = nullptr;
    GlobalCounters().domains--;
  }
}

virDomainPtr Domain::Ptr(Napi::Env env) const {
  if (dom_ == nullptr) throw ClosedHandleError(env, "Domain");
  return dom_;
}

Napi::Value Domain::Free(const Napi::CallbackInfo& info) {
  if (dom_ != nullptr) {
    virDomainFree(dom_);
    dom_ = nullptr;
    GlobalCounters().domains--;
    connection_.Reset();
  }
  return info.Env().Undefined();
}

Napi::Value Domain::IsFreed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), dom_ == nullptr); }

Napi::Value Domain::GetName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* name = virDomainGetName(Ptr(env));
  if (name == nullptr) {
    VirErrorInfo error;
    error.CaptureOnThisThread();
    throw error.ToJs(env, "virDomainGetName");
  }
  return Napi::String::New(env, name);
}

Napi::Value Domain::GetUUIDString(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(Ptr(env), uuid) < 0) {
    VirErrorInfo error;
    error.CaptureOnThisThread();
    throw error.ToJs(env, "virDomainGetUUIDString");
  }
  return Napi::String::New(env, uuid);
}

Napi::Value Domain::GetID(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned int id = virDomainGetID(Ptr(env));
  // (unsigned int)-1 means "not running" (or an invalid domain, which a live
  // wrapper never holds).
  return Napi::Number::New(env, id == static_cast<unsigned int>(-1) ? -1.0 : static_cast<double>(id));
}

Napi::Value Domain::GetInfo(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  return VirWorker<DomainInfo>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainGetInfo", PinDomain(dom),
      [dom](DomainInfo& out) { return virDomainGetInfo(dom, &out.info) == 0; },
      [](Napi::Env env, Napi::Object, DomainInfo& out) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("state", Napi::Number::New(env, out.info.state));
        o.Set("maxMem", Napi::Number::New(env, static_cast<double>(out.info.maxMem)));
        o.Set("memory", Napi::Number::New(env, static_cast<double>(out.info.memory)));
        o.Set("nrVirtCpu", Napi::Number::New(env, out.info.nrVirtCpu));
        o.Set("cpuTime", Napi::BigInt::New(env, static_cast<uint64_t>(out.info.cpuTime)));
        return o;
      });
}

Napi::Value Domain::GetState(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  unsigned int flags = FlagsArg(info, 0);
  return VirWorker<DomainState>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainGetState", PinDomain(dom),
      [dom, flags](DomainState& out) { return virDomainGetState(dom, &out.state, &out.reason, flags) == 0; },
      [](Napi::Env env, Napi::Object, DomainState& out) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("state", Napi::Number::New(env, out.state));
        o.Set("reason", Napi::Number::New(env, out.reason));
        return o;
      });
}

Napi::Value Domain::GetXMLDesc(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  unsigned int flags = FlagsArg(info, 0);
  return VirWorker<std::string>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainGetXMLDesc", PinDomain(dom),
      [dom, flags](std::string& out) {
        char* xml = virDomainGetXMLDesc(dom, flags);
        if (xml == nullptr) return false;
        out = xml;
        free(xml);  // NOLINT: libvirt returns a malloc'd string
        return true;
      },
      [](Napi::Env env, Napi::Object, std::string& out) -> Napi::Value { return Napi::String::New(env, out); });
}

Napi::Value Domain::GetBlockInfo(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  std::string disk = StringArg(info, 0, "disk");
  unsigned int flags = FlagsArg(info, 1);
  return VirWorker<BlockInfo>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainGetBlockInfo", PinDomain(dom),
      [dom, disk, flags](BlockInfo& out) { return virDomainGetBlockInfo(dom, disk.c_str(), &out.info, flags) == 0; },
      [](Napi::Env env, Napi::Object, BlockInfo& out) -> Napi::Value {
        // Bytes; exact up to 2^53 (8 PiB).
        Napi::Object o = Napi::Object::New(env);
        o.Set("capacity", Napi::Number::New(env, static_cast<double>(out.info.capacity)));
        o.Set("allocation", Napi::Number::New(env, static_cast<double>(out.info.allocation)));
        o.Set("physical", Napi::Number::New(env, static_cast<double>(out.info.physical)));
        return o;
      });
}

Napi::Value Domain::Save(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  std::string path = StringArg(info, 0, "path");
  std::optional<std::string> dxml = OptionalStringArg(info, 1, "xml");
  unsigned int flags = FlagsArg(info, 2);
  return VirWorker<Done>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainSaveFlags", PinDomain(dom),
      [dom, path, dxml, flags](Done&) {
        return virDomainSaveFlags(dom, path.c_str(), dxml ? dxml->c_str() : nullptr, flags) == 0;
      },
      ResolveUndefined);
}

Napi::Value Domain::SimpleCall(const Napi::CallbackInfo& info, const char* operation, int (*fn)(virDomainPtr)) {
  virDomainPtr dom = Ptr(info.Env());
  return VirWorker<Done>::Start(
      info.Env(), info.This().As<Napi::Object>(), operation, PinDomain(dom), [dom, fn](Done&) { return fn(dom) == 0; },
      ResolveUndefined);
}

Napi::Value Domain::Suspend(const Napi::CallbackInfo& info) {
  return SimpleCall(info, "virDomainSuspend", virDomainSuspend);
}

Napi::Value Domain::Resume(const Napi::CallbackInfo& info) {
  return SimpleCall(info, "virDomainResume", virDomainResume);
}

Napi::Value Domain::Create(const Napi::CallbackInfo& info) {
  return SimpleCall(info, "virDomainCreate", virDomainCreate);
}

Napi::Value Domain::Shutdown(const Napi::CallbackInfo& info) {
  return SimpleCall(info, "virDomainShutdown", virDomainShutdown);
}

Napi::Value Domain::Destroy(const Napi::CallbackInfo& info) {
  return SimpleCall(info, "virDomainDestroy", virDomainDestroy);
}

Napi::Value Domain::UndefineFlags(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  unsigned int flags = FlagsArg(info, 0);
  return VirWorker<Done>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainUndefineFlags", PinDomain(dom),
      [dom, flags](Done&) { return virDomainUndefineFlags(dom, flags) == 0; }, ResolveUndefined);
}

namespace {

using FsFn = int (*)(virDomainPtr, const char**, unsigned int, unsigned int);

Napi::Value FsCall(const Napi::CallbackInfo& info, virDomainPtr dom, const char* operation, FsFn fn) {
  std::vector<std::string> mountpoints = StringArrayArg(info, 0, "mountpoints");
  unsigned int flags = FlagsArg(info, 1);
  return VirWorker<int>::Start(
      info.Env(), info.This().As<Napi::Object>(), operation, PinDomain(dom),
      [dom, mountpoints, flags, fn](int& out) {
        std::vector<const char*> ptrs;
        ptrs.reserve(mountpoints.size());
        for (const std::string& m : mountpoints) ptrs.push_back(m.c_str());
        out = fn(dom, ptrs.empty() ? nullptr : ptrs.data(), static_cast<unsigned int>(ptrs.size()), flags);
        return out >= 0;
      },
      ResolveInt);
}

}  // namespace

Napi::Value Domain::FSFreeze(const Napi::CallbackInfo& info) {
  return FsCall(info, Ptr(info.Env()), "virDomainFSFreeze", virDomainFSFreeze);
}

Napi::Value Domain::FSThaw(const Napi::CallbackInfo& info) {
  return FsCall(info, Ptr(info.Env()), "virDomainFSThaw", virDomainFSThaw);
}

Napi::Value Domain::AgentSetResponseTimeout(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  int timeout = static_cast<int>(IntegerArg(info, 0, "timeout", INT32_MIN, INT32_MAX));
  unsigned int flags = FlagsArg(info, 1);
  return VirWorker<Done>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainAgentSetResponseTimeout", PinDomain(dom),
      [dom, timeout, flags](Done&) { return virDomainAgentSetResponseTimeout(dom, timeout, flags) == 0; },
      ResolveUndefined);
}

Napi::Value Domain::GetJobStats(const Napi::CallbackInfo& info) {
  virDomainPtr dom = Ptr(info.Env());
  unsigned int flags = FlagsArg(info, 0);
  return VirWorker<JobStats>::Start(
      info.Env(), info.This().As<Napi::Object>(), "virDomainGetJobStats", PinDomain(dom),
      [dom, flags](JobStats& out) {
        virTypedParameterPtr params = nullptr;
        int nparams = 0;
        if (virDomainGetJobStats(dom, &out.type, &params, &nparams, flags) < 0) return false;
        out.params.reserve(static_cast<size_t>(nparams));
        for (int k = 0; k < nparams; k++) {
          const virTypedParameter& p = params[k];
          TypedParam t;
          t.name = p.field;
          t.type = p.type;
          switch (p.type) {
            case VIR_TYPED_PARAM_INT:
              t.number = p.value.i;
              break;
            case VIR_TYPED_PARAM_UINT:
              t.number = p.value.ui;
              break;
            case VIR_TYPED_PARAM_LLONG:
              t.number = static_cast<double>(p.value.l);
              break;
            case VIR_TYPED_PARAM_ULLONG:
              t.number = static_cast<double>(p.value.ul);
              break;
            case VIR_TYPED_PARAM_DOUBLE:
              t.number = p.value.d;
              break;
            case VIR_TYPED_PARAM_BOOLEAN:
              t.boolean = p.value.b != 0;
              break;
            case VIR_TYPED_PARAM_STRING:
              t.text = p.value.s != nullptr ? p.value.s : "";
              break;
            default:
              continue;  // a type newer than this addon: skip it
          }
          out.params.push_back(std::move(t));
        }
        virTypedParamsFree(params, nparams);
        return true;
      },
      [](Napi::Env env, Napi::Object, JobStats& out) -> Napi::Value {
        Napi::Object params = Napi::Object::New(env);
        for (const TypedParam& t : out.params) {
          if (t.type == VIR_TYPED_PARAM_BOOLEAN) {
            params.Set(t.name, Napi::Boolean::New(env, t.boolean));
          } else if (t.type == VIR_TYPED_PARAM_STRING) {
            params.Set(t.name, Napi::String::New(env, t.text));
          } else {
            params.Set(t.name, Napi::Number::New(env, t.number));
          }
        }
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", Napi::Number::New(env, out.type));
        o.Set("params", params);
        return o;
      });
}

}  // namespace kvmbak
