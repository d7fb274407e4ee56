// CLI support for llama.cpp states: `compress --from llama-state` (model facts from --gguf and/or
// explicit flags), `decompress --to llama-state`, and the quality record of such files.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "seqkv/io/gguf.hpp"
#include "seqkv/convert/llama_skv.hpp"
#include "seqkv/metrics/kv_metrics.hpp"
#include "seqkv_presets.hpp"

namespace seqkv::cli {

/// Flags of `compress --from llama-state`: where the model facts the state lacks come from.
struct llama_flags {
    std::string from = "safetensors";  // safetensors | llama-state
    std::string gguf;                  // model file: KV heads, head size, RoPE theta and pairing
    std::uint32_t kv_heads = 0, head_dim = 0;
    double rope_theta = 0;
    std::string rope_style;            // interleaved | rotate_half | none (default: the arch's)
    std::string tokens;                // text file of token ids by position
};

/// Registers the llama.cpp flags on `compress`.
inline void add_llama_flags(CLI::App& app, llama_flags& f) {
    app.add_option("--from", f.from, "input kind: safetensors (default) | llama-state (llama.cpp sequence/session state)")
        ->check(CLI::IsMember({"safetensors", "llama-state"}));
    app.add_option("--gguf", f.gguf, "llama-state: the model's GGUF (KV heads, head size, RoPE)")->check(CLI::ExistingFile);
    app.add_option("--kv-heads", f.kv_heads, "llama-state: KV heads per layer (overrides --gguf)");
    app.add_option("--head-dim", f.head_dim, "llama-state: head size (overrides --gguf)");
    app.add_option("--rope-theta", f.rope_theta, "llama-state: RoPE base (overrides --gguf)");
    app.add_option("--rope-style", f.rope_style, "llama-state: interleaved | rotate_half | none (overrides --gguf)")
        ->check(CLI::IsMember({"interleaved", "rotate_half", "none"}));
    app.add_option("--tokens", f.tokens, "llama-state: token ids by position (text, whitespace-separated) for states without them")
        ->check(CLI::ExistingFile);
}

/// Model facts from the GGUF header and the explicit flags, as preset inputs and .skv metadata.
struct llama_model_facts {
    io::llama::kv_shape shape;
    preset_model preset;
    std::map<std::string, std::string> metadata;
    bool mla = false;  // the cache keeps no V tensors
};

inline llama_model_facts llama_facts(const llama_flags& f) {
    llama_model_facts m;
    m.preset.rope_style = "none";
    if (!f.gguf.empty()) {
        const auto a = io::gguf::attention_model_of(io::gguf::load_metadata(f.gguf));
        m.shape = {a.kv_heads, a.head_dim};
        m.metadata["model"] = a.arch;
        m.mla = a.mla;
        if (a.rope != io::gguf::rope_pairing::none) {
            m.preset.rope_theta = a.rope_theta;
            m.preset.rope_style = a.rope == io::gguf::rope_pairing::interleaved ? "interleaved" : "rotate_half";
        }
    }
    if (f.kv_heads) m.shape.kv_heads = f.kv_heads;
    if (f.head_dim) m.shape.head_dim = f.head_dim;
    if (f.rope_theta > 0) {
        m.preset.rope_theta = f.rope_theta;
        if (m.preset.rope_style == "none" && f.rope_style.empty()) m.preset.rope_style = "interleaved";  // llama.cpp NORM
    }
    if (!f.rope_style.empty()) m.preset.rope_style = f.rope_style;
    if (m.preset.rope_style == "none") m.preset.rope_theta = 0;
    if (m.preset.rope_theta > 0 && !(m.shape.kv_heads || m.shape.head_dim))
        throw usage_error("RoPE prediction needs the head size: pass --gguf or --kv-heads/--head-dim");
    if (m.preset.rope_theta > 0) {
        std::ostringstream theta;
        theta.precision(17);
        theta << m.preset.rope_theta;
        m.metadata["rope_theta"] = theta.str();
        m.metadata["rope_style"] = m.preset.rope_style;
    }
    return m;
}

/// Reads whitespace-separated token ids.
inline std::vector<std::int32_t> read_token_list(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw io_error("cannot open '" + path + "'");
    std::vector<std::int32_t> ids;
    std::string word;
    while (in >> word) {
        try {
            std::size_t used = 0;
            const long long v = std::stoll(word, &used);
            if (used != word.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(word);
            ids.push_back(static_cast<std::int32_t>(v));
        } catch (const std::exception&) {
            throw usage_error("--tokens: '" + word + "' is not a token id");
        }
    }
    return ids;
}

/// `seqkv compress --from llama-state`: writes the .skv, returns its summary fields.
inline nlohmann::json compress_llama(const std::string& in, const std::string& out, const std::string& preset,
                                     std::uint32_t chunk, const lossy_flags& lossy, const llama_flags& f) {
    const byte_vector bytes = read_file(in);
    const auto facts = llama_facts(f);
    io::llama::parse_options po;
    po.has_values = !facts.mla;
    const auto st = io::llama::parse_state(bytes, po);
    const auto plan = io::llama::plan_kv(st, facts.shape);
    preset_model pm = facts.preset;
    pm.head_dim = plan.layout.head_dim;
    auto opts = options_for_preset(preset, chunk, pm, lossy);
    opts.metadata = facts.metadata;
    const auto by_position = f.tokens.empty() ? std::vector<std::int32_t>{} : read_token_list(f.tokens);
    io::skv_summary summary;
    auto skv = io::llama::compress_state(st, facts.shape, opts, by_position, &summary);
    // Quality: a lossless file must give back the state byte for byte; a lossy one gets K/V metrics.
    const auto back = io::llama::decompress_state(skv, opts.resources, opts.threads);
    nlohmann::json q;
    const bool exact = io::llama::write_state(back) == bytes;
    q["bit_exact"] = exact;
    q["state_bytes_identical"] = exact;
    if (!exact && plan.layout.tokens) {
        const auto original = io::llama::gather_kv(st, plan);
        const auto decoded = io::llama::gather_kv(back, plan);
        const auto m = metrics::measure_kv_quality(view_of(original), view_of(decoded));
        q["snr_k_db"] = m.overall.snr_k_db;
        q["snr_v_db"] = m.overall.snr_v_db;
        q["attention_rel_error"] = m.overall.attention_rel_error;
        q["attention_kl_nats"] = m.overall.attention_kl;
        q["real_queries"] = m.real_queries;
    }
    if (opts.codec.codec_id == static_cast<std::uint16_t>(codec_family::lossless) && !exact)
        throw error("internal: lossless round trip of the llama.cpp state is not byte-exact");
    const auto qs = q.dump();
    skv = format::with_attachment(skv, stats_attachment, byte_vector(qs.begin(), qs.end()));
    write_file(out, skv);
    return {{"input_file_bytes", bytes.size()}, {"encode_seconds", summary.encode_seconds},
            {"llama_framing", std::string(io::llama::framing_name(st.kind))},
            {"coded_streams", plan.streams.size()}};
}

/// `seqkv decompress --to llama-state`: the state bytes of a .skv made by compress_llama.
inline byte_vector decompress_llama(std::span<const std::uint8_t> skv, const resource_provider& resources, unsigned threads = 1) {
    return io::llama::write_state(io::llama::decompress_state(skv, resources, threads));
}

}  // namespace seqkv::cli
