// Token mode (codec/tokens/token_codec.hpp) on the committed tiny model and its PyTorch dumps:
// round trips in both modes, bits per token against the model's cross-entropy, bit-exact
// correction of any bit pattern, and desyncs / corruption raised as errors, never wrong KV.
#include <gtest/gtest.h>

#include <any>
#include <cmath>
#include <cstring>
#include <set>

#include "seqkv/codec/registry.hpp"
#include "seqkv/codec/tokens/token_codec.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/core/float_formats.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/reference/llama.hpp"

#include "model/model_test_support.hpp"

using namespace seqkv;

namespace {

using seqkv_test::data_dir;
std::shared_ptr<const model::language_model> tiny() { return seqkv_test::tiny_model(); }

struct dump {
    io::safetensors_file file;
    kv_cache_view view;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    explicit dump(const std::string& name) : file(io::safetensors_file::load(data_dir / "kv" / name)) {
        view = io::kv_view(file);
        ids = *io::token_ids_of(file, view.layout.tokens);
        nll = *io::nll_of(file, view.layout.tokens);
    }
    double cross_entropy_bits(std::size_t n) const {  // Σ −log2 p over tokens 1..n-1 (PyTorch's forward)
        double s = 0;
        for (std::size_t i = 1; i < n; ++i) s += double(nll[i]) / std::log(2.0);
        return s;
    }
};

struct encoded {
    std::vector<byte_vector> payloads;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
};

encoded encode_all(const tokens::token_codec& codec, const kv_cache_view& view, std::span<const std::int32_t> ids, std::uint64_t n,
                   std::uint64_t chunk) {
    encoded e;
    std::any carry;
    for (std::uint64_t b = 0; b < n; b += chunk) {
        const std::uint64_t end = std::min(n, b + chunk);
        chunk_input in{&view, b, end, ids.subspan(b, end - b), {}, nullptr, &carry, 0};
        e.payloads.push_back(codec.encode(in));
        e.ranges.emplace_back(b, end);
    }
    return e;
}

std::vector<chunk_buffer> decode_all(const tokens::token_codec& codec, const kv_cache_view& view, const encoded& e) {
    std::vector<chunk_buffer> out;
    std::any carry;
    for (std::size_t i = 0; i < e.payloads.size(); ++i) {
        const auto [b, end] = e.ranges[i];
        chunk_input in{nullptr, b, end, {}, {}, nullptr, &carry, 0};  // as a reader: no cache at decode
        auto buf = chunk_buffer::for_layout(view.layout, end - b);
        codec.decode(e.payloads[i], in, buf);
        out.push_back(std::move(buf));
    }
    return out;
}

std::uint64_t token_stream_bits(const encoded& e) {
    std::uint64_t bits = 0;
    for (const auto& p : e.payloads) bits += 8ull * tokens::token_stream_bytes(p);
    return bits;
}

/// A copy of the dump's first n tokens in `type` (bf16 copied, f32 widened exactly, f16 rounded),
/// so a test can plant special values; `store` owns the blocks.
kv_cache_view copy_of(const dump& d, std::uint64_t n, dtype type, std::vector<std::vector<std::uint8_t>>& store) {
    const std::size_t es = dtype_size(type);
    kv_cache_view view = d.view;
    view.layout.tokens = n;
    view.layout.type = type;
    store.reserve(2 * view.layout.layers);
    for (std::uint32_t l = 0; l < view.layout.layers; ++l)
        for (auto kind : {kv_kind::key, kv_kind::value}) {
            const auto& src = d.view.tensor(l, kind);
            std::vector<std::uint8_t> bf(std::size_t(src.heads) * n * src.head_dim * 2);
            gather_block(src, 0, n, bf);
            std::vector<std::uint8_t> out(bf.size() / 2 * es);
            for (std::size_t i = 0; i < bf.size() / 2; ++i) {
                const std::uint16_t b = std::uint16_t(bf[2 * i] | bf[2 * i + 1] << 8);
                if (type == dtype::bf16) std::memcpy(&out[2 * i], &b, 2);
                else if (type == dtype::f32) {
                    const float x = bf16_to_float(b);
                    std::memcpy(&out[4 * i], &x, 4);
                } else {
                    const std::uint16_t h = float_to_fp16(bf16_to_float(b));
                    std::memcpy(&out[2 * i], &h, 2);
                }
            }
            store.push_back(std::move(out));
            auto& t = kind == kv_kind::key ? view.keys[l] : view.values[l];
            t = {store.back().data(), type, src.heads, n, src.head_dim, kv_strides::head_major(n, src.head_dim)};
        }
    return view;
}

/// Calls f(chunk, layer, input block bytes, decoded block bytes) for every (layer, K/V) block of
/// every decoded chunk.
template <class F>
void for_each_block(const kv_cache_view& view, const encoded& e, const std::vector<chunk_buffer>& out, F&& f) {
    for (std::size_t i = 0; i < out.size(); ++i)
        for (std::uint32_t l = 0; l < view.layout.layers; ++l)
            for (auto kind : {kv_kind::key, kv_kind::value}) {
                std::vector<std::uint8_t> want(out[i].block_bytes());
                gather_block(view.tensor(l, kind), e.ranges[i].first, e.ranges[i].second, want);
                f(i, l, std::span<const std::uint8_t>(want), out[i].block(l, kind));
            }
}

/// Every decoded chunk equals the cache's tokens bit for bit.
void expect_restored(const kv_cache_view& view, const encoded& e, const std::vector<chunk_buffer>& out) {
    for_each_block(view, e, out, [&](std::size_t i, std::uint32_t l, std::span<const std::uint8_t> want, std::span<const std::uint8_t> got) {
        ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << dtype_name(view.layout.type) << " chunk " << i << " layer " << l;
    });
}

}  // namespace

TEST(TokenCodec, TokensModeCostsAtMostOnePercentOverCrossEntropyAndDecodesTheModelsKv) {
    const dump d("gpl3.safetensors");
    const std::uint64_t n = d.view.layout.tokens;
    tokens::token_codec codec(tiny(), tokens::mode::tokens, 2);
    const auto e = encode_all(codec, d.view, d.ids, n, 100);
    const auto bits = double(token_stream_bits(e));
    const double ce = d.cross_entropy_bits(n);
    // Cost: log2(vocab) bits for token 0, each chunk's last range-coder bytes, then the model's own
    // quantized tables; goal ≤ 1.01 × the cross-entropy PyTorch measured on the same tokens.
    EXPECT_LE(bits, 1.01 * ce + 10 + 8 * 2 * e.payloads.size()) << bits / double(n - 1) << " bits/token vs " << ce / double(n - 1);
    EXPECT_GT(bits, 0.97 * ce);  // a coder cannot beat the model's entropy by much: the numbers are real
    const auto out = decode_all(codec, d.view, e);
    auto s = tiny()->session(1);
    s->extend(d.ids, {});
    for (std::size_t i = 0; i < out.size(); ++i) {
        auto want = chunk_buffer::for_layout(d.view.layout, out[i].layout.tokens);
        s->kv(e.ranges[i].first, e.ranges[i].second, want);
        EXPECT_TRUE(out[i].bytes == want.bytes) << "chunk " << i;
    }
}

TEST(TokenCodec, CorrectedModeRestoresAnyBitPatternExactly) {
    const dump d("py311-textwrap.safetensors");
    const std::uint64_t n = 200;
    // A copy of the dump with special values planted in layer 0's K: NaN payloads, ±0, subnormals, ±inf.
    std::vector<std::vector<std::uint8_t>> copies;
    const kv_cache_view view = copy_of(d, n, dtype::bf16, copies);
    const std::uint16_t specials[] = {0x7FC1, 0xFF80, 0x7F80, 0x8000, 0x0000, 0x0001, 0x8003, 0x7FBF, 0xFFFF};
    for (std::size_t i = 0; i < std::size(specials); ++i) std::memcpy(&copies[0][2 * (37 * i + 5)], &specials[i], 2);
    tokens::token_codec codec(tiny(), tokens::mode::corrected, 3);
    const auto e = encode_all(codec, view, d.ids, n, 64);
    const auto out = decode_all(codec, view, e);
    expect_restored(view, e, out);
    std::size_t payload = 0;
    for (const auto& p : e.payloads) payload += p.size();
    // The correction is small next to the raw cache (most elements equal the model's bf16 value).
    EXPECT_LT(payload * 4, view.layout.total_bytes());
}

TEST(TokenCodec, DesyncAndCorruptionAreErrorsNeverWrongKv) {
    const dump d("gpl3.safetensors");
    const std::uint64_t n = 96;
    tokens::token_codec codec(tiny(), tokens::mode::tokens, 1);
    const auto e = encode_all(codec, d.view, d.ids, n, 48);
    // Another model (same weights, other RMSNorm epsilon: other bits) must not decode it: the
    // token stream runs out or the hashes of the ids / recomputed KV differ.
    auto weights = io::safetensors_file::load(data_dir / "tiny-llama" / "model.safetensors");
    auto cfg = std::dynamic_pointer_cast<const reference::llama_model>(tiny())->config();
    cfg.norm_eps *= 2;
    tokens::token_codec other(reference::llama_model::from_tensors(weights, cfg), tokens::mode::tokens, 1);
    EXPECT_THROW(decode_all(other, d.view, e), format_error);
    // Every single-byte corruption of the payload is an error (format or checksum), never a success.
    int trials = 0;
    for (std::size_t pos = 0; pos < e.payloads[1].size(); pos += 3) {
        auto bad = e;
        bad.payloads[1][pos] ^= 0x5A;
        EXPECT_THROW(decode_all(codec, d.view, bad), format_error) << "byte " << pos;
        ++trials;
    }
    EXPECT_GT(trials, 10);
    // Truncation.
    auto cut = e;
    cut.payloads[0].resize(cut.payloads[0].size() / 2);
    EXPECT_THROW(decode_all(codec, d.view, cut), format_error);
    // A keyframe after token 0 cannot be coded.
    std::any carry;
    chunk_input in{&d.view, 10, 20, std::span(d.ids).subspan(10, 10), {}, nullptr, &carry, 0};
    EXPECT_THROW(codec.encode(in), usage_error);
}

TEST(TokenCodec, CorrectedModeIsExactForF16AndF32Caches) {
    // The same dump widened to f32 (exact) and narrowed to f16, with special values planted: the
    // 32-bit path codes corrections of up to 32 bits (the model's f32 KV is far from bf16 values
    // in f32 bits), the 16-bit f16 path its own ordering.
    const dump d("gpl3.safetensors");
    const std::uint64_t n = 70;
    for (const dtype type : {dtype::f32, dtype::f16}) {
        std::vector<std::vector<std::uint8_t>> copies;
        const kv_cache_view view = copy_of(d, n, type, copies);
        if (type == dtype::f32) {
            const std::uint32_t specials[] = {0x7FC00001u, 0xFF800000u, 0x80000000u, 0x00000001u, 0x7F7FFFFFu, 0xFFFFFFFFu};
            for (std::size_t i = 0; i < std::size(specials); ++i) std::memcpy(&copies[1][4 * (41 * i + 3)], &specials[i], 4);
        } else {
            const std::uint16_t specials[] = {0x7E01, 0xFC00, 0x8000, 0x0001, 0x7BFF, 0xFFFF};
            for (std::size_t i = 0; i < std::size(specials); ++i) std::memcpy(&copies[1][2 * (41 * i + 3)], &specials[i], 2);
        }
        tokens::token_codec codec(tiny(), tokens::mode::corrected, 2);
        const auto e = encode_all(codec, view, d.ids, n, 32);
        expect_restored(view, e, decode_all(codec, view, e));
    }
}

namespace {
std::shared_ptr<const model::language_model> tiny_draft(reference::weight_format w) {
    static std::shared_ptr<const model::language_model> d8 =
        reference::llama_model::load(data_dir / "tiny-llama", dtype::bf16, reference::weight_format::int8);
    static std::shared_ptr<const model::language_model> d12 =
        reference::llama_model::load(data_dir / "tiny-llama", dtype::bf16, reference::weight_format::int12);
    return w == reference::weight_format::int8 ? d8 : d12;
}
std::size_t total_bytes(const encoded& e) {
    std::size_t s = 0;
    for (const auto& p : e.payloads) s += p.size();
    return s;
}
}  // namespace

// Draft residual: the draft's KV predicts the input, which comes back bit for bit in every dtype,
// special values included; ids cost log2 V bits each; a better draft costs fewer bytes.
TEST(TokenCodec, DraftResidualRestoresAnyBitPatternExactly) {
    const dump d("py311-textwrap.safetensors");
    const std::uint64_t n = 150;
    std::size_t bytes[2] = {0, 0};
    for (const dtype type : {dtype::bf16, dtype::f16, dtype::f32}) {
        std::vector<std::vector<std::uint8_t>> copies;
        const kv_cache_view view = copy_of(d, n, type, copies);
        const std::size_t es = dtype_size(type);
        const std::uint32_t specials[] = {0x7FC1, 0xFF80, 0x8000, 0x0001, 0x7FFF, 0xFFFF, 0x7F80};
        for (std::size_t i = 0; i < std::size(specials); ++i) {
            const std::uint32_t v = es == 4 ? specials[i] << 16 | 0x1234u : specials[i];
            std::memcpy(&copies[3][es * (53 * i + 7)], &v, es);
        }
        int which = 0;
        for (const auto w : {reference::weight_format::int8, reference::weight_format::int12}) {
            tokens::token_codec codec(tiny_draft(w), tokens::mode::residual, 2);
            const auto e = encode_all(codec, view, d.ids, n, 64);
            expect_restored(view, e, decode_all(codec, view, e));
            // ids: ⌈log2 1024⌉ = 10 bits each, uniform, plus each chunk's range-coder flush.
            EXPECT_LE(token_stream_bits(e), 10 * n + 64 * e.payloads.size());
            if (type == dtype::bf16) bytes[which++] = total_bytes(e);
        }
    }
    // bf16: both drafts far below the raw cache (measured 5.6x for int8 on this model), int12 below int8.
    const std::size_t raw = std::size_t(d.view.layout.elements_per_token() * n * 2);
    EXPECT_LT(bytes[0] * 3, raw);
    EXPECT_LT(bytes[1], bytes[0]);
}

// Bounded draft residual: every finite element within the bound plus half a step of the cache's
// dtype (the final rounding); far values escape to their exact bits;
// non-finite input is refused; the same bytes at any thread count.
TEST(TokenCodec, BoundedDraftResidualStaysWithinItsBound) {
    const dump d("gpl3.safetensors");
    const std::uint64_t n = 120;
    for (const dtype type : {dtype::bf16, dtype::f32, dtype::f16}) {
        std::vector<std::vector<std::uint8_t>> copies;
        const kv_cache_view view = copy_of(d, n, type, copies);
        const std::size_t es = dtype_size(type);
        auto plant = [&](std::size_t at, float v) {
            const std::uint32_t bits = tokens::detail::to_bits(v, type);
            std::memcpy(&copies[2][es * at], &bits, es);
        };
        if (type == dtype::f16)  // the largest values (a reconstruction past them would overflow), a subnormal, −0
            plant(11, 65504.0f), plant(12, -65504.0f), plant(13, 6.0e-8f), plant(14, -0.0f);
        else  // far from any prediction (escapes); subnormal; −0
            plant(11, 3.0e38f), plant(12, -1.0e30f), plant(13, 1.0e-40f), plant(14, -0.0f);
        // f16 with bound 2e4: q0 = 2 for 65504 overflows to inf, q0 − 1 misses by 25,504: must escape.
        for (const float bound : {0.01f, type == dtype::f16 ? 2.0e4f : 0.25f}) {
            tokens::token_codec codec(tiny_draft(reference::weight_format::int8), tokens::mode::residual_bounded, 1, bound);
            const auto e = encode_all(codec, view, d.ids, n, 50);
            tokens::token_codec codec3(tiny_draft(reference::weight_format::int8), tokens::mode::residual_bounded, 3, bound);
            EXPECT_TRUE(encode_all(codec3, view, d.ids, n, 50).payloads == e.payloads);
            const auto out = decode_all(codec, view, e);
            double worst_excess = 0;
            for_each_block(view, e, out, [&](std::size_t, std::uint32_t, std::span<const std::uint8_t> want, std::span<const std::uint8_t> got) {
                for (std::size_t j = 0; j < want.size(); j += es) {
                    std::uint32_t a = 0, b = 0;
                    std::memcpy(&a, &want[j], es), std::memcpy(&b, &got[j], es);
                    const float x = tokens::detail::value_of(a, type), y = tokens::detail::value_of(b, type);
                    // Allowed: the bound plus half the spacing of the dtype's grid at the input or
                    // the output (the reconstruction is rounded to the cache's dtype).
                    auto half_step_at = [&](std::uint32_t bits, float v) {  // to the next value away from zero
                        const float next = tokens::detail::value_of(bits + 1, type);
                        return std::isfinite(next) ? 0.5 * std::fabs(double(next) - double(v)) : 0.0;
                    };
                    const double half_step = std::max(half_step_at(a, x), half_step_at(b, y));
                    const double err = std::fabs(double(x) - double(y));
                    ASSERT_TRUE(std::isfinite(y));
                    worst_excess = std::max(worst_excess, err - (double(bound) + half_step));
                }
            });
            EXPECT_LE(worst_excess, 0.0) << dtype_name(type) << " bound " << bound;
            // The planted far values came back exactly (escapes).
            if (type == dtype::f16) continue;
            std::vector<std::uint8_t> want(out[0].block_bytes());
            gather_block(view.tensor(1, kv_kind::key), 0, 50, want);
            const auto got = out[0].block(1, kv_kind::key);
            EXPECT_TRUE(std::equal(got.begin() + std::ptrdiff_t(11 * es), got.begin() + std::ptrdiff_t(13 * es), want.begin() + std::ptrdiff_t(11 * es)));
        }
    }
    // The draft's own KV comes back bit for bit (q = 0 keeps the prediction's bits, −0.0 included).
    {
        const auto draft = tiny_draft(reference::weight_format::int8);
        auto s = draft->session(1);
        s->extend(std::span(d.ids).first(64), {});
        auto own = chunk_buffer::for_layout(draft->kv_shape(), 64);
        s->kv(0, 64, own);
        const kv_cache_view v = view_of(own);
        tokens::token_codec codec(draft, tokens::mode::residual_bounded, 1, 0.05f);
        const auto e = encode_all(codec, v, d.ids, 64, 32);
        const auto out = decode_all(codec, v, e);
        expect_restored(v, e, out);
    }
    // NaN or inf input: refused (the lossless residual keeps them).
    std::vector<std::vector<std::uint8_t>> copies;
    const kv_cache_view view = copy_of(d, 40, dtype::bf16, copies);
    const std::uint16_t nan = 0x7FC0;
    std::memcpy(&copies[0][20], &nan, 2);
    tokens::token_codec codec(tiny_draft(reference::weight_format::int8), tokens::mode::residual_bounded, 1, 0.05f);
    EXPECT_THROW(encode_all(codec, view, d.ids, 40, 40), usage_error);
    EXPECT_THROW(tokens::token_codec(tiny(), tokens::mode::residual_bounded, 1, 0.0f), usage_error);
    EXPECT_THROW(tokens::token_codec(tiny(), tokens::mode::residual, 1, 0.5f), usage_error);
}

TEST(TokenCodec, DraftResidualDesyncAndCorruptionAreErrors) {
    const dump d("gpl3.safetensors");
    const std::uint64_t n = 96;
    tokens::token_codec codec(tiny_draft(reference::weight_format::int12), tokens::mode::residual, 1);
    const auto e = encode_all(codec, d.view, d.ids, n, 48);
    // Decoded under the int8 draft (another model computing other bits): the KV hash differs.
    tokens::token_codec other(tiny_draft(reference::weight_format::int8), tokens::mode::residual, 1);
    EXPECT_THROW(decode_all(other, d.view, e), checksum_error);
    for (std::size_t pos = 0; pos < 60; pos += 2) {  // header and token stream: errors, never wrong KV
        auto bad = e;
        bad.payloads[1][pos] ^= 0x21;
        EXPECT_THROW(decode_all(codec, d.view, bad), format_error) << "byte " << pos;
    }
    auto cut = e;
    cut.payloads[1].resize(cut.payloads[1].size() - 40);
    EXPECT_THROW(decode_all(codec, d.view, cut), format_error);
}

namespace {
std::shared_ptr<const any_chunk_codec> stored_codec(const format::codec_config& c) {
    return std::make_shared<const any_chunk_codec>(make_codec(c));
}
tokens::token_codec lossless_hybrid(std::shared_ptr<const model::language_model> m, tokens::hybrid_cost cost, unsigned threads = 1) {
    return tokens::token_codec(std::move(m), tokens::mode::hybrid, threads, 0, stored_codec(lossless_config()), cost);
}
std::vector<tokens::hybrid_choice> choices_of(const encoded& e) {
    std::vector<tokens::hybrid_choice> c;
    for (const auto& p : e.payloads) c.push_back(*tokens::hybrid_choice_of(p));
    return c;
}
/// The largest |input − output| − (bound + half a bf16 step at the input or the output, i.e.
/// max(|x|, |y|) / 256) over every element of bf16 chunks: <= 0 when the bound holds everywhere.
double bf16_bound_excess(const kv_cache_view& view, const encoded& e, const std::vector<chunk_buffer>& out, float bound) {
    double worst = 0;
    for_each_block(view, e, out, [&](std::size_t, std::uint32_t, std::span<const std::uint8_t> want, std::span<const std::uint8_t> got) {
        for (std::size_t i = 0; i < want.size(); i += 2) {
            const double x = bf16_to_float(std::uint16_t(want[i] | want[i + 1] << 8));
            const double y = bf16_to_float(std::uint16_t(got[i] | got[i + 1] << 8));
            worst = std::max(worst, std::fabs(x - y) - (double(bound) + std::max(std::fabs(x), std::fabs(y)) / 256));
        }
    });
    return worst;
}
tokens::hybrid_cost cost_of(float bandwidth, float compute) {
    tokens::hybrid_cost c;
    c.bandwidth = bandwidth, c.compute = compute;
    return c;
}
}  // namespace

// Hybrid (bit-exact): every choice restores the input bit for bit; free bandwidth stores every
// chunk, a slow link with free compute codes every chunk as the draft's residual; in between the
// choice is per chunk, and — the context being the restored KV whatever a chunk chose — each
// chunk's payload is exactly the one the all-stored or all-residual run made for it. The set of
// residual chunks only grows as compute gets cheaper; threads never change the bytes.
TEST(TokenHybrid, EveryChoiceRestoresTheInputAndTheCostModelDecidesPerChunk) {
    const dump d("py311-textwrap.safetensors");
    const std::uint64_t n = 200, chunk = 40;
    const auto draft = tiny_draft(reference::weight_format::int12);
    auto run = [&](tokens::hybrid_cost cost, unsigned threads = 1) {
        const auto codec = lossless_hybrid(draft, cost, threads);
        auto e = encode_all(codec, d.view, d.ids, n, chunk);
        expect_restored(d.view, e, decode_all(codec, d.view, e));
        return e;
    };
    const auto stored = run(cost_of(INFINITY, 1e9f));
    const auto residual = run(cost_of(1e3f, INFINITY));
    for (auto c : choices_of(stored)) EXPECT_EQ(c, tokens::hybrid_choice::stored);
    for (auto c : choices_of(residual)) EXPECT_EQ(c, tokens::hybrid_choice::residual);
    EXPECT_LT(total_bytes(residual) * 2, total_bytes(stored));  // the draft predicts far better

    // Sweep the decoder's compute on a slow link: per-chunk choices, nested as compute gets cheaper.
    std::vector<bool> previous(n / chunk, false);
    bool mixed = false;
    for (double log_compute = 4; log_compute <= 12; log_compute += 0.25) {
        const auto e = run(cost_of(1e5f, float(std::pow(10.0, log_compute))));
        const auto c = choices_of(e);
        std::size_t model_chunks = 0;
        for (std::size_t i = 0; i < c.size(); ++i) {
            const bool model = c[i] != tokens::hybrid_choice::stored;
            EXPECT_TRUE(!previous[i] || model) << "chunk " << i << " went back to stored at 10^" << log_compute << " FLOP/s";
            previous[i] = model;
            model_chunks += model;
            EXPECT_TRUE(e.payloads[i] == (model ? residual : stored).payloads[i]) << "chunk " << i << " at 10^" << log_compute;
        }
        if (model_chunks > 0 && model_chunks < c.size()) {
            mixed = true;
            EXPECT_TRUE(encode_all(lossless_hybrid(draft, cost_of(1e5f, float(std::pow(10.0, log_compute))), 3), d.view, d.ids, n, chunk)
                            .payloads == e.payloads);
            // Decoded under another model: a residual chunk's recompute differs, raised, never returned.
            EXPECT_THROW(decode_all(lossless_hybrid(tiny_draft(reference::weight_format::int8), cost_of(1e5f, 1e9f)), d.view, e),
                         checksum_error);
        }
    }
    EXPECT_TRUE(mixed) << "no compute in the sweep splits the chunks";
    for (auto v : previous) EXPECT_TRUE(v);  // at 10^12 FLOP/s every chunk runs the model

    // KV the model computes the way an engine with a bf16 cache does (each chunk attends to the
    // bf16 KV of the chunks before it: what the hybrid's context holds too): the residual is zero,
    // so every chunk is ids + recompute alone.
    const auto ref = tiny();
    auto s = ref->session(1);
    auto own = chunk_buffer::for_layout(ref->kv_shape(), 80);
    for (std::uint64_t b = 0; b < 80; b += 40) {
        const auto part_ids = std::span(d.ids).subspan(b, 40);
        s->extend(part_ids, {});
        auto part = chunk_buffer::for_layout(ref->kv_shape(), 40);
        s->kv(b, b + 40, part);
        s->assign_kv(b, part_ids, part);
        for (std::uint32_t l = 0; l < own.layout.layers; ++l)
            for (auto kind : {kv_kind::key, kv_kind::value}) {
                const auto src = part.block(l, kind);
                auto dst = own.block(l, kind);
                const std::size_t row = 40 * own.layout.head_dim * 2;
                for (std::uint32_t h = 0; h < own.layout.kv_heads; ++h)
                    std::copy_n(src.begin() + std::ptrdiff_t(h * row), row, dst.begin() + std::ptrdiff_t(h * 2 * row + (b / 40) * row));
            }
    }
    const kv_cache_view v = view_of(own);
    const auto codec = lossless_hybrid(ref, cost_of(1e3f, INFINITY));
    const auto e = encode_all(codec, v, d.ids, 80, 40);
    expect_restored(v, e, decode_all(codec, v, e));
    for (std::size_t i = 0; i < e.payloads.size(); ++i) {
        EXPECT_EQ(*tokens::hybrid_choice_of(e.payloads[i]), tokens::hybrid_choice::recompute);
        EXPECT_EQ(e.payloads[i].size(), 1 + 1 + 4 + 8 + 8 + 4 + tokens::token_stream_bytes(e.payloads[i]) + 1);
    }
}

TEST(TokenHybrid, CorruptionAndBadSettingsAreErrors) {
    const dump d("gpl3.safetensors");
    const auto codec = lossless_hybrid(tiny_draft(reference::weight_format::int12), cost_of(1e3f, INFINITY));
    const auto e = encode_all(codec, d.view, d.ids, 96, 48);
    const std::size_t choice_at = 1 + 1 + 4 + 8 + 8 + 4 + tokens::token_stream_bytes(e.payloads[1]);
    for (std::size_t pos : {std::size_t(0), std::size_t(1), std::size_t(3), choice_at}) {
        auto bad = e;
        bad.payloads[1][pos] ^= 0x21;
        EXPECT_THROW(decode_all(codec, d.view, bad), format_error) << "byte " << pos;
    }
    auto cut = e;
    cut.payloads[1].resize(cut.payloads[1].size() - 40);
    EXPECT_THROW(decode_all(codec, d.view, cut), format_error);
    auto recompute = e;  // a residual chunk relabelled as recompute: bytes follow that it cannot have
    recompute.payloads[1][choice_at] = 2;
    EXPECT_THROW(decode_all(codec, d.view, recompute), format_error);
    auto stored = e;  // relabelled as stored: the residual is no lossless payload (or not this KV)
    stored.payloads[1][choice_at] = 0;
    EXPECT_THROW(decode_all(codec, d.view, stored), error);
    const auto draft = tiny_draft(reference::weight_format::int12);
    EXPECT_THROW(tokens::token_codec(draft, tokens::mode::hybrid, 1, 0), usage_error);  // no stored codec
    EXPECT_THROW(tokens::token_codec(draft, tokens::mode::residual, 1, 0, stored_codec(lossless_config())), usage_error);
    EXPECT_THROW(tokens::token_codec(draft, tokens::mode::hybrid, 1, 0, stored_codec(lossless_config()), cost_of(0, 1)), usage_error);
    EXPECT_THROW(tokens::token_codec(draft, tokens::mode::hybrid, 1, 0, stored_codec(lossless_config()), cost_of(1, NAN)), usage_error);
}

// Hybrid within a bound: stored chunks go through the error-bounded lossy codec, the others
// through the quantized residual; every element within the bound plus half a bf16 step either
// way, a mix of choices on the way, the same bytes on 1 and 3 threads.
TEST(TokenHybrid, BoundedHybridStaysWithinItsBoundWhateverEachChunkChose) {
    const dump d("gpl3.safetensors");
    const std::uint64_t n = 240, chunk = 40;
    const float bound = 0.005f;
    lossy_model_info info;
    info.head_dim = d.view.layout.head_dim;
    lossy_config lc = lossy_preset("abs:1", info);
    lc.error_bound = bound;
    const auto stored = stored_codec(lossy_codec_config(lc));
    const auto draft = tiny_draft(reference::weight_format::int8);
    std::set<tokens::hybrid_choice> seen;
    for (double log_compute = 6; log_compute <= 10; log_compute += 1) {
        const auto cost = cost_of(1e5f, float(std::pow(10.0, log_compute)));
        const tokens::token_codec codec(draft, tokens::mode::hybrid_bounded, 1, bound, stored, cost);
        const auto e = encode_all(codec, d.view, d.ids, n, chunk);
        for (auto c : choices_of(e)) seen.insert(c);
        const tokens::token_codec codec3(draft, tokens::mode::hybrid_bounded, 3, bound, stored, cost);
        EXPECT_TRUE(encode_all(codec3, d.view, d.ids, n, chunk).payloads == e.payloads);
        EXPECT_LE(bf16_bound_excess(d.view, e, decode_all(codec, d.view, e), bound), 0.0) << "10^" << log_compute << " FLOP/s";
    }
    EXPECT_TRUE(seen.count(tokens::hybrid_choice::stored) &&
                (seen.count(tokens::hybrid_choice::residual) || seen.count(tokens::hybrid_choice::recompute)));

    // The closed loop across choices: chunks stored by the lossy codec seed the context that later
    // residual chunks are predicted from (costs switched chunk by chunk on one carry, as a pattern).
    const tokens::token_codec as_stored(draft, tokens::mode::hybrid_bounded, 1, bound, stored, cost_of(INFINITY, 1));
    const tokens::token_codec as_residual(draft, tokens::mode::hybrid_bounded, 1, bound, stored, cost_of(1, INFINITY));
    for (const std::string pattern : {"SRSRRS", "SSRRRR", "RSSRSR"}) {
        encoded e;
        std::any carry;
        for (std::size_t i = 0; i < pattern.size(); ++i) {
            const std::uint64_t b = i * chunk;
            chunk_input in{&d.view, b, b + chunk, std::span(d.ids).subspan(b, chunk), {}, nullptr, &carry, 0};
            e.payloads.push_back((pattern[i] == 'S' ? as_stored : as_residual).encode(in));
            e.ranges.emplace_back(b, b + chunk);
            EXPECT_EQ(*tokens::hybrid_choice_of(e.payloads.back()) == tokens::hybrid_choice::stored, pattern[i] == 'S') << pattern << " " << i;
        }
        EXPECT_LE(bf16_bound_excess(d.view, e, decode_all(as_stored, d.view, e), bound), 0.0) << pattern;
    }
    // Only the error-bounded codec at an absolute bound <= the file's may store chunks.
    lossy_config loose = lc;
    loose.error_bound = 2 * bound;
    for (const auto& bad : {lossy_config(lossy_preset("kivi2", info)), loose}) {
        const auto c = lossy_codec_config(bad);
        EXPECT_THROW(tokens_config(tokens::mode::hybrid_bounded, *draft, bound, &c), usage_error);
    }
}
