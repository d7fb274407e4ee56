// Symbol streams for the coding bench, cut from a real KV dump: bf16 exponent bytes and
// uniformly quantized values (8- and 16-bit), read with seqkv's safetensors reader; falls back to
// a labelled synthetic stream without a fixture.
#pragma once

#include "seqkv/core/float_formats.hpp"
#include "seqkv/io/kv_safetensors.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace seqkv_bench {

struct coding_streams {
    std::string source;                    // file path, or "synthetic"
    std::vector<std::uint16_t> bf16;       // raw KV values, all K/V tensors concatenated
    std::vector<std::uint8_t> exponents;   // bits 7..14 of each bf16
    std::vector<std::uint8_t> residual8;   // round(x / step8) + 128, clamped to [0, 255]
    std::vector<std::uint16_t> residual16; // round(x / step16) + 32768, clamped to 16 bits
};

inline std::string find_kv_file() {
    if (const char* env = std::getenv("SEQKV_KV_FILE"); env && *env) return env;
    const std::filesystem::path dir = std::filesystem::path(SEQKV_DATA_DIR) / "kv";
    std::error_code ec;
    std::vector<std::string> found;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
        if (entry.path().extension() == ".safetensors") found.push_back(entry.path().string());
    std::sort(found.begin(), found.end());
    return found.empty() ? std::string() : found.front();
}

/// BF16 tensors named layer.*.k / layer.*.v, concatenated in file (data offset) order.
inline std::vector<std::uint16_t> load_bf16_kv(const std::string& path) {
    const auto file = seqkv::io::safetensors_file::load(path);
    std::vector<std::uint16_t> values;
    for (const auto& t : file.tensors()) {  // tensors() is in data-offset order
        if (!seqkv::io::parse_kv_tensor_name(t.name) || t.type != seqkv::dtype::bf16) continue;
        for (std::size_t i = 0; i < t.bytes.size() / 2; ++i) values.push_back(seqkv::load_le16(t.bytes.data() + 2 * i));
    }
    return values;
}

/// Builds the streams; max_values caps the size so zstd -19 stays quick.
inline coding_streams make_coding_streams(std::size_t max_values = 4u << 20) {
    coding_streams s;
    s.source = find_kv_file();
    if (!s.source.empty()) s.bf16 = load_bf16_kv(s.source);
    if (s.bf16.empty()) {  // synthetic: Gaussian values with per-channel scales, rounded to bf16
        s.source = "synthetic (no data/kv/*.safetensors; set SEQKV_KV_FILE)";
        std::mt19937_64 rng(1);
        std::normal_distribution<float> normal;
        s.bf16.resize(max_values);
        for (std::size_t i = 0; i < s.bf16.size(); ++i) {
            const float x = normal(rng) * (0.05f + static_cast<float>(i % 128) / 32.0f);
            std::uint32_t bits;
            std::memcpy(&bits, &x, 4);
            s.bf16[i] = static_cast<std::uint16_t>((bits + 0x8000u) >> 16);
        }
    }
    if (s.bf16.size() > max_values) s.bf16.resize(max_values);
    double sum_squares = 0;
    for (auto v : s.bf16) {
        const double x = seqkv::bf16_to_float(v);
        if (std::isfinite(x)) sum_squares += x * x;
    }
    const double rms = std::sqrt(sum_squares / static_cast<double>(s.bf16.size())) + 1e-30;
    const double step8 = rms / 8, step16 = rms / 256;  // ~5 and ~10 bits of entropy
    for (auto v : s.bf16) {
        s.exponents.push_back(static_cast<std::uint8_t>(v >> 7));
        const double x = std::isfinite(seqkv::bf16_to_float(v)) ? seqkv::bf16_to_float(v) : 0.0;
        s.residual8.push_back(static_cast<std::uint8_t>(std::clamp<long>(std::lround(x / step8) + 128, 0, 255)));
        s.residual16.push_back(static_cast<std::uint16_t>(std::clamp<long>(std::lround(x / step16) + 32768, 0, 65535)));
    }
    return s;
}

}  // namespace seqkv_bench
