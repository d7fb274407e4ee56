// seqkv::lossy_codec<Quantizer, Predictor, RatePolicy>: the closed-loop lossy ChunkCodec.
// For every (layer, K/V) of a chunk, every head is a block of rows = tokens, cols = head_dim:
//   side stream:   predictor params and quantizer params of every head, then per-row side
//                  bytes of every head (so a decoder knows all contexts before decoding symbols)
//   symbol stream: quantizer symbols, context = quantizer context × predictor classes + class,
//                  packed, adaptive-range coded (models reset per head) or one static-table
//                  rANS block for all heads (row classes from predictor.row_classes()).
// Payload: u8 version, then per (layer, kind) varint side length, side bytes, varint symbol
// length, symbol bytes. Predictions come only from reconstructions (closed loop), so
// decode() reproduces encode()'s reconstruction bit for bit and errors never accumulate.
// Runtime configs, presets and dispatch: lossy_config.hpp, lossy_runtime.hpp, lossy_presets.hpp.
#pragma once

#include <algorithm>  // before chunk.hpp, which uses std::copy_n without including it
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "seqkv/core/chunk.hpp"
#include "seqkv/core/chunk_codec.hpp"
#include "seqkv/codec/lossy/symbols.hpp"
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
    bool parametric_tables = true;                         // rANS: allow parametric per-context tables
};

/// Closed-loop predictive lossy codec composed from a quantizer, predictor and rate policy.
template <quant::Quantizer Q, predict::ResidualPredictor P, predict::RatePolicy R>
class lossy_codec {
public:
    static constexpr std::uint8_t payload_version = 2;

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
        const std::uint32_t heads = layout.kv_heads, cols = layout.head_dim;
        chunk_state state(layout, rows);
        cache_angles(state, in.begin);
        if (recon) *recon = chunk_buffer::for_layout(layout, rows);
        std::vector<std::int32_t> shifts = row_shifts(in, rows);
        byte_vector payload{payload_version};
        byte_writer out(payload);
        const std::size_t block_size = std::size_t(rows) * cols;
        std::vector<float> originals(block_size * heads), residual(block_size);
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                byte_vector side_bytes, row_side_bytes, symbol_bytes;
                byte_writer side(side_bytes), row_side(row_side_bytes);
                const kv_tensor_view& src = in.cache->tensor(l, kind);
                const quant::block_shape shape{rows, cols, layout.type, kind};
                std::vector<predict::block_context> ctxs;
                std::vector<typename P::params> pparams;
                std::vector<typename Q::params> qparams;
                for (std::uint32_t h = 0; h < heads; ++h) {  // all block parameters first
                    auto orig = std::span(originals).subspan(h * block_size, block_size);
                    for (std::uint32_t t = 0; t < rows; ++t)
                        for (std::uint32_t c = 0; c < cols; ++c) orig[std::size_t(t) * cols + c] = src.at(h, in.begin + t, c);
                    ctxs.push_back(context_for(in, state, l, kind, h, rows));
                    P predictor = predictor_;
                    pparams.push_back(predictor.fit(ctxs[h], orig));
                    predictor.write_params(pparams[h], side);
                    if constexpr (plan_needs_residual()) open_loop_residual(predictor, ctxs[h], pparams[h], orig, residual);
                    qparams.push_back(quantizer_.plan(shape, orig, residual));
                    quantizer_.write_params(qparams[h], side);
                }
                stream_io io;
                lossy::symbol_writer symbols(options_.coding, symbol_bytes);
                std::vector<std::uint16_t> stream_symbols, stream_contexts;
                if (options_.coding == lossy::symbol_coding::rans) {
                    io.rans_symbols = &stream_symbols, io.rans_contexts = &stream_contexts;
                    stream_symbols.reserve(block_size * heads), stream_contexts.reserve(block_size * heads);
                } else {
                    io.writer = &symbols;
                }
                std::vector<std::uint8_t> classes(rows);
                const lossy::grouped_stream_shape gshape = stream_shape(qparams);
                for (std::uint32_t h = 0; h < heads; ++h) {
                    io.rans_context_offset = h * (gshape.sources / heads) * P::context_classes;
                    const auto orig = std::span<const float>(originals).subspan(h * block_size, block_size);
                    P predictor = predictor_;
                    row_classes(predictor, ctxs[h], pparams[h], classes);
                    io.classes = classes;
                    run_block(predictor, ctxs[h], pparams[h], qparams[h], state.block(l, kind, h),
                              [&](std::uint32_t t, std::span<const float> pred, std::span<std::uint16_t> syms, std::span<float> rec) {
                                  quantizer_.quantize_row(qparams[h], {t, shifts[t]}, orig.subspan(std::size_t(t) * cols, cols),
                                                          pred, syms, row_side, rec);
                              },
                              io);
                }
                if (options_.coding == lossy::symbol_coding::rans) {
                    symbol_bytes = lossy::encode_grouped_stream(stream_symbols, stream_contexts, gshape, options_.parametric_tables);
                } else {
                    symbols.finish();
                }
                coding::put_varint(out, side_bytes.size() + row_side_bytes.size());
                out.put_bytes(side_bytes);
                out.put_bytes(row_side_bytes);
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
        const std::uint32_t heads = layout.kv_heads, cols = layout.head_dim;
        require_usage(out.bytes.size() == layout.total_bytes(), "lossy_codec::decode: output buffer not sized for the chunk");
        chunk_state state(layout, rows);
        cache_angles(state, in.begin);
        std::vector<std::int32_t> shifts = row_shifts(in, rows);
        byte_reader reader(payload, "lossy chunk");
        require_format(reader.get<std::uint8_t>() == payload_version, "lossy chunk: unknown payload version");
        std::vector<std::uint8_t> classes(std::size_t(rows) * heads);
        std::vector<std::uint16_t> stream_symbols, stream_contexts;
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                byte_reader side(reader.get_bytes(coding::get_varint(reader, reader.remaining())), "lossy side stream");
                const auto symbol_bytes = reader.get_bytes(coding::get_varint(reader, reader.remaining()));
                const quant::block_shape shape{rows, cols, layout.type, kind};
                std::vector<predict::block_context> ctxs;
                std::vector<typename P::params> pparams;
                std::vector<typename Q::params> qparams;
                for (std::uint32_t h = 0; h < heads; ++h) {
                    ctxs.push_back(context_for(in, state, l, kind, h, rows));
                    pparams.push_back(predictor_.read_params(ctxs[h], side));
                    qparams.push_back(quantizer_.read_params(shape, side));
                }
                for (std::uint32_t h = 0; h < heads; ++h)
                    row_classes(predictor_, ctxs[h], pparams[h], std::span(classes).subspan(std::size_t(h) * rows, rows));
                stream_io io;
                lossy::symbol_reader symbols(options_.coding,
                                             options_.coding == lossy::symbol_coding::rans ? std::span<const std::uint8_t>{} : symbol_bytes);
                std::vector<std::size_t> head_offsets(heads + 1, 0);
                if (options_.coding == lossy::symbol_coding::rans) {
                    const lossy::grouped_stream_shape gshape = stream_shape(qparams);
                    stream_contexts.clear();
                    for (std::uint32_t h = 0; h < heads; ++h) {
                        append_contexts(qparams[h], std::span(classes).subspan(std::size_t(h) * rows, rows),
                                        std::uint16_t(h * (gshape.sources / heads) * P::context_classes), stream_contexts);
                        head_offsets[h + 1] = stream_contexts.size();
                    }
                    stream_symbols.resize(stream_contexts.size());
                    lossy::decode_grouped_stream(symbol_bytes, stream_contexts, stream_symbols, gshape);
                } else {
                    io.reader = &symbols;
                }
                for (std::uint32_t h = 0; h < heads; ++h) {
                    P predictor = predictor_;
                    io.classes = std::span(classes).subspan(std::size_t(h) * rows, rows);
                    io.rans_decoded = std::span<const std::uint16_t>(stream_symbols)
                                          .subspan(head_offsets[h], head_offsets[h + 1] - head_offsets[h]);
                    run_block(predictor, ctxs[h], pparams[h], qparams[h], state.block(l, kind, h),
                              [&](std::uint32_t t, std::span<const float> pred, std::span<const std::uint16_t> syms, std::span<float> rec) {
                                  quantizer_.dequantize_row(qparams[h], {t, shifts[t]}, pred, syms, side, rec);
                              },
                              io);
                }
                if (options_.coding != lossy::symbol_coding::rans) symbols.finish();
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
        std::vector<float> rope_cos, rope_sin;  // [rows][head_dim / 2] when keys are predicted pre-RoPE
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
                if (layout.type == dtype::bf16) {  // reconstructions are bf16-exact: keep the high half
                    std::uint8_t* d = dst.data() + 2 * h * n;
                    for (std::size_t i = 0; i < n; ++i) {
                        const std::uint32_t u = std::bit_cast<std::uint32_t>(src[i]) >> 16;
                        d[2 * i] = std::uint8_t(u), d[2 * i + 1] = std::uint8_t(u >> 8);
                    }
                } else {
                    for (std::size_t i = 0; i < n; ++i) store_from_float(dst.data(), layout.type, h * n + i, src[i]);
                }
            }
        }
    };

    void cache_angles(chunk_state& state, std::uint64_t first_position) const {
        if (options_.rope && options_.rope->head_dim() == state.layout.head_dim)
            options_.rope->angles_for_rows(first_position, state.rows, state.rope_cos, state.rope_sin);
    }

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
        ctx.rope_cos = state.rope_cos, ctx.rope_sin = state.rope_sin;
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

    static constexpr bool plan_needs_residual() {
        if constexpr (requires { Q::plan_uses_residual; }) return Q::plan_uses_residual;
        else return true;
    }

    // Row context classes known before decoding (rANS contexts); predictors without
    // row_classes() get class 0 everywhere in rANS mode.
    static void row_classes(const P& predictor, const predict::block_context& ctx, const typename P::params& pp,
                            std::span<std::uint8_t> out) {
        if constexpr (requires { predictor.row_classes(ctx, pp, out); }) predictor.row_classes(ctx, pp, out);
        else std::fill(out.begin(), out.end(), std::uint8_t(0));
    }

    // rANS stream shape: sources = heads × (most quantizer contexts of a head), largest alphabet.
    lossy::grouped_stream_shape stream_shape(const std::vector<typename Q::params>& qparams) const {
        std::uint32_t alphabet = 1, contexts = 1;
        for (const auto& qp : qparams) {
            contexts = std::max(contexts, quantizer_.context_count(qp));
            for (std::uint32_t c = 0; c < quantizer_.context_count(qp); ++c)
                alphabet = std::max(alphabet, quantizer_.context_alphabet(qp, c));
        }
        const auto sources = std::uint32_t(qparams.size()) * contexts;
        require_usage(std::uint64_t(sources) * P::context_classes <= coding::max_alphabet_size, "lossy_codec: too many rANS contexts");
        return {sources, P::context_classes, alphabet};
    }

    void append_contexts(const typename Q::params& qp, std::span<const std::uint8_t> classes, std::uint16_t offset,
                         std::vector<std::uint16_t>& out) const {
        const std::uint32_t n_sym = quantizer_.symbols_per_row(qp);
        std::vector<std::uint16_t> base(n_sym);
        for (std::uint32_t j = 0; j < n_sym; ++j)
            base[j] = std::uint16_t(offset + quantizer_.symbol_context(qp, j) * P::context_classes);
        for (auto cls : classes)
            for (std::uint32_t j = 0; j < n_sym; ++j) out.push_back(std::uint16_t(base[j] + cls));
    }

    // Where a block's symbols come from / go to. Exactly one path is set.
    struct stream_io {
        lossy::symbol_writer* writer = nullptr;                            // packed / adaptive encoder
        lossy::symbol_reader* reader = nullptr;                            // packed / adaptive decoder
        std::vector<std::uint16_t>* rans_symbols = nullptr;                // rANS encoder: appended
        std::vector<std::uint16_t>* rans_contexts = nullptr;
        std::span<const std::uint16_t> rans_decoded;                       // rANS decoder: this block's symbols
        std::span<const std::uint8_t> classes;                             // rows' precomputed classes
        std::uint32_t rans_context_offset = 0;                             // head × contexts per head × classes
    };

    // The closed loop shared by both sides: predict, (de)quantize, code symbols, observe.
    template <class RowCoder>
    void run_block(P& predictor, const predict::block_context& ctx, const typename P::params& pparams,
                   const typename Q::params& qparams, std::span<float> recon, RowCoder&& code_row, stream_io& io) const {
        constexpr std::uint32_t classes = P::context_classes;
        const bool rans = options_.coding == lossy::symbol_coding::rans;
        const bool decoding = io.reader != nullptr || (rans && io.rans_symbols == nullptr);
        const std::uint32_t n_sym = quantizer_.symbols_per_row(qparams);
        const std::uint32_t n_ctx = quantizer_.context_count(qparams);
        std::vector<std::uint32_t> alphabets(n_ctx * classes), sym_ctx(n_sym), sym_alphabet(n_sym);
        for (std::uint32_t c = 0; c < n_ctx; ++c)
            for (std::uint32_t k = 0; k < classes; ++k) alphabets[c * classes + k] = quantizer_.context_alphabet(qparams, c);
        for (std::uint32_t j = 0; j < n_sym; ++j) {
            sym_ctx[j] = quantizer_.symbol_context(qparams, j) * classes;
            sym_alphabet[j] = quantizer_.context_alphabet(qparams, quantizer_.symbol_context(qparams, j));
        }
        if (io.writer) io.writer->set_models(alphabets);
        if (io.reader) io.reader->set_models(alphabets);
        bool check_rows = false;  // decoded rANS symbols need per-row alphabet checks
        if (rans && decoding) {
            require_format(io.rans_decoded.size() == std::size_t(n_sym) * ctx.rows, "lossy chunk: rANS stream size mismatch");
            std::uint32_t min_alphabet = ~0u;
            std::uint16_t max_symbol = 0;
            for (auto a : sym_alphabet) min_alphabet = std::min(min_alphabet, a);
            for (auto s : io.rans_decoded) max_symbol = std::max(max_symbol, s);
            check_rows = max_symbol >= min_alphabet;
        }
        predictor.reset(ctx, pparams);
        std::vector<float> pred(ctx.cols);
        std::vector<std::uint16_t> syms(n_sym);
        for (std::uint32_t t = 0; t < ctx.rows; ++t) {
            const std::uint32_t cls = predictor.predict(t, pred);
            require_usage(cls < classes, "lossy_codec: predictor returned a bad context class");
            const std::uint32_t coded_cls = rans ? io.classes[t] : cls;
            if constexpr (predict::RowClassesKnownAhead<P>)
                require_usage(!rans || coded_cls == cls, "lossy_codec: predictor's row_classes() disagrees with predict()");
            auto rec = recon.subspan(std::size_t(t) * ctx.cols, ctx.cols);
            if (io.reader) {
                for (std::uint32_t j = 0; j < n_sym; ++j) syms[j] = io.reader->get(sym_ctx[j] + cls);
            } else if (rans && decoding) {
                const auto row = io.rans_decoded.subspan(std::size_t(t) * n_sym, n_sym);
                if (check_rows)
                    for (std::uint32_t j = 0; j < n_sym; ++j)
                        require_format(row[j] < sym_alphabet[j], "lossy chunk: rANS symbol outside its context's alphabet");
                if constexpr (std::is_invocable_v<RowCoder&, std::uint32_t, std::span<const float>, std::span<const std::uint16_t>,
                                                  std::span<float>>) {
                    code_row(t, pred, row, rec);  // straight from the decoded stream
                } else {
                    std::copy(row.begin(), row.end(), syms.begin());
                    code_row(t, pred, syms, rec);
                }
                predictor.observe(t, rec);
                continue;
            }
            code_row(t, pred, syms, rec);
            if (io.writer)
                for (std::uint32_t j = 0; j < n_sym; ++j) io.writer->put(syms[j], sym_ctx[j] + cls);
            if (io.rans_symbols)
                for (std::uint32_t j = 0; j < n_sym; ++j) {
                    io.rans_symbols->push_back(syms[j]);
                    io.rans_contexts->push_back(std::uint16_t(io.rans_context_offset + sym_ctx[j] + coded_cls));
                }
            predictor.observe(t, rec);
        }
    }

    Q quantizer_;
    P predictor_;
    R rate_;
    lossy_codec_options options_;
};

}  // namespace seqkv
