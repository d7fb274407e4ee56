// Shared by the token-mode tests: the committed tiny model, loaded once per process.
#pragma once

#include <filesystem>
#include <memory>

#include "seqkv/reference/llama.hpp"

namespace seqkv_test {

inline const std::filesystem::path data_dir = SEQKV_DATA_DIR;

inline std::shared_ptr<const seqkv::model::language_model> tiny_model() {
    static std::shared_ptr<const seqkv::model::language_model> m = seqkv::reference::llama_model::load(data_dir / "tiny-llama");
    return m;
}

}  // namespace seqkv_test
