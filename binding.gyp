{
  "targets": [
    {
      "target_name": "vhostd_native",
      "sources": [
        "native/addon.cc",
        "native/fd_io.cc",
        "native/mapping.cc",
        "native/fd_watch.cc",
        "native/uring.cc",
        "native/mem_copy.cc",
        "native/clock.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-luring"]
    },
    {
      "target_name": "vhostd_rbd",
      "sources": ["native/rbd.cc", "native/rbd_addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-lrbd", "-lrados"]
    }
  ]
}
