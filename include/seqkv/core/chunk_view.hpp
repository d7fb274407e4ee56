// A chunk_buffer read as a cache: the decoded (or assembled) KV of some tokens, handed to
// anything that takes a kv_cache_view (compress, a prefix store's put, metrics).
#pragma once

#include "seqkv/core/chunk.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// A view of b's [layer][K/V][head][token][channel] elements (valid while b lives, unresized).
inline kv_cache_view view_of(const chunk_buffer& b) {
    kv_cache_view v;
    v.layout = b.layout;
    const auto strides = kv_strides::head_major(b.layout.tokens, b.layout.head_dim);
    for (std::uint32_t l = 0; l < b.layout.layers; ++l) {
        v.keys.push_back({b.block(l, kv_kind::key).data(), b.layout.type, b.layout.kv_heads, b.layout.tokens, b.layout.head_dim, strides});
        v.values.push_back({b.block(l, kv_kind::value).data(), b.layout.type, b.layout.kv_heads, b.layout.tokens, b.layout.head_dim, strides});
    }
    return v;
}

/// Tokens [begin, end) of the first `layers` layers of `src` copied into an owned buffer of dtype
/// `type` (any source strides): bit for bit when `type` is the source's, else converted through
/// float. With view_of, the owned test / seed / sliced cache that compress() takes.
inline chunk_buffer copy_tokens(const kv_cache_view& src, std::uint64_t begin, std::uint64_t end, std::uint32_t layers,
                                dtype type) {
    require_usage(begin <= end && end <= src.layout.tokens && layers <= src.layout.layers && layers <= src.keys.size() &&
                      layers <= src.values.size() && is_kv_float(type),
                  "copy_tokens: range, layers or dtype outside the source cache");
    kv_layout l = src.layout;
    l.layers = layers, l.type = type;
    chunk_buffer b = chunk_buffer::for_layout(l, end - begin);
    for (std::uint32_t layer = 0; layer < layers; ++layer)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const kv_tensor_view& t = kind == kv_kind::key ? src.keys[layer] : src.values[layer];
            const std::span<std::uint8_t> dst = b.block(layer, kind);
            if (type == t.type) {
                gather_block(t, begin, end, dst);
                continue;
            }
            std::size_t i = 0;
            for (std::uint32_t h = 0; h < l.kv_heads; ++h)
                for (std::uint64_t tk = begin; tk < end; ++tk)
                    for (std::uint32_t c = 0; c < l.head_dim; ++c) store_from_float(dst.data(), type, i++, t.at(h, tk, c));
        }
    return b;
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
