// What every codec sees: a chunk of tokens [t0, t1) across all layers, K and V, and the
// buffer it decodes into. The container (format/) cuts a cache into chunks and stores one payload
// per chunk. A chunk is self-contained unless its codec declares dependent chunks
// (ChunkCodec: `dependent_chunks`): then `carry` holds the state the previous chunk left, empty
// at a keyframe, and the container replays chunks from the last keyframe to decode a range.
#pragma once

#include <algorithm>
#include <any>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/resource.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

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

/// Where a chunk decodes to without a staging copy: the rows of a larger buffer. Block (layer, kind)
/// starts at blocks[2 · layer + kind]; head h, chunk token t, channel c is element
/// (h · head_stride + t) · head_dim + c there (head_stride >= layout.tokens: a chunk_buffer of more
/// tokens, at the chunk's first token). Codecs that can write such rows offer decode_into.
struct chunk_destination {
    kv_layout layout;                    // the chunk's shape (tokens = the chunk's)
    std::vector<std::uint8_t*> blocks;   // 2 · layers
    std::uint64_t head_stride = 0;       // tokens from one head's rows to the next's

    /// Rows [first, first + tokens) of every block of `out` (first + tokens <= out.layout.tokens).
    static chunk_destination rows_of(chunk_buffer& out, std::uint64_t first, std::uint64_t tokens) {
        require_usage(first + tokens <= out.layout.tokens, "chunk_destination: rows outside the buffer");
        chunk_destination d{out.layout, {}, out.layout.tokens};
        d.layout.tokens = tokens;
        const std::size_t row = std::size_t(out.layout.head_dim) * dtype_size(out.layout.type);
        for (std::uint32_t l = 0; l < out.layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) d.blocks.push_back(out.block(l, kind).data() + first * row);
        return d;
    }
    /// Bytes from a block's first element to the end of its last row.
    std::size_t block_extent() const {
        if (layout.tokens == 0 || layout.kv_heads == 0) return 0;
        return ((std::size_t(layout.kv_heads) - 1) * head_stride + layout.tokens) * layout.head_dim * dtype_size(layout.type);
    }
};

/// Copies the elements of tokens [begin, end) of one cache tensor into a contiguous
/// [heads, end - begin, head_dim] block (any source strides).
inline void gather_block(const kv_tensor_view& src, std::uint64_t begin, std::uint64_t end, std::span<std::uint8_t> dst) {
    const std::size_t es = dtype_size(src.type);
    const std::uint64_t n = end - begin;
    require_usage(dst.size() == std::size_t(src.heads) * n * src.head_dim * es, "gather_block: size mismatch");
    std::size_t o = 0;
    if (src.strides.channel == 1 && src.strides.token == std::int64_t(src.head_dim)) {  // a head's rows are contiguous
        const std::size_t head_bytes = std::size_t(n) * src.head_dim * es;
        for (std::uint32_t h = 0; h < src.heads && n > 0; ++h, o += head_bytes) std::memcpy(dst.data() + o, src.element(h, begin, 0), head_bytes);
        return;
    }
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

SEQKV_FP_STRICT_END
