// Owning handles for libvirt objects. Each holds exactly one libvirt
// reference and releases it once: virConnectClose, virDomainFree,
// virStoragePoolFree, virStorageVolFree. Used for results travelling from a
// worker thread to the JS thread, and for the extra reference a worker takes
// on the object it operates on, so a JS-side free() during the call cannot
// release the handle under it.
#ifndef KVMBAK_NATIVE_HANDLES_H_
#define KVMBAK_NATIVE_HANDLES_H_

#include <memory>

#include "common.h"
#include "counters.h"

namespace kvmbak {

struct ConnectCloser {
  void operator()(virConnectPtr p) const noexcept {
    if (p != nullptr) virConnectClose(p);
  }
};
struct DomainFreer {
  void operator()(virDomainPtr p) const noexcept {
    if (p != nullptr) virDomainFree(p);
  }
};
struct StoragePoolFreer {
  void operator()(virStoragePoolPtr p) const noexcept {
    if (p != nullptr) virStoragePoolFree(p);
  }
};
struct StorageVolFreer {
  void operator()(virStorageVolPtr p) const noexcept {
    if (p != nullptr) virStorageVolFree(p);
  }
};

using ConnectHandle = std::unique_ptr<virConnect, ConnectCloser>;
using DomainHandle = std::unique_ptr<virDomain, DomainFreer>;
using StoragePoolHandle = std::unique_ptr<virStoragePool, StoragePoolFreer>;
using StorageVolHandle = std::unique_ptr<virStorageVol, StorageVolFreer>;

// A type-erased extra libvirt reference, taken on the JS thread before a
// worker is queued and dropped when the worker is destroyed. It keeps the C
// object valid even if the wrapper is freed/closed while the call runs.
using Pin = std::shared_ptr<void>;

inline Pin PinConnect(virConnectPtr p) {
  virConnectRef(p);
  return Pin(p, [](void* q) { virConnectClose(static_cast<virConnectPtr>(q)); });
}
inline Pin PinDomain(virDomainPtr p) {
  virDomainRef(p);
  return Pin(p, [](void* q) { virDomainFree(static_cast<virDomainPtr>(q)); });
}
inline Pin PinStoragePool(virStoragePoolPtr p) {
  virStoragePoolRef(p);
  return Pin(p, [](void* q) { virStoragePoolFree(static_cast<virStoragePoolPtr>(q)); });
}
inline Pin PinStorageVol(virStorageVolPtr p) {
  virStorageVolRef(p);
  return Pin(p, [](void* q) { virStorageVolFree(static_cast<virStorageVolPtr>(q)); });
}

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_HANDLES_H_
