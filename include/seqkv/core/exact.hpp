// Exact arithmetic both sides of a lossy or model-driven codec share: products never contracted
// into an FMA, and the zigzag map of signed residuals. Encoder and decoder must compute identical
// bits on any machine (with or without FMA hardware, at any -ffp-contract setting).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// a*b rounded to fp32 and never fused into a following add, so `unfused_mul(a, b) + c` gives the
/// same bits with or without FMA hardware. On x86 with SSE math the product passes through an
/// empty asm statement (an opaque SSE register: the compiler cannot see a multiply to fuse, and
/// nothing goes through memory); elsewhere through a volatile store.
inline float unfused_mul(float a, float b) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE_MATH__)
    float product = a * b;
    __asm__("" : "+x"(product));
    return product;
#else
    volatile float product = a * b;
    return product;
#endif
}
/// Double-precision twin of unfused_mul.
inline double unfused_mul(double a, double b) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2_MATH__)
    double product = a * b;
    __asm__("" : "+x"(product));
    return product;
#else
    volatile double product = a * b;
    return product;
#endif
}

/// out[i] = a[i] * b, each rounded to fp32 and never fused into a later add — unfused_mul over a
/// whole array, but the loop vectorises: the products are stored, then an empty asm with a memory
/// clobber makes the compiler forget what the stored values are (a later `out[i] + c` reloads an
/// opaque fp32 value and cannot fuse). Elsewhere through unfused_mul per element. out may be a
/// itself (element i read before it is written), not a shifted overlap of it.
inline void unfused_scale(std::span<const float> a, float b, std::span<float> out) {
#if defined(__GNUC__) || defined(__clang__)
    std::size_t i = 0;
#if defined(__SSE2__)
    // Four products a step (at -O2 the compiler keeps the plain loop scalar, since out may be a).
    const __m128 scale = _mm_set1_ps(b);
    for (; i + 4 <= out.size(); i += 4) _mm_storeu_ps(out.data() + i, _mm_mul_ps(_mm_loadu_ps(a.data() + i), scale));
#endif
    for (; i < out.size(); ++i) out[i] = a[i] * b;
    __asm__ __volatile__("" : : "r"(out.data()) : "memory");
#else
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = unfused_mul(a[i], b);
#endif
}

/// True when this build fuses a*b+c inside seqkv's headers although SEQKV_FP_STRICT_BEGIN asks
/// it not to (clang at -ffp-contract=fast ignores the pragma; GCC honours it at every setting).
/// make_codec refuses to build a codec then: its files could decode to other bits elsewhere.
/// The probe's product 1 + 2^-11 + 2^-24 (fp32; 1 + 2^-26 + 2^-54 in fp64) rounds to the addend's
/// negation unfused, so the sum is 0 exactly unless the multiply-add was fused.
inline bool fp_contraction_active() {
#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
    return false;  // x87 maths keeps excess precision, fused or not: the probe cannot tell (and seqkv rounds through unfused_mul)
#else
    volatile float fx = 1.0f + 0x1p-12f, fz = -(1.0f + 0x1p-11f);
    volatile double dx = 1.0 + 0x1p-27, dz = -(1.0 + 0x1p-26);
    const float x = fx, z = fz;
    const double y = dx, w = dz;
    return x * x + z != 0.0f || y * y + w != 0.0;
#endif
}

/// Interleaves signed integers into unsigned: 0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ...
constexpr std::uint32_t zigzag(std::int32_t v) {
    return (static_cast<std::uint32_t>(v) << 1) ^ static_cast<std::uint32_t>(v >> 31);
}
constexpr std::int32_t unzigzag(std::uint32_t u) { return static_cast<std::int32_t>(u >> 1) ^ -static_cast<std::int32_t>(u & 1); }

}  // namespace seqkv

SEQKV_FP_STRICT_END
