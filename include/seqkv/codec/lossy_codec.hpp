// seqkv::lossy_codec<Quantizer, Predictor, RatePolicy>: the closed-loop lossy ChunkCodec.
// For every (layer, K/V) of a chunk, every head is a block of rows = tokens, cols = head_dim:
//   side stream:   predictor params, quantizer params, then per-row side bytes of each head
//   symbol stream: quantizer symbols, context = quantizer context × predictor classes + class,
//                  packed or adaptive-range coded (lossy_symbols.hpp); models reset per head.
// Payload: u8 version, then per (layer, kind) varint side length, side bytes, varint symbol
// length, symbol bytes. Predictions come only from reconstructions (closed loop), so
// decode() reproduces encode()'s reconstruction bit for bit and errors never accumulate.
// Runtime configs, presets and dispatch: lossy_config.hpp, lossy_runtime.hpp, lossy_presets.hpp.
#pragma once

#include <algorithm>  // before chunk.hpp, which uses std::copy_n without including it
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/chunk.hpp"
#include "seqkv/codec/chunk_codec.hpp"
#include "seqkv/codec/lossy_symbols.hpp"
#include "seqkv/coding/varint.hpp"
#include "seqkv/predict/expected_kv.hpp"
#include "seqkv/predict/predictor.hpp"
#include "seqkv/predict/rate_policy.hpp"
#include "seqkv/predict/rope.hpp"
#include "seqkv/quant/quantizer.hpp"

namespace seqkv {

/// Shared, read-only side information of a lossy codec (both sides must hold the same).
struct lossy_codec_options {
    lossy::symbol_coding coding = lossy::symbol_coding::adaptive;
    const predict::rope_table* rope = nullptr;             // set: keys are predicted pre-RoPE
    const predict::expected_kv_table* table = nullptr;     // set: token-conditioned prior
};

/// Closed-loop predictive lossy codec composed from a quantizer, predictor and rate policy.
template <quant::Quantizer Q, predict::ResidualPredictor P, predict::RatePolicy R>
class lossy_codec {
public:
    static constexpr std::uint8_t payload_version = 1;

    lossy_codec(Q quantizer, P predictor, R rate, lossy_codec_options options = {})
        : quantizer_(std::move(quantizer)), predictor_(std::move(predictor)), rate_(std::move(rate)), options_(options) {}

    /// Encodes tokens [in.begin, in.end) of *in.cache.
    byte_vector encode(const chunk_input& in) const { return encode(in, nullptr); }
    /// Same, also writing the decoder's exact reconstruction into *recon (if not null).
    byte_vector encode(const chunk_input& in, chunk_buffer* recon) const {
        require_usage(in.cache != nullptr && in.end >= in.begin && in.end <= in.cache->layout.tokens,
                      "lossy_codec::encode: bad chunk input");
        const kv_layout layout = in.cache->layout;
        const auto rows = std::uint32_t(in.token_count());
        chunk_state state(layout, rows);
        if (recon) *recon = chunk_buffer::for_layout(layout, rows);
        std::vector<std::int32_t> shifts = row_shifts(in, rows);
        byte_vector payload{payload_version};
        byte_writer out(payload);
        std::vector<float> originals(std::size_t(rows) * layout.head_dim), residual(originals.size());
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                byte_vector side_bytes, symbol_bytes;
                byte_writer side(side_bytes);
                lossy::symbol_writer symbols(options_.coding, symbol_bytes);
                const kv_tensor_view& src = in.cache->tensor(l, kind);
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h) {
                    for (std::uint32_t t = 0; t < rows; ++t)
                        for (std::uint32_t c = 0; c < layout.head_dim; ++c)
                            originals[std::size_t(t) * layout.head_dim + c] = src.at(h, in.begin + t, c);
                    const predict::block_context ctx = context_for(in, state, l, kind, h, rows);
                    const quant::block_shape shape{rows, layout.head_dim, layout.type, kind};
                    P predictor = predictor_;
                    const auto pparams = predictor.fit(ctx, originals);
                    predictor.write_params(pparams, side);
                    open_loop_residual(predictor, ctx, pparams, originals, residual);
                    const auto qparams = quantizer_.plan(shape, originals, residual);
                    quantizer_.write_params(qparams, side);
                    run_block(predictor, ctx, pparams, qparams, shifts, state.block(l, kind, h),
                              [&](std::uint32_t t, std::span<const float> pred, std::span<std::uint16_t> syms, std::span<float> rec) {
                                  quantizer_.quantize_row(qparams, {t, shifts[t]},
                                                          std::span<const float>(originals).subspan(std::size_t(t) * shape.cols, shape.cols),
                                                          pred, syms, side, rec);
                              },
                              &symbols, nullptr);
                }
                symbols.finish();
                coding::put_varint(out, side_bytes.size());
                out.put_bytes(side_bytes);
                coding::put_varint(out, symbol_bytes.size());
                out.put_bytes(symbol_bytes);
                if (recon) state.store(l, kind, *recon);
            }
        return payload;
    }

    /// Decodes a payload into out (sized for the chunk by the caller); format_error on corruption.
    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        const kv_layout layout = out.layout;
        const auto rows = std::uint32_t(layout.tokens);
        require_usage(out.bytes.size() == layout.total_bytes(), "lossy_codec::decode: output buffer not sized for the chunk");
        chunk_state state(layout, rows);
        std::vector<std::int32_t> shifts = row_shifts(in, rows);
        byte_reader reader(payload, "lossy chunk");
        require_format(reader.get<std::uint8_t>() == payload_version, "lossy chunk: unknown payload version");
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                byte_reader side(reader.get_bytes(coding::get_varint(reader, reader.remaining())), "lossy side stream");
                lossy::symbol_reader symbols(options_.coding, reader.get_bytes(coding::get_varint(reader, reader.remaining())));
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h) {
                    const predict::block_context ctx = context_for(in, state, l, kind, h, rows);
                    const quant::block_shape shape{rows, layout.head_dim, layout.type, kind};
                    P predictor = predictor_;
                    const auto pparams = predictor.read_params(ctx, side);
                    const auto qparams = quantizer_.read_params(shape, side);
                    run_block(predictor, ctx, pparams, qparams, shifts, state.block(l, kind, h),
                              [&](std::uint32_t t, std::span<const float> pred, std::span<std::uint16_t> syms, std::span<float> rec) {
                                  quantizer_.dequantize_row(qparams, {t, shifts[t]}, pred, syms, side, rec);
                              },
                              nullptr, &symbols);
                }
                symbols.finish();
                require_format(side.at_end(), "lossy chunk: trailing side bytes");
                state.store(l, kind, out);
            }
        require_format(reader.at_end(), "lossy chunk: trailing bytes");
    }

    const Q& quantizer() const { return quantizer_; }

private:
    // Reconstructions of the whole chunk in fp32, [layer][kind][head][row][col].
    struct chunk_state {
        kv_layout layout;
        std::uint32_t rows;
        std::vector<float> recon;
        chunk_state(const kv_layout& l, std::uint32_t r)
            : layout(l), rows(r), recon(std::size_t(l.layers) * 2 * l.kv_heads * r * l.head_dim) {}
        std::span<float> block(std::uint32_t l, kv_kind kind, std::uint32_t h) {
            const std::size_t n = std::size_t(rows) * layout.head_dim;
            return std::span(recon).subspan(((std::size_t(l) * 2 + std::size_t(kind)) * layout.kv_heads + h) * n, n);
        }
        void store(std::uint32_t l, kv_kind kind, chunk_buffer& out) {
            auto dst = out.block(l, kind);
            const std::size_t n = std::size_t(rows) * layout.head_dim;
            for (std::uint32_t h = 0; h < layout.kv_heads; ++h) {
                auto src = block(l, kind, h);
                for (std::size_t i = 0; i < n; ++i) store_from_float(dst.data(), layout.type, h * n + i, src[i]);
            }
        }
    };

    std::vector<std::int32_t> row_shifts(const chunk_input& in, std::uint32_t rows) const {
        std::vector<std::int32_t> shifts(rows, 0);
        rate_.row_shifts(in.nll.size() == rows ? in.nll : std::span<const float>{}, shifts);
        return shifts;
    }

    predict::block_context context_for(const chunk_input& in, chunk_state& state, std::uint32_t l, kv_kind kind,
                                        std::uint32_t h, std::uint32_t rows) const {
        predict::block_context ctx;
        ctx.layer = l, ctx.kind = kind, ctx.head = h, ctx.rows = rows, ctx.cols = state.layout.head_dim;
        ctx.first_position = in.begin;
        if (in.token_ids.size() == rows) ctx.token_ids = in.token_ids;
        if (l > 0) ctx.previous_layer_recon = state.block(l - 1, kind, h);
        ctx.table = options_.table;
        ctx.rope = options_.rope;
        return ctx;
    }

    static void open_loop_residual(P& predictor, const predict::block_context& ctx, const typename P::params& pparams,
                                   std::span<const float> x, std::span<float> residual) {
        predictor.reset(ctx, pparams);
        std::vector<float> pred(ctx.cols);
        for (std::uint32_t t = 0; t < ctx.rows; ++t) {
            predictor.predict(t, pred);
            const auto row = x.subspan(std::size_t(t) * ctx.cols, ctx.cols);
            for (std::uint32_t c = 0; c < ctx.cols; ++c) residual[std::size_t(t) * ctx.cols + c] = row[c] - pred[c];
            predictor.observe(t, row);
        }
    }

    // The closed loop shared by both sides: predict, (de)quantize, code symbols, observe.
    // Exactly one of writer (encoder) and reader (decoder) is set.
    template <class RowCoder>
    void run_block(P& predictor, const predict::block_context& ctx, const typename P::params& pparams,
                   const typename Q::params& qparams, const std::vector<std::int32_t>&, std::span<float> recon,
                   RowCoder&& code_row, lossy::symbol_writer* writer, lossy::symbol_reader* reader) const {
        constexpr std::uint32_t classes = P::context_classes;
        const std::uint32_t n_sym = quantizer_.symbols_per_row(qparams);
        std::vector<std::uint32_t> alphabets(quantizer_.context_count(qparams) * classes), sym_ctx(n_sym);
        for (std::uint32_t c = 0; c < quantizer_.context_count(qparams); ++c)
            for (std::uint32_t k = 0; k < classes; ++k) alphabets[c * classes + k] = quantizer_.context_alphabet(qparams, c);
        for (std::uint32_t j = 0; j < n_sym; ++j) sym_ctx[j] = quantizer_.symbol_context(qparams, j) * classes;
        if (writer) writer->set_models(alphabets);
        if (reader) reader->set_models(alphabets);
        predictor.reset(ctx, pparams);
        std::vector<float> pred(ctx.cols);
        std::vector<std::uint16_t> syms(n_sym);
        for (std::uint32_t t = 0; t < ctx.rows; ++t) {
            const std::uint32_t cls = predictor.predict(t, pred);
            require_usage(cls < classes, "lossy_codec: predictor returned a bad context class");
            auto rec = recon.subspan(std::size_t(t) * ctx.cols, ctx.cols);
            if (reader)
                for (std::uint32_t j = 0; j < n_sym; ++j) syms[j] = reader->get(sym_ctx[j] + cls);
            code_row(t, pred, syms, rec);
            if (writer)
                for (std::uint32_t j = 0; j < n_sym; ++j) writer->put(syms[j], sym_ctx[j] + cls);
            predictor.observe(t, rec);
        }
    }

    Q quantizer_;
    P predictor_;
    R rate_;
    lossy_codec_options options_;
};

}  // namespace seqkv
