// Contract tests for every Quantizer: decoder reconstruction == encoder reconstruction (bit
// exact), symbols inside their alphabets, reconstructions representable in the dtype,
// determinism across runs, and each model's own error guarantee.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <cstring>
#include <random>

#include "seqkv/quant/error_bounded.hpp"
#include "seqkv/quant/lossless.hpp"
#include "seqkv/quant/scalar_cast.hpp"
#include "seqkv/quant/turbo.hpp"
#include "seqkv/quant/uniform.hpp"

using namespace seqkv;
using namespace seqkv::quant;

namespace {

struct block_data {
    block_shape shape;
    std::vector<float> x, pred;
};

// bf16 values with per-channel scales, a few outlier channels, and a prediction close to x.
block_data make_block(std::uint32_t rows, std::uint32_t cols, unsigned seed, kv_kind kind = kv_kind::key) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0, 1);
    block_data b{{rows, cols, dtype::bf16, kind}, {}, {}};
    for (std::uint32_t t = 0; t < rows; ++t)
        for (std::uint32_t c = 0; c < cols; ++c) {
            const float scale = (c % 13 == 0) ? 8.0f : 0.5f + 0.05f * float(c % 7);
            const float x = round_to_dtype(scale * n(rng), dtype::bf16);
            b.x.push_back(x);
            b.pred.push_back(round_to_dtype(x + 0.3f * scale * n(rng), dtype::bf16));
        }
    return b;
}

struct coded {
    byte_vector params, side;
    std::vector<std::uint16_t> symbols;
    std::vector<float> recon;
};

template <Quantizer Q>
coded encode_block(const Q& q, const block_data& b, int shift = 0) {
    coded out;
    std::vector<float> residual(b.x.size());
    for (std::size_t i = 0; i < b.x.size(); ++i) residual[i] = b.x[i] - b.pred[i];
    const auto p = q.plan(b.shape, b.x, residual);
    byte_writer pw(out.params), sw(out.side);
    q.write_params(p, pw);
    const std::uint32_t n = q.symbols_per_row(p), cols = b.shape.cols;
    out.symbols.resize(std::size_t(n) * b.shape.rows);
    out.recon.resize(b.x.size());
    for (std::uint32_t t = 0; t < b.shape.rows; ++t) {
        auto syms = std::span(out.symbols).subspan(std::size_t(t) * n, n);
        q.quantize_row(p, {t, shift}, std::span(b.x).subspan(t * cols, cols), std::span(b.pred).subspan(t * cols, cols), syms,
                       sw, std::span(out.recon).subspan(t * cols, cols));
        for (std::uint32_t j = 0; j < n; ++j) EXPECT_LT(syms[j], q.context_alphabet(p, q.symbol_context(p, j)));
    }
    for (std::uint32_t j = 0; j < n; ++j) EXPECT_LT(q.symbol_context(p, j), q.context_count(p));
    return out;
}

template <Quantizer Q>
std::vector<float> decode_block(const Q& q, const block_data& b, const coded& c, int shift = 0) {
    byte_reader pr(c.params), sr(c.side);
    const auto p = q.read_params(b.shape, pr);
    EXPECT_TRUE(pr.at_end());
    const std::uint32_t n = q.symbols_per_row(p), cols = b.shape.cols;
    std::vector<float> recon(b.x.size());
    for (std::uint32_t t = 0; t < b.shape.rows; ++t)
        q.dequantize_row(p, {t, shift}, std::span(b.pred).subspan(t * cols, cols),
                         std::span<const std::uint16_t>(c.symbols).subspan(std::size_t(t) * n, n), sr,
                         std::span(recon).subspan(t * cols, cols));
    EXPECT_TRUE(sr.at_end());
    return recon;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <Quantizer Q>
std::vector<float> check_contract(const Q& q, const block_data& b, int shift = 0) {
    const coded first = encode_block(q, b, shift), second = encode_block(q, b, shift);
    EXPECT_EQ(first.params, second.params);
    EXPECT_EQ(first.side, second.side);
    EXPECT_EQ(first.symbols, second.symbols);
    EXPECT_TRUE(same_bits(first.recon, second.recon)) << "quantizer not deterministic";
    EXPECT_TRUE(same_bits(first.recon, decode_block(q, b, first, shift))) << "decoder differs from encoder";
    for (float v : first.recon) {
        if (!std::isnan(v)) {
            EXPECT_EQ(v, round_to_dtype(v, b.shape.output_type));
        }
    }
    return first.recon;
}

double relative_mse(const std::vector<float>& x, const std::vector<float>& y) {
    double e = 0, s = 0;
    for (std::size_t i = 0; i < x.size(); ++i) e += double(x[i] - y[i]) * (x[i] - y[i]), s += double(x[i]) * x[i];
    return e / s;
}

}  // namespace

TEST(Quantizers, LosslessIsBitExact) {
    for (dtype t : {dtype::bf16, dtype::f16, dtype::f32}) {
        auto b = make_block(17, 64, 1);
        b.shape.output_type = t;
        for (auto& v : b.x) v = round_to_dtype(v, t);
        EXPECT_TRUE(same_bits(check_contract(lossless{}, b), b.x));
    }
}

TEST(Quantizers, UniformStepErrorWithinHalfStep) {
    const auto b = make_block(33, 64, 2);
    for (bool per_channel : {false, true})
        for (int shift : {0, 2, -1}) {
            const uniform_step q(0.25f, per_channel);
            const auto recon = check_contract(q, b, shift);
            std::vector<float> residual(b.x.size());
            for (std::size_t i = 0; i < b.x.size(); ++i) residual[i] = b.x[i] - b.pred[i];
            const auto p = q.plan(b.shape, b.x, residual);
            for (std::size_t i = 0; i < b.x.size(); ++i) {
                const float step = q.step(p, std::uint32_t(i % 64), {0, shift});
                EXPECT_LE(std::fabs(recon[i] - b.x[i]), 0.5f * step + std::max(std::fabs(b.x[i]), std::fabs(recon[i])) * 0x1p-8f);
            }
        }
}

TEST(Quantizers, UniformStepEscapesHugeResiduals) {
    auto b = make_block(4, 64, 3);
    b.pred[5] = -30000.0f;  // residual of ~30000 steps: escaped, still exact-ish
    check_contract(uniform_step(0.01f), b);
}

TEST(Quantizers, KiviGroupedErrorWithinHalfScale) {
    for (auto kind : {kv_kind::key, kv_kind::value})
        for (unsigned bits : {2u, 4u}) {
            const auto b = make_block(70, 64, 4, kind);
            const uniform_grouped q(bits, 32);
            const auto recon = check_contract(q, b);
            // Error per element: half a level of its group (+ fp16 scale rounding and bf16 output rounding).
            double worst = 0;
            for (std::size_t i = 0; i < b.x.size(); ++i) worst = std::max(worst, double(std::fabs(recon[i] - b.x[i])));
            EXPECT_LT(worst, bits == 4 ? 2.5 : 12.0);
            EXPECT_LT(relative_mse(b.x, recon), bits == 4 ? 0.01 : 0.15);
        }
}

TEST(Quantizers, Int8AndFp8) {
    const auto b = make_block(20, 64, 5);
    EXPECT_LT(relative_mse(b.x, check_contract(int8_absmax{}, b)), 1e-3);
    EXPECT_LT(relative_mse(b.x, check_contract(fp8_cast{}, b)), 2e-3);
}

TEST(Quantizers, LloydMaxCodebooks) {
    for (unsigned bits = 1; bits <= 4; ++bits) {
        const lloyd_max_codebook book(bits);
        for (std::uint32_t i = 0; i + 1 < book.size(); ++i) EXPECT_LT(book.level(i), book.level(i + 1));
        for (std::uint32_t i = 0; i < book.size(); ++i) EXPECT_EQ(book.nearest(book.level(i)), i);
        EXPECT_EQ(book.level(0), -book.level(book.size() - 1));
    }
    EXPECT_THROW(lloyd_max_codebook(5), usage_error);
}

TEST(Quantizers, LloydMaxNearestIsTheThresholdScan) {
    // nearest() counts the thresholds below y; nearest_row() does it four lanes at a time: both must
    // give the index a scan up the midpoints 0.5 (level i + level i+1) stops at, for random, tiny,
    // huge, non-finite values and the thresholds themselves (and their neighbours).
    std::mt19937 rng(17);
    std::normal_distribution<float> n(0, 1.5f);
    for (unsigned bits = 1; bits <= 4; ++bits) {
        const lloyd_max_codebook book(bits);
        const auto scan = [&](float y) {
            std::uint32_t i = 0;
            while (i + 1 < book.size() && y > 0.5f * (book.level(i) + book.level(i + 1))) ++i;
            return i;
        };
        std::vector<float> ys = {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                 std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(), 1e30f, -1e30f};
        for (std::uint32_t i = 0; i + 1 < book.size(); ++i) {
            EXPECT_LT(i == 0 ? -1e30f : book.threshold(i - 1), book.threshold(i));
            const float t = book.threshold(i);
            ys.insert(ys.end(), {t, std::nextafter(t, 10.0f), std::nextafter(t, -10.0f)});
        }
        for (int k = 0; k < 4000; ++k) ys.push_back(n(rng));
        for (const float y : ys) ASSERT_EQ(book.nearest(y), scan(y)) << "bits " << bits << " y " << y;
        for (const double scale : {1.0, 0.37, 3.0e-3}) {
            std::vector<std::uint16_t> out(ys.size() - 3);  // not a multiple of 4: the scalar tail runs too
            book.nearest_row(std::span<const float>(ys).first(out.size()), scale, out);
            for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], scan(float(double(ys[i]) * scale))) << "bits " << bits << " i " << i;
        }
    }
}

#if defined(__SSE2__)
TEST(Quantizers, FourLaneBf16RoundingGivesTheScalarBits) {
    // Every high half-word with low halves around the rounding ties (NaN payloads, infinities,
    // subnormals, ±0 and the largest finite values included), four lanes at a time.
    std::vector<std::uint32_t> patterns;
    for (std::uint32_t hi = 0; hi < 0x10000u; ++hi)
        for (std::uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) patterns.push_back(hi << 16 | lo);
    for (std::size_t i = 0; i + 4 <= patterns.size(); i += 4) {
        float in[4], out[4];
        std::memcpy(in, patterns.data() + i, sizeof in);
        _mm_storeu_ps(out, round_to_bf16_x4(_mm_loadu_ps(in)));
        for (int l = 0; l < 4; ++l)
            ASSERT_EQ(std::bit_cast<std::uint32_t>(out[l]), std::bit_cast<std::uint32_t>(round_to_bf16(in[l]))) << std::hex << patterns[i + l];
    }
}
#endif

TEST(Quantizers, HadamardRotationIsInvertible) {
    const random_hadamard r(64, 42);
    std::vector<float> v(64), w;
    for (int i = 0; i < 64; ++i) v[i] = float(i % 7) - 3.0f;
    w = v;
    r.forward(w);
    r.inverse(w);
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(w[i], v[i], 1e-5);
}

TEST(Quantizers, TurboRatesAndDistortion) {
    std::mt19937 rng(6);
    std::normal_distribution<float> n(0, 1);
    block_data b{{64, 64, dtype::f32, kv_kind::value}, {}, {}};
    for (int i = 0; i < 64 * 64; ++i) b.x.push_back(n(rng)), b.pred.push_back(0.0f);
    double previous = 1;
    for (unsigned bits = 1; bits <= 4; ++bits) {
        const double mse = relative_mse(b.x, check_contract(turbo(bits), b));
        EXPECT_LT(mse, previous);
        const double limit[] = {0.40, 0.14, 0.045, 0.015};
        EXPECT_LT(mse, limit[bits - 1]) << bits;
        previous = mse;
    }
    // Fractional rate by outlier split sits between its neighbours; QJL variant keeps the contract.
    const double half = relative_mse(b.x, check_contract(turbo(2, 0.5f), b));
    EXPECT_LT(half, relative_mse(b.x, check_contract(turbo(2), b)));
    check_contract(turbo(3, 0.25f, true), b);
    // Non-power-of-two head_dim pads the rotation.
    check_contract(turbo(3), make_block(9, 48, 7));
    check_contract(turbo(2, 0.5f), make_block(9, 80, 8));
}

TEST(Quantizers, ErrorBoundHeldOnEveryElement) {
    for (bool relative : {false, true})
        for (float bound : {1e-1f, 1e-2f, 1e-3f}) {
            auto b = make_block(40, 64, 9);
            b.x[3] = round_to_dtype(3e38f, dtype::bf16);             // huge: escaped
            b.x[7] = std::numeric_limits<float>::infinity();          // non-finite: escaped
            b.x[11] = round_to_dtype(0x1p-130f, dtype::bf16);         // subnormal
            b.pred[13] = std::numeric_limits<float>::quiet_NaN();  // a broken prediction
            const error_bounded q(bound, relative);
            const auto recon = check_contract(q, b);
            std::vector<float> residual(b.x.size());
            const auto p = q.plan(b.shape, b.x, residual);
            for (std::size_t i = 0; i < b.x.size(); ++i) {
                if (std::isinf(b.x[i])) {
                    EXPECT_EQ(recon[i], b.x[i]);
                    continue;
                }
                EXPECT_LE(std::fabs(double(recon[i]) - double(b.x[i])), double(p.bound)) << i;
            }
        }
}

TEST(QuantHelpers, FastBf16RoundingMatchesCore) {
    std::mt19937 rng(11);
    for (int i = 0; i < 1000000; ++i) {
        const std::uint32_t u = i < 16 ? std::uint32_t(i) * 0x11111111u : rng();
        const float v = std::bit_cast<float>(u);
        const float a = quant::round_to_bf16(v), b = bf16_to_float(float_to_bf16(v));
        ASSERT_EQ(std::bit_cast<std::uint32_t>(a), std::bit_cast<std::uint32_t>(b)) << std::hex << u;
    }
}

// The SSE2 butterflies of walsh_hadamard (stages of half >= 4) give the scalar loop's bits, for
// every size 1..1024 and values of mixed magnitude (where a reordered sum would round differently).
TEST(QuantHelpers, HadamardStagesGiveTheScalarBits) {
    std::mt19937 rng(5);
    std::normal_distribution<float> n(0, 1);
    for (std::uint32_t size = 1; size <= 1024; size *= 2) {
        std::vector<float> v(size), reference;
        for (auto& x : v) x = n(rng) * std::ldexp(1.0f, int(rng() % 40) - 20);
        reference = v;
        for (std::size_t half = 1; half < size; half <<= 1)  // the textbook loop
            for (std::size_t i = 0; i < size; i += 2 * half)
                for (std::size_t j = i; j < i + half; ++j) {
                    const float a = reference[j], b = reference[j + half];
                    reference[j] = a + b, reference[j + half] = a - b;
                }
        quant::walsh_hadamard(v);
        for (std::uint32_t i = 0; i < size; ++i)
            ASSERT_EQ(std::bit_cast<std::uint32_t>(v[i]), std::bit_cast<std::uint32_t>(reference[i])) << size << " " << i;
    }
}

// round_clamped is nearbyint(clamp(r, 0, top)) in the default rounding mode (ties to even).
TEST(QuantHelpers, RoundClampedIsNearbyint) {
    std::mt19937 rng(9);
    for (float top : {1.0f, 3.0f, 15.0f, 255.0f}) {
        for (int i = 0; i < 200000; ++i) {
            const float r = i < 64 ? float(i) * 0.25f - 4.0f : std::uniform_real_distribution<float>(-2 * top, 2 * top)(rng);
            const float expected = std::clamp(std::nearbyint(r), 0.0f, top);
            ASSERT_EQ(quant::round_clamped(r, top), expected) << r << " " << top;
        }
        for (float r : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), 1e30f, -1e30f})
            EXPECT_EQ(quant::round_clamped(r, top), std::clamp(std::nearbyint(r), 0.0f, top));
    }
}
