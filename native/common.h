// Shared includes and the libvirt version floor for the kvmbak addon.
#ifndef KVMBAK_NATIVE_COMMON_H_
#define KVMBAK_NATIVE_COMMON_H_

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

// Keep in step with MIN_LIBVIRT in scripts/preflight.mjs. Everything the
// addon calls exists in libvirt 8.0.0 (the newest API used is
// virDomainAgentSetResponseTimeout, libvirt 5.10).
#ifndef LIBVIR_CHECK_VERSION
#error "kvmbak needs libvirt >= 8.0.0 headers: install libvirt-dev (apt-get install -y libvirt-dev pkg-config)"
#elif !LIBVIR_CHECK_VERSION(8, 0, 0)
#error "kvmbak needs libvirt >= 8.0.0 headers: install libvirt-dev (apt-get install -y libvirt-dev pkg-config)"
#endif

#include <napi.h>

#endif  // KVMBAK_NATIVE_COMMON_H_
