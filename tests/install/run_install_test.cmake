# Script-mode test: configure+install seqkv (header-only: no build step) to a prefix, then build and
# run consumers against it. run_runtime_consumer_test.cmake covers seqkv::runtime.
#  1. find_package(seqkv CONFIG) from the configured prefix (consumer/).
#  2. `cmake --install --prefix <other>` (prefix chosen at install time): consumer/main.cpp built with
#     only `pkg-config --cflags seqkv` (skipped when pkg-config is absent).
#  3. find_package(seqkv COMPONENTS io) from <other>: io_consumer/ (seqkv::io, nlohmann_json) reads an
#     in-memory safetensors image and the committed fixture (skipped without nlohmann_json); without
#     nlohmann_json, plain find_package(seqkv) still works and COMPONENTS io fails naming it.
# Inputs: SEQKV_SOURCE_DIR, WORK_DIR, CMAKE_CXX_COMPILER.
set(prefix ${WORK_DIR}/prefix)
set(other ${WORK_DIR}/other-prefix)
file(REMOVE_RECURSE ${WORK_DIR})
include(${CMAKE_CURRENT_LIST_DIR}/run_step.cmake)
run_step(${CMAKE_COMMAND} -S ${SEQKV_SOURCE_DIR} -B ${WORK_DIR}/seqkv-build
  -DCMAKE_INSTALL_PREFIX=${prefix} -DSEQKV_BUILD_TESTS=OFF -DSEQKV_BUILD_EXAMPLES=OFF
  -DSEQKV_BUILD_BENCH=OFF -DSEQKV_BUILD_CLI=OFF -DSEQKV_BUILD_RUNTIME=OFF -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
run_step(${CMAKE_COMMAND} --install ${WORK_DIR}/seqkv-build)
if(NOT EXISTS ${prefix}/share/pkgconfig/seqkv.pc)
  message(FATAL_ERROR "pkg-config file was not installed")
endif()
run_step(${CMAKE_COMMAND} -S ${SEQKV_SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/consumer-build
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
run_step(${WORK_DIR}/consumer-build/consumer)
message(STATUS "find_package consumer passed")

# 2. The same configured tree installed elsewhere: the .pc file must point there.
run_step(${CMAKE_COMMAND} --install ${WORK_DIR}/seqkv-build --prefix ${other})
find_program(PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf)
if(NOT PKG_CONFIG_EXECUTABLE)
  message(STATUS "SKIP pkg-config consumer: no pkg-config on this machine")
else()
  set(pc_env ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${other}/share/pkgconfig)
  run_step(${pc_env} ${PKG_CONFIG_EXECUTABLE} --cflags seqkv)
  string(STRIP "${step_output}" cflags)
  if(NOT cflags MATCHES "-I${other}/" OR NOT cflags MATCHES "-ffp-contract=off")
    message(FATAL_ERROR "pkg-config --cflags seqkv from ${other}: '${cflags}' (want -I under it and -ffp-contract=off)")
  endif()
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  run_step(${CMAKE_CXX_COMPILER} ${cflags} ${SEQKV_SOURCE_DIR}/tests/install/consumer/main.cpp -o ${WORK_DIR}/pc-consumer)
  run_step(${WORK_DIR}/pc-consumer)
  list(JOIN cflags " " cflags)
  message(STATUS "pkg-config consumer passed (${cflags})")
endif()

# 3. seqkv::io. Where is the system's nlohmann_json (if anywhere)?
set(probe ${WORK_DIR}/json-probe)
file(WRITE ${probe}/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.20)
project(json_probe NONE)
find_package(nlohmann_json 3.10 REQUIRED)
message(STATUS "json-dir=${nlohmann_json_DIR}=")
]=])
execute_process(COMMAND ${CMAKE_COMMAND} -S ${probe} -B ${probe}/build RESULT_VARIABLE have_json OUTPUT_VARIABLE out ERROR_QUIET)
set(json_dir "")
if(have_json EQUAL 0 AND out MATCHES "json-dir=([^=\n]*)=")
  set(json_dir ${CMAKE_MATCH_1})
endif()
# Without nlohmann_json (its config directory ignored): seqkv alone is found, io is not.
set(no_json ${WORK_DIR}/io-missing)
file(WRITE ${no_json}/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.20)
project(seqkv_io_missing NONE)
find_package(seqkv CONFIG REQUIRED)
if(TARGET seqkv::io)
  message(FATAL_ERROR "seqkv::io defined without nlohmann_json")
endif()
find_package(seqkv CONFIG QUIET COMPONENTS io)
if(seqkv_FOUND OR NOT seqkv_NOT_FOUND_MESSAGE MATCHES "nlohmann_json")
  message(FATAL_ERROR "COMPONENTS io without nlohmann_json: found=${seqkv_FOUND} '${seqkv_NOT_FOUND_MESSAGE}'")
endif()
if(REQUIRE_IO)
  find_package(seqkv CONFIG REQUIRED COMPONENTS io)
endif()
]=])
set(hide_json -DCMAKE_PREFIX_PATH=${other} "-DCMAKE_IGNORE_PATH=${json_dir}")
run_step(${CMAKE_COMMAND} -S ${no_json} -B ${no_json}/build ${hide_json})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${no_json} -B ${no_json}/build-required ${hide_json} -DREQUIRE_IO=ON
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "nlohmann_json")
  message(FATAL_ERROR "find_package(seqkv REQUIRED COMPONENTS io) without nlohmann_json should fail naming it (rc ${rc}):\n${out}\n${err}")
endif()
message(STATUS "without nlohmann_json: seqkv found, COMPONENTS io refused with the reason")
# With it: a consumer of seqkv::io.
if(NOT have_json EQUAL 0)
  message(STATUS "SKIP seqkv::io consumer: nlohmann_json >= 3.10 is not installed")
else()
  run_step(${CMAKE_COMMAND} -S ${SEQKV_SOURCE_DIR}/tests/install/io_consumer -B ${WORK_DIR}/io-consumer-build
    -DCMAKE_PREFIX_PATH=${other} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
  run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/io-consumer-build)
  run_step(${WORK_DIR}/io-consumer-build/io_consumer ${SEQKV_SOURCE_DIR}/data/kv/gpl3.safetensors)
  message(STATUS "${step_output}seqkv::io consumer passed")
endif()
message(STATUS "install consumer test passed")
