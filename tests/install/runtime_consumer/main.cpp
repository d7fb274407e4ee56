// A downstream file that includes the public API and calls compress + decompress, built against
// the installed seqkv::runtime (the codecs compiled once): it must compile none of the codecs.
#include <seqkv/seqkv.hpp>

#include <cstdio>
#include <vector>

int main() {
    const seqkv::kv_layout layout{2, 2, 16, 40, seqkv::dtype::bf16};
    std::vector<std::uint16_t> data(layout.elements_per_tensor() * 2 * layout.layers);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = seqkv::float_to_bf16(float(int(i * 7919 % 211) - 105) * 0.01f);
    seqkv::kv_cache_view cache{layout, {}, {}};
    const auto strides = seqkv::kv_strides::head_major(layout.tokens, layout.head_dim);
    for (std::uint32_t l = 0; l < layout.layers; ++l)
        for (int kind = 0; kind < 2; ++kind) {
            const auto* p = reinterpret_cast<const std::uint8_t*>(data.data() + (2 * l + kind) * layout.elements_per_tensor());
            (kind ? cache.values : cache.keys).push_back({p, layout.type, layout.kv_heads, layout.tokens, layout.head_dim, strides});
        }
    // Lossless: bit-exact round trip.
    seqkv::compress_options options;
    options.chunk_tokens = 16;
    const seqkv::byte_vector skv = seqkv::compress(cache, options);
    const seqkv::chunk_buffer back = seqkv::decompress(skv);
    for (std::uint32_t l = 0; l < layout.layers; ++l)
        for (int kind = 0; kind < 2; ++kind) {
            const auto b = back.block(l, seqkv::kv_kind(kind));
            const auto* want = reinterpret_cast<const std::uint8_t*>(data.data() + (2 * l + kind) * layout.elements_per_tensor());
            if (!std::equal(b.begin(), b.end(), want)) {
                std::printf("lossless round trip differs\n");
                return 1;
            }
        }
    // Lossy: decodes to the right shape.
    options.codec = seqkv::lossy_codec_config(seqkv::lossy_preset("kivi4"));
    const seqkv::byte_vector lossy = seqkv::compress(cache, options);
    const seqkv::chunk_buffer some = seqkv::decompress(lossy, 3, 20);
    if (some.layout.tokens != 17) return 1;
    std::printf("seqkv %s: %zu -> %zu bytes lossless, %zu lossy\n", SEQKV_VERSION_STRING, data.size() * 2, skv.size(), lossy.size());
    return 0;
}
