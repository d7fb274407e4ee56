// Lloyd–Max codebooks for the standard normal distribution at 1..4 bits: the MSE-optimal scalar
// quantizer for the coordinates of a randomly rotated unit vector scaled by sqrt(P) (which are
// close to N(0, 1) for P >= 32). Computed offline (Lloyd iteration on exact normal integrals,
// 20k iterations) and embedded, so both sides use identical constants.
// Normalized MSE per coordinate: 1 bit 0.3634, 2 bits 0.1175, 3 bits 0.03455, 4 bits 0.009501.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

namespace detail {
inline constexpr std::array<float, 1> lloyd_max_1{0.797884561f};
inline constexpr std::array<float, 2> lloyd_max_2{0.452780035f, 1.510417608f};
inline constexpr std::array<float, 4> lloyd_max_3{0.245094179f, 0.756005281f, 1.343909279f, 2.151945705f};
inline constexpr std::array<float, 8> lloyd_max_4{0.128395030f, 0.388048299f, 0.656759119f, 0.942340456f,
                                                  1.256231197f, 1.618046386f, 2.069017227f, 2.732589571f};
}  // namespace detail

/// Sorted codebook of 2^bits reconstruction levels for N(0, 1), symmetric around 0.
class lloyd_max_codebook {
public:
    static constexpr unsigned max_bits = 4;

    constexpr explicit lloyd_max_codebook(unsigned bits) : bits_(bits) {
        std::span<const float> positive;
        switch (bits) {
            case 1: positive = detail::lloyd_max_1; break;
            case 2: positive = detail::lloyd_max_2; break;
            case 3: positive = detail::lloyd_max_3; break;
            case 4: positive = detail::lloyd_max_4; break;
            default: throw usage_error("lloyd_max_codebook: bits must be 1..4");
        }
        const std::uint32_t half = std::uint32_t(positive.size());
        for (std::uint32_t i = 0; i < half; ++i) {
            levels_[half - 1 - i] = -positive[i];
            levels_[half + i] = positive[i];
        }
        for (std::uint32_t i = 0; i + 1 < size(); ++i) thresholds_[i] = 0.5f * (levels_[i] + levels_[i + 1]);
    }
    constexpr unsigned bits() const { return bits_; }
    constexpr std::uint32_t size() const { return 1u << bits_; }
    constexpr float level(std::uint32_t index) const { return levels_[index]; }
    /// Decision threshold i (i + 1 < size()): the midpoint 0.5 (level i + level i+1), increasing in i.
    constexpr float threshold(std::uint32_t i) const { return thresholds_[i]; }
    /// Index of the nearest level: the number of thresholds y lies above (0 for NaN), which is
    /// where a scan up the increasing thresholds would stop.
    constexpr std::uint32_t nearest(float y) const {
        std::uint32_t i = 0;
        for (std::uint32_t k = 0; k + 1 < size(); ++k) i += y > thresholds_[k];
        return i;
    }
    /// out[i] = nearest(float(y[i] · scale)) for every i (the product in double, rounded to float
    /// once), four coordinates a step on SSE2.
    void nearest_row(std::span<const float> y, double scale, std::span<std::uint16_t> out) const {
        std::size_t i = 0;
#if defined(__SSE2__)
        const __m128d s = _mm_set1_pd(scale);
        for (; i + 4 <= y.size(); i += 4) {
            const __m128 v = _mm_loadu_ps(y.data() + i);
            const __m128 lo = _mm_cvtpd_ps(_mm_mul_pd(_mm_cvtps_pd(v), s));
            const __m128 hi = _mm_cvtpd_ps(_mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(v, v)), s));
            const __m128 x = _mm_movelh_ps(lo, hi);
            __m128i count = _mm_setzero_si128();
            for (std::uint32_t k = 0; k + 1 < size(); ++k)
                count = _mm_sub_epi32(count, _mm_castps_si128(_mm_cmpgt_ps(x, _mm_set1_ps(thresholds_[k]))));
            alignas(16) std::uint32_t lanes[4];
            _mm_store_si128(reinterpret_cast<__m128i*>(lanes), count);
            for (int l = 0; l < 4; ++l) out[i + l] = static_cast<std::uint16_t>(lanes[l]);
        }
#endif
        for (; i < y.size(); ++i) out[i] = static_cast<std::uint16_t>(nearest(float(double(y[i]) * scale)));
    }

private:
    unsigned bits_;
    std::array<float, 16> levels_{};
    std::array<float, 15> thresholds_{};
};

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
