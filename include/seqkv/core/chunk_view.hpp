// A chunk_buffer read as a cache: the decoded (or assembled) KV of some tokens, handed to
// anything that takes a kv_cache_view (compress, a prefix store's put, metrics).
#pragma once

#include "seqkv/core/chunk.hpp"
#include "seqkv/core/layout.hpp"

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

}  // namespace seqkv
