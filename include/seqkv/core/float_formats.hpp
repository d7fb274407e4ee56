// Bit-exact conversions between fp32 and the narrow float formats KV caches use:
// bf16, fp16 (IEEE binary16), fp8 e4m3 (OCP "FN": no infinities, one NaN pattern per sign)
// and fp8 e5m2 (IEEE-like). Narrow -> fp32 is exact. fp32 -> narrow rounds to nearest even,
// keeps the sign of zero, produces subnormals, keeps NaN payload bits that fit (a NaN never
// becomes Inf), and maps overflow to Inf (or, for e4m3, to NaN or the largest finite value).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "seqkv/core/fp_strict.hpp"

#if defined(__CUDACC__)
#define SEQKV_HOST_DEVICE __host__ __device__
#else
#define SEQKV_HOST_DEVICE
#endif

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// std::bit_cast where the compiler has it (constexpr); memcpy otherwise (e.g. nvcc device code).
template <class To, class From>
SEQKV_HOST_DEVICE constexpr To bits_as(const From& from) noexcept {
    static_assert(sizeof(To) == sizeof(From));
#if defined(__cpp_lib_bit_cast)
    return std::bit_cast<To>(from);
#else
    To to{};
    std::memcpy(&to, &from, sizeof(To));
    return to;
#endif
}

/// What fp32 -> fp8 does with finite values beyond the format's range (and with Inf for e4m3).
enum class fp8_overflow : std::uint8_t {
    saturate,  ///< clamp to the largest finite magnitude (NVIDIA "satfinite")
    special,   ///< Inf where the format has one (e5m2), NaN otherwise (e4m3)
};

/// Compile-time description of a narrow binary float: exponent and mantissa widths.
template <int ExponentBits, int MantissaBits, bool HasInfinity>
struct narrow_float_traits {
    static constexpr int exponent_bits = ExponentBits;
    static constexpr int mantissa_bits = MantissaBits;
    static constexpr bool has_infinity = HasInfinity;  // false: e4m3fn (all-ones exponent is finite but S.1111.111)
    static constexpr int bias = (1 << (ExponentBits - 1)) - 1;
    static constexpr std::uint32_t exponent_mask = (1u << ExponentBits) - 1;
    static constexpr std::uint32_t mantissa_mask = (1u << MantissaBits) - 1;
    static constexpr std::uint32_t sign_bit = 1u << (ExponentBits + MantissaBits);
    static constexpr std::uint32_t abs_mask = sign_bit - 1;
    // Largest finite magnitude's code: all-ones exponent is reserved when the format has Inf.
    static constexpr std::uint32_t max_finite =
        HasInfinity ? ((exponent_mask - 1) << MantissaBits) | mantissa_mask : abs_mask - 1;
    static constexpr std::uint32_t infinity_code = exponent_mask << MantissaBits;  // only if HasInfinity
};

using bf16_traits = narrow_float_traits<8, 7, true>;
using fp16_traits = narrow_float_traits<5, 10, true>;
using fp8_e4m3_traits = narrow_float_traits<4, 3, false>;
using fp8_e5m2_traits = narrow_float_traits<5, 2, true>;

namespace detail {

/// x / 2^shift rounded to nearest, ties to even (x < 2^25).
SEQKV_HOST_DEVICE constexpr std::uint32_t shift_right_round_even(std::uint32_t x, int shift) {
    if (shift <= 0) return x;
    if (shift >= 32) return 0;
    std::uint32_t q = x >> shift;
    std::uint32_t rem = x & ((1u << shift) - 1);
    std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return q;
}

}  // namespace detail

/// Encodes an fp32 value into the narrow format F (bit pattern in the low bits of the result).
template <class F>
SEQKV_HOST_DEVICE constexpr std::uint32_t encode_narrow(float value, fp8_overflow overflow = fp8_overflow::special) {
    const std::uint32_t bits = bits_as<std::uint32_t>(value);
    const std::uint32_t sign = (bits >> 31) ? F::sign_bit : 0u;
    const std::uint32_t abs_bits = bits & 0x7fffffffu;
    constexpr int drop = 23 - F::mantissa_bits;  // fp32 mantissa bits that do not fit

    if (abs_bits > 0x7f800000u) {  // NaN
        if constexpr (!F::has_infinity) {
            return sign | F::abs_mask;  // the single e4m3 NaN
        } else {
            std::uint32_t payload = (abs_bits >> drop) & F::mantissa_mask;
            if (payload == 0) payload = 1u << (F::mantissa_bits - 1);  // keep it a (quiet) NaN
            return sign | F::infinity_code | payload;
        }
    }
    auto overflowed = [&]() -> std::uint32_t {
        if (overflow == fp8_overflow::saturate) return sign | F::max_finite;
        if constexpr (F::has_infinity) return sign | F::infinity_code;
        else return sign | F::abs_mask;  // NaN
    };
    if (abs_bits == 0x7f800000u) return overflowed();

    // Smallest normal of F, as fp32 bits.
    constexpr std::uint32_t min_normal_bits = std::uint32_t(127 - F::bias + 1) << 23;
    std::uint32_t code;
    if (abs_bits >= min_normal_bits) {
        // Re-bias the exponent in place; rounding may carry into the exponent, which is correct.
        const std::uint32_t rebiased = abs_bits - (std::uint32_t(127 - F::bias) << 23);
        code = detail::shift_right_round_even(rebiased, drop);
    } else {
        // Subnormal in F: count units of 2^(1 - bias - mantissa_bits).
        const std::uint32_t exponent_field = abs_bits >> 23;
        const std::uint32_t significand = exponent_field ? ((abs_bits & 0x7fffffu) | 0x800000u) : abs_bits;
        const int exponent = exponent_field ? int(exponent_field) - 127 : -126;
        const int shift = 23 + 1 - F::bias - F::mantissa_bits - exponent;
        code = detail::shift_right_round_even(significand, shift);
    }
    if (code > F::max_finite) return overflowed();
    return sign | code;
}

/// Decodes a narrow-format bit pattern of F into the exactly equal fp32 value.
template <class F>
SEQKV_HOST_DEVICE constexpr float decode_narrow(std::uint32_t code) {
    const std::uint32_t sign = (code & F::sign_bit) ? 0x80000000u : 0u;
    const std::uint32_t exponent = (code >> F::mantissa_bits) & F::exponent_mask;
    const std::uint32_t mantissa = code & F::mantissa_mask;
    constexpr int drop = 23 - F::mantissa_bits;
    if constexpr (F::has_infinity) {
        if (exponent == F::exponent_mask) return bits_as<float>(sign | 0x7f800000u | (mantissa << drop));
    } else {
        if ((code & F::abs_mask) == F::abs_mask) return bits_as<float>(sign | 0x7fc00000u);
    }
    if (exponent == 0) {
        if (mantissa == 0) return bits_as<float>(sign);
        // Normalize the subnormal: value = mantissa * 2^(1 - bias - mantissa_bits).
        int e = 1 - F::bias;
        std::uint32_t m = mantissa;
        while (!(m & (1u << F::mantissa_bits))) {
            m <<= 1;
            --e;
        }
        m &= F::mantissa_mask;
        if (e + 127 <= 0) {  // only bf16 subnormals land here: same bit layout as fp32 subnormals
            return bits_as<float>(sign | (mantissa << drop));
        }
        return bits_as<float>(sign | (std::uint32_t(e + 127) << 23) | (m << drop));
    }
    return bits_as<float>(sign | (std::uint32_t(int(exponent) - F::bias + 127) << 23) | (mantissa << drop));
}

/// fp32 -> bf16 bits, round to nearest even (NaN stays NaN).
SEQKV_HOST_DEVICE constexpr std::uint16_t float_to_bf16(float value) {
    return static_cast<std::uint16_t>(encode_narrow<bf16_traits>(value));
}
/// bf16 bits -> fp32 (exact).
SEQKV_HOST_DEVICE constexpr float bf16_to_float(std::uint16_t bits) { return bits_as<float>(std::uint32_t(bits) << 16); }

/// fp32 -> IEEE binary16 bits, round to nearest even.
SEQKV_HOST_DEVICE constexpr std::uint16_t float_to_fp16(float value) {
    return static_cast<std::uint16_t>(encode_narrow<fp16_traits>(value));
}
/// IEEE binary16 bits -> fp32 (exact).
SEQKV_HOST_DEVICE constexpr float fp16_to_float(std::uint16_t bits) { return decode_narrow<fp16_traits>(bits); }

/// fp32 -> fp8 e4m3 (OCP FN) bits; overflow saturates to ±448 by default.
SEQKV_HOST_DEVICE constexpr std::uint8_t float_to_fp8_e4m3(float value, fp8_overflow overflow = fp8_overflow::saturate) {
    return static_cast<std::uint8_t>(encode_narrow<fp8_e4m3_traits>(value, overflow));
}
/// fp8 e4m3 bits -> fp32 (exact).
SEQKV_HOST_DEVICE constexpr float fp8_e4m3_to_float(std::uint8_t bits) { return decode_narrow<fp8_e4m3_traits>(bits); }

/// fp32 -> fp8 e5m2 bits; overflow goes to ±Inf by default.
SEQKV_HOST_DEVICE constexpr std::uint8_t float_to_fp8_e5m2(float value, fp8_overflow overflow = fp8_overflow::special) {
    return static_cast<std::uint8_t>(encode_narrow<fp8_e5m2_traits>(value, overflow));
}
/// fp8 e5m2 bits -> fp32 (exact).
SEQKV_HOST_DEVICE constexpr float fp8_e5m2_to_float(std::uint8_t bits) { return decode_narrow<fp8_e5m2_traits>(bits); }

#if defined(__cpp_lib_bit_cast)
static_assert(bf16_to_float(float_to_bf16(1.0f)) == 1.0f);
static_assert(float_to_fp16(65504.0f) == 0x7bff && float_to_fp16(65520.0f) == 0x7c00);
static_assert(fp8_e4m3_to_float(0x7e) == 448.0f && float_to_fp8_e4m3(1e6f) == 0x7e);
static_assert(fp8_e5m2_to_float(0x7b) == 57344.0f);
#endif

}  // namespace seqkv

SEQKV_FP_STRICT_END
