# Script-mode test: configure+install seqkv (header-only: no build step) to a prefix, then build and
# run a consumer against it. run_runtime_consumer_test.cmake covers seqkv::runtime.
set(prefix ${WORK_DIR}/prefix)
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
message(STATUS "install consumer test passed")
