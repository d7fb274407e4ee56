// Interleaved rANS with static per-context tables: 32 independent 32-bit states, 16-bit
// renormalization. This header holds the scalar reference encoder and decoder; rans_simd.hpp
// encodes and decodes the same bytes with AVX2.
//
// Invariants (L = 2^16, P = precision_bits <= 16):
//   * every lane state x lies in [L, 2^32) between symbols;
//   * symbol i is coded by lane i % 32; the encoder runs from the last symbol to the first, the
//     decoder from the first to the last, so words come out in the order the decoder reads them
//     once the encoder's word list is reversed;
//   * decoding a symbol maps x to f * (x >> P) + (x mod 2^P) - cumulative >= 1, so at most one
//     16-bit word read brings it back into [L, 2^32); the decoder reads that word right after
//     decoding symbol i, before symbol i+1 (lane order inside a group of 32);
//   * encoder lanes start at L, so a correct decode ends with every lane at L and every word used.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "seqkv/coding/frequency_table.hpp"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding::rans {

inline constexpr std::size_t lane_count = 32;
inline constexpr std::uint32_t state_lower_bound = 1u << 16;  // L
inline constexpr unsigned word_bits = 16;
/// Most decode-table entries (contexts << precision_bits) a decoder will allocate: 64 MiB of u32.
inline constexpr std::uint64_t max_decode_table_entries = std::uint64_t{1} << 24;
/// Byte-symbol tables pack symbol, frequency-1 and bias into one u32, which needs P <= 12.
inline constexpr unsigned max_byte_precision_bits = 12;

/// Final encoder states (the decoder's initial states) and the renormalization words in the
/// order the decoder consumes them.
struct encoded_lanes {
    std::array<std::uint32_t, lane_count> states{};
    std::vector<std::uint16_t> words;
};

/// The largest element of a symbol or context stream (0 when empty): the encoders' range checks.
/// Byte streams run sixteen bytes a step on SSE2 (a compiler at -O2 keeps the plain loop scalar).
template <class T>
inline std::uint32_t largest_of(std::span<const T> values) {
    static_assert(std::is_unsigned_v<T>, "largest_of: symbols and contexts are unsigned");
    std::uint32_t largest = 0;
    std::size_t i = 0;
#if defined(__SSE2__)
    if constexpr (sizeof(T) == 1) {
        __m128i m = _mm_setzero_si128();
        for (; i + 16 <= values.size(); i += 16)
            m = _mm_max_epu8(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(values.data() + i)));
        alignas(16) std::uint8_t lanes[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(lanes), m);
        for (const std::uint8_t b : lanes) largest = std::max<std::uint32_t>(largest, b);
    }
#endif
    for (; i < values.size(); ++i) largest = std::max<std::uint32_t>(largest, static_cast<std::uint32_t>(values[i]));
    return largest;
}

/// Context of symbol i: contexts[i], or 0 when contexts is empty (single-context block).
template <class Context>
inline std::uint32_t context_at(std::span<const Context> contexts, std::size_t i) {
    return contexts.empty() ? 0u : static_cast<std::uint32_t>(contexts[i]);
}

/// Reference encoder: one division per symbol. Same bytes as encode(); kept as the oracle for
/// the reciprocal encoder and for blocks whose tables are much larger than their symbol count.
template <class Symbol, class Context>
encoded_lanes encode_by_division(std::span<const Symbol> symbols, std::span<const Context> contexts,
                                 std::span<const frequency_table> tables) {
    require_usage(contexts.empty() || contexts.size() == symbols.size(), "rans::encode: contexts/symbols size mismatch");
    require_usage(!tables.empty(), "rans::encode: no tables");
    const unsigned precision = tables[0].precision_bits();
    encoded_lanes result;
    result.states.fill(state_lower_bound);
    result.words.reserve(symbols.size() / 2 + 16);
    for (std::size_t i = symbols.size(); i-- > 0;) {
        const std::uint32_t context = context_at(contexts, i);
        require_usage(context < tables.size(), "rans::encode: context out of range");
        const frequency_table& table = tables[context];
        require_usage(table.precision_bits() == precision, "rans::encode: tables differ in precision");
        const std::uint32_t symbol = symbols[i];
        require_usage(symbol < table.alphabet_size() && table.frequency(symbol) != 0,
                      "rans::encode: symbol has zero frequency");
        const std::uint32_t frequency = table.frequency(symbol);
        std::uint32_t& x = result.states[i % lane_count];
        // Keep x < f * 2^(32-P) so the encoded state stays below 2^32.
        const std::uint64_t x_limit = std::uint64_t{frequency} << (32 - precision);
        if (x >= x_limit) {
            result.words.push_back(static_cast<std::uint16_t>(x));
            x >>= word_bits;
        }
        x = ((x / frequency) << precision) + (x % frequency) + table.cumulative(symbol);
    }
    std::reverse(result.words.begin(), result.words.end());
    return result;
}

/// Division-free encoding of one symbol (frequency f, start c, M = 2^P):
///   x' = (x / f) * M + x % f + c = x + c + (x / f) * (M - f),
/// with x / f = floor(x * reciprocal / 2^64), reciprocal = ceil(2^64 / f) for f >= 2. Exact for
/// every x < 2^32: reciprocal = 2^64/f + e with 0 <= e < 1, so x * reciprocal / 2^64 = x/f + d
/// with 0 <= d < 2^-32 < 1/f, and x/f has fractional part <= 1 - 1/f, so the floor is unchanged.
/// f = 1 uses reciprocal 2^64 - 1, giving x - 1 (x >= 1), which bias absorbs (c + M - 1).
/// reciprocal = 0 marks a symbol of zero frequency.
struct encoder_symbol {
    std::uint64_t reciprocal = 0;
    std::uint32_t x_max = 0;       // largest state that needs no renormalization: f * 2^(32-P) - 1
    std::uint32_t bias = 0;        // c (f >= 2) or c + M - 1 (f = 1)
    std::uint32_t complement = 0;  // M - f
};

/// Builds the encoder entry of a symbol with frequency f > 0 and start cumulative (P <= 16).
inline encoder_symbol make_encoder_symbol(std::uint32_t frequency, std::uint32_t cumulative, unsigned precision) {
    encoder_symbol e;
    const std::uint32_t total = 1u << precision;
    e.reciprocal = frequency >= 2 ? ~std::uint64_t{0} / frequency + 1 : ~std::uint64_t{0};
    e.x_max = static_cast<std::uint32_t>((std::uint64_t{frequency} << (32 - precision)) - 1);
    e.bias = frequency >= 2 ? cumulative : cumulative + total - 1;
    e.complement = total - frequency;
    return e;
}

/// Codes one symbol into state x (already renormalized: x <= e.x_max).
inline std::uint32_t encode_step(std::uint32_t x, const encoder_symbol& e) {
    const auto quotient = static_cast<std::uint32_t>((coding::detail::uint128{x} * e.reciprocal) >> 64);
    return x + e.bias + quotient * e.complement;  // every partial sum <= the result < 2^32
}

/// Encodes symbols with tables[context] (all of equal precision; each symbol must have nonzero
/// frequency in its context's table, else usage_error). Uses encoder_symbol reciprocals (no
/// division per symbol) unless the tables hold far more cells than there are symbols. The
/// scalar reference; rans_simd.hpp's encode() picks an AVX2 encoder of the same bytes.
template <class Symbol, class Context>
encoded_lanes encode_scalar(std::span<const Symbol> symbols, std::span<const Context> contexts,
                     std::span<const frequency_table> tables) {
    require_usage(contexts.empty() || contexts.size() == symbols.size(), "rans::encode: contexts/symbols size mismatch");
    require_usage(!tables.empty(), "rans::encode: no tables");
    const unsigned precision = tables[0].precision_bits();
    std::uint32_t stride = 0;
    for (const auto& t : tables) {
        require_usage(t.precision_bits() == precision, "rans::encode: tables differ in precision");
        stride = std::max(stride, t.alphabet_size());
    }
    const std::uint64_t cells = std::uint64_t{stride} * tables.size();
    if (cells > std::max<std::uint64_t>(std::uint64_t{1} << 16, 2 * symbols.size()))
        return encode_by_division(symbols, contexts, tables);  // building entries would cost more than it saves

    std::vector<encoder_symbol> entries(cells);
    for (std::size_t c = 0; c < tables.size(); ++c)
        for (std::uint32_t s = 0; s < tables[c].alphabet_size(); ++s)
            if (const std::uint32_t f = tables[c].frequency(s); f != 0)
                entries[c * stride + s] = make_encoder_symbol(f, tables[c].cumulative(s), precision);

    encoded_lanes result;
    result.states.fill(state_lower_bound);
    // Each symbol emits at most one word; filled from the back, branch-free (a word is always
    // stored and kept only when needed), so one slot more than the worst case.
    result.words.resize(symbols.size() + 1);
    std::size_t word_position = symbols.size() + 1;
    for (std::size_t i = symbols.size(); i-- > 0;) {
        const std::uint32_t context = context_at(contexts, i);
        const std::uint32_t symbol = symbols[i];
        require_usage(context < tables.size() && symbol < stride, "rans::encode: context or symbol out of range");
        const encoder_symbol& e = entries[std::size_t{context} * stride + symbol];
        require_usage(e.reciprocal != 0, "rans::encode: symbol has zero frequency");
        std::uint32_t& x = result.states[i % lane_count];
        const bool renormalize = x > e.x_max;  // unpredictable: keep it out of branches
        result.words[word_position - 1] = static_cast<std::uint16_t>(x);
        word_position -= renormalize;
        x = encode_step(renormalize ? x >> word_bits : x, e);
    }
    result.words.erase(result.words.begin(), result.words.begin() + static_cast<std::ptrdiff_t>(word_position));
    return result;
}

/// Decoder lookup tables for all contexts, indexed by (context << P) | slot. For byte symbols an
/// entry is symbol << 24 | (frequency-1) << 12 | bias; for wide symbols (frequency-1) << 16 |
/// bias plus a separate symbol array. bias = slot - cumulative(symbol).
template <class Symbol>
class decode_table_set {
    static_assert(std::is_same_v<Symbol, std::uint8_t> || std::is_same_v<Symbol, std::uint16_t>);

public:
    static constexpr bool byte_symbols = std::is_same_v<Symbol, std::uint8_t>;
    static constexpr unsigned frequency_shift = byte_symbols ? 12 : 16;
    static constexpr std::uint32_t frequency_mask = byte_symbols ? 0xFFFu : 0xFFFFu;  // after the shift
    static constexpr std::uint32_t bias_mask = byte_symbols ? 0xFFFu : 0xFFFFu;

    /// Builds tables; empty tables (unused contexts) get zero entries that the caller must never
    /// select (decode validates contexts first). Throws limit_error past max_decode_table_entries.
    explicit decode_table_set(std::span<const frequency_table> tables) {
        require_usage(!tables.empty(), "decode_table_set: no tables");
        precision_bits_ = tables[0].precision_bits();
        if (byte_symbols)
            require_usage(precision_bits_ <= max_byte_precision_bits && tables[0].alphabet_size() <= 256,
                          "decode_table_set: byte tables need P <= 12 and <= 256 symbols");
        const std::uint64_t entry_count = std::uint64_t{tables.size()} << precision_bits_;
        if (entry_count > max_decode_table_entries) throw limit_error("rANS decode tables too large");
        // Every entry of a usable context is written below (its frequencies sum to 2^P); only the
        // unused contexts' entries are zeroed, not the whole set first.
        entries_ = std::make_unique_for_overwrite<std::uint32_t[]>(entry_count + fill_width);  // + the fill's overrun
        if (!byte_symbols) symbols_.assign(entry_count + 2, 0);  // +2: 32-bit gathers read one past
        usable_.assign(tables.size(), 0);
        for (std::size_t c = 0; c < tables.size(); ++c) {
            const frequency_table& t = tables[c];
            require_usage(t.precision_bits() == precision_bits_, "decode_table_set: tables differ in precision");
            std::uint32_t* entry = entries_.get() + (c << precision_bits_);
            if (t.empty()) {
                std::fill_n(entry, std::size_t{1} << precision_bits_, 0u);
                continue;
            }
            usable_[c] = 1;
            std::uint32_t covered = 0;
            for (std::uint32_t s = 0; s < t.alphabet_size(); ++s) {
                const std::uint32_t f = t.frequency(s), cum = t.cumulative(s);
                covered += f;
                if constexpr (byte_symbols) {
                    // base + bias (bias < 2^12 in the low bits), fill_width entries at a time (vectorized):
                    // the overrun past cum + f lands in the next symbol's or context's entries, written
                    // after this (cumulative frequencies and contexts go up), or in the padding.
                    const std::uint32_t base = (s << 24) | ((f - 1) << 12);
#if defined(__SSE2__)
                    __m128i v = _mm_add_epi32(_mm_set1_epi32(std::int32_t(base)), _mm_setr_epi32(0, 1, 2, 3));
                    const __m128i four = _mm_set1_epi32(4);
                    for (std::uint32_t b0 = 0; b0 < f; b0 += fill_width) {
                        _mm_storeu_si128(reinterpret_cast<__m128i*>(entry + cum + b0), v);
                        v = _mm_add_epi32(v, four);
                        _mm_storeu_si128(reinterpret_cast<__m128i*>(entry + cum + b0 + 4), v);
                        v = _mm_add_epi32(v, four);
                    }
#else
                    for (std::uint32_t b0 = 0; b0 < f; b0 += fill_width)
                        for (std::uint32_t j = 0; j < fill_width; ++j) entry[cum + b0 + j] = base + b0 + j;
#endif
                } else {
                    for (std::uint32_t bias = 0; bias < f; ++bias) {
                        entry[cum + bias] = ((f - 1) << 16) | bias;
                        symbols_[(c << precision_bits_) + cum + bias] = static_cast<std::uint16_t>(s);
                    }
                }
            }
            if (covered != (std::uint32_t{1} << precision_bits_))  // a table not normalized: what was left stays defined
                std::fill(entry + std::min<std::uint32_t>(covered, std::uint32_t{1} << precision_bits_), entry + (std::size_t{1} << precision_bits_), 0u);
        }
    }

    unsigned precision_bits() const { return precision_bits_; }
    std::size_t context_count() const { return usable_.size(); }
    /// True if context c has a nonempty table.
    bool usable(std::uint32_t c) const { return c < usable_.size() && usable_[c]; }
    const std::uint32_t* entries() const { return entries_.get(); }
    const std::uint16_t* symbols() const { return symbols_.data(); }

private:
    unsigned precision_bits_ = 0;
    static constexpr std::uint32_t fill_width = 8;
    std::unique_ptr<std::uint32_t[]> entries_;
    std::vector<std::uint16_t> symbols_;
    std::vector<std::uint8_t> usable_;
};

/// Decoder progress: lane states and the read position (bytes) in the word stream.
struct decoder_state {
    alignas(32) std::array<std::uint32_t, lane_count> states{};
    std::size_t word_byte_position = 0;
};

/// Scalar reference: decodes out[begin, out.size()) continuing from state; contexts must already
/// be validated (usable). Throws format_error if the word stream runs out.
template <class Symbol, class Context>
void decode_scalar_from(const decode_table_set<Symbol>& tables, std::span<const Context> contexts,
                        std::span<const std::uint8_t> word_bytes, std::span<Symbol> out, std::size_t begin,
                        decoder_state& state) {
    using table_set = decode_table_set<Symbol>;
    const unsigned precision = tables.precision_bits();
    const std::uint32_t slot_mask = (1u << precision) - 1;
    const std::uint32_t* entries = tables.entries();
    std::size_t position = state.word_byte_position;
    for (std::size_t i = begin; i < out.size(); ++i) {
        std::uint32_t& x = state.states[i % lane_count];
        const std::uint32_t index = (context_at(contexts, i) << precision) | (x & slot_mask);
        const std::uint32_t entry = entries[index];
        if constexpr (table_set::byte_symbols)
            out[i] = static_cast<Symbol>(entry >> 24);
        else
            out[i] = tables.symbols()[index];
        const std::uint32_t frequency = ((entry >> table_set::frequency_shift) & table_set::frequency_mask) + 1;
        x = frequency * (x >> precision) + (entry & table_set::bias_mask);
        if (x < state_lower_bound) {
            if (word_bytes.size() - position < 2) throw format_error("rANS word stream truncated");
            x = (x << word_bits) | load_le16(word_bytes.data() + position);
            position += 2;
        }
    }
    state.word_byte_position = position;
}

/// Checks the end-of-stream invariant: every lane back at L and every word consumed.
inline void verify_final_state(const decoder_state& state, std::size_t word_byte_count) {
    for (auto x : state.states)
        if (x != state_lower_bound) throw format_error("rANS stream corrupt: final state mismatch");
    if (state.word_byte_position != word_byte_count) throw format_error("rANS stream corrupt: unused words");
}

}  // namespace seqkv::coding::rans

SEQKV_FP_STRICT_END
