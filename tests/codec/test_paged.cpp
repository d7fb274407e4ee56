// Paged caches (seqkv/paged.hpp): vLLM's split and fused layouts and a page-first pool, on the
// real fixture. compress_paged writes exactly compress()'s bytes; decompress_into scatters into
// another block table's pages and writes nothing else.
#include <gtest/gtest.h>

#include <numeric>
#include <string>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/paged.hpp"
#include "seqkv/preset.hpp"

using namespace seqkv;

namespace {

enum class kind { split, fused, page_first };

/// An engine-like pool holding `src` under a permuted block table; bytes outside the sequence's
/// blocks are `fill`.
struct pool {
    std::vector<std::uint8_t> bytes;
    std::vector<std::uint8_t*> layer_ptrs;
    std::vector<std::int32_t> table;
    paged_kv_view view;

    pool(kind k, const kv_layout& L, std::uint32_t block, std::uint64_t tokens, std::uint32_t seed, std::uint8_t fill) {
        const std::uint64_t used = (tokens + block - 1) / block, num_blocks = used * 2 + 3;  // spare blocks stay untouched
        table.resize(used);
        for (std::uint64_t i = 0; i < used; ++i) table[i] = std::int32_t((i * 5 + seed) % num_blocks);  // scattered
        std::vector<bool> seen(num_blocks);
        for (auto& b : table) {  // make the entries distinct
            while (seen[std::size_t(b)]) b = std::int32_t((b + 1) % num_blocks);
            seen[std::size_t(b)] = true;
        }
        const std::size_t es = dtype_size(L.type);
        const std::size_t per_layer = 2 * num_blocks * block * L.kv_heads * L.head_dim * es;
        bytes.assign(per_layer * L.layers, fill);
        if (k == kind::page_first) {
            view = paged_kv_view::page_first(bytes.data(), L.layers, num_blocks, block, L.kv_heads, L.head_dim, L.type, table, tokens);
            return;
        }
        for (std::uint32_t l = 0; l < L.layers; ++l) layer_ptrs.push_back(bytes.data() + l * per_layer);
        view = k == kind::split ? paged_kv_view::vllm_split(layer_ptrs, num_blocks, block, L.kv_heads, L.head_dim, L.type, table, tokens)
                                : paged_kv_view::vllm_fused(layer_ptrs, num_blocks, block, L.kv_heads, L.head_dim, L.type, table, tokens);
    }
    void store(const kv_cache_view& src) {
        const std::size_t es = dtype_size(src.layout.type);
        for (std::uint32_t l = 0; l < src.layout.layers; ++l)
            for (kv_kind kk : {kv_kind::key, kv_kind::value})
                for (std::uint64_t t = 0; t < view.layout.tokens; ++t)
                    for (std::uint32_t h = 0; h < src.layout.kv_heads; ++h)
                        std::copy_n(src.tensor(l, kk).element(h, t, 0), src.layout.head_dim * es, view.element(l, kk, t, h, 0));
    }
    /// Tokens [0, n) read back through the view, as a contiguous buffer.
    chunk_buffer read(std::uint64_t n) const {
        kv_layout L = view.layout;
        chunk_buffer b = chunk_buffer::for_layout(L, n);
        const std::size_t es = dtype_size(L.type);
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kk : {kv_kind::key, kv_kind::value}) {
                auto blk = b.block(l, kk);
                for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                    for (std::uint64_t t = 0; t < n; ++t)
                        std::copy_n(view.element(l, kk, t, h, 0), L.head_dim * es, blk.data() + ((h * n + t) * L.head_dim) * es);
            }
        return b;
    }
};

struct fixture_slice {
    io::safetensors_file file = io::safetensors_file::load(std::string(SEQKV_DATA_DIR) + "/kv/gpl3.safetensors");
    chunk_buffer kv;
    std::vector<std::int32_t> ids;
    model_params model;
    explicit fixture_slice(std::uint64_t tokens) {
        const kv_cache_view full = io::kv_view(file);
        kv = copy_tokens(full, 0, tokens, 2, full.layout.type);
        ids = io::token_ids_of(file, full.layout.tokens).value();
        ids.resize(tokens);
        model = model_params_from(file.metadata(), full.layout);
    }
};

}  // namespace

TEST(Paged, CompressPagedWritesCompressBytesAndDecompressIntoScatters) {
    const fixture_slice f(100);
    const kv_cache_view contiguous = view_of(f.kv);
    for (kind k : {kind::split, kind::fused, kind::page_first}) {
        const std::uint32_t block = k == kind::page_first ? 8 : 16;
        const std::string name = k == kind::split ? "vllm_split" : k == kind::fused ? "vllm_fused" : "page_first";
        pool src(k, f.kv.layout, block, 100, 3, 0xAB);
        src.store(contiguous);
        ASSERT_EQ(src.read(100).bytes, f.kv.bytes) << name << ": the test's own pool";
        for (const char* preset_name : {"lossless", "kivi4"}) {
            preset_inputs in;
            in.chunk_tokens = 24;  // chunks straddle blocks
            const compress_options o = preset(preset_name, f.model, in);
            const byte_vector paged = compress_paged(src.view, o, f.ids);
            EXPECT_EQ(paged, compress(contiguous, o, f.ids)) << name << " " << preset_name;

            // Into another request's pages (another permutation), the whole sequence and a range.
            pool dst(k, f.kv.layout, block, 100, 7, 0xCD);
            decompress_into(paged, dst.view);
            const chunk_buffer expect = decompress(paged);
            EXPECT_EQ(dst.read(100).bytes, expect.bytes) << name << " " << preset_name;
            pool part(k, f.kv.layout, block, 40, 1, 0xCD);
            decompress_into(paged, part.view, 30, 70);
            EXPECT_EQ(part.read(40).bytes, decompress(paged, 30, 70).bytes) << name << " " << preset_name;
            // Nothing outside the sequence's elements was written (KV bytes equal to the fill
            // byte only make the count smaller).
            auto written = [](const pool& q) {
                return std::size_t(std::count_if(q.bytes.begin(), q.bytes.end(), [](std::uint8_t b) { return b != 0xCD; }));
            };
            EXPECT_LE(written(dst), dst.view.layout.total_bytes()) << name;
            EXPECT_LE(written(part), part.view.layout.total_bytes()) << name;
        }
    }
}

// Each layout's addressing, written out as the engines document their tensor shapes.
TEST(Paged, LayoutsAddressAsTheEnginesShapesSay) {
    kv_layout L{3, 2, 8, 0, dtype::bf16};
    const std::uint64_t T = 37;
    for (kind k : {kind::split, kind::fused, kind::page_first}) {
        const std::uint32_t bs = k == kind::page_first ? 4 : 16;
        pool p(k, L, bs, T, 2, 0);
        const std::uint64_t nb = p.view.num_blocks;
        const std::size_t H = L.kv_heads, D = L.head_dim, layer_elems = 2 * nb * bs * H * D;
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kk : {kv_kind::key, kv_kind::value})
                for (std::uint64_t t = 0; t < T; t += 5)
                    for (std::uint32_t h = 0; h < H; ++h)
                        for (std::uint32_t c = 0; c < D; c += 3) {
                            const std::size_t b = std::size_t(p.table[t / bs]), r = t % bs, v = kk == kv_kind::value;
                            std::size_t e = 0;
                            if (k == kind::split)  // per layer [2, num_blocks, block_size, heads, head_dim]
                                e = l * layer_elems + (((v * nb + b) * bs + r) * H + h) * D + c;
                            else if (k == kind::fused)  // per layer [num_blocks, heads, block_size, 2 * head_dim]
                                e = l * layer_elems + ((b * H + h) * bs + r) * 2 * D + v * D + c;
                            else  // [2, pool_tokens, layers, heads, head_dim]
                                e = (((v * nb * bs + b * bs + r) * L.layers + l) * H + h) * D + c;
                            ASSERT_EQ(p.view.element(l, kk, t, h, c), p.bytes.data() + 2 * e)
                                << int(k) << " layer " << l << " token " << t << " head " << h << " channel " << c;
                        }
    }
}

TEST(Paged, RefusesABadBlockTableOrLayout) {
    const fixture_slice f(40);
    pool p(kind::split, f.kv.layout, 16, 40, 0, 0);
    p.store(view_of(f.kv));
    auto bad = p.table;
    bad[1] = std::int32_t(p.view.num_blocks);  // past the pool
    paged_kv_view v = p.view;
    v.block_table = bad;
    EXPECT_THROW((void)compress_paged(v), usage_error);
    bad[1] = -1;
    EXPECT_THROW((void)compress_paged(v), usage_error);
    v.block_table = std::span(p.table).first(2);  // 40 tokens need 3 blocks
    EXPECT_THROW((void)compress_paged(v), usage_error);
    const byte_vector skv = compress_paged(p.view);
    pool small(kind::split, f.kv.layout, 16, 20, 0, 0);
    EXPECT_THROW(decompress_into(skv, small.view), usage_error);  // 40 tokens do not fit 20
    EXPECT_NO_THROW(decompress_into(skv, small.view, 0, 20));
    // A damaged last chunk: refused before any page is written (earlier chunks are not scattered).
    compress_options o;
    o.chunk_tokens = 16;
    byte_vector three = compress_paged(p.view, o);
    const format::stream_reader reader(three);
    ASSERT_EQ(reader.chunks().size(), 3u);
    three[std::size_t(reader.chunks()[2].offset) + 40] ^= 0x20;
    pool clean(kind::split, f.kv.layout, 16, 40, 0, 0);
    EXPECT_THROW(decompress_into(three, clean.view), checksum_error);
    EXPECT_TRUE(std::all_of(clean.bytes.begin(), clean.bytes.end(), [](std::uint8_t b) { return b == 0; }));
}
