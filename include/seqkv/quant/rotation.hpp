// Randomized Hadamard rotation for TurboQuant-style quantizers: y = H (s ⊙ x), H the unnormalized
// Walsh–Hadamard matrix of size P = 2^k, s a ±1 vector drawn from a seed with splitmix64.
// Only additions and subtractions in a fixed butterfly order: bit-identical on every machine.
// H H = P I, so the inverse is x = s ⊙ (H y) / P (a power-of-two scaling, exact).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/core/cpu.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

/// splitmix64 step: a fixed, portable 64-bit generator for seeded signs.
constexpr std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// Smallest power of two >= n (n >= 1).
constexpr std::uint32_t next_power_of_two(std::uint32_t n) {
    std::uint32_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

/// In-place unnormalized fast Walsh–Hadamard transform (size must be a power of two). Stages of
/// half >= 4 run four butterflies per SSE2 instruction on x86-64: each lane computes the same
/// a + b and a - b as the scalar loop, so the bits do not depend on the path.
inline void walsh_hadamard(std::span<float> v) {
    const std::size_t n = v.size();
    std::size_t first = 1;
#if SEQKV_X86_AVX2_KERNELS && defined(__x86_64__)
    if (n >= 4) {  // stages half = 1 and 2 in one register per four elements (shuffles, then the same adds / subtracts)
        float* d = v.data();
        for (std::size_t i = 0; i < n; i += 4) {
            const __m128 x = _mm_loadu_ps(d + i);                                // a b c d
            const __m128 e = _mm_shuffle_ps(x, x, _MM_SHUFFLE(2, 0, 2, 0));      // a c a c
            const __m128 o = _mm_shuffle_ps(x, x, _MM_SHUFFLE(3, 1, 3, 1));      // b d b d
            __m128 y = _mm_shuffle_ps(_mm_add_ps(e, o), _mm_sub_ps(e, o), _MM_SHUFFLE(1, 0, 1, 0));  // a+b c+d a-b c-d
            y = _mm_shuffle_ps(y, y, _MM_SHUFFLE(3, 1, 2, 0));                  // a+b a-b c+d c-d
            const __m128 lo = _mm_movelh_ps(y, y), hi = _mm_movehl_ps(y, y);   // y0 y1 y0 y1 / y2 y3 y2 y3
            _mm_storeu_ps(d + i, _mm_shuffle_ps(_mm_add_ps(lo, hi), _mm_sub_ps(lo, hi), _MM_SHUFFLE(1, 0, 1, 0)));
        }
        first = 4;
    }
#endif
    for (std::size_t half = first; half < n; half <<= 1) {
#if SEQKV_X86_AVX2_KERNELS && defined(__x86_64__)  // x86-64 float math is SSE (no x87 excess precision)
        if (half >= 4) {
            float* d = v.data();
            for (std::size_t i = 0; i < n; i += 2 * half)
                for (std::size_t j = i; j < i + half; j += 4) {
                    const __m128 a = _mm_loadu_ps(d + j), b = _mm_loadu_ps(d + j + half);
                    _mm_storeu_ps(d + j, _mm_add_ps(a, b));
                    _mm_storeu_ps(d + j + half, _mm_sub_ps(a, b));
                }
            continue;
        }
#endif
        for (std::size_t i = 0; i < n; i += 2 * half)
            for (std::size_t j = i; j < i + half; ++j) {
                const float a = v[j], b = v[j + half];
                v[j] = a + b;
                v[j + half] = a - b;
            }
    }
}

/// A seeded randomized Hadamard rotation of size P (a power of two).
class random_hadamard {
public:
    random_hadamard() = default;
    random_hadamard(std::uint32_t size, std::uint64_t seed) : signs_(size) {
        require_usage(size >= 1 && (size & (size - 1)) == 0, "random_hadamard: size must be a power of two");
        std::uint64_t state = seed;
        for (std::uint32_t i = 0; i < size; i += 64) {
            const std::uint64_t bits = splitmix64(state);
            for (std::uint32_t j = 0; j < 64 && i + j < size; ++j) signs_[i + j] = (bits >> j) & 1 ? -1.0f : 1.0f;
        }
    }
    std::uint32_t size() const { return static_cast<std::uint32_t>(signs_.size()); }
    /// v <- H (s ⊙ v); ||v|| grows by sqrt(P).
    void forward(std::span<float> v) const {
        std::size_t i = 0;
#if SEQKV_X86_AVX2_KERNELS && defined(__x86_64__)
        for (; i + 4 <= v.size(); i += 4) _mm_storeu_ps(v.data() + i, _mm_mul_ps(_mm_loadu_ps(v.data() + i), _mm_loadu_ps(signs_.data() + i)));
#endif
        for (; i < v.size(); ++i) v[i] *= signs_[i];
        walsh_hadamard(v);
    }
    /// v <- s ⊙ (H v) / P, the exact inverse of forward (up to fp32 rounding of the sums).
    void inverse(std::span<float> v) const {
        walsh_hadamard(v);
        const float inv = 1.0f / float(v.size());  // power of two: exact
        std::size_t i = 0;
#if SEQKV_X86_AVX2_KERNELS && defined(__x86_64__)  // (v * s) * inv per lane, as below
        const __m128 scale = _mm_set1_ps(inv);
        for (; i + 4 <= v.size(); i += 4)
            _mm_storeu_ps(v.data() + i, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(v.data() + i), _mm_loadu_ps(signs_.data() + i)), scale));
#endif
        for (; i < v.size(); ++i) v[i] = v[i] * signs_[i] * inv;
    }

private:
    std::vector<float> signs_;
};

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
