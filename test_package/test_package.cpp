// Conan test package: a tiny synthetic bf16 KV cache through seqkv's streaming writer with the
// lossless codec, read back, checked bit for bit (whole stream and a token range). It composes
// one codec (lossless, scalar backend) instead of calling seqkv::compress, which instantiates every
// codec the registry knows (minutes of compile time header-only; see the README).
#include <seqkv/seqkv.hpp>

#include <algorithm>
#include <cstdio>
#include <vector>

int main() {
    const seqkv::kv_layout layout{2, 2, 16, 40, seqkv::dtype::bf16};  // layers, kv heads, head_dim, tokens
    std::vector<std::uint16_t> data(layout.elements_per_tensor() * 2 * layout.layers);
    for (std::size_t i = 0; i < data.size(); ++i)
        data[i] = seqkv::float_to_bf16(float(int(i * 7919 % 211) - 105) * 0.01f);
    auto tensor = [&](std::uint32_t l, int kind) {
        return reinterpret_cast<const std::uint8_t*>(data.data() + (2 * l + kind) * layout.elements_per_tensor());
    };
    seqkv::kv_cache_view cache{layout, {}, {}};
    const auto strides = seqkv::kv_strides::head_major(layout.tokens, layout.head_dim);
    for (std::uint32_t l = 0; l < layout.layers; ++l)
        for (int kind = 0; kind < 2; ++kind)
            (kind ? cache.values : cache.keys)
                .push_back({tensor(l, kind), layout.type, layout.kv_heads, layout.tokens, layout.head_dim, strides});

    seqkv::format::preamble header;
    header.layout = layout;
    header.codec = seqkv::lossless_config();
    header.chunk_tokens = 16;
    const auto codec = seqkv::any_chunk_codec::wrap(seqkv::lossless_codec<seqkv::backend::scalar>{}, "lossless (scalar)");
    seqkv::byte_vector skv;
    seqkv::format::stream_writer writer([&](std::span<const std::uint8_t> b) { skv.insert(skv.end(), b.begin(), b.end()); },
                                        header, codec);
    writer.append(cache, 0, layout.tokens, {}, {});
    writer.finish();

    const seqkv::format::stream_reader reader(skv);
    const seqkv::chunk_buffer all = reader.decode(codec);
    for (std::uint32_t l = 0; l < layout.layers; ++l)
        for (int kind = 0; kind < 2; ++kind) {
            const auto b = all.block(l, seqkv::kv_kind(kind));
            if (!std::equal(b.begin(), b.end(), tensor(l, kind))) {
                std::printf("seqkv test_package: round trip differs (layer %u, %s)\n", l, kind ? "V" : "K");
                return 1;
            }
        }
    const seqkv::chunk_buffer some = reader.decode(codec, 5, 30);  // tokens [5, 30)
    const std::size_t row = std::size_t(layout.head_dim) * 2;       // bytes of one token of one head
    if (some.layout.tokens != 25) return 1;
    for (std::uint32_t l = 0; l < layout.layers; ++l)
        for (int kind = 0; kind < 2; ++kind)
            for (std::uint32_t h = 0; h < layout.kv_heads; ++h) {
                const auto got = some.block(l, seqkv::kv_kind(kind)).subspan(h * 25 * row, 25 * row);
                if (!std::equal(got.begin(), got.end(), tensor(l, kind) + (h * layout.tokens + 5) * row)) {
                    std::printf("seqkv test_package: range decode differs\n");
                    return 1;
                }
            }
    std::printf("seqkv %s test_package: %zu bytes of bf16 KV -> %zu bytes, bit-exact\n", SEQKV_VERSION_STRING,
                data.size() * 2, skv.size());
    return 0;
}
