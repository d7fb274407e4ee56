// Whole-file read and atomic-ish write helpers that report failures as seqkv::io_error.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Reads a whole file; refuses files larger than max_bytes (default 64 GiB) before allocating.
inline byte_vector read_file(const std::filesystem::path& path, std::uint64_t max_bytes = 64ull << 30) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error("cannot open '" + path.string() + "' for reading");
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    if (size < 0) throw io_error("cannot determine the size of '" + path.string() + "'");
    if (std::uint64_t(size) > max_bytes)
        throw limit_error("'" + path.string() + "' is " + std::to_string(size) + " bytes, limit " +
                          std::to_string(max_bytes));
    in.seekg(0, std::ios::beg);
    byte_vector data(static_cast<std::size_t>(size));
    if (size > 0 && !in.read(reinterpret_cast<char*>(data.data()), size))
        throw io_error("short read from '" + path.string() + "'");
    return data;
}

/// Writes bytes to path via a temporary file renamed into place, so a failed write loses nothing.
inline void write_file(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) {
    const std::filesystem::path tmp = path.string() + ".seqkv-tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw io_error("cannot open '" + tmp.string() + "' for writing");
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        out.flush();
        if (!out) {
            out.close();
            std::error_code ec;
            std::filesystem::remove(tmp, ec);
            throw io_error("write to '" + tmp.string() + "' failed");
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw io_error("cannot rename '" + tmp.string() + "' to '" + path.string() + "': " + ec.message());
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
