// `seqkv bench FILE…`: seqkv presets against the compressors a user would pick instead (zstd -3 /
// -19, lz4, blosc + zstd with byte or bit shuffle, where the build found them), on the same KV
// bytes in one run: ratio, encode and decode MB/s on one thread and on --threads, every round trip
// checked (lossless rows must give back the exact bytes). Timings are wall clock, at least
// --seconds per measurement; the KV bytes are every layer's K then V as stored (what the peers get).
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/io/safetensors.hpp"
#include "seqkv/seqkv.hpp"
#include "seqkv_peers.hpp"
#include "seqkv_presets.hpp"

namespace seqkv::cli {

struct bench_settings {
    std::vector<std::string> presets{"lossless"};  // seqkv presets (CLI names)
    std::vector<std::string> codecs;               // only these rows (seqkv:<preset>, zstd-3, ...); empty: all
    unsigned threads = 0;                          // the second seqkv measurement (0: every core; 1: none)
    double seconds = 0.3;                          // least time per measurement
    lossy_flags flags;                             // --table / --model / --lossy for the presets that take them
    bool context_curve = false;                    // also the ratio of each preset on the first 32, 64, ... tokens
};

namespace detail {

/// Seconds per call of f, repeating it for at least `least` seconds (at least once).
inline double seconds_per_call(double least, const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    int reps = 0;
    double elapsed = 0;
    do {
        f();
        ++reps;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (elapsed < least);
    return elapsed / reps;
}

struct bench_row {
    std::string codec;
    unsigned threads = 1;
    bool lossless = true;
    bool exact = true;  // every round trip gave back the input bytes (lossless rows must)
    std::uint64_t raw = 0, coded = 0;
    double encode_seconds = 0, decode_seconds = 0;
};

}  // namespace detail

/// Runs the comparison on every file; returns {"files", "kv_bytes", "threads", "rows": [...]} and
/// fills `text` with the table. Throws seqkv errors for bad files or settings; a lossless row that
/// does not give back its input is reported (exact: false) and makes the run fail (internal error).
inline nlohmann::json run_bench(const std::vector<std::string>& paths, const bench_settings& s, std::string& text) {
    using detail::bench_row;
    const unsigned all = s.threads ? s.threads : std::max(1u, std::thread::hardware_concurrency());
    auto selected = [&](const std::string& name) { return s.codecs.empty() || std::find(s.codecs.begin(), s.codecs.end(), name) != s.codecs.end(); };
    std::map<std::pair<std::string, unsigned>, bench_row> rows;
    std::vector<std::pair<std::string, unsigned>> order;
    auto row = [&](const std::string& codec, unsigned threads) -> bench_row& {
        const auto key = std::pair{codec, threads};
        if (!rows.count(key)) order.push_back(key), rows[key] = bench_row{codec, threads};
        return rows[key];
    };
    nlohmann::json files = nlohmann::json::array();
    std::uint64_t kv_bytes = 0;
    for (const auto& path : paths) {
        const auto file = io::safetensors_file::load(path);
        const kv_cache_view cache = io::kv_view(file);
        const auto ids = io::token_ids_of(file, cache.layout.tokens).value_or(std::vector<std::int32_t>{});
        // The KV as decompress returns it: [layer][K, V][head][token][channel].
        byte_vector flat;
        flat.reserve(cache.layout.total_bytes());
        for (std::uint32_t l = 0; l < cache.layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const std::size_t at = flat.size();
                flat.resize(at + cache.layout.elements_per_tensor() * dtype_size(cache.layout.type));
                gather_block(cache.tensor(l, kind), 0, cache.layout.tokens, std::span(flat).subspan(at));
            }
        kv_bytes += flat.size();
        files.push_back({{"file", path}, {"tokens", cache.layout.tokens}, {"layers", cache.layout.layers},
                         {"kv_heads", cache.layout.kv_heads}, {"head_dim", cache.layout.head_dim},
                         {"dtype", std::string(dtype_name(cache.layout.type))}, {"kv_bytes", flat.size()}});

        for (const auto& preset : s.presets) {
            const std::string name = "seqkv:" + preset;
            if (!selected(name)) continue;
            compress_options o = options_for_preset(preset, 0, file, s.flags);
            const bool lossless = o.codec.codec_id == 1 || preset == "tokens-exact" || preset == "draft" || preset == "hybrid";  // codec 1: lossless
            for (unsigned threads : all == 1 ? std::vector<unsigned>{1} : std::vector<unsigned>{1, all}) {
                o.threads = threads;
                byte_vector skv;
                const double enc = detail::seconds_per_call(s.seconds, [&] { skv = compress(cache, o, ids); });
                chunk_buffer back;
                const double dec = detail::seconds_per_call(s.seconds, [&] { back = decompress(skv, 0, std::nullopt, o.resources, threads); });
                bench_row& r = row(name, threads);
                r.lossless = lossless;
                r.exact = r.exact && back.bytes == flat;
                r.raw += flat.size(), r.coded += skv.size(), r.encode_seconds += enc, r.decode_seconds += dec;
            }
        }
        for (const auto& p : peers::available()) {
            if (!selected(p.name)) continue;
            byte_vector z;
            const double enc = detail::seconds_per_call(s.seconds, [&] { z = p.encode(flat, dtype_size(cache.layout.type)); });
            byte_vector back(flat.size());
            const double dec = detail::seconds_per_call(s.seconds, [&] { p.decode(z, back); });
            bench_row& r = row(p.name, 1);
            r.exact = r.exact && back == flat;
            r.raw += flat.size(), r.coded += z.size(), r.encode_seconds += enc, r.decode_seconds += dec;
        }
    }
    // Ratio against context length: each preset on the first n tokens of each file (n = 32, 64, ...,
    // and the whole file), one thread; same bytes as compressing a dump of that many tokens.
    nlohmann::json context = nlohmann::json::array();
    for (const auto& path : s.context_curve ? paths : std::vector<std::string>{}) {
        const auto file = io::safetensors_file::map(path);
        const kv_cache_view cache = io::kv_view(file);
        const auto ids = io::token_ids_of(file, cache.layout.tokens).value_or(std::vector<std::int32_t>{});
        for (const auto& preset : s.presets) {
            if (!selected("seqkv:" + preset)) continue;
            compress_options o = options_for_preset(preset, 0, file, s.flags);
            o.threads = 1;
            const std::uint64_t T = cache.layout.tokens;
            for (std::uint64_t n = 32;; n = std::min(2 * n, T)) {
                if (n > T) n = T;
                kv_cache_view part = cache;
                part.layout.tokens = n;
                for (auto* ts : {&part.keys, &part.values})
                    for (auto& t : *ts) t.tokens = n;
                const auto skv = compress(part, o, ids.empty() ? std::span<const std::int32_t>{} : std::span<const std::int32_t>(ids).first(n));
                context.push_back({{"file", path}, {"codec", "seqkv:" + preset}, {"tokens", n},
                                   {"ratio", double(part.layout.total_bytes()) / double(skv.size())}});
                if (n == T) break;
            }
        }
    }
    nlohmann::json out_rows = nlohmann::json::array();
    char line[256];
    std::snprintf(line, sizeof line, "seqkv bench: %zu file(s), %.2f MB of KV; wall clock; seqkv rows on 1 and %u threads, peers on 1\n", paths.size(),
                  double(kv_bytes) / 1e6, all);
    text = line;
    std::snprintf(line, sizeof line, "%-26s %7s %8s %10s %10s %6s\n", "codec", "threads", "ratio", "enc MB/s", "dec MB/s", "exact");
    text += line;
    bool failed = false;
    for (const auto& key : order) {
        const bench_row& r = rows.at(key);
        const double ratio = double(r.raw) / double(std::max<std::uint64_t>(1, r.coded));
        const double enc = double(r.raw) / 1e6 / r.encode_seconds, dec = double(r.raw) / 1e6 / r.decode_seconds;
        out_rows.push_back({{"codec", r.codec}, {"threads", r.threads}, {"lossless", r.lossless}, {"exact", r.exact}, {"ratio", ratio},
                            {"kv_bytes", r.raw}, {"coded_bytes", r.coded}, {"encode_MBps", enc}, {"decode_MBps", dec}});
        std::snprintf(line, sizeof line, "%-26s %7u %8.3f %10.1f %10.1f %6s\n", r.codec.c_str(), r.threads, ratio, enc, dec,
                      r.exact ? "yes" : (r.lossless ? "NO" : "lossy"));
        text += line;
        failed = failed || (r.lossless && !r.exact);
    }
    if (rows.empty()) throw usage_error("seqkv bench: no codec selected (--codecs names none of the rows)");
    nlohmann::json j{{"files", files}, {"kv_bytes", kv_bytes}, {"threads", all}, {"rows", out_rows}};
    if (s.context_curve) j["context"] = context;
    if (failed) throw std::runtime_error("bench: a lossless codec did not give back its input (see the exact column)\n" + text);  // exit 5
    return j;
}

}  // namespace seqkv::cli
