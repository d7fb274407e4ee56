// The general-purpose compressors seqkv is compared with (zstd, lz4, blosc + zstd with byte or bit
// shuffle, xz), on flat byte buffers: one wrapper each, used by `seqkv bench` and by the bench/
// binaries so every table measures the same calls. Each peer is compiled in where the build found
// it: SEQKV_PEERS_HAVE_ZSTD / _LZ4 / _BLOSC / _LZMA (tools/CMakeLists.txt finds them through
// pkg-config for the CLI, bench/CMakeLists.txt requires them all). Failures and round trips that do
// not give back the original size raise seqkv::io_error.
#pragma once

#if SEQKV_PEERS_HAVE_ZSTD
#include <zstd.h>
#endif
#if SEQKV_PEERS_HAVE_LZ4
#include <lz4.h>
#endif
#if SEQKV_PEERS_HAVE_BLOSC
#include <blosc.h>
#endif
#if SEQKV_PEERS_HAVE_LZMA
#include <lzma.h>
#endif

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"

namespace seqkv::peers {

using bytes_in = std::span<const std::uint8_t>;
using bytes_out = std::span<std::uint8_t>;

#if SEQKV_PEERS_HAVE_ZSTD
inline byte_vector zstd_compress(bytes_in in, int level) {
    byte_vector out(ZSTD_compressBound(in.size()));
    const std::size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), level);
    if (ZSTD_isError(n)) throw io_error(std::string("zstd compress failed: ") + ZSTD_getErrorName(n));
    out.resize(n);
    return out;
}
/// Decodes z into out, which must be exactly the original size.
inline void zstd_decompress(bytes_in z, bytes_out out) {
    const std::size_t n = ZSTD_decompress(out.data(), out.size(), z.data(), z.size());
    if (ZSTD_isError(n) || n != out.size()) throw io_error("zstd decompress failed");
}
#endif

#if SEQKV_PEERS_HAVE_LZ4
inline byte_vector lz4_compress(bytes_in in) {
    if (in.size() > std::size_t(LZ4_MAX_INPUT_SIZE)) throw io_error("lz4: input above LZ4_MAX_INPUT_SIZE");
    byte_vector out(std::size_t(LZ4_compressBound(int(in.size()))));
    const int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out.data()), int(in.size()),
                                       int(out.size()));
    if (n <= 0) throw io_error("lz4 compress failed");
    out.resize(std::size_t(n));
    return out;
}
inline void lz4_decompress(bytes_in z, bytes_out out) {
    if (z.size() > std::size_t(std::numeric_limits<int>::max()) || out.size() > std::size_t(std::numeric_limits<int>::max()) ||
        LZ4_decompress_safe(reinterpret_cast<const char*>(z.data()), reinterpret_cast<char*>(out.data()), int(z.size()),
                            int(out.size())) != int(out.size()))
        throw io_error("lz4 decompress failed");
}
#endif

#if SEQKV_PEERS_HAVE_BLOSC
/// blosc (level 9, zstd inside, one thread); shuffle = BLOSC_SHUFFLE or BLOSC_BITSHUFFLE over
/// elements of type_size bytes.
inline byte_vector blosc_compress(bytes_in in, std::size_t type_size, int shuffle) {
    byte_vector out(in.size() + BLOSC_MAX_OVERHEAD);
    const int n = blosc_compress_ctx(9, shuffle, type_size, in.size(), in.data(), out.data(), out.size(), "zstd", 0, 1);
    if (n <= 0) throw io_error("blosc compress failed");
    out.resize(std::size_t(n));
    return out;
}
inline void blosc_decompress(bytes_in z, bytes_out out) {
    std::size_t nbytes = 0, cbytes = 0, block = 0;
    if (z.size() < BLOSC_MIN_HEADER_LENGTH) throw io_error("blosc decompress: input shorter than a blosc header");
    blosc_cbuffer_sizes(z.data(), &nbytes, &cbytes, &block);
    if (cbytes != z.size() || nbytes != out.size() || out.size() > std::size_t(std::numeric_limits<int>::max()) ||
        blosc_decompress_ctx(z.data(), out.data(), out.size(), 1) != int(out.size()))
        throw io_error("blosc decompress failed");
}
#endif

#if SEQKV_PEERS_HAVE_LZMA
/// xz (liblzma's easy preset `preset`, CRC-32 check).
inline byte_vector xz_compress(bytes_in in, std::uint32_t preset = 9) {
    byte_vector out(lzma_stream_buffer_bound(in.size()));
    std::size_t pos = 0;
    if (lzma_easy_buffer_encode(preset, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(), out.data(), &pos, out.size()) != LZMA_OK)
        throw io_error("xz compress failed");
    out.resize(pos);
    return out;
}
inline void xz_decompress(bytes_in z, bytes_out out) {
    std::uint64_t memlimit = std::numeric_limits<std::uint64_t>::max();
    std::size_t in_pos = 0, out_pos = 0;
    if (lzma_stream_buffer_decode(&memlimit, 0, nullptr, z.data(), &in_pos, z.size(), out.data(), &out_pos, out.size()) != LZMA_OK ||
        out_pos != out.size() || in_pos != z.size())
        throw io_error("xz decompress failed");
}
#endif

/// A peer by name: encode(bytes, element size) and decode(coded, output of the original size).
struct peer {
    std::string name;
    std::function<byte_vector(bytes_in, std::size_t type_size)> encode;
    std::function<void(bytes_in, bytes_out)> decode;
};

/// The peers this build has, in table order: zstd-3, zstd-19, lz4, blosc-zstd-byteshuffle,
/// blosc-zstd-bitshuffle, and xz-9 when with_xz (slow: a few MB/s).
inline std::vector<peer> available(bool with_xz = false) {
    std::vector<peer> p;
#if SEQKV_PEERS_HAVE_ZSTD
    for (int level : {3, 19})
        p.push_back({"zstd-" + std::to_string(level), [level](bytes_in in, std::size_t) { return zstd_compress(in, level); }, zstd_decompress});
#endif
#if SEQKV_PEERS_HAVE_LZ4
    p.push_back({"lz4", [](bytes_in in, std::size_t) { return lz4_compress(in); }, lz4_decompress});
#endif
#if SEQKV_PEERS_HAVE_BLOSC
    for (const int shuffle : {BLOSC_SHUFFLE, BLOSC_BITSHUFFLE})
        p.push_back({shuffle == BLOSC_SHUFFLE ? "blosc-zstd-byteshuffle" : "blosc-zstd-bitshuffle",
                     [shuffle](bytes_in in, std::size_t type_size) { return blosc_compress(in, type_size, shuffle); }, blosc_decompress});
#endif
#if SEQKV_PEERS_HAVE_LZMA
    if (with_xz) p.push_back({"xz-9", [](bytes_in in, std::size_t) { return xz_compress(in, 9); }, xz_decompress});
#endif
    (void)with_xz;
    return p;
}

}  // namespace seqkv::peers
