// `seqkv dedup FILE…`: what a prefix store would save on a set of sessions. The sessions (KV dumps
// with token ids, one model) go in order into an in-memory prefix store (seqkv/store/): a prefix
// already stored is not stored again; with --near-gap, a session that leaves a stored one for a
// few tokens and continues with the same tokens is coded against it. Reported per session and in
// total against each session compressed on its own with the same preset.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <seqkv/io/kv_safetensors.hpp>
#include <seqkv/seqkv.hpp>
#include <seqkv/store/chunk_store.hpp>
#include <seqkv/store/prefix_store.hpp>

#include "seqkv_presets.hpp"

namespace seqkv::cli {

struct dedup_settings {
    std::string preset = "lossless";
    std::uint32_t chunk = 64;      // tokens per stored chunk: the sharing granularity
    std::uint32_t near_gap = 0;    // near-prefix reuse across a gap of at most this many tokens (0: off)
    lossy_flags flags;
};

inline nlohmann::json run_dedup(const std::vector<std::string>& paths, const dedup_settings& s, std::string& text) {
    require_usage(s.chunk > 0, "dedup: --chunk must be positive");
    std::vector<io::safetensors_file> files;
    for (const auto& p : paths) files.push_back(io::safetensors_file::load(p));
    const kv_layout first = io::kv_view(files.front()).layout;
    compress_options store_opts = options_for_preset(s.preset, s.chunk, files.front(), s.flags);
    require_usage(s.near_gap == 0 || store_opts.codec.codec_id == static_cast<std::uint16_t>(codec_family::lossless),
                  "dedup: --near-gap needs the lossless preset (a difference coded lossy would not add back exactly)");
    auto codec = make_codec(store_opts.codec, store_opts.resources, executor_for(store_opts.threads));
    require_usage(!codec.dependent_chunks, "dedup: the preset's chunks depend on each other (token mode): a prefix store needs self-contained chunks");
    memory_chunk_store chunks;
    prefix_store_options po;
    po.chunk_tokens = s.chunk;
    po.near_prefix_gap = s.near_gap;
    prefix_store<memory_chunk_store> store(chunks, std::move(codec), first, po, &store_opts.resources);

    nlohmann::json sessions = nlohmann::json::array();
    std::uint64_t kv_total = 0, alone_total = 0, store_total = 0, tokens_total = 0, shared_total = 0;
    char line[256];
    text += "session                                   tokens  shared  -log2 P(shared)  alone B      added to store B\n";
    for (std::size_t i = 0; i < files.size(); ++i) {
        const kv_cache_view cache = io::kv_view(files[i]);
        const auto& L = cache.layout;
        require_usage(L.layers == first.layers && L.kv_heads == first.kv_heads && L.head_dim == first.head_dim && L.type == first.type,
                      ("dedup: " + paths[i] + " has another geometry than " + paths[0] + " (one model's sessions only)").c_str());
        const auto ids = io::token_ids_of(files[i], L.tokens);
        if (!ids) throw usage_error("dedup: " + paths[i] + " has no token ids (tensor `tokens`): a prefix store keys sessions by them");
        const auto nll = io::nll_of(files[i], L.tokens).value_or(std::vector<float>{});
        // The same preset with its own chunk size: how the session would be stored alone.
        const auto alone = compress(cache, options_for_preset(s.preset, 0, files[i], s.flags), *ids).size();
        const auto nearest = store.index().longest_prefix(*ids);
        const double d_bits = trie::plt_trie::shared_bits(nearest);
        const put_stats st = store.put(cache, *ids, nll);
        kv_total += L.total_bytes();
        alone_total += alone;
        store_total += st.bytes_written;
        tokens_total += L.tokens;
        shared_total += st.shared_tokens;
        sessions.push_back({{"file", paths[i]},
                            {"tokens", L.tokens},
                            {"shared_tokens", st.shared_tokens},
                            {"shared_prefix_bits", d_bits},
                            {"kv_bytes", L.total_bytes()},
                            {"alone_bytes", alone},
                            {"store_bytes_added", st.bytes_written},
                            {"new_chunks", st.new_chunks},
                            {"reused_chunks", st.reused_chunks},
                            {"near_prefix_chunks", st.referenced_chunks}});
        std::string name = paths[i].size() > 40 ? "…" + paths[i].substr(paths[i].size() - 39) : paths[i];
        std::snprintf(line, sizeof line, "%-40s %7llu %7llu %16.1f  %-12llu %llu\n", name.c_str(), (unsigned long long)L.tokens,
                      (unsigned long long)st.shared_tokens, d_bits, (unsigned long long)alone, (unsigned long long)st.bytes_written);
        text += line;
    }
    const std::uint64_t index_bytes = store.save_index().size();
    const double saving = store_total + index_bytes ? double(alone_total) / double(store_total + index_bytes) : 0.0;
    std::snprintf(line, sizeof line,
                  "total: %llu tokens (%llu in stored prefixes), KV %llu B; alone %llu B; prefix store %llu B + index %llu B "
                  "= x%.3f smaller than alone, x%.3f of the raw KV\n",
                  (unsigned long long)tokens_total, (unsigned long long)shared_total, (unsigned long long)kv_total,
                  (unsigned long long)alone_total, (unsigned long long)store_total, (unsigned long long)index_bytes, saving,
                  store_total + index_bytes ? double(kv_total) / double(store_total + index_bytes) : 0.0);
    text += line;
    return {{"preset", s.preset},
            {"chunk_tokens", s.chunk},
            {"near_prefix_gap", s.near_gap},
            {"sessions", sessions},
            {"tokens", tokens_total},
            {"shared_tokens", shared_total},
            {"kv_bytes", kv_total},
            {"alone_bytes", alone_total},
            {"store_bytes", store_total},
            {"index_bytes", index_bytes},
            {"saving_vs_alone", saving}};
}

}  // namespace seqkv::cli
