# The CLI tests run the real seqkv binary.
if(TARGET seqkv_cli)
  add_dependencies(${target} seqkv_cli)
  target_compile_definitions(${target} PRIVATE SEQKV_CLI_PATH="$<TARGET_FILE:seqkv_cli>")
endif()
