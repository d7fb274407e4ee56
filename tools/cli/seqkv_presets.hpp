// CLI presets: names and explicit flags -> compress options, and the quality record stored
// with each file (bit-exactness for lossless codecs; SNR and attention error with the file's
// real queries for lossy ones).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <unistd.h>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "seqkv/convert/skv_file.hpp"
#include "seqkv/io/expected_kv_table.hpp"
#include "seqkv/io/mapped_file.hpp"
#include "seqkv/metrics/kv_metrics.hpp"
#include "seqkv/preset.hpp"
#include "seqkv/reference/llama.hpp"

namespace seqkv::cli {

/// Attachment holding the achieved quality (JSON) written by `seqkv compress`.
inline constexpr const char* stats_attachment = "quality.json";

inline std::string preset_help() {
    return "codec preset: lossless (default) | seqkv-1bit | seqkv-2bit | seqkv-step:<s> | bound:<rel> | abs:<abs> | "
           "kivi2 | kivi4 | turbo2 | turbo2.5 | turbo3 | turbo3.5 | turbo4 | int8 | fp8 | "
           "tokens | tokens-exact (token mode: ids coded under --model, KV recomputed; -exact adds the correction to the input) | "
           "draft | draft-abs:<abs> (ids + KV recomputed by --model in one batch + the coded residual: bit-exact, or within <abs>; "
           "--model-weights int12|int8 makes --model a cheaper draft) | "
           "hybrid | hybrid-abs:<abs> (per chunk: stored by the lossless / error-bounded codec, the draft's residual or "
           "recompute, whichever the decoder loads fastest at --bandwidth and --compute)";
}

/// Explicit lossy settings and shared side information given on the command line.
struct lossy_flags {
    std::vector<std::string> options;  // KEY=VALUE, applied after the preset
    std::string table_path;            // expected-KV table (safetensors) for presets that use one
    std::string model_path;            // --model: the reference model of the tokens presets
    std::string model_weights = "f32";  // --model-weights: f32 (the reference model), int12 or int8 (its drafts)
    unsigned threads = 0;              // --threads: codec threads (0: every core; the bytes never depend on it)
    double bandwidth_mb = 0;           // --bandwidth: hybrid presets, the decoder's MB/s (0: the library's default)
    double compute_gflops = 0;         // --compute: hybrid presets, the decoder's GFLOP/s for the model (0: default)
};

/// Registers `--threads N` (0, the default: every core).
inline void add_threads_flag(CLI::App& app, lossy_flags& flags) {
    app.add_option("--threads", flags.threads, "threads the codec runs on (default 0: every core; same output bytes)");
}

/// Registers `--model PATH` (token mode's model).
inline void add_model_flag(CLI::App& app, lossy_flags& flags) {
    app.add_option("--model", flags.model_path,
                   "model of the tokens presets: a directory (config.json + model.safetensors) or an export-weights .safetensors")
        ->check(CLI::ExistingPath);
    app.add_option("--model-weights", flags.model_weights,
                   "how --model computes: f32 (the reference model, default), int12 or int8 (cheaper drafts of the same weights: "
                   "integer rows x int16 activations, exact integer sums; the file names a draft by its own hash)")
        ->check(CLI::IsMember({"f32", "int8", "int12"}));
}

/// Registers `--bandwidth MB/s` and `--compute GFLOP/s` (the hybrid presets' cost model).
inline void add_cost_flags(CLI::App& app, lossy_flags& flags) {
    const tokens::hybrid_cost d;
    app.add_option("--bandwidth", flags.bandwidth_mb,
                   "hybrid presets: MB/s the decoder reads the file at (storage or network; default " + std::to_string(int(d.bandwidth / 1e6)) + ")")
        ->check(CLI::PositiveNumber);
    app.add_option("--compute", flags.compute_gflops,
                   "hybrid presets: GFLOP/s the decoder runs the model at (default " + std::to_string(int(d.compute / 1e9)) +
                       ": one core of the machine in docs/TOKEN_MODE.md; a GPU: 1e5)")
        ->check(CLI::PositiveNumber);
}

/// Registers `--lossy KEY=VALUE` (repeatable) and `--table FILE` on a subcommand.
inline void add_lossy_flags(CLI::App& app, lossy_flags& flags) {
    app.add_option("--lossy", flags.options,
                   "explicit lossy setting KEY=VALUE, repeatable (quantizer, predictor, step, bits, group, outliers, "
                   "qjl, bound, relative-bound, prerope, table, target-bits, rate, coding, ...)");
    app.add_option("--table", flags.table_path, "expected-KV table (.safetensors) built by `seqkv table`")
        ->check(CLI::ExistingFile);
    add_threads_flag(app, flags);
    add_model_flag(app, flags);
    add_cost_flags(app, flags);
}


/// Loads the table named by flags (or null).
inline std::shared_ptr<const predict::expected_kv_table> load_table(const lossy_flags& flags) {
    if (flags.table_path.empty()) return nullptr;
    auto f = io::safetensors_file::load(flags.table_path);
    return std::make_shared<const predict::expected_kv_table>(io::parse_expected_kv_table(f));
}

/// The --model model (nullptr without --model).
inline std::shared_ptr<const model::language_model> load_model(const lossy_flags& flags) {
    if (flags.model_path.empty()) return nullptr;
    return reference::llama_model::load(flags.model_path, dtype::bf16,
                                        flags.model_weights == "int8"    ? reference::weight_format::int8
                                        : flags.model_weights == "int12" ? reference::weight_format::int12
                                                                         : reference::weight_format::f32);
}

/// What a preset needs to know about the model (the library's, seqkv/preset.hpp).
using preset_model = model_params;

/// Options for a preset name for a model; chunk 0 keeps the preset's chunk size. The library's
/// presets (seqkv::preset) with the command line's table, model, --lossy settings and threads.
inline compress_options options_for_preset(const std::string& name, std::uint32_t chunk, const preset_model& m,
                                           const lossy_flags& flags = {}) {
    preset_inputs in;
    if (is_token_preset(name)) {
        in.model = load_model(flags);
        if (!in.model) throw usage_error("preset " + name + " needs --model (the model that produced the KV, or the reference model of it)");
    } else {
        in.table = load_table(flags);
    }
    in.options = flags.options;
    in.chunk_tokens = chunk;
    in.threads = flags.threads;
    if (flags.bandwidth_mb > 0) in.cost.bandwidth = float(flags.bandwidth_mb * 1e6);
    if (flags.compute_gflops > 0) in.cost.compute = float(flags.compute_gflops * 1e9);
    return preset(name, m, in);
}

/// Options for a preset name applied to a file (RoPE from its metadata rope_theta / rope_style).
inline compress_options options_for_preset(const std::string& name, std::uint32_t chunk,
                                           const io::safetensors_file& file, const lossy_flags& flags = {}) {
    const bool needs_cache = !(name == "lossless" && flags.options.empty()) && !is_token_preset(name);
    preset_model m = model_params_from(file.metadata(), needs_cache ? io::kv_view(file).layout : kv_layout{});
    return options_for_preset(name, chunk, m, flags);
}

/// Queries of each layer (`layer.{l}.q`), if the file has them for every layer.
inline std::vector<kv_tensor_view> queries_of(const io::safetensors_file& file, std::uint32_t layers) {
    std::vector<kv_tensor_view> q;
    for (std::uint32_t l = 0; l < layers; ++l) {
        const auto* t = file.find("layer." + std::to_string(l) + ".q");
        if (!t || !is_kv_float(t->type) || t->shape.size() != 3) return {};
        q.push_back({t->bytes.data(), t->type, std::uint32_t(t->shape[0]), t->shape[1], std::uint32_t(t->shape[2]),
                     kv_strides::head_major(t->shape[1], std::uint32_t(t->shape[2]))});
    }
    return q;
}

/// Quality of a decoded cache against the original file.
inline nlohmann::json quality_of(const io::safetensors_file& original, const chunk_buffer& decoded, const compress_options& o) {
    const auto cache = io::kv_view(original);
    bool exact = true;
    const std::size_t bytes = decoded.block_bytes();
    for (std::uint32_t l = 0; l < cache.layout.layers && exact; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const auto* src = cache.tensor(l, kind).data;
            const auto blk = decoded.block(l, kind);
            exact = exact && std::equal(blk.begin(), blk.end(), src, src + bytes);
        }
    nlohmann::json j{{"bit_exact", exact}};
    if (o.codec.codec_id == static_cast<std::uint16_t>(codec_family::lossless) && exact) return j;
    const auto queries = queries_of(original, cache.layout.layers);
    const auto q = metrics::measure_kv_quality(cache, view_of(decoded), queries);
    j["snr_k_db"] = q.overall.snr_k_db;
    j["snr_v_db"] = q.overall.snr_v_db;
    j["attention_rel_error"] = q.overall.attention_rel_error;
    j["attention_kl_nats"] = q.overall.attention_kl;
    j["real_queries"] = q.real_queries;
    return j;
}

/// A progress bar on stderr for long work: shown only when stderr is a terminal (or
/// SEQKV_PROGRESS=1 forces it; SEQKV_PROGRESS=0 hides it), never with --json; redrawn at most 10
/// times a second and erased when done.
class progress_bar {
public:
    progress_bar(std::string label, std::uint64_t bytes_per_token, bool json)
        : label_(std::move(label)), bytes_per_token_(bytes_per_token), start_(std::chrono::steady_clock::now()) {
        const char* env = std::getenv("SEQKV_PROGRESS");
        enabled_ = !json && (env ? std::string_view(env) == "1" : ::isatty(2) == 1);
    }
    progress_bar(const progress_bar&) = delete;
    progress_bar& operator=(const progress_bar&) = delete;
    ~progress_bar() {
        if (drawn_) std::fprintf(stderr, "\r%*s\r", int(width_), "");
    }
    void operator()(std::uint64_t done, std::uint64_t total) {
        if (!enabled_ || total == 0) return;
        const auto now = std::chrono::steady_clock::now();
        if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
        last_ = now;
        const double secs = std::chrono::duration<double>(now - start_).count();
        const int filled = int(30 * done / total);
        char line[160];
        const int n = std::snprintf(line, sizeof line, "\r%s [%.*s%*s] %3d%%  %llu/%llu tokens  %.0f MB/s", label_.c_str(), filled,
                                    "##############################", 30 - filled, "", int(100 * done / total), (unsigned long long)done,
                                    (unsigned long long)total, secs > 0 ? double(done) * double(bytes_per_token_) / 1e6 / secs : 0.0);
        width_ = std::max<std::size_t>(width_, std::size_t(std::max(n, 0)));
        std::fputs(line, stderr);
        std::fflush(stderr);
        drawn_ = true;
    }

private:
    std::string label_;
    std::uint64_t bytes_per_token_;
    std::chrono::steady_clock::time_point start_, last_{};
    bool enabled_ = false, drawn_ = false;
    std::size_t width_ = 0;
};

/// Caches larger than this get their quality measured chunk by chunk (bit-exactness, K/V SNR)
/// instead of by the whole-cache attention probe, so memory stays at a few chunks.
inline constexpr std::uint64_t whole_quality_limit = 256ull << 20;

/// Quality of a .skv (a mapped file) against the original: quality_of for caches up to
/// whole_quality_limit (and codecs with dependent chunks); above it, decoded one chunk at a time.
inline nlohmann::json quality_of_stream(const io::safetensors_file& original, const io::mapped_file& skv, const compress_options& o) {
    format::stream_reader reader(skv.bytes());
    const auto codec = make_codec(reader.header().codec, o.resources);
    const auto cache = io::kv_view(original);
    if (codec.dependent_chunks || cache.layout.total_bytes() <= whole_quality_limit)
        return quality_of(original, reader.decode(codec, 0, std::nullopt, o.resources), o);
    const bool lossless = o.codec.codec_id == static_cast<std::uint16_t>(codec_family::lossless);
    const auto& L = cache.layout;
    const std::size_t row = std::size_t(L.head_dim) * dtype_size(L.type);
    bool exact = true;
    double signal[2] = {0, 0}, noise[2] = {0, 0};
    for (const auto& c : reader.chunks()) {
        const chunk_buffer part = reader.decode(codec, c.first_token, c.first_token + c.tokens, o.resources);
        for (std::uint32_t l = 0; l < L.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const kv_tensor_view src = cache.tensor(l, kind), dec = part.view(l, kind);
                for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                    for (std::uint64_t t = 0; t < c.tokens; ++t) {
                        const std::uint64_t at = c.first_token + t;
                        bool same = true;
                        if (src.strides.channel == 1) {
                            same = std::memcmp(src.element(h, at, 0), dec.element(h, t, 0), row) == 0;
                        } else {
                            for (std::uint32_t ch = 0; ch < L.head_dim; ++ch)
                                same = same && std::memcmp(src.element(h, at, ch), dec.element(h, t, ch), dtype_size(L.type)) == 0;
                        }
                        exact = exact && same;
                        if (lossless) continue;
                        for (std::uint32_t ch = 0; ch < L.head_dim; ++ch) {
                            const double x = src.at(h, at, ch), y = dec.at(h, t, ch);
                            signal[int(kind)] += x * x;
                            noise[int(kind)] += (x - y) * (x - y);
                        }
                    }
            }
        skv.release(skv.bytes().subspan(c.offset, c.record_bytes));  // resident memory: a chunk, not the file
        if (lossless && !exact) break;  // reported below; no need to look further
    }
    nlohmann::json j{{"bit_exact", exact}};
    if (lossless) return j;  // lossless: exact or not is the whole verdict (no SNR was summed)
    auto snr = [](double s, double n) { return n == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(s / n); };
    j["snr_k_db"] = snr(signal[0], noise[0]);
    j["snr_v_db"] = snr(signal[1], noise[1]);
    j["attention_metrics"] = "skipped: cache larger than " + std::to_string(whole_quality_limit >> 20) + " MiB (measured chunk by chunk)";
    return j;
}

/// Adds (or replaces) attachment `name` in the finished .skv a file_sink holds: the tail
/// (attachments, index, trailer) is rewritten after the chunks, which stay where they are.
inline void add_attachment_in_place(io::file_sink& sink, std::string name, byte_vector bytes) {
    sink.flush();
    std::uint64_t chunks_end = 0, tokens = 0;
    std::uint16_t version = 0;
    std::vector<format::chunk_entry> chunks;
    std::vector<format::attachment> atts;
    {
        const auto m = io::mapped_file::open(sink.temporary_path());
        format::stream_reader reader(m.bytes());
        for (const auto& a : reader.attachments())
            if (a.name != name) atts.push_back(a);
        chunks = reader.chunks();
        chunks_end = reader.chunks_end();
        tokens = reader.tokens();
        version = reader.version();
    }  // unmapped before the file is cut
    atts.push_back({std::move(name), std::move(bytes)});
    sink.truncate(chunks_end);
    byte_vector tail;
    format::append_tail(tail, chunks_end, chunks, atts, tokens, version);
    sink.append(tail);
}

}  // namespace seqkv::cli
