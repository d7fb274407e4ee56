// Parametric discretized models (Laplace, logistic, Gaussian) over an integer alphabet, named by
// a family, a quantized scale index and a center symbol: a few bits of side information instead
// of a whole frequency table. Tables are built with integer arithmetic only (a fixed-point exp,
// no libm), so encoder and decoder compute identical frequencies on every machine.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <tuple>
#include <vector>

#include "seqkv/coding/frequency_table.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

enum class parametric_family : std::uint8_t { laplace = 0, logistic = 1, gaussian = 2 };
inline constexpr unsigned parametric_family_count = 3;
/// Scale index i means scale s = 2^((i - 16) / 4) symbols: 1/16 ... ~55000, 4 steps per octave.
inline constexpr unsigned parametric_scale_count = 80;

/// Everything that determines a parametric table.
struct parametric_model_params {
    parametric_family family = parametric_family::laplace;
    std::uint32_t scale_index = 16;  // < parametric_scale_count
    std::uint32_t center = 0;        // symbol of the mode (residual 0)
    std::uint32_t alphabet_size = 1;
    unsigned precision_bits = 12;

    friend auto operator<=>(const parametric_model_params&, const parametric_model_params&) = default;
};

/// Scale of a scale index in symbols (informational; uses libm, never used to build tables).
inline double parametric_scale(std::uint32_t scale_index) { return std::exp2((static_cast<double>(scale_index) - 16.0) / 4.0); }

namespace detail {

constexpr std::uint64_t fixed_one_q62 = std::uint64_t{1} << 62;

/// exp(-y) in Q62 for y >= 0 given in Q48; integer-only, hence bit-identical everywhere.
/// Halves y until it is <= 1/16, sums 14 Taylor terms, then squares back.
inline std::uint64_t fixed_exp_neg_q62(std::uint64_t y_q48) {
    if (y_q48 >= (std::uint64_t{44} << 48)) return 0;  // exp(-44) < 2^-62
    __extension__ typedef __int128 int128;
    unsigned halvings = 0;
    while ((y_q48 >> halvings) > (std::uint64_t{1} << 44)) ++halvings;  // y / 2^m <= 1/16
    const int128 r = (static_cast<int128>(y_q48) << 14) >> halvings;  // Q62
    int128 term = static_cast<int128>(fixed_one_q62), sum = term;
    for (int j = 1; j <= 14; ++j) {
        term = -((term * r) >> 62) / j;
        sum += term;
    }
    auto value = static_cast<detail::uint128>(sum);
    for (unsigned m = 0; m < halvings; ++m) value = (value * value) >> 62;
    return static_cast<std::uint64_t>(value);
}

/// 1/s = 2^((16 - i) / 4) in Q48, from exact Q48 constants for 2^(r/4).
inline std::uint64_t inverse_scale_q48(std::uint32_t scale_index) {
    static constexpr std::uint64_t quarter_powers_q48[4] = {281474976710656ull, 334732044999537ull,
                                                            398065729532861ull, 473382597799227ull};
    const int exponent = 16 - static_cast<int>(scale_index);
    const int whole = exponent >= 0 ? exponent / 4 : -((-exponent + 3) / 4);
    const std::uint64_t c = quarter_powers_q48[exponent - 4 * whole];
    return whole >= 0 ? c << whole : c >> -whole;
}

inline std::uint64_t fixed_mul_q62(std::uint64_t a, std::uint64_t b) {
    return static_cast<std::uint64_t>((static_cast<detail::uint128>(a) * b) >> 62);
}

/// Unnormalized Q62 weights of offsets 0, 1, 2, ... (the families are symmetric around 0).
inline std::vector<std::uint64_t> one_sided_weights(parametric_family family, std::uint32_t scale_index, std::size_t count) {
    std::vector<std::uint64_t> w(count, 0);
    const std::uint64_t inv_scale = inverse_scale_q48(scale_index);
    const std::uint64_t theta = fixed_exp_neg_q62(inv_scale);  // exp(-1/s)
    switch (family) {
        case parametric_family::laplace: {  // theta^k
            std::uint64_t t = fixed_one_q62;
            for (std::size_t k = 0; k < count; ++k, t = fixed_mul_q62(t, theta)) w[k] = t;
            break;
        }
        case parametric_family::gaussian: {  // rho^(k^2), rho = exp(-1/(2 s^2))
            const std::uint64_t half_inv_var = static_cast<std::uint64_t>(
                (static_cast<detail::uint128>(inv_scale) * inv_scale) >> 49);
            const std::uint64_t rho = fixed_exp_neg_q62(half_inv_var);
            const std::uint64_t rho_squared = fixed_mul_q62(rho, rho);
            std::uint64_t a = fixed_one_q62, b = rho;  // a = rho^(k^2), b = rho^(2k+1)
            for (std::size_t k = 0; k < count; ++k) {
                w[k] = a;
                a = fixed_mul_q62(a, b);
                b = fixed_mul_q62(b, rho_squared);
            }
            break;
        }
        case parametric_family::logistic: {  // F(k+1/2) - F(k-1/2), F(z) = 1 / (1 + exp(-z/s))
            std::uint64_t u = fixed_exp_neg_q62(inv_scale / 2);  // exp(-(k+1/2)/s)
            auto cdf_q62 = [](std::uint64_t e) {
                return static_cast<std::uint64_t>((detail::uint128{1} << 124) / (detail::uint128{fixed_one_q62} + e));
            };
            std::uint64_t previous = fixed_one_q62 - cdf_q62(u);  // F(-1/2) = 1 - F(1/2)
            for (std::size_t k = 0; k < count; ++k, u = fixed_mul_q62(u, theta)) {
                const std::uint64_t cdf = cdf_q62(u);
                w[k] = cdf - std::min(cdf, previous);
                previous = cdf;
            }
            break;
        }
    }
    return w;
}

}  // namespace detail

/// Builds the frequency table of a parametric model. Every symbol gets frequency >= 1, so any
/// residual stays codable; requires alphabet_size <= 2^precision_bits.
inline frequency_table parametric_table(const parametric_model_params& p) {
    require_usage(static_cast<unsigned>(p.family) < parametric_family_count, "parametric_table: unknown family");
    require_usage(p.scale_index < parametric_scale_count, "parametric_table: scale_index out of range");
    require_usage(p.alphabet_size >= 1 && p.alphabet_size <= max_alphabet_size && p.center < p.alphabet_size,
                  "parametric_table: bad alphabet or center");
    require_usage(p.precision_bits >= min_precision_bits && p.precision_bits <= max_precision_bits &&
                      p.alphabet_size <= (1u << p.precision_bits),
                  "parametric_table: alphabet larger than 2^precision_bits");
    const std::size_t reach = std::max<std::size_t>(p.center + 1, p.alphabet_size - p.center);
    const auto one_sided = detail::one_sided_weights(p.family, p.scale_index, reach);
    std::vector<std::uint64_t> weights(p.alphabet_size);
    for (std::uint32_t s = 0; s < p.alphabet_size; ++s) {
        const std::uint32_t offset = s >= p.center ? s - p.center : p.center - s;
        weights[s] = std::max<std::uint64_t>(one_sided[offset], 1);
    }
    return frequency_table::from_counts(weights, p.precision_bits);
}

/// Code length in bits of a histogram under a table (infinite if a counted symbol has frequency 0).
inline double code_length_bits(std::span<const std::uint64_t> counts, const frequency_table& table) {
    double bits = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if (counts[s] == 0) continue;
        if (s >= table.alphabet_size() || table.frequency(static_cast<std::uint32_t>(s)) == 0)
            return std::numeric_limits<double>::infinity();
        bits += static_cast<double>(counts[s]) *
                (table.precision_bits() - std::log2(static_cast<double>(table.frequency(static_cast<std::uint32_t>(s)))));
    }
    return bits;
}

namespace detail {
/// A parametric table and each symbol's code length under it (precision - log2 frequency; filled
/// on the first encoder lookup).
struct parametric_entry {
    frequency_table table;
    std::vector<double> bits;
};
/// Per-thread memo: fit_parametric tries ~7 scales of 3 families for every context, and the
/// contexts of a stream share their centres and scales, so most tables repeat (decoders too).
/// Bounded whatever parameters a file names: each entry is charged its symbols plus 64 for the
/// map node and the vectors' headers, and the memo is cleared past 2^18 (a few MB a thread). A
/// reference stays valid until the thread's next call.
inline parametric_entry& cached_parametric(const parametric_model_params& p) {
    thread_local std::map<parametric_model_params, parametric_entry> cache;
    thread_local std::size_t charged = 0;
    auto it = cache.find(p);
    if (it != cache.end()) return it->second;
    const std::size_t cost = std::size_t(p.alphabet_size) + 64;
    if (charged + cost > (std::size_t{1} << 18)) cache.clear(), charged = 0;
    charged += cost;
    return cache.emplace(p, parametric_entry{parametric_table(p), {}}).first->second;
}
/// The memo's entry with its code lengths (encoders).
inline const parametric_entry& cached_parametric_lengths(const parametric_model_params& p) {
    parametric_entry& e = cached_parametric(p);
    if (e.bits.empty()) {
        e.bits.resize(p.alphabet_size);
        for (std::uint32_t s = 0; s < p.alphabet_size; ++s)  // every parametric frequency is >= 1
            e.bits[s] = e.table.precision_bits() - std::log2(static_cast<double>(e.table.frequency(s)));
    }
    return e;
}
/// code_length_bits(counts, table) from the cached lengths: the same terms summed in the same order.
inline double code_length_bits(std::span<const std::uint64_t> counts, const parametric_entry& e) {
    double bits = 0;
    for (std::size_t s = 0; s < counts.size(); ++s)
        if (counts[s] != 0) bits += static_cast<double>(counts[s]) * e.bits[s];
    return bits;
}
}  // namespace detail

/// Encoder-side fit: picks the scale index minimizing the histogram's code length for the given
/// family, center and precision (moment estimate, then a local search). Returns params and bits.
inline std::pair<parametric_model_params, double> fit_parametric(parametric_family family, std::span<const std::uint64_t> counts,
                                                                 std::uint32_t center, unsigned precision_bits) {
    parametric_model_params p{family, 16, center, static_cast<std::uint32_t>(counts.size()), precision_bits};
    double n = 0, mean_abs = 0, mean_square = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        const double d = static_cast<double>(s) - center, c = static_cast<double>(counts[s]);
        n += c;
        mean_abs += c * std::abs(d);
        mean_square += c * d * d;
    }
    double scale = 1;
    if (n > 0) {
        mean_abs /= n;
        mean_square /= n;
        scale = family == parametric_family::laplace  ? std::max(mean_abs, 1e-3)
              : family == parametric_family::gaussian ? std::sqrt(std::max(mean_square, 1e-6))
                                                      : std::sqrt(3 * std::max(mean_square, 1e-6)) / 3.14159265358979;
    }
    const int guess = static_cast<int>(std::lround(4 * std::log2(scale))) + 16;
    double best_bits = std::numeric_limits<double>::infinity();
    parametric_model_params best = p;
    for (int i = guess - 3; i <= guess + 3; ++i) {
        if (i < 0 || i >= static_cast<int>(parametric_scale_count)) continue;
        p.scale_index = static_cast<std::uint32_t>(i);
        const double bits = detail::code_length_bits(counts, detail::cached_parametric_lengths(p));
        if (bits < best_bits) {
            best_bits = bits;
            best = p;
        }
    }
    return {best, best_bits};
}

/// Memoizes parametric tables (decoders see the same few parameter sets over and over); a table
/// missing here comes from the thread's memo (detail::cached_parametric) before it is built.
class parametric_table_cache {
public:
    const frequency_table& get(const parametric_model_params& p) {
        auto it = tables_.find(p);
        if (it == tables_.end()) it = tables_.emplace(p, detail::cached_parametric(p).table).first;
        return it->second;
    }
    std::size_t size() const { return tables_.size(); }

private:
    std::map<parametric_model_params, frequency_table> tables_;
};

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
