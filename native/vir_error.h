// VirErrorInfo: a plain copy of libvirt's thread-local virError, taken on the
// thread where the call failed (the error is thread-local: read anywhere
// else, it would be empty or another call's), turned into a JS Error later on
// the JS thread.
#ifndef KVMBAK_NATIVE_VIR_ERROR_H_
#define KVMBAK_NATIVE_VIR_ERROR_H_

#include <optional>
#include <string>

#include "common.h"

namespace kvmbak {

struct VirErrorInfo {
  int code = 0;    // virErrorNumber
  int domain = 0;  // virErrorDomain: the libvirt subsystem, not a VM
  int level = 0;   // virErrorLevel
  std::string message;
  std::optional<std::string> str1;
  std::optional<std::string> str2;
  std::optional<std::string> str3;
  int int1 = -1;
  int int2 = -1;

  // Copies the calling thread's last libvirt error (virCopyLastError) and
  // clears it (virResetError on the copy, virResetLastError on the thread).
  // Must run right after the failing libvirt call, on the same thread.
  void CaptureOnThisThread();

  // Builds the JS Error: message is libvirt's; properties virCode,
  // virErrorDomain, level, operation (the C function, e.g.
  // 'virDomainLookupByName'), str1..3 and int1..2 when libvirt set them.
  // The TypeScript boundary adds the symbolic names.
  Napi::Error ToJs(Napi::Env env, const char* operation) const;
};

// Error thrown when a wrapper is used after free()/close(). Carries
// code 'KVMBAK_CLOSED_HANDLE' so the TS layer maps it to ClosedHandleError.
Napi::Error ClosedHandleError(Napi::Env env, const char* what);

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_VIR_ERROR_H_
