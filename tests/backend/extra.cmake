# The thread-pool test again under ThreadSanitizer (the lossless codec compiled into it).
seqkv_tsan_test(thread_pool_tsan seqkv_test_backend_tsan ${CMAKE_CURRENT_SOURCE_DIR}/backend/test_thread_pool.cpp backend)
