// libFuzzer target: the token-mode decoder (docs/TOKEN_MODE.md) under the committed tiny model,
// reached past the checksums that stop almost every mutated .skv in fuzz_skv.
//
// Byte 0: mode (bit 0: tokens / corrected, or with bit 5 set: residual / residual_bounded under the
// model's int8 draft, bound 0.05; bits 5 and 6 set: hybrid / hybrid_bounded, their stored codec the
// lossless one / the error-bounded lossy one at 0.05, bit 7 picking the costs: 0 a slow link and
// free compute (the draft's residual), 1 a free link and slow compute (stored)), action (bits 1-2),
// KV dtype (bits 3-4: bf16, f16, f32);
// byte 1: the chunk's token count n (1..8); bytes 2..2+2n: its token ids (16-bit little-endian,
// mod the vocabulary);
// the rest: the fuzzer's bytes. The harness encodes a valid chunk of those ids with the real
// encoder (the model's own KV as the cache), so the payload's hashes are right, then:
//   action 0: round trip; in the corrected and residual modes the cache's bits are first XORed
//             with the fuzzer's bytes (any bit pattern: NaN payloads, -0.0, subnormals), so the
//             correction is nonzero; the decode must return the ids and the cache bit for bit; in
//             the bounded mode the cache's finite values are moved by the fuzzer's bytes (±128
//             steps of the dtype) and every element must come back within the bound + half a step;
//   action 1: the token stream is replaced by the fuzzer's bytes (length prefix recomputed): the
//             model-driven range decode runs token by token on garbage;
//   action 2: the correction stream is replaced (corrected / residual modes; in tokens mode the
//             bytes are appended and must be refused as trailing bytes; in the hybrid modes the
//             choice byte and what follows it): the correction decoder (or the stored codec's)
//             runs past both hashes on garbage;
//   action 3: the fuzzer's bytes are the whole payload (framing, version, mode, counts).
// Every decode must return or throw a seqkv::error (check_payload runs first, as in the reader).
#include <any>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>

#include "fuzz_support.hpp"
#include "seqkv/codec/registry.hpp"
#include "seqkv/codec/tokens/token_codec.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/reference/llama.hpp"

namespace {

using namespace seqkv;

const std::shared_ptr<const model::language_model>& tiny() {
    static const std::shared_ptr<const model::language_model> m =
        reference::llama_model::load(std::filesystem::path(SEQKV_FUZZ_DATA_DIR) / "tiny-llama");
    return m;
}
const std::shared_ptr<const model::language_model>& tiny_int8_draft() {
    static const std::shared_ptr<const model::language_model> m = reference::llama_model::load(
        std::filesystem::path(SEQKV_FUZZ_DATA_DIR) / "tiny-llama", dtype::bf16, reference::weight_format::int8);
    return m;
}

/// The hybrid modes' stored codecs: lossless, and the error-bounded lossy codec at 0.05.
std::shared_ptr<const any_chunk_codec> stored_codec(tokens::mode m) {
    static const auto lossless = std::make_shared<const any_chunk_codec>(make_codec(lossless_config()));
    static const auto lossy = [] {
        lossy_model_info info;
        info.head_dim = tiny()->kv_shape().head_dim;
        lossy_config c = lossy_preset("abs:0.05", info);
        return std::make_shared<const any_chunk_codec>(make_codec(lossy_codec_config(c)));
    }();
    return m == tokens::mode::hybrid ? lossless : m == tokens::mode::hybrid_bounded ? lossy : nullptr;
}

/// The decode under a fresh carry, as a reader does for the chunk at token 0.
void decode(const tokens::token_codec& codec, std::span<const std::uint8_t> payload, const kv_layout& L, chunk_buffer& out) {
    std::any carry;
    chunk_input in;
    in.begin = 0, in.end = L.tokens, in.carry = &carry;
    out = chunk_buffer::for_layout(L, L.tokens);
    codec.check_payload(payload, L);
    codec.decode(payload, in, out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) return 0;
    const bool hybrid = (data[0] & 0x60) == 0x60;
    const auto mode = tokens::mode(((data[0] & 1) | ((data[0] >> 5) & 1) << 1) + (hybrid ? 2 : 0));
    const bool corrected = mode != tokens::mode::tokens;  // a correction stream (or the hybrid's choice) follows the ids
    const bool any_bits = mode == tokens::mode::corrected || mode == tokens::mode::residual || mode == tokens::mode::hybrid;
    const bool bounded = tokens::is_bounded(mode);
    const int action = (data[0] >> 1) & 3;
    const dtype types[] = {dtype::bf16, dtype::f16, dtype::f32, dtype::bf16};
    const dtype type = types[(data[0] >> 3) & 3];
    const std::uint32_t n = 1 + data[1] % 8;
    if (size < 2 + 2 * n) return 0;
    const auto& model = tokens::codes_under_model(mode) ? tiny() : tiny_int8_draft();
    const std::uint32_t vocab = model->vocab_size();
    std::vector<std::int32_t> ids(n);  // two bytes each: every block of the vocabulary's split table
    for (std::uint32_t i = 0; i < n; ++i) ids[i] = std::int32_t(load_le16(data + 2 + 2 * i) % vocab);
    const std::span<const std::uint8_t> rest(data + 2 + 2 * n, size - 2 - 2 * n);
    tokens::hybrid_cost cost;
    if (data[0] & 0x80) cost.bandwidth = INFINITY, cost.compute = 1;
    else cost.bandwidth = 1, cost.compute = INFINITY;
    const tokens::token_codec codec(model, mode, 1, bounded ? 0.05f : 0.0f, stored_codec(mode), cost);

    // The model's KV of the ids in the chosen dtype: the cache the engine would hand over.
    kv_layout L = model->kv_shape();
    L.type = type;
    chunk_buffer cache = chunk_buffer::for_layout(L, n);
    {
        auto session = model->session();
        session->extend(ids, {});
        session->kv(0, n, cache);
    }
    const unsigned width = unsigned(dtype_size(type)) * 8;
    const std::size_t es = width / 8;
    if (action == 0 && any_bits)
        for (std::size_t i = 0; i < rest.size() && i < cache.bytes.size(); ++i) cache.bytes[i] ^= rest[i];
    if (action == 0 && bounded)  // finite values moved by up to ±128 steps of their dtype
        for (std::size_t i = 0; i < rest.size() && (i + 1) * es <= cache.bytes.size(); ++i) {
            const std::uint32_t bits = tokens::detail::load_bits(&cache.bytes[i * es], width);
            const std::uint32_t mask = width == 32 ? ~0u : (1u << width) - 1;
            const std::uint32_t moved =
                tokens::detail::unord((tokens::detail::ord(bits, width) + std::uint32_t(std::int32_t(std::int8_t(rest[i])))) & mask, width);
            if (std::isfinite(tokens::detail::value_of(moved, type))) std::memcpy(&cache.bytes[i * es], &moved, es);
        }
    const kv_cache_view view = view_of(cache);
    byte_vector payload;
    {
        std::any carry;
        chunk_input in;
        in.cache = &view, in.begin = 0, in.end = n, in.token_ids = ids, in.carry = &carry;
        payload = codec.encode(in);
    }
    // Framing (token_codec::encode): version, mode, n, ids hash, KV hash, token stream length, stream.
    constexpr std::size_t stream_len_at = 1 + 1 + 4 + 8 + 8;
    const std::uint32_t stream_len = load_le32(payload.data() + stream_len_at);
    const std::size_t correction_at = stream_len_at + 4 + stream_len;

    chunk_buffer out;
    switch (action) {
        case 0: {  // must round-trip exactly
            try {
                decode(codec, payload, cache.layout, out);
            } catch (...) {
                std::abort();
            }
            if (out.token_ids != ids) std::abort();
            if (bounded) {  // every element within bound + half a dtype step
                for (std::size_t i = 0; (i + 1) * es <= cache.bytes.size(); ++i) {
                    const std::uint32_t a = tokens::detail::load_bits(&cache.bytes[i * es], width), b = tokens::detail::load_bits(&out.bytes[i * es], width);
                    const double x = tokens::detail::value_of(a, type), y = tokens::detail::value_of(b, type);
                    if (!(std::fabs(x - y) <= double(0.05f) + std::max(tokens::detail::half_step(a, type), tokens::detail::half_step(b, type)))) std::abort();
                }
            } else if (out.bytes != cache.bytes) {
                std::abort();  // tokens: the recompute; corrected, residual: the cache
            }
            break;
        }
        case 1: {
            byte_vector p(payload.begin(), payload.begin() + std::ptrdiff_t(stream_len_at));
            p.resize(stream_len_at + 4);
            fuzz::put_le32(p.data() + stream_len_at, std::uint32_t(rest.size()));
            p.insert(p.end(), rest.begin(), rest.end());
            p.insert(p.end(), payload.begin() + std::ptrdiff_t(correction_at), payload.end());
            fuzz::expect_seqkv_errors_only([&] { decode(codec, p, cache.layout, out); });
            break;
        }
        case 2: {
            byte_vector p(payload.begin(), payload.begin() + std::ptrdiff_t(correction_at));
            p.insert(p.end(), rest.begin(), rest.end());
            bool decoded = false;
            fuzz::expect_seqkv_errors_only([&] { decode(codec, p, cache.layout, out), decoded = true; });
            if (decoded && !corrected && !rest.empty()) std::abort();  // tokens mode: trailing bytes refused
            if (decoded && out.token_ids != ids) std::abort();         // the ids' hash was intact
            break;
        }
        default:
            fuzz::expect_seqkv_errors_only([&] { decode(codec, rest, cache.layout, out); });
            break;
    }
    return 0;
}
