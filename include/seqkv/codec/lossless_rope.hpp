// RoPE relative-rotation prediction for the lossless codec (predictor 5, docs/FORMAT.md "Codec 1:
// lossless"). A repeated token's key at token t is predicted from its same-id reference row at
// ref(t) rotated by the relative angle (t - ref(t)) * theta^(-2i/D) of each channel pair i; only
// the relative offset matters, so no absolute position is needed.
//
// Determinism (encoder and decoder must produce the same prediction bits on every machine, with
// or without FMA contraction, flush-to-zero or libm differences):
//   - element bits <-> double by integer operations only (zero/subnormal inputs read as 0,
//     non-finite inputs make the pair's prediction 0; results below the type's smallest normal
//     become 0, above its largest finite saturate);
//   - theta^(-2i/D), cos and sin by our own log / exp / Cody-Waite + Taylor polynomials in double,
//     every product through exact_mul (volatile: never contracted into an FMA);
//   - cos and sin truncated to 28 significant bits, so a * cos and b * sin (a, b <= 24 significant
//     bits) are exact in double and a * cos - b * sin is one IEEE rounding whichever way the
//     compiler evaluates it.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"

namespace seqkv::lossless::rope {

/// How channels pair up for rotation.
enum class pairing : std::uint8_t {
    rotate_half = 1,  ///< Llama / NeoX: channel i with i + D/2
    interleaved = 2,  ///< GPT-J: channel 2i with 2i + 1
};

/// RoPE parameters of the model that produced the keys (recorded in the codec params).
struct parameters {
    double theta = 10000.0;  ///< base; finite, 1 <= theta <= 2^60
    pairing style = pairing::rotate_half;
    friend bool operator==(const parameters&, const parameters&) = default;
};

inline bool valid(const parameters& p) {
    return p.theta >= 1.0 && p.theta <= 1152921504606846976.0 && (p.style == pairing::rotate_half || p.style == pairing::interleaved);
}

namespace detail {

inline double exact_mul(double a, double b) {
    volatile double p = a * b;  // a separate rounded product: no FMA contraction across it
    return p;
}
inline double pow2(std::int64_t k) {  // 2^k for |k| <= 1000, exact
    return std::bit_cast<double>(std::uint64_t(k + 1023) << 52);
}
inline constexpr double ln2_hi = 6.93147180369123816490e-01;  // ln 2 split: hi has 32 bits
inline constexpr double ln2_lo = 1.90821492927058770002e-10;

/// Natural log of a normal, finite x > 0.
inline double log(double x) {
    const auto bits = std::bit_cast<std::uint64_t>(x);
    std::int64_t e = std::int64_t((bits >> 52) & 0x7ff) - 1023;
    double m = std::bit_cast<double>((bits & 0xfffffffffffffULL) | (std::uint64_t{1023} << 52));  // [1, 2)
    if (m > 1.4142135623730951) m = exact_mul(m, 0.5), ++e;
    const double s = (m - 1.0) / (m + 1.0), s2 = exact_mul(s, s);  // |s| <= 0.172
    double sum = 0;
    for (int k = 41; k >= 1; k -= 2) sum = exact_mul(sum, s2) + 1.0 / double(k);
    return (exact_mul(double(e), ln2_hi) + exact_mul(double(e), ln2_lo)) + exact_mul(2.0 * s, sum);
}
/// e^x for -700 <= x <= 700.
inline double exp(double x) {
    const auto k = static_cast<std::int64_t>(x >= 0 ? exact_mul(x, 1.4426950408889634) + 0.5 : exact_mul(x, 1.4426950408889634) - 0.5);
    const double r = (x - exact_mul(double(k), ln2_hi)) - exact_mul(double(k), ln2_lo);  // |r| <= 0.35
    double sum = 1.0;
    for (int n = 24; n >= 1; --n) sum = exact_mul(exact_mul(sum, r), 1.0 / double(n)) + 1.0;
    return exact_mul(sum, pow2(k));
}
/// cos and sin of 0 <= x < 2^40 (accurate for x < 2^20 * pi/2; deterministic everywhere).
inline void cos_sin(double x, double& c, double& s) {
    constexpr double two_over_pi = 6.36619772367581382433e-01;
    constexpr double pio2_1 = 1.57079632673412561417e+00;  // 33 bits
    constexpr double pio2_2 = 6.07710050630396597660e-11;  // next 33 bits
    constexpr double pio2_3 = 2.02226624879595063154e-21;  // rest
    const auto k = static_cast<std::int64_t>(exact_mul(x, two_over_pi) + 0.5);
    const double kd = double(k);
    const double r = ((x - exact_mul(kd, pio2_1)) - exact_mul(kd, pio2_2)) - exact_mul(kd, pio2_3);  // |r| <= pi/4 + tiny
    const double r2 = exact_mul(r, r);
    // sin r = r (1 - r2/(2*3) (1 - r2/(4*5) (1 - ...))), cos r = 1 - r2/(1*2) (1 - r2/(3*4) (1 - ...))
    double sp = 1.0, cp = 1.0;
    for (int n = 21; n >= 3; n -= 2) sp = 1.0 - exact_mul(exact_mul(r2, 1.0 / double(n * (n - 1))), sp);
    sp = exact_mul(r, sp);
    for (int n = 20; n >= 2; n -= 2) cp = 1.0 - exact_mul(exact_mul(r2, 1.0 / double(n * (n - 1))), cp);
    switch (k & 3) {
        case 0: c = cp, s = sp; break;
        case 1: c = -sp, s = cp; break;
        case 2: c = -cp, s = -sp; break;
        default: c = sp, s = -cp; break;
    }
}
/// x with its significand truncated to 28 bits (sign and exponent kept).
inline double truncate28(double x) { return std::bit_cast<double>(std::bit_cast<std::uint64_t>(x) & ~((std::uint64_t{1} << 24) - 1)); }

}  // namespace detail

/// Bit layout of a KV float type for integer-only conversions.
struct float_format {
    unsigned width = 16, mantissa = 7, exponent = 8;
    int bias = 127;
    std::uint32_t max_finite = 0x7f7f;  // magnitude bits of the largest finite value
    bool e4m3 = false;                  // no infinities; magnitude 0x7f is NaN

    static float_format of(dtype t) {
        switch (t) {
            case dtype::bf16: return {16, 7, 8, 127, 0x7f7f, false};
            case dtype::f16: return {16, 10, 5, 15, 0x7bff, false};
            case dtype::f32: return {32, 23, 8, 127, 0x7f7fffff, false};
            case dtype::f8_e4m3: return {8, 3, 4, 7, 0x7e, true};
            case dtype::f8_e5m2: return {8, 2, 5, 15, 0x7b, false};
            default: throw usage_error("lossless rope: not a KV float dtype");
        }
    }
    /// Value of bits u as a double; zero and subnormals read as 0; false if u is Inf or NaN.
    bool to_double(std::uint32_t u, double& v) const {
        const std::uint32_t e = (u >> mantissa) & ((1u << exponent) - 1), m = u & ((1u << mantissa) - 1);
        const std::uint64_t sign = std::uint64_t((u >> (width - 1)) & 1) << 63;
        const std::uint32_t mag = u & ((1u << (width - 1)) - 1);
        if (e4m3 ? mag == 0x7f : e == (1u << exponent) - 1) return false;
        if (e == 0) return v = 0.0, true;
        v = std::bit_cast<double>(sign | (std::uint64_t(std::int64_t(e) - bias + 1023) << 52) | (std::uint64_t(m) << (52 - mantissa)));
        return true;
    }
    /// Bits of finite v rounded to nearest-even; below the smallest normal -> 0, above max -> max finite.
    std::uint32_t from_double(double v) const {
        const auto d = std::bit_cast<std::uint64_t>(v);
        const std::uint32_t sign = std::uint32_t(d >> 63) << (width - 1);
        const std::int64_t E = std::int64_t((d >> 52) & 0x7ff) - 1023;
        if (((d >> 52) & 0x7ff) == 0 || E + bias < 1 - 1) return 0;  // zero / far below range (checked again after rounding)
        const unsigned shift = 52 - mantissa;
        const std::uint64_t M = d & 0xfffffffffffffULL, half = std::uint64_t{1} << (shift - 1);
        std::uint64_t q = M >> shift;
        const std::uint64_t rem = M & ((std::uint64_t{1} << shift) - 1);
        std::int64_t e = E + bias;
        if (rem > half || (rem == half && (q & 1))) ++q;
        if (q == (std::uint64_t{1} << mantissa)) q = 0, ++e;
        if (e < 1) return 0;
        const std::uint64_t mag = (std::uint64_t(e) << mantissa) | q;
        return sign | std::uint32_t(mag > max_finite ? max_finite : mag);
    }
};

/// Per-token rotation tables of one chunk: for every token t with a reference, cos and sin of
/// (t - ref(t)) * theta^(-2i/D), i < D/2, truncated to 28 bits.
class rotation_table {
public:
    rotation_table(const parameters& p, std::uint32_t head_dim, std::span<const std::uint64_t> ref, std::uint64_t no_reference) : half_(head_dim / 2) {
        require_usage(valid(p) && head_dim % 2 == 0, "lossless rope: invalid parameters or odd head_dim");
        std::vector<double> inv_freq(half_);
        const double log_theta = detail::log(p.theta);
        for (std::uint32_t i = 0; i < half_; ++i) inv_freq[i] = detail::exp(-detail::exact_mul(log_theta, double(2 * i) / double(head_dim)));
        // cos/sin of delta * f = complex product of (delta - delta % step) * f and (delta % step) * f:
        // cos_sin only for the step fine angles and the coarse anchors that occur.
        std::uint64_t most = 0;
        for (std::size_t t = 0; t < ref.size(); ++t)
            if (ref[t] != no_reference) most = std::max<std::uint64_t>(most, t - ref[t]);
        const std::size_t anchors = std::size_t(most / step) + 1;
        std::vector<double> fine_c(step * half_), fine_s(step * half_), coarse_c(anchors * half_), coarse_s(anchors * half_);
        std::vector<std::uint8_t> used(anchors, 0);
        for (std::size_t t = 0; t < ref.size(); ++t)
            if (ref[t] != no_reference) used[(t - ref[t]) / step] = 1;
        for (std::uint32_t j = 0; j < step; ++j)
            for (std::uint32_t i = 0; i < half_; ++i) detail::cos_sin(detail::exact_mul(double(j), inv_freq[i]), fine_c[j * half_ + i], fine_s[j * half_ + i]);
        for (std::size_t a = 0; a < anchors; ++a)
            if (used[a])
                for (std::uint32_t i = 0; i < half_; ++i)
                    detail::cos_sin(detail::exact_mul(double(a * step), inv_freq[i]), coarse_c[a * half_ + i], coarse_s[a * half_ + i]);
        cos_.assign(ref.size() * half_, 0.0);
        sin_.assign(ref.size() * half_, 0.0);
        for (std::size_t t = 0; t < ref.size(); ++t) {
            if (ref[t] == no_reference) continue;
            const std::uint64_t delta = t - ref[t];
            const double *ac = &coarse_c[(delta / step) * half_], *as = &coarse_s[(delta / step) * half_];
            const double *fc = &fine_c[(delta % step) * half_], *fs = &fine_s[(delta % step) * half_];
            for (std::uint32_t i = 0; i < half_; ++i) {
                const double c = detail::exact_mul(ac[i], fc[i]) - detail::exact_mul(as[i], fs[i]);
                const double s = detail::exact_mul(as[i], fc[i]) + detail::exact_mul(ac[i], fs[i]);
                cos_[t * half_ + i] = detail::truncate28(c);
                sin_[t * half_ + i] = detail::truncate28(s);
            }
        }
    }
    static constexpr std::uint32_t step = 32;  ///< fine-angle table size (normative, docs/FORMAT.md)
    const double* cos(std::size_t t) const { return cos_.data() + t * half_; }
    const double* sin(std::size_t t) const { return sin_.data() + t * half_; }

private:
    std::uint32_t half_;
    std::vector<double> cos_, sin_;
};

/// Channel index of pair i's first (j = 0) or second (j = 1) element.
inline std::size_t pair_channel(pairing style, std::size_t half, std::size_t i, int j) {
    return style == pairing::rotate_half ? i + std::size_t(j) * half : 2 * i + std::size_t(j);
}

/// Prediction bits of one row (D elements, element bits widened to u32) from its reference row.
template <class U>
inline void predict_row(const U* reference, std::size_t D, pairing style, const double* cos, const double* sin, const float_format& f,
                        U* prediction) {
    const std::size_t half = D / 2;
    for (std::size_t i = 0; i < half; ++i) {
        const std::size_t c0 = pair_channel(style, half, i, 0), c1 = pair_channel(style, half, i, 1);
        double a, b;
        if (!f.to_double(reference[c0], a) || !f.to_double(reference[c1], b)) {
            prediction[c0] = prediction[c1] = 0;
            continue;
        }
        // Products are exact (<= 24 + 28 significant bits): each line is one rounding.
        const double x = a * cos[i] - b * sin[i], y = b * cos[i] + a * sin[i];
        prediction[c0] = static_cast<U>(f.from_double(x));
        prediction[c1] = static_cast<U>(f.from_double(y));
    }
}

/// Order-preserving map of sign-magnitude bits to unsigned (w bits).
template <class U>
inline U monotonic(U u) {
    constexpr U sign = static_cast<U>(U(1) << (8 * sizeof(U) - 1));
    return (u & sign) ? static_cast<U>(~u) : static_cast<U>(u | sign);
}
/// Zigzag of the w-bit difference monotonic(u) - monotonic(prediction) (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...).
template <class U>
inline U residual(U u, U prediction) {
    using S = std::make_signed_t<U>;
    const U d = static_cast<U>(monotonic(u) - monotonic(prediction));
    const S s = static_cast<S>(d);
    return static_cast<U>(s >= 0 ? U(U(d) << 1) : U(U(~d) << 1 | 1));
}
/// Inverse of residual().
template <class U>
inline U unresidual(U z, U prediction) {
    const U d = (z & 1) ? static_cast<U>(~(z >> 1)) : static_cast<U>(z >> 1);
    const U mono = static_cast<U>(monotonic(prediction) + d);
    constexpr U sign = static_cast<U>(U(1) << (8 * sizeof(U) - 1));
    return (mono & sign) ? static_cast<U>(mono & ~sign) : static_cast<U>(~mono);
}

}  // namespace seqkv::lossless::rope
