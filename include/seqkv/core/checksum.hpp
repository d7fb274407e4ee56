// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the SSE4.2 crc32 instruction where the
// CPU has it (chosen at run time: the library needs no -m flag), else slicing-by-8 in portable C++.
// Both give the same value for every input (tests/core/test_checksum.cpp runs one against the
// other). xsimd 8.1 has no CRC operation, hence the intrinsic.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define SEQKV_CRC32C_SSE42 1
#include <nmmintrin.h>
#endif

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

namespace detail {
inline constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc32c_tables() {
    std::array<std::array<std::uint32_t, 256>, 8> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
        for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    return t;
}
inline constexpr auto crc32c_tables = make_crc32c_tables();
}  // namespace detail

namespace detail {
/// The portable path (slicing-by-8).
inline std::uint32_t crc32c_update_portable(std::uint32_t crc, std::span<const std::uint8_t> bytes) {
    const auto& t = detail::crc32c_tables;
    std::uint32_t c = ~crc;
    const std::uint8_t* p = bytes.data();
    std::size_t n = bytes.size();
    while (n >= 8) {
        const std::uint32_t lo = c ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
                                      std::uint32_t(p[3]) << 24);
        c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
            t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
    return ~c;
}

/// a · b mod the CRC-32C polynomial, reflected (bit 31 is x^0): GF(2) polynomial arithmetic.
constexpr std::uint32_t crc32c_multiply(std::uint32_t a, std::uint32_t b) {
    std::uint32_t m = 1u << 31, product = 0;
    for (; m != 0; m >>= 1) {
        if (a & m) product ^= b;
        b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return product;
}
/// x^(8 · bytes) mod the polynomial: appending `bytes` zero bytes to a CRC register multiplies it by this.
constexpr std::uint32_t crc32c_shift_of(std::uint64_t bytes) {
    std::uint32_t result = 1u << 31, square = 1u << 30;  // x^0; x^1
    for (std::uint64_t bits = 8 * bytes; bits != 0; bits >>= 1) {
        if (bits & 1) result = crc32c_multiply(square, result);
        square = crc32c_multiply(square, square);
    }
    return result;
}

#if defined(SEQKV_CRC32C_SSE42)
/// The crc32 instruction, 8 bytes a step. Its latency is 3 cycles and its throughput one a cycle,
/// so long inputs run three independent streams over three lanes of crc32c_lane bytes and join
/// them: the register is linear in its start and the data, so crc(A ‖ B) = crc(A) · x^(8|B|) ⊕
/// crc_from_zero(B).
inline constexpr std::size_t crc32c_lane = 4096;
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_update_sse42(std::uint32_t crc, std::span<const std::uint8_t> bytes) {
    const std::uint8_t* p = bytes.data();
    std::size_t n = bytes.size();
    std::uint64_t c = ~crc;
    constexpr std::uint32_t shift1 = crc32c_shift_of(crc32c_lane), shift2 = crc32c_shift_of(2 * crc32c_lane);
    while (n >= 3 * crc32c_lane) {
        std::uint64_t c1 = 0, c2 = 0;
        for (std::size_t i = 0; i < crc32c_lane; i += 8) {
            std::uint64_t v0, v1, v2;
            std::memcpy(&v0, p + i, 8), std::memcpy(&v1, p + crc32c_lane + i, 8), std::memcpy(&v2, p + 2 * crc32c_lane + i, 8);
            c = _mm_crc32_u64(c, v0), c1 = _mm_crc32_u64(c1, v1), c2 = _mm_crc32_u64(c2, v2);
        }
        c = crc32c_multiply(shift2, std::uint32_t(c)) ^ crc32c_multiply(shift1, std::uint32_t(c1)) ^ std::uint32_t(c2);
        p += 3 * crc32c_lane;
        n -= 3 * crc32c_lane;
    }
    while (n >= 8) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    std::uint32_t c32 = static_cast<std::uint32_t>(c);
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
inline bool crc32c_have_sse42() {
    static const bool have = __builtin_cpu_supports("sse4.2");
    return have;
}
#else
inline bool crc32c_have_sse42() { return false; }
#endif
}  // namespace detail

/// Continues a CRC-32C over more bytes; start with crc = 0.
inline std::uint32_t crc32c_update(std::uint32_t crc, std::span<const std::uint8_t> bytes) {
#if defined(SEQKV_CRC32C_SSE42)
    if (detail::crc32c_have_sse42()) return detail::crc32c_update_sse42(crc, bytes);
#endif
    return detail::crc32c_update_portable(crc, bytes);
}

/// CRC-32C of a byte span.
inline std::uint32_t crc32c(std::span<const std::uint8_t> bytes) { return crc32c_update(0, bytes); }

}  // namespace seqkv

SEQKV_FP_STRICT_END
