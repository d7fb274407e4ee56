// AVX2 decoder for the interleaved rANS stream of rans_interleaved.hpp: reads the same bytes as
// the scalar reference and writes the same symbols. Eight lanes per 256-bit vector, four
// vectors per 32-lane group. Compiled with a function-level target attribute and chosen at run
// time, so a default (non -mavx2) build still gets it on an AVX2 machine and falls back to the
// scalar path elsewhere. (xsimd 8.1 picks its ISA at compile time and has no variable lane
// permute, which the word spreading below needs, hence raw intrinsics.)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "seqkv/coding/rans_interleaved.hpp"

#include "seqkv/core/cpu.hpp"
#define SEQKV_RANS_AVX2_KERNEL SEQKV_X86_AVX2_KERNELS

namespace seqkv::coding::rans {

/// Which decoder to run; automatic = AVX2 when the CPU has it, else scalar.
enum class decode_path { automatic, scalar, simd };

/// True when this build and CPU can run the AVX2 decoder.
inline bool simd_decode_available() { return cpu_has_avx2(); }

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

}  // namespace seqkv::coding::rans
