// Process-wide counts of the libvirt handles the addon currently owns
// (one per live wrapper plus one per in-flight worker pin). Exposed to JS as
// counters() so tests and debugging can see leaks.
#ifndef KVMBAK_NATIVE_COUNTERS_H_
#define KVMBAK_NATIVE_COUNTERS_H_

#include <atomic>
#include <cstdint>

namespace kvmbak {

struct Counters {
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> domains{0};
  std::atomic<int64_t> storage_pools{0};
  std::atomic<int64_t> storage_vols{0};
  std::atomic<int64_t> workers{0};
};

Counters& GlobalCounters();

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_COUNTERS_H_
