// libFuzzer target: a whole .skv image. Header and index parsing, the resource table, full and
// range decodes of every codec family (token mode under the committed tiny model), side data,
// attachments, the conversion back to safetensors (metadata strings -> JSON) — once on the bytes
// as given and once with every CRC the image still locates recomputed (fuzz_support.hpp).
//
// Differential decoding: whenever a decode succeeds it is repeated with the scalar backend and
// with the SIMD backend on 3 threads; the three outputs (KV bytes and token ids) must be equal,
// and so must the outcome (all succeed or all throw).
#include <cstdlib>
#include <filesystem>

#include "fuzz_support.hpp"
#include "seqkv/api.hpp"
#include "seqkv/convert/skv_file.hpp"
#include "seqkv/format/reader.hpp"
#include "seqkv/reference/llama.hpp"

namespace {

using namespace seqkv;

const resource_provider& resources() {
    static const resource_provider r = [] {
        resource_provider p;
        add_language_model(p, reference::llama_model::load(std::filesystem::path(SEQKV_FUZZ_DATA_DIR) / "tiny-llama"));
        return p;
    }();
    return r;
}

template <backend::Backend B>
chunk_buffer decode_with(const format::stream_reader& reader, std::uint64_t begin, std::uint64_t end, unsigned threads) {
    return reader.decode(make_codec<B>(reader.header().codec, resources(), executor_for(threads)), begin, end, resources());
}

void run(std::span<const std::uint8_t> file) {
    const auto limits = fuzz::fuzz_limits();
    std::optional<format::stream_reader> reader;
    try {
        reader.emplace(file, limits);
        reader->require_resources(resources());
    } catch (const seqkv::error&) {
        return;
    }
    const std::uint64_t T = reader->tokens();
    // Token mode decodes by running the model over every token: a short stream claiming a long
    // one costs model time, not memory (bounded by max_decode_bytes); keep executions fast.
    if (reader->header().codec.codec_id == 3 && T > 1024) return;
    const std::uint64_t h = fuzz::input_hash(file);
    const std::uint64_t begin = T ? h % (T + 1) : 0;
    const std::uint64_t end = begin + (T - begin ? (h >> 32) % (T - begin + 1) : 0);
    for (const auto& range : {std::pair<std::uint64_t, std::uint64_t>{0, T}, {begin, end}}) {
        const std::uint64_t b = range.first, e = range.second;
        std::optional<chunk_buffer> simd, scalar, threaded;
        fuzz::expect_seqkv_errors_only([&] { simd = decode_with<backend::simd>(*reader, b, e, 1); });
        fuzz::expect_seqkv_errors_only([&] { scalar = decode_with<backend::scalar>(*reader, b, e, 1); });
        fuzz::expect_seqkv_errors_only([&] { threaded = decode_with<backend::simd>(*reader, b, e, 3); });
        if (simd.has_value() != scalar.has_value() || simd.has_value() != threaded.has_value()) std::abort();
        if (simd && (simd->bytes != scalar->bytes || simd->bytes != threaded->bytes ||
                     simd->token_ids != scalar->token_ids || simd->token_ids != threaded->token_ids))
            std::abort();
    }
    fuzz::expect_seqkv_errors_only([&] { (void)reader->token_ids(); });
    fuzz::expect_seqkv_errors_only([&] { (void)reader->nll(); });
    for (const auto& name : reader->attachment_names()) (void)reader->find_attachment(name);
    // The CLI's decompress path (metadata -> safetensors JSON header, the tensors attachment):
    // only when the decoded KV fits the harness's budget, as a caller would check tokens() first.
    const std::uint64_t token_bytes = reader->header().layout.elements_per_token() * dtype_size(reader->header().layout.type);
    if (T * token_bytes <= limits.max_decode_bytes / 2)
        fuzz::expect_seqkv_errors_only([&] { (void)io::decompress_to_safetensors(file, begin, end, resources()); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::uint8_t> bytes(data, data + size);
    run(bytes);
    fuzz::fix_skv_crcs(bytes);
    run(bytes);
    return 0;
}
