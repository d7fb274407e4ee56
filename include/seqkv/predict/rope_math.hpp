// The one deterministic RoPE implementation: inverse frequencies, cos / sin, channel pairing and
// the rotation of a pair, shared by the lossy pre-RoPE key domain (predict/rope.hpp) and the
// lossless rotation predictor (codec/lossless/detail/rope.hpp). No libm: log, exp, cos and sin
// are fixed series with a fixed operation order and every product rounded on its own
// (unfused_mul), so the encoder and decoder compute the same bits on any machine, with or
// without FMA hardware.
//
// Each codec froze a precision rule into its format before the code was shared; both are kept
// here as the `precision` parameter, because changing either would change what existing files
// decode to (tests/predict/test_rope.cpp compares both against frozen copies of the old code):
//   fp32         lossy pre-RoPE keys: angle = fp32 product position · f_i (f_i stored in the codec
//                config as fp32), cos / sin evaluated in double and rounded to fp32;
//                quadrant k = nearbyint(x · 2/π), Taylor series to r^15 / r^16 in Horner form.
//   truncated28  lossless rotation predictor (normative, docs/FORMAT.md "Codec 1"): f_i in double
//                from θ, cos / sin of δ · f_i composed from an anchor and a fine angle and
//                truncated to 28 significant bits; quadrant k = ⌊x · 2/π + ½⌋, Taylor series to
//                r^21 / r^20 in nested form.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/core/error.hpp"
#include "seqkv/core/exact.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::predict::rope_math {

/// How channels pair up for rotation (the lossless codec stores this byte).
enum class pairing : std::uint8_t {
    rotate_half = 1,  ///< Llama / NeoX: channel i with i + D/2
    interleaved = 2,  ///< GPT-J / llama.cpp NORM: channel 2i with 2i + 1
};

/// Channel of pair i's first (j = 0) or second (j = 1) element, for head_dim = 2 · half.
inline std::size_t pair_channel(pairing style, std::size_t half, std::size_t i, int j) {
    return style == pairing::rotate_half ? i + std::size_t(j) * half : 2 * i + std::size_t(j);
}

/// (x, y) = R(angle) (a, b) = (a·c − b·s, b·c + a·s). The products must be exact in double
/// (a, b of at most 24 significant bits, c, s of at most 29): then each line is one IEEE
/// rounding whether or not the compiler fuses it, and the same bits everywhere.
inline void rotate_pair(double a, double b, double c, double s, double& x, double& y) {
    x = a * c - b * s;
    y = b * c + a * s;
}

/// A codec's frozen precision rule (see the file comment).
enum class precision : std::uint8_t { fp32, truncated28 };

namespace detail {

inline double pow2(std::int64_t k) {  // 2^k for |k| <= 1000, exact
    return std::bit_cast<double>(std::uint64_t(k + 1023) << 52);
}
inline constexpr double ln2_hi = 6.93147180369123816490e-01;  // ln 2 split: hi has 32 bits
inline constexpr double ln2_lo = 1.90821492927058770002e-10;

// Cody–Waite reduction x − k·π/2 with π/2 in three parts (the first two of 33 bits: k·part is
// exact for k < 2^20); |r| <= π/4 + tiny.
inline double reduce(double x, double k) {
    constexpr double pio2_1 = 1.57079632673412561417e+00;
    constexpr double pio2_2 = 6.07710050630396597660e-11;
    constexpr double pio2_3 = 2.02226624879595063154e-21;  // π/2 − pio2_1 − pio2_2
    return ((x - unfused_mul(k, pio2_1)) - unfused_mul(k, pio2_2)) - unfused_mul(k, pio2_3);
}
// cos and sin of x = r + k·π/2 from those of r.
inline void unreduce(std::int64_t k, double c, double s, double& cos_out, double& sin_out) {
    switch (k & 3) {
        case 0: cos_out = c, sin_out = s; break;
        case 1: cos_out = -s, sin_out = c; break;
        case 2: cos_out = -c, sin_out = -s; break;
        default: cos_out = s, sin_out = -c; break;
    }
}
inline constexpr double two_over_pi = 6.36619772367581382433e-01;

// fp32 rule: Horner in r² with the Taylor coefficients (−1)^n / m!; truncation error < 1e-16.
inline double sin_horner(double r) {
    const double r2 = unfused_mul(r, r);
    double s = -1.0 / 1307674368000.0;  // -1/15!
    for (double d : {1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0, -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0})
        s = unfused_mul(s, r2) + d;
    return unfused_mul(unfused_mul(s, r2), r) + r;
}
inline double cos_horner(double r) {
    const double r2 = unfused_mul(r, r);
    double c = 1.0 / 20922789888000.0;  // 1/16!
    for (double d : {-1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0, 1.0 / 40320.0, -1.0 / 720.0, 1.0 / 24.0, -0.5})
        c = unfused_mul(c, r2) + d;
    return unfused_mul(c, r2) + 1.0;
}
// truncated28 rule: sin r = r (1 − r²/(2·3) (1 − r²/(4·5) (1 − …))), cos r = 1 − r²/(1·2) (1 − r²/(3·4) (1 − …)).
inline double sin_nested(double r) {
    const double r2 = unfused_mul(r, r);
    double sp = 1.0;
    for (int n = 21; n >= 3; n -= 2) sp = 1.0 - unfused_mul(unfused_mul(r2, 1.0 / double(n * (n - 1))), sp);
    return unfused_mul(r, sp);
}
inline double cos_nested(double r) {
    const double r2 = unfused_mul(r, r);
    double cp = 1.0;
    for (int n = 20; n >= 2; n -= 2) cp = 1.0 - unfused_mul(unfused_mul(r2, 1.0 / double(n * (n - 1))), cp);
    return cp;
}

}  // namespace detail

/// Natural log of a normal, finite x > 0.
inline double log(double x) {
    const auto bits = std::bit_cast<std::uint64_t>(x);
    std::int64_t e = std::int64_t((bits >> 52) & 0x7ff) - 1023;
    double m = std::bit_cast<double>((bits & 0xfffffffffffffULL) | (std::uint64_t{1023} << 52));  // [1, 2)
    if (m > 1.4142135623730951) m = unfused_mul(m, 0.5), ++e;
    const double s = (m - 1.0) / (m + 1.0), s2 = unfused_mul(s, s);  // |s| <= 0.172
    double sum = 0;
    for (int k = 41; k >= 1; k -= 2) sum = unfused_mul(sum, s2) + 1.0 / double(k);
    return (unfused_mul(double(e), detail::ln2_hi) + unfused_mul(double(e), detail::ln2_lo)) + unfused_mul(2.0 * s, sum);
}
/// e^x for -700 <= x <= 700.
inline double exp(double x) {
    const auto k = static_cast<std::int64_t>(x >= 0 ? unfused_mul(x, 1.4426950408889634) + 0.5 : unfused_mul(x, 1.4426950408889634) - 0.5);
    const double r = (x - unfused_mul(double(k), detail::ln2_hi)) - unfused_mul(double(k), detail::ln2_lo);  // |r| <= 0.35
    double sum = 1.0;
    for (int n = 24; n >= 1; --n) sum = unfused_mul(unfused_mul(sum, r), 1.0 / double(n)) + 1.0;
    return unfused_mul(sum, detail::pow2(k));
}

/// cos and sin of 0 <= x < 2^40 under precision P's frozen evaluation; accurate to a few ulp of
/// double for x < 2^20 · π/2, deterministic everywhere.
template <precision P>
inline void cos_sin(double x, double& cos_out, double& sin_out) {
    // Angles come from files (inverse frequencies × positions): outside the range, the reduction's
    // integer conversion would be undefined. Refuse instead.
    if (!(x >= 0 && x < 0x1p40)) throw format_error("RoPE angle out of range (inverse frequency or position too large)");
    const double y = unfused_mul(x, detail::two_over_pi);
    if constexpr (P == precision::fp32) {
        const double k = std::nearbyint(y);  // an IEEE rounding operation: exact
        const double r = detail::reduce(x, k);
        detail::unreduce(static_cast<std::int64_t>(k), detail::cos_horner(r), detail::sin_horner(r), cos_out, sin_out);
    } else {
        const auto k = static_cast<std::int64_t>(y + 0.5);
        const double r = detail::reduce(x, double(k));
        detail::unreduce(k, detail::cos_nested(r), detail::sin_nested(r), cos_out, sin_out);
    }
}

/// f_i = θ^(−2i/D) = exp(−(2i/D) · ln θ) for i < D/2, in double (θ >= 1, finite).
inline std::vector<double> inverse_frequencies(double theta, std::uint32_t head_dim) {
    std::vector<double> f(head_dim / 2);
    const double log_theta = rope_math::log(theta);
    for (std::uint32_t i = 0; i < f.size(); ++i) f[i] = rope_math::exp(-unfused_mul(log_theta, double(2 * i) / double(head_dim)));
    return f;
}

// ---- fp32 rule (lossy pre-RoPE keys) ----

/// cos / sin of the fp32 angle float(position) · inv_freq[i], rounded to fp32, for every pair i.
inline void fp32_angles(std::uint64_t position, std::span<const float> inv_freq, std::span<float> cos_out, std::span<float> sin_out) {
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
        const float angle = float(position) * inv_freq[i];
        double c, s;
        cos_sin<precision::fp32>(angle, c, s);
        cos_out[i] = float(c), sin_out[i] = float(s);
    }
}

// ---- truncated28 rule (lossless rotation predictor) ----

/// x with its significand truncated to 28 bits (sign and exponent kept).
inline double truncate28(double x) { return std::bit_cast<double>(std::bit_cast<std::uint64_t>(x) & ~((std::uint64_t{1} << 24) - 1)); }

/// Fine angles: for j < step, half cos then half sin of j · f_i (full double).
inline std::vector<double> fine_angles(std::span<const double> inv_freq, std::uint32_t step) {
    const std::size_t half = inv_freq.size();
    std::vector<double> fine(std::size_t(step) * 2 * half);
    for (std::uint32_t j = 0; j < step; ++j)
        for (std::size_t i = 0; i < half; ++i)
            cos_sin<precision::truncated28>(unfused_mul(double(j), inv_freq[i]), fine[j * 2 * half + i], fine[j * 2 * half + half + i]);
    return fine;
}

/// cos and sin (28-bit truncated) of δ · f_i, i < half, for δ in [first, first + count): row
/// δ − first holds half cos then half sin values. δ = step·a + j: cos = cA·cB − sA·sB,
/// sin = sA·cB + cA·sB with (cA, sA) of the anchor step·a and (cB, sB) = fine row j, each
/// product rounded separately (the normative values of docs/FORMAT.md).
inline std::vector<double> relative_angles(std::span<const double> inv_freq, std::span<const double> fine, std::uint64_t first,
                                           std::uint64_t count, std::uint32_t step) {
    const std::size_t half = inv_freq.size();
    std::vector<double> rows(std::size_t(count) * 2 * half);
    std::vector<double> ac(half), as(half);
    std::uint64_t anchor = ~std::uint64_t{0};
    for (std::uint64_t k = 0; k < count; ++k) {
        const std::uint64_t delta = first + k;
        if (delta / step != anchor) {
            anchor = delta / step;
            for (std::size_t i = 0; i < half; ++i) cos_sin<precision::truncated28>(unfused_mul(double(anchor * step), inv_freq[i]), ac[i], as[i]);
        }
        const double *fc = &fine[(delta % step) * 2 * half], *fs = fc + half;
        double* out = &rows[std::size_t(k) * 2 * half];
        for (std::size_t i = 0; i < half; ++i) {
            out[i] = truncate28(unfused_mul(ac[i], fc[i]) - unfused_mul(as[i], fs[i]));
            out[half + i] = truncate28(unfused_mul(as[i], fc[i]) + unfused_mul(ac[i], fs[i]));
        }
    }
    return rows;
}

}  // namespace seqkv::predict::rope_math

SEQKV_FP_STRICT_END
