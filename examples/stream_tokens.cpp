// Example: an engine appends each generated token's K/V for all layers to a seqkv stream, then
// a reader decodes only the last 64 tokens. Uses the bundled fixture (or a file given as argv[1]).
#include <seqkv/io/kv_safetensors.hpp>
#include <seqkv/seqkv.hpp>

#include <cstdio>
#include <filesystem>

int main(int argc, char** argv) {
    try {
        const std::filesystem::path path =
            argc > 1 ? std::filesystem::path(argv[1]) : std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "py311-textwrap.safetensors";
        auto file = seqkv::io::safetensors_file::load(path);
        const seqkv::kv_cache_view cache = seqkv::io::kv_view(file);
        const auto& L = cache.layout;

        seqkv::format::preamble header;
        header.layout = L;
        header.codec = seqkv::lossless_config();
        header.chunk_tokens = 128;
        seqkv::byte_vector skv;  // a file or socket in a real engine
        seqkv::format::stream_writer writer([&](std::span<const std::uint8_t> b) { skv.insert(skv.end(), b.begin(), b.end()); },
                                            header, seqkv::make_codec(header.codec));
        const std::size_t row = std::size_t(L.head_dim) * seqkv::dtype_size(L.type);
        std::vector<seqkv::byte_vector> k(L.layers), v(L.layers);
        for (std::uint64_t t = 0; t < L.tokens; ++t) {  // "generation": one token at a time
            std::vector<std::span<const std::uint8_t>> ks, vs;
            for (std::uint32_t l = 0; l < L.layers; ++l) {
                k[l].clear();
                v[l].clear();
                for (std::uint32_t h = 0; h < L.kv_heads; ++h) {
                    k[l].insert(k[l].end(), cache.keys[l].element(h, t, 0), cache.keys[l].element(h, t, 0) + row);
                    v[l].insert(v[l].end(), cache.values[l].element(h, t, 0), cache.values[l].element(h, t, 0) + row);
                }
                ks.emplace_back(k[l]);
                vs.emplace_back(v[l]);
            }
            writer.append_token(ks, vs);
        }
        writer.finish();

        const std::uint64_t begin = L.tokens > 64 ? L.tokens - 64 : 0;
        const auto tail = seqkv::decompress(skv, begin, L.tokens);
        const bool exact = std::equal(tail.view(0, seqkv::kv_kind::key).element(0, 0, 0),
                                      tail.view(0, seqkv::kv_kind::key).element(0, 0, 0) + row * (L.tokens - begin),
                                      cache.keys[0].element(0, begin, 0));
        std::printf("%llu tokens streamed into %zu bytes (KV %llu bytes); last %llu tokens decoded, layer 0 head 0 keys %s\n",
                    (unsigned long long)L.tokens, skv.size(), (unsigned long long)L.total_bytes(),
                    (unsigned long long)(L.tokens - begin), exact ? "bit-exact" : "DIFFER");
        return exact ? 0 : 1;
    } catch (const seqkv::error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
