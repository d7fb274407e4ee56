// Static normalized frequency tables: integer frequencies summing to exactly 2^precision_bits,
// built deterministically from counts, with a compact serialization.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <queue>
#include <span>
#include <string>
#include <vector>

#include "seqkv/coding/varint.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"

namespace seqkv::coding {

namespace detail {
__extension__ typedef unsigned __int128 uint128;  // exact products of 64-bit counts
}

/// Largest alphabet any seqkv coder accepts (symbols are uint16).
inline constexpr std::uint32_t max_alphabet_size = 1u << 16;
/// Frequency precision range: frequencies sum to 2^precision_bits.
inline constexpr unsigned min_precision_bits = 1;
inline constexpr unsigned max_precision_bits = 16;

/// Scales counts to integer frequencies summing to 2^precision_bits; every symbol with a nonzero
/// count gets frequency >= 1, symbols with zero count get 0. Pure integer arithmetic with a total
/// order on ties, so every machine computes the same table. All-zero counts give all zeros.
inline std::vector<std::uint32_t> normalize_counts(std::span<const std::uint64_t> counts, unsigned precision_bits) {
    require_usage(precision_bits >= min_precision_bits && precision_bits <= max_precision_bits,
                  "normalize_counts: precision_bits out of range");
    require_usage(counts.size() <= max_alphabet_size, "normalize_counts: alphabet too large");
    using u128 = detail::uint128;
    const std::uint64_t target = std::uint64_t{1} << precision_bits;
    std::vector<std::uint32_t> freq(counts.size(), 0);
    u128 total = 0;
    std::uint64_t used = 0;
    for (auto c : counts) {
        total += c;
        used += (c != 0);
    }
    if (total == 0) return freq;
    require_usage(used <= target, "normalize_counts: more distinct symbols than 2^precision_bits");

    std::uint64_t sum = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if (counts[s] == 0) continue;
        const auto scaled = static_cast<std::uint64_t>(u128{counts[s]} * target / total);
        freq[s] = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, scaled));
        sum += freq[s];
    }
    // Code-length change of f -> f±1 for a symbol seen c times is ~ c / (f ± 1/2); compare the
    // fractions c / (2f ± 1) exactly by cross-multiplication, ties broken by symbol index.
    struct candidate {
        std::uint64_t count;
        std::uint64_t denominator;  // 2f+1 (increment) or 2f-1 (decrement)
        std::uint32_t symbol;
    };
    auto greater_gain = [](const candidate& a, const candidate& b) {
        const u128 lhs = u128{a.count} * b.denominator, rhs = u128{b.count} * a.denominator;
        return lhs != rhs ? lhs > rhs : a.symbol < b.symbol;
    };
    if (sum < target) {  // hand out the missing units where they gain the most
        auto lower_priority = [&](const candidate& a, const candidate& b) { return greater_gain(b, a); };
        std::priority_queue<candidate, std::vector<candidate>, decltype(lower_priority)> heap(lower_priority);
        for (std::uint32_t s = 0; s < counts.size(); ++s)
            if (counts[s] != 0) heap.push({counts[s], 2ull * freq[s] + 1, s});
        for (; sum < target; ++sum) {
            candidate best = heap.top();
            heap.pop();
            ++freq[best.symbol];
            heap.push({best.count, 2ull * freq[best.symbol] + 1, best.symbol});
        }
    } else if (sum > target) {  // take back the excess where it costs the least
        std::priority_queue<candidate, std::vector<candidate>, decltype(greater_gain)> heap(greater_gain);
        for (std::uint32_t s = 0; s < counts.size(); ++s)
            if (freq[s] > 1) heap.push({counts[s], 2ull * freq[s] - 1, s});
        for (; sum > target; --sum) {
            candidate cheapest = heap.top();
            heap.pop();
            --freq[cheapest.symbol];
            if (freq[cheapest.symbol] > 1)
                heap.push({cheapest.count, 2ull * freq[cheapest.symbol] - 1, cheapest.symbol});
        }
    }
    return freq;
}

/// Integer model over symbols [0, alphabet_size): frequency(s)/2^precision_bits is the
/// probability of s. Invariant: frequencies sum to 2^precision_bits, or all are zero ("empty":
/// a context that never occurs). cumulative(s) = sum of frequencies below s.
class frequency_table {
public:
    frequency_table() = default;

    /// Adopts exact frequencies; throws usage_error unless they sum to 2^precision_bits (or are all 0).
    static frequency_table from_frequencies(std::vector<std::uint32_t> frequencies, unsigned precision_bits) {
        require_usage(precision_bits >= min_precision_bits && precision_bits <= max_precision_bits,
                      "frequency_table: precision_bits out of range");
        require_usage(!frequencies.empty() && frequencies.size() <= max_alphabet_size,
                      "frequency_table: alphabet size out of range");
        frequency_table t;
        t.precision_bits_ = precision_bits;
        t.freq_ = std::move(frequencies);
        t.cum_.resize(t.freq_.size() + 1);
        std::uint64_t sum = 0;
        for (std::size_t s = 0; s < t.freq_.size(); ++s) {
            t.cum_[s] = static_cast<std::uint32_t>(sum);
            sum += t.freq_[s];
            require_usage(sum <= (std::uint64_t{1} << precision_bits), "frequency_table: frequencies exceed total");
        }
        require_usage(sum == 0 || sum == (std::uint64_t{1} << precision_bits),
                      "frequency_table: frequencies must sum to 2^precision_bits");
        t.cum_.back() = static_cast<std::uint32_t>(sum);
        return t;
    }
    /// Normalizes a histogram (see normalize_counts).
    static frequency_table from_counts(std::span<const std::uint64_t> counts, unsigned precision_bits) {
        return from_frequencies(normalize_counts(counts, precision_bits), precision_bits);
    }

    unsigned precision_bits() const { return precision_bits_; }
    std::uint32_t alphabet_size() const { return static_cast<std::uint32_t>(freq_.size()); }
    /// Sum of all frequencies: 2^precision_bits, or 0 for an empty table.
    std::uint32_t total() const { return cum_.empty() ? 0 : cum_.back(); }
    bool empty() const { return total() == 0; }
    std::uint32_t frequency(std::uint32_t symbol) const { return freq_[symbol]; }
    std::uint32_t cumulative(std::uint32_t symbol) const { return cum_[symbol]; }
    std::span<const std::uint32_t> frequencies() const { return freq_; }
    /// Number of symbols with nonzero frequency.
    std::uint32_t used_symbols() const {
        return static_cast<std::uint32_t>(std::count_if(freq_.begin(), freq_.end(), [](auto f) { return f != 0; }));
    }

    /// Writes the table: varint used-symbol count, then serialize_entries. Alphabet size and
    /// precision are not written; the reader supplies them.
    void serialize(byte_writer& out) const {
        put_varint(out, used_symbols());
        serialize_entries(out);
    }
    /// Writes, per used symbol, a varint gap to the previous used symbol and (except for the
    /// last, implied by the total) varint frequency-1.
    void serialize_entries(byte_writer& out) const {
        const std::uint32_t used = used_symbols();
        std::uint32_t next = 0, written = 0;
        for (std::uint32_t s = 0; s < freq_.size(); ++s) {
            if (freq_[s] == 0) continue;
            put_varint(out, s - next);
            next = s + 1;
            if (++written < used) put_varint(out, freq_[s] - 1);
        }
    }
    /// Reads a table written by serialize; validates everything and throws format_error on
    /// gaps past the alphabet, zero or overflowing frequencies, or a wrong total.
    static frequency_table deserialize(byte_reader& in, std::uint32_t alphabet_size, unsigned precision_bits) {
        require_usage(precision_bits >= min_precision_bits && precision_bits <= max_precision_bits,
                      "frequency_table: precision_bits out of range");
        const auto used = get_varint(in, std::min<std::uint64_t>(alphabet_size, std::uint64_t{1} << precision_bits));
        return deserialize_entries(in, static_cast<std::uint32_t>(used), alphabet_size, precision_bits);
    }
    /// Reads the entries of a table with used_symbols nonzero frequencies (see serialize_entries).
    static frequency_table deserialize_entries(byte_reader& in, std::uint32_t used_symbols, std::uint32_t alphabet_size,
                                               unsigned precision_bits) {
        require_usage(alphabet_size >= 1 && alphabet_size <= max_alphabet_size, "frequency_table: bad alphabet size");
        require_usage(precision_bits >= min_precision_bits && precision_bits <= max_precision_bits,
                      "frequency_table: precision_bits out of range");
        const std::uint64_t target = std::uint64_t{1} << precision_bits;
        if (used_symbols > alphabet_size || used_symbols > target) throw format_error("frequency table: too many symbols");
        std::vector<std::uint32_t> freq(alphabet_size, 0);
        std::uint64_t next = 0, sum = 0;
        for (std::uint32_t i = 0; i < used_symbols; ++i) {
            const std::uint64_t symbol = next + get_varint(in, alphabet_size);
            if (symbol >= alphabet_size) throw format_error("frequency table: symbol beyond alphabet");
            next = symbol + 1;
            const std::uint64_t f = (i + 1 < used_symbols) ? get_varint(in, target - 1) + 1 : target - sum;
            if (f == 0 || sum + f > target) throw format_error("frequency table: frequencies do not sum to total");
            freq[symbol] = static_cast<std::uint32_t>(f);
            sum += f;
        }
        return from_frequencies(std::move(freq), precision_bits);
    }

private:
    unsigned precision_bits_ = 0;
    std::vector<std::uint32_t> freq_;
    std::vector<std::uint32_t> cum_;  // alphabet_size + 1 entries
};

/// Histogram of symbols (values must be < alphabet_size; throws usage_error otherwise).
template <class Symbol>
std::vector<std::uint64_t> histogram(std::span<const Symbol> symbols, std::uint32_t alphabet_size) {
    std::vector<std::uint64_t> counts(alphabet_size, 0);
    for (auto s : symbols) {
        require_usage(s < alphabet_size, "histogram: symbol outside alphabet");
        ++counts[s];
    }
    return counts;
}

}  // namespace seqkv::coding
