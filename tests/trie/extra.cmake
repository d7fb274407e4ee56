# The concurrency test again under ThreadSanitizer (many readers, one writer).
seqkv_tsan_test(trie_tsan seqkv_test_trie_tsan ${CMAKE_CURRENT_SOURCE_DIR}/trie/test_shared_trie.cpp trie SEQKV_TSAN)
