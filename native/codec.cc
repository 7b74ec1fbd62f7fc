#include "codec.h"

#include <cmath>
#include <string>

#include "addon_data.h"

namespace kvmbak {

libdeflate_compressor* CodecState::Compressor(int level) {
  auto& slot = compressors_[static_cast<size_t>(level)];
  if (!slot) slot.reset(libdeflate_alloc_compressor(level));
  return slot.get();
}

libdeflate_decompressor* CodecState::Decompressor() {
  if (!decompressor_) decompressor_.reset(libdeflate_alloc_decompressor());
  return decompressor_.get();
}

namespace {

struct Bytes {
  uint8_t* data;
  size_t length;
};

Bytes Uint8Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Uint8Array or Buffer");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return {a.Data(), a.ElementLength()};
}

int LevelArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "level must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::trunc(v) != v || v < 0 || v > kMaxLibdeflateLevel) {
    throw Napi::TypeError::New(info.Env(), "level must be a whole number from 0 to 12");
  }
  return static_cast<int>(v);
}

Napi::Error OutOfMemory(Napi::Env env, const char* what) {
  return Napi::Error::New(env, std::string("kvmbak: out of memory allocating a libdeflate ") + what);
}

// gzipCompress(input, level, output) -> bytes written to output, or 0 when
// output is too small (libdeflate_gzip_compress). One complete gzip member.
Napi::Value GzipCompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes in = Uint8Arg(info, 0, "input");
  int level = LevelArg(info, 1);
  Bytes out = Uint8Arg(info, 2, "output");
  libdeflate_compressor* c = GetAddonData(env).codec.Compressor(level);
  if (c == nullptr) throw OutOfMemory(env, "compressor");
  size_t n = libdeflate_gzip_compress(c, in.data, in.length, out.data, out.length);
  return Napi::Number::New(env, static_cast<double>(n));
}

// gzipCompressBound(length) -> the output size that always suffices for
// gzipCompress of `length` bytes at any level (libdeflate_gzip_compress_bound).
Napi::Value GzipCompressBound(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "length must be a number");
  double v = info[0].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::trunc(v) != v || v < 0 || v > 9007199254740991.0) {
    throw Napi::TypeError::New(env, "length must be a byte count");
  }
  size_t bound = libdeflate_gzip_compress_bound(nullptr, static_cast<size_t>(v));
  return Napi::Number::New(env, static_cast<double>(bound));
}

// gzipDecompress(input, output) -> {result, inBytes, outBytes}: decompresses
// the one gzip member at the start of input into output, checking its CRC-32
// and ISIZE (libdeflate_gzip_decompress_ex). result: 'ok'; 'bad-data' (not
// gzip, corrupt, truncated or a failed check: libdeflate does not say which);
// 'no-space' (the member holds more than output.length bytes). inBytes is the
// size of the member, so inBytes < input.length means data follows it.
Napi::Value GzipDecompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes in = Uint8Arg(info, 0, "input");
  Bytes out = Uint8Arg(info, 1, "output");
  libdeflate_decompressor* d = GetAddonData(env).codec.Decompressor();
  if (d == nullptr) throw OutOfMemory(env, "decompressor");
  size_t in_used = 0;
  size_t out_len = 0;
  libdeflate_result r = libdeflate_gzip_decompress_ex(d, in.data, in.length, out.data, out.length, &in_used, &out_len);
  const char* result = r == LIBDEFLATE_SUCCESS ? "ok" : r == LIBDEFLATE_INSUFFICIENT_SPACE ? "no-space" : "bad-data";
  Napi::Object o = Napi::Object::New(env);
  o.Set("result", Napi::String::New(env, result));
  o.Set("inBytes", Napi::Number::New(env, r == LIBDEFLATE_SUCCESS ? static_cast<double>(in_used) : 0));
  o.Set("outBytes", Napi::Number::New(env, r == LIBDEFLATE_SUCCESS ? static_cast<double>(out_len) : 0));
  return o;
}

// codecInfo() -> {library, version} of the codec compiled in.
Napi::Value CodecInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("library", Napi::String::New(env, "libdeflate"));
  o.Set("version", Napi::String::New(env, LIBDEFLATE_VERSION_STRING));
  return o;
}

}  // namespace

void InitCodec(Napi::Env env, Napi::Object exports) {
  exports.Set("gzipCompress", Napi::Function::New<GzipCompress>(env, "gzipCompress"));
  exports.Set("gzipCompressBound", Napi::Function::New<GzipCompressBound>(env, "gzipCompressBound"));
  exports.Set("gzipDecompress", Napi::Function::New<GzipDecompress>(env, "gzipDecompress"));
  exports.Set("codecInfo", Napi::Function::New<CodecInfo>(env, "codecInfo"));
}

}  // namespace kvmbak
