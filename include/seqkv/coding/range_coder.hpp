// Byte-oriented FIFO range coder (32-bit range, 33-bit low with deferred carry) for alphabets up
// to 2^16 symbols, plus an adaptive binary coder. Symbols are decoded in the order they were
// encoded, so a model may adapt or be driven by an autoregressive predictor symbol by symbol.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/coding/frequency_table.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

/// Range invariant after every normalization: 2^24 <= range < 2^32, so range >> 16 >= 2^8 and a
/// symbol of frequency f out of total T (T <= 2^22) always gets a nonempty subrange.
inline constexpr std::uint32_t range_coder_min_range = 1u << 24;
/// Largest total an adaptive model may pass to encode_with_total.
inline constexpr std::uint32_t range_coder_max_total = 1u << 22;

/// Adaptive probability of a binary event; Q12 probability that the bit is 0, in [31, 4065].
struct adaptive_bit_model {
    static constexpr unsigned precision_bits = 12;
    static constexpr unsigned adaptation_shift = 5;  // larger = slower, steadier adaptation
    std::uint16_t probability_of_zero = 1u << (precision_bits - 1);

    void update(unsigned bit) {
        if (bit == 0)
            probability_of_zero += static_cast<std::uint16_t>(((1u << precision_bits) - probability_of_zero) >> adaptation_shift);
        else
            probability_of_zero -= static_cast<std::uint16_t>(probability_of_zero >> adaptation_shift);
    }
};

/// Appends range-coded bytes to a byte_vector. Call finish() once after the last symbol.
class range_encoder {
public:
    explicit range_encoder(byte_vector& out) : out_(&out) {}

    /// Codes the subrange [cumulative, cumulative+frequency) of a total of 2^precision_bits.
    void encode(std::uint32_t cumulative, std::uint32_t frequency, unsigned precision_bits) {
        const std::uint32_t step = range_ >> precision_bits;
        low_ += std::uint64_t{step} * cumulative;
        range_ = step * frequency;
        normalize();
    }
    /// Codes the subrange [cumulative, cumulative+frequency) of total (total <= range_coder_max_total).
    void encode_with_total(std::uint32_t cumulative, std::uint32_t frequency, std::uint32_t total) {
        const std::uint32_t step = range_ / total;
        low_ += std::uint64_t{step} * cumulative;
        range_ = step * frequency;
        normalize();
    }
    /// Codes one bit with an adaptive probability and updates the model.
    void encode_bit(adaptive_bit_model& model, unsigned bit) {
        const std::uint32_t bound = (range_ >> adaptive_bit_model::precision_bits) * model.probability_of_zero;
        if (bit == 0) {
            range_ = bound;
        } else {
            low_ += bound;
            range_ -= bound;
        }
        model.update(bit);
        normalize();
    }
    /// Codes the low bit_count bits of value as equiprobable (bit_count <= 16).
    void encode_raw_bits(std::uint32_t value, unsigned bit_count) { encode(value, 1, bit_count); }

    /// Flushes the shortest tail that pins the final interval: one byte (plus held-back bytes);
    /// the decoder reads exactly 3 zero-padded bytes past the end of a complete stream.
    void finish() {
        // Any multiple of 2^24 inside [low, low + range) identifies the interval; one exists
        // because range >= 2^24. Only its top byte (plus a carry) needs to be written.
        low_ = (low_ + (range_coder_min_range - 1)) & ~std::uint64_t{range_coder_min_range - 1};
        shift_low();
        shift_low();
    }

private:
    void normalize() {
        while (range_ < range_coder_min_range) {
            range_ <<= 8;
            shift_low();
        }
    }
    // Moves bits 24..31 of low out. A byte 0xFF is held back (counted in pending_ff_) because a
    // later carry out of bit 32 could still turn it into 0x00 and increment the byte before it.
    void shift_low() {
        if (low_ < 0xFF000000u || low_ >= (std::uint64_t{1} << 32)) {
            const auto carry = static_cast<std::uint8_t>(low_ >> 32);
            if (has_cache_) out_->push_back(static_cast<std::uint8_t>(cache_ + carry));
            for (; pending_ff_ > 0; --pending_ff_) out_->push_back(static_cast<std::uint8_t>(0xFF + carry));
            cache_ = static_cast<std::uint8_t>(low_ >> 24);
            has_cache_ = true;
        } else {
            ++pending_ff_;
        }
        low_ = (low_ & 0x00FFFFFFu) << 8;
    }

    byte_vector* out_;
    std::uint64_t low_ = 0;  // < 2^33; bit 32 is a carry not yet applied to cache_
    std::uint32_t range_ = 0xFFFFFFFFu;
    std::uint8_t cache_ = 0;  // last resolved byte, not yet written (a carry may still reach it)
    bool has_cache_ = false;
    std::uint64_t pending_ff_ = 0;
};

/// Decodes a range_encoder stream. Reads past the end of the input yield zero bytes, so corrupt
/// or truncated input produces garbage symbols but never an out-of-bounds read.
class range_decoder {
public:
    explicit range_decoder(std::span<const std::uint8_t> in) : in_(in) {
        for (int i = 0; i < 4; ++i) code_ = (code_ << 8) | next_byte();
    }

    /// First half of decoding with total 2^precision_bits: the slot in [0, 2^precision_bits)
    /// whose symbol the caller looks up, then passes to consume().
    std::uint32_t decode_slot(unsigned precision_bits) {
        step_ = range_ >> precision_bits;
        return std::min(code_ / step_, (1u << precision_bits) - 1);
    }
    /// Same with an arbitrary total (<= range_coder_max_total).
    std::uint32_t decode_slot_with_total(std::uint32_t total) {
        step_ = range_ / total;
        return std::min(code_ / step_, total - 1);
    }
    /// Second half: removes the decoded symbol's subrange [cumulative, cumulative+frequency).
    void consume(std::uint32_t cumulative, std::uint32_t frequency) {
        code_ -= step_ * cumulative;
        range_ = step_ * frequency;
        normalize();
    }
    /// Decodes one bit coded by encode_bit and updates the model identically.
    unsigned decode_bit(adaptive_bit_model& model) {
        const std::uint32_t bound = (range_ >> adaptive_bit_model::precision_bits) * model.probability_of_zero;
        unsigned bit;
        if (code_ < bound) {
            range_ = bound;
            bit = 0;
        } else {
            code_ -= bound;
            range_ -= bound;
            bit = 1;
        }
        model.update(bit);
        normalize();
        return bit;
    }
    /// Decodes bit_count equiprobable bits (bit_count <= 16).
    std::uint32_t decode_raw_bits(unsigned bit_count) {
        const std::uint32_t value = decode_slot(bit_count);
        consume(value, 1);
        return value;
    }
    /// Bytes requested beyond the end of the input (zero-padded); more than 3 means truncation.
    std::size_t overrun_bytes() const { return overrun_; }

private:
    std::uint8_t next_byte() {
        if (pos_ < in_.size()) return in_[pos_++];
        ++overrun_;
        return 0;
    }
    void normalize() {
        while (range_ < range_coder_min_range) {
            range_ <<= 8;
            code_ = (code_ << 8) | next_byte();
        }
    }

    std::span<const std::uint8_t> in_;
    std::size_t pos_ = 0;
    std::size_t overrun_ = 0;
    std::uint32_t code_ = 0;  // offset of the coded value inside [low, low + range)
    std::uint32_t range_ = 0xFFFFFFFFu;
    std::uint32_t step_ = 1;
};

/// Codes symbol under a static table (which must give it nonzero frequency).
inline void encode_symbol(range_encoder& enc, const frequency_table& table, std::uint32_t symbol) {
    enc.encode(table.cumulative(symbol), table.frequency(symbol), table.precision_bits());
}
/// Decodes one symbol under a static table (binary search over cumulative frequencies).
inline std::uint32_t decode_symbol(range_decoder& dec, const frequency_table& table) {
    require_usage(!table.empty(), "decode_symbol: empty frequency table");
    const std::uint32_t slot = dec.decode_slot(table.precision_bits());
    std::uint32_t lo = 0, hi = table.alphabet_size();  // find last symbol with cumulative <= slot
    while (hi - lo > 1) {
        const std::uint32_t mid = (lo + hi) / 2;
        if (table.cumulative(mid) <= slot) lo = mid; else hi = mid;
    }
    dec.consume(table.cumulative(lo), table.frequency(lo));
    return lo;
}

/// Slot -> symbol table (2^precision_bits entries) for constant-time static-table decoding.
class static_symbol_lookup {
public:
    explicit static_symbol_lookup(const frequency_table& table) : table_(&table), symbol_of_slot_(table.total()) {
        require_usage(!table.empty(), "static_symbol_lookup: empty frequency table");
        for (std::uint32_t s = 0; s < table.alphabet_size(); ++s)
            std::fill_n(symbol_of_slot_.begin() + table.cumulative(s), table.frequency(s), static_cast<std::uint16_t>(s));
    }
    const frequency_table& table() const { return *table_; }
    std::uint32_t symbol(std::uint32_t slot) const { return symbol_of_slot_[slot]; }

private:
    const frequency_table* table_;  // must outlive the lookup
    std::vector<std::uint16_t> symbol_of_slot_;
};

/// Decodes one symbol under a static table through its slot lookup.
inline std::uint32_t decode_symbol(range_decoder& dec, const static_symbol_lookup& lookup) {
    const frequency_table& table = lookup.table();
    const std::uint32_t symbol = lookup.symbol(dec.decode_slot(table.precision_bits()));
    dec.consume(table.cumulative(symbol), table.frequency(symbol));
    return symbol;
}

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
