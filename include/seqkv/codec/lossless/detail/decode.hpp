// Decoder of the lossless plane codec (included by codec/lossless/planes.hpp): parse and validate the
// block, entropy-decode the coded planes (stored planes are used in place), then one fused pass
// joins planes, undoes the sign map and the predictor, and writes the elements.
#pragma once

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossless {
namespace detail {

/// memcpy of one row (at most 256 elements) in 16-byte pieces, the last one overlapping: a
/// variable-length memcpy of a few hundred bytes otherwise becomes a slow `rep movs` here.
/// dst and src must not overlap.
inline void copy_row(std::uint8_t* dst, const std::uint8_t* src, std::size_t bytes) {
    if (bytes < 16) {
        std::memcpy(dst, src, bytes);
        return;
    }
    for (std::size_t o = 0; o + 16 < bytes; o += 16) std::memcpy(dst + o, src + o, 16);
    std::memcpy(dst + bytes - 16, src + bytes - 16, 16);
}

/// Joins m 16-bit elements from planes a (byte 0) and b (byte 1) — join2 — XORs them with the m
/// little-endian 16-bit values at x when x is set (the reference row or the sign map), and writes
/// them little-endian at dst. dst must not overlap a, b or x. Pure bit operations: the scalar, SSE2
/// and AVX2 versions write the same bytes (test Lossless.JoinKernelsWriteTheScalarBytes).
/// Intrinsics, not xsimd: xsimd 8.1 fixes its ISA at compile time (no run-time dispatch).
inline void join_row2_scalar(const std::uint8_t* a, const std::uint8_t* b, const std::uint8_t* x, std::uint8_t* dst, std::size_t m) {
    for (std::size_t c = 0; c < m; ++c) {
        std::uint16_t v = join2(a[c], b[c]);
        if (x) v = std::uint16_t(v ^ (x[2 * c] | (x[2 * c + 1] << 8)));
        dst[2 * c] = std::uint8_t(v), dst[2 * c + 1] = std::uint8_t(v >> 8);
    }
}
#if SEQKV_X86_AVX2_KERNELS
/// 16 elements: w = b | a << 8 per lane, then join2's bit moves: (w >> 1) & 0x7F80 is a << 7,
/// (w << 8) & 0x8000 is b's top bit, w & 0x7F b's low bits.
inline __m128i join2_lanes(__m128i w) {
    return _mm_or_si128(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(w, 1), _mm_set1_epi16(0x7F80)),
                                     _mm_and_si128(_mm_slli_epi16(w, 8), _mm_set1_epi16(std::int16_t(-32768)))),
                        _mm_and_si128(w, _mm_set1_epi16(0x7F)));
}
inline void join_row2_sse2(const std::uint8_t* a, const std::uint8_t* b, const std::uint8_t* x, std::uint8_t* dst, std::size_t m) {
    std::size_t c = 0;
    for (; c + 16 <= m; c += 16) {
        const __m128i A = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + c));
        const __m128i B = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + c));
        __m128i lo = join2_lanes(_mm_unpacklo_epi8(B, A)), hi = join2_lanes(_mm_unpackhi_epi8(B, A));
        if (x) {
            lo = _mm_xor_si128(lo, _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 * c)));
            hi = _mm_xor_si128(hi, _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 * c + 16)));
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * c), lo);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * c + 16), hi);
    }
    join_row2_scalar(a + c, b + c, x ? x + 2 * c : nullptr, dst + 2 * c, m - c);
}
__attribute__((target("avx2"))) inline __m256i join2_lanes_avx2(__m256i w) {
    return _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(w, 1), _mm256_set1_epi16(0x7F80)),
                                           _mm256_and_si256(_mm256_slli_epi16(w, 8), _mm256_set1_epi16(std::int16_t(-32768)))),
                           _mm256_and_si256(w, _mm256_set1_epi16(0x7F)));
}
__attribute__((target("avx2"))) inline void join_row2_avx2(const std::uint8_t* a, const std::uint8_t* b, const std::uint8_t* x,
                                                           std::uint8_t* dst, std::size_t m) {
    std::size_t c = 0;
    for (; c + 32 <= m; c += 32) {
        // unpack works within 128-bit lanes: permute so lo holds elements 0-15 and hi 16-31.
        const __m256i A = _mm256_permute4x64_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + c)), 0xD8);
        const __m256i B = _mm256_permute4x64_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + c)), 0xD8);
        __m256i lo = join2_lanes_avx2(_mm256_unpacklo_epi8(B, A)), hi = join2_lanes_avx2(_mm256_unpackhi_epi8(B, A));
        if (x) {
            lo = _mm256_xor_si256(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 2 * c)));
            hi = _mm256_xor_si256(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 2 * c + 32)));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * c), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * c + 32), hi);
    }
    join_row2_sse2(a + c, b + c, x ? x + 2 * c : nullptr, dst + 2 * c, m - c);
}
#endif
/// Kernels this build and CPU can run, scalar first (for tests), the fastest last: SSE2 on every
/// x86-64, AVX2 where the CPU has it (null: not in this build).
template <class Fn>
inline std::vector<Fn> kernel_list(Fn scalar, Fn sse2, Fn avx2) {
    std::vector<Fn> k{scalar};
    if (sse2) k.push_back(sse2);
    if (avx2 && cpu_has_avx2()) k.push_back(avx2);
    return k;
}
#if SEQKV_X86_AVX2_KERNELS
#define SEQKV_KERNELS(name) kernel_list(&name##_scalar, &name##_sse2, &name##_avx2)
#else
#define SEQKV_KERNELS(name) kernel_list<decltype(&name##_scalar)>(&name##_scalar, nullptr, nullptr)
#endif

using join_row2_fn = void (*)(const std::uint8_t*, const std::uint8_t*, const std::uint8_t*, std::uint8_t*, std::size_t);
inline std::vector<join_row2_fn> join_row2_kernels() { return SEQKV_KERNELS(join_row2); }
inline join_row2_fn best_join_row2() {
    static const join_row2_fn best = join_row2_kernels().back();
    return best;
}

/// One-byte elements (fp8): writes the m bytes of plane a, XORed with the m bytes at x when x is
/// set (the reference row or the sign map), at dst — the fp8 twin of join_row2 (dst must not
/// overlap a or x). Scalar, SSE2 and AVX2 write the same bytes (test Lossless.Fp8JoinKernelsWriteTheScalarBytes).
inline void join_row1_scalar(const std::uint8_t* a, const std::uint8_t* x, std::uint8_t* dst, std::size_t m) {
    for (std::size_t c = 0; c < m; ++c) dst[c] = std::uint8_t(x ? a[c] ^ x[c] : a[c]);
}
#if SEQKV_X86_AVX2_KERNELS
inline void join_row1_sse2(const std::uint8_t* a, const std::uint8_t* x, std::uint8_t* dst, std::size_t m) {
    std::size_t c = 0;
    for (; c + 16 <= m; c += 16) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + c));
        if (x) v = _mm_xor_si128(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + c)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c), v);
    }
    join_row1_scalar(a + c, x ? x + c : nullptr, dst + c, m - c);
}
__attribute__((target("avx2"))) inline void join_row1_avx2(const std::uint8_t* a, const std::uint8_t* x, std::uint8_t* dst,
                                                           std::size_t m) {
    std::size_t c = 0;
    for (; c + 32 <= m; c += 32) {
        __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + c));
        if (x) v = _mm256_xor_si256(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c), v);
    }
    join_row1_sse2(a + c, x ? x + c : nullptr, dst + c, m - c);
}
#endif
using join_row1_fn = void (*)(const std::uint8_t*, const std::uint8_t*, std::uint8_t*, std::size_t);
inline std::vector<join_row1_fn> join_row1_kernels() { return SEQKV_KERNELS(join_row1); }
inline join_row1_fn best_join_row1() {
    static const join_row1_fn best = join_row1_kernels().back();
    return best;
}
#undef SEQKV_KERNELS

/// Decoded rotated section of predictor 5 (consumed row by row in storage order).
template <class U>
struct rotated_rows {
    const rope::rotation_table* table = nullptr;
    rope::row_predictor<U> predict = nullptr;
    const std::uint8_t* symbols = nullptr;
    const std::uint8_t* escapes = nullptr;  // little-endian U values, one per symbol 255
    std::size_t next_symbol = 0, next_escape = 0, escape_count = 0;

    /// Reconstructs row t (D elements at dst) from its reference row (at src).
    void decode_row(std::size_t t, const std::uint8_t* src, std::uint8_t* dst, std::size_t D) {
        U reference[256], prediction[256], row[256];
        copy_row(reinterpret_cast<std::uint8_t*>(reference), src, D * sizeof(U));
        predict(reference, D, table->cos(t), prediction);
        const std::uint8_t* z = symbols + next_symbol;
        next_symbol += D;
        // Every symbol as a residual (vectorizable), then the few escapes (255) patched in order.
        for (std::size_t c = 0; c < D; ++c) row[c] = rope::unresidual<U>(U(z[c]), prediction[c]);
        for (const void* hit = std::memchr(z, 255, D); hit != nullptr;) {
            const std::size_t c = std::size_t(static_cast<const std::uint8_t*>(hit) - z);
            if (next_escape == escape_count) throw format_error("lossless block: missing rotated escape");
            const U zz = load<U>(escapes, next_escape++);
            if (zz < 255) throw format_error("lossless block: rotated escape below 255");
            row[c] = rope::unresidual<U>(zz, prediction[c]);
            hit = c + 1 < D ? std::memchr(z + c + 1, 255, D - c - 1) : nullptr;
        }
        copy_row(dst, reinterpret_cast<const std::uint8_t*>(row), D * sizeof(U));
    }
};

/// Joins planes (coded elements only), undoes sign map and predictor, writes every row of out
/// (head h's token t at row h · head_stride + t). Rows flagged in `copied` are copies of their
/// reference row, or rotated rows when rot is given.
template <class U>
void join_planes(const std::array<const std::uint8_t*, 4>& plane, std::span<const U> flip, const block_shape& s,
                 std::span<const std::uint64_t> ref, bool xor_ref, std::span<const std::uint8_t> copied, std::uint8_t* out,
                 std::uint64_t head_stride, rotated_rows<U>* rot = nullptr) {
    const std::size_t D = s.head_dim;
    [[maybe_unused]] U row[256];
    std::size_t k = 0;  // next coded element
    [[maybe_unused]] const join_row2_fn join_row2 = sizeof(U) == 2 ? best_join_row2() : nullptr;
    [[maybe_unused]] const join_row1_fn join_row1 = sizeof(U) == 1 ? best_join_row1() : nullptr;
    for (std::uint32_t h = 0; h < s.heads; ++h) {
        const U* f = flip.empty() ? nullptr : flip.data() + std::size_t(h) * D;
        for (std::uint64_t t = 0; t < s.tokens; ++t) {
            const std::size_t base = (std::size_t(h) * head_stride + t) * D;
            const bool has_ref = !ref.empty() && ref[t] != no_reference;
            const std::size_t ref_base = has_ref ? (std::size_t(h) * head_stride + ref[t]) * D : 0;
            if (!copied.empty() && copied[std::size_t(h) * s.tokens + t]) {
                if (rot) rot->decode_row(t, out + ref_base * sizeof(U), out + base * sizeof(U), D);
                else copy_row(out + base * sizeof(U), out + ref_base * sizeof(U), D * sizeof(U));  // earlier row: no overlap
                continue;
            }
            const bool xor_row = xor_ref && has_ref;
            for (std::size_t c0 = 0; c0 < D; c0 += 256, k += 256) {
                const std::size_t m = std::min<std::size_t>(256, D - c0), i0 = base + c0;
                if constexpr (sizeof(U) <= 2) {  // fused: join, XOR, store
                    const std::uint8_t* x = xor_row ? out + (ref_base + c0) * sizeof(U)
                                            : f     ? reinterpret_cast<const std::uint8_t*>(f + c0)
                                                    : nullptr;
                    if constexpr (sizeof(U) == 2) join_row2(plane[0] + k, plane[1] + k, x, out + i0 * 2, m);
                    else join_row1(plane[0] + k, x, out + i0, m);
                    continue;
                } else {
                    for (std::size_t c = 0; c < m; ++c) row[c] = join4(plane[0][k + c], plane[1][k + c], plane[2][k + c], plane[3][k + c]);
                }
                if (xor_row) {
                    for (std::size_t c = 0; c < m; ++c) row[c] ^= load<U>(out, ref_base + c0 + c);
                } else if (f) {
                    for (std::size_t c = 0; c < m; ++c) row[c] ^= f[c0 + c];
                }
                copy_row(out + i0 * sizeof(U), reinterpret_cast<const std::uint8_t*>(row), m * sizeof(U));
            }
            k -= (D + 255) / 256 * 256 - D;
        }
    }
}

template <class U>
void decode_typed(std::span<const std::uint8_t> coded, const block_shape& s, std::span<std::uint8_t> out,
                  coding::rans::decode_path path, const token_references& refs, dtype type, std::uint64_t head_stride) {
    constexpr std::size_t P = sizeof(U);
    const std::uint64_t n = s.elements(), C = s.channels();
    byte_reader r(coded, "lossless block");
    const auto pred = r.get<std::uint8_t>();
    if (pred > static_cast<std::uint8_t>(bit_predictor::rotate_same_token)) throw format_error("lossless block: unknown predictor");
    if (pred >= static_cast<std::uint8_t>(bit_predictor::xor_same_token) && !refs.has_ids())
        throw format_error("lossless block: same-token prediction without token ids");
    const bool rotate = pred == static_cast<std::uint8_t>(bit_predictor::rotate_same_token);
    if (rotate && (!refs.rope() || s.head_dim % 2 != 0 || s.head_dim > 256))
        throw format_error("lossless block: rotated prediction without rope parameters or with an odd head_dim");
    const auto ref = refs.get(static_cast<bit_predictor>(pred));
    const bool copy = pred == static_cast<std::uint8_t>(bit_predictor::copy_same_token) || rotate;
    std::vector<std::uint8_t> copied;
    std::uint64_t m = n;  // coded elements
    if (copy) {
        const std::size_t rows = std::size_t(s.heads) * s.tokens;
        const auto bits = r.get_bytes((rows + 7) / 8);
        copied.resize(rows);
        for (std::size_t i = 0; i < rows; ++i) {
            copied[i] = (bits[i / 8] >> (i % 8)) & 1;
            if (copied[i] && ref[i % s.tokens] == no_reference) throw format_error("lossless block: copied row without a reference");
            m -= copied[i] ? s.head_dim : 0;
        }
        if (rows % 8 != 0 && (bits.back() >> (rows % 8)) != 0) throw format_error("lossless block: row map padding not zero");
    }
    const std::uint32_t classes = r.get<std::uint8_t>();
    if (classes == 0 || classes > std::max<std::uint64_t>(1, C)) throw format_error("lossless block: bad class count");
    std::span<const std::uint8_t> cls;
    if (classes > 1) {
        cls = r.get_bytes(C);
        for (auto c : cls)
            if (c >= classes) throw format_error("lossless block: channel class out of range");
    }
    const auto transforms = r.get<std::uint8_t>();
    if (transforms > 1) throw format_error("lossless block: unknown transform flags");
    std::vector<U> flip;
    if (transforms & 1) {
        const auto bits = r.get_bytes((C + 7) / 8);
        flip.resize(C);
        for (std::uint64_t c = 0; c < C; ++c) flip[c] = (bits[c / 8] >> (c % 8)) & 1 ? sign_bit<U> : U(0);
        if (C % 8 != 0 && (bits.back() >> (C % 8)) != 0) throw format_error("lossless block: sign map padding not zero");
    }
    std::array<const std::uint8_t*, 4> plane{};
    // Scratch the decoders overwrite in full: allocated, not zero-filled (a block's planes are as
    // large as its output; zeroing them cost as much as zeroing the output again).
    std::array<std::unique_ptr<std::uint8_t[]>, P> decoded;
    std::unique_ptr<std::uint8_t[]> class_ctx, exp_ctx;
    for (std::size_t p = 0; p < P; ++p) {
        const auto mode = r.get<std::uint8_t>();
        if (mode > static_cast<std::uint8_t>(plane_context::stored) ||
            (p == 0 && mode == static_cast<std::uint8_t>(plane_context::exponent)) ||
            (classes == 1 && mode == static_cast<std::uint8_t>(plane_context::channel_class)))
            throw format_error("lossless block: bad plane mode");
        const auto len = r.get<std::uint32_t>();
        const auto bytes = r.get_bytes(len);
        if (mode == static_cast<std::uint8_t>(plane_context::stored)) {
            if (len != m) throw format_error("lossless block: stored plane of the wrong length");
            plane[p] = bytes.data();
            continue;
        }
        std::span<const std::uint8_t> ctx;
        if (mode == static_cast<std::uint8_t>(plane_context::channel_class)) {
            if (!class_ctx && m > 0) {
                class_ctx = std::make_unique_for_overwrite<std::uint8_t[]>(m);
                const std::size_t D = s.head_dim;
                std::size_t k = 0;
                for (std::uint32_t h = 0; h < s.heads; ++h)
                    for (std::uint64_t t = 0; t < s.tokens; ++t)
                        if (!copy || !copied[std::size_t(h) * s.tokens + t])
                            std::memcpy(class_ctx.get() + k, cls.data() + std::size_t(h) * D, D), k += D;
            }
            ctx = {class_ctx.get(), class_ctx ? m : 0};
        } else if (mode == static_cast<std::uint8_t>(plane_context::exponent)) {
            if (!exp_ctx && m > 0) {
                exp_ctx = std::make_unique_for_overwrite<std::uint8_t[]>(m);
                for (std::size_t i = 0; i < m; ++i) exp_ctx[i] = exponent_bucket(plane[0][i]);
            }
            ctx = {exp_ctx.get(), exp_ctx ? m : 0};
        }
        decoded[p] = std::make_unique_for_overwrite<std::uint8_t[]>(m);
        coding::decode_bytes(bytes, ctx, {decoded[p].get(), m}, path);
        plane[p] = decoded[p].get();
    }
    rotated_rows<U> rot;
    std::vector<std::uint8_t> rot_symbols;
    if (rotate) {
        const std::uint64_t k = n - m;  // rotated elements
        const auto mode = r.get<std::uint8_t>();
        if (mode != static_cast<std::uint8_t>(plane_context::none) && mode != static_cast<std::uint8_t>(plane_context::stored) &&
            !(mode == static_cast<std::uint8_t>(plane_context::channel_class) && classes > 1))
            throw format_error("lossless block: bad rotated symbol mode");
        const auto bytes = r.get_bytes(r.get<std::uint32_t>());
        if (mode == static_cast<std::uint8_t>(plane_context::stored)) {
            if (bytes.size() != k) throw format_error("lossless block: stored rotated symbols of the wrong length");
            rot.symbols = bytes.data();
        } else {
            std::vector<std::uint8_t> ctx;
            if (mode == static_cast<std::uint8_t>(plane_context::channel_class)) {
                ctx.reserve(k);
                for (std::size_t row = 0; row < copied.size(); ++row)
                    if (copied[row]) ctx.insert(ctx.end(), cls.begin() + std::ptrdiff_t((row / s.tokens) * s.head_dim),
                                                cls.begin() + std::ptrdiff_t((row / s.tokens + 1) * s.head_dim));
            }
            rot_symbols.resize(k);
            coding::decode_bytes(bytes, ctx, rot_symbols, path);
            rot.symbols = rot_symbols.data();
        }
        std::uint64_t escapes = 0;
        for (std::uint64_t i = 0; i < k; ++i) escapes += rot.symbols[i] == 255;
        const auto escape_bytes = r.get_bytes(r.get<std::uint32_t>());
        if (escape_bytes.size() != escapes * sizeof(U)) throw format_error("lossless block: rotated escapes of the wrong length");
        rot.escapes = escape_bytes.data();
        rot.escape_count = escapes;
        rot.table = &refs.rotations(s.head_dim);
        rot.predict = rope::fast_predictor<U>(type, refs.rope()->style, path != coding::rans::decode_path::scalar);
    }
    if (!r.at_end()) throw format_error("lossless block: trailing bytes");
    join_planes<U>(plane, flip, s, ref, !copy, copied, out.data(), head_stride, rotate ? &rot : nullptr);
}

}  // namespace detail
}  // namespace seqkv::lossless

SEQKV_FP_STRICT_END
