// Keeps libvirt's libraries from writing to stderr.
#ifndef KVMBAK_NATIVE_QUIET_H_
#define KVMBAK_NATIVE_QUIET_H_

namespace kvmbak {

// libvirt reports its own errors through virSetErrorFunc (silenced once in
// addon.cc). libxml2, which libvirt uses to parse XML in-process (the test
// driver's node files, for one), prints some warnings through its "generic
// error" handler instead, e.g. `I/O warning : failed to load external
// entity "..."`; libvirt still reports the failure itself as a virError.
// That handler is per thread, so every thread that calls libvirt installs a
// no-op one first. Resolved with dlsym from the libxml2 libvirt already
// loaded, so the addon needs no libxml2 headers or link flags.
void QuietLibxml2OnThisThread();

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_QUIET_H_
