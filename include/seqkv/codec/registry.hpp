// Maps the runtime codec configuration a file records to a compile-time composed codec.
#pragma once

#include <bit>
#include <cmath>
#include <locale>
#include <sstream>
#include <memory>
#include <string>

#include "seqkv/core/any_codec.hpp"
#include "seqkv/core/exact.hpp"
#include "seqkv/codec/lossless/codec.hpp"
#include "seqkv/codec/lossy/presets.hpp"
#include "seqkv/codec/tokens/token_codec.hpp"
#include "seqkv/format/container.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Codec family ids stored in the preamble.
enum class codec_family : std::uint16_t { lossless = 1, lossy = 2, tokens = 3 };

/// Configuration of the lossless codec.
inline format::codec_config lossless_config(const lossless::plane_options& o = {}) {
    require_usage(o.max_channel_classes >= 1 && o.max_channel_classes <= 255, "lossless: 1..255 channel classes");
    require_usage(o.min_coding_gain >= 0 && o.min_coding_gain < 1, "lossless: min_coding_gain in [0, 1)");
    require_usage(!o.rope || lossless::rope::valid(*o.rope), "lossless: rope theta in [1, 2^60], style rotate_half or interleaved");
    format::codec_config c{static_cast<std::uint16_t>(codec_family::lossless),
                           {static_cast<std::uint8_t>(o.max_channel_classes),
                            static_cast<std::uint8_t>((o.try_xor_previous_token ? 1 : 0) | (o.try_same_token ? 2 : 0) | (o.try_sign_map ? 4 : 0)),
                            static_cast<std::uint8_t>(o.min_coding_gain * 256.0)}};
    if (o.rope) {  // u8 style, f64 theta (little-endian bits)
        c.params.push_back(static_cast<std::uint8_t>(o.rope->style));
        const auto bits = std::bit_cast<std::uint64_t>(o.rope->theta);
        for (int i = 0; i < 8; ++i) c.params.push_back(static_cast<std::uint8_t>(bits >> (8 * i)));
    }
    return c;
}

/// Configuration of a lossy codec (see lossy_preset / apply_lossy_option).
inline format::codec_config lossy_codec_config(const lossy_config& c) {
    return {static_cast<std::uint16_t>(codec_family::lossy), c.to_bytes()};
}

namespace detail {
/// True when a stored codec configuration fits a hybrid mode: lossless for hybrid; for
/// hybrid_bounded the lossy error-bounded quantizer with an absolute bound <= the file's bound (so
/// a stored chunk keeps the file's guarantee).
inline bool hybrid_stored_fits(tokens::mode m, float bound, const format::codec_config& stored) {
    const auto family = static_cast<codec_family>(stored.codec_id);
    if (m == tokens::mode::hybrid) return family == codec_family::lossless;
    if (family != codec_family::lossy) return false;
    const lossy_config c = lossy_config::from_bytes(stored.params);  // format_error when malformed
    return c.quantizer == lossy_quantizer::error_bounded && !c.relative_bound && c.error_bound <= bound;
}
}  // namespace detail

/// Configuration of token mode under a model (the file names the model as its model_weights
/// resource): params = u8 mode | u64 the model's content hash | [bounded modes 3, 5] f32 bound |
/// [hybrid modes 4, 5] f32 bandwidth, compute, stored_decode, residual_decode (tokens::hybrid_cost)
/// | u16 the stored codec's family | its params (the rest); little-endian. `bound` is the bounded
/// modes' alone (finite, > 0); `stored` the hybrid modes' alone: a lossless configuration for
/// hybrid, a lossy one for hybrid_bounded (the error-bounded quantizer with the same bound:
/// tokens_hybrid_config builds both).
inline format::codec_config tokens_config(tokens::mode m, const model::language_model& model, float bound = 0,
                                          const format::codec_config* stored = nullptr, const tokens::hybrid_cost& cost = {}) {
    require_usage(tokens::is_bounded(m) ? (std::isfinite(bound) && bound > 0) : bound == 0,
                  "tokens_config: a bound (finite, > 0) is the bounded modes' alone");
    require_usage(std::uint8_t(m) <= 5, "tokens_config: unknown mode");
    require_usage(tokens::is_hybrid(m) == (stored != nullptr), "tokens_config: a stored codec is the hybrid modes' alone (and they need one)");
    format::codec_config c{static_cast<std::uint16_t>(codec_family::tokens), {static_cast<std::uint8_t>(m)}};
    const std::uint64_t h = model.content_hash();
    for (int i = 0; i < 8; ++i) c.params.push_back(static_cast<std::uint8_t>(h >> (8 * i)));
    auto put_f32 = [&c](float v) {
        const auto b = std::bit_cast<std::uint32_t>(v);
        for (int i = 0; i < 4; ++i) c.params.push_back(static_cast<std::uint8_t>(b >> (8 * i)));
    };
    if (tokens::is_bounded(m)) put_f32(bound);
    if (stored) {
        require_usage(cost.valid(), "tokens_config: hybrid costs must be > 0");
        require_usage(detail::hybrid_stored_fits(m, bound, *stored), "tokens_config: hybrid stores chunks with the lossless codec, hybrid_bounded with the lossy "
                            "error-bounded one at an absolute bound <= the file's");
        for (float v : {cost.bandwidth, cost.compute, cost.stored_decode, cost.residual_decode}) put_f32(v);
        c.params.push_back(static_cast<std::uint8_t>(stored->codec_id));
        c.params.push_back(static_cast<std::uint8_t>(stored->codec_id >> 8));
        c.params.insert(c.params.end(), stored->params.begin(), stored->params.end());
    }
    return c;
}

/// Registers a language model under its content hash (what token-mode configs name).
inline resource_provider& add_language_model(resource_provider& r, std::shared_ptr<const model::language_model> m) {
    if (m) {
        const std::uint64_t hash = m->content_hash();
        r.add(resource_kind::model_weights, hash, std::move(m));
    }
    return r;
}

namespace detail {
struct tokens_params {
    tokens::mode mode;
    std::uint64_t model_hash;
    float bound;                          // bounded modes only
    tokens::hybrid_cost cost;             // hybrid modes only
    format::codec_config stored;          // hybrid modes only
};
inline tokens_params parse_tokens_config(const format::codec_config& config) {
    const auto& p = config.params;
    if (p.empty() || p[0] > 5) throw format_error("token codec: bad parameters");
    const auto m = static_cast<tokens::mode>(p[0]);
    const std::size_t fixed = 9 + (tokens::is_bounded(m) ? 4 : 0);
    if (tokens::is_hybrid(m) ? p.size() < fixed + 16 + 2 : p.size() != fixed) throw format_error("token codec: bad parameters");
    std::uint64_t h = 0;
    for (int i = 0; i < 8; ++i) h |= std::uint64_t(p[1 + i]) << (8 * i);
    auto f32_at = [&p](std::size_t at) {
        std::uint32_t b = 0;
        for (int i = 0; i < 4; ++i) b |= std::uint32_t(p[at + i]) << (8 * i);
        return std::bit_cast<float>(b);
    };
    tokens_params out{m, h, 0, {}, {}};
    if (tokens::is_bounded(m)) {
        out.bound = f32_at(9);
        if (!(std::isfinite(out.bound) && out.bound > 0)) throw format_error("token codec: bad bound");
    }
    if (tokens::is_hybrid(m)) {
        out.cost = {f32_at(fixed), f32_at(fixed + 4), f32_at(fixed + 8), f32_at(fixed + 12)};
        if (!out.cost.valid()) throw format_error("token codec: bad hybrid costs");
        out.stored.codec_id = std::uint16_t(p[fixed + 16] | (p[fixed + 17] << 8));
        out.stored.params.assign(p.begin() + std::ptrdiff_t(fixed + 18), p.end());
        if (!hybrid_stored_fits(m, out.bound, out.stored)) throw format_error("token codec: bad stored codec");
    }
    return out;
}
inline std::string describe_tokens_mode(const tokens_params& p) {
    switch (p.mode) {
        case tokens::mode::tokens: return "tokens (KV recomputed by the model)";
        case tokens::mode::corrected: return "tokens + correction (bit-exact)";
        case tokens::mode::residual: return "draft residual (ids + batched recompute + residual; bit-exact)";
        case tokens::mode::hybrid:
        case tokens::mode::hybrid_bounded: {
            std::ostringstream s;
            s.imbue(std::locale::classic());
            s << "hybrid " << (p.mode == tokens::mode::hybrid ? "(bit-exact)" : "within ") ;
            if (p.mode == tokens::mode::hybrid_bounded) s << p.bound;
            s << ": per chunk the cheapest of stored, draft residual, recompute at " << p.cost.bandwidth / 1e6 << " MB/s, "
              << p.cost.compute / 1e9 << " GFLOP/s";
            return s.str();
        }
        default: {
            std::ostringstream s;
            s.imbue(std::locale::classic());
            s << "draft residual within " << p.bound << " (ids + batched recompute + quantized residual)";
            return s.str();
        }
    }
}
}  // namespace detail

/// One-line description of a configuration, without building the codec (no resources needed).
inline std::string describe_codec(const format::codec_config& config) {
    if (config.codec_id == static_cast<std::uint16_t>(codec_family::lossless))
        return config.params.size() == 12 ? "lossless (rope-aware)" : "lossless";
    if (config.codec_id == static_cast<std::uint16_t>(codec_family::lossy))
        return "lossy: " + describe(lossy_config::from_bytes(config.params));
    if (config.codec_id == static_cast<std::uint16_t>(codec_family::tokens)) {
        const auto p = detail::parse_tokens_config(config);
        return detail::describe_tokens_mode(p) + " under " + describe(resource_ref{resource_kind::model_weights, p.model_hash, ""});
    }
    return "unknown codec family " + std::to_string(config.codec_id);
}

/// Registers an expected-KV table under its content hash (what lossy configs name).
inline resource_provider& add_expected_kv_table(resource_provider& r, std::shared_ptr<const predict::expected_kv_table> table) {
    if (table) {
        const std::uint64_t hash = table->content_hash();  // before the move: argument order is unspecified
        r.add(resource_kind::expected_kv_table, hash, std::move(table));
    }
    return r;
}

/// Builds the codec a configuration names; Backend selects the kernels, executor runs the block
/// workers (null: the caller's thread; any thread count gives the same bytes). Throws
/// format_error for an unknown family or malformed parameters, resource_error when a resource
/// the configuration names is missing from `resources`.
template <backend::Backend Backend = backend::simd>
any_chunk_codec make_codec(const format::codec_config& config, const resource_provider& resources = {},
                           std::shared_ptr<backend::thread_pool> executor = nullptr) {
    require_usage(!fp_contraction_active(),
                  "make_codec: this build fuses floating-point multiply-adds inside seqkv (clang's -ffp-contract=fast "
                  "ignores seqkv's pragma); build with -ffp-contract=off (the seqkv CMake target's flag) or on");
    switch (static_cast<codec_family>(config.codec_id)) {
        case codec_family::lossless: {
            if ((config.params.size() != 3 && config.params.size() != 12) || config.params[0] == 0 || config.params[1] > 7)
                throw format_error("lossless codec: bad parameters");
            lossless::plane_options o;
            o.max_channel_classes = config.params[0];
            o.try_xor_previous_token = config.params[1] & 1;
            o.try_same_token = config.params[1] & 2;
            o.try_sign_map = config.params[1] & 4;
            o.min_coding_gain = config.params[2] / 256.0;
            if (config.params.size() == 12) {
                std::uint64_t bits = 0;
                for (int i = 0; i < 8; ++i) bits |= std::uint64_t(config.params[4 + i]) << (8 * i);
                o.rope = lossless::rope::parameters{std::bit_cast<double>(bits), static_cast<lossless::rope::pairing>(config.params[3])};
                if (!lossless::rope::valid(*o.rope)) throw format_error("lossless codec: bad rope parameters");
            }
            return any_chunk_codec::wrap(lossless_codec<Backend>(o, std::move(executor)), std::string("lossless (") + Backend::name + ")");
        }
        case codec_family::lossy: {
            lossy_config c = lossy_config::from_bytes(config.params);
            std::string description = "lossy: " + describe(c);
            std::shared_ptr<const predict::expected_kv_table> table;
            std::vector<resource_ref> needs;
            if (c.table_hash != 0) {
                needs.push_back({resource_kind::expected_kv_table, c.table_hash, ""});
                table = resources.require<predict::expected_kv_table>(needs.back());
            }
            auto codec = any_chunk_codec::wrap(lossy::runtime_codec<Backend>(std::move(c), std::move(table), std::move(executor)),
                                               std::move(description));
            codec.resources = std::move(needs);
            return codec;
        }
        case codec_family::tokens: {
            const auto p = detail::parse_tokens_config(config);
            resource_ref need{resource_kind::model_weights, p.model_hash, ""};
            auto model = resources.require<model::language_model>(need);
            if (model->content_hash() != p.model_hash) throw resource_error("token codec: the provider's model has another content hash");
            need.name = model->name();
            const unsigned threads = executor ? unsigned(executor->threads()) : 1u;
            std::shared_ptr<const any_chunk_codec> stored;
            std::vector<resource_ref> needs{need};
            if (tokens::is_hybrid(p.mode)) {  // lossless or lossy (checked by the parser): never nested token mode
                auto inner = make_codec<Backend>(p.stored, resources, executor);
                needs.insert(needs.end(), inner.resources.begin(), inner.resources.end());
                stored = std::make_shared<const any_chunk_codec>(std::move(inner));
            }
            auto codec = any_chunk_codec::wrap(tokens::token_codec(std::move(model), p.mode, threads, p.bound, std::move(stored), p.cost),
                                               describe_codec(config));
            codec.resources = std::move(needs);
            return codec;
        }
        default:
            throw format_error("unknown codec family " + std::to_string(config.codec_id));
    }
}

#ifdef SEQKV_SEPARATE_RUNTIME
// Compiled once in the seqkv::runtime library (src/registry.cpp, the codecs in src/lossless.cpp and
// src/lossy_*.cpp): an includer that calls make_codec / compress / decompress instantiates no codec.
extern template any_chunk_codec make_codec<backend::simd>(const format::codec_config&, const resource_provider&,
                                                          std::shared_ptr<backend::thread_pool>);
extern template any_chunk_codec make_codec<backend::scalar>(const format::codec_config&, const resource_provider&,
                                                            std::shared_ptr<backend::thread_pool>);
#endif

}  // namespace seqkv

SEQKV_FP_STRICT_END
