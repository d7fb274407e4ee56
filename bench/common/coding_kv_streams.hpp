// Symbol streams for the coding bench, cut from a real KV dump: bf16 exponent bytes and
// uniformly quantized values (8- and 16-bit). Minimal safetensors parsing of its own (8-byte LE
// header length, JSON header, data); falls back to a labelled synthetic stream without a fixture.
#pragma once

#include <nlohmann/json.hpp>

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

/// BF16 tensors named layer.*.k / layer.*.v, concatenated in file order.
inline std::vector<std::uint16_t> load_bf16_kv(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (file.size() < 8) return {};
    std::uint64_t header_size = 0;
    for (int i = 0; i < 8; ++i) header_size |= std::uint64_t(static_cast<unsigned char>(file[i])) << (8 * i);
    if (header_size > file.size() - 8) return {};
    const auto header = nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + static_cast<long>(header_size));
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (const auto& [name, info] : header.items()) {
        if (name.rfind("layer.", 0) != 0 || !(name.ends_with(".k") || name.ends_with(".v"))) continue;
        if (info.at("dtype") != "BF16") continue;
        ranges.emplace_back(info.at("data_offsets")[0].get<std::uint64_t>(), info.at("data_offsets")[1].get<std::uint64_t>());
    }
    std::sort(ranges.begin(), ranges.end());
    std::vector<std::uint16_t> values;
    const std::size_t data_start = 8 + header_size;
    for (auto [begin, end] : ranges) {
        if (end < begin || data_start + end > file.size()) return {};
        const std::size_t old = values.size();
        values.resize(old + (end - begin) / 2);
        std::memcpy(values.data() + old, file.data() + data_start + begin, (end - begin) / 2 * 2);
    }
    return values;
}

inline float bf16_to_float(std::uint16_t v) {
    const std::uint32_t bits = std::uint32_t{v} << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
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
        const double x = bf16_to_float(v);
        if (std::isfinite(x)) sum_squares += x * x;
    }
    const double rms = std::sqrt(sum_squares / static_cast<double>(s.bf16.size())) + 1e-30;
    const double step8 = rms / 8, step16 = rms / 256;  // ~5 and ~10 bits of entropy
    for (auto v : s.bf16) {
        s.exponents.push_back(static_cast<std::uint8_t>(v >> 7));
        const double x = std::isfinite(bf16_to_float(v)) ? bf16_to_float(v) : 0.0;
        s.residual8.push_back(static_cast<std::uint8_t>(std::clamp<long>(std::lround(x / step8) + 128, 0, 255)));
        s.residual16.push_back(static_cast<std::uint16_t>(std::clamp<long>(std::lround(x / step16) + 32768, 0, 65535)));
    }
    return s;
}

}  // namespace seqkv_bench
