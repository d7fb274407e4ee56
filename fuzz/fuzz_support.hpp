// Shared pieces of the libFuzzer targets (fuzz/fuzz_*.cpp).
//
// Contract every target checks: on any input, a seqkv entry point returns or throws a
// seqkv::error; any other exception escapes LLVMFuzzerTestOneInput and libFuzzer reports it as a
// crash (as do ASan / UBSan findings, leaks, and allocations above -malloc_limit_mb).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/checksum.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/format/container.hpp"

namespace seqkv::fuzz {

/// Limits the harnesses decode under: small enough that no valid-looking header can make a
/// single input allocate more than libFuzzer's default 2 GB malloc limit.
inline format::container_limits fuzz_limits() {
    format::container_limits l;
    l.max_chunk_decoded_bytes = 16u << 20;
    l.max_decode_bytes = 64u << 20;
    l.max_preamble_bytes = 1u << 20;
    return l;
}

inline std::uint64_t le64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
inline void put_le32(std::uint8_t* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = std::uint8_t(v >> (8 * i));
}

/// Recomputes every CRC of a mutated .skv image that its own (possibly mutated) structure still
/// locates: the preamble body's, each chunk and attachment record's the index names, and the
/// index's. Mutations then reach the parsers and codecs behind the checksums instead of dying at
/// the first CRC. Anything it cannot locate is left as it is.
inline void fix_skv_crcs(std::vector<std::uint8_t>& f) {
    const std::size_t n = f.size();
    if (n >= 20) {
        const std::uint64_t body_len = load_le32(f.data() + 12);
        if (16 + body_len + 4 <= n)
            put_le32(f.data() + 16 + body_len, crc32c(std::span<const std::uint8_t>(f.data() + 16, body_len)));
    }
    if (n < 36 + 16) return;
    const std::uint8_t* t = f.data() + n - 36;
    const std::uint64_t index_offset = le64(t), index_len = le64(t + 8);
    if (index_offset > n - 36 || index_len != n - 36 - index_offset) return;
    const std::uint16_t version = load_le16(f.data() + 8);
    const std::size_t entry = version >= 2 ? 25 : 24;
    auto fix_record = [&](std::uint64_t offset, std::uint64_t bytes) {
        if (bytes >= 4 && offset <= index_offset && bytes <= index_offset - offset)
            put_le32(f.data() + offset + bytes - 4, crc32c(std::span<const std::uint8_t>(f.data() + offset, bytes - 4)));
    };
    std::size_t p = index_offset;
    const std::size_t end = n - 36;
    if (p + 4 > end) return;
    const std::uint32_t chunks = load_le32(f.data() + p);
    p += 4;
    for (std::uint32_t i = 0; i < chunks && p + entry <= end; ++i, p += entry)
        fix_record(le64(f.data() + p), load_le32(f.data() + p + 20));
    if (p + 4 <= end) {
        const std::uint32_t atts = load_le32(f.data() + p);
        p += 4;
        for (std::uint32_t i = 0; i < atts && p + 16 <= end; ++i, p += 16) fix_record(le64(f.data() + p), le64(f.data() + p + 8));
    }
    put_le32(f.data() + n - 12, crc32c(std::span<const std::uint8_t>(f.data() + index_offset, n - 12 - index_offset)));
}

/// Runs fn, swallowing seqkv errors only (every other exception is a finding).
template <class F>
void expect_seqkv_errors_only(F&& fn) {
    try {
        fn();
    } catch (const seqkv::error&) {
    }
}

/// A deterministic 64-bit value from the input (for choices such as a token range).
inline std::uint64_t input_hash(std::span<const std::uint8_t> bytes) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (auto b : bytes) h = (h ^ b) * 0x100000001b3ull;
    return h;
}

}  // namespace seqkv::fuzz
