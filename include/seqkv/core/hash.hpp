// content_hash64: the 64-bit content hash that names resources and external chunk payloads
// (docs/FORMAT.md "Resources"). Not cryptographic: it detects accidental mismatch and keys
// content-addressed stores; a reader always checks length and CRC-32C as well.
//
// Definition (normative; little-endian words, all arithmetic mod 2^64):
//   h = seed ^ (n * P1)                         n = byte length
//   for each 8-byte word w:      h = rotl(h ^ mix(w), 27) * P1 + P4
//   tail (n mod 8 bytes, zero-padded to a word, if any): h ^= mix(tail)
//   final: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32
// where mix(w) = rotl(w * P2, 31) * P1.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

namespace detail {
inline constexpr std::uint64_t hash_p1 = 0x9E3779B185EBCA87ull;
inline constexpr std::uint64_t hash_p2 = 0xC2B2AE3D27D4EB4Full;
inline constexpr std::uint64_t hash_p3 = 0x165667B19E3779F9ull;
inline constexpr std::uint64_t hash_p4 = 0x85EBCA77C2B2AE63ull;
inline std::uint64_t hash_mix(std::uint64_t w) { return std::rotl(w * hash_p2, 31) * hash_p1; }
inline std::uint64_t load_le64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
}  // namespace detail

/// 64-bit content hash of bytes (definition above; identical on every machine).
inline std::uint64_t content_hash64(std::span<const std::uint8_t> bytes, std::uint64_t seed = 0) {
    using namespace detail;
    const std::size_t n = bytes.size();
    std::uint64_t h = seed ^ (std::uint64_t(n) * hash_p1);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) h = std::rotl(h ^ hash_mix(load_le64(bytes.data() + i)), 27) * hash_p1 + hash_p4;
    if (i < n) {
        std::uint8_t tail[8] = {};
        std::memcpy(tail, bytes.data() + i, n - i);
        h ^= hash_mix(load_le64(tail));
    }
    h ^= h >> 33, h *= hash_p2, h ^= h >> 29, h *= hash_p3, h ^= h >> 32;
    return h;
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
