// CLI presets: names and explicit flags -> compress options, and the quality record stored
// with each file (bit-exactness for lossless codecs; SNR and attention error with the file's
// real queries for lossy ones).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "seqkv/convert/skv_file.hpp"
#include "seqkv/io/expected_kv_table.hpp"
#include "seqkv/metrics/kv_metrics.hpp"
#include "seqkv/preset.hpp"
#include "seqkv/reference/llama.hpp"

namespace seqkv::cli {

/// Attachment holding the achieved quality (JSON) written by `seqkv compress`.
inline constexpr const char* stats_attachment = "quality.json";

inline std::string preset_help() {
    return "codec preset: lossless (default) | seqkv-1bit | seqkv-2bit | seqkv-step:<s> | bound:<rel> | abs:<abs> | "
           "kivi2 | kivi4 | turbo2 | turbo2.5 | turbo3 | turbo3.5 | turbo4 | int8 | fp8 | "
           "tokens | tokens-exact (token mode: ids coded under --model, KV recomputed; -exact adds the correction to the input)";
}

/// Explicit lossy settings and shared side information given on the command line.
struct lossy_flags {
    std::vector<std::string> options;  // KEY=VALUE, applied after the preset
    std::string table_path;            // expected-KV table (safetensors) for presets that use one
    std::string model_path;            // --model: the reference model of the tokens presets
    unsigned threads = 0;              // --threads: codec threads (0: every core; the bytes never depend on it)
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
    return reference::llama_model::load(flags.model_path);
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
    const auto q = metrics::measure_kv_quality(cache, metrics::view_of(decoded), queries);
    j["snr_k_db"] = q.overall.snr_k_db;
    j["snr_v_db"] = q.overall.snr_v_db;
    j["attention_rel_error"] = q.overall.attention_rel_error;
    j["attention_kl_nats"] = q.overall.attention_kl;
    j["real_queries"] = q.real_queries;
    return j;
}

/// Decodes the new file, measures its quality and stores it as the stats attachment.
inline byte_vector with_quality_stats(const io::safetensors_file& original, byte_vector skv, const compress_options& o) {
    const chunk_buffer decoded = decompress(skv, 0, std::nullopt, o.resources);
    const auto q = quality_of(original, decoded, o).dump();
    return format::with_attachment(skv, stats_attachment, byte_vector(q.begin(), q.end()));
}

}  // namespace seqkv::cli
