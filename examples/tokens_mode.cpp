// Token mode (the paper's floor): store only the token ids, coded under seqkv's deterministic
// reference model, and recompute the KV on decode; "tokens-exact" adds a coded correction so an
// engine's own KV (here PyTorch's dump of the bundled tiny Llama) comes back bit for bit.
// ctest example_tokens_mode: exits nonzero when a decode does not give back what it should.
#include <seqkv/core/chunk_view.hpp>
#include <seqkv/io/kv_safetensors.hpp>
#include <seqkv/io/safetensors.hpp>
#include <seqkv/preset.hpp>
#include <seqkv/reference/llama.hpp>
#include <seqkv/seqkv.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>

int main() {
    try {
        const std::filesystem::path data = SEQKV_DATA_DIR;
        // The model both ends run: weights from safetensors, the same bits on every x86-64 machine.
        const auto model = seqkv::reference::llama_model::load(data / "tiny-llama");
        const auto file = seqkv::io::safetensors_file::load(data / "kv" / "py311-textwrap.safetensors");  // its PyTorch KV
        const seqkv::kv_cache_view cache = seqkv::io::kv_view(file);
        const auto ids = seqkv::io::token_ids_of(file, cache.layout.tokens).value();
        const double raw = double(cache.layout.total_bytes());

        seqkv::preset_inputs in;
        in.model = model;
        const seqkv::compress_options tokens = seqkv::preset("tokens", {}, in);  // the model is a resource of the file
        const seqkv::compress_options exact = seqkv::preset("tokens-exact", {}, in);
        const seqkv::byte_vector lossless = seqkv::compress(cache, seqkv::preset("lossless", seqkv::model_params_from(file.metadata(), cache.layout)), ids);
        const seqkv::byte_vector small = seqkv::compress(cache, tokens, ids);
        const seqkv::byte_vector restored = seqkv::compress(cache, exact, ids);
        std::printf("%llu tokens, %.0f bytes of bf16 KV\n", (unsigned long long)cache.layout.tokens, raw);
        std::printf("  lossless codec   %8zu bytes  %8.1fx\n", lossless.size(), raw / double(lossless.size()));
        std::printf("  tokens           %8zu bytes  %8.1fx  (%.2f bits/token incl. headers)\n", small.size(), raw / double(small.size()),
                    8.0 * double(small.size()) / double(cache.layout.tokens));
        std::printf("  tokens-exact     %8zu bytes  %8.1fx\n", restored.size(), raw / double(restored.size()));

        // Decoding needs the same model (a resource_error names it otherwise): ids, then recompute.
        const auto t0 = std::chrono::steady_clock::now();
        const seqkv::chunk_buffer recomputed = seqkv::decompress(small, 0, std::nullopt, tokens.resources);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("  decode tokens: %.0f tokens/s (ids decoded and KV recomputed token by token)\n", double(cache.layout.tokens) / seconds);
        // The recomputed KV is the reference model's own: the same as a session run on the ids.
        auto session = model->session(1);
        session->extend(ids, {});
        auto want = seqkv::chunk_buffer::for_layout(cache.layout, cache.layout.tokens);
        session->kv(0, cache.layout.tokens, want);
        bool ok = recomputed.token_ids == ids && recomputed.bytes == want.bytes;
        std::printf("  tokens: ids and the model's KV back %s\n", ok ? "ok" : "WRONG");

        // tokens-exact: PyTorch's bytes, and a range decode (replayed from the file's keyframe).
        const seqkv::chunk_buffer back = seqkv::decompress(restored, 0, std::nullopt, exact.resources);
        const auto original = seqkv::copy_tokens(cache, 0, cache.layout.tokens, cache.layout.layers, cache.layout.type);
        const seqkv::chunk_buffer part = seqkv::decompress(restored, 300, 340, exact.resources);
        const auto original_part = seqkv::copy_tokens(cache, 300, 340, cache.layout.layers, cache.layout.type);
        const bool exact_ok = back.bytes == original.bytes && part.bytes == original_part.bytes;
        std::printf("  tokens-exact: the engine's KV back bit for bit, whole and tokens 300..339 %s\n", exact_ok ? "ok" : "WRONG");
        return ok && exact_ok ? 0 : 1;
    } catch (const seqkv::error& e) {
        std::printf("seqkv error: %s\n", e.what());
        return 1;
    }
}
