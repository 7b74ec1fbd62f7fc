// Per-environment addon state: the wrapper constructors live
// here, stored with Env::SetInstanceData, never in static FunctionReferences,
// so the addon works in several environments (worker_threads) at once.
// The codec's libdeflate (de)compressors live here too: one set per thread.
#ifndef KVMBAK_NATIVE_ADDON_DATA_H_
#define KVMBAK_NATIVE_ADDON_DATA_H_

#include "codec.h"
#include "common.h"

namespace kvmbak {

struct AddonData {
  Napi::FunctionReference connection;
  Napi::FunctionReference domain;
  Napi::FunctionReference storage_pool;
  Napi::FunctionReference storage_vol;
  // libdeflate state of this environment (codec.h)
  CodecState codec;
};

inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_ADDON_DATA_H_
