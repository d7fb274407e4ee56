// lossy::runtime_codec<Backend>: the ChunkCodec the registry builds for a runtime lossy_config. It
// maps the config's quantizer, predictor and symbol coding to the compile-time composed
// seqkv::codec<Quantizer, rope_domain<Predictor>, coder, Backend, runtime_rate> — the one path
// every lossy file takes — and adds the per-chunk rate search.
// Payload: u8 flags (bit 0: a per-chunk relative step follows as f32), then the codec's payload.
// With config.target_bits > 0 (uniform_step only) the encoder bisects the relative step per chunk
// until the payload fits target_bits per element, and stores the step it chose.
#pragma once

#include <memory>

#include "seqkv/backend/backend.hpp"
#include "seqkv/codec/codec.hpp"
#include "seqkv/codec/lossy/config.hpp"
#include "seqkv/predict/linear.hpp"
#include "seqkv/predict/token_mean.hpp"
#include "seqkv/quant/error_bounded.hpp"
#include "seqkv/quant/lossless.hpp"
#include "seqkv/quant/scalar_cast.hpp"
#include "seqkv/quant/turbo.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// Fixed or surprisal rate chosen at run time (one template instantiation for both).
struct runtime_rate {
    bool surprisal = false;
    predict::surprisal_rate rule{4};
    void row_shifts(std::span<const float> nll, std::span<std::int32_t> shifts) const {
        if (surprisal) rule.row_shifts(nll, shifts);
        else predict::fixed_rate{}.row_shifts(nll, shifts);
    }
};
static_assert(predict::RatePolicy<runtime_rate>);

namespace lossy {

/// The lossy codec for any runtime configuration; Backend picks kernels and executor type.
template <backend::Backend Backend = backend::simd>
class runtime_codec {
public:
    /// table must be the expected-KV table whose hash the config names (or null when it names none);
    /// executor runs the block workers (null: the caller's thread only).
    explicit runtime_codec(lossy_config config, std::shared_ptr<const predict::expected_kv_table> table = nullptr,
                           std::shared_ptr<backend::thread_pool> executor = nullptr)
        : config_(std::move(config)), table_(std::move(table)), executor_(std::move(executor)) {
        config_.validate();
        if (config_.table_hash != 0) {
            require_usage(table_ != nullptr, "lossy codec: config references an expected-KV table; none given");
            require_usage(table_->content_hash() == config_.table_hash, "lossy codec: expected-KV table hash mismatch");
        } else {
            table_.reset();
        }
        if (config_.keys_prerope) rope_ = std::make_shared<predict::rope_table>(config_.rope_inv_freq, config_.rope_interleaved);
    }
    const lossy_config& config() const { return config_; }

    byte_vector encode(const chunk_input& in) const { return encode(in, nullptr); }
    /// Encodes and (if recon) writes the exact reconstruction the decoder will produce.
    byte_vector encode(const chunk_input& in, chunk_buffer* recon) const;
    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        require_usage(out.bytes.size() == out.layout.total_bytes(), "lossy codec: output buffer not sized for the chunk");
        decode_into(payload, in, chunk_destination::rows_of(out, 0, out.layout.tokens));
    }
    /// Same, straight into rows of a larger buffer (the container's reader uses it: no staging chunk).
    void decode_into(std::span<const std::uint8_t> payload, const chunk_input& in, const chunk_destination& out) const;
    /// Framing only: flags (+ step), the payload version, then per (layer, K/V) a varint-length
    /// side stream and a varint-length symbol stream, filling the payload exactly.
    void check_payload(std::span<const std::uint8_t> payload, const kv_layout& L) const {
        byte_reader r(payload, "lossy chunk");
        const auto flags = r.get<std::uint8_t>();
        require_format(flags <= 1, "lossy chunk: unknown flags");
        if (flags & 1) (void)r.get<std::uint32_t>();
        (void)r.get<std::uint8_t>();  // payload version (checked by the decoder)
        for (std::uint64_t s = 0; s < 4ull * L.layers; ++s) (void)r.get_bytes(coding::get_varint(r, r.remaining()));
        require_format(r.at_end(), "lossy chunk: trailing bytes");
    }

    /// Calls f(codec) with the concrete codec for this config (relative step overridden).
    template <class Result, class F>
    Result visit(float relative_step, F&& f) const {
        switch (config_.coding) {
            case symbol_coding::packed: return visit_coder<packed_symbols, Result>(relative_step, f);
            case symbol_coding::adaptive: return visit_coder<adaptive_range_symbols, Result>(relative_step, f);
            case symbol_coding::rans: return visit_coder<grouped_rans_symbols<true>, Result>(relative_step, f);
        }
        throw usage_error("lossy codec: unknown symbol coding");
    }

private:
    // encode()/decode() with the symbol coder fixed: one unit of explicit instantiation per coder
    // (the seqkv::runtime library compiles each in its own source file, src/lossy_*.cpp).
    template <class Coder>
    byte_vector encode_with(float relative_step, const chunk_input& in, chunk_buffer* recon) const;
    template <class Coder>
    void decode_with(float relative_step, std::span<const std::uint8_t> payload, const chunk_input& in, const chunk_destination& out) const;
    byte_vector encode_step(float relative_step, const chunk_input& in, chunk_buffer* recon) const {
        switch (config_.coding) {
            case symbol_coding::packed: return encode_with<packed_symbols>(relative_step, in, recon);
            case symbol_coding::adaptive: return encode_with<adaptive_range_symbols>(relative_step, in, recon);
            case symbol_coding::rans: return encode_with<grouped_rans_symbols<true>>(relative_step, in, recon);
        }
        throw usage_error("lossy codec: unknown symbol coding");
    }
    void decode_step(float relative_step, std::span<const std::uint8_t> payload, const chunk_input& in, const chunk_destination& out) const {
        switch (config_.coding) {
            case symbol_coding::packed: return decode_with<packed_symbols>(relative_step, payload, in, out);
            case symbol_coding::adaptive: return decode_with<adaptive_range_symbols>(relative_step, payload, in, out);
            case symbol_coding::rans: return decode_with<grouped_rans_symbols<true>>(relative_step, payload, in, out);
        }
        throw usage_error("lossy codec: unknown symbol coding");
    }
    template <class Coder, class Result, class F>
    Result visit_coder(float relative_step, F& f, bool inputs_checked = false) const {
        switch (config_.quantizer) {
            case lossy_quantizer::lossless: return with_quantizer<Coder, Result>(quant::lossless{}, f, inputs_checked);
            case lossy_quantizer::uniform_step:
                return with_quantizer<Coder, Result>(quant::uniform_step(relative_step, config_.per_channel_step), f, inputs_checked);
            case lossy_quantizer::uniform_grouped:
                return with_quantizer<Coder, Result>(quant::uniform_grouped(config_.bits, config_.group_size, config_.key_axis,
                                                                            config_.value_axis, config_.channel_contexts), f, inputs_checked);
            case lossy_quantizer::turbo:
                return with_quantizer<Coder, Result>(quant::turbo(config_.bits, config_.outlier_fraction, config_.qjl, config_.seed), f, inputs_checked);
            case lossy_quantizer::int8: return with_quantizer<Coder, Result>(quant::int8_absmax{}, f, inputs_checked);
            case lossy_quantizer::fp8: return with_quantizer<Coder, Result>(quant::fp8_cast{}, f, inputs_checked);
            case lossy_quantizer::error_bounded:
                return with_quantizer<Coder, Result>(quant::error_bounded(config_.error_bound, config_.relative_bound), f, inputs_checked);
        }
        throw usage_error("lossy codec: unknown quantizer");
    }
    template <class Coder, class Result, class Q, class F>
    Result with_quantizer(Q q, F& f, bool inputs_checked) const {
        switch (config_.predictor) {
            case lossy_predictor::zero: return make_with<Result, Coder>(std::move(q), predict::zero_predictor{}, f, inputs_checked);
            case lossy_predictor::previous_token: return make_with<Result, Coder>(std::move(q), predict::previous_token{}, f, inputs_checked);
            case lossy_predictor::linear_ar: return make_with<Result, Coder>(std::move(q), predict::linear_ar{}, f, inputs_checked);
            case lossy_predictor::anchor: return make_with<Result, Coder>(std::move(q), predict::anchor_delta(config_.anchor_interval), f, inputs_checked);
            case lossy_predictor::cross_layer: return make_with<Result, Coder>(std::move(q), predict::cross_layer{}, f, inputs_checked);
            case lossy_predictor::token_mean: return make_with<Result, Coder>(std::move(q), predict::token_mean(config_.prior_weight), f, inputs_checked);
        }
        throw usage_error("lossy codec: unknown predictor");
    }
    template <class Result, class Coder, class Q, class P, class F>
    Result make_with(Q q, P p, F& f, bool inputs_checked) const {
        // inputs_checked: only encode_with, after encode() checked the chunk once; visit() users get the check.
        codec_options o{rope_.get(), table_.get(), executor_, inputs_checked};
        runtime_rate rate{config_.rate == lossy_rate::surprisal, predict::surprisal_rate(config_.surprisal_base_bits)};
        return f(seqkv::codec<Q, predict::rope_domain<P>, Coder, Backend, runtime_rate>(
            std::move(q), predict::rope_domain<P>(std::move(p)), rate, std::move(o)));
    }
    static byte_vector with_prefix(std::uint8_t flags, float step, byte_vector inner) {
        byte_vector out{flags};
        if (flags & 1) {
            byte_writer w(out);
            w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(step));
        }
        out.insert(out.end(), inner.begin(), inner.end());
        return out;
    }

    lossy_config config_;
    std::shared_ptr<const predict::expected_kv_table> table_;
    std::shared_ptr<const predict::rope_table> rope_;
    std::shared_ptr<backend::thread_pool> executor_;
};

template <backend::Backend Backend>
byte_vector runtime_codec<Backend>::encode(const chunk_input& in, chunk_buffer* recon) const {
    require_usage(in.cache != nullptr && in.end >= in.begin && in.end <= in.cache->layout.tokens, "lossy codec: bad chunk input");
    detail::require_finite(*in.cache, in.begin, in.end, in.position_base);  // once, not per bisection step
    if (config_.target_bits <= 0 || config_.quantizer != lossy_quantizer::uniform_step)
        return with_prefix(0, 0, encode_step(config_.relative_step, in, recon));
    // Bisect log2(step) for the smallest step whose payload fits the target.
    const double elements = double(in.token_count()) * double(in.cache->layout.elements_per_token());
    const double budget_bytes = config_.target_bits * elements / 8.0 - 5.0;  // 5: flags + step prefix
    float lo = -12, hi = 8;  // log2 of the relative step
    byte_vector best;
    float best_step = 0;
    for (int it = 0; it < 12; ++it) {
        const float mid = 0.5f * (lo + hi);
        const float step = quant::round_mantissa(std::exp2(mid), quant::uniform_step::step_mantissa_bits);
        byte_vector p = encode_step(step, in, nullptr);
        if (double(p.size()) <= budget_bytes) {
            hi = mid, best = std::move(p), best_step = step;
        } else {
            lo = mid;
        }
    }
    // No step fits: the chunk is so small that its fixed headers exceed the budget (one token, a
    // few heads). Coarser steps would only round everything to the prediction, so code it at the
    // configuration's own step instead of the coarsest one.
    if (best.empty()) best_step = quant::round_mantissa(config_.relative_step, quant::uniform_step::step_mantissa_bits);
    return with_prefix(1, best_step, encode_step(best_step, in, recon));
}

template <backend::Backend Backend>
void runtime_codec<Backend>::decode_into(std::span<const std::uint8_t> payload, const chunk_input& in, const chunk_destination& out) const {
    byte_reader r(payload, "lossy chunk");
    const auto flags = r.get<std::uint8_t>();
    require_format(flags <= 1, "lossy chunk: unknown flags");
    float step = config_.relative_step;
    if (flags & 1) {
        step = std::bit_cast<float>(r.get<std::uint32_t>());
        require_format(std::isfinite(step) && step >= 0x1p-20f && step <= 0x1p20f &&
                           quant::round_mantissa(step, quant::uniform_step::step_mantissa_bits) == step,
                       "lossy chunk: bad relative step");
    }
    const auto rest = payload.subspan(r.position());
    decode_step(step, rest, in, out);
}

template <backend::Backend Backend>
template <class Coder>
byte_vector runtime_codec<Backend>::encode_with(float relative_step, const chunk_input& in, chunk_buffer* recon) const {
    auto encode = [&](const auto& c) { return c.encode(in, recon); };
    return visit_coder<Coder, byte_vector>(relative_step, encode, true);  // encode() ran require_finite
}

template <backend::Backend Backend>
template <class Coder>
void runtime_codec<Backend>::decode_with(float relative_step, std::span<const std::uint8_t> payload, const chunk_input& in,
                                         const chunk_destination& out) const {
    auto decode = [&](const auto& c) {
        c.decode_into(payload, in, out);
        return 0;
    };
    visit_coder<Coder, int>(relative_step, decode);
}

#ifdef SEQKV_SEPARATE_RUNTIME
// Compiled once in the seqkv::runtime library (src/lossy_*.cpp); includers instantiate none of it.
#define SEQKV_LOSSY_RUNTIME_CODER(EXTERN, Backend, Coder)                                                              \
    EXTERN template byte_vector runtime_codec<Backend>::encode_with<Coder>(float, const chunk_input&, chunk_buffer*) const; \
    EXTERN template void runtime_codec<Backend>::decode_with<Coder>(float, std::span<const std::uint8_t>, const chunk_input&, \
                                                                    const chunk_destination&) const;
SEQKV_LOSSY_RUNTIME_CODER(extern, backend::simd, packed_symbols)
SEQKV_LOSSY_RUNTIME_CODER(extern, backend::simd, adaptive_range_symbols)
SEQKV_LOSSY_RUNTIME_CODER(extern, backend::simd, grouped_rans_symbols<true>)
SEQKV_LOSSY_RUNTIME_CODER(extern, backend::scalar, packed_symbols)
SEQKV_LOSSY_RUNTIME_CODER(extern, backend::scalar, adaptive_range_symbols)
SEQKV_LOSSY_RUNTIME_CODER(extern, backend::scalar, grouped_rans_symbols<true>)
extern template class runtime_codec<backend::simd>;
extern template class runtime_codec<backend::scalar>;
#endif

static_assert(ChunkCodec<runtime_codec<backend::simd>>);

}  // namespace lossy

/// The lossy runtime codec with the default backend.
using lossy_runtime_codec = lossy::runtime_codec<backend::simd>;

}  // namespace seqkv

SEQKV_FP_STRICT_END
