# Store tests: the Redis backend's tests need hiredis (seqkv::redis) and start their own
# redis-server processes (skipped with a message when redis-server is not installed).
if(TARGET seqkv::redis)
  target_link_libraries(${target} PRIVATE seqkv::redis)
  target_compile_definitions(${target} PRIVATE SEQKV_TEST_HAVE_HIREDIS=1)
endif()
find_package(Threads REQUIRED)
target_link_libraries(${target} PRIVATE Threads::Threads)
