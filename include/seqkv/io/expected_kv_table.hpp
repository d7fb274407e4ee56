// Building, saving and loading the expected-KV table (predict::expected_kv_table) from KV dumps
// (needs the safetensors reader, i.e. nlohmann-json). Table file: tensors `means` BF16 [layers, 2, kv_heads, vocab, head_dim] and
// `counts` U32 [vocab]; metadata `keys_prerope` ("1"/"0") and `content_hash` (hex).
#pragma once

#include <cstdio>
#include <string>

#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/predict/expected_kv.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io {

/// Mean K (pre-RoPE if every dump has `layer.{l}.k_prerope`) and V per (layer, head, token id)
/// over a corpus of KV dumps that share one layout. vocab = 1 + the largest token id seen.
inline predict::expected_kv_table build_expected_kv_table(std::span<const safetensors_file* const> corpus) {
    require_usage(!corpus.empty(), "build_expected_kv_table: empty corpus");
    const kv_layout layout = kv_view(*corpus[0]).layout;
    bool prerope = true;
    std::int32_t max_id = -1;
    for (const auto* f : corpus) {
        const auto view = kv_view(*f);
        require_usage(view.layout.layers == layout.layers && view.layout.kv_heads == layout.kv_heads &&
                          view.layout.head_dim == layout.head_dim,
                      "build_expected_kv_table: dumps differ in layout");
        const auto& tokens = f->at("tokens");
        require_format(tokens.type == dtype::i32 && tokens.element_count() == view.layout.tokens,
                       "build_expected_kv_table: 'tokens' must be I32 [T]");
        for (std::uint64_t t = 0; t < tokens.element_count(); ++t)
            max_id = std::max(max_id, std::int32_t(load_le32(tokens.bytes.data() + 4 * t)));
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            prerope = prerope && f->find("layer." + std::to_string(l) + ".k_prerope") != nullptr;
    }
    require_format(max_id >= 0, "build_expected_kv_table: no token ids");
    const std::uint32_t vocab = std::uint32_t(max_id) + 1, H = layout.kv_heads, D = layout.head_dim;
    std::vector<double> sums(std::size_t(layout.layers) * 2 * H * vocab * D, 0.0);
    std::vector<std::uint32_t> counts(vocab, 0);
    for (const auto* f : corpus) {
        const auto view = kv_view(*f);
        const auto& tokens = f->at("tokens");
        for (std::uint64_t t = 0; t < view.layout.tokens; ++t) {
            const auto id = std::int32_t(load_le32(tokens.bytes.data() + 4 * t));
            if (id >= 0) ++counts[id];
        }
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                kv_tensor_view src = view.tensor(l, kind);
                if (kind == kv_kind::key && prerope) {
                    const auto& e = f->at("layer." + std::to_string(l) + ".k_prerope");
                    src.data = e.bytes.data();
                    src.type = e.type;
                }
                for (std::uint32_t h = 0; h < H; ++h)
                    for (std::uint64_t t = 0; t < view.layout.tokens; ++t) {
                        const auto id = std::int32_t(load_le32(tokens.bytes.data() + 4 * t));
                        if (id < 0) continue;
                        double* s = &sums[(((std::size_t(l) * 2 + std::size_t(kind)) * H + h) * vocab + id) * D];
                        for (std::uint32_t c = 0; c < D; ++c) s[c] += src.at(h, t, c);
                    }
            }
    }
    std::vector<float> means(sums.size());
    for (std::size_t i = 0; i < sums.size(); ++i) {
        const std::uint32_t id = std::uint32_t((i / D) % vocab);
        means[i] = counts[id] ? float(sums[i] / counts[id]) : 0.0f;
    }
    return predict::expected_kv_table(layout.layers, H, D, vocab, prerope, std::move(means), std::move(counts));
}

/// The table as a safetensors image.
inline byte_vector serialize_expected_kv_table(const predict::expected_kv_table& table) {
    safetensors_builder b;
    byte_vector means(table.means().size() * 2), counts(table.counts().size() * 4);
    for (std::size_t i = 0; i < table.means().size(); ++i) store_from_float(means.data(), dtype::bf16, i, table.means()[i]);
    for (std::size_t i = 0; i < table.counts().size(); ++i)
        for (int k = 0; k < 4; ++k) counts[4 * i + k] = std::uint8_t(table.counts()[i] >> (8 * k));
    b.add("means", dtype::bf16, {table.layers(), 2, table.kv_heads(), table.vocab(), table.head_dim()}, means);
    b.add("counts", dtype::u32, {table.vocab()}, counts);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(table.content_hash()));
    b.set_metadata("keys_prerope", table.keys_prerope() ? "1" : "0");
    b.set_metadata("content_hash", hex);
    b.set_metadata("format", "seqkv.expected_kv.v1");
    return b.serialize();
}

/// Parses a table image written by serialize_expected_kv_table; format_error on bad content.
inline predict::expected_kv_table parse_expected_kv_table(const safetensors_file& f) {
    const auto& m = f.at("means");
    const auto& c = f.at("counts");
    require_format(m.type == dtype::bf16 && m.shape.size() == 5 && m.shape[1] == 2, "expected-KV table: bad 'means'");
    require_format(c.type == dtype::u32 && c.shape.size() == 1 && c.shape[0] == m.shape[3], "expected-KV table: bad 'counts'");
    for (auto d : m.shape) require_format(d > 0 && d < (1ull << 24), "expected-KV table: dimension out of range");
    std::vector<float> means(m.element_count());
    for (std::size_t i = 0; i < means.size(); ++i) means[i] = load_as_float(m.bytes.data(), dtype::bf16, i);
    std::vector<std::uint32_t> counts(c.shape[0]);
    for (std::size_t i = 0; i < counts.size(); ++i) counts[i] = load_le32(c.bytes.data() + 4 * i);
    const auto it = f.metadata().find("keys_prerope");
    return predict::expected_kv_table(std::uint32_t(m.shape[0]), std::uint32_t(m.shape[2]), std::uint32_t(m.shape[4]),
                             std::uint32_t(m.shape[3]), it != f.metadata().end() && it->second == "1", std::move(means),
                             std::move(counts));
}

}  // namespace seqkv::io

SEQKV_FP_STRICT_END
