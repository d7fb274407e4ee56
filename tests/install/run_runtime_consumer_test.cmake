# Script-mode test: install the library component of an already built seqkv tree (with the
# seqkv::runtime archive) into a scratch prefix, then build a consumer that includes the public API
# and calls compress + decompress against seqkv::runtime at -O2, check that its object file defines
# no codec code (everything comes from the archive), and run its round trip.
# Inputs: SEQKV_BUILD_DIR, SEQKV_SOURCE_DIR, WORK_DIR, CMAKE_CXX_COMPILER, CMAKE_NM.
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
include(${CMAKE_CURRENT_LIST_DIR}/run_step.cmake)
run_step(${CMAKE_COMMAND} --install ${SEQKV_BUILD_DIR} --component seqkv --prefix ${prefix})
file(GLOB_RECURSE archive ${prefix}/*/libseqkv_runtime.a)
if(NOT archive)
  message(FATAL_ERROR "libseqkv_runtime.a was not installed under ${prefix}")
endif()
run_step(${CMAKE_COMMAND} -S ${SEQKV_SOURCE_DIR}/tests/install/runtime_consumer -B ${WORK_DIR}/consumer-build
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
string(TIMESTAMP start "%s")
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
string(TIMESTAMP stop "%s")
math(EXPR seconds "${stop} - ${start}")
message(STATUS "consumer (public API, compress + decompress, -O2) compiled and linked in ~${seconds} s wall")
# Codec code must come from the archive, not be compiled into the consumer.
file(GLOB_RECURSE objects ${WORK_DIR}/consumer-build/CMakeFiles/consumer.dir/*.o)
if(NOT objects)
  message(FATAL_ERROR "consumer object file not found")
endif()
run_step(${CMAKE_NM} -C --defined-only ${objects})
string(REGEX MATCHALL "[^\n]*(closed_loop_codec|lossless_codec<|runtime_codec<|encode_block|decode_block|make_codec<|seqkv::compress<|seqkv::decompress<)[^\n]*"
  codec_symbols "${step_output}")
if(codec_symbols)
  list(JOIN codec_symbols "\n" codec_symbols)
  message(FATAL_ERROR "the consumer compiled codec code itself (SEQKV_SEPARATE_RUNTIME extern declarations missing?):\n${codec_symbols}")
endif()
run_step(${WORK_DIR}/consumer-build/consumer)
message(STATUS "${step_output}runtime consumer test passed")
