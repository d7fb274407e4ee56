// Named lossy presets and explicit flags -> lossy_config, for the CLI and the bench.
// Include this one header for everything lossy (config, runtime codec, presets, round trip);
// quality measures are in metrics/kv_metrics.hpp (a layer above the codecs).
//   lossless | int8 | fp8 | kivi2 | kivi4 | turbo2 | turbo3 | turbo4 | turbo2.5 | turbo3.5
//   | seqkv-1bit | seqkv-2bit | seqkv-step:<relative step> | bound:<relative bound> | abs:<absolute bound>
// seqkv-* presets use uniform_step + token-conditioned running mean (+ the expected-KV table
// when the model info has one) + pre-RoPE keys (when rope_theta is known) + static-table rANS coding.
#pragma once

#include <charconv>
#include <string>
#include <string_view>

#include "seqkv/codec/lossy/config.hpp"
#include "seqkv/codec/lossy/runtime.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// What presets may use about the model: RoPE base (0 = unknown), head_dim, shared table.
struct lossy_model_info {
    double rope_theta = 0;
    std::uint32_t head_dim = 0;
    const predict::expected_kv_table* table = nullptr;
    bool rope_interleaved = false;  // keys pair channel 2i with 2i + 1 (llama.cpp's Llama layout)
};

namespace detail {
inline float parse_float(std::string_view s, const char* what) {
    try {
        std::size_t used = 0;
        const float v = std::stof(std::string(s), &used);
        if (used != s.size() || !std::isfinite(v)) throw usage_error("");
        return v;
    } catch (const std::exception&) {
        throw usage_error(std::string("lossy option ") + what + ": not a number: '" + std::string(s) + "'");
    }
}
inline void enable_seqkv_prediction(lossy_config& c, const lossy_model_info& m) {
    c.quantizer = lossy_quantizer::uniform_step;
    c.predictor = lossy_predictor::token_mean;
    c.coding = lossy::symbol_coding::rans;
    if (m.rope_theta > 0 && m.head_dim >= 2) {
        c.keys_prerope = true;
        c.rope_inv_freq = predict::rope_table::inverse_frequencies(m.rope_theta, m.head_dim);
        c.rope_interleaved = m.rope_interleaved;
    }
    if (m.table) c.table_hash = m.table->content_hash();
}
}  // namespace detail

/// The config a preset names; usage_error for unknown names.
inline lossy_config lossy_preset(std::string_view name, const lossy_model_info& model = {}) {
    lossy_config c;
    c.predictor = lossy_predictor::zero;
    c.coding = lossy::symbol_coding::packed;
    auto turbo = [&](unsigned bits, float outliers) {
        c.quantizer = lossy_quantizer::turbo, c.bits = std::uint8_t(bits), c.outlier_fraction = outliers;
    };
    if (name == "lossless") c.quantizer = lossy_quantizer::lossless, c.coding = lossy::symbol_coding::adaptive;
    else if (name == "int8") c.quantizer = lossy_quantizer::int8;
    else if (name == "fp8") c.quantizer = lossy_quantizer::fp8;
    else if (name == "kivi2" || name == "kivi4") c.quantizer = lossy_quantizer::uniform_grouped, c.bits = name == "kivi2" ? 2 : 4, c.group_size = 32;
    else if (name == "turbo2") turbo(2, 0);
    else if (name == "turbo3") turbo(3, 0);
    else if (name == "turbo4") turbo(4, 0);
    else if (name == "turbo2.5") turbo(2, 0.5f);
    else if (name == "turbo3.5") turbo(3, 0.5f);
    else if (name == "seqkv-1bit" || name == "seqkv-2bit") {
        detail::enable_seqkv_prediction(c, model);
        c.target_bits = name == "seqkv-1bit" ? 1.0f : 2.0f;
    } else if (name.starts_with("seqkv-step:")) {
        detail::enable_seqkv_prediction(c, model);
        c.relative_step = detail::parse_float(name.substr(11), "seqkv-step");
    } else if (name.starts_with("bound:") || name.starts_with("abs:")) {
        detail::enable_seqkv_prediction(c, model);
        c.quantizer = lossy_quantizer::error_bounded;
        c.relative_bound = name.starts_with("bound:");
        c.error_bound = detail::parse_float(name.substr(name.find(':') + 1), "bound");
    } else {
        throw usage_error("unknown lossy preset '" + std::string(name) + "'");
    }
    c.validate();
    return c;
}

/// Applies one explicit flag (`--lossy-<key>=<value>` in the CLI). Keys: quantizer
/// (lossless|uniform|kivi|turbo|int8|fp8|bound), predictor (zero|previous|linear|anchor|
/// cross-layer|token-mean), rate (fixed|surprisal), coding (packed|adaptive|rans), step, per-channel
/// (0|1), bits, group, outliers, qjl (0|1), bound, relative-bound (0|1), anchor, prior-weight,
/// surprisal-bits, target-bits, prerope (0|1; needs model.rope_theta), table (0|1; needs model.table).
inline lossy_config apply_lossy_option(lossy_config c, std::string_view key, std::string_view value,
                                       const lossy_model_info& model = {}) {
    auto flag = [&] {
        if (value != "0" && value != "1") throw usage_error("lossy option " + std::string(key) + ": expected 0 or 1");
        return value == "1";
    };
    auto number = [&] { return detail::parse_float(value, std::string(key).c_str()); };
    auto pick = [&](std::initializer_list<std::pair<std::string_view, int>> names) {
        for (auto& [n, v] : names)
            if (n == value) return v;
        throw usage_error("lossy option " + std::string(key) + ": unknown value '" + std::string(value) + "'");
    };
    if (key == "quantizer")
        c.quantizer = lossy_quantizer(pick({{"lossless", 0}, {"uniform", 1}, {"kivi", 2}, {"turbo", 3}, {"int8", 4}, {"fp8", 5}, {"bound", 6}}));
    else if (key == "predictor")
        c.predictor = lossy_predictor(pick({{"zero", 0}, {"previous", 1}, {"linear", 2}, {"anchor", 3}, {"cross-layer", 4}, {"token-mean", 5}}));
    else if (key == "rate") c.rate = lossy_rate(pick({{"fixed", 0}, {"surprisal", 1}}));
    else if (key == "coding") c.coding = lossy::symbol_coding(pick({{"packed", 0}, {"adaptive", 1}, {"rans", 2}}));
    else if (key == "step") c.relative_step = number();
    else if (key == "per-channel") c.per_channel_step = flag();
    else if (key == "bits") c.bits = std::uint8_t(number());
    else if (key == "group") c.group_size = std::uint16_t(number());
    else if (key == "outliers") c.outlier_fraction = number();
    else if (key == "qjl") c.qjl = flag();
    else if (key == "bound") c.error_bound = number();
    else if (key == "relative-bound") c.relative_bound = flag();
    else if (key == "anchor") c.anchor_interval = std::uint32_t(number());
    else if (key == "prior-weight") c.prior_weight = number();
    else if (key == "surprisal-bits") c.surprisal_base_bits = std::uint8_t(number());
    else if (key == "target-bits") c.target_bits = number();
    else if (key == "prerope") {
        c.keys_prerope = flag();
        c.rope_inv_freq.clear();
        if (c.keys_prerope) {
            require_usage(model.rope_theta > 0 && model.head_dim >= 2, "lossy option prerope: rope_theta unknown");
            c.rope_inv_freq = predict::rope_table::inverse_frequencies(model.rope_theta, model.head_dim);
            c.rope_interleaved = model.rope_interleaved;
        }
    } else if (key == "table") {
        c.table_hash = 0;
        if (flag()) {
            require_usage(model.table != nullptr, "lossy option table: no expected-KV table given");
            c.table_hash = model.table->content_hash();
        }
    } else {
        throw usage_error("unknown lossy option '" + std::string(key) + "'");
    }
    c.validate();
    return c;
}

/// Short human-readable description ("uniform_step(step=0.5) + token_mean + prerope + table, adaptive").
inline std::string describe(const lossy_config& c) {
    static constexpr const char* quantizers[] = {"lossless", "uniform_step", "uniform_grouped", "turbo", "int8", "fp8", "error_bounded"};
    static constexpr const char* predictors[] = {"zero", "previous_token", "linear_ar", "anchor", "cross_layer", "token_mean"};
    std::string s = quantizers[int(c.quantizer)];
    if (c.quantizer == lossy_quantizer::uniform_step) s += "(step=" + std::to_string(c.relative_step) + ")";
    if (c.quantizer == lossy_quantizer::uniform_grouped || c.quantizer == lossy_quantizer::turbo)
        s += "(bits=" + std::to_string(c.bits) + (c.outlier_fraction > 0 ? "+outliers" : "") + (c.qjl ? "+qjl" : "") + ")";
    if (c.quantizer == lossy_quantizer::error_bounded)
        s += std::string("(") + (c.relative_bound ? "rel=" : "abs=") + std::to_string(c.error_bound) + ")";
    s += std::string(" + ") + predictors[int(c.predictor)];
    if (c.keys_prerope) s += c.rope_interleaved ? " + prerope keys (interleaved)" : " + prerope keys";
    if (c.table_hash) s += " + table";
    if (c.rate == lossy_rate::surprisal) s += " + surprisal(b0=" + std::to_string(c.surprisal_base_bits) + ")";
    if (c.target_bits > 0) s += " @<=" + std::to_string(c.target_bits) + " bits";
    s += c.coding == lossy::symbol_coding::packed ? ", packed" : c.coding == lossy::symbol_coding::adaptive ? ", adaptive" : ", rans";
    return s;
}

}  // namespace seqkv

namespace seqkv {

/// Result of coding a whole cache chunk by chunk with a lossy codec.
struct lossy_evaluation {
    std::uint64_t payload_bytes = 0;  // all chunk payloads (side information included)
    std::uint64_t config_bytes = 0;   // the codec config the container stores once
    std::uint64_t elements = 0;
    double bits_per_element() const { return elements ? 8.0 * double(payload_bytes + config_bytes) / double(elements) : 0.0; }
    chunk_buffer decoded;             // the whole decoded cache, tokens [0, T)
    bool decoder_matches_encoder = true;  // every chunk's decode equals the encoder's reconstruction
};

/// Encodes cache in chunks of chunk_tokens, decodes every chunk, and assembles the decoded cache.
/// token_ids / nll: whole-sequence side data (or empty).
inline lossy_evaluation lossy_round_trip(const lossy_runtime_codec& codec, const kv_cache_view& cache,
                                         std::span<const std::int32_t> token_ids, std::span<const float> nll,
                                         std::uint64_t chunk_tokens = 1024) {
    require_usage(chunk_tokens >= 1, "lossy_round_trip: chunk_tokens must be >= 1");
    const kv_layout layout = cache.layout;
    lossy_evaluation r;
    r.config_bytes = codec.config().to_bytes().size();
    r.elements = layout.elements_per_token() * layout.tokens;
    r.decoded = chunk_buffer::for_layout(layout, layout.tokens);
    const std::size_t es = dtype_size(layout.type);
    for (std::uint64_t begin = 0; begin < layout.tokens; begin += chunk_tokens) {
        const std::uint64_t end = std::min<std::uint64_t>(layout.tokens, begin + chunk_tokens);
        chunk_input in{&cache, begin, end, {}, {}};
        if (token_ids.size() == layout.tokens) in.token_ids = token_ids.subspan(begin, end - begin);
        if (nll.size() == layout.tokens) in.nll = nll.subspan(begin, end - begin);
        chunk_buffer recon;
        const byte_vector payload = codec.encode(in, &recon);
        r.payload_bytes += payload.size();
        chunk_input side = in;
        side.cache = nullptr;
        chunk_buffer out = chunk_buffer::for_layout(layout, end - begin);
        codec.decode(payload, side, out);
        if (out.bytes != recon.bytes) r.decoder_matches_encoder = false;
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value})
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h) {
                    const std::size_t row = std::size_t(layout.head_dim) * es;
                    const auto src = out.block(l, kind).subspan(std::size_t(h) * (end - begin) * row, (end - begin) * row);
                    auto dst = r.decoded.block(l, kind).subspan((std::size_t(h) * layout.tokens + begin) * row, src.size());
                    std::copy(src.begin(), src.end(), dst.begin());
                }
    }
    return r;
}

}  // namespace seqkv

SEQKV_FP_STRICT_END
