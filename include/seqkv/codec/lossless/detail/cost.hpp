// Encoder-side size estimates for the lossless plane codec: the static-table rANS cost of a
// histogram (ideal code length plus an estimate of its serialized table) without encoding it.
// Only the encoder uses these numbers (to choose predictor, classes, plane modes), so they need
// not be bit-reproducible; the decoder never sees them.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace seqkv::lossless::cost {

/// c * log2(c) for small counts from a table, larger ones computed.
inline double count_log2_count(std::uint64_t c) {
    static const std::vector<double> table = [] {
        std::vector<double> t(std::size_t{1} << 16);
        for (std::size_t i = 1; i < t.size(); ++i) t[i] = double(i) * std::log2(double(i));
        return t;
    }();
    return c < table.size() ? table[c] : double(c) * std::log2(double(c));
}

/// Fixed bytes of a coded rANS byte block beyond its tables: kind, precision, varints, 32 lane states.
inline constexpr double rans_block_overhead_bits = 8.0 * (2 + 3 + 1 + 1 + 3 + 4 * 32);

/// Ideal code length in bits of a 256-symbol histogram under its own static table, plus the
/// estimated table record (varint tag, one gap byte per used symbol, 1-2 frequency bytes).
/// scale > 1: the histogram counts a sample of 1/scale of the data; its code length is scaled up
/// (the table record is not).
inline double histogram_bits(const std::uint32_t* counts, std::uint32_t alphabet = 256, double scale = 1.0) {
    std::uint64_t total = 0;
    double sum_clogc = 0;
    std::uint32_t used = 0, wide = 0;
    for (std::uint32_t s = 0; s < alphabet; ++s) {
        const std::uint32_t c = counts[s];
        total += c;
        if (c) {
            ++used;
            sum_clogc += count_log2_count(c);
        }
    }
    if (total == 0) return 8.0;
    for (std::uint32_t s = 0; s < alphabet; ++s)
        if (counts[s] && std::uint64_t(counts[s]) * 4096 > std::uint64_t(129) * total) ++wide;
    const double table_bits = 8.0 * (1 + (used > 63) + 2.0 * used + wide);
    return scale * (count_log2_count(total) - sum_clogc) + table_bits;
}

/// Entropy in bits of a binary split (n0 zeros, n1 ones), no side information.
inline double binary_bits(std::uint64_t n0, std::uint64_t n1) {
    return count_log2_count(n0 + n1) - count_log2_count(n0) - count_log2_count(n1);
}

}  // namespace seqkv::lossless::cost
