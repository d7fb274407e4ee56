// A vLLM-style paged cache (per layer [2, num_blocks, 16, kv_heads, head_dim], bf16) on real
// SmolLM2-135M KV: each 16-token block compressed on its own as an engine evicting block by block
// would, against the whole sequence compressed from its pages; then every block restored into
// other physical pages of a second pool and checked against the original.
// ctest example_paged_blocks: exits nonzero when a restored page differs.
#include <seqkv/io/kv_safetensors.hpp>
#include <seqkv/io/safetensors.hpp>
#include <seqkv/paged.hpp>
#include <seqkv/preset.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>

int main() {
    try {
        const auto file = seqkv::io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "smollm2-gpl3.safetensors");
        const seqkv::kv_cache_view cache = seqkv::io::kv_view(file);
        const auto ids = seqkv::io::token_ids_of(file, cache.layout.tokens).value();
        const auto& L = cache.layout;
        const std::uint32_t block = 16;
        const std::uint64_t blocks = (L.tokens + block - 1) / block, pool_blocks = 2 * blocks;
        const std::size_t es = seqkv::dtype_size(L.type), row = std::size_t(L.kv_heads) * L.head_dim * es;
        const std::size_t layer_bytes = 2 * pool_blocks * block * row;

        // Two engine pools; the sequence lives in the odd physical blocks of the first.
        std::vector<std::uint8_t> pool_a(layer_bytes * L.layers), pool_b(layer_bytes * L.layers);
        std::vector<std::uint8_t*> layers_a, layers_b;
        for (std::uint32_t l = 0; l < L.layers; ++l) layers_a.push_back(pool_a.data() + l * layer_bytes), layers_b.push_back(pool_b.data() + l * layer_bytes);
        std::vector<std::int32_t> table_a(blocks), table_b(blocks);
        for (std::uint64_t b = 0; b < blocks; ++b) table_a[b] = std::int32_t(2 * b + 1), table_b[b] = std::int32_t(pool_blocks - 1 - b);
        auto pages = [&](std::vector<std::uint8_t*>& layers, std::span<const std::int32_t> table, std::uint64_t tokens) {
            return seqkv::paged_kv_view::vllm_split(layers, pool_blocks, block, L.kv_heads, L.head_dim, L.type, table, tokens);
        };
        const seqkv::paged_kv_view seq_a = pages(layers_a, table_a, L.tokens);
        for (std::uint32_t l = 0; l < L.layers; ++l)  // the engine's prefill wrote the pages (here: from the dump)
            for (auto kind : {seqkv::kv_kind::key, seqkv::kv_kind::value})
                for (std::uint64_t t = 0; t < L.tokens; ++t)
                    for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                        std::memcpy(seq_a.element(l, kind, t, h, 0), cache.tensor(l, kind).element(h, t, 0), std::size_t(L.head_dim) * es);

        const auto options = seqkv::preset("lossless", seqkv::model_params_from(file.metadata(), L));
        const seqkv::byte_vector whole = seqkv::compress_paged(seq_a, options, ids);
        std::vector<seqkv::byte_vector> evicted;  // block b's tokens alone, read from its page
        std::size_t block_bytes = 0;
        for (std::uint64_t b = 0; b < blocks; ++b) {
            const std::uint64_t n = std::min<std::uint64_t>(block, L.tokens - b * block);
            const auto one = pages(layers_a, std::span(table_a).subspan(b, 1), n);
            evicted.push_back(seqkv::compress_paged(one, options, std::span(ids).subspan(b * block, n)));
            block_bytes += evicted.back().size();
        }
        const double raw = double(L.total_bytes());
        std::printf("%llu tokens in %llu blocks of %u, %.0f bytes of bf16 KV\n", (unsigned long long)L.tokens, (unsigned long long)blocks, block, raw);
        std::printf("  whole sequence from its pages  %8zu bytes  %.3fx\n", whole.size(), raw / double(whole.size()));
        std::printf("  block by block (%3llu files)     %8zu bytes  %.3fx  (each block without its context)\n",
                    (unsigned long long)blocks, block_bytes, raw / double(block_bytes));

        // Restore every evicted block into the second pool's pages (another block table).
        for (std::uint64_t b = 0; b < blocks; ++b) {
            const std::uint64_t n = std::min<std::uint64_t>(block, L.tokens - b * block);
            seqkv::decompress_into(evicted[b], pages(layers_b, std::span(table_b).subspan(b, 1), n));
        }
        const seqkv::paged_kv_view seq_b = pages(layers_b, table_b, L.tokens);
        bool same = true;
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (auto kind : {seqkv::kv_kind::key, seqkv::kv_kind::value})
                for (std::uint64_t t = 0; t < L.tokens; ++t)
                    same = same && std::memcmp(seq_b.element(l, kind, t, 0, 0), seq_a.element(l, kind, t, 0, 0), row) == 0;
        std::printf("  restored into other pages: %s\n", same ? "bit-exact" : "DIFFERENT");
        const bool again = seqkv::compress_paged(seq_b, options, ids) == whole;
        std::printf("  the restored pages compress to the same bytes: %s\n", again ? "yes" : "NO");
        return same && again ? 0 : 1;
    } catch (const seqkv::error& e) {
        std::printf("seqkv error: %s\n", e.what());
        return 1;
    }
}
