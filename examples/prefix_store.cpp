// Several chat sessions that share a system prompt, stored in a prefix store and read back.
// The shared prompt's KV is encoded and stored once; a new session asks the store how much of
// its prompt is already there and gets that KV back bit for bit (lossless codec).
//
// Uses the bundled real SmolLM2-135M KV dump; sessions are its first 160 tokens (the "system
// prompt") followed by different continuations (spliced KV rows, as the prefix-store bench does).
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/store/directory_store.hpp"
#include "seqkv/store/prefix_store.hpp"

using namespace seqkv;

int main() {
    const auto file = io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "smollm2-gpl3.safetensors");
    const kv_cache_view dump = io::kv_view(file);
    const auto ids = *io::token_ids_of(file, dump.layout.tokens);

    // A session: the 160-token prompt + 48 tokens taken from position 160 + 16·k of the dump.
    auto make_session = [&](std::uint64_t k, std::vector<std::int32_t>& tokens) {
        auto kv = chunk_buffer::for_layout(dump.layout, 208);
        const std::size_t row = kv.layout.head_dim * dtype_size(kv.layout.type);
        auto source = [&](std::uint64_t t) { return t < 160 ? t : 160 + (16 * k + t - 160) % 96; };
        for (std::uint32_t l = 0; l < kv.layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto& src = kind == kv_kind::value ? dump.values[l] : dump.keys[l];
                for (std::uint32_t h = 0; h < kv.layout.kv_heads; ++h)
                    for (std::uint64_t t = 0; t < kv.layout.tokens; ++t)
                        std::memcpy(kv.block(l, kind).data() + (h * kv.layout.tokens + t) * row, src.element(h, source(t), 0), row);
            }
        tokens.clear();
        for (std::uint64_t t = 0; t < kv.layout.tokens; ++t)
            tokens.push_back(ids[source(t)] + (t < 160 ? 0 : std::int32_t(1000000 * (k + 1))));
        return kv;
    };

    const auto dir = std::filesystem::temp_directory_path() / "seqkv_prefix_store_example";
    std::filesystem::remove_all(dir);
    directory_chunk_store chunks(dir);  // or memory_chunk_store, or redis_chunk_store (docs/STORE.md)
    prefix_store store(chunks, make_codec(lossless_config()), dump.layout, {.chunk_tokens = 64});

    std::uint64_t raw = 0;
    std::vector<std::vector<std::int32_t>> sessions(4);
    std::vector<chunk_buffer> kvs;
    for (std::uint64_t k = 0; k < 4; ++k) {
        kvs.push_back(make_session(k, sessions[k]));
        const auto st = store.put(view_of(kvs[k]), sessions[k]);
        raw += kvs[k].bytes.size();
        std::printf("session %llu: %llu tokens, %llu already stored, %llu new chunks, %llu bytes written\n", (unsigned long long)k,
                    (unsigned long long)st.tokens, (unsigned long long)st.shared_tokens, (unsigned long long)st.new_chunks,
                    (unsigned long long)st.bytes_written);
    }
    std::printf("stored %llu B for %llu B of KV (%.2fx)\n", (unsigned long long)store.stored_bytes(), (unsigned long long)raw,
                double(raw) / double(store.stored_bytes()));

    int failures = 0;
    for (std::uint64_t k = 0; k < 4; ++k) {
        const auto hit = store.read(sessions[k]);
        const bool exact = hit.tokens == 208 && hit.kv.bytes == kvs[k].bytes;  // same [layer][K/V][head][token][channel] order
        std::printf("read session %llu: %llu tokens, %s\n", (unsigned long long)k, (unsigned long long)hit.tokens,
                    exact ? "bit-exact" : "MISMATCH");
        failures += !exact;
    }
    // A new session with the same system prompt: the store serves the prompt's KV.
    std::vector<std::int32_t> fresh(sessions[0].begin(), sessions[0].begin() + 160);
    fresh.push_back(-1);
    std::printf("new session: %llu of %zu prompt tokens served from the store\n", (unsigned long long)store.match(fresh), fresh.size());
    failures += store.match(fresh) != 160;
    std::filesystem::remove_all(dir);
    return failures == 0 ? 0 : 1;
}
