#include "quiet.h"

#include <dlfcn.h>

namespace kvmbak {

namespace {

// libxml2: typedef void (*xmlGenericErrorFunc)(void* ctx, const char* msg, ...);
using GenericErrorFunc = void (*)(void*, const char*, ...);
using SetGenericErrorFunc = void (*)(void*, GenericErrorFunc);

void Ignore(void* /*ctx*/, const char* /*msg*/, ...) {}

SetGenericErrorFunc Resolve() {
  return reinterpret_cast<SetGenericErrorFunc>(dlsym(RTLD_DEFAULT, "xmlSetGenericErrorFunc"));
}

}  // namespace

void QuietLibxml2OnThisThread() {
  static const SetGenericErrorFunc set_generic_error = Resolve();
  thread_local bool done = false;
  if (done) return;
  done = true;
  if (set_generic_error != nullptr) set_generic_error(nullptr, Ignore);
}

}  // namespace kvmbak
