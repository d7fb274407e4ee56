# The CMake options the port configures seqkv with: the header-only library alone, its CMake
# package files straight in share/seqkv (where vcpkg_cmake_config_fixup wants them, so nothing is
# moved). Shared with tests/install/run_vcpkg_layout_test.cmake, which installs with exactly these.
set(SEQKV_PORT_OPTIONS
  -DSEQKV_BUILD_RUNTIME=OFF
  -DSEQKV_BUILD_TESTS=OFF
  -DSEQKV_BUILD_EXAMPLES=OFF
  -DSEQKV_BUILD_CLI=OFF
  -DSEQKV_BUILD_BENCH=OFF
  -DSEQKV_BUILD_FUZZERS=OFF
  -DSEQKV_INSTALL_CMAKEDIR=share/seqkv)
