// Static normalized frequency tables: integer frequencies summing to exactly 2^precision_bits,
// built deterministically from counts, with a compact serialization.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <queue>
#include <span>
#include <string>
#include <vector>

#include "seqkv/coding/varint.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

namespace detail {
__extension__ typedef unsigned __int128 uint128;  // exact products of 64-bit counts
}

/// Largest alphabet any seqkv coder accepts (symbols are uint16).
inline constexpr std::uint32_t max_alphabet_size = 1u << 16;
/// Frequency precision range: frequencies sum to 2^precision_bits.
inline constexpr unsigned min_precision_bits = 1;
inline constexpr unsigned max_precision_bits = 16;

namespace detail {
/// The first steps of normalize_counts' excess path in bulk: lowers freq (entries > 1 only) by
/// at most `excess` units in total, exactly as that many greedy steps would, and returns how
/// many it took (0 when the check below does not pass: the heap then takes every step).
inline std::uint64_t bulk_excess_removal(std::span<const std::uint64_t> counts, std::span<std::uint32_t> freq,
                                         std::uint64_t excess) {
    std::vector<std::uint32_t> cand;
    std::vector<double> cd, fd;  // the candidates' counts and frequencies
    double weight = 0, held = 0;
    for (std::uint32_t s = 0; s < counts.size(); ++s)
        if (freq[s] > 1) {
            cand.push_back(s);
            cd.push_back(static_cast<double>(counts[s]));
            fd.push_back(freq[s]);
            weight += cd.back(), held += fd.back();
        }
    if (cand.size() < 8 || excess < 16) return 0;  // few steps: the heap alone is as quick
    // What each candidate keeps at scale mu: max(1, floor(c mu + 1/2)) capped at its f (the cap
    // first, so the truncation sees at most f < 2^17).
    auto keep = [](double c, double f, double mu) { return std::max(1.0, std::trunc(std::min(c * mu + 0.5, f))); };
    auto removed = [&](double mu) {
        double r = 0;
        for (std::size_t i = 0; i < cd.size(); ++i) r += fd[i] - keep(cd[i], fd[i], mu);
        return r;
    };
    // removed() falls as mu grows: bracket the smallest mu removing <= excess (lo removes more,
    // hi at most excess), then close in by interpolation (bisecting when it stalls) until hi
    // leaves only a few steps to the heap.
    const double want = static_cast<double>(excess);
    double hi = held / weight, r_hi = removed(hi);
    while (r_hi > want) hi *= 2, r_hi = removed(hi);
    double lo = hi * (held - want) / held, r_lo = removed(lo);
    while (r_lo <= want) {  // the guess removes too little: it is a better hi
        hi = lo, r_hi = r_lo;
        if (r_hi == want || lo < 1e-300) break;
        lo *= 0.5, r_lo = removed(lo);
    }
    for (int i = 0; i < 60 && want - r_hi > 4 && hi - lo > hi * 0x1p-45; ++i) {
        double mid = lo + (hi - lo) * ((r_lo - want) / (r_lo - r_hi));
        if (i % 3 == 2 || !(mid > lo && mid < hi)) mid = 0.5 * (lo + hi);  // keep halving the bracket
        const double r = removed(mid);
        (r > want ? lo : hi) = mid;
        (r > want ? r_lo : r_hi) = r;
    }
    using u128 = uint128;
    // Removal (c, d) = cost c / d, symbol s; `a before b` in the greedy's order.
    auto before = [](std::uint64_t ca, std::uint64_t da, std::uint32_t sa, std::uint64_t cb, std::uint64_t db, std::uint32_t sb) {
        const u128 lhs = u128{ca} * db, rhs = u128{cb} * da;
        return lhs != rhs ? lhs < rhs : sa > sb;
    };
    std::vector<std::uint32_t> kept(cand.size());
    std::uint64_t taken = 0;
    bool any_taken = false, any_left = false;
    std::uint64_t last_c = 0, last_d = 1, next_c = 0, next_d = 1;  // dearest removal taken, cheapest left
    std::uint32_t last_s = 0, next_s = 0;
    for (std::size_t i = 0; i < cand.size(); ++i) {
        const std::uint32_t s = cand[i], f = freq[s];
        const auto k = static_cast<std::uint32_t>(keep(cd[i], fd[i], hi));
        kept[i] = k;
        taken += f - k;
        if (k < f && (!any_taken || before(last_c, last_d, last_s, counts[s], 2ull * k + 1, s)))
            last_c = counts[s], last_d = 2ull * k + 1, last_s = s, any_taken = true;  // removal at f = k + 1
        if (k > 1 && (!any_left || before(counts[s], 2ull * k - 1, s, next_c, next_d, next_s)))
            next_c = counts[s], next_d = 2ull * k - 1, next_s = s, any_left = true;   // removal at f = k
    }
    if (!any_taken || taken > excess) return 0;
    if (any_left && !before(last_c, last_d, last_s, next_c, next_d, next_s)) return 0;
    for (std::size_t i = 0; i < cand.size(); ++i) freq[cand[i]] = kept[i];
    return taken;
}
}  // namespace detail

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
    // c * target / total in 64 bits where it fits (the same quotient, without a 128-bit division).
    const bool narrow = total <= u128{~std::uint64_t{0}};
    const std::uint64_t narrow_total = static_cast<std::uint64_t>(total), narrow_count_limit = ~std::uint64_t{0} >> precision_bits;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if (counts[s] == 0) continue;
        const std::uint64_t scaled = narrow && counts[s] <= narrow_count_limit
                                         ? (counts[s] << precision_bits) / narrow_total
                                         : static_cast<std::uint64_t>(u128{counts[s]} * target / total);
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
        // The greedy takes the cheapest removal each step (cost c / (2f - 1), ties: higher symbol
        // first); a symbol's costs rise as its f falls, so its K steps are the K cheapest removals
        // of all. Most of them are taken in bulk first: every f becomes min(f, max(1, round(c mu)))
        // for the smallest mu (found in doubles) that removes at most K units, the bulk is kept
        // only when exact 128-bit comparisons show its dearest removal cheaper than every one
        // left (so it is the greedy's own first steps), and the heap takes the rest.
        sum -= detail::bulk_excess_removal(counts, freq, sum - target);
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

SEQKV_FP_STRICT_END
