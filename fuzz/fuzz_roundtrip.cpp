// libFuzzer target: differential round trips on fuzzed VALID caches. The input picks a small
// geometry (layers, heads, head_dim, tokens, dtype), a codec (lossless with and without RoPE and
// token ids, every lossy preset), a chunk size, and fills the KV (and token ids) with its bytes.
//   * compress with the SIMD backend on 1 thread, the scalar backend, and SIMD on 3 threads:
//     the three files must be byte-identical (encoders agree on every backend and thread count);
//   * decode with each backend / thread count: identical KV;
//   * lossless: the decoded KV equals the input bit for bit (NaN payloads, -0.0, subnormals);
//   * lossy: a cache holding NaN/Inf must be refused with a seqkv error (documented behaviour);
//     a finite one decodes to the same KV on every decoder, and the encoder's reconstruction of
//     the cache (one chunk) equals what the decoder outputs.
#include <cmath>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/codec/lossy/presets.hpp"

namespace {

using namespace seqkv;

const char* const lossy_presets[] = {"seqkv-1bit", "seqkv-2bit", "seqkv-step:0.25", "bound:0.05", "abs:0.01", "kivi2",
                                     "kivi4",      "turbo2",     "turbo3",          "turbo4",     "int8",     "fp8"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 8) return 0;
    const dtype types[] = {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2};
    kv_layout L;
    L.layers = 1 + (data[0] & 1);
    L.kv_heads = 1 + ((data[0] >> 1) & 1);
    L.head_dim = 2u << ((data[0] >> 2) % 6);  // 2 ... 64
    L.tokens = 1 + data[1] % 48;
    L.type = types[data[2] % 5];
    const std::uint32_t codec_choice = data[3] % (3 + std::size(lossy_presets));
    const std::uint32_t chunk = 1 + data[4] % 32;
    const bool with_ids = data[5] & 1;
    const std::span<const std::uint8_t> fill(data + 8, size - 8);
    if (fill.empty()) return 0;

    // The cache: contiguous [heads, tokens, head_dim] per (layer, kind), bytes cycled from the input.
    chunk_buffer kv = chunk_buffer::for_layout(L, L.tokens);
    for (std::size_t i = 0; i < kv.bytes.size(); ++i) kv.bytes[i] = fill[i % fill.size()];
    const kv_cache_view cache = view_of(kv);
    std::vector<std::int32_t> ids;
    if (with_ids)
        for (std::uint64_t t = 0; t < L.tokens; ++t) ids.push_back(std::int32_t(fill[t % fill.size()] % 7));

    compress_options o;
    o.chunk_tokens = chunk;
    const bool lossless = codec_choice < 3;
    if (lossless) {
        lossless::plane_options lo;
        if (codec_choice >= 1) lo.rope = lossless::rope::parameters{10000.0, codec_choice == 1 ? lossless::rope::pairing::rotate_half
                                                                                                 : lossless::rope::pairing::interleaved};
        o.codec = lossless_config(lo);
    } else {
        lossy_model_info m;
        m.head_dim = L.head_dim;
        m.rope_theta = 10000.0;
        try {
            o.codec = lossy_codec_config(lossy_preset(lossy_presets[codec_choice - 3], m));
        } catch (const seqkv::error&) {
            return 0;  // a preset this geometry does not support (e.g. a head_dim it needs larger)
        }
    }
    bool finite = true;
    for (std::uint32_t l = 0; l < L.layers; ++l)
        for (const auto* t : {&cache.keys[l], &cache.values[l]})
            for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                for (std::uint64_t tk = 0; tk < L.tokens; ++tk)
                    for (std::uint32_t c = 0; c < L.head_dim; ++c) finite = finite && std::isfinite(t->at(h, tk, c));

    std::optional<byte_vector> files[3];
    const std::span<const std::int32_t> id_span(ids);
    fuzz::expect_seqkv_errors_only([&] { files[0] = compress<backend::simd>(cache, o, id_span); });
    fuzz::expect_seqkv_errors_only([&] { files[1] = compress<backend::scalar>(cache, o, id_span); });
    o.threads = 3;
    fuzz::expect_seqkv_errors_only([&] { files[2] = compress<backend::simd>(cache, o, id_span); });
    if (files[0].has_value() != files[1].has_value() || files[0].has_value() != files[2].has_value()) std::abort();
    if (!lossless && !finite) {
        if (files[0]) std::abort();  // lossy presets must refuse NaN / Inf
        return 0;
    }
    if (!files[0]) {
        if (lossless) std::abort();  // the lossless codec takes every cache
        return 0;
    }
    if (*files[0] != *files[1] || *files[0] != *files[2]) std::abort();
    const chunk_buffer a = decompress<backend::simd>(*files[0]);
    const chunk_buffer b = decompress<backend::scalar>(*files[0]);
    const chunk_buffer c = decompress<backend::simd>(*files[0], 0, std::nullopt, {}, 3);
    if (a.bytes != b.bytes || a.bytes != c.bytes) std::abort();
    if (lossless && a.bytes != kv.bytes) std::abort();
    if (!lossless) {  // the encoder's reconstruction of one whole-cache chunk equals the decoder's output
        const lossy_runtime_codec codec(lossy_config::from_bytes(o.codec.params));
        const chunk_input in{&cache, 0, L.tokens, id_span};
        chunk_buffer recon;
        byte_vector payload;
        try {
            payload = codec.encode(in, &recon);  // one chunk: a group's fp16 side value may now overflow
        } catch (const seqkv::error&) {
            return 0;
        }
        chunk_input side = in;
        side.cache = nullptr;
        chunk_buffer out = chunk_buffer::for_layout(L, L.tokens);
        codec.decode(payload, side, out);
        if (out.bytes != recon.bytes) std::abort();
    }
    return 0;
}
