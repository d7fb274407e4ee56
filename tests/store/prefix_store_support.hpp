// Shared by the prefix store tests (test_prefix_store.cpp over memory / directory stores,
// test_prefix_store_redis.cpp over Redis and Redis Cluster): sessions assembled from pieces of
// the real caches in data/kv/*.safetensors, with the KV each read is expected to return.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/io/kv_safetensors.hpp"

namespace seqkv::prefix_store_test {

// A session: token ids plus its KV, assembled from pieces of real caches.
struct session {
    kv_layout layout;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    chunk_buffer kv;  // [layer][K/V][head][token][channel]
    kv_cache_view view() const { return view_of(kv); }
    // The expected first n tokens in chunk_buffer order.
    byte_vector first(std::uint64_t n) const {
        auto part = chunk_buffer::for_layout(layout, n);
        const std::size_t row = layout.head_dim * dtype_size(layout.type);
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value})
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h)
                    std::memcpy(part.block(l, kind).data() + h * n * row, kv.block(l, kind).data() + h * layout.tokens * row, n * row);
        return part.bytes;
    }
};

struct real_kv {
    io::safetensors_file file;
    kv_cache_view cache;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    explicit real_kv(const char* name)
        : file(io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / name)), cache(io::kv_view(file)) {
        ids = *io::token_ids_of(file, cache.layout.tokens);
        nll = *io::nll_of(file, cache.layout.tokens);
    }
};

// Tokens [a.begin, a.end) of x, then [b.begin, b.end) of y (same geometry), as one session;
// y's ids are offset so that the two parts never share tokens by accident.
inline session splice(const real_kv& x, std::uint64_t x_end, const real_kv* y = nullptr, std::uint64_t y_begin = 0,
                      std::uint64_t y_end = 0, std::int32_t id_offset = 100000) {
    if (x_end > x.cache.layout.tokens || (y && y_end > y->cache.layout.tokens)) throw std::out_of_range("splice: past the dump");
    session s;
    s.layout = x.cache.layout;
    s.layout.tokens = x_end + (y_end - y_begin);
    s.ids.assign(x.ids.begin(), x.ids.begin() + std::ptrdiff_t(x_end));
    s.nll.assign(x.nll.begin(), x.nll.begin() + std::ptrdiff_t(x_end));
    for (std::uint64_t t = y_begin; t < y_end; ++t) s.ids.push_back(y->ids[t] + id_offset), s.nll.push_back(y->nll[t]);
    const std::size_t row = s.layout.head_dim * dtype_size(s.layout.type);
    s.kv = chunk_buffer::for_layout(s.layout, s.layout.tokens);
    for (std::uint32_t l = 0; l < s.layout.layers; ++l)
        for (int kind = 0; kind < 2; ++kind) {
            auto b = s.kv.block(l, kind ? kv_kind::value : kv_kind::key);
            const auto& tx = kind ? x.cache.values[l] : x.cache.keys[l];
            for (std::uint32_t h = 0; h < s.layout.kv_heads; ++h) {
                for (std::uint64_t t = 0; t < x_end; ++t) std::memcpy(b.data() + (h * s.layout.tokens + t) * row, tx.element(h, t, 0), row);
                if (y) {
                    const auto& ty = kind ? y->cache.values[l] : y->cache.keys[l];
                    for (std::uint64_t t = y_begin; t < y_end; ++t)
                        std::memcpy(b.data() + (h * s.layout.tokens + x_end + t - y_begin) * row, ty.element(h, t, 0), row);
                }
            }
        }
    return s;
}

inline const real_kv& gpl3() {
    static const real_kv k("gpl3.safetensors");
    return k;
}
inline const real_kv& textwrap() {
    static const real_kv k("py311-textwrap.safetensors");
    return k;
}

}  // namespace seqkv::prefix_store_test
