// Input dumps of the benches: the files in $SEQKV_KV_FILES (colon-separated), else every
// data/kv/*.safetensors, sorted.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

namespace seqkv_bench {

inline std::vector<std::filesystem::path> kv_input_files() {
    std::vector<std::filesystem::path> files;
    if (const char* env = std::getenv("SEQKV_KV_FILES"); env && *env) {
        std::stringstream ss(env);
        for (std::string p; std::getline(ss, p, ':');)
            if (!p.empty()) files.emplace_back(p);
        return files;
    }
    const auto dir = std::filesystem::path(SEQKV_DATA_DIR) / "kv";
    if (std::filesystem::exists(dir))
        for (const auto& e : std::filesystem::directory_iterator(dir))
            if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    return files;
}

}  // namespace seqkv_bench
