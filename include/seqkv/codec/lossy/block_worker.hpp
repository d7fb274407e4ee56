// The block worker of the lossy codec: the closed loop over one block (one layer, K or V, one
// head; rows = tokens, cols = head_dim) — plan, then predict → quantize → reconstruct → observe
// row by row. It emits symbols and their contexts (encoder) or consumes them (decoder) and decides
// nothing about entropy coding, block order or threads: the schedule, the symbol coder and the
// executor do (codec/lossy/codec.hpp). Like a CUB agent, one instance works on one block at a time;
// blocks are independent objects, so an executor may run different blocks on different threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/predict/predictor.hpp"
#include "seqkv/quant/quantizer.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossy {

/// The closed loop of one block for quantizer Q and predictor P (both copied per block).
template <quant::Quantizer Q, predict::ResidualPredictor P>
class block_worker {
public:
    static constexpr std::uint32_t classes = P::context_classes;

    /// One block's plan, working state and outputs.
    struct block {
        predict::block_context ctx;
        quant::block_shape shape;
        typename P::params pparams{};
        typename Q::params qparams{};
        std::vector<std::uint8_t> row_classes;  // per row, when the symbol coder needs contexts ahead
        std::span<float> recon;                 // [rows][cols]: the decoder's reconstruction
        std::span<const float> original;        // encoder: [rows][cols] values to code
        std::span<const std::int32_t> shifts;   // rate policy's step shift per row
        // encoder outputs: symbols and contexts (quantizer context × classes + row class)
        std::vector<std::uint16_t> symbols, contexts;
        byte_vector row_side;                   // per-row side bytes, when the schedule keeps them per block
        // decoder input (block coders): this block's decoded symbols, [rows][symbols per row]
        std::span<const std::uint16_t> decoded;
        // working state
        std::optional<P> predictor;
        std::vector<std::uint32_t> alphabets, symbol_context, symbol_alphabet;
        std::vector<float> prediction;
        std::vector<std::uint16_t> row_symbols;
        bool check_decoded = false;
    };

    block_worker(const Q& quantizer, const P& predictor) : quantizer_(&quantizer), prototype_(&predictor) {}

    /// Encoder: fits predictor params and plans the quantizer on b.original.
    void plan(block& b) const {
        P predictor = *prototype_;
        b.pparams = predictor.fit(b.ctx, b.original);
        std::vector<float> residual;
        if constexpr (plan_needs_residual()) {
            residual.resize(b.original.size());
            predictor.reset(b.ctx, b.pparams);
            std::vector<float> pred(b.ctx.cols);
            for (std::uint32_t t = 0; t < b.ctx.rows; ++t) {
                predictor.predict(t, pred);
                const auto row = b.original.subspan(std::size_t(t) * b.ctx.cols, b.ctx.cols);
                for (std::uint32_t c = 0; c < b.ctx.cols; ++c) residual[std::size_t(t) * b.ctx.cols + c] = row[c] - pred[c];
                predictor.observe(t, row);
            }
        }
        b.qparams = quantizer_->plan(b.shape, b.original, residual);
    }
    /// Writes the block's params (predictor's, then quantizer's).
    void write_params(const block& b, byte_writer& w) const {
        prototype_->write_params(b.pparams, w);
        quantizer_->write_params(b.qparams, w);
    }
    /// Decoder: reads what write_params wrote.
    void read_params(block& b, byte_reader& r) const {
        b.pparams = prototype_->read_params(b.ctx, r);
        b.qparams = quantizer_->read_params(b.shape, r);
    }
    /// Row classes known before coding (0 for predictors without row_classes()).
    void compute_row_classes(block& b) const {
        b.row_classes.assign(b.ctx.rows, 0);
        if constexpr (predict::RowClassesKnownAhead<P>) prototype_->row_classes(b.ctx, b.pparams, b.row_classes);
    }
    std::uint32_t symbols_per_row(const block& b) const { return quantizer_->symbols_per_row(b.qparams); }
    std::uint32_t context_count(const block& b) const { return quantizer_->context_count(b.qparams); }
    std::uint32_t context_alphabet(const block& b, std::uint32_t c) const { return quantizer_->context_alphabet(b.qparams, c); }
    /// Raw contexts of every symbol of the block from its row classes (block coders' decoders).
    void append_contexts(const block& b, std::uint32_t offset, std::vector<std::uint16_t>& out) const {
        const std::uint32_t n = quantizer_->symbols_per_row(b.qparams);
        std::vector<std::uint16_t> base(n);
        for (std::uint32_t j = 0; j < n; ++j) base[j] = std::uint16_t(offset + quantizer_->symbol_context(b.qparams, j) * classes);
        for (auto cls : b.row_classes)
            for (std::uint32_t j = 0; j < n; ++j) out.push_back(std::uint16_t(base[j] + cls));
    }

    /// Starts the closed loop: symbol layout, predictor reset. Call once per block before its rows;
    /// decoding_ahead: b.decoded holds the block's symbols (block coders), checked here.
    void start(block& b, bool decoding_ahead = false) const {
        const std::uint32_t n_sym = quantizer_->symbols_per_row(b.qparams), n_ctx = quantizer_->context_count(b.qparams);
        b.alphabets.assign(std::size_t(n_ctx) * classes, 0);
        for (std::uint32_t c = 0; c < n_ctx; ++c)
            for (std::uint32_t k = 0; k < classes; ++k) b.alphabets[c * classes + k] = quantizer_->context_alphabet(b.qparams, c);
        b.symbol_context.resize(n_sym), b.symbol_alphabet.resize(n_sym);
        for (std::uint32_t j = 0; j < n_sym; ++j) {
            const std::uint32_t c = quantizer_->symbol_context(b.qparams, j);
            b.symbol_context[j] = c * classes;
            b.symbol_alphabet[j] = quantizer_->context_alphabet(b.qparams, c);
        }
        b.prediction.assign(b.ctx.cols, 0.0f);
        b.row_symbols.assign(n_sym, 0);
        b.predictor.emplace(*prototype_);
        b.predictor->reset(b.ctx, b.pparams);
        if (decoding_ahead) check_decoded_symbols(b, n_sym);
    }

    /// Encoder: rows [t0, t1). Symbols go to b.symbols / b.contexts (context class: the row class
    /// known ahead when `ahead`, else predict()'s); per-row side bytes go to row_side.
    void encode_rows(block& b, std::uint32_t t0, std::uint32_t t1, byte_writer& row_side, bool ahead) const {
        const std::uint32_t cols = b.ctx.cols, n_sym = std::uint32_t(b.row_symbols.size());
        if (t0 == 0) {  // the whole block's symbols at once (token-major schedules call row by row)
            b.symbols.reserve(std::size_t(b.ctx.rows) * n_sym);
            b.contexts.reserve(std::size_t(b.ctx.rows) * n_sym);
        }
        for (std::uint32_t t = t0; t < t1; ++t) {
            const std::uint32_t cls = predict_row(b, t);
            const std::uint32_t coded = ahead ? b.row_classes[t] : cls;
            auto rec = b.recon.subspan(std::size_t(t) * cols, cols);
            quantizer_->quantize_row(b.qparams, {t, b.shifts[t]}, b.original.subspan(std::size_t(t) * cols, cols), b.prediction,
                                     b.row_symbols, row_side, rec);
            b.symbols.insert(b.symbols.end(), b.row_symbols.begin(), b.row_symbols.end());
            const std::size_t at = b.contexts.size();
            b.contexts.resize(at + n_sym);
            for (std::uint32_t j = 0; j < n_sym; ++j) b.contexts[at + j] = std::uint16_t(b.symbol_context[j] + coded);
            b.predictor->observe(t, rec);
        }
    }

    /// Decoder, block coders: rows [t0, t1) from b.decoded.
    void decode_rows(block& b, std::uint32_t t0, std::uint32_t t1, byte_reader& side) const {
        const std::uint32_t cols = b.ctx.cols, n_sym = std::uint32_t(b.row_symbols.size());
        for (std::uint32_t t = t0; t < t1; ++t) {
            predict_row(b, t);
            const auto row = b.decoded.subspan(std::size_t(t) * n_sym, n_sym);
            if (b.check_decoded)
                for (std::uint32_t j = 0; j < n_sym; ++j)
                    require_format(row[j] < b.symbol_alphabet[j], "lossy chunk: rANS symbol outside its context's alphabet");
            auto rec = b.recon.subspan(std::size_t(t) * cols, cols);
            quantizer_->dequantize_row(b.qparams, {t, b.shifts[t]}, b.prediction, row, side, rec);
            b.predictor->observe(t, rec);
        }
    }

    /// Decoder, sequential coders: rows [t0, t1), symbols pulled from reader (set_models first).
    template <class SymbolReader>
    void decode_rows(block& b, std::uint32_t t0, std::uint32_t t1, byte_reader& side, SymbolReader& reader) const {
        const std::uint32_t cols = b.ctx.cols, n_sym = std::uint32_t(b.row_symbols.size());
        for (std::uint32_t t = t0; t < t1; ++t) {
            const std::uint32_t cls = predict_row(b, t);
            if constexpr (requires { reader.get_row(b.symbol_context, cls, std::span<std::uint16_t>(b.row_symbols)); })
                reader.get_row(b.symbol_context, cls, b.row_symbols);
            else
                for (std::uint32_t j = 0; j < n_sym; ++j) b.row_symbols[j] = reader.get(b.symbol_context[j] + cls);
            auto rec = b.recon.subspan(std::size_t(t) * cols, cols);
            quantizer_->dequantize_row(b.qparams, {t, b.shifts[t]}, b.prediction, b.row_symbols, side, rec);
            b.predictor->observe(t, rec);
        }
    }

private:
    static constexpr bool plan_needs_residual() {
        if constexpr (requires { Q::plan_uses_residual; }) return Q::plan_uses_residual;
        else return true;
    }

    std::uint32_t predict_row(block& b, std::uint32_t t) const {
        const std::uint32_t cls = b.predictor->predict(t, b.prediction);
        require_usage(cls < classes, "lossy codec: predictor returned a bad context class");
        if constexpr (predict::RowClassesKnownAhead<P>)
            require_usage(b.row_classes.empty() || b.row_classes[t] == cls, "lossy codec: predictor's row_classes() disagrees with predict()");
        return cls;
    }

    // Decoded symbols need per-symbol alphabet checks only when one could exceed its alphabet.
    static void check_decoded_symbols(block& b, std::uint32_t n_sym) {
        require_format(b.decoded.size() == std::size_t(n_sym) * b.ctx.rows, "lossy chunk: rANS stream size mismatch");
        std::uint32_t min_alphabet = ~0u;
        std::uint16_t max_symbol = 0;
        for (auto a : b.symbol_alphabet) min_alphabet = std::min(min_alphabet, a);
        for (auto s : b.decoded) max_symbol = std::max(max_symbol, s);
        b.check_decoded = max_symbol >= min_alphabet;
    }

    const Q* quantizer_;
    const P* prototype_;
};

}  // namespace seqkv::lossy

SEQKV_FP_STRICT_END
