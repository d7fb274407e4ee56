// Exhaustive and oracle-checked tests of the bf16 / fp16 / fp8 <-> fp32 conversions.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "seqkv/core/float_formats.hpp"

namespace {

using namespace seqkv;

// Independent reference decode via ldexp (no bit tricks shared with the library).
template <class F>
double reference_value(std::uint32_t code) {
    const bool negative = code & F::sign_bit;
    const std::uint32_t e = (code >> F::mantissa_bits) & F::exponent_mask;
    const std::uint32_t m = code & F::mantissa_mask;
    double v = e == 0 ? std::ldexp(double(m), 1 - F::bias - F::mantissa_bits)
                      : std::ldexp(double(m + (1u << F::mantissa_bits)), int(e) - F::bias - F::mantissa_bits);
    return negative ? -v : v;
}

template <class F>
bool reference_is_nan(std::uint32_t code) {
    const std::uint32_t abs = code & F::abs_mask;
    if constexpr (F::has_infinity) return (abs >> F::mantissa_bits) == F::exponent_mask && (abs & F::mantissa_mask);
    else return abs == F::abs_mask;
}

template <class F>
bool reference_is_inf(std::uint32_t code) {
    if constexpr (F::has_infinity) return (code & F::abs_mask) == F::infinity_code;
    else return false;
}

template <class F>
void check_every_pattern_decodes_and_round_trips() {
    const std::uint32_t count = 1u << (1 + F::exponent_bits + F::mantissa_bits);
    for (std::uint32_t code = 0; code < count; ++code) {
        const float f = decode_narrow<F>(code);
        if (reference_is_nan<F>(code)) {
            ASSERT_TRUE(std::isnan(f)) << code;
            ASSERT_EQ(std::signbit(f), bool(code & F::sign_bit)) << code;
        } else if (reference_is_inf<F>(code)) {
            ASSERT_TRUE(std::isinf(f)) << code;
            ASSERT_EQ(std::signbit(f), bool(code & F::sign_bit)) << code;
        } else {
            ASSERT_EQ(double(f), reference_value<F>(code)) << code;
            ASSERT_EQ(std::signbit(f), bool(code & F::sign_bit)) << code;  // -0 stays -0
        }
        // narrow -> fp32 -> narrow is the identity on every bit pattern, NaN payloads included.
        ASSERT_EQ(encode_narrow<F>(f, fp8_overflow::special), code) << code;
    }
}

// Oracle rounding: nearest finite value by magnitude, ties to the even code; beyond the largest
// finite value the virtual next code max_finite + 1 stands for overflow.
template <class F>
std::uint32_t reference_encode(float x, fp8_overflow overflow) {
    const std::uint32_t sign = std::signbit(x) ? F::sign_bit : 0;
    const double a = std::fabs(double(x));
    auto overflowed = [&] {
        if (overflow == fp8_overflow::saturate) return sign | F::max_finite;
        return sign | (F::has_infinity ? F::infinity_code : F::abs_mask);
    };
    if (std::isinf(x)) return overflowed();
    std::uint32_t lo = 0, hi = F::max_finite;  // largest code with value <= a
    if (a >= reference_value<F>(F::max_finite)) {
        lo = F::max_finite;
    } else {
        while (lo < hi) {
            std::uint32_t mid = (lo + hi + 1) / 2;
            if (reference_value<F>(mid) <= a) lo = mid;
            else hi = mid - 1;
        }
    }
    const double below = reference_value<F>(lo);
    const double above = lo == F::max_finite ? below + (below - reference_value<F>(lo - 1)) : reference_value<F>(lo + 1);
    std::uint32_t code = lo;
    if (a - below > above - a || (a - below == above - a && (lo & 1))) code = lo + 1;
    if (a == below) code = lo;
    if (code > F::max_finite) return overflowed();
    return sign | code;
}

template <class F>
void check_rounding_against_oracle(fp8_overflow overflow) {
    std::vector<float> inputs;
    // A stride over the whole fp32 space, all narrow values and the midpoints between them.
    for (std::uint64_t b = 0; b < (1ull << 32); b += 4093) inputs.push_back(std::bit_cast<float>(std::uint32_t(b)));
    for (std::uint32_t c = 0; c < F::max_finite; ++c) {
        const double v = reference_value<F>(c), w = reference_value<F>(c + 1);
        const float mid = float((v + w) / 2);
        for (float f : {float(v), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
            inputs.push_back(f);
            inputs.push_back(-f);
        }
    }
    std::mt19937 rng(1234);
    for (int i = 0; i < 200000; ++i) inputs.push_back(std::bit_cast<float>(std::uint32_t(rng())));
    for (float x : inputs) {
        const std::uint32_t got = encode_narrow<F>(x, overflow);
        if (std::isnan(x)) {
            ASSERT_TRUE(reference_is_nan<F>(got)) << std::bit_cast<std::uint32_t>(x);
            ASSERT_EQ(bool(got & F::sign_bit), std::signbit(x));
            continue;
        }
        ASSERT_EQ(got, reference_encode<F>(x, overflow)) << "input bits " << std::bit_cast<std::uint32_t>(x);
    }
}

TEST(FloatFormats, Bf16EveryPattern) { check_every_pattern_decodes_and_round_trips<bf16_traits>(); }
TEST(FloatFormats, Fp16EveryPattern) { check_every_pattern_decodes_and_round_trips<fp16_traits>(); }
TEST(FloatFormats, Fp8E4m3EveryPattern) { check_every_pattern_decodes_and_round_trips<fp8_e4m3_traits>(); }
TEST(FloatFormats, Fp8E5m2EveryPattern) { check_every_pattern_decodes_and_round_trips<fp8_e5m2_traits>(); }

TEST(FloatFormats, Bf16RoundingMatchesOracle) { check_rounding_against_oracle<bf16_traits>(fp8_overflow::special); }
TEST(FloatFormats, Fp16RoundingMatchesOracle) { check_rounding_against_oracle<fp16_traits>(fp8_overflow::special); }
TEST(FloatFormats, Fp8E4m3RoundingMatchesOracle) {
    check_rounding_against_oracle<fp8_e4m3_traits>(fp8_overflow::special);
    check_rounding_against_oracle<fp8_e4m3_traits>(fp8_overflow::saturate);
}
TEST(FloatFormats, Fp8E5m2RoundingMatchesOracle) {
    check_rounding_against_oracle<fp8_e5m2_traits>(fp8_overflow::special);
    check_rounding_against_oracle<fp8_e5m2_traits>(fp8_overflow::saturate);
}

#if defined(__FLT16_MAX__)
TEST(FloatFormats, Fp16MatchesCompilerFloat16) {
    // The compiler's own _Float16 conversion is an independent RNE implementation.
    for (std::uint64_t b = 0; b < (1ull << 32); b += 65537) {
        const float x = std::bit_cast<float>(std::uint32_t(b));
        if (std::isnan(x)) continue;
        const _Float16 h = static_cast<_Float16>(x);
        ASSERT_EQ(float_to_fp16(x), std::bit_cast<std::uint16_t>(h)) << b;
    }
}
#endif

TEST(FloatFormats, SpecialValues) {
    EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
    EXPECT_EQ(float_to_fp16(-0.0f), 0x8000);
    EXPECT_EQ(float_to_fp8_e4m3(-0.0f), 0x80);
    // A signalling NaN whose payload lies only in the low bits must stay NaN.
    EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::bit_cast<float>(0x7f800001u)))));
    EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(std::bit_cast<float>(0xff800001u)))));
    // NaN payload bits that fit are kept.
    EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x7fa50000u)), 0x7fa5);
    EXPECT_EQ(float_to_fp8_e4m3(INFINITY, fp8_overflow::special), 0x7f);
    EXPECT_EQ(float_to_fp8_e4m3(-INFINITY), 0xfe);
    EXPECT_EQ(float_to_fp8_e5m2(1e9f), 0x7c);
    EXPECT_EQ(fp8_e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
    EXPECT_EQ(bf16_to_float(0x0001), std::bit_cast<float>(0x00010000u));
}

}  // namespace
