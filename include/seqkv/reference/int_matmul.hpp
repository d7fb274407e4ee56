// Integer matrix products for the reference model's drafts (weight_format::int8 / int12): weights
// as int8 (or 12-bit values in int16) with one fp32 scale per row, activations as int16 with one
// fp32 scale per token, products summed exactly in integers. Integer sums are associative, so every kernel below — scalar, AVX2,
// AVX-512BW — returns the same integer whatever its order or width: the draft computes the same
// bits on every x86-64 CPU (tested: each available kernel against the scalar one). Only the final
// scaling is floating point, one fixed expression: y = float(double(acc) · (double(s_w) · double(s_x))).
//
// Overflow: |w| <= 127 (int8) or 2047 (int12) and |x| <= 32767, so a product is below 2^22 (2^26);
// a SIMD int32 lane takes two products per step (vpmaddwd) and is flushed into int64 every 2048
// (224) elements (flush_elements<W>), so it never holds more than 256 (28) products, < 2^30 (< 2^31); the scalar
// kernel sums in int64. A whole sum is below 2^44 for rows of up to 2^18 elements: exact in the
// double of the final scaling.
//
// Intrinsics, not xsimd: xsimd 8.1 has no widening int16 multiply-add (pmaddwd) nor int8 → int16
// sign extension, which are the whole kernel. Chosen once at run time with __builtin_cpu_supports.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "seqkv/core/cpu.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::reference::detail {

/// Integer rows [rows × cols] and their scales: w[o][i] ≈ q[o·cols + i] · scale[o]. W is int8
/// (|q| <= 127) or int16 holding 12-bit values (|q| <= 2047).
template <class W>
struct int_matrix {
    std::size_t rows = 0, cols = 0;
    std::vector<W> q;
    std::vector<float> scale;
};
using int8_matrix = int_matrix<std::int8_t>;
using int12_matrix = int_matrix<std::int16_t>;

/// One row quantized symmetrically to |q| <= qmax: s = max|x| / qmax over the finite elements,
/// q = round-to-nearest-even(x / s) (IEEE division and rounding: the same integers on every
/// machine); returns s. A row without a nonzero finite element gets s = 0 and q = 0; a non-finite
/// element (overflowed activations; weights are checked finite when loaded) gets q = 0, defined
/// the same everywhere instead of an undefined float → int cast. q must hold zeros on entry.
template <class Q>
float quantize_row(const float* x, std::size_t cols, float qmax, Q* q) {
    float amax = 0.0f;
    for (std::size_t i = 0; i < cols; ++i)
        if (std::isfinite(x[i])) amax = std::max(amax, std::fabs(x[i]));
    const float s = amax / qmax;
    if (s == 0.0f) return s;
    for (std::size_t i = 0; i < cols; ++i)
        if (std::isfinite(x[i])) q[i] = Q(std::clamp(std::nearbyint(x[i] / s), -qmax, qmax));
    return s;
}

/// Per-row weight quantization (quantize_row) of a rows × cols matrix.
template <class W>
int_matrix<W> quantize_rows(std::span<const float> w, std::size_t rows, std::size_t cols, float qmax) {
    int_matrix<W> m{rows, cols, std::vector<W>(rows * cols), std::vector<float>(rows)};
    for (std::size_t o = 0; o < rows; ++o) m.scale[o] = quantize_row(w.data() + o * cols, cols, qmax, m.q.data() + o * cols);
    return m;
}
inline int8_matrix quantize_rows_int8(std::span<const float> w, std::size_t rows, std::size_t cols) {
    return quantize_rows<std::int8_t>(w, rows, cols, 127.0f);
}
inline int12_matrix quantize_rows_int12(std::span<const float> w, std::size_t rows, std::size_t cols) {
    return quantize_rows<std::int16_t>(w, rows, cols, 2047.0f);
}

/// Activations of `tokens` rows quantized to int16 (quantize_row, qmax 32767), one scale per row.
struct int16_rows {
    std::size_t cols = 0;
    std::vector<std::int16_t> q;
    std::vector<float> scale;
};
inline void quantize_rows_int16(const float* x, std::size_t tokens, std::size_t cols, int16_rows& out) {
    out.cols = cols;
    out.q.assign(tokens * cols, 0);
    out.scale.assign(tokens, 0.0f);
    for (std::size_t t = 0; t < tokens; ++t) out.scale[t] = quantize_row(x + t * cols, cols, 32767.0f, out.q.data() + t * cols);
}

/// Four exact dot products of one integer row with four int16 rows (n elements each).
template <class W>
using dot4_fn = void (*)(const W* w, const std::int16_t* const* x, std::size_t n, std::int64_t* out);

// Elements between flushes of the int32 lanes into int64: multiples of every kernel's step (16, 32).
// int8 weights: <= 256 products < 2^22 per lane; 12-bit weights (int16): <= 28 products < 2^26.
template <class W>
inline constexpr std::size_t flush_elements = std::is_same_v<W, std::int8_t> ? 2048 : 224;

template <class W>
void dot4_scalar(const W* w, const std::int16_t* const* x, std::size_t n, std::int64_t* out) {
    for (int k = 0; k < 4; ++k) {
        std::int64_t s = 0;
        for (std::size_t i = 0; i < n; ++i) s += std::int32_t(w[i]) * std::int32_t(x[k][i]);
        out[k] = s;
    }
}

#if SEQKV_X86_AVX2_KERNELS
__attribute__((target("avx2"))) inline std::int64_t hsum_epi32_to_64(__m256i v) {
    alignas(32) std::int32_t l[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(l), v);
    std::int64_t s = 0;
    for (const std::int32_t x : l) s += x;
    return s;
}

__attribute__((target("avx2"))) inline __m256i load16_w(const std::int8_t* w) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
}
__attribute__((target("avx2"))) inline __m256i load16_w(const std::int16_t* w) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
}

template <class W>
__attribute__((target("avx2"))) inline void dot4_avx2(const W* w, const std::int16_t* const* x, std::size_t n, std::int64_t* out) {
    std::int64_t total[4] = {0, 0, 0, 0};
    std::size_t i = 0;
    while (i + 16 <= n) {
        const std::size_t stop = std::min(n - (n - i) % 16, i + flush_elements<W>);
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (; i < stop; i += 16) {
            const __m256i wv = load16_w(w + i);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(wv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[0] + i))));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(wv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[1] + i))));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(wv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[2] + i))));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(wv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[3] + i))));
        }
        total[0] += hsum_epi32_to_64(a0), total[1] += hsum_epi32_to_64(a1);
        total[2] += hsum_epi32_to_64(a2), total[3] += hsum_epi32_to_64(a3);
    }
    for (; i < n; ++i)
        for (int k = 0; k < 4; ++k) total[k] += std::int32_t(w[i]) * std::int32_t(x[k][i]);
    for (int k = 0; k < 4; ++k) out[k] = total[k];
}

__attribute__((target("avx512f,avx512bw"))) inline std::int64_t hsum512_epi32_to_64(__m512i v) {
    alignas(64) std::int32_t l[16];
    _mm512_store_si512(l, v);
    std::int64_t s = 0;
    for (const std::int32_t x : l) s += x;
    return s;
}

__attribute__((target("avx512f,avx512bw"))) inline __m512i load32_w(const std::int8_t* w) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
}
__attribute__((target("avx512f,avx512bw"))) inline __m512i load32_w(const std::int16_t* w) { return _mm512_loadu_si512(w); }

template <class W>
__attribute__((target("avx512f,avx512bw"))) inline void dot4_avx512(const W* w, const std::int16_t* const* x, std::size_t n,
                                                                    std::int64_t* out) {
    std::int64_t total[4] = {0, 0, 0, 0};
    std::size_t i = 0;
    while (i + 32 <= n) {
        const std::size_t stop = std::min(n - (n - i) % 32, i + flush_elements<W>);
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (; i < stop; i += 32) {
            const __m512i wv = load32_w(w + i);
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(wv, _mm512_loadu_si512(x[0] + i)));
            a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(wv, _mm512_loadu_si512(x[1] + i)));
            a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(wv, _mm512_loadu_si512(x[2] + i)));
            a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(wv, _mm512_loadu_si512(x[3] + i)));
        }
        total[0] += hsum512_epi32_to_64(a0), total[1] += hsum512_epi32_to_64(a1);
        total[2] += hsum512_epi32_to_64(a2), total[3] += hsum512_epi32_to_64(a3);
    }
    for (; i < n; ++i)
        for (int k = 0; k < 4; ++k) total[k] += std::int32_t(w[i]) * std::int32_t(x[k][i]);
    for (int k = 0; k < 4; ++k) out[k] = total[k];
}
#endif

/// A kernel and its name.
template <class W>
struct dot4_kernel {
    const char* name;
    dot4_fn<W> fn;
};

/// Every kernel this build has and this CPU runs for weights W, scalar first (tests compare them all).
template <class W>
std::vector<dot4_kernel<W>> dot4_kernels() {
    std::vector<dot4_kernel<W>> k{{"scalar", &dot4_scalar<W>}};
#if SEQKV_X86_AVX2_KERNELS
    if (cpu_has_avx2()) k.push_back({"avx2", &dot4_avx2<W>});
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) k.push_back({"avx512bw", &dot4_avx512<W>});
#endif
    return k;
}

/// The widest kernel available (the same integers as every other).
template <class W>
dot4_fn<W> best_dot4() {
    static const dot4_fn<W> f = dot4_kernels<W>().back().fn;
    return f;
}

/// The one float expression that turns an exact integer sum into an output.
inline float scale_sum(std::int64_t acc, float s_w, float s_x) {
    return float(double(acc) * (double(s_w) * double(s_x)));
}

}  // namespace seqkv::reference::detail

SEQKV_FP_STRICT_END
