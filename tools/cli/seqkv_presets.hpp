// CLI presets: names -> compress options, and the quality record stored with each file.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <string>

#include "seqkv/io/skv_file.hpp"

namespace seqkv::cli {

/// Attachment holding the achieved quality (JSON) written by `seqkv compress`.
inline constexpr const char* stats_attachment = "quality.json";

inline std::string preset_help() { return "codec preset: lossless (default)"; }

/// Registers explicit lossy flags on a subcommand (none yet for lossless-only builds).
inline void add_lossy_flags(CLI::App&) {}

/// Options for a preset name; chunk 0 keeps the preset's chunk size.
inline compress_options options_for_preset(const std::string& name, std::uint32_t chunk) {
    compress_options o;
    if (name == "lossless") {
        o.codec = lossless_config();
        o.chunk_tokens = 256;
    } else {
        throw usage_error("unknown preset '" + name + "' (try: lossless)");
    }
    if (chunk) o.chunk_tokens = chunk;
    return o;
}

/// Quality of a decoded cache against the original file: bit-exactness for lossless codecs.
inline nlohmann::json quality_of(const io::safetensors_file& original, const chunk_buffer& decoded, const compress_options&) {
    const auto cache = io::kv_view(original);
    bool exact = true;
    const std::size_t bytes = decoded.block_bytes();
    for (std::uint32_t l = 0; l < cache.layout.layers && exact; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const auto* src = cache.tensor(l, kind).data;
            const auto blk = decoded.block(l, kind);
            exact = exact && std::equal(blk.begin(), blk.end(), src, src + bytes);
        }
    return {{"bit_exact", exact}};
}

/// Decodes the new file, measures its quality and stores it as the stats attachment.
inline byte_vector with_quality_stats(const io::safetensors_file& original, byte_vector skv, const compress_options& o) {
    const chunk_buffer decoded = decompress(skv);
    const auto q = quality_of(original, decoded, o).dump();
    return format::with_attachment(skv, stats_attachment, byte_vector(q.begin(), q.end()));
}

}  // namespace seqkv::cli
