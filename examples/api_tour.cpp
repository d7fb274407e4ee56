// A tour of seqkv's public entry points on the bundled real KV fixture (docs/API.md quotes its
// sections, marked // [name]). Built with the examples and run by ctest (example_api_tour): it
// exits nonzero if any step does not give back what it should.
#include <seqkv/convert/skv_file.hpp>
#include <seqkv/core/chunk_view.hpp>
#include <seqkv/format/recover.hpp>
#include <seqkv/io/kv_safetensors.hpp>
#include <seqkv/io/safetensors.hpp>
#include <seqkv/metrics/kv_metrics.hpp>
#include <seqkv/paged.hpp>
#include <seqkv/preset.hpp>
#include <seqkv/seqkv.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

namespace {

int failures = 0;
void check(bool ok, const char* what) {
    std::printf("%-58s %s\n", what, ok ? "ok" : "FAILED");
    failures += !ok;
}

bool same_kv(const seqkv::kv_cache_view& a, const seqkv::chunk_buffer& b, std::uint64_t first = 0) {
    for (std::uint32_t l = 0; l < a.layout.layers; ++l)
        for (auto kind : {seqkv::kv_kind::key, seqkv::kv_kind::value})
            for (std::uint32_t h = 0; h < a.layout.kv_heads; ++h)
                for (std::uint64_t t = 0; t < b.layout.tokens; ++t)
                    for (std::uint32_t c = 0; c < a.layout.head_dim; ++c)
                        if (!std::equal(a.tensor(l, kind).element(h, first + t, c),
                                        a.tensor(l, kind).element(h, first + t, c) + seqkv::dtype_size(a.layout.type),
                                        b.view(l, kind).element(h, t, c)))
                            return false;
    return true;
}

}  // namespace

int main() {
    try {
        // [load] A KV dump (safetensors, layer.{l}.k / layer.{l}.v [heads, tokens, head_dim]) as views.
        const auto file = seqkv::io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors");
        const seqkv::kv_cache_view cache = seqkv::io::kv_view(file);
        const std::vector<std::int32_t> ids = seqkv::io::token_ids_of(file, cache.layout.tokens).value();
        // [load]

        // [compress] A preset by name with the model's parameters, the token ids, a whole and a partial decode.
        const seqkv::model_params model = seqkv::model_params_from(file.metadata(), cache.layout);
        const seqkv::byte_vector skv = seqkv::compress(cache, seqkv::preset("lossless", model), ids);
        const seqkv::chunk_buffer all = seqkv::decompress(skv);
        const seqkv::chunk_buffer some = seqkv::decompress(skv, 100, 200);  // decodes only the chunks it needs
        // [compress]
        check(same_kv(cache, all), "compress + decompress: bit-exact");
        check(same_kv(cache, some, 100), "decompress(skv, 100, 200): tokens 100..199");
        std::printf("  %.3fx on %llu tokens\n", double(cache.layout.total_bytes()) / double(skv.size()),
                    (unsigned long long)cache.layout.tokens);

        // [lossy] A lossy preset, and its quality against the original (attention with the key proxy).
        const seqkv::byte_vector small = seqkv::compress(cache, seqkv::preset("seqkv-2bit", model));
        const seqkv::chunk_buffer approx = seqkv::decompress(small);
        const seqkv::metrics::kv_quality q = seqkv::metrics::measure_kv_quality(cache, seqkv::view_of(approx));
        // [lossy]
        std::printf("  seqkv-2bit: %zu bytes (lossless %zu), attention-output error %.3f\n", small.size(), skv.size(), q.overall.attention_rel_error);
        check(small.size() < skv.size() / 3 && q.overall.attention_rel_error < 0.5, "seqkv-2bit: 3x smaller than lossless, attention error < 0.5");

        // [stream] Streaming: the writer flushes each chunk as it fills; the reader decodes ranges.
        seqkv::format::preamble header;
        header.layout = cache.layout;
        header.codec = seqkv::lossless_config();
        header.chunk_tokens = 128;
        seqkv::byte_vector streamed;
        seqkv::format::stream_writer writer([&](std::span<const std::uint8_t> b) { streamed.insert(streamed.end(), b.begin(), b.end()); },
                                            header, seqkv::make_codec(header.codec));
        writer.append(cache, 0, 300);  // e.g. the prompt
        writer.append(cache, 300, cache.layout.tokens);  // then the generated tokens
        writer.add_attachment("engine.json", seqkv::byte_vector{'{', '}'});
        writer.finish();
        const seqkv::format::stream_reader reader(streamed);
        const seqkv::chunk_buffer tail = reader.decode(seqkv::make_codec(reader.header().codec), 448, 512);
        // [stream]
        check(same_kv(cache, tail, 448) && reader.find_attachment("engine.json").has_value(), "stream_writer / stream_reader + attachment");

        // [recover] A writer that died before finish(): every flushed chunk comes back.
        const seqkv::byte_vector cut(streamed.begin(), streamed.begin() + std::ptrdiff_t(streamed.size() * 3 / 5));
        const seqkv::format::recovery r = seqkv::format::recover_stream(cut);
        const seqkv::chunk_buffer kept = seqkv::decompress(r.file);
        // [recover]
        check(r.chunks >= 2 && kept.layout.tokens == r.tokens && same_kv(cache, kept), "recover_stream: the whole chunks before the cut");

        // [paged] An engine's paged pool (vLLM layout [2, blocks, 16, heads, head_dim] per layer).
        const std::uint32_t block = 16;
        const std::uint64_t blocks = (cache.layout.tokens + block - 1) / block;
        std::vector<std::int32_t> table(blocks);
        for (std::uint64_t b = 0; b < blocks; ++b) table[b] = std::int32_t(blocks - 1 - b);  // any order
        const std::size_t layer_bytes = 2 * blocks * block * cache.layout.kv_heads * cache.layout.head_dim * seqkv::dtype_size(cache.layout.type);
        std::vector<std::uint8_t> pool(layer_bytes * cache.layout.layers);
        std::vector<std::uint8_t*> layers;
        for (std::uint32_t l = 0; l < cache.layout.layers; ++l) layers.push_back(pool.data() + l * layer_bytes);
        const auto pages = seqkv::paged_kv_view::vllm_split(layers, blocks, block, cache.layout.kv_heads, cache.layout.head_dim,
                                                            cache.layout.type, table, cache.layout.tokens);
        seqkv::decompress_into(skv, pages);  // scatter a stored sequence into the pages
        const seqkv::byte_vector again = seqkv::compress_paged(pages, seqkv::preset("lossless", model), ids);
        // [paged]
        check(again == skv, "decompress_into pages, compress_paged: the same bytes");

        // [safetensors] Whole dumps: every tensor and the metadata through a .skv and back.
        seqkv::io::skv_summary summary;
        const seqkv::byte_vector packed = seqkv::io::compress_safetensors(file, seqkv::preset("lossless", model), &summary);
        const seqkv::io::safetensors_file back = seqkv::io::safetensors_file::parse(seqkv::io::decompress_to_safetensors(packed));
        // [safetensors]
        check(back.tensors().size() == file.tensors().size() && back.metadata() == file.metadata(), "compress_safetensors / decompress_to_safetensors");

        // [errors] Every failure is a seqkv::error subclass with a message; nothing else escapes.
        seqkv::byte_vector damaged = skv;
        damaged[damaged.size() / 2] ^= 1;
        bool caught = false;
        try {
            (void)seqkv::decompress(damaged);
        } catch (const seqkv::checksum_error& e) {  // a format_error; usage_error, resource_error, io_error, ...
            caught = std::string(e.what()).find("chunk") != std::string::npos;
        }
        // [errors]
        check(caught, "a flipped bit: checksum_error naming the chunk");
    } catch (const seqkv::error& e) {
        std::printf("seqkv error: %s\n", e.what());
        return 1;
    }
    std::printf("%s\n", failures ? "api_tour: FAILED" : "api_tour: all ok");
    return failures ? 1 : 0;
}
