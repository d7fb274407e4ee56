// RoPE relative-rotation prediction for the lossless codec (predictor 5, docs/FORMAT.md "Codec 1:
// lossless"). A repeated token's key at token t is predicted from its same-id reference row at
// ref(t) rotated by the relative angle (t - ref(t)) * theta^(-2i/D) of each channel pair i; only
// the relative offset matters, so no absolute position is needed. Internal; `parameters`,
// `pairing` and `valid` are public through codec/lossless/planes.hpp.
//
// Determinism (encoder and decoder must produce the same prediction bits on every machine, with
// or without FMA contraction, flush-to-zero or libm differences):
//   - element bits <-> double by integer operations only (zero/subnormal inputs read as 0,
//     non-finite inputs make the pair's prediction 0; results below the type's smallest normal
//     become 0, above its largest finite saturate);
//   - theta^(-2i/D), cos and sin are predict::rope_math's truncated28 rule (libm-free, cos and sin
//     truncated to 28 significant bits), so a * cos and b * sin (a, b <= 24 significant bits) are
//     exact in double and rope_math::rotate_pair is one IEEE rounding per line whichever way the
//     compiler evaluates it.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <type_traits>
#include <vector>

#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/predict/rope_math.hpp"

#include "seqkv/core/cpu.hpp"
#include "seqkv/core/fp_strict.hpp"
#define SEQKV_ROPE_AVX2_KERNEL SEQKV_X86_AVX2_KERNELS

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossless::rope {

/// How channels pair up for rotation.
using pairing = predict::rope_math::pairing;
using predict::rope_math::pair_channel;

/// RoPE parameters of the model that produced the keys (recorded in the codec params).
struct parameters {
    double theta = 10000.0;  ///< base; finite, 1 <= theta <= 2^60
    pairing style = pairing::rotate_half;
    friend bool operator==(const parameters&, const parameters&) = default;
};

inline bool valid(const parameters& p) {
    return p.theta >= 1.0 && p.theta <= 1152921504606846976.0 && (p.style == pairing::rotate_half || p.style == pairing::interleaved);
}

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

namespace detail {

/// Process-wide cache of rope_math::relative_angles segments per (theta, head_dim): the tables depend on nothing
/// else, are immutable once built and are shared by every codec, chunk and thread. Segments are
/// built outside the lock (a race builds identical bits twice); past a memory budget new segments
/// are still returned but not kept.
class rotation_cache {
public:
    static constexpr std::uint32_t step = 32;             ///< fine-angle table size (normative)
    static constexpr std::uint64_t segment_deltas = 256;  ///< deltas per cached segment
    static constexpr std::size_t budget_bytes = std::size_t{64} << 20;

    static rotation_cache& instance() {
        static rotation_cache cache;
        return cache;
    }
    using segment = std::shared_ptr<const std::vector<double>>;

    /// Rows for deltas [index * segment_deltas, (index + 1) * segment_deltas) of (theta, head_dim).
    segment get(double theta, std::uint32_t head_dim, std::uint64_t index) {
        const key k{std::bit_cast<std::uint64_t>(theta), head_dim};
        std::shared_ptr<const entry> e;
        {
            std::lock_guard lock(mutex_);
            auto it = entries_.find(k);
            if (it != entries_.end()) {
                e = it->second.base;
                if (auto s = it->second.segments.find(index); s != it->second.segments.end()) return s->second;
            }
        }
        if (!e) e = make_entry(theta, head_dim);
        segment s = std::make_shared<const std::vector<double>>(
            predict::rope_math::relative_angles(e->inv_freq, e->fine, index * segment_deltas, segment_deltas, step));
        std::lock_guard lock(mutex_);
        auto& slot = entries_[k];
        if (!slot.base) slot.base = e, bytes_ += (e->inv_freq.size() + e->fine.size()) * sizeof(double);
        if (auto it = slot.segments.find(index); it != slot.segments.end()) return it->second;
        if (bytes_ + s->size() * sizeof(double) <= budget_bytes) {
            bytes_ += s->size() * sizeof(double);
            slot.segments.emplace(index, s);
        }
        return s;
    }

private:
    struct entry {
        std::vector<double> inv_freq;  // theta^(-2i/D)
        std::vector<double> fine;      // per j < step: cos, then sin of j * f_i
    };
    struct key {
        std::uint64_t theta_bits;
        std::uint32_t head_dim;
        bool operator<(const key& o) const { return theta_bits != o.theta_bits ? theta_bits < o.theta_bits : head_dim < o.head_dim; }
    };
    struct slot_type {
        std::shared_ptr<const entry> base;
        std::map<std::uint64_t, segment> segments;
    };
    static std::shared_ptr<const entry> make_entry(double theta, std::uint32_t head_dim) {
        auto e = std::make_shared<entry>();
        e->inv_freq = predict::rope_math::inverse_frequencies(theta, head_dim);
        e->fine = predict::rope_math::fine_angles(e->inv_freq, step);
        return e;
    }
    std::mutex mutex_;
    std::map<key, slot_type> entries_;
    std::size_t bytes_ = 0;
};

}  // namespace detail

/// Per-token rotation tables of one chunk: for every token t with a reference, cos and sin of
/// (t - ref(t)) * theta^(-2i/D), i < D/2, truncated to 28 bits (rows shared from rotation_cache).
class rotation_table {
public:
    rotation_table(const parameters& p, std::uint32_t head_dim, std::span<const std::uint64_t> ref, std::uint64_t no_reference)
        : half_(head_dim / 2), rows_(ref.size(), nullptr) {
        require_usage(valid(p) && head_dim % 2 == 0, "lossless rope: invalid parameters or odd head_dim");
        constexpr auto per = detail::rotation_cache::segment_deltas;
        for (std::size_t t = 0; t < ref.size(); ++t) {
            if (ref[t] == no_reference) continue;
            const std::uint64_t delta = t - ref[t], index = delta / per;
            if (index >= segments_.size()) segments_.resize(std::size_t(index) + 1);
            if (!segments_[index]) segments_[index] = detail::rotation_cache::instance().get(p.theta, head_dim, index);
            rows_[t] = segments_[index]->data() + std::size_t(delta % per) * 2 * half_;
        }
    }
    static constexpr std::uint32_t step = detail::rotation_cache::step;  ///< fine-angle table size (normative, docs/FORMAT.md)
    /// cos values of token t (which has a reference); its sin values follow at cos(t) + D/2.
    const double* cos(std::size_t t) const { return rows_[t]; }
    const double* sin(std::size_t t) const { return rows_[t] + half_; }

private:
    std::uint32_t half_;
    std::vector<const double*> rows_;
    std::vector<detail::rotation_cache::segment> segments_;
};

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
        double x, y;
        predict::rope_math::rotate_pair(a, b, cos[i], sin[i], x, y);  // exact products (<= 24 + 28 bits): one rounding each
        prediction[c0] = static_cast<U>(f.from_double(x));
        prediction[c1] = static_cast<U>(f.from_double(y));
    }
}

/// Compile-time bit layout of KV float type T (the same numbers as float_format::of(T)).
template <dtype T>
struct format_of {
    static constexpr unsigned width = T == dtype::f32 ? 32 : (T == dtype::bf16 || T == dtype::f16) ? 16 : 8;
    static constexpr unsigned mantissa = T == dtype::bf16 ? 7 : T == dtype::f16 ? 10 : T == dtype::f32 ? 23 : T == dtype::f8_e4m3 ? 3 : 2;
    static constexpr unsigned exponent = width - 1 - mantissa;
    static constexpr int bias = (1 << (exponent - 1)) - 1;
    static constexpr bool e4m3 = T == dtype::f8_e4m3;
    static constexpr std::uint64_t max_finite = e4m3 ? 0x7e : ((std::uint64_t{1} << (width - 1)) - 1) - (std::uint64_t{1} << mantissa);
};

/// Branch-free float_format::to_double for type T: the value's double bits (0 for zero and
/// subnormals and for non-finite input), and finite = all ones unless u is Inf / NaN.
template <dtype T>
inline double to_double_fast(std::uint32_t u, std::uint64_t& finite) {
    using F = format_of<T>;
    constexpr std::uint32_t emask = (1u << F::exponent) - 1, mmask = (1u << F::mantissa) - 1;
    const std::uint32_t e = (u >> F::mantissa) & emask;
    const bool non_finite = F::e4m3 ? (u & 0x7fu) == 0x7fu : e == emask;
    const std::uint64_t bits = (std::uint64_t((u >> (F::width - 1)) & 1) << 63) | (std::uint64_t(e + std::uint32_t(1023 - F::bias)) << 52) |
                               (std::uint64_t(u & mmask) << (52 - F::mantissa));
    finite = std::uint64_t(0) - std::uint64_t(!non_finite);
    return std::bit_cast<double>(bits & (std::uint64_t(0) - std::uint64_t(e != 0 && !non_finite)));
}
/// Branch-free float_format::from_double for type T (finite v): round to nearest even on the
/// magnitude bits (a mantissa carry runs into the exponent), rebias, flush below the smallest
/// normal to +0, saturate above the largest finite.
template <dtype T>
inline std::uint32_t from_double_fast(double v) {
    using F = format_of<T>;
    constexpr unsigned shift = 52 - F::mantissa;
    const auto d = std::bit_cast<std::uint64_t>(v);
    const std::uint64_t mag = d & 0x7fffffffffffffffULL;
    const std::uint64_t rounded = (mag + ((std::uint64_t{1} << (shift - 1)) - 1) + ((mag >> shift) & 1)) >> shift;
    const std::int64_t t = std::int64_t(rounded) - (std::int64_t(1023 - F::bias) << F::mantissa);
    const std::int64_t clamped = t > std::int64_t(F::max_finite) ? std::int64_t(F::max_finite) : t;
    const std::uint64_t keep = std::uint64_t(0) - std::uint64_t(t >= (std::int64_t{1} << F::mantissa));
    return std::uint32_t((std::uint64_t(clamped) | ((d >> 63) << (F::width - 1))) & keep);
}

/// Pairs [first, D/2) of predict_row for type T and pairing S with the same bits, branch-free
/// (cos_sin: D/2 cos then D/2 sin).
template <dtype T, pairing S, class U>
inline void predict_pairs_fast(const U* reference, std::size_t D, const double* cos_sin, U* prediction, std::size_t first) {
    const std::size_t half = D / 2;
    const double *cs = cos_sin, *sn = cos_sin + half;
    for (std::size_t i = first; i < half; ++i) {
        const std::size_t c0 = S == pairing::rotate_half ? i : 2 * i, c1 = S == pairing::rotate_half ? i + half : 2 * i + 1;
        std::uint64_t fa, fb;
        const double a = to_double_fast<T>(reference[c0], fa), b = to_double_fast<T>(reference[c1], fb);
        double x, y;
        predict::rope_math::rotate_pair(a, b, cs[i], sn[i], x, y);  // exact products: one rounding each
        const auto keep = static_cast<std::uint32_t>(fa & fb);
        prediction[c0] = static_cast<U>(from_double_fast<T>(x) & keep);
        prediction[c1] = static_cast<U>(from_double_fast<T>(y) & keep);
    }
}

/// predict_row for type T and pairing S with the same bits, branch-free (cos_sin: D/2 cos then D/2 sin).
template <dtype T, pairing S, class U>
inline void predict_row_fast(const U* reference, std::size_t D, const double* cos_sin, U* prediction) {
    predict_pairs_fast<T, S, U>(reference, D, cos_sin, prediction, 0);
}

/// Signature of a predict_row_fast instance (chosen once per block by fast_predictor).
template <class U>
using row_predictor = void (*)(const U*, std::size_t, const double*, U*);

/// True when this build and CPU can run the AVX2 row predictors.
inline bool simd_predict_available() { return cpu_has_avx2(); }

#if SEQKV_ROPE_AVX2_KERNEL
namespace detail {

/// Four 16-bit elements (u32 lanes) -> high dwords of their doubles (to_double_fast: zero,
/// subnormal and non-finite -> +0.0); bad = all ones in lanes whose element is Inf / NaN.
template <dtype T>
__attribute__((target("avx2"))) inline __m256d to_double4(__m128i u, __m128i& bad) {
    using F = format_of<T>;
    static_assert(F::width == 16 && 52 - F::mantissa >= 32, "16-bit types: the double's low dword is zero");
    const __m128i emask = _mm_set1_epi32(int(((1u << F::exponent) - 1) << F::mantissa));
    const __m128i e = _mm_and_si128(u, emask);
    bad = _mm_cmpeq_epi32(e, emask);
    const __m128i zero_or_bad = _mm_or_si128(_mm_cmpeq_epi32(e, _mm_setzero_si128()), bad);
    // High dword: sign << 31 | (e + 1023 - bias) << 20 | m << (20 - mantissa).
    const __m128i hi = _mm_or_si128(_mm_add_epi32(_mm_slli_epi32(_mm_and_si128(u, _mm_set1_epi32(0x7fff)), 20 - F::mantissa),
                                                  _mm_set1_epi32(int(std::uint32_t(1023 - F::bias) << 20))),
                                    _mm_and_si128(_mm_slli_epi32(u, 16), _mm_set1_epi32(int(0x80000000u))));
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm_andnot_si128(zero_or_bad, hi)), 32));
}

/// from_double_fast of four doubles, as u32 lanes.
template <dtype T>
__attribute__((target("avx2"))) inline __m128i from_double4(__m256d v) {
    using F = format_of<T>;
    constexpr unsigned shift = 52 - F::mantissa;
    static_assert(F::width == 16 && 63 - shift < 31, "the rounded magnitude fits a non-negative i32");
    const __m256i d = _mm256_castpd_si256(v);
    const __m256i sign = _mm256_set1_epi64x(std::int64_t(0x8000000000000000ULL));
    const __m256i mag = _mm256_andnot_si256(sign, d);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi64(mag, shift), _mm256_set1_epi64x(1));
    const __m256i rounded =
        _mm256_srli_epi64(_mm256_add_epi64(_mm256_add_epi64(mag, _mm256_set1_epi64x((std::int64_t{1} << (shift - 1)) - 1)), odd), shift);
    // Low dwords = rounded magnitude, high dwords = the sign bit (bit 31): gather them into halves.
    const __m256i split =
        _mm256_permutevar8x32_epi32(_mm256_or_si256(rounded, _mm256_and_si256(d, sign)), _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    const __m128i r = _mm256_castsi256_si128(split), s = _mm256_extracti128_si256(split, 1);
    const __m128i t = _mm_sub_epi32(r, _mm_set1_epi32(int(std::uint32_t(1023 - F::bias) << F::mantissa)));
    const __m128i clamped = _mm_min_epi32(t, _mm_set1_epi32(int(F::max_finite)));
    const __m128i keep = _mm_cmpgt_epi32(t, _mm_set1_epi32(int((1u << F::mantissa) - 1)));
    return _mm_and_si128(_mm_or_si128(clamped, _mm_srli_epi32(s, 16)), keep);
}

/// predict_row_fast for 16-bit type T and pairing S with AVX2, four pairs at a time (same bits;
/// leftover pairs by the scalar code). Products are exact, so contraction cannot change a result.
template <dtype T, pairing S>
__attribute__((target("avx2"))) void predict_row_avx2(const std::uint16_t* reference, std::size_t D, const double* cos_sin,
                                                      std::uint16_t* prediction) {
    const std::size_t half = D / 2;
    const double *cs = cos_sin, *sn = cos_sin + half;
    std::size_t i = 0;
    for (; i + 4 <= half; i += 4) {
        __m128i ua, ub;
        if constexpr (S == pairing::rotate_half) {
            ua = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(reference + i)));
            ub = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(reference + half + i)));
        } else {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reference + 2 * i));
            ua = _mm_and_si128(v, _mm_set1_epi32(0xffff));
            ub = _mm_srli_epi32(v, 16);
        }
        __m128i bad_a, bad_b;
        const __m256d a = to_double4<T>(ua, bad_a), b = to_double4<T>(ub, bad_b);
        const __m256d c = _mm256_loadu_pd(cs + i), s = _mm256_loadu_pd(sn + i);
        const __m256d x = _mm256_sub_pd(_mm256_mul_pd(a, c), _mm256_mul_pd(b, s));
        const __m256d y = _mm256_add_pd(_mm256_mul_pd(b, c), _mm256_mul_pd(a, s));
        const __m128i bad = _mm_or_si128(bad_a, bad_b);
        const __m128i px = _mm_andnot_si128(bad, from_double4<T>(x)), py = _mm_andnot_si128(bad, from_double4<T>(y));
        if constexpr (S == pairing::rotate_half) {
            const __m128i packed = _mm_packus_epi32(px, py);  // values <= 0xffff: no saturation
            _mm_storel_epi64(reinterpret_cast<__m128i*>(prediction + i), packed);
            _mm_storel_epi64(reinterpret_cast<__m128i*>(prediction + half + i), _mm_unpackhi_epi64(packed, packed));
        } else {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(prediction + 2 * i), _mm_or_si128(px, _mm_slli_epi32(py, 16)));
        }
    }
    if (i < half) predict_pairs_fast<T, S, std::uint16_t>(reference, D, cos_sin, prediction, i);
}

}  // namespace detail
#endif

/// The AVX2 predict_row_fast instance for dtype t (of width sizeof(U)) and pairing style, or
/// nullptr when there is none for this type, build or CPU (only bf16 and f16 have one).
template <class U>
inline row_predictor<U> simd_predictor(dtype t, pairing style) {
#if SEQKV_ROPE_AVX2_KERNEL
    if constexpr (sizeof(U) == 2 && std::is_same_v<U, std::uint16_t>) {
        if (!simd_predict_available()) return nullptr;
        const bool half = style == pairing::rotate_half;
        if (t == dtype::bf16) return half ? &detail::predict_row_avx2<dtype::bf16, pairing::rotate_half> : &detail::predict_row_avx2<dtype::bf16, pairing::interleaved>;
        if (t == dtype::f16) return half ? &detail::predict_row_avx2<dtype::f16, pairing::rotate_half> : &detail::predict_row_avx2<dtype::f16, pairing::interleaved>;
    }
#else
    (void)t, (void)style;
#endif
    return nullptr;
}

/// The predict_row_fast instance for dtype t (of width sizeof(U)) and pairing style: the AVX2
/// one when allow_simd and the CPU has it (same bits), else the scalar one.
template <class U>
inline row_predictor<U> fast_predictor(dtype t, pairing style, bool allow_simd = true) {
    if (allow_simd)
        if (auto p = simd_predictor<U>(t, style)) return p;
    const bool half = style == pairing::rotate_half;
    if constexpr (sizeof(U) == 1) {
        if (t == dtype::f8_e4m3) return half ? &predict_row_fast<dtype::f8_e4m3, pairing::rotate_half, U> : &predict_row_fast<dtype::f8_e4m3, pairing::interleaved, U>;
        return half ? &predict_row_fast<dtype::f8_e5m2, pairing::rotate_half, U> : &predict_row_fast<dtype::f8_e5m2, pairing::interleaved, U>;
    } else if constexpr (sizeof(U) == 2) {
        if (t == dtype::bf16) return half ? &predict_row_fast<dtype::bf16, pairing::rotate_half, U> : &predict_row_fast<dtype::bf16, pairing::interleaved, U>;
        return half ? &predict_row_fast<dtype::f16, pairing::rotate_half, U> : &predict_row_fast<dtype::f16, pairing::interleaved, U>;
    } else {
        return half ? &predict_row_fast<dtype::f32, pairing::rotate_half, U> : &predict_row_fast<dtype::f32, pairing::interleaved, U>;
    }
}

/// Order-preserving map of sign-magnitude bits to unsigned (w bits): ~u if the sign is set, else u | sign.
template <class U>
inline U monotonic(U u) {
    constexpr unsigned w = 8 * sizeof(U);
    constexpr U sign = static_cast<U>(U(1) << (w - 1));
    return static_cast<U>(u ^ (static_cast<U>(U(0) - U(u >> (w - 1))) | sign));
}
/// Zigzag of the w-bit difference monotonic(u) - monotonic(prediction) (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...).
template <class U>
inline U residual(U u, U prediction) {
    constexpr unsigned w = 8 * sizeof(U);
    const U d = static_cast<U>(monotonic(u) - monotonic(prediction));
    return static_cast<U>(U(d << 1) ^ static_cast<U>(U(0) - U(d >> (w - 1))));
}
/// Inverse of residual().
template <class U>
inline U unresidual(U z, U prediction) {
    constexpr unsigned w = 8 * sizeof(U);
    constexpr U sign = static_cast<U>(U(1) << (w - 1));
    const U d = static_cast<U>(U(z >> 1) ^ static_cast<U>(U(0) - U(z & 1)));
    const U mono = static_cast<U>(monotonic(prediction) + d);
    return static_cast<U>(mono ^ (static_cast<U>(U(mono >> (w - 1)) - U(1)) | sign));
}

}  // namespace seqkv::lossless::rope

SEQKV_FP_STRICT_END
