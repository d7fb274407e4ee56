// KV cache layout description and non-owning views over engine memory.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Which of the two cached tensors of a layer.
enum class kv_kind : std::uint8_t { key = 0, value = 1 };

/// Shape and element type of a KV cache: per layer, K and V of shape [kv_heads, tokens, head_dim].
struct kv_layout {
    std::uint32_t layers = 0;
    std::uint32_t kv_heads = 0;
    std::uint32_t head_dim = 0;
    std::uint64_t tokens = 0;
    dtype type = dtype::bf16;

    /// Elements in one of K or V of one layer.
    std::uint64_t elements_per_tensor() const { return std::uint64_t(kv_heads) * tokens * head_dim; }
    /// Elements of one token across all layers, K and V.
    std::uint64_t elements_per_token() const { return 2ull * layers * kv_heads * head_dim; }
    /// Bytes of the whole cache in its dtype.
    std::uint64_t total_bytes() const { return elements_per_token() * tokens * dtype_size(type); }
    bool operator==(const kv_layout&) const = default;
};

/// Element strides of a [heads, tokens, head_dim] tensor (in elements, not bytes).
struct kv_strides {
    std::int64_t head = 0;
    std::int64_t token = 0;
    std::int64_t channel = 1;

    /// Strides of a contiguous [heads, tokens, head_dim] tensor (the safetensors convention).
    static kv_strides head_major(std::uint64_t tokens, std::uint32_t head_dim) {
        return {std::int64_t(tokens * head_dim), std::int64_t(head_dim), 1};
    }
    /// Strides of a contiguous [tokens, heads, head_dim] tensor (vLLM / llama.cpp style).
    static kv_strides token_major(std::uint32_t heads, std::uint32_t head_dim) {
        return {std::int64_t(head_dim), std::int64_t(heads) * head_dim, 1};
    }
};

/// Non-owning view of one [heads, tokens, head_dim] tensor of raw little-endian elements.
struct kv_tensor_view {
    const std::uint8_t* data = nullptr;
    dtype type = dtype::bf16;
    std::uint32_t heads = 0;
    std::uint64_t tokens = 0;
    std::uint32_t head_dim = 0;
    kv_strides strides{};

    /// Byte address of element (h, t, c).
    const std::uint8_t* element(std::uint32_t h, std::uint64_t t, std::uint32_t c) const {
        const std::int64_t index = h * strides.head + std::int64_t(t) * strides.token + c * strides.channel;
        return data + index * std::int64_t(dtype_size(type));
    }
    /// Element (h, t, c) as fp32 (exact for every KV float type).
    float at(std::uint32_t h, std::uint64_t t, std::uint32_t c) const {
        return load_as_float(element(h, t, c), type, 0);
    }
    /// Elements (h, t, 0 .. out.size()) as fp32, exactly as at() reads them, the dtype's branch
    /// and the channel stride taken once for the row.
    void load_row(std::uint32_t h, std::uint64_t t, std::span<float> out) const {
        const std::uint8_t* p = element(h, t, 0);
        if (type == dtype::bf16 && strides.channel == 1) {
            for (std::size_t c = 0; c < out.size(); ++c)
                out[c] = std::bit_cast<float>(std::uint32_t(p[2 * c] | (p[2 * c + 1] << 8)) << 16);
            return;
        }
        const std::int64_t step = strides.channel * std::int64_t(dtype_size(type));
        for (std::size_t c = 0; c < out.size(); ++c) out[c] = load_as_float(p + std::int64_t(c) * step, type, 0);
    }
    /// True when every element (h, t, 0 .. count) is finite (no NaN, no ±Inf).
    bool row_finite(std::uint32_t h, std::uint64_t t, std::uint32_t count) const {
        const std::uint8_t* p = element(h, t, 0);
        if (type == dtype::bf16 && strides.channel == 1) {
            bool finite = true;
            for (std::size_t c = 0; c < count; ++c) finite &= (p[2 * c + 1] & 0x7f) != 0x7f || (p[2 * c] & 0x80) == 0;
            return finite;
        }
        const std::int64_t step = strides.channel * std::int64_t(dtype_size(type));
        for (std::size_t c = 0; c < count; ++c)
            if (!std::isfinite(load_as_float(p + std::int64_t(c) * step, type, 0))) return false;
        return true;
    }
    /// True when the tensor is the contiguous [heads, tokens, head_dim] layout.
    bool is_head_major_contiguous() const {
        auto c = kv_strides::head_major(tokens, head_dim);
        return strides.head == c.head && strides.token == c.token && strides.channel == c.channel;
    }
};

/// Non-owning view of a whole cache: one K and one V tensor per layer, all of the same layout.
struct kv_cache_view {
    kv_layout layout;
    std::vector<kv_tensor_view> keys;    // one per layer
    std::vector<kv_tensor_view> values;  // one per layer

    /// Checks that every tensor matches the layout; throws usage_error otherwise.
    void validate() const {
        require_usage(keys.size() == layout.layers && values.size() == layout.layers,
                      "kv_cache_view: need one K and one V tensor per layer");
        for (std::uint32_t l = 0; l < layout.layers; ++l) {
            for (const auto* t : {&keys[l], &values[l]}) {
                if (t->data == nullptr && layout.elements_per_tensor() != 0)
                    throw usage_error("kv_cache_view: layer " + std::to_string(l) + " has no data");
                if (t->type != layout.type || t->heads != layout.kv_heads || t->tokens != layout.tokens ||
                    t->head_dim != layout.head_dim)
                    throw usage_error("kv_cache_view: layer " + std::to_string(l) + " does not match the layout");
            }
        }
    }
    /// The tensor of layer l, K or V.
    const kv_tensor_view& tensor(std::uint32_t layer, kv_kind kind) const {
        return kind == kv_kind::key ? keys.at(layer) : values.at(layer);
    }
};

}  // namespace seqkv

SEQKV_FP_STRICT_END
