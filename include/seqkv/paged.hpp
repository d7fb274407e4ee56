// Paged KV caches as engines hold them (vLLM's paged blocks, SGLang's pages): a sequence's tokens live in fixed-size
// blocks (pages) scattered over a per-layer pool, found through a block table. compress_paged()
// reads them where they are (no gather copy of the cache: the writer stages one chunk at a time)
// and writes the same bytes compress() writes for the contiguous cache; decompress_into() scatters
// decoded tokens straight into the caller's pages.
//
//   // vLLM, per layer a tensor [2, num_blocks, block_size, kv_heads, head_dim]:
//   auto view = seqkv::paged_kv_view::vllm_split(layer_ptrs, num_blocks, block_size, heads, head_dim,
//                                                seqkv::dtype::bf16, block_table, tokens);
//   auto skv = seqkv::compress_paged(view, seqkv::preset("lossless", model), ids);
//   seqkv::decompress_into(skv, writable_view);   // another request's block table
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/api.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Where element (token-in-block t, head h, channel c) of physical block b of one (layer, K/V)
/// pool lives: base + b*block + t*token + h*head + c*channel, in elements of the cache's dtype.
struct paged_strides {
    std::int64_t block = 0, token = 0, head = 0, channel = 1;
};

/// A sequence's KV in a paged pool: `tokens` tokens, token t in physical block
/// block_table[t / block_size] at row t % block_size, for every layer and K/V.
struct paged_kv_view {
    kv_layout layout;                          // layout.tokens: the sequence's token count
    std::uint32_t block_size = 16;             // tokens per block (page)
    std::uint64_t num_blocks = 0;              // physical blocks in the pool (block-table entries are checked against it)
    std::span<const std::int32_t> block_table;  // logical block -> physical block
    std::vector<std::uint8_t*> keys, values;   // per layer: the pool's base address for K and V (element 0 of block 0)
    paged_strides k_strides, v_strides;

    /// vLLM's classic layout: per layer one tensor [2, num_blocks, block_size, kv_heads, head_dim].
    static paged_kv_view vllm_split(std::span<std::uint8_t* const> layers, std::uint64_t num_blocks, std::uint32_t block_size,
                                    std::uint32_t kv_heads, std::uint32_t head_dim, dtype type,
                                    std::span<const std::int32_t> block_table, std::uint64_t tokens) {
        paged_kv_view v = common(layers.size(), num_blocks, block_size, kv_heads, head_dim, type, block_table, tokens);
        const std::int64_t row = std::int64_t(kv_heads) * head_dim, blk = std::int64_t(block_size) * row;
        v.k_strides = v.v_strides = {blk, row, head_dim, 1};
        for (auto* p : layers) {
            v.keys.push_back(p);
            v.values.push_back(p + std::int64_t(num_blocks) * blk * std::int64_t(dtype_size(type)));
        }
        return v;
    }
    /// vLLM's fused blocks-first layout (0.26+): per layer [num_blocks, kv_heads, block_size, 2 * head_dim],
    /// K in the first head_dim channels of a row, V in the second.
    static paged_kv_view vllm_fused(std::span<std::uint8_t* const> layers, std::uint64_t num_blocks, std::uint32_t block_size,
                                    std::uint32_t kv_heads, std::uint32_t head_dim, dtype type,
                                    std::span<const std::int32_t> block_table, std::uint64_t tokens) {
        paged_kv_view v = common(layers.size(), num_blocks, block_size, kv_heads, head_dim, type, block_table, tokens);
        const std::int64_t row = 2 * std::int64_t(head_dim), head = std::int64_t(block_size) * row;
        v.k_strides = v.v_strides = {std::int64_t(kv_heads) * head, row, head, 1};
        for (auto* p : layers) {
            v.keys.push_back(p);
            v.values.push_back(p + std::int64_t(head_dim) * std::int64_t(dtype_size(type)));
        }
        return v;
    }
    /// A token-major pool shared by all layers, paged: [2, pool_tokens, layers, kv_heads, head_dim]
    /// (SGLang's host "page_first" layout; pages of block_size tokens, block_table = page indices).
    static paged_kv_view page_first(std::uint8_t* pool, std::uint32_t layers, std::uint64_t num_pages, std::uint32_t page_size,
                                    std::uint32_t kv_heads, std::uint32_t head_dim, dtype type,
                                    std::span<const std::int32_t> page_table, std::uint64_t tokens) {
        paged_kv_view v = common(layers, num_pages, page_size, kv_heads, head_dim, type, page_table, tokens);
        const std::int64_t head_row = std::int64_t(kv_heads) * head_dim, token = std::int64_t(layers) * head_row;
        v.k_strides = v.v_strides = {std::int64_t(page_size) * token, token, head_dim, 1};
        const std::int64_t es = std::int64_t(dtype_size(type)), kv_half = std::int64_t(num_pages) * page_size * token * es;
        for (std::uint32_t l = 0; l < layers; ++l) {
            v.keys.push_back(pool + std::int64_t(l) * head_row * es);
            v.values.push_back(pool + kv_half + std::int64_t(l) * head_row * es);
        }
        return v;
    }

    /// Checks the geometry and every block-table entry the tokens use; usage_error otherwise.
    /// (Two logical blocks naming one physical block are the caller's business: decoding into such
    /// a view writes both through the same page.)
    void validate() const {
        require_usage(block_size > 0 && layout.layers > 0 && layout.kv_heads > 0 && layout.head_dim > 0,
                      "paged_kv_view: block size, layers, heads and head_dim must be positive");
        require_usage(keys.size() == layout.layers && values.size() == layout.layers, "paged_kv_view: one K and V pool per layer");
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            require_usage(keys[l] != nullptr && values[l] != nullptr, "paged_kv_view: a layer's pool address is null");
        const std::uint64_t used = layout.tokens / block_size + (layout.tokens % block_size != 0);  // no overflow
        require_usage(block_table.size() >= used, "paged_kv_view: the block table is shorter than the tokens need");
        for (std::uint64_t b = 0; b < used; ++b)
            require_usage(block_table[b] >= 0 && std::uint64_t(block_table[b]) < num_blocks,
                          "paged_kv_view: block-table entry outside the pool");
    }
    /// The tokens of logical block `b` as a regular strided cache view (read-only).
    kv_cache_view block_view(std::uint64_t b) const {
        kv_cache_view v;
        v.layout = layout;
        v.layout.tokens = std::min<std::uint64_t>(block_size, layout.tokens - b * block_size);
        const std::int64_t es = std::int64_t(dtype_size(layout.type));
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const paged_strides& s = kind == kv_kind::key ? k_strides : v_strides;
                const std::uint8_t* base = (kind == kv_kind::key ? keys[l] : values[l]) + block_table[b] * s.block * es;
                kv_tensor_view t{base, layout.type, layout.kv_heads, v.layout.tokens, layout.head_dim, {s.head, s.token, s.channel}};
                (kind == kv_kind::key ? v.keys : v.values).push_back(t);
            }
        return v;
    }
    /// Address of element (token t, head h, channel c) of (layer, kind), for writing.
    std::uint8_t* element(std::uint32_t layer, kv_kind kind, std::uint64_t t, std::uint32_t h, std::uint32_t c) const {
        const paged_strides& s = kind == kv_kind::key ? k_strides : v_strides;
        const std::int64_t i = block_table[t / block_size] * s.block + std::int64_t(t % block_size) * s.token + h * s.head + c * s.channel;
        return (kind == kv_kind::key ? keys[layer] : values[layer]) + i * std::int64_t(dtype_size(layout.type));
    }

private:
    static paged_kv_view common(std::size_t layers, std::uint64_t num_blocks, std::uint32_t block_size, std::uint32_t kv_heads,
                                std::uint32_t head_dim, dtype type, std::span<const std::int32_t> table, std::uint64_t tokens) {
        paged_kv_view v;
        v.layout = {std::uint32_t(layers), kv_heads, head_dim, tokens, type};
        v.block_size = block_size, v.num_blocks = num_blocks, v.block_table = table;
        return v;
    }
};

/// Compresses the sequence a paged view describes: the same bytes compress() writes for the
/// same KV held contiguously (the writer reads block by block; nothing is gathered first).
template <backend::Backend Backend = backend::simd>
byte_vector compress_paged(const paged_kv_view& cache, const compress_options& options = {},
                           std::span<const std::int32_t> token_ids = {}, std::span<const float> nll = {}) {
    cache.validate();
    require_usage(token_ids.empty() || token_ids.size() == cache.layout.tokens, "compress_paged: one token id per token");
    require_usage(nll.empty() || nll.size() == cache.layout.tokens, "compress_paged: one nll per token");
    return write_stream<Backend>(cache.layout, options, !token_ids.empty(), !nll.empty(), [&](format::stream_writer& w) {
        for (std::uint64_t b = 0; b * cache.block_size < cache.layout.tokens; ++b) {
            const kv_cache_view blk = cache.block_view(b);
            const std::uint64_t first = b * cache.block_size, n = blk.layout.tokens;
            w.append(blk, 0, n, token_ids.empty() ? token_ids : token_ids.subspan(first, n), nll.empty() ? nll : nll.subspan(first, n));
        }
    });
}

/// Decodes tokens [begin, end) of a .skv image into a paged view's pages: token t of the file
/// goes to the view's token t - begin (its block table says where). The view's layout must be the
/// file's (tokens: at least end - begin). Every chunk record the range needs is CRC-checked before
/// the first page is written, so a damaged file leaves the pages untouched; self-contained chunks
/// are then decoded one at a time (memory: one chunk), a codec with dependent chunks (token mode)
/// decodes the range at once. Returns the range's token ids when the file codes them in its
/// payload (token mode), else an empty vector (stored ids: stream_reader::token_ids()).
template <backend::Backend Backend = backend::simd>
std::vector<std::int32_t> decompress_into(std::span<const std::uint8_t> file, const paged_kv_view& dst, std::uint64_t begin = 0,
                                          std::optional<std::uint64_t> end_opt = std::nullopt,
                                          const resource_provider& resources = {}, unsigned threads = 1) {
    dst.validate();
    format::stream_reader reader(file);
    const kv_layout L = reader.layout();
    const std::uint64_t end = end_opt.value_or(L.tokens);
    require_usage(begin <= end && end <= L.tokens, "decompress_into: token range outside the stream");
    require_usage(L.layers == dst.layout.layers && L.kv_heads == dst.layout.kv_heads && L.head_dim == dst.layout.head_dim &&
                      L.type == dst.layout.type && dst.layout.tokens >= end - begin,
                  "decompress_into: the paged view's layout differs from the file's, or holds too few tokens");
    reader.require_resources(resources);
    const auto codec = make_codec<Backend>(reader.header().codec, resources, executor_for(threads));
    const auto& chunks = reader.chunks();
    for (std::size_t i = 0; i < chunks.size(); ++i)  // every record in the range passes its CRC first
        if (chunks[i].first_token < end && chunks[i].first_token + chunks[i].tokens > begin) (void)reader.record(i);
    const std::size_t es = dtype_size(L.type);
    auto scatter = [&](const chunk_buffer& part, std::uint64_t first) {  // part holds tokens [first, first + n)
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const kv_tensor_view src = part.view(l, kind);
                const bool rows = (kind == kv_kind::key ? dst.k_strides : dst.v_strides).channel == 1;
                for (std::uint64_t t = 0; t < part.layout.tokens; ++t)
                    for (std::uint32_t h = 0; h < L.kv_heads; ++h) {
                        if (rows) {
                            std::copy_n(src.element(h, t, 0), std::size_t(L.head_dim) * es, dst.element(l, kind, first + t - begin, h, 0));
                        } else {
                            for (std::uint32_t c = 0; c < L.head_dim; ++c)
                                std::copy_n(src.element(h, t, c), es, dst.element(l, kind, first + t - begin, h, c));
                        }
                    }
            }
    };
    if (codec.dependent_chunks) {
        chunk_buffer all = reader.decode(codec, begin, end, resources);
        scatter(all, begin);
        return std::move(all.token_ids);
    }
    std::vector<std::int32_t> ids;
    for (const auto& c : chunks) {
        const std::uint64_t lo = std::max(begin, c.first_token), hi = std::min(end, c.first_token + c.tokens);
        if (lo >= hi) continue;
        const chunk_buffer part = reader.decode(codec, lo, hi, resources);
        scatter(part, lo);
        ids.insert(ids.end(), part.token_ids.begin(), part.token_ids.end());
    }
    return ids;
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
