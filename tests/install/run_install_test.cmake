# Script-mode test: configure+install seqkv to a prefix, then build and run a consumer against it.
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()
run_step(${CMAKE_COMMAND} -S ${SEQKV_SOURCE_DIR} -B ${WORK_DIR}/seqkv-build
  -DCMAKE_INSTALL_PREFIX=${prefix} -DSEQKV_BUILD_TESTS=OFF -DSEQKV_BUILD_EXAMPLES=OFF
  -DSEQKV_BUILD_BENCH=OFF -DSEQKV_BUILD_CLI=OFF -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
run_step(${CMAKE_COMMAND} --install ${WORK_DIR}/seqkv-build)
if(NOT EXISTS ${prefix}/share/pkgconfig/seqkv.pc)
  message(FATAL_ERROR "pkg-config file was not installed")
endif()
run_step(${CMAKE_COMMAND} -S ${SEQKV_SOURCE_DIR}/tests/install/consumer -B ${WORK_DIR}/consumer-build
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
run_step(${WORK_DIR}/consumer-build/consumer)
message(STATUS "install consumer test passed")
