// Entry point of the kvmbak addon: a thin, faithful mapping of the libvirt
// calls kvmbak needs. Policy lives in TypeScript (src/libvirt/), where it can
// be tested without a hypervisor.
#include <mutex>
#include <string>

#include "addon_data.h"
#include "codec.h"
#include "common.h"
#include "connection.h"
#include "counters.h"
#include "domain.h"
#include "storage_pool.h"
#include "storage_vol.h"

namespace kvmbak {

Counters& GlobalCounters() {
  static Counters counters;
  return counters;
}

namespace {

// libvirt's default error handler prints every error to stderr. Errors reach
// JS as rejected promises instead, so the handler does nothing.
void QuietErrorHandler(void* /*user_data*/, virErrorPtr /*error*/) {}

std::once_flag init_once;
int init_result = 0;

// Once per process, whatever the number of environments loading the addon.
// No event loop implementation is registered: kvmbak uses no libvirt events.
void InitLibvirtOnce() {
  std::call_once(init_once, [] {
    init_result = virInitialize();
    virSetErrorFunc(nullptr, QuietErrorHandler);
  });
}

// counters() -> {connections, domains, storagePools, storageVols, workers}:
// libvirt handles currently owned by wrappers, and in-flight worker calls.
Napi::Value GetCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Counters& c = GlobalCounters();
  Napi::Object o = Napi::Object::New(env);
  o.Set("connections", Napi::Number::New(env, static_cast<double>(c.connections.load())));
  o.Set("domains", Napi::Number::New(env, static_cast<double>(c.domains.load())));
  o.Set("storagePools", Napi::Number::New(env, static_cast<double>(c.storage_pools.load())));
  o.Set("storageVols", Napi::Number::New(env, static_cast<double>(c.storage_vols.load())));
  o.Set("workers", Napi::Number::New(env, static_cast<double>(c.workers.load())));
  return o;
}

// virGetVersion: the version of the libvirt library loaded at run time.
Napi::Value GetLibraryVersion(const Napi::CallbackInfo& info) {
  unsigned long version = 0;  // NOLINT(runtime/int)
  if (virGetVersion(&version, nullptr, nullptr) < 0) version = 0;
  return Napi::Number::New(info.Env(), static_cast<double>(version));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitLibvirtOnce();
  if (init_result < 0) {
    throw Napi::Error::New(env, "kvmbak: virInitialize() failed: the libvirt library could not initialise");
  }

  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted by node when the env goes away

  Napi::Function connection = Connection::Init(env);
  Napi::Function domain = Domain::Init(env);
  Napi::Function pool = StoragePool::Init(env);
  Napi::Function vol = StorageVol::Init(env);
  data->connection = Napi::Persistent(connection);
  data->domain = Napi::Persistent(domain);
  data->storage_pool = Napi::Persistent(pool);
  data->storage_vol = Napi::Persistent(vol);

  exports.Set("Connection", connection);
  exports.Set("Domain", domain);
  exports.Set("StoragePool", pool);
  exports.Set("StorageVol", vol);
  InitCodec(env, exports);
  exports.Set("counters", Napi::Function::New<GetCounters>(env, "counters"));
  exports.Set("libraryVersion", Napi::Function::New<GetLibraryVersion>(env, "libraryVersion"));
  exports.Set("headerVersion", Napi::Number::New(env, LIBVIR_VERSION_NUMBER));
  return exports;
}

}  // namespace kvmbak

static Napi::Object InitKvmbak(Napi::Env env, Napi::Object exports) { return kvmbak::Init(env, exports); }

NODE_API_MODULE(kvmbak, InitKvmbak)
