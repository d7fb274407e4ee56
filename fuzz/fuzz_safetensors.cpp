// libFuzzer target: safetensors parsing (header JSON, offsets, dtypes), the KV view of a dump,
// its token ids / nll, and the expected-KV table reader on the same file.
#include <cstdlib>

#include "fuzz_support.hpp"
#include "seqkv/io/expected_kv_table.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace seqkv;
    std::optional<io::safetensors_file> file;
    fuzz::expect_seqkv_errors_only([&] { file.emplace(io::safetensors_file::parse(byte_vector(data, data + size))); });
    if (!file) return 0;
    fuzz::expect_seqkv_errors_only([&] {
        const kv_cache_view v = io::kv_view(*file);
        const std::uint64_t T = v.layout.tokens;
        (void)io::token_ids_of(*file, T);
        (void)io::nll_of(*file, T);
        // Touch the first and last element of every tensor the view claims (bounds of the view).
        if (v.layout.kv_heads == 0 || v.layout.head_dim == 0) std::abort();  // kv_view must refuse those
        for (std::uint32_t l = 0; l < v.layout.layers && T; ++l)
            for (const auto* t : {&v.keys[l], &v.values[l]}) {
                (void)t->at(0, 0, 0);
                (void)t->at(t->heads - 1, T - 1, t->head_dim - 1);
            }
    });
    fuzz::expect_seqkv_errors_only([&] { (void)io::parse_expected_kv_table(*file); });
    return 0;
}
