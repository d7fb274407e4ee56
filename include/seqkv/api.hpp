// One-call entry points: compress a cache into a .skv image and decode all of it or a range.
#pragma once

#include <algorithm>
#include <limits>
#include <new>
#include <optional>
#include <stdexcept>

#include "seqkv/codec/registry.hpp"
#include "seqkv/format/stream.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// What compress() records and how it cuts the cache.
struct compress_options {
    format::codec_config codec = lossless_config();
    std::uint32_t chunk_tokens = 256;
    std::map<std::string, std::string> metadata;
    resource_provider resources;  // side information the codec needs (e.g. an expected-KV table)
    /// Resource-table entries besides the codec's own (e.g. the prefix store external payloads go to).
    std::vector<resource_ref> declared_resources;
    /// Codecs with dependent chunks: a keyframe (a chunk decodable without earlier ones) every this many chunks.
    std::uint32_t keyframe_interval = 16;
    /// Offered each chunk payload (and its content_hash64); returning true stores it outside the file.
    format::external_payload_fn external_payloads;
    std::size_t min_external_payload_bytes = 0;  // smaller payloads always stay inline
    /// Threads the codec's blocks run on (0: every core); the output bytes never depend on it.
    unsigned threads = 1;
};

/// The executor for `threads` threads (0: every core; 1: the caller's thread, no pool).
inline std::shared_ptr<backend::thread_pool> executor_for(unsigned threads) {
    return threads == 1 ? nullptr : std::make_shared<backend::thread_pool>(threads);
}

/// The preamble fields a compress_options decides (codec, chunking, keyframes, declared resources).
inline void apply_options(format::preamble& p, const compress_options& options) {
    p.codec = options.codec;
    p.chunk_tokens = options.chunk_tokens;
    p.keyframe_interval = options.keyframe_interval;
    p.resources = options.declared_resources;
}

/// How a writer stores payloads under these options.
inline format::writer_options writer_options_for(const compress_options& options) {
    return {options.external_payloads, options.min_external_payload_bytes, &options.resources};
}

/// Appends `b` to `out`, a stream whose first `base` bytes (the preamble) come before any chunk
/// and of which `done` of `total` tokens are in earlier pieces. When `out` must grow, it grows
/// to the size its chunk bytes so far project for the whole stream (plus 1/16 and 64 KiB) once a
/// chunk is in, else to the larger of twice its capacity and 9/8 of what it needs: one big
/// allocation instead of a doubling chain of copies (a chunk's payload arrives as one piece, its
/// 4-byte CRC right after it). Geometric growth (x 5/4 at least) keeps the appends amortised
/// when the projection falls short; write_stream gives back what an early chunk heavier than the
/// rest (a keyframe) made it overshoot.
inline void append_projected(byte_vector& out, std::span<const std::uint8_t> b, std::uint64_t done, std::uint64_t total,
                             std::size_t base = 0) {
    const std::size_t need = out.size() + b.size();
    if (need > out.capacity()) {
        std::size_t grow = std::max(need + need / 8, 2 * out.capacity());
        if (done > 0 && total > done && out.size() >= base) {
            const double projected = double(base) + double(out.size() - base) * double(total) / double(done);
            const double target = projected + projected / 16 + 65536.0;
            grow = target < double(need) ? need : static_cast<std::size_t>(std::min(target, double(std::numeric_limits<std::size_t>::max() / 2)));
        }
        grow = std::max(grow, out.capacity() + out.capacity() / 4);
        try {
            out.reserve(std::max(grow, need));
        } catch (const std::bad_alloc&) {
            out.reserve(need);  // the projection is a hint: take only what this piece needs
        } catch (const std::length_error&) {
            out.reserve(need);
        }
    }
    out.insert(out.end(), b.begin(), b.end());
}

/// Writes one stream of `layout` under `options`: the preamble, whatever `append(writer)` appends
/// (token ids / nll stored when has_ids / has_nll), the index. compress() and compress_paged()
/// (paged.hpp) are this with their own appends.
template <backend::Backend Backend = backend::simd, class Append>
byte_vector write_stream(const kv_layout& layout, const compress_options& options, bool has_ids, bool has_nll, Append&& append) {
    format::preamble p;
    p.layout = layout;
    apply_options(p, options);
    auto codec = make_codec<Backend>(options.codec, options.resources, executor_for(options.threads));
    // A codec that codes the ids (token mode) takes them whenever there are tokens; with none,
    // an empty span is the whole (empty) id sequence.
    p.has_token_ids = has_ids || (codec.codes_token_ids && layout.tokens == 0);
    p.has_nll = has_nll;
    p.metadata = options.metadata;
    byte_vector out;
    const format::stream_writer* progress = nullptr;  // set once the writer exists (its preamble is emitted first)
    std::size_t preamble_bytes = 0;
    format::stream_writer writer(
        [&](std::span<const std::uint8_t> b) {
            append_projected(out, b, progress ? progress->tokens() : 0, layout.tokens, preamble_bytes);
        },
        p, std::move(codec), writer_options_for(options));
    progress = &writer;
    preamble_bytes = out.size();
    append(writer);
    writer.finish();
    if (out.capacity() - out.size() > out.size() / 4 + (std::size_t{1} << 20)) out.shrink_to_fit();  // a projection overshot
    return out;
}

/// Compresses tokens [0, T) of a cache; token_ids / nll (per token, optional) are stored too.
template <backend::Backend Backend = backend::simd>
byte_vector compress(const kv_cache_view& cache, const compress_options& options = {},
                     std::span<const std::int32_t> token_ids = {}, std::span<const float> nll = {}) {
    return write_stream<Backend>(cache.layout, options, !token_ids.empty(), !nll.empty(), [&](format::stream_writer& w) {
        w.append(cache, 0, cache.layout.tokens, token_ids, nll, /*last=*/true);
    });
}

/// Decodes tokens [begin, end) (default: all) of a .skv image. Every entry of its resource table
/// must be in `resources` (resource_error naming it otherwise), checked before any chunk is
/// decoded; external chunk payloads are looked up there as (chunk_payload, content hash).
template <backend::Backend Backend = backend::simd>
chunk_buffer decompress(std::span<const std::uint8_t> file, std::uint64_t begin = 0,
                        std::optional<std::uint64_t> end = std::nullopt, const resource_provider& resources = {},
                        unsigned threads = 1) {
    format::stream_reader reader(file);
    reader.require_resources(resources);
    return reader.decode(make_codec<Backend>(reader.header().codec, resources, executor_for(threads)), begin, end, resources);
}

#ifdef SEQKV_SEPARATE_RUNTIME
// Compiled once in the seqkv::runtime library (src/api.cpp), with the codecs make_codec builds.
#define SEQKV_API_INSTANCES(EXTERN, Backend)                                                                        \
    EXTERN template byte_vector compress<Backend>(const kv_cache_view&, const compress_options&,                    \
                                                  std::span<const std::int32_t>, std::span<const float>);         \
    EXTERN template chunk_buffer decompress<Backend>(std::span<const std::uint8_t>, std::uint64_t,                  \
                                                    std::optional<std::uint64_t>, const resource_provider&,  \
                                                    unsigned);
SEQKV_API_INSTANCES(extern, backend::simd)
SEQKV_API_INSTANCES(extern, backend::scalar)
#endif

}  // namespace seqkv

SEQKV_FP_STRICT_END
