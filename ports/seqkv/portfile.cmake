# vcpkg port of seqkv (header-only). For a registry: set REPO, REF and SHA512 below. As a local
# overlay (`vcpkg install seqkv --overlay-ports=<repo>/ports`), point SEQKV_SOURCE_DIR (a CMake
# variable, e.g. from the triplet, or an environment variable; on Windows list it in
# VCPKG_KEEP_ENV_VARS) at a seqkv checkout to build from it instead of downloading. vcpkg's binary
# cache does not see changes to that checkout: use --no-binarycaching while editing it.
if(NOT SEQKV_SOURCE_DIR AND DEFINED ENV{SEQKV_SOURCE_DIR})
  set(SEQKV_SOURCE_DIR "$ENV{SEQKV_SOURCE_DIR}")
endif()
if(SEQKV_SOURCE_DIR)
  if(NOT EXISTS "${SEQKV_SOURCE_DIR}/include/seqkv/version.hpp")
    message(FATAL_ERROR "SEQKV_SOURCE_DIR=${SEQKV_SOURCE_DIR} is not a seqkv source tree")
  endif()
  set(SOURCE_PATH "${SEQKV_SOURCE_DIR}")
else()
  vcpkg_from_github(
    OUT_SOURCE_PATH SOURCE_PATH
    REPO OWNER/seqkv  # placeholder: the published repository
    REF "v${VERSION}"
    SHA512 0  # placeholder: vcpkg prints the real hash on the first download
    HEAD_REF main
  )
endif()

set(VCPKG_BUILD_TYPE release)  # header-only: one configuration

include("${CMAKE_CURRENT_LIST_DIR}/seqkv-options.cmake")  # SEQKV_PORT_OPTIONS
vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    simd SEQKV_ENABLE_SIMD
    cuda SEQKV_ENABLE_CUDA
)
vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${SEQKV_PORT_OPTIONS}
    ${FEATURE_OPTIONS}
)
vcpkg_cmake_install()
# The package files are already in share/seqkv (SEQKV_INSTALL_CMAKEDIR), so nothing moves; the
# fixup still rewrites absolute paths of the installed tree (feature simd: xsimd's include
# directory in seqkv::simd). seqkvConfig.cmake defines seqkv::io when it finds nlohmann_json.
vcpkg_cmake_config_fixup(PACKAGE_NAME seqkv CONFIG_PATH share/seqkv)
vcpkg_fixup_pkgconfig()  # share/pkgconfig/seqkv.pc: prefix is already ${pcfiledir}-relative

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug/include" "${CURRENT_PACKAGES_DIR}/debug/share")

if(EXISTS "${SOURCE_PATH}/LICENSE")
  vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
else()
  message(WARNING "seqkv: the source tree has no LICENSE file, so no copyright file is installed")
  set(VCPKG_POLICY_SKIP_COPYRIGHT_CHECK enabled)
endif()
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
