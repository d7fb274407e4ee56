# cmake -DDEFAULT=<exe> -DCONTRACT=<exe> -DDATA=<kv.safetensors> -P compare.cmake
# Runs the probe of both builds (tests/fp_flags/probe.cpp) and requires identical, complete output.
# The contract build uses AVX2 and FMA instructions: on a CPU without them (or where
# /proc/cpuinfo does not say) the script prints SKIPPED:, which the test's SKIP_REGULAR_EXPRESSION
# reports as skipped.
set(_cpu "")
if(EXISTS /proc/cpuinfo)
  file(READ /proc/cpuinfo _cpu)
endif()
if(NOT _cpu MATCHES "[ \t]fma[ \n]" OR NOT _cpu MATCHES "[ \t]avx2[ \n]")
  message("SKIPPED: this CPU lacks FMA or AVX2 (or /proc/cpuinfo is missing); the contracting build cannot run here")
  return()
endif()
foreach(which DEFAULT CONTRACT)
  execute_process(COMMAND ${${which}} ${DATA} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out_${which} ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${which} build failed (${_rc}):\n${_out_${which}}${_err}")
  endif()
  string(REGEX MATCHALL "\n" _lines "${_out_${which}}")
  list(LENGTH _lines _n)
  if(NOT _n EQUAL 11)
    message(FATAL_ERROR "${which} build printed ${_n} lines, not 11:\n${_out_${which}}")
  endif()
endforeach()
if(NOT _out_DEFAULT STREQUAL _out_CONTRACT)
  message(FATAL_ERROR "the builds disagree\nproject flags:\n${_out_DEFAULT}\ncontracting build:\n${_out_CONTRACT}")
endif()
message("both builds:\n${_out_DEFAULT}")
