# Builds the kvmbak native addon: the libvirt wrappers against the system libvirt,
# and the gzip-member codec against libdeflate, linked statically (-l:libdeflate.a,
# Debian's libdeflate-dev ships it) so the addon needs no libdeflate0 where it runs.
# Run through `npm run build:native`: scripts/preflight.mjs checks pkg-config,
# libvirt and libdeflate first, so a missing -dev package gives a clear fix
# instead of gyp's "Call to 'pkg-config ...' returned exit status 1".
{
  "targets": [
    {
      "target_name": "kvmbak",
      "sources": [
        "native/addon.cc",
        "native/codec.cc",
        "native/connection.cc",
        "native/domain.cc",
        "native/quiet.cc",
        "native/storage_pool.cc",
        "native/storage_vol.cc",
        "native/vir_error.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"
      ],
      "cflags": [
        "<!@(pkg-config --cflags libvirt libdeflate)",
        "-Wall",
        "-Wextra"
      ],
      "cflags_cc": [
        "-std=c++17",
        "-Wall",
        "-Wextra"
      ],
      "libraries": [
        "<!@(pkg-config --libs libvirt)",
        "<!@(pkg-config --libs-only-L libdeflate)",
        "-l:libdeflate.a",
        "-Wl,--exclude-libs,libdeflate.a"
      ],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CFLAGS": ["<!@(pkg-config --cflags libvirt libdeflate)"]
      }
    }
  ]
}
