// Deterministic float math for model-driven coding: exp and SiLU from IEEE basic operations only
// (no libm, no FMA contraction: the seqkv target compiles with -ffp-contract=off), branch-free so
// compilers vectorize them, and the same bits on every x86-64 machine with or without
// AVX2 / AVX-512. Accuracy: exp within 2 ulp of the correctly rounded value on [-87, 88]
// (tests/model/test_det_math.cpp); outside that range the argument is clamped (exp(-87) ≈ 1.6e-38
// is the smallest result, exp(88) ≈ 1.65e38 the largest), and NaN maps to exp(-87).
#pragma once

#include <bit>
#include <cstdint>

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::model {

/// e^x in fp32, deterministic (see the file comment).
inline float exp_f32(float x) {
    x = !(x >= -87.0f) ? -87.0f : x;  // also maps NaN
    x = x > 88.0f ? 88.0f : x;
    // k = nearest integer to x / ln 2 (adding and subtracting 1.5 · 2^23 rounds to nearest even).
    const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    // r = x − k · ln 2 with ln 2 split in a 9-bit head (k · head is exact for |k| < 2^15).
    const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
    // e^r on |r| <= 0.35: minimax polynomial of degree 7 in Horner form.
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = (p * (r * r) + r) + 1.0f;
    const auto e = static_cast<std::int32_t>(k);  // in [-126, 127]
    return p * std::bit_cast<float>(static_cast<std::uint32_t>(e + 127) << 23);
}

/// SiLU x · σ(x) = x / (1 + e^−x), as PyTorch computes it, with exp_f32.
inline float silu_f32(float x) { return x / (1.0f + exp_f32(-x)); }

/// True when this translation unit's compiler fuses a·b + c into one FMA (it must not for the
/// model's bits to be portable: build with -ffp-contract=off, as the seqkv CMake target does).
inline bool contracts_multiply_add() {
    volatile float a = 1.0f + 0x1p-12f, c = -(1.0f + 0x1p-11f);
    const float x = a, z = c;
    return x * x + z != 0.0f;  // exact square 1 + 2^-11 + 2^-24 rounds to 1 + 2^-11 (sum 0); fused: 2^-24
}

}  // namespace seqkv::model

SEQKV_FP_STRICT_END
