// Argument conversion on the JS thread. Bad arguments throw a TypeError
// (the only C++ exceptions the addon raises on purpose; libvirt failures are
// rejected Promises carrying a LibvirtError instead).
#ifndef KVMBAK_NATIVE_ARGS_H_
#define KVMBAK_NATIVE_ARGS_H_

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common.h"

namespace kvmbak {

inline std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// null or undefined -> nullopt (libvirt's NULL).
inline std::optional<std::string> OptionalStringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info[i].IsNull() || info[i].IsUndefined()) return std::nullopt;
  return StringArg(info, i, name);
}

inline int64_t IntegerArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::trunc(v) != v || v < static_cast<double>(min) || v > static_cast<double>(max)) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an integer in range");
  }
  return static_cast<int64_t>(v);
}

// libvirt flags: an unsigned int; undefined means 0.
inline unsigned int FlagsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info[i].IsUndefined()) return 0;
  return static_cast<unsigned int>(IntegerArg(info, i, "flags", 0, UINT32_MAX));
}

inline std::vector<std::string> StringArrayArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  std::vector<std::string> out;
  if (info[i].IsNull() || info[i].IsUndefined()) return out;
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an array of strings");
  Napi::Array arr = info[i].As<Napi::Array>();
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (!v.IsString()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an array of strings");
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_ARGS_H_
