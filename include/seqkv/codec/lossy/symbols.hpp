// Symbol streams of the lossy codec, behind one small interface so the entropy stage can change
// without touching quantizers: `packed` spends bits_for_alphabet(alphabet) bits per symbol (what
// per-vector quantizers store in practice); `adaptive` codes each symbol with the coding/
// library's range coder under an adaptive order-0 model per context (no tables to ship).
// Symbols are coded one at a time, interleaved with closed-loop reconstruction, so contexts may
// depend on anything the decoder already knows. `rans` codes a whole stream at once with the
// coding/ block rANS API (per-context static tables from the stream's own histograms, shipped
// in the block): contexts must be known before decoding (channel, predictor class), which is
// what makes it fast — see encode_symbol_block / decode_symbol_block.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/coding/rans_block.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/quant/quantizer.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossy {

/// How quantized symbols become bytes. Values are stored in configs.
enum class symbol_coding : std::uint8_t { packed = 0, adaptive = 1, rans = 2 };

/// Codes a whole stream of symbols (< alphabet) under contexts (< context_count) as one static-table
/// rANS block (byte API when both fit in 256, else the 16-bit API). Empty stream: empty bytes.
inline byte_vector encode_symbol_block(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> contexts,
                                       std::uint32_t alphabet, std::uint32_t context_count, bool parametric_tables) {
    if (symbols.empty()) return {};
    const coding::rans_block_options options{.precision_bits = 0, .parametric_tables = parametric_tables};
    if (alphabet <= 256 && context_count <= 256) {
        std::vector<std::uint8_t> s8(symbols.begin(), symbols.end()), c8(contexts.begin(), contexts.end());
        return coding::encode_bytes(s8, c8, context_count, options);
    }
    return coding::encode_block(symbols, contexts, alphabet, context_count, options);
}

/// Decodes an encode_symbol_block stream into out (out.size() symbols; contexts as at encoding).
/// Symbols are NOT checked against per-context alphabets here (the caller does); format_error on
/// any corruption the block itself can detect.
inline void decode_symbol_block(std::span<const std::uint8_t> bytes, std::span<const std::uint16_t> contexts,
                                std::span<std::uint16_t> out, std::uint32_t alphabet, std::uint32_t context_count) {
    if (out.empty()) {
        require_format(bytes.empty(), "lossy rANS stream: bytes for an empty stream");
        return;
    }
    require_format(!bytes.empty(), "lossy rANS stream: missing");
    if (alphabet <= 256 && context_count <= 256) {
        std::vector<std::uint8_t> c8(contexts.begin(), contexts.end()), s8(out.size());
        coding::decode_bytes(bytes, c8, s8);
        std::copy(s8.begin(), s8.end(), out.begin());
        return;
    }
    coding::decode_block(bytes, contexts, out);
    for (auto s : out) require_format(s < alphabet, "lossy rANS stream: symbol outside alphabet");
}

/// A stream of symbols whose raw context is source × classes + class (source: one quantizer
/// context of one head, e.g. a channel; class: the predictor's row class). Sources are grouped by
/// the empirical entropy of their symbols (bins of entropy_bin_bits), so channels of similar
/// spread share static tables: far fewer tables to ship and to build than one per channel.
/// Layout: u8 group count G (1..max_groups), ceil(sources / 2) bytes of 4-bit group ids when
/// G > 1, then the rANS block over contexts group × classes + class.
struct grouped_stream_shape {
    std::uint32_t sources = 1, classes = 1, alphabet = 1;
    static constexpr std::uint32_t max_groups = 16;
    static constexpr double entropy_bin_bits = 0.5;
};

inline byte_vector encode_grouped_stream(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> raw_contexts,
                                         const grouped_stream_shape& shape, bool parametric_tables) {
    if (symbols.empty()) return {};
    const std::uint32_t a = shape.alphabet;
    std::vector<std::uint32_t> counts(std::size_t(shape.sources) * a, 0), totals(shape.sources, 0);
    for (std::size_t i = 0; i < symbols.size(); ++i) {
        const std::uint32_t source = raw_contexts[i] / shape.classes;
        ++counts[std::size_t(source) * a + symbols[i]];
        ++totals[source];
    }
    std::vector<std::uint32_t> bin(shape.sources, 0);
    for (std::uint32_t s = 0; s < shape.sources; ++s) {
        double h = 0;
        for (std::uint32_t v = 0; v < a; ++v)
            if (const std::uint32_t n = counts[std::size_t(s) * a + v]) {
                const double p = double(n) / totals[s];
                h -= p * std::log2(p);
            }
        bin[s] = std::uint32_t(std::min(h / grouped_stream_shape::entropy_bin_bits, 1000.0));
    }
    // Dense group ids in bin order; bins beyond max_groups distinct values merge into the last.
    std::vector<std::uint32_t> distinct(bin);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    const auto groups = std::uint32_t(std::min<std::size_t>(distinct.size(), grouped_stream_shape::max_groups));
    std::vector<std::uint8_t> group(shape.sources);
    for (std::uint32_t s = 0; s < shape.sources; ++s)
        group[s] = std::uint8_t(std::min<std::size_t>(
            std::lower_bound(distinct.begin(), distinct.end(), bin[s]) - distinct.begin(), groups - 1));
    byte_vector out{std::uint8_t(groups)};
    if (groups > 1)
        for (std::uint32_t s = 0; s < shape.sources; s += 2)
            out.push_back(std::uint8_t(group[s] | (s + 1 < shape.sources ? group[s + 1] << 4 : 0)));
    std::vector<std::uint16_t> contexts(raw_contexts.size());
    for (std::size_t i = 0; i < contexts.size(); ++i) {
        const std::uint32_t source = raw_contexts[i] / shape.classes;
        contexts[i] = std::uint16_t(group[source] * shape.classes + raw_contexts[i] % shape.classes);
    }
    const byte_vector block = encode_symbol_block(symbols, contexts, a, groups * shape.classes, parametric_tables);
    out.insert(out.end(), block.begin(), block.end());
    return out;
}

/// Decodes encode_grouped_stream bytes; raw_contexts as at encoding; format_error on corruption.
inline void decode_grouped_stream(std::span<const std::uint8_t> bytes, std::span<const std::uint16_t> raw_contexts,
                                  std::span<std::uint16_t> out, const grouped_stream_shape& shape) {
    if (out.empty()) {
        require_format(bytes.empty(), "lossy rANS stream: bytes for an empty stream");
        return;
    }
    byte_reader r(bytes, "lossy rANS stream");
    const std::uint32_t groups = r.get<std::uint8_t>();
    require_format(groups >= 1 && groups <= grouped_stream_shape::max_groups, "lossy rANS stream: bad group count");
    std::vector<std::uint8_t> group(shape.sources, 0);
    if (groups > 1) {
        const auto packed = r.get_bytes((shape.sources + 1) / 2);
        for (std::uint32_t s = 0; s < shape.sources; ++s) {
            group[s] = std::uint8_t((packed[s / 2] >> (4 * (s % 2))) & 15);
            require_format(group[s] < groups, "lossy rANS stream: group id out of range");
        }
    }
    const std::uint32_t raw_count = shape.sources * shape.classes, context_count = groups * shape.classes;
    std::vector<std::uint16_t> map(raw_count);
    for (std::uint32_t raw = 0; raw < raw_count; ++raw)
        map[raw] = std::uint16_t(group[raw / shape.classes] * shape.classes + raw % shape.classes);
    const auto block = bytes.subspan(r.position());
    if (shape.alphabet <= 256 && context_count <= 256) {  // byte path without 16-bit round trips
        std::vector<std::uint8_t> contexts(raw_contexts.size()), symbols(out.size());
        for (std::size_t i = 0; i < contexts.size(); ++i) contexts[i] = std::uint8_t(map[raw_contexts[i]]);
        require_format(!block.empty(), "lossy rANS stream: missing");
        coding::decode_bytes(block, contexts, symbols);
        std::copy(symbols.begin(), symbols.end(), out.begin());
        return;
    }
    std::vector<std::uint16_t> contexts(raw_contexts.size());
    for (std::size_t i = 0; i < contexts.size(); ++i) contexts[i] = map[raw_contexts[i]];
    decode_symbol_block(block, contexts, out, shape.alphabet, context_count);
}

/// Encoder side: put() symbols under contexts, then finish() once.
class symbol_writer {
public:
    symbol_writer(symbol_coding mode, byte_vector& out) : mode_(mode), out_(&out), range_(out) {}

    /// Starts a new model set (one per context, with its alphabet size); resets adaptation.
    void set_models(std::span<const std::uint32_t> alphabets) {
        alphabets_.assign(alphabets.begin(), alphabets.end());
        models_.clear();
        if (mode_ == symbol_coding::adaptive)
            for (auto a : alphabets_) models_.emplace_back(a);
    }
    void put(std::uint32_t symbol, std::uint32_t context) {
        require_usage(context < alphabets_.size() && symbol < alphabets_[context], "symbol_writer: symbol out of range");
        if (mode_ == symbol_coding::adaptive) {
            coding::encode_symbol(range_, models_[context], symbol);
            return;
        }
        const unsigned bits = quant::bits_for_alphabet(alphabets_[context]);
        bit_buffer_ |= std::uint64_t(symbol) << bit_count_;
        bit_count_ += bits;
        while (bit_count_ >= 8) {
            out_->push_back(static_cast<std::uint8_t>(bit_buffer_));
            bit_buffer_ >>= 8;
            bit_count_ -= 8;
        }
    }
    void finish() {
        if (mode_ == symbol_coding::adaptive) {
            range_.finish();
        } else if (bit_count_ > 0) {
            out_->push_back(static_cast<std::uint8_t>(bit_buffer_));
            bit_count_ = 0;
        }
    }

private:
    symbol_coding mode_;
    byte_vector* out_;
    coding::range_encoder range_;
    std::vector<std::uint32_t> alphabets_;
    std::vector<coding::adaptive_frequency_model> models_;
    std::uint64_t bit_buffer_ = 0;
    unsigned bit_count_ = 0;
};

/// Decoder side, mirroring symbol_writer call for call. Corrupt input yields format_error at
/// the latest in finish(), never an out-of-bounds read.
class symbol_reader {
public:
    symbol_reader(symbol_coding mode, std::span<const std::uint8_t> bytes) : mode_(mode), bytes_(bytes), range_(bytes) {}

    void set_models(std::span<const std::uint32_t> alphabets) {
        alphabets_.assign(alphabets.begin(), alphabets.end());
        models_.clear();
        if (mode_ == symbol_coding::adaptive)
            for (auto a : alphabets_) models_.emplace_back(a);
    }
    /// out.size() symbols under contexts[j] + cls, the same as get() called for each in order.
    void get_row(std::span<const std::uint32_t> contexts, std::uint32_t cls, std::span<std::uint16_t> out) {
        require_usage(contexts.size() >= out.size(), "symbol_reader: fewer contexts than symbols");
        if (mode_ != symbol_coding::packed) {
            for (std::size_t j = 0; j < out.size(); ++j) out[j] = get(contexts[j] + cls);
            return;
        }
        // Packed rows: each run of symbols that share an alphabet (a whole KIVI / int8 / fp8 row;
        // TurboQuant's codebook indices, then its QJL signs) is read as one plain bit stream.
        for (std::size_t j = 0; j < out.size();) {
            require_usage(contexts[j] + cls < alphabets_.size(), "symbol_reader: context out of range");
            const std::uint32_t alphabet = alphabets_[contexts[j] + cls];
            std::size_t k = j + 1;
            while (k < out.size()) {  // the run: equal contexts (compared alone), or others of the same alphabet
                if (contexts[k] == contexts[j]) {
                    ++k;
                    continue;
                }
                require_usage(contexts[k] + cls < alphabets_.size(), "symbol_reader: context out of range");
                if (alphabets_[contexts[k] + cls] != alphabet) break;
                ++k;
            }
            if (alphabet <= 1) {
                for (std::size_t i = j; i < k; ++i) out[i] = get(contexts[i] + cls);
            } else {
                get_run(alphabet, out.subspan(j, k - j));
            }
            j = k;
        }
    }
    std::uint16_t get(std::uint32_t context) {
        require_usage(context < alphabets_.size(), "symbol_reader: context out of range");
        if (mode_ == symbol_coding::adaptive) {
            if (range_.overrun_bytes() > 8) throw format_error("lossy symbol stream truncated");
            return static_cast<std::uint16_t>(coding::decode_symbol(range_, models_[context]));
        }
        const unsigned bits = quant::bits_for_alphabet(alphabets_[context]);
        while (bit_count_ < bits) {
            if (position_ >= bytes_.size()) throw format_error("lossy packed symbol stream truncated");
            bit_buffer_ |= std::uint64_t(bytes_[position_++]) << bit_count_;
            bit_count_ += 8;
        }
        const auto symbol = static_cast<std::uint32_t>(bit_buffer_ & ((std::uint64_t(1) << bits) - 1));
        bit_buffer_ >>= bits;
        bit_count_ -= bits;
        if (symbol >= alphabets_[context]) throw format_error("lossy packed symbol out of range");
        return static_cast<std::uint16_t>(symbol);
    }
    /// Checks that the stream was consumed consistently.
    void finish() const {
        if (mode_ == symbol_coding::adaptive) {
            if (range_.overrun_bytes() > 3) throw format_error("lossy symbol stream truncated");
        } else if (position_ != bytes_.size() || bit_count_ >= 8) {  // get_row reads ahead: whole bytes left = trailing
            throw format_error("lossy packed symbol stream has trailing bytes");
        }
    }

private:
    /// out.size() packed symbols of one alphabet (>= 2): a plain bit stream of `bits` each. Byte
    /// symbols on a byte boundary are copied; others of up to 8 bits (KIVI, TurboQuant) come from
    /// 64-bit loads at any bit offset while 8 bytes remain readable (little-endian hosts); the
    /// rest one at a time, refilled 7 bytes at a time.
    void get_run(std::uint32_t alphabet, std::span<std::uint16_t> out) {
        const unsigned bits = quant::bits_for_alphabet(alphabet);
        const std::uint64_t mask = (std::uint64_t(1) << bits) - 1;
        std::uint32_t largest = 0;
        std::size_t j = 0;
        if (bits == 8 && bit_count_ % 8 == 0) {
            // Byte symbols on a byte boundary (int8 / fp8 rows): the bytes the buffer holds go back
            // to the stream, and the run is copied from whole bytes.
            position_ -= bit_count_ / 8;
            bit_buffer_ = 0, bit_count_ = 0;
            const std::size_t whole = std::min(out.size(), bytes_.size() - position_);
            const std::uint8_t* in = bytes_.data() + position_;
            std::uint8_t top = 0;
            for (std::size_t i = 0; i < whole; ++i) out[i] = in[i], top = std::max(top, in[i]);
            position_ += whole, j = whole, largest = top;
        } else if constexpr (std::endian::native == std::endian::little) {
            if (bits <= 8) {
                std::uint64_t bit = std::uint64_t(position_) * 8 - bit_count_;  // next unread bit of the stream
                // A full alphabet (2^bits symbols: QJL signs, TurboQuant and KIVI codebooks) needs no range check.
                if (alphabet == (1u << bits)) j = unpack_words<false>(bits, out, bit, largest);
                else j = unpack_words<true>(bits, out, bit, largest);
                position_ = std::size_t(bit / 8), bit_buffer_ = 0, bit_count_ = 0;
                if (bit % 8 != 0) {  // the partial byte goes back into the buffer
                    bit_buffer_ = bytes_[position_++] >> (bit % 8);
                    bit_count_ = 8 - unsigned(bit % 8);
                }
            }
        }
        for (auto& o : out.subspan(j)) {
            if (bit_count_ < bits) {
                while (bit_count_ <= 56 && position_ < bytes_.size()) {
                    bit_buffer_ |= std::uint64_t(bytes_[position_++]) << bit_count_;
                    bit_count_ += 8;
                }
                if (bit_count_ < bits) throw format_error("lossy packed symbol stream truncated");
            }
            const auto symbol = std::uint32_t(bit_buffer_ & mask);
            bit_buffer_ >>= bits;
            bit_count_ -= bits;
            largest = std::max(largest, symbol);
            o = std::uint16_t(symbol);
        }
        if (largest >= alphabet) throw format_error("lossy packed symbol out of range");
    }

    /// A run of Bits-bit symbols from stream bit `bit`: 56 / Bits symbols from each 8-byte
    /// little-endian load (fewer for the run's last), while 8 bytes remain readable from the
    /// load's first byte. Returns how many it read; advances `bit`.
    template <bool Check>
    std::size_t unpack_words(unsigned bits, std::span<std::uint16_t> out, std::uint64_t& bit, std::uint32_t& largest) const {
        switch (bits) {
            case 1: return unpack_words<1, Check>(out, bit, largest);
            case 2: return unpack_words<2, Check>(out, bit, largest);
            case 3: return unpack_words<3, Check>(out, bit, largest);
            case 4: return unpack_words<4, Check>(out, bit, largest);
            case 5: return unpack_words<5, Check>(out, bit, largest);
            case 6: return unpack_words<6, Check>(out, bit, largest);
            case 7: return unpack_words<7, Check>(out, bit, largest);
            default: return unpack_words<8, Check>(out, bit, largest);
        }
    }
    template <unsigned Bits, bool Check>
    std::size_t unpack_words(std::span<std::uint16_t> out, std::uint64_t& bit, std::uint32_t& largest) const {
        constexpr std::size_t group = 56 / Bits;
        constexpr std::uint64_t mask = (std::uint64_t{1} << Bits) - 1;
        const std::uint8_t* in = bytes_.data();
        std::uint64_t top = largest;
        std::size_t j = 0;
        for (; out.size() - j >= group && bit / 8 + 8 <= bytes_.size(); j += group, bit += group * Bits) {
            std::uint64_t word;
            std::memcpy(&word, in + bit / 8, 8);
            word >>= bit % 8;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 16
#endif
            for (std::size_t g = 0; g < group; ++g) {
                const std::uint64_t v = (word >> (g * Bits)) & mask;
                out[j + g] = std::uint16_t(v);
                if constexpr (Check) top = std::max(top, v);
            }
        }
        if (j < out.size() && out.size() - j < group && bit / 8 + 8 <= bytes_.size()) {
            std::uint64_t word;
            std::memcpy(&word, in + bit / 8, 8);
            word >>= bit % 8;
            for (; j < out.size(); ++j, bit += Bits, word >>= Bits) {
                const std::uint64_t v = word & mask;
                out[j] = std::uint16_t(v);
                if constexpr (Check) top = std::max(top, v);
            }
        }
        largest = std::uint32_t(top);
        return j;
    }

    symbol_coding mode_;
    std::span<const std::uint8_t> bytes_;
    coding::range_decoder range_;
    std::vector<std::uint32_t> alphabets_;
    std::vector<coding::adaptive_frequency_model> models_;
    std::uint64_t bit_buffer_ = 0;
    unsigned bit_count_ = 0;
    std::size_t position_ = 0;
};

}  // namespace seqkv::lossy

namespace seqkv::lossy {

// Symbol coder policies: the entropy-coder stage as the lossy codec calls it. Sequential coders
// (packed, adaptive range) code one symbol at a time, so a context may depend on anything decoded
// so far and decoding interleaves with reconstruction. Block coders declare contexts_known_ahead:
// the decoder derives every context before decoding (side information, predictor row classes)
// and decodes a whole (layer, K/V) stream at once — what lets blocks be reconstructed in any order.

/// bits_for_alphabet(alphabet) bits per symbol, no model.
struct packed_symbols {
    static constexpr symbol_coding id = symbol_coding::packed;
    static constexpr bool contexts_known_ahead = false;
    static constexpr std::string_view name = "packed";
};
/// Range coder, one adaptive order-0 model per context (models reset per block).
struct adaptive_range_symbols {
    static constexpr symbol_coding id = symbol_coding::adaptive;
    static constexpr bool contexts_known_ahead = false;
    static constexpr std::string_view name = "adaptive";
};
/// Static-table interleaved rANS over a grouped stream (encode_grouped_stream).
template <bool ParametricTables = true>
struct grouped_rans_symbols {
    static constexpr symbol_coding id = symbol_coding::rans;
    static constexpr bool contexts_known_ahead = true;
    static constexpr std::string_view name = ParametricTables ? "rans" : "rans-static";
    static byte_vector encode(std::span<const std::uint16_t> symbols, std::span<const std::uint16_t> contexts,
                              const grouped_stream_shape& shape) {
        return encode_grouped_stream(symbols, contexts, shape, ParametricTables);
    }
    static void decode(std::span<const std::uint8_t> bytes, std::span<const std::uint16_t> contexts,
                       std::span<std::uint16_t> out, const grouped_stream_shape& shape) {
        decode_grouped_stream(bytes, contexts, out, shape);
    }
};

/// A symbol coder policy: sequential (coded through symbol_writer / symbol_reader of its id) or a
/// block coder with contexts known ahead (static encode / decode of a whole stream).
template <class C>
concept SymbolCoder = requires {
    { C::id } -> std::convertible_to<symbol_coding>;
    { C::contexts_known_ahead } -> std::convertible_to<bool>;
    { C::name } -> std::convertible_to<std::string_view>;
} && (!C::contexts_known_ahead || requires(std::span<const std::uint16_t> s, std::span<const std::uint8_t> b,
                                             std::span<std::uint16_t> out, const grouped_stream_shape& shape) {
    { C::encode(s, s, shape) } -> std::same_as<byte_vector>;
    { C::decode(b, s, out, shape) } -> std::same_as<void>;
});

static_assert(SymbolCoder<packed_symbols>);
static_assert(SymbolCoder<adaptive_range_symbols>);
static_assert(SymbolCoder<grouped_rans_symbols<true>>);
static_assert(SymbolCoder<grouped_rans_symbols<false>>);

}  // namespace seqkv::lossy

SEQKV_FP_STRICT_END
