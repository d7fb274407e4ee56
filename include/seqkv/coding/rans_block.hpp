// Self-contained block API over interleaved rANS: per-context static tables are built from the
// block's own histograms, serialized compactly in front of the coded lanes, and fully validated
// on decode.
//
// Block layout (all integers little-endian):
//   u8     block kind (rans_block_kind)
//   u8     precision_bits P
//   varint symbol_count            must equal the caller's out.size()
//   varint alphabet_size           [1, 2^16] (256 for byte blocks)
//   varint context_count           [1, 2^16] (<= 256 for byte blocks)
//   context_count table records, each starting with varint tag:
//     tag even: explicit table with tag/2 used symbols, then frequency_table::serialize_entries
//               (tag 0 = unused context)
//     tag odd:  parametric table, v = tag >> 1: family = v % 3, scale_index = v / 3, then
//               varint center (see parametric_model.hpp)
//   if symbol_count > 0:
//     varint word_count
//     32 x u32 lane states         each in [2^16, 2^32)
//     word_count x u16 words       ends exactly at the end of the block
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "seqkv/coding/frequency_table.hpp"
#include "seqkv/coding/parametric_model.hpp"
#include "seqkv/coding/rans_interleaved.hpp"
#include "seqkv/coding/rans_simd.hpp"
#include "seqkv/coding/varint.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

enum class rans_block_kind : std::uint8_t { byte_symbols = 0xB1, wide_symbols = 0xB2 };

/// Limit on context_count * alphabet_size (table storage) for encoder and decoder alike.
inline constexpr std::uint64_t max_block_table_cells = std::uint64_t{1} << 24;

/// Encoder knobs; precision_bits = 0 picks automatically (12 for bytes; for wide symbols
/// ceil(log2 of the most distinct symbols in a context)+2 clamped to [12, 16]).
struct rans_block_options {
    unsigned precision_bits = 0;
    /// Also try parametric models per context and keep whichever costs fewer bits in total
    /// (side information included); the table then costs ~2 bytes instead of ~1-2 per symbol.
    bool parametric_tables = false;
};

/// Parsed fixed part of a block, for diagnostics and size accounting.
struct rans_block_header {
    rans_block_kind kind{};
    unsigned precision_bits = 0;
    std::uint64_t symbol_count = 0;
    std::uint32_t alphabet_size = 0;
    std::uint32_t context_count = 0;
    std::size_t table_bytes = 0;    // serialized tables
    std::size_t payload_bytes = 0;  // word count, lane states and words
};

namespace detail {

/// Builds the cheapest table for one context's histogram and writes its record.
inline frequency_table choose_table(std::span<const std::uint64_t> counts, unsigned precision, const rans_block_options& options,
                                    byte_writer& writer) {
    frequency_table explicit_table = frequency_table::from_counts(counts, precision);
    const std::uint32_t used = explicit_table.used_symbols();
    const auto alphabet_size = static_cast<std::uint32_t>(counts.size());
    if (options.parametric_tables && used > 1 && alphabet_size <= (1u << precision)) {
        byte_vector scratch;
        byte_writer scratch_writer(scratch);
        explicit_table.serialize(scratch_writer);
        const double explicit_bits = code_length_bits(counts, explicit_table) + 8.0 * scratch.size();
        const auto mode = static_cast<std::uint32_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
        double best_bits = explicit_bits;
        parametric_model_params best{};
        for (unsigned family = 0; family < parametric_family_count; ++family) {
            const auto [params, bits] = fit_parametric(static_cast<parametric_family>(family), counts, mode, precision);
            const double side_bits = 8.0 * (2 + (mode >= 128) + (mode >= 16384));
            if (bits + side_bits < best_bits) {
                best_bits = bits + side_bits;
                best = params;
            }
        }
        if (best_bits < explicit_bits) {
            put_varint(writer, 2 * (std::uint64_t{best.scale_index} * parametric_family_count +
                                    static_cast<unsigned>(best.family)) + 1);
            put_varint(writer, best.center);
            return detail::cached_parametric(best).table;
        }
    }
    put_varint(writer, 2 * std::uint64_t{used});
    explicit_table.serialize_entries(writer);
    return explicit_table;
}

/// Reads one table record (see the block layout).
inline frequency_table read_table(byte_reader& reader, std::uint32_t alphabet_size, unsigned precision,
                                  parametric_table_cache& cache) {
    const std::uint64_t tag = get_varint(reader, 2 * std::uint64_t{max_alphabet_size} + 1);
    if (tag % 2 == 0)
        return frequency_table::deserialize_entries(reader, static_cast<std::uint32_t>(tag / 2), alphabet_size, precision);
    parametric_model_params p;
    p.family = static_cast<parametric_family>((tag >> 1) % parametric_family_count);
    p.scale_index = static_cast<std::uint32_t>((tag >> 1) / parametric_family_count);
    p.center = static_cast<std::uint32_t>(get_varint(reader, max_alphabet_size));
    p.alphabet_size = alphabet_size;
    p.precision_bits = precision;
    if (p.scale_index >= parametric_scale_count || p.center >= alphabet_size || alphabet_size > (1u << precision))
        throw format_error("rANS block: bad parametric table record");
    return cache.get(p);
}

/// known_counts (empty: counted here): context_count x alphabet_size counts of (context, symbol)
/// pairs the caller already holds; they must be the symbols' exact counts (their sum is checked,
/// a symbol counted 0 is refused by the encoder).
template <class Symbol, class Context>
byte_vector encode_rans_block(rans_block_kind kind, std::span<const Symbol> symbols, std::span<const Context> contexts,
                              std::uint32_t alphabet_size, std::uint32_t context_count, rans_block_options options,
                              std::span<const std::uint32_t> known_counts = {}) {
    const bool bytes = kind == rans_block_kind::byte_symbols;
    require_usage(alphabet_size >= 1 && alphabet_size <= (bytes ? 256u : max_alphabet_size),
                  "encode_block: alphabet_size out of range");
    require_usage(context_count >= 1 && context_count <= (bytes ? 256u : max_alphabet_size),
                  "encode_block: context count out of range");
    require_usage(contexts.empty() || contexts.size() == symbols.size(), "encode_block: contexts/symbols size mismatch");
    if (std::uint64_t{context_count} * alphabet_size > max_block_table_cells)
        throw limit_error("encode_block: context_count * alphabet_size too large");

    std::vector<std::uint64_t> counts(std::size_t{context_count} * alphabet_size, 0);
    if (!known_counts.empty()) {
        require_usage(known_counts.size() == counts.size(), "encode_block: counts do not match the tables");
        std::uint64_t total = 0;
        for (std::size_t k = 0; k < counts.size(); ++k) total += counts[k] = known_counts[k];
        require_usage(total == symbols.size(), "encode_block: counts do not add up to the symbols");
        // the range checks the counting loop makes (counts name only valid pairs)
        if (!contexts.empty()) require_usage(rans::largest_of(contexts) < context_count, "encode_block: context out of range");
        if (alphabet_size <= std::numeric_limits<Symbol>::max())
            require_usage(rans::largest_of(symbols) < alphabet_size, "encode_block: symbol outside alphabet");
    } else {
        for (std::size_t i = 0; i < symbols.size(); ++i) {
            const std::uint32_t c = rans::context_at(contexts, i);
            require_usage(symbols[i] < alphabet_size, "encode_block: symbol outside alphabet");
            require_usage(c < context_count, "encode_block: context out of range");
            ++counts[std::size_t{c} * alphabet_size + symbols[i]];
        }
    }
    std::uint32_t most_distinct = 1;
    for (std::uint32_t c = 0; c < context_count; ++c) {
        const auto* row = counts.data() + std::size_t{c} * alphabet_size;
        most_distinct = std::max<std::uint32_t>(
            most_distinct, static_cast<std::uint32_t>(std::count_if(row, row + alphabet_size, [](auto n) { return n != 0; })));
    }
    const unsigned needed_bits = static_cast<unsigned>(std::bit_width(most_distinct - 1));
    unsigned precision = options.precision_bits;
    if (precision == 0) {
        precision = bytes ? rans::max_byte_precision_bits : std::clamp(needed_bits + 2, 12u, max_precision_bits);
        while (precision > needed_bits && precision > 1 &&
               (std::uint64_t{context_count} << precision) > rans::max_decode_table_entries)
            --precision;
    }
    require_usage(precision >= min_precision_bits && precision <= (bytes ? rans::max_byte_precision_bits : max_precision_bits),
                  "encode_block: precision_bits out of range");
    require_usage(precision >= needed_bits, "encode_block: precision too low for the number of distinct symbols");
    if ((std::uint64_t{context_count} << precision) > rans::max_decode_table_entries)
        throw limit_error("encode_block: context_count << precision_bits too large");

    std::vector<frequency_table> tables(context_count);
    byte_vector out;
    byte_writer writer(out);
    writer.put<std::uint8_t>(static_cast<std::uint8_t>(kind));
    writer.put<std::uint8_t>(static_cast<std::uint8_t>(precision));
    put_varint(writer, symbols.size());
    put_varint(writer, alphabet_size);
    put_varint(writer, context_count);
    for (std::uint32_t c = 0; c < context_count; ++c) {
        const std::span<const std::uint64_t> row(counts.data() + std::size_t{c} * alphabet_size, alphabet_size);
        tables[c] = choose_table(row, precision, options, writer);
    }
    if (symbols.empty()) return out;
    const rans::encoded_lanes lanes = rans::encode(symbols, contexts, std::span<const frequency_table>(tables));
    put_varint(writer, lanes.words.size());
    out.reserve(out.size() + 4 * rans::lane_count + 2 * lanes.words.size());
    for (auto state : lanes.states) writer.put<std::uint32_t>(state);
    const std::size_t word_start = out.size();
    out.resize(word_start + 2 * lanes.words.size());
    std::uint8_t* word_bytes = out.data() + word_start;
    if constexpr (std::endian::native == std::endian::little) {
        if (!lanes.words.empty()) std::memcpy(word_bytes, lanes.words.data(), 2 * lanes.words.size());
    } else {
        for (std::size_t w = 0; w < lanes.words.size(); ++w) {
            word_bytes[2 * w] = static_cast<std::uint8_t>(lanes.words[w]);
            word_bytes[2 * w + 1] = static_cast<std::uint8_t>(lanes.words[w] >> 8);
        }
    }
    return out;
}

struct parsed_block {
    rans_block_header header;
    std::vector<frequency_table> tables;
    rans::decoder_state state;
    std::span<const std::uint8_t> word_bytes;
};

inline parsed_block parse_rans_block(std::span<const std::uint8_t> bytes, rans_block_kind expected_kind) {
    const bool byte_block = expected_kind == rans_block_kind::byte_symbols;
    byte_reader reader(bytes, "rANS block");
    parsed_block block;
    rans_block_header& h = block.header;
    h.kind = static_cast<rans_block_kind>(reader.get<std::uint8_t>());
    if (h.kind != expected_kind) throw format_error("rANS block: wrong block kind");
    h.precision_bits = reader.get<std::uint8_t>();
    if (h.precision_bits < min_precision_bits ||
        h.precision_bits > (byte_block ? rans::max_byte_precision_bits : max_precision_bits))
        throw format_error("rANS block: precision_bits out of range");
    h.symbol_count = get_varint(reader);
    h.alphabet_size = static_cast<std::uint32_t>(get_varint(reader, byte_block ? 256 : max_alphabet_size));
    h.context_count = static_cast<std::uint32_t>(get_varint(reader, byte_block ? 256 : max_alphabet_size));
    if (h.alphabet_size == 0 || h.context_count == 0) throw format_error("rANS block: empty alphabet or no contexts");
    if (std::uint64_t{h.context_count} * h.alphabet_size > max_block_table_cells ||
        (std::uint64_t{h.context_count} << h.precision_bits) > rans::max_decode_table_entries)
        throw limit_error("rANS block: tables too large");
    if (h.context_count > reader.remaining()) throw format_error("rANS block: truncated tables");
    const std::size_t table_start = reader.position();
    block.tables.reserve(h.context_count);
    parametric_table_cache cache;
    for (std::uint32_t c = 0; c < h.context_count; ++c)
        block.tables.push_back(read_table(reader, h.alphabet_size, h.precision_bits, cache));
    h.table_bytes = reader.position() - table_start;
    if (h.symbol_count == 0) {
        if (!reader.at_end()) throw format_error("rANS block: trailing bytes");
        return block;
    }
    const std::size_t payload_start = reader.position();
    const std::uint64_t word_count = get_varint(reader);
    for (auto& x : block.state.states) {
        x = reader.get<std::uint32_t>();
        if (x < rans::state_lower_bound) throw format_error("rANS block: lane state below 2^16");
    }
    if (word_count != reader.remaining() / 2 || reader.remaining() % 2 != 0)
        throw format_error("rANS block: word count does not match block length");
    block.word_bytes = reader.get_bytes(reader.remaining());
    h.payload_bytes = bytes.size() - payload_start;
    return block;
}

template <class Symbol, class Context>
void decode_rans_block(rans_block_kind kind, std::span<const std::uint8_t> bytes, std::span<const Context> contexts,
                       std::span<Symbol> out, rans::decode_path path) {
    require_usage(contexts.empty() || contexts.size() == out.size(), "decode_block: contexts/out size mismatch");
    parsed_block block = parse_rans_block(bytes, kind);
    if (block.header.symbol_count != out.size()) throw format_error("rANS block: symbol count differs from out.size()");
    if (out.empty()) return;
    const rans::decode_table_set<Symbol> tables{std::span<const frequency_table>(block.tables)};
    if (contexts.empty()) {
        if (!tables.usable(0)) throw format_error("rANS block: context 0 has no table");
    } else {
        std::vector<std::uint8_t> usable(std::size_t{1} << (8 * sizeof(Context)), 0);
        for (std::uint32_t c = 0; c < block.header.context_count && c < usable.size(); ++c) usable[c] = tables.usable(c);
        std::uint8_t all_usable = 1;
        for (auto c : contexts) all_usable &= usable[c];
        if (!all_usable) throw format_error("rANS block: a context has no table (wrong contexts or corrupt block)");
    }
    rans::decode(tables, contexts, block.word_bytes, out, block.state, path);
    rans::verify_final_state(block.state, block.word_bytes.size());
}

}  // namespace detail

/// Codes 16-bit symbols (< alphabet_size) with per-context static tables; contexts empty = one
/// context, else contexts[i] < context_count selects symbol i's table.
inline byte_vector encode_block(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> contexts,
                                std::uint32_t alphabet_size, std::uint32_t context_count,
                                rans_block_options options = {}) {
    return detail::encode_rans_block(rans_block_kind::wide_symbols, symbols, contexts, alphabet_size, context_count, options);
}
/// Decodes an encode_block block into out (out.size() = symbol count); contexts as at encoding.
/// Throws format_error (never reads out of bounds) on any inconsistency.
inline void decode_block(std::span<const std::uint8_t> bytes, std::span<const std::uint16_t> contexts,
                         std::span<std::uint16_t> out, rans::decode_path path = rans::decode_path::automatic) {
    detail::decode_rans_block(rans_block_kind::wide_symbols, bytes, contexts, out, path);
}
/// Byte-symbol fast variant: alphabet 256, up to 256 contexts, precision <= 12.
inline byte_vector encode_bytes(std::span<const std::uint8_t> symbols, std::span<const std::uint8_t> contexts = {},
                                std::uint32_t context_count = 1, rans_block_options options = {}) {
    return detail::encode_rans_block(rans_block_kind::byte_symbols, symbols, contexts, 256, context_count, options);
}
/// encode_bytes when the caller already holds the counts: counts[context * 256 + symbol] of every
/// (context, symbol) pair of the input, exactly (usage_error when they do not add up to the symbols
/// or name a symbol 0 times that occurs). Same bytes as encode_bytes.
inline byte_vector encode_bytes_counted(std::span<const std::uint8_t> symbols, std::span<const std::uint8_t> contexts,
                                        std::uint32_t context_count, std::span<const std::uint32_t> counts,
                                        rans_block_options options = {}) {
    return detail::encode_rans_block(rans_block_kind::byte_symbols, symbols, contexts, 256, context_count, options, counts);
}
/// Decodes an encode_bytes block into out (out.size() = symbol count).
inline void decode_bytes(std::span<const std::uint8_t> bytes, std::span<const std::uint8_t> contexts,
                         std::span<std::uint8_t> out, rans::decode_path path = rans::decode_path::automatic) {
    detail::decode_rans_block(rans_block_kind::byte_symbols, bytes, contexts, out, path);
}
/// Parses and validates a block's header and tables without decoding (byte or wide).
inline rans_block_header inspect_rans_block(std::span<const std::uint8_t> bytes) {
    require_format(!bytes.empty(), "rANS block: empty");
    require_format(bytes[0] == static_cast<std::uint8_t>(rans_block_kind::byte_symbols) ||
                       bytes[0] == static_cast<std::uint8_t>(rans_block_kind::wide_symbols),
                   "rANS block: unknown block kind");
    return detail::parse_rans_block(bytes, static_cast<rans_block_kind>(bytes[0])).header;
}

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
