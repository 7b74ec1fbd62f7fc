// gzip-member codec: whole-buffer compress and decompress with libdeflate.
//
// kvmbak images are independent gzip members of at most one chunk each, so
// no streaming state is needed: one call compresses or decompresses a whole
// member. The functions are synchronous and meant for the archive engine's
// worker threads (src/archive/worker.ts), never the JS main thread: a 4 MiB
// member takes milliseconds, and running them on the calling thread keeps
// them off libuv's shared pool (which fs, crypto and the libvirt calls use).
//
// libdeflate compressors and decompressors are not thread-safe but cheap to
// keep: each environment (the main thread, each worker) owns its own set in
// its AddonData, freed when the environment goes away.
#ifndef KVMBAK_NATIVE_CODEC_H_
#define KVMBAK_NATIVE_CODEC_H_

#include <libdeflate.h>
#include <napi.h>

#include <array>
#include <memory>

namespace kvmbak {

// Keep in step with MIN_LIBDEFLATE in scripts/preflight.mjs: the version
// kvmbak is built and tested with (Debian 12's), whose level 0 (stored blocks
// only) and libdeflate_gzip_decompress_ex the codec relies on.
#if !defined(LIBDEFLATE_VERSION_MAJOR) || (LIBDEFLATE_VERSION_MAJOR == 1 && LIBDEFLATE_VERSION_MINOR < 14)
#error "kvmbak needs libdeflate >= 1.14 headers: install libdeflate-dev (apt-get install -y libdeflate-dev)"
#endif

struct CompressorDeleter {
  void operator()(libdeflate_compressor* c) const { libdeflate_free_compressor(c); }
};
struct DecompressorDeleter {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

// libdeflate levels 0 (stored) .. 12 (slowest).
constexpr int kMaxLibdeflateLevel = 12;

// The codec state of one environment, allocated on first use.
class CodecState {
 public:
  libdeflate_compressor* Compressor(int level);
  libdeflate_decompressor* Decompressor();

 private:
  std::array<std::unique_ptr<libdeflate_compressor, CompressorDeleter>, kMaxLibdeflateLevel + 1> compressors_;
  std::unique_ptr<libdeflate_decompressor, DecompressorDeleter> decompressor_;
};

// Adds gzipCompress, gzipCompressBound, gzipDecompress and codecInfo to exports.
void InitCodec(Napi::Env env, Napi::Object exports);

}  // namespace kvmbak

#endif  // KVMBAK_NATIVE_CODEC_H_
