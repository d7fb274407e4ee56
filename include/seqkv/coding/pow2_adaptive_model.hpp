// Fast adaptive model for the range coder: counts adapt with every symbol, but the coding
// distribution is rebuilt only every `period` symbols into integer frequencies summing to exactly
// 2^precision_bits. Coding then costs a shift (encode) and a shift plus a bucket lookup (decode)
// instead of a division by an arbitrary total and a Fenwick descent.
//
// Invariants (integer arithmetic only, so encoder and decoder hold identical state after the
// same symbol sequence):
//   * cumulative_[alphabet_size] = 2^P and every symbol has frequency >= 1 (always codable);
//   * bucket_first_[b] = the symbol whose subrange holds slot b << (P - lookup_bits), so the
//     symbol of slot t is found by scanning up from bucket_first_[t >> (P - lookup_bits)];
//   * total of counts <= count_limit (counts are halved on a rebuild past it: old data fades).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "seqkv/coding/frequency_table.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

/// Order-0 adaptive model over [0, alphabet_size) with power-of-two totals (see file comment).
class pow2_adaptive_model {
public:
    /// Largest frequency precision: keeps range >> P >= 16 and the truncation loss below ~0.5 %.
    static constexpr unsigned max_model_precision_bits = 20;
    /// Largest decode bucket table (2^16 u16 entries, 128 KiB).
    static constexpr unsigned max_lookup_bits = 16;

    /// precision_bits = 0 picks bit_width(alphabet_size - 1) + 8 clamped to [12, 20]; count_limit
    /// bounds the count total, i.e. the adaptation window in symbols (0 = max(2^13, 16 *
    /// alphabet_size): on 256 symbols 2^13 costs ~0.1 % on stationary data against 2^16 and
    /// follows a distribution shift several times faster; large alphabets need more counts).
    explicit pow2_adaptive_model(std::uint32_t alphabet_size, unsigned precision_bits = 0,
                                 std::uint32_t count_limit = 0)
        : counts_(alphabet_size, 0), cumulative_(alphabet_size + 1, 0) {
        require_usage(alphabet_size >= 1 && alphabet_size <= max_alphabet_size,
                      "pow2_adaptive_model: alphabet size out of range");
        const auto symbol_bits = static_cast<unsigned>(std::bit_width(alphabet_size - 1));
        if (precision_bits == 0) precision_bits = std::clamp(symbol_bits + 8, 12u, max_model_precision_bits);
        require_usage(precision_bits <= max_model_precision_bits && (std::uint64_t{1} << precision_bits) >= 2ull * alphabet_size,
                      "pow2_adaptive_model: precision_bits must give every symbol room (2^P >= 2 * alphabet_size, P <= 20)");
        if (count_limit == 0) count_limit = std::max<std::uint32_t>(1u << 13, 16 * alphabet_size);
        count_limit_ = count_limit;
        require_usage(count_limit >= 2 && count_limit <= (1u << 24), "pow2_adaptive_model: count_limit out of range");
        precision_bits_ = precision_bits;
        lookup_bits_ = std::min({precision_bits, symbol_bits + 4, max_lookup_bits});
        bucket_first_.assign((std::size_t{1} << lookup_bits_), 0);
        // Rebuild often while little is known, then every max_period_ symbols (amortizes O(A + 2^lookup_bits)).
        period_ = std::max<std::uint32_t>(16, alphabet_size / 64);
        max_period_ = std::max<std::uint32_t>(1024, alphabet_size / 2);
        rebuild();
    }

    std::uint32_t alphabet_size() const { return static_cast<std::uint32_t>(counts_.size()); }
    unsigned precision_bits() const { return precision_bits_; }
    /// Coding frequency of symbol (frequencies sum to 2^precision_bits).
    std::uint32_t frequency(std::uint32_t symbol) const { return cumulative_[symbol + 1] - cumulative_[symbol]; }
    /// Sum of coding frequencies below symbol.
    std::uint32_t cumulative(std::uint32_t symbol) const { return cumulative_[symbol]; }
    /// The symbol whose subrange holds slot (< 2^precision_bits).
    std::uint32_t symbol_of_slot(std::uint32_t slot) const {
        std::uint32_t symbol = bucket_first_[slot >> (precision_bits_ - lookup_bits_)];
        while (cumulative_[symbol + 1] <= slot) ++symbol;  // stops at alphabet_size-1: cumulative_.back() = 2^P
        return symbol;
    }
    /// Records one occurrence of symbol; rebuilds the coding distribution every period symbols.
    void update(std::uint32_t symbol) {
        ++counts_[symbol];
        ++count_total_;
        if (--until_rebuild_ == 0) rebuild();
    }

private:
    // frequency(s) = 1 + floor(count(s) * (2^P - A) / total) through a 32.32 fixed-point
    // reciprocal (never rounds up, so the sum stays <= 2^P); the shortfall (< number of seen
    // symbols + 1) goes to the most frequent symbol.
    void rebuild() {
        if (count_total_ > count_limit_) {
            count_total_ = 0;
            for (auto& c : counts_) count_total_ += (c >>= 1);
        }
        const std::uint32_t alphabet = alphabet_size();
        const std::uint64_t spare = (std::uint64_t{1} << precision_bits_) - alphabet;
        std::uint32_t sum = 0;
        if (count_total_ == 0) {  // no data yet: uniform
            for (std::uint32_t s = 0; s < alphabet; ++s) {
                cumulative_[s] = sum;
                sum += 1 + static_cast<std::uint32_t>(spare / alphabet);
            }
            cumulative_[alphabet] = 1u << precision_bits_;  // the last symbol takes the remainder
        } else {
            const std::uint64_t scale = (spare << 32) / count_total_;
            std::uint32_t most_frequent = 0;
            for (std::uint32_t s = 0; s < alphabet; ++s) {
                cumulative_[s] = sum;
                sum += 1 + static_cast<std::uint32_t>((std::uint64_t{counts_[s]} * scale) >> 32);
                if (counts_[s] > counts_[most_frequent]) most_frequent = s;
            }
            cumulative_[alphabet] = sum;
            const std::uint32_t shortfall = (1u << precision_bits_) - sum;
            for (std::uint32_t s = most_frequent + 1; s <= alphabet; ++s) cumulative_[s] += shortfall;
        }
        const unsigned bucket_shift = precision_bits_ - lookup_bits_;
        const std::uint32_t bucket_count = 1u << lookup_bits_;
        std::uint32_t bucket = 0;
        for (std::uint32_t s = 0; s < alphabet && bucket < bucket_count; ++s)
            for (const std::uint32_t end = cumulative_[s + 1]; bucket < bucket_count && (bucket << bucket_shift) < end; ++bucket)
                bucket_first_[bucket] = static_cast<std::uint16_t>(s);
        until_rebuild_ = period_;
        period_ = std::min(2 * period_, max_period_);
    }

    std::vector<std::uint32_t> counts_;
    std::vector<std::uint32_t> cumulative_;     // alphabet_size + 1 entries, last = 2^P
    std::vector<std::uint16_t> bucket_first_;   // 2^lookup_bits_ entries
    std::uint32_t count_total_ = 0;
    std::uint32_t count_limit_ = 0;
    std::uint32_t period_ = 16, max_period_ = 1024, until_rebuild_ = 1;
    unsigned precision_bits_ = 12, lookup_bits_ = 12;
};

/// Codes symbol under the model's current distribution, then adapts the model.
inline void encode_symbol(range_encoder& enc, pow2_adaptive_model& model, std::uint32_t symbol) {
    enc.encode(model.cumulative(symbol), model.frequency(symbol), model.precision_bits());
    model.update(symbol);
}
/// Decodes one symbol (shift, division by the step, bucket lookup) and adapts like encode_symbol.
inline std::uint32_t decode_symbol(range_decoder& dec, pow2_adaptive_model& model) {
    const std::uint32_t symbol = model.symbol_of_slot(dec.decode_slot(model.precision_bits()));
    dec.consume(model.cumulative(symbol), model.frequency(symbol));
    model.update(symbol);
    return symbol;
}

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
