// AVX2 encoder and decoder for the interleaved rANS stream of rans_interleaved.hpp: they write
// and read the same bytes as the scalar reference. Eight lanes per 256-bit vector, four
// vectors per 32-lane group. Compiled with a function-level target attribute and chosen at run
// time, so a default (non -mavx2) build still gets it on an AVX2 machine and falls back to the
// scalar path elsewhere. (xsimd 8.1 picks its ISA at compile time and has no variable lane
// permute, which the word spreading below needs, hence raw intrinsics.)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "seqkv/coding/rans_interleaved.hpp"

#include "seqkv/core/cpu.hpp"
#include "seqkv/core/fp_strict.hpp"
#define SEQKV_RANS_AVX2_KERNEL SEQKV_X86_AVX2_KERNELS

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding::rans {

/// Which decoder to run; automatic = AVX2 when the CPU has it, else scalar.
enum class decode_path { automatic, scalar, simd };

/// True when this build and CPU can run the AVX2 decoder.
inline bool simd_decode_available() { return cpu_has_avx2(); }

/// Which encoder to run; automatic = AVX2 when the CPU has it and the block suits it (byte
/// symbols, tables of at most 2^12), else the scalar reference. Every path writes the same bytes.
enum class encode_path { automatic, scalar, simd };

/// True when this build and CPU can run the AVX2 encoder (which also uses FMA: every AVX2 CPU but
/// a few VIA ones has it).
inline bool simd_encode_available() {
#if SEQKV_RANS_AVX2_KERNEL
    static const bool available = cpu_has_avx2() && __builtin_cpu_supports("fma");
    return available;
#else
    return false;
#endif
}

#if SEQKV_RANS_AVX2_KERNEL
namespace detail {

/// For a mask of lanes needing a word (bit i = lane i), lane i takes word number
/// popcount(mask & ((1 << i) - 1)) of the next eight words: words go to lanes in lane order.
struct word_spread_table {
    alignas(32) std::uint32_t lane_word[256][8];
    word_spread_table() {
        for (unsigned mask = 0; mask < 256; ++mask) {
            unsigned taken = 0;
            for (unsigned lane = 0; lane < 8; ++lane) {
                lane_word[mask][lane] = taken & 7u;
                if (mask & (1u << lane)) ++taken;
            }
        }
    }
};
inline const word_spread_table& word_spread() {
    static const word_spread_table table;
    return table;
}

/// Decodes whole 32-symbol groups while at least 64 word bytes remain (a group reads at most 32
/// words, so the unchecked 16-byte loads stay inside the input). Returns the symbols decoded.
template <class Symbol, class Context>
__attribute__((target("avx2"))) std::size_t decode_avx2_groups(const decode_table_set<Symbol>& tables,
                                                               std::span<const Context> contexts,
                                                               std::span<const std::uint8_t> word_bytes,
                                                               std::span<Symbol> out, decoder_state& state) {
    using table_set = decode_table_set<Symbol>;
    const unsigned precision = tables.precision_bits();
    const __m128i precision_count = _mm_cvtsi32_si128(static_cast<int>(precision));
    const __m256i slot_mask = _mm256_set1_epi32(static_cast<int>((1u << precision) - 1));
    const __m256i frequency_mask = _mm256_set1_epi32(static_cast<int>(table_set::frequency_mask));
    const __m256i bias_mask = _mm256_set1_epi32(static_cast<int>(table_set::bias_mask));
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i zero = _mm256_setzero_si256();
    const auto* entries = reinterpret_cast<const int*>(tables.entries());
    const auto* spread = word_spread().lane_word;
    const std::uint8_t* words = word_bytes.data();
    const bool has_contexts = !contexts.empty();

    __m256i x[4];
    for (int v = 0; v < 4; ++v) x[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(state.states.data() + 8 * v));
    std::size_t position = state.word_byte_position;
    std::size_t i = 0;
    for (; i + lane_count <= out.size() && word_bytes.size() - position >= 64; i += lane_count) {
        __m256i symbol_lanes[4];
        for (int v = 0; v < 4; ++v) {
            __m256i index = _mm256_and_si256(x[v], slot_mask);
            if (has_contexts) {
                __m256i context;
                if constexpr (sizeof(Context) == 1)
                    context = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(contexts.data() + i + 8 * v)));
                else
                    context = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(contexts.data() + i + 8 * v)));
                index = _mm256_or_si256(index, _mm256_sll_epi32(context, precision_count));
            }
            const __m256i entry = _mm256_i32gather_epi32(entries, index, 4);
            const __m256i frequency = _mm256_add_epi32(
                _mm256_and_si256(_mm256_srli_epi32(entry, table_set::frequency_shift), frequency_mask), one);
            x[v] = _mm256_add_epi32(_mm256_mullo_epi32(frequency, _mm256_srl_epi32(x[v], precision_count)),
                                    _mm256_and_si256(entry, bias_mask));
            if constexpr (table_set::byte_symbols)
                symbol_lanes[v] = _mm256_srli_epi32(entry, 24);
            else
                symbol_lanes[v] = _mm256_and_si256(
                    _mm256_i32gather_epi32(reinterpret_cast<const int*>(tables.symbols()), index, 2),
                    _mm256_set1_epi32(0xFFFF));
            // Renormalize lanes that fell below L with the next words, in lane order.
            const __m256i needs_word = _mm256_cmpeq_epi32(_mm256_srli_epi32(x[v], 16), zero);
            const unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(needs_word)));
            const __m256i next_words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(words + position)));
            const __m256i spread_words = _mm256_permutevar8x32_epi32(
                next_words, _mm256_load_si256(reinterpret_cast<const __m256i*>(spread[mask])));
            x[v] = _mm256_blendv_epi8(x[v], _mm256_or_si256(_mm256_slli_epi32(x[v], 16), spread_words), needs_word);
            position += 2u * static_cast<unsigned>(__builtin_popcount(mask));
        }
        if constexpr (table_set::byte_symbols) {
            const __m256i packed = _mm256_packus_epi16(_mm256_packus_epi32(symbol_lanes[0], symbol_lanes[1]),
                                                       _mm256_packus_epi32(symbol_lanes[2], symbol_lanes[3]));
            const __m256i ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.data() + i), ordered);
        } else {
            for (int pair = 0; pair < 2; ++pair) {
                const __m256i packed = _mm256_packus_epi32(symbol_lanes[2 * pair], symbol_lanes[2 * pair + 1]);
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.data() + i + 16 * pair),
                                    _mm256_permute4x64_epi64(packed, 0xD8));  // qwords 0,2,1,3
            }
        }
    }
    for (int v = 0; v < 4; ++v) _mm256_store_si256(reinterpret_cast<__m256i*>(state.states.data() + 8 * v), x[v]);
    state.word_byte_position = position;
    return i;
}


/// Encoder cells of the AVX2 path, indexed by context << 8 | symbol: frequency | cumulative << 16
/// (frequency 0: not codable) and 1 / frequency as a double (rounded to nearest, so every machine
/// holds the same value).
struct simd_encoder_cells {
    std::vector<std::uint32_t> packed;
    std::vector<double> inverse;
};

/// For a mask of lanes that emit a word (bit i = lane i), lane 8 - k + j takes the j-th emitting
/// lane (k emitting lanes, in lane order): the words gather at the top of the vector, so a store
/// ending at the current word position keeps them in decoder order.
struct word_gather_table {
    alignas(32) std::uint32_t lane[256][8];
    word_gather_table() {
        for (unsigned mask = 0; mask < 256; ++mask) {
            const unsigned k = static_cast<unsigned>(__builtin_popcount(mask));
            unsigned j = 8 - k;
            for (unsigned l = 0; l < 8; ++l) lane[mask][l] = 0;
            for (unsigned l = 0; l < 8; ++l)
                if (mask & (1u << l)) lane[mask][j++] = l;
        }
    }
};
inline const word_gather_table& word_gather() {
    static const word_gather_table table;
    return table;
}

/// Encodes symbols [0, 32 · groups) from the last group to the first into states (lane l of
/// vector v = state 8v + l), storing words downward from words[position] (each store writes the
/// 8 slots below position, so at least 8 slots must lie below the lowest word: the caller keeps
/// that slack). Returns false if a symbol has frequency 0 (its output is then meaningless).
///
/// The quotient floor(x / f) comes from doubles: with s = x - 2^31 (exact as an int32 lane) it is
/// trunc(s · RN(1/f) + RN(2^31 · RN(1/f) + 2^-16)), each fused multiply-add rounding once. RN(1/f)
/// is within 2^-53 relative of 1/f, so s · (1/f)-error plus 2^31 · (1/f)-error stays within
/// x · 2^-53 / f <= 2^-21, and the two roundings of values below 2^32 add at most 2^-22 each: the
/// sum lies within 2^-20 of x/f + 2^-16. For f <= 2^12 a non-integer x/f lies at least 2^-12 below
/// the next integer, so the truncation is floor(x / f) exactly, on every machine (a test checks
/// the formula fused and unfused for every f). The quotient fits the int32 conversion: after
/// renormalisation x < f · 2^(32-P), so q < 2^(32-P) <= 2^31 (a frequency-0 lane gives garbage,
/// and its block is refused).
template <class Context>
struct avx2_encoder {
    const std::uint8_t* symbols;
    const Context* contexts;
    const int* packed_cells;
    const double* inverse;
    const std::uint32_t (*gather)[8];
    std::uint16_t* words;
    std::size_t position;
    __m128i renorm_shift;
    __m256i total, zero_frequency;

    /// Codes symbols [base, base + 8) into the lanes x; returns the new lanes.
    __attribute__((target("avx2,fma"), always_inline)) inline __m256i step(__m256i x, std::size_t base) {
        const __m256i low16 = _mm256_set1_epi32(0xFFFF);
        __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(symbols + base)));
        if (contexts) {
            __m256i context;
            if constexpr (sizeof(Context) == 1)
                context = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(contexts + base)));
            else
                context = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(contexts + base)));
            index = _mm256_or_si256(index, _mm256_slli_epi32(context, 8));
        }
        const __m256i entry = _mm256_i32gather_epi32(packed_cells, index, 4);
        const __m256i frequency = _mm256_and_si256(entry, low16);
        const __m256i cumulative = _mm256_srli_epi32(entry, 16);
        const __m256i complement = _mm256_sub_epi32(total, frequency);
        zero_frequency = _mm256_or_si256(zero_frequency, _mm256_cmpeq_epi32(frequency, _mm256_setzero_si256()));
        // (masked gathers: the plain one's pass-through operand is undefined, which g++ 12 flags)
        const __m256d all_lanes = _mm256_castsi256_pd(_mm256_set1_epi32(-1));
        const __m256d inv_lo = _mm256_mask_i32gather_pd(_mm256_setzero_pd(), inverse, _mm256_castsi256_si128(index), all_lanes, 8);
        const __m256d inv_hi = _mm256_mask_i32gather_pd(_mm256_setzero_pd(), inverse, _mm256_extracti128_si256(index, 1), all_lanes, 8);
        const __m256d two31 = _mm256_set1_pd(2147483648.0), nudge = _mm256_set1_pd(1.0 / 65536.0);
        const __m256d offset_lo = _mm256_fmadd_pd(two31, inv_lo, nudge), offset_hi = _mm256_fmadd_pd(two31, inv_hi, nudge);
        // Renormalize where x > f · 2^(32-P) - 1, i.e. (x >> (32-P)) > f - 1 (both below 2^13: a signed compare).
        const __m256i renormalize =
            _mm256_cmpgt_epi32(_mm256_srl_epi32(x, renorm_shift), _mm256_sub_epi32(frequency, _mm256_set1_epi32(1)));
        const unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(renormalize)));
        const __m256i gathered = _mm256_and_si256(
            _mm256_permutevar8x32_epi32(x, _mm256_load_si256(reinterpret_cast<const __m256i*>(gather[mask]))), low16);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(words + position - 8),
                         _mm_packus_epi32(_mm256_castsi256_si128(gathered), _mm256_extracti128_si256(gathered, 1)));
        position -= static_cast<unsigned>(__builtin_popcount(mask));
        x = _mm256_blendv_epi8(x, _mm256_srli_epi32(x, 16), renormalize);
        // q = floor(x / f), four lanes per double vector; then x' = q · 2^P + (x - q · f) + c = x + c + q · (2^P - f).
        const __m256i xs = _mm256_xor_si256(x, _mm256_set1_epi32(std::int32_t(0x80000000u)));
        const __m128i q_lo = _mm256_cvttpd_epi32(_mm256_fmadd_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(xs)), inv_lo, offset_lo));
        const __m128i q_hi = _mm256_cvttpd_epi32(_mm256_fmadd_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(xs, 1)), inv_hi, offset_hi));
        const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(q_lo), q_hi, 1);
        return _mm256_add_epi32(_mm256_add_epi32(x, cumulative), _mm256_mullo_epi32(q, complement));
    }
};

template <class Context>
__attribute__((target("avx2,fma"))) bool encode_avx2_groups(const std::uint8_t* symbols, const Context* contexts, std::size_t groups,
                                                            const simd_encoder_cells& cells, unsigned precision,
                                                            std::array<std::uint32_t, lane_count>& states, std::uint16_t* words,
                                                            std::size_t& word_position) {
    avx2_encoder<Context> e{symbols,
                            contexts,
                            reinterpret_cast<const int*>(cells.packed.data()),
                            cells.inverse.data(),
                            word_gather().lane,
                            words,
                            word_position,
                            _mm_cvtsi32_si128(static_cast<int>(32 - precision)),
                            _mm256_set1_epi32(static_cast<int>(1u << precision)),
                            _mm256_setzero_si256()};
    __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states.data()));
    __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states.data() + 8));
    __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states.data() + 16));
    __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states.data() + 24));
    for (std::size_t g = groups; g-- > 0;) {
        x3 = e.step(x3, 32 * g + 24);
        x2 = e.step(x2, 32 * g + 16);
        x1 = e.step(x1, 32 * g + 8);
        x0 = e.step(x0, 32 * g);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(states.data()), x0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(states.data() + 8), x1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(states.data() + 16), x2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(states.data() + 24), x3);
    word_position = e.position;
    return _mm256_testz_si256(e.zero_frequency, e.zero_frequency) != 0;
}

}  // namespace detail
#endif

/// Decodes out[0, out.size()) from state with the chosen path (the SIMD path handles whole
/// groups while enough input remains, the scalar reference finishes). Contexts must be validated.
template <class Symbol, class Context>
void decode(const decode_table_set<Symbol>& tables, std::span<const Context> contexts,
            std::span<const std::uint8_t> word_bytes, std::span<Symbol> out, decoder_state& state,
            decode_path path = decode_path::automatic) {
    std::size_t begin = 0;
#if SEQKV_RANS_AVX2_KERNEL
    if (path != decode_path::scalar && simd_decode_available())
        begin = detail::decode_avx2_groups(tables, contexts, word_bytes, out, state);
#else
    (void)path;
#endif
    decode_scalar_from(tables, contexts, word_bytes, out, begin, state);
}

/// Encodes symbols with tables[context], as encode_scalar() does and with its bytes: byte symbols
/// under tables of at most 2^12 (every byte block) take the AVX2 encoder when `path` allows and
/// the CPU has AVX2 (the last partial group of 32 symbols is coded first, one symbol at a time,
/// with the same arithmetic); anything else the scalar reference.
template <class Symbol, class Context>
encoded_lanes encode(std::span<const Symbol> symbols, std::span<const Context> contexts, std::span<const frequency_table> tables,
                     encode_path path = encode_path::automatic) {
#if SEQKV_RANS_AVX2_KERNEL
    // (unsigned types only: a signed byte would index the cells below their start)
    if constexpr (std::is_same_v<Symbol, std::uint8_t> && (std::is_same_v<Context, std::uint8_t> || std::is_same_v<Context, std::uint16_t>)) {
        const std::size_t n = symbols.size();
        // (cells are built per block: not for many tables over few symbols)
        if (path != encode_path::scalar && simd_encode_available() && n >= 8 * lane_count && !tables.empty() &&
            tables.size() <= 256 && 256 * tables.size() <= 4096 + 4 * n && (contexts.empty() || contexts.size() == n)) {
            const unsigned precision = tables[0].precision_bits();
            bool suitable = precision <= max_byte_precision_bits;
            for (const auto& t : tables) suitable = suitable && t.precision_bits() == precision && t.alphabet_size() <= 256;
            if (suitable && !contexts.empty())  // a gather index must stay inside the cells
                require_usage(largest_of(contexts) < tables.size(), "rans::encode: context or symbol out of range");
            if (suitable) {
                detail::simd_encoder_cells cells;
                cells.packed.assign(tables.size() * 256, 0u);
                cells.inverse.assign(tables.size() * 256, 0.0);
                for (std::size_t c = 0; c < tables.size(); ++c)
                    for (std::uint32_t s = 0; s < tables[c].alphabet_size(); ++s)
                        if (const std::uint32_t f = tables[c].frequency(s); f != 0) {
                            cells.packed[c * 256 + s] = f | tables[c].cumulative(s) << 16;
                            cells.inverse[c * 256 + s] = 1.0 / double(f);
                        }
                encoded_lanes result;
                result.states.fill(state_lower_bound);
                constexpr std::size_t slack = 8;  // the vector stores write 8 slots below the word position
                result.words.resize(n + 1 + slack);
                std::size_t position = n + 1 + slack;
                const std::size_t groups = n / lane_count;
                for (std::size_t i = n; i-- > groups * lane_count;) {  // the partial last group, scalar
                    const std::uint32_t cell = std::uint32_t(context_at(contexts, i)) * 256 + symbols[i];
                    const std::uint32_t f = cells.packed[cell] & 0xFFFF, cumulative = cells.packed[cell] >> 16;
                    require_usage(f != 0, "rans::encode: symbol has zero frequency");
                    std::uint32_t& x = result.states[i % lane_count];
                    if ((x >> (32 - precision)) >= f) result.words[--position] = static_cast<std::uint16_t>(x), x >>= word_bits;
                    x = ((x / f) << precision) + x % f + cumulative;
                }
                const bool codable = detail::encode_avx2_groups(reinterpret_cast<const std::uint8_t*>(symbols.data()),
                                                                contexts.empty() ? nullptr : contexts.data(), groups, cells,
                                                                precision, result.states, result.words.data(), position);
                require_usage(codable, "rans::encode: symbol has zero frequency");
                result.words.erase(result.words.begin(), result.words.begin() + static_cast<std::ptrdiff_t>(position));
                return result;
            }
        }
    }
#endif
    (void)path;
    return encode_scalar(symbols, contexts, tables);
}

}  // namespace seqkv::coding::rans

SEQKV_FP_STRICT_END
