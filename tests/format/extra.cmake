# Format tests read the committed test vectors (tests/vectors/<version>/).
target_compile_definitions(${target} PRIVATE SEQKV_VECTORS_DIR="${CMAKE_CURRENT_SOURCE_DIR}/vectors")
