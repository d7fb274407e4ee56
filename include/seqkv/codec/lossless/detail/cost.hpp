// Encoder-side size estimates for the lossless plane codec: the static-table rANS cost of a
// histogram (ideal code length plus an estimate of its serialized table) without encoding it.
// Only the encoder uses these numbers (to choose predictor, classes, plane modes), so they need
// not be bit-reproducible; the decoder never sees them.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossless::cost {

/// Counts below this come from the table (c · log2 c, 0 at 0).
inline constexpr std::uint32_t count_log2_table_size = std::uint32_t{1} << 16;
inline const double* count_log2_table() {
    static const std::vector<double> table = [] {
        std::vector<double> t(count_log2_table_size);
        for (std::size_t i = 1; i < t.size(); ++i) t[i] = double(i) * std::log2(double(i));
        return t;
    }();
    return table.data();
}
/// c * log2(c) for small counts from a table, larger ones computed.
inline double count_log2_count(std::uint64_t c) {
    return c < count_log2_table_size ? count_log2_table()[c] : double(c) * std::log2(double(c));
}

/// Fixed bytes of a coded rANS byte block beyond its tables: kind, precision, varints, 32 lane states.
inline constexpr double rans_block_overhead_bits = 8.0 * (2 + 3 + 1 + 1 + 3 + 4 * 32);

namespace detail {
/// The histogram cost of n counts: count(j) is entry j's count, lane(j) the partial sum it adds
/// into (four partial sums: a single one chains every addition's latency). Table lookups inline
/// (0 for an empty entry), the rare counts past the table computed after the pass, lane by lane.
template <class Count, class Lane>
inline double histogram_bits_of(std::uint32_t n, Count count, Lane lane, double scale) {
    std::uint64_t total = 0;
    std::uint32_t used = 0, wide = 0;
    const double* table = count_log2_table();
    double part[4] = {0, 0, 0, 0};
    std::uint32_t large[4][64];
    std::uint32_t n_large[4] = {0, 0, 0, 0};
    for (std::uint32_t j = 0; j < n; ++j) {
        const std::uint32_t c = count(j), l = lane(j);
        total += c;
        used += c != 0;
        const bool small = c < count_log2_table_size;
        part[l] += table[small ? c : 0];
        if (!small) {
            if (n_large[l] < 64) large[l][n_large[l]++] = c;
            else part[l] += count_log2_count(c);
        }
    }
    for (std::uint32_t l = 0; l < 4; ++l)
        for (std::uint32_t i = 0; i < n_large[l]; ++i) part[l] += count_log2_count(large[l][i]);
    const double sum_clogc = (part[0] + part[1]) + (part[2] + part[3]);
    if (total == 0) return 8.0;
    for (std::uint32_t j = 0; j < n; ++j) wide += count(j) && std::uint64_t(count(j)) * 4096 > std::uint64_t(129) * total;
    const double table_bits = 8.0 * (1 + (used > 63) + 2.0 * used + wide);
    return scale * (count_log2_count(total) - sum_clogc) + table_bits;
}
}  // namespace detail

/// Ideal code length in bits of a 256-symbol histogram under its own static table, plus the
/// estimated table record (varint tag, one gap byte per used symbol, 1-2 frequency bytes).
/// scale > 1: the histogram counts a sample of 1/scale of the data; its code length is scaled up
/// (the table record is not). Symbol s adds into partial sum s % 4 (a tail past the last multiple
/// of four: sum 0).
inline double histogram_bits(const std::uint32_t* counts, std::uint32_t alphabet = 256, double scale = 1.0) {
    const std::uint32_t quads = alphabet & ~3u;
    return detail::histogram_bits_of(
        alphabet, [counts](std::uint32_t s) { return counts[s]; }, [quads](std::uint32_t s) { return s < quads ? s & 3u : 0u; }, scale);
}

/// histogram_bits of a 256-symbol histogram from its possibly nonzero entries only: counts[j] is
/// the count of symbol symbols[j] (symbols ascending, every other symbol's count 0). Returns the
/// same double as histogram_bits of the full histogram: every symbol adds into the partial sum of
/// lane symbol % 4 in the same order (the skipped symbols add +0.0), and the integer totals match.
inline double histogram_bits_sparse(const std::uint32_t* counts, const std::uint8_t* symbols, std::uint32_t n, double scale = 1.0) {
    return detail::histogram_bits_of(
        n, [counts](std::uint32_t j) { return counts[j]; }, [symbols](std::uint32_t j) { return symbols[j] & 3u; }, scale);
}

/// Entropy in bits of a binary split (n0 zeros, n1 ones), no side information.
inline double binary_bits(std::uint64_t n0, std::uint64_t n1) {
    return count_log2_count(n0 + n1) - count_log2_count(n0) - count_log2_count(n1);
}

}  // namespace seqkv::lossless::cost

SEQKV_FP_STRICT_END
