// Presets by name: the compress_options the CLI's `--preset NAME` uses, for library users.
//
//   auto m = seqkv::model_params_from(file_metadata, cache.layout);  // or {.head_dim, .rope_theta, .rope_style}
//   auto skv = seqkv::compress(cache, seqkv::preset("lossless", m), token_ids);
//
// Names: lossless (default; bit-exact, RoPE-aware when rope_theta is known), seqkv-1bit,
// seqkv-2bit, seqkv-step:<s>, bound:<rel>, abs:<abs>, kivi2, kivi4, turbo2, turbo2.5, turbo3,
// turbo3.5, turbo4, int8, fp8 (docs/LOSSY.md), tokens, tokens-exact, draft, draft-abs:<abs>,
// hybrid, hybrid-abs:<abs> (token mode, draft-model residuals and the per-chunk choice by cost;
// need a model, docs/TOKEN_MODE.md). Standard library only (no safetensors reader: metadata comes as a map).
#pragma once

#include <cctype>
#include <charconv>
#include <cmath>
#include <locale>
#include <optional>
#include <sstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/api.hpp"
#include "seqkv/codec/lossy/presets.hpp"
#include "seqkv/codec/registry.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// What presets need to know about the model that produced the KV.
struct model_params {
    std::uint32_t head_dim = 0;              // lossy presets: the cache's head_dim (required)
    double rope_theta = 0;                   // RoPE base; 0: unknown (no RoPE-aware prediction)
    std::string rope_style = "rotate_half";  // rotate_half | neox | interleaved | gptj; anything else: no RoPE use
};

/// Optional inputs of a preset besides its name and the model's parameters.
struct preset_inputs {
    std::shared_ptr<const predict::expected_kv_table> table;  // seqkv-* presets: token-conditioned prior
    std::shared_ptr<const model::language_model> model;       // tokens / tokens-exact: the reference model; draft*: the draft
    std::vector<std::string> options;                         // KEY=VALUE lossy settings applied after the preset
    std::uint32_t chunk_tokens = 0;                           // 0: the preset's own chunk size
    unsigned threads = 1;                                     // codec threads (0: every core; same bytes)
    tokens::hybrid_cost cost;                                 // hybrid*: the decoder's bandwidth and compute
};

/// Every name preset() accepts (parameterized ones with their parameter placeholder).
inline std::vector<std::string> preset_names() {
    return {"lossless", "seqkv-1bit", "seqkv-2bit", "seqkv-step:<s>", "bound:<rel>", "abs:<abs>", "kivi2", "kivi4", "turbo2",
            "turbo2.5", "turbo3", "turbo3.5", "turbo4", "int8", "fp8", "tokens", "tokens-exact", "draft", "draft-abs:<abs>",
            "hybrid", "hybrid-abs:<abs>"};
}

namespace detail {
/// A number from metadata text: decimal or scientific, surrounding whitespace and a leading '+'
/// allowed, independent of the C locale; nullopt when the text is not one.
inline std::optional<double> parse_number(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    if (s.empty()) return std::nullopt;
    double v = 0;
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
#else  // standard libraries without floating-point from_chars
    std::istringstream in{std::string(s)};
    in.imbue(std::locale::classic());
    if (!(in >> v) || in.peek() != std::char_traits<char>::eof()) return std::nullopt;
#endif
    return v;
}
}  // namespace detail

/// The model parameters a KV dump's metadata states (`rope_theta`, `rope_style`; format_error when
/// rope_theta is not a number; a non-positive one counts as unknown), with head_dim from the cache's layout.
inline model_params model_params_from(const std::map<std::string, std::string>& metadata, const kv_layout& layout) {
    model_params m;
    m.head_dim = layout.head_dim;
    if (const auto it = metadata.find("rope_theta"); it != metadata.end()) {
        const auto v = detail::parse_number(it->second);
        if (!v) throw format_error("metadata rope_theta is not a number: '" + it->second + "'");
        m.rope_theta = *v > 0 && std::isfinite(*v) ? *v : 0;  // 0, negative, inf: unknown
    }
    if (const auto it = metadata.find("rope_style"); it != metadata.end()) m.rope_style = it->second;
    return m;
}

/// True for the token-mode presets (tokens, tokens-exact, draft, draft-abs:<abs>, hybrid,
/// hybrid-abs:<abs>: they need a model, not head_dim).
inline bool is_token_preset(std::string_view name) {
    return name == "tokens" || name == "tokens-exact" || name == "draft" || name.starts_with("draft-abs:") || name == "hybrid" ||
           name.starts_with("hybrid-abs:");
}

namespace detail {
/// The lossless preset's plane options: RoPE rotation prediction when m names a usable rope.
inline lossless::plane_options lossless_options_for(const model_params& m) {
    lossless::plane_options lo;
    const bool half = m.rope_style == "rotate_half" || m.rope_style == "neox";
    const bool interleaved = m.rope_style == "interleaved" || m.rope_style == "gptj";
    if (m.rope_theta > 0 && (half || interleaved)) {
        lossless::rope::parameters p;
        p.theta = m.rope_theta;
        p.style = half ? lossless::rope::pairing::rotate_half : lossless::rope::pairing::interleaved;
        if (lossless::rope::valid(p)) lo.rope = p;  // otherwise stay lossless without the rotation predictor
    }
    return lo;
}
/// A bound parsed from a preset name's parameter (positive, finite as f32).
inline float preset_bound(std::string_view name, std::size_t at) {
    const auto b = parse_number(name.substr(at));
    if (!b || !(*b > 0) || !(*b <= 3.0e38))
        throw usage_error("preset " + std::string(name.substr(0, at)) + "<abs> needs a positive finite bound: " + std::string(name));
    return float(*b);
}
}  // namespace detail

/// True for every name preset() accepts (parameterized ones with any parameter text).
inline bool is_preset_name(std::string_view name) {
    for (const std::string& n : preset_names()) {
        const auto colon = n.find(':');
        if (colon == std::string::npos ? name == n : name.starts_with(std::string_view(n).substr(0, colon + 1))) return true;
    }
    return false;
}

/// The compress_options of a named preset (usage_error for unknown names or missing inputs).
/// lossless: 512-token chunks, and RoPE rotation prediction of repeated tokens' keys when
/// rope_theta is known; lossy presets: 1024-token chunks (token-conditioned prediction needs
/// history inside a chunk); tokens presets: 512-token chunks under `in.model`.
inline compress_options preset(std::string_view name, const model_params& m = {}, const preset_inputs& in = {}) {
    if (!is_preset_name(name)) {
        std::string known;
        for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
        throw usage_error("unknown preset '" + std::string(name) + "' (presets: " + known + ")");
    }
    compress_options o;
    o.threads = in.threads;
    if (is_token_preset(name)) {
        if (!in.model) throw usage_error("preset " + std::string(name) + " needs a model (the model that produced the KV, or its reference model)");
        if (!in.options.empty()) throw usage_error("preset " + std::string(name) + " takes no lossy options");
        if (name.starts_with("draft-abs:")) {
            o.codec = tokens_config(tokens::mode::residual_bounded, *in.model, detail::preset_bound(name, 10));
        } else if (name == "hybrid") {
            const auto stored = lossless_config(detail::lossless_options_for(m));
            o.codec = tokens_config(tokens::mode::hybrid, *in.model, 0, &stored, in.cost);
        } else if (name.starts_with("hybrid-abs:")) {
            const float b = detail::preset_bound(name, 11);
            lossy_model_info info;  // the abs:<b> preset for the model's head_dim (and the file's rope)
            info.head_dim = in.model->kv_shape().head_dim;
            const bool half = m.rope_style == "rotate_half" || m.rope_style == "neox";
            info.rope_interleaved = m.rope_style == "interleaved" || m.rope_style == "gptj";
            info.rope_theta = half || info.rope_interleaved ? m.rope_theta : 0;
            lossy_config c = lossy_preset("abs:1", info);
            c.error_bound = b;
            c.validate();
            const auto stored = lossy_codec_config(c);
            o.codec = tokens_config(tokens::mode::hybrid_bounded, *in.model, b, &stored, in.cost);
        } else {
            const auto m = name == "tokens" ? tokens::mode::tokens : name == "draft" ? tokens::mode::residual : tokens::mode::corrected;
            o.codec = tokens_config(m, *in.model);
        }
        add_language_model(o.resources, in.model);
        o.chunk_tokens = in.chunk_tokens ? in.chunk_tokens : 512;
        return o;
    }
    add_expected_kv_table(o.resources, in.table);
    const bool half = m.rope_style == "rotate_half" || m.rope_style == "neox";
    const bool interleaved = m.rope_style == "interleaved" || m.rope_style == "gptj";
    if (name == "lossless" && in.options.empty()) {
        o.codec = lossless_config(detail::lossless_options_for(m));
        o.chunk_tokens = 512;  // beats every peer on bf16 and fp8 at 512 (bench_lossless -c512 rows)
    } else {
        if (name == "lossless") {
            // Explicit settings on the lossless preset only make sense with a lossy quantizer: a
            // step or a bit width under the lossless quantizer would be ignored silently.
            bool quantizer = false;
            for (const auto& kv : in.options) quantizer = quantizer || kv.starts_with("quantizer=");
            if (!quantizer)
                throw usage_error("lossy options need a lossy preset (e.g. seqkv-step:0.3, kivi4) or quantizer=...; "
                                  "under the lossless preset nothing is quantized, so a step, bits or a bound would be ignored");
        }
        if (m.head_dim == 0) throw usage_error("preset " + std::string(name) + " needs the cache's head_dim (model_params)");
        lossy_model_info model;
        model.head_dim = m.head_dim;
        model.rope_theta = half || interleaved ? m.rope_theta : 0;
        model.rope_interleaved = interleaved;
        model.table = in.table.get();
        lossy_config c = lossy_preset(name, model);
        for (const auto& kv : in.options) {
            const auto eq = kv.find('=');
            if (eq == std::string::npos) throw usage_error("lossy option: expected KEY=VALUE, got '" + kv + "'");
            c = apply_lossy_option(c, std::string_view(kv).substr(0, eq), std::string_view(kv).substr(eq + 1), model);
        }
        o.codec = lossy_codec_config(c);
        o.chunk_tokens = 1024;
    }
    if (in.chunk_tokens) o.chunk_tokens = in.chunk_tokens;
    return o;
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
