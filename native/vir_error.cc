#include "vir_error.h"

#include <cstring>

namespace kvmbak {

void VirErrorInfo::CaptureOnThisThread() {
  virError err;
  std::memset(&err, 0, sizeof(err));
  int rc = virCopyLastError(&err);
  if (rc <= 0) {
    // The call failed without setting an error (rc == 0), or copying it
    // failed (rc < 0). Report that instead of inventing a libvirt code.
    code = VIR_ERR_INTERNAL_ERROR;
    domain = VIR_FROM_NONE;
    level = VIR_ERR_ERROR;
    message = "libvirt call failed without reporting an error";
  } else {
    code = err.code;
    domain = err.domain;
    level = static_cast<int>(err.level);
    message = err.message != nullptr ? err.message : "libvirt error without a message";
    if (err.str1 != nullptr) str1 = err.str1;
    if (err.str2 != nullptr) str2 = err.str2;
    if (err.str3 != nullptr) str3 = err.str3;
    int1 = err.int1;
    int2 = err.int2;
  }
  virResetError(&err);
  virResetLastError();
}

Napi::Error VirErrorInfo::ToJs(Napi::Env env, const char* operation) const {
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("virCode", Napi::Number::New(env, code));
  obj.Set("virErrorDomain", Napi::Number::New(env, domain));
  obj.Set("level", Napi::Number::New(env, level));
  obj.Set("operation", Napi::String::New(env, operation));
  if (str1) obj.Set("str1", Napi::String::New(env, *str1));
  if (str2) obj.Set("str2", Napi::String::New(env, *str2));
  if (str3) obj.Set("str3", Napi::String::New(env, *str3));
  // libvirt passes -1 for "no number" (virReportErrorHelper).
  if (int1 != -1) obj.Set("int1", Napi::Number::New(env, int1));
  if (int2 != -1) obj.Set("int2", Napi::Number::New(env, int2));
  return error;
}

Napi::Error ClosedHandleError(Napi::Env env, const char* what) {
  Napi::Error error = Napi::Error::New(
      env, std::string("kvmbak: this ") + what + " was already released (free()/close()); get a new one");
  error.Value().Set("code", Napi::String::New(env, "KVMBAK_CLOSED_HANDLE"));
  return error;
}

}  // namespace kvmbak
