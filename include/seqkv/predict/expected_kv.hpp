// Per-model table of expected KV per token id: the mean of K (pre-RoPE when available) and V of
// every (layer, kv head, token id) over a corpus of dumps. Built once, shipped as shared side
// information (like a calibrated codebook) and referenced by the codec config through its
// content hash; tables are not part of any chunk's rate. See io/expected_kv_table.hpp to build/save/load.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/core/error.hpp"
#include "seqkv/core/float_formats.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::predict {

/// Expected K/V vectors per (layer, kind, head, token id), bf16-exact fp32 values.
class expected_kv_table {
public:
    expected_kv_table() = default;
    /// means: [layers][2][kv_heads][vocab][head_dim] (rounded to bf16 here); counts: [vocab] corpus occurrences.
    expected_kv_table(std::uint32_t layers, std::uint32_t kv_heads, std::uint32_t head_dim, std::uint32_t vocab,
                      bool keys_prerope, std::vector<float> means, std::vector<std::uint32_t> counts)
        : layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), vocab_(vocab), keys_prerope_(keys_prerope),
          means_(std::move(means)), counts_(std::move(counts)) {
        require_usage(means_.size() == std::size_t(layers) * 2 * kv_heads * vocab * head_dim && counts_.size() == vocab,
                      "expected_kv_table: size mismatch");
        for (auto& m : means_) m = bf16_to_float(float_to_bf16(m));
        hash_ = compute_hash();
    }

    std::uint32_t layers() const { return layers_; }
    std::uint32_t kv_heads() const { return kv_heads_; }
    std::uint32_t head_dim() const { return head_dim_; }
    std::uint32_t vocab() const { return vocab_; }
    /// True when key means are in the pre-RoPE domain (needs the rope_domain predictor).
    bool keys_prerope() const { return keys_prerope_; }
    const std::vector<float>& means() const { return means_; }
    const std::vector<std::uint32_t>& counts() const { return counts_; }
    /// FNV-1a 64 of the dimensions, flag, bf16 means and counts: identifies the table in configs.
    std::uint64_t content_hash() const { return hash_; }

    /// The expected vector, or an empty span if the token is unknown or was never seen.
    std::span<const float> find(std::uint32_t layer, kv_kind kind, std::uint32_t head, std::int64_t token) const {
        if (layer >= layers_ || head >= kv_heads_ || token < 0 || token >= std::int64_t(vocab_) || counts_[token] == 0)
            return {};
        const std::size_t i = (((std::size_t(layer) * 2 + std::size_t(kind)) * kv_heads_ + head) * vocab_ + token) * head_dim_;
        return std::span(means_).subspan(i, head_dim_);
    }

private:
    std::uint64_t compute_hash() const {
        std::uint64_t h = 0xcbf29ce484222325ull;
        auto mix = [&](std::uint64_t v, int bytes) {
            for (int b = 0; b < bytes; ++b) h = (h ^ ((v >> (8 * b)) & 0xFF)) * 0x100000001b3ull;
        };
        mix(layers_, 4), mix(kv_heads_, 4), mix(head_dim_, 4), mix(vocab_, 4), mix(keys_prerope_, 1);
        for (float m : means_) mix(float_to_bf16(m), 2);
        for (auto c : counts_) mix(c, 4);
        return h;
    }

    std::uint32_t layers_ = 0, kv_heads_ = 0, head_dim_ = 0, vocab_ = 0;
    bool keys_prerope_ = false;
    std::vector<float> means_;
    std::vector<std::uint32_t> counts_;
    std::uint64_t hash_ = 0;
};

}  // namespace seqkv::predict

SEQKV_FP_STRICT_END
