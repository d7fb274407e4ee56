// TurboQuant-style vector quantizer: per row, store the residual's norm (fp16), rotate the unit
// vector with a seeded randomized Hadamard transform, and code every rotated coordinate
// (scaled to unit variance) with a Lloyd–Max codebook for N(0, 1).
//   * fractional rates by an outlier split: the `outlier_fraction` channels of largest residual
//     energy in the block (a stored bit mask) form a second sub-vector coded with bits + 1;
//   * optional 1-bit QJL stage (TurboQuant_prod): the MSE stage uses bits - 1 and the sign of a
//     second rotation of the unit-domain residual, with its norm, gives an unbiased correction.
// Sub-vectors of n channels are zero-padded to P = next_power_of_two(n) coordinates, all coded.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "seqkv/quant/lloyd_max.hpp"
#include "seqkv/quant/quantizer.hpp"
#include "seqkv/quant/rotation.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::quant {

/// Rotation + Lloyd–Max quantizer with optional outlier split and QJL residual.
class turbo {
public:
    struct part {  // one sub-vector: its channels, padded size, rotations and codebook
        std::vector<std::uint32_t> channels;
        std::uint32_t padded = 0;
        unsigned mse_bits = 0;
        random_hadamard rotation, qjl_rotation;
    };
    struct params {
        block_shape shape;
        std::vector<bool> outlier;  // per channel
        std::vector<part> parts;    // regular first, then outliers (if any)
    };

    /// bits: 1..4 for the regular channels (outliers get bits + 1 <= 4); qjl needs bits >= 2.
    turbo(unsigned bits, float outlier_fraction = 0.0f, bool qjl = false, std::uint64_t seed = 0x5eedcafe)
        : bits_(bits), outlier_fraction_(outlier_fraction), qjl_(qjl), seed_(seed) {
        require_usage(bits >= 1 && bits <= 4, "turbo: bits must be 1..4");
        require_usage(outlier_fraction >= 0 && outlier_fraction < 1, "turbo: outlier fraction in [0, 1)");
        require_usage(outlier_fraction == 0 || bits < 4, "turbo: outliers need bits <= 3");
        require_usage(!qjl || bits >= 2, "turbo: QJL needs bits >= 2");
    }

    params plan(const block_shape& shape, std::span<const float>, std::span<const float> residual) const {
        std::vector<double> energy(shape.cols, 0.0);
        for (std::uint32_t t = 0; t < shape.rows; ++t)
            for (std::uint32_t c = 0; c < shape.cols; ++c) {
                const double r = residual[std::size_t(t) * shape.cols + c];
                if (std::isfinite(r)) energy[c] += r * r;
            }
        std::vector<std::uint32_t> order(shape.cols);
        std::iota(order.begin(), order.end(), 0u);
        std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return energy[a] > energy[b]; });
        std::vector<bool> outlier(shape.cols, false);
        const auto n_out = std::uint32_t(std::lround(outlier_fraction_ * shape.cols));
        for (std::uint32_t i = 0; i < n_out; ++i) outlier[order[i]] = true;
        return make_params(shape, std::move(outlier));
    }
    void write_params(const params& p, byte_writer& w) const {
        if (outlier_fraction_ == 0) return;
        for (std::uint32_t c = 0; c < p.shape.cols; c += 8) {
            std::uint8_t byte = 0;
            for (std::uint32_t j = 0; j < 8 && c + j < p.shape.cols; ++j) byte |= std::uint8_t(p.outlier[c + j]) << j;
            w.put<std::uint8_t>(byte);
        }
    }
    params read_params(const block_shape& shape, byte_reader& r) const {
        std::vector<bool> outlier(shape.cols, false);
        if (outlier_fraction_ != 0)
            for (std::uint32_t c = 0; c < shape.cols; c += 8) {
                const auto byte = r.get<std::uint8_t>();
                for (std::uint32_t j = 0; j < 8 && c + j < shape.cols; ++j) outlier[c + j] = (byte >> j) & 1;
            }
        return make_params(shape, std::move(outlier));
    }
    std::uint32_t symbols_per_row(const params& p) const {
        std::uint32_t n = 0;
        for (const auto& part : p.parts) n += part.padded * (qjl_ ? 2 : 1);
        return n;
    }
    /// Contexts: 2 * part index for codebook indices, 2 * part index + 1 for QJL signs.
    std::uint32_t context_count(const params& p) const { return 2 * std::uint32_t(p.parts.size()); }
    std::uint32_t symbol_context(const params& p, std::uint32_t index) const {
        std::uint32_t k = 0;
        for (const auto& part : p.parts) {
            if (index < part.padded) return 2 * k;
            index -= part.padded;
            if (qjl_) {
                if (index < part.padded) return 2 * k + 1;
                index -= part.padded;
            }
            ++k;
        }
        return 0;
    }
    std::uint32_t context_alphabet(const params& p, std::uint32_t context) const {
        return context % 2 ? 2u : 1u << p.parts[context / 2].mse_bits;
    }

    void quantize_row(const params& p, row_hint, std::span<const float> x, std::span<const float> pred,
                      std::span<std::uint16_t> symbols, byte_writer& side, std::span<float> recon) const {
        std::uint32_t s = 0;
        std::array<float, 2> norms{}, residual_norms{};  // one per part (at most 2)
        row_scratch scratch;
        for (std::size_t k = 0; k < p.parts.size(); ++k) {
            const part& part = p.parts[k];
            const auto u = scratch.take(0, part.padded), y = scratch.take(1, part.padded);
            std::fill(u.begin(), u.end(), 0.0f);
            double norm2 = 0;
            for (std::size_t i = 0; i < part.channels.size(); ++i) {
                const float r = x[part.channels[i]] - pred[part.channels[i]];
                u[i] = std::isfinite(r) ? r : 0.0f;
                norm2 += double(u[i]) * u[i];
            }
            const double norm = std::sqrt(norm2);
            norms[k] = put_half(side, float(norm));
            const lloyd_max_codebook book(part.mse_bits);
            const double to_unit_variance = norm > 0 ? 1.0 / norm : 0.0;  // ||y||^2 = P norm^2 over P coordinates
            std::copy(u.begin(), u.end(), y.begin());
            part.rotation.forward(y);  // ||y|| = sqrt(P) * norm
            book.nearest_row(y, to_unit_variance, symbols.subspan(s, part.padded));
            if (qjl_) {
                // Unit-domain residual e = u/norm - û, signs of its second rotation, and ||e||.
                const auto unit_hat = scratch.take(2, part.padded), e = scratch.take(3, part.padded);
                mse_unit(part, book, symbols.subspan(s, part.padded), unit_hat);
                double e2 = 0;
                for (std::uint32_t i = 0; i < part.padded; ++i) {
                    e[i] = float(norm > 0 ? u[i] / norm : 0.0) - unit_hat[i];
                    e2 += double(e[i]) * e[i];
                }
                residual_norms[k] = put_half(side, float(std::sqrt(e2)));
                part.qjl_rotation.forward(e);
                for (std::uint32_t i = 0; i < part.padded; ++i) symbols[s + part.padded + i] = e[i] < 0 ? 1 : 0;
            }
            s += part.padded * (qjl_ ? 2 : 1);
        }
        reconstruct(p, pred, symbols, norms, residual_norms, recon, scratch);  // exactly as the decoder will
    }
    void dequantize_row(const params& p, row_hint, std::span<const float> pred, std::span<const std::uint16_t> symbols,
                        byte_reader& side, std::span<float> recon) const {
        std::array<float, 2> norms{}, residual_norms{};
        for (std::size_t k = 0; k < p.parts.size(); ++k) {
            norms[k] = get_half(side);
            if (qjl_) residual_norms[k] = get_half(side);
        }
        row_scratch scratch;
        reconstruct(p, pred, symbols, norms, residual_norms, recon, scratch);
    }

private:
    // A row's working vectors (4 slots of up to `padded` floats): on the stack up to 256
    // coordinates per slot (head_dim <= 256), on the heap beyond — no allocation per row.
    class row_scratch {
    public:
        std::span<float> take(std::size_t slot, std::uint32_t n) {
            if (n <= local_size) return std::span(local_).subspan(slot * local_size, n);
            if (heap_.size() < 4 * std::size_t(n)) heap_.resize(4 * std::size_t(n));
            return std::span(heap_).subspan(slot * n, n);
        }

    private:
        static constexpr std::size_t local_size = 256;
        std::array<float, 4 * local_size> local_;
        std::vector<float> heap_;
    };

    void reconstruct(const params& p, std::span<const float> pred, std::span<const std::uint16_t> symbols,
                     const std::array<float, 2>& norms, const std::array<float, 2>& residual_norms, std::span<float> recon,
                     row_scratch& scratch) const {
        std::uint32_t s = 0;
        for (std::size_t k = 0; k < p.parts.size(); ++k) {
            const part& part = p.parts[k];
            const float norm = norms[k];
            const lloyd_max_codebook book(part.mse_bits);
            const auto unit_hat = scratch.take(2, part.padded);
            mse_unit(part, book, symbols.subspan(s, part.padded), unit_hat);
            if (qjl_) {
                const float e_norm = residual_norms[k];
                const auto signs = scratch.take(3, part.padded);
                std::uint32_t j = 0;
#if defined(__SSE2__)
                for (; j + 8 <= part.padded; j += 8) {  // 1.0f where the sign symbol is 0, else -1.0f
                    const __m128i zero = _mm_cmpeq_epi16(
                        _mm_loadu_si128(reinterpret_cast<const __m128i*>(symbols.data() + s + part.padded + j)), _mm_setzero_si128());
                    const __m128 one = _mm_set1_ps(1.0f), minus_one = _mm_set1_ps(-1.0f);
                    const __m128 lo = _mm_castsi128_ps(_mm_unpacklo_epi16(zero, zero)), hi = _mm_castsi128_ps(_mm_unpackhi_epi16(zero, zero));
                    _mm_storeu_ps(signs.data() + j, _mm_or_ps(_mm_and_ps(lo, one), _mm_andnot_ps(lo, minus_one)));
                    _mm_storeu_ps(signs.data() + j + 4, _mm_or_ps(_mm_and_ps(hi, one), _mm_andnot_ps(hi, minus_one)));
                }
#endif
                for (; j < part.padded; ++j) signs[j] = symbols[s + part.padded + j] ? -1.0f : 1.0f;
                part.qjl_rotation.inverse(signs);  // s ⊙ H sign / P
                // E[S^T sign(S e)] = m sqrt(2/pi) e/||e|| for m = P rows of ±1: scale by sqrt(pi/2) ||e||.
                const float gain = unfused_mul(1.2533141373155003f, e_norm);
                unfused_scale(signs, gain, signs);  // the products rounded to fp32 before the adds, as unfused_mul
                j = 0;
#if defined(__SSE2__)
                for (; j + 4 <= part.padded; j += 4)
                    _mm_storeu_ps(unit_hat.data() + j, _mm_add_ps(_mm_loadu_ps(unit_hat.data() + j), _mm_loadu_ps(signs.data() + j)));
#endif
                for (; j < part.padded; ++j) unit_hat[j] += signs[j];
            }
            const auto scaled = unit_hat.first(part.channels.size());
            unfused_scale(scaled, norm, scaled);  // norm * unit_hat, never fused into the add below
            if (p.shape.output_type == dtype::bf16) {
                std::size_t i = 0;
#if defined(__SSE2__)
                if (part.channels.back() + 1 == part.channels.size())  // ascending channels ending at n - 1: channel i is i
                    for (; i + 4 <= part.channels.size(); i += 4)
                        _mm_storeu_ps(recon.data() + i, round_to_bf16_x4(_mm_add_ps(_mm_loadu_ps(pred.data() + i), _mm_loadu_ps(scaled.data() + i))));
#endif
                for (; i < part.channels.size(); ++i) {
                    const std::uint32_t c = part.channels[i];
                    recon[c] = round_to_bf16(pred[c] + scaled[i]);
                }
            } else {
                for (std::size_t i = 0; i < part.channels.size(); ++i) {
                    const std::uint32_t c = part.channels[i];
                    recon[c] = round_to_dtype(pred[c] + scaled[i], p.shape.output_type);
                }
            }
            s += part.padded * (qjl_ ? 2 : 1);
        }
    }
    // Unit vector estimate from codebook indices into y: s ⊙ H ŷ / P.
    static void mse_unit(const part& part, const lloyd_max_codebook& book, std::span<const std::uint16_t> indices,
                         std::span<float> y) {
        // Range check first (eight indices a step on SSE2: any index above size - 1 leaves a
        // nonzero saturated difference), then the lookups need no clamp.
        const auto last = static_cast<std::uint16_t>(book.size() - 1);
        bool in_range = true;
        std::uint32_t i = 0;
#if defined(__SSE2__)
        __m128i over = _mm_setzero_si128();
        for (; i + 8 <= part.padded; i += 8)
            over = _mm_or_si128(over, _mm_subs_epu16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(indices.data() + i)),
                                                     _mm_set1_epi16(std::int16_t(last))));
        in_range = _mm_movemask_epi8(_mm_cmpeq_epi8(over, _mm_setzero_si128())) == 0xFFFF;
#endif
        for (; i < part.padded; ++i) in_range = in_range && indices[i] <= last;
        if (!in_range) throw format_error("turbo: codebook index out of range");
        for (i = 0; i < part.padded; ++i) y[i] = book.level(indices[i]);
        part.rotation.inverse(y);  // levels estimate H(s ⊙ u)/norm, so this is the unit vector
    }
    params make_params(const block_shape& shape, std::vector<bool> outlier) const {
        params p{shape, std::move(outlier), {}};
        part regular, outliers;
        for (std::uint32_t c = 0; c < shape.cols; ++c) (p.outlier[c] ? outliers : regular).channels.push_back(c);
        regular.mse_bits = bits_ - (qjl_ ? 1 : 0);
        outliers.mse_bits = bits_ + 1 - (qjl_ ? 1 : 0);
        std::uint64_t k = 0;
        for (part* q : {&regular, &outliers}) {
            if (q->channels.empty()) continue;
            q->padded = next_power_of_two(std::uint32_t(q->channels.size()));
            q->rotation = random_hadamard(q->padded, seed_ + 2 * k);
            q->qjl_rotation = random_hadamard(q->padded, seed_ + 2 * k + 1);
            p.parts.push_back(std::move(*q));
            ++k;
        }
        return p;
    }

    unsigned bits_;
    float outlier_fraction_;
    bool qjl_;
    std::uint64_t seed_;
};
static_assert(Quantizer<turbo>);

}  // namespace seqkv::quant

SEQKV_FP_STRICT_END
