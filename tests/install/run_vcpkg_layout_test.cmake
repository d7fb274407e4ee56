# Script-mode test of the vcpkg port's install tree (vcpkg itself is not run): configure + install
# seqkv with exactly the options ports/seqkv/portfile.cmake passes (no features), into a "packages"
# prefix as vcpkg does; check the layout vcpkg_cmake_config_fixup and vcpkg_fixup_pkgconfig expect
# (share/seqkv/seqkvConfig.cmake, share/pkgconfig/seqkv.pc, no lib/, no absolute paths); move the
# tree (vcpkg copies packages/<port> into installed/<triplet>), then build and run a consumer with
# find_package(seqkv) and one with pkg-config from the moved tree, and find COMPONENTS io there
# when nlohmann_json is installed.
# Inputs: SEQKV_SOURCE_DIR, WORK_DIR, CMAKE_CXX_COMPILER.
file(REMOVE_RECURSE ${WORK_DIR})
include(${CMAKE_CURRENT_LIST_DIR}/run_step.cmake)
include(${SEQKV_SOURCE_DIR}/ports/seqkv/seqkv-options.cmake)  # SEQKV_PORT_OPTIONS
set(packages ${WORK_DIR}/packages/seqkv_x64-linux)
set(installed ${WORK_DIR}/installed/x64-linux)
# vcpkg_check_features with no feature selected passes these OFF.
run_step(${CMAKE_COMMAND} -S ${SEQKV_SOURCE_DIR} -B ${WORK_DIR}/build ${SEQKV_PORT_OPTIONS}
  -DSEQKV_ENABLE_SIMD=OFF -DSEQKV_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX=${packages} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
run_step(${CMAKE_COMMAND} --install ${WORK_DIR}/build)

foreach(f share/seqkv/seqkvConfig.cmake share/seqkv/seqkvConfigVersion.cmake share/seqkv/seqkvTargets.cmake
          share/pkgconfig/seqkv.pc include/seqkv/seqkv.hpp)
  if(NOT EXISTS ${packages}/${f})
    message(FATAL_ERROR "vcpkg layout: ${f} was not installed")
  endif()
endforeach()
foreach(d share/seqkv/cmake lib bin)
  if(EXISTS ${packages}/${d})
    message(FATAL_ERROR "vcpkg layout: unexpected ${d}/ in a header-only install")
  endif()
endforeach()
file(GLOB_RECURSE package_files ${packages}/share/*)
foreach(f IN LISTS package_files)
  file(READ ${f} text)
  foreach(path ${packages} ${WORK_DIR} ${SEQKV_SOURCE_DIR})
    string(FIND "${text}" "${path}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "vcpkg layout: ${f} names the absolute path ${path}")
    endif()
  endforeach()
endforeach()

file(MAKE_DIRECTORY ${WORK_DIR}/installed)
file(RENAME ${packages} ${installed})

# find_package from the moved tree, as a vcpkg toolchain (CMAKE_PREFIX_PATH = installed/<triplet>) sees it.
set(consumer ${WORK_DIR}/consumer)
file(WRITE ${consumer}/main.cpp [=[
#include <seqkv/core/dtype.hpp>
#include <seqkv/version.hpp>
#include <cstdio>
int main() {
    if (seqkv::bf16_to_float(seqkv::float_to_bf16(-3.25f)) != -3.25f) return 1;
    std::printf("seqkv %s from the vcpkg-layout tree ok\n", SEQKV_VERSION_STRING);
    return 0;
}
]=])
file(WRITE ${consumer}/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.20)
project(seqkv_vcpkg_consumer LANGUAGES CXX)
find_package(seqkv 0.1 CONFIG REQUIRED)
get_target_property(dirs seqkv::seqkv INTERFACE_INCLUDE_DIRECTORIES)
if(NOT dirs STREQUAL "${EXPECT_INCLUDE}")
  message(FATAL_ERROR "seqkv::seqkv include directories '${dirs}', expected '${EXPECT_INCLUDE}'")
endif()
if(WITH_IO)
  find_package(seqkv CONFIG REQUIRED COMPONENTS io)
  if(NOT TARGET seqkv::io)
    message(FATAL_ERROR "COMPONENTS io found but no seqkv::io")
  endif()
endif()
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE seqkv::seqkv)
]=])
set(probe ${WORK_DIR}/json-probe)
file(WRITE ${probe}/CMakeLists.txt "cmake_minimum_required(VERSION 3.20)\nproject(p NONE)\nfind_package(nlohmann_json 3.10 REQUIRED)\n")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${probe} -B ${probe}/build RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
set(with_io OFF)
if(rc EQUAL 0)
  set(with_io ON)
endif()
run_step(${CMAKE_COMMAND} -S ${consumer} -B ${consumer}/build -DCMAKE_PREFIX_PATH=${installed}
  -DEXPECT_INCLUDE=${installed}/include -DWITH_IO=${with_io} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
run_step(${CMAKE_COMMAND} --build ${consumer}/build)
run_step(${consumer}/build/consumer)
message(STATUS "${step_output}find_package consumer (COMPONENTS io checked: ${with_io}) passed")

find_program(PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf)
if(NOT PKG_CONFIG_EXECUTABLE)
  message(STATUS "SKIP pkg-config consumer: no pkg-config on this machine")
else()
  run_step(${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${installed}/share/pkgconfig ${PKG_CONFIG_EXECUTABLE} --cflags seqkv)
  string(STRIP "${step_output}" cflags)
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  run_step(${CMAKE_CXX_COMPILER} ${cflags} ${consumer}/main.cpp -o ${WORK_DIR}/pc-consumer)
  run_step(${WORK_DIR}/pc-consumer)
  message(STATUS "pkg-config consumer passed")
endif()
message(STATUS "vcpkg layout test passed")
