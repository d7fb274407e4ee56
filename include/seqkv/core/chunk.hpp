// What every codec sees: a chunk of tokens [t0, t1) across all layers, K and V, and the
// buffer it decodes into. The container (format/) cuts a cache into chunks and stores one payload
// per chunk. A chunk is self-contained unless its codec declares dependent chunks
// (ChunkCodec: `dependent_chunks`): then `carry` holds the state the previous chunk left, empty
// at a keyframe, and the container replays chunks from the last keyframe to decode a range.
#pragma once

#include <algorithm>
#include <any>
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/resource.hpp"

namespace seqkv {

/// Tokens [begin, end) of a cache plus the per-token side data the container stores losslessly.
struct chunk_input {
    const kv_cache_view* cache = nullptr;
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
    std::span<const std::int32_t> token_ids;  // ids of tokens [begin, end), or empty if unknown
    std::span<const float> nll;               // −ln p(token) in nats for [begin, end), or empty
    const resource_provider* resources = nullptr;  // objects the file's resource table names (or null)
    std::any* carry = nullptr;  // dependent chunks only: state from the previous chunk (empty at a keyframe)
    std::uint64_t position_base = 0;  // sequence position of the cache's token 0 (a writer's staging buffer
                                      // starts at the chunk): token t sits at position_base + t (RoPE angles)

    /// Sequence position of token `begin`.
    std::uint64_t first_position() const { return position_base + begin; }

    std::uint64_t token_count() const { return end - begin; }
};

/// Decoded chunk: raw little-endian elements of the cache's dtype, laid out
/// [layer][kind (K=0, V=1)][head][token - begin][channel], i.e. one contiguous
/// [heads, tokens, head_dim] block per (layer, kind).
struct chunk_buffer {
    kv_layout layout;  // layout.tokens == number of tokens in the chunk
    byte_vector bytes;
    std::vector<std::int32_t> token_ids;  // decoded ids, from codecs that code them (token mode); else empty

    /// Allocates a buffer for `tokens` tokens of the cache layout (caller validated the sizes).
    static chunk_buffer for_layout(kv_layout cache_layout, std::uint64_t tokens) {
        cache_layout.tokens = tokens;
        chunk_buffer b{cache_layout, {}, {}};
        b.bytes.resize(cache_layout.total_bytes());
        return b;
    }
    /// Bytes of one (layer, kind) block.
    std::size_t block_bytes() const { return layout.elements_per_tensor() * dtype_size(layout.type); }
    /// The contiguous [heads, tokens, head_dim] block of (layer, kind).
    std::span<std::uint8_t> block(std::uint32_t layer, kv_kind kind) {
        return std::span(bytes).subspan((2 * std::size_t(layer) + std::size_t(kind)) * block_bytes(), block_bytes());
    }
    std::span<const std::uint8_t> block(std::uint32_t layer, kv_kind kind) const {
        return std::span(bytes).subspan((2 * std::size_t(layer) + std::size_t(kind)) * block_bytes(), block_bytes());
    }
    /// A view of (layer, kind) in the standard tensor form.
    kv_tensor_view view(std::uint32_t layer, kv_kind kind) const {
        return {block(layer, kind).data(), layout.type, layout.kv_heads, layout.tokens, layout.head_dim,
                kv_strides::head_major(layout.tokens, layout.head_dim)};
    }
};

/// Copies the elements of tokens [begin, end) of one cache tensor into a contiguous
/// [heads, end - begin, head_dim] block (any source strides).
inline void gather_block(const kv_tensor_view& src, std::uint64_t begin, std::uint64_t end, std::span<std::uint8_t> dst) {
    const std::size_t es = dtype_size(src.type);
    const std::uint64_t n = end - begin;
    require_usage(dst.size() == std::size_t(src.heads) * n * src.head_dim * es, "gather_block: size mismatch");
    std::size_t o = 0;
    for (std::uint32_t h = 0; h < src.heads; ++h)
        for (std::uint64_t t = begin; t < end; ++t) {
            if (src.strides.channel == 1) {
                const auto* p = src.element(h, t, 0);
                std::copy(p, p + std::size_t(src.head_dim) * es, dst.data() + o);
                o += std::size_t(src.head_dim) * es;
            } else {
                for (std::uint32_t c = 0; c < src.head_dim; ++c, o += es) std::copy_n(src.element(h, t, c), es, dst.data() + o);
            }
        }
}

}  // namespace seqkv
