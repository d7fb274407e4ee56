// seqkv::lossy::closed_loop_codec<Quantizer, Predictor, SymbolCoder, Schedule, Backend, Rate>: the
// closed-loop lossy ChunkCodec, composed from its stages:
//   block worker  (block_worker.hpp)  predict → quantize → reconstruct over one block;
//   schedule      (schedule.hpp)      which blocks in which order (per head, or token-major);
//   symbol coder  (symbols.hpp)       packed / adaptive range / grouped static rANS;
//   executor      (backend/)          runs independent blocks on a thread pool; same bytes for
//                                     any thread count (outputs are combined in block order).
// Payload: u8 version 2, then per (layer, K/V) in order: varint side length, side bytes
// (predictor params then quantizer params of every head, then every head's per-row side bytes in
// the schedule's row order), varint symbol length, symbol bytes (one stream per (layer, K/V);
// sequential coders reset their models per head; rANS contexts are head × quantizer context ×
// predictor class + row class). Predictions come only from reconstructions, so decode() reproduces
// encode()'s reconstruction bit for bit and errors never accumulate. Runtime configs, presets and
// dispatch: config.hpp, runtime.hpp, presets.hpp.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "seqkv/backend/backend.hpp"
#include "seqkv/codec/lossy/block_worker.hpp"
#include "seqkv/codec/lossy/schedule.hpp"
#include "seqkv/codec/lossy/symbols.hpp"
#include "seqkv/coding/varint.hpp"
#include "seqkv/core/chunk.hpp"
#include "seqkv/core/chunk_codec.hpp"
#include "seqkv/predict/expected_kv.hpp"
#include "seqkv/predict/predictor.hpp"
#include "seqkv/predict/rate_policy.hpp"
#include "seqkv/predict/rope.hpp"
#include "seqkv/quant/quantizer.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossy {

namespace detail {
/// Lossy codecs code finite values only: a NaN or ±Inf in tokens [begin, end) is a usage_error
/// naming its place (a quantizer would otherwise turn it into some finite value silently). Caches
/// with non-finite elements go through the lossless codec, which keeps every bit pattern.
inline void require_finite(const kv_cache_view& cache, std::uint64_t begin, std::uint64_t end, std::uint64_t position_base) {
    const kv_layout& l = cache.layout;
    for (std::uint32_t layer = 0; layer < l.layers; ++layer)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const kv_tensor_view& v = kind == kv_kind::key ? cache.keys.at(layer) : cache.values.at(layer);
            for (std::uint32_t h = 0; h < l.kv_heads; ++h)
                for (std::uint64_t t = begin; t < end; ++t) {
                    if (v.row_finite(h, t, l.head_dim)) continue;
                    for (std::uint32_t c = 0; c < l.head_dim; ++c)  // names the first non-finite element
                        if (!std::isfinite(v.at(h, t, c)))
                            throw usage_error("lossy codec: non-finite value (NaN or Inf) at layer " + std::to_string(layer) +
                                              (kind == kv_kind::key ? " K" : " V") + " head " + std::to_string(h) +
                                              " token " + std::to_string(position_base + t) + " channel " + std::to_string(c) +
                                              "; lossy presets code finite values only (use the lossless codec)");
                }
        }
}
}  // namespace detail

/// Shared, read-only side information of a lossy codec (both sides must hold the same), and the
/// executor that runs its block workers (null: the caller's thread only).
struct codec_options {
    const predict::rope_table* rope = nullptr;          // set: keys are predicted pre-RoPE
    const predict::expected_kv_table* table = nullptr;  // set: token-conditioned prior
    std::shared_ptr<backend::thread_pool> executor;
    bool inputs_checked = false;  // set: the caller ran detail::require_finite over each chunk itself
                                  // (the runtime codec does, once, before its target-bits search)
};

/// Closed-loop predictive lossy codec composed from its stage policies.
template <quant::Quantizer Q, predict::ResidualPredictor P, SymbolCoder Coder, Schedule S = per_head_schedule,
          backend::Backend B = backend::simd, predict::RatePolicy R = predict::fixed_rate>
    requires(!S::token_major || Coder::contexts_known_ahead)  // token-major decoding needs every context ahead
class closed_loop_codec {
public:
    using quantizer_type = Q;
    using predictor_type = P;
    using symbol_coder = Coder;
    using schedule = S;
    using backend_type = B;
    static constexpr std::uint8_t payload_version = 2;

    explicit closed_loop_codec(Q quantizer = Q(), P predictor = P(), R rate = R(), codec_options options = {})
        : quantizer_(std::move(quantizer)), predictor_(std::move(predictor)), rate_(std::move(rate)), options_(std::move(options)) {
        if (!options_.executor) options_.executor = backend::serial_executor();
    }

    /// Encodes tokens [in.begin, in.end) of *in.cache.
    byte_vector encode(const chunk_input& in) const { return encode(in, nullptr); }
    /// Same, also writing the decoder's exact reconstruction into *recon (if not null).
    byte_vector encode(const chunk_input& in, chunk_buffer* recon) const;
    /// Decodes a payload into out (sized for the chunk by the caller); format_error on corruption.
    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        require_usage(out.bytes.size() == out.layout.total_bytes(), "lossy codec: output buffer not sized for the chunk");
        decode_into(payload, in, chunk_destination::rows_of(out, 0, out.layout.tokens));
    }
    /// Same, straight into rows of a larger buffer (no staging chunk).
    void decode_into(std::span<const std::uint8_t> payload, const chunk_input& in, const chunk_destination& out) const;

    const Q& quantizer() const { return quantizer_; }

private:
    using worker_type = block_worker<Q, P>;
    using block = typename worker_type::block;
    static constexpr bool ahead = Coder::contexts_known_ahead;

    // Reconstructions in fp32, [layer slot][kind][head][row][col]: every layer of the chunk for the
    // token-major schedule (its stages span all layers), else two slots (layer l in slot l % 2):
    // a block reads only its own layer and the previous one, and each layer is stored to the
    // output before the next but one overwrites its slot — a chunk's float copy no longer grows
    // with the model's depth (SmolLM2, 1024-token chunks: 3 MB instead of 47 MB).
    struct chunk_state {
        kv_layout layout;
        std::uint32_t rows;
        std::uint32_t slots;
        std::vector<float> recon;
        std::vector<float> rope_cos, rope_sin;  // [rows][head_dim / 2] when keys are predicted pre-RoPE
        // slots_needed false: the caller keeps its own reconstructions (decode_stages with independent layers).
        chunk_state(const kv_layout& l, std::uint32_t r, bool slots_needed = true)
            : layout(l), rows(r), slots(std::max<std::uint32_t>(1, S::token_major ? l.layers : std::min<std::uint32_t>(l.layers, 2))),
              recon(slots_needed ? std::size_t(slots) * 2 * l.kv_heads * r * l.head_dim : 0) {}
        std::span<float> block_recon(std::uint32_t l, kv_kind kind, std::uint32_t h) {
            const std::size_t n = std::size_t(rows) * layout.head_dim;
            return std::span(recon).subspan(((std::size_t(l % slots) * 2 + std::size_t(kind)) * layout.kv_heads + h) * n, n);
        }
        void store(std::uint32_t l, kv_kind kind, chunk_buffer& out) {
            store_heads(out.block(l, kind).data(), rows, [&](std::uint32_t h) { return block_recon(l, kind, h); });
        }
        void store(std::uint32_t l, kv_kind kind, const chunk_destination& out) {
            store_heads(out.blocks[2 * std::size_t(l) + std::size_t(kind)], out.head_stride,
                        [&](std::uint32_t h) { return block_recon(l, kind, h); });
        }
        // Head h's reconstruction (recon_of(h): rows × head_dim floats) goes to dst + h · head_stride rows.
        template <class ReconOf>
        void store_heads(std::uint8_t* dst, std::uint64_t head_stride, ReconOf&& recon_of) const {
            const std::size_t n = std::size_t(rows) * layout.head_dim, es = dtype_size(layout.type);
            for (std::uint32_t h = 0; h < layout.kv_heads; ++h) {
                std::span<const float> src = recon_of(h);
                std::uint8_t* d = dst + std::size_t(h) * head_stride * layout.head_dim * es;
                if (layout.type == dtype::bf16) {  // reconstructions are bf16-exact: keep the high half
                    for (std::size_t i = 0; i < n; ++i) {
                        const auto u = std::uint16_t(std::bit_cast<std::uint32_t>(src[i]) >> 16);
                        if constexpr (std::endian::native == std::endian::little) std::memcpy(d + 2 * i, &u, 2);
                        else d[2 * i] = std::uint8_t(u), d[2 * i + 1] = std::uint8_t(u >> 8);
                    }
                } else {
                    for (std::size_t i = 0; i < n; ++i) store_from_float(d, layout.type, i, src[i]);
                }
            }
        }
    };

    // One (layer, kind) of the payload: its blocks (heads) and byte ranges.
    struct stage {
        std::uint32_t layer = 0;
        kv_kind kind = kv_kind::key;
        std::span<block> blocks;
        byte_vector row_side;  // encoder, token-major: per-row side bytes in visiting order
        byte_vector symbols;   // encoder: coded symbol stream
        std::span<const std::uint8_t> side_bytes, symbol_bytes;  // decoder
        std::vector<std::uint16_t> decoded;                      // decoder, block coders
    };

    // own: the block's reconstruction buffer when the caller keeps one per stage (layers decoded
    // independently: no previous layer), else the chunk state's slot.
    void setup_block(block& b, const chunk_input& in, chunk_state& state, std::uint32_t l, kv_kind kind, std::uint32_t h,
                     std::span<const std::int32_t> shifts, std::span<float> own = {}) const {
        const kv_layout& L = state.layout;
        predict::block_context& ctx = b.ctx;
        ctx.layer = l, ctx.kind = kind, ctx.head = h, ctx.rows = state.rows, ctx.cols = L.head_dim;
        ctx.first_position = in.first_position();
        if (in.token_ids.size() == state.rows) ctx.token_ids = in.token_ids;
        if (l > 0 && !layers_independent) ctx.previous_layer_recon = state.block_recon(l - 1, kind, h);  // encoder and decoder alike
        ctx.table = options_.table;
        ctx.rope = options_.rope;
        ctx.rope_cos = state.rope_cos, ctx.rope_sin = state.rope_sin;
        b.shape = quant::block_shape{state.rows, L.head_dim, L.type, kind};
        b.recon = own.empty() ? state.block_recon(l, kind, h) : own;
        b.shifts = shifts;
    }

    void cache_angles(chunk_state& state, std::uint64_t first_position) const {
        if (options_.rope && options_.rope->head_dim() == state.layout.head_dim)
            options_.rope->angles_for_rows(first_position, state.rows, state.rope_cos, state.rope_sin);
    }

    std::vector<std::int32_t> row_shifts(const chunk_input& in, std::uint32_t rows) const {
        std::vector<std::int32_t> shifts(rows, 0);
        rate_.row_shifts(in.nll.size() == rows ? in.nll : std::span<const float>{}, shifts);
        return shifts;
    }

    // rANS stream shape: sources = heads × (most quantizer contexts of a head), largest alphabet.
    grouped_stream_shape stream_shape(const worker_type& worker, std::span<const block> blocks) const {
        std::uint32_t alphabet = 1, contexts = 1;
        for (const auto& b : blocks) {
            contexts = std::max(contexts, worker.context_count(b));
            for (std::uint32_t c = 0; c < worker.context_count(b); ++c) alphabet = std::max(alphabet, worker.context_alphabet(b, c));
        }
        const auto sources = std::uint32_t(blocks.size()) * contexts;
        require_usage(std::uint64_t(sources) * P::context_classes <= coding::max_alphabet_size, "lossy codec: too many rANS contexts");
        return {sources, P::context_classes, alphabet};
    }

    // Entropy-codes one stage's symbols (blocks in head order).
    void code_symbols(const worker_type& worker, stage& st) const {
        if constexpr (ahead) {
            const grouped_stream_shape shape = stream_shape(worker, st.blocks);
            const std::uint32_t per_head = (shape.sources / std::uint32_t(st.blocks.size())) * P::context_classes;
            std::vector<std::uint16_t> symbols, contexts;
            for (std::size_t h = 0; h < st.blocks.size(); ++h) {
                const block& b = st.blocks[h];
                symbols.insert(symbols.end(), b.symbols.begin(), b.symbols.end());
                for (auto c : b.contexts) contexts.push_back(std::uint16_t(h * per_head + c));
            }
            st.symbols = Coder::encode(symbols, contexts, shape);
        } else {
            symbol_writer writer(Coder::id, st.symbols);
            for (const block& b : st.blocks) {
                writer.set_models(b.alphabets);
                for (std::size_t i = 0; i < b.symbols.size(); ++i) writer.put(b.symbols[i], b.contexts[i]);
            }
            writer.finish();
        }
    }

    // Decoder, block coders: every context from the row classes, then the whole stream.
    void decode_stage_symbols(const worker_type& worker, stage& st) const {
        const grouped_stream_shape shape = stream_shape(worker, st.blocks);
        const std::uint32_t per_head = (shape.sources / std::uint32_t(st.blocks.size())) * P::context_classes;
        std::vector<std::uint16_t> contexts;
        std::vector<std::size_t> offsets{0};
        for (std::size_t h = 0; h < st.blocks.size(); ++h) {
            worker.append_contexts(st.blocks[h], std::uint32_t(h * per_head), contexts);
            offsets.push_back(contexts.size());
        }
        st.decoded.resize(contexts.size());
        Coder::decode(st.symbol_bytes, contexts, st.decoded, shape);
        for (std::size_t h = 0; h < st.blocks.size(); ++h)
            st.blocks[h].decoded = std::span<const std::uint16_t>(st.decoded).subspan(offsets[h], offsets[h + 1] - offsets[h]);
    }

    static void write_stage(byte_writer& out, const worker_type& worker, const stage& st) {
        byte_vector side;
        byte_writer w(side);
        for (const block& b : st.blocks) worker.write_params(b, w);
        std::size_t row_side = st.row_side.size();
        for (const block& b : st.blocks) row_side += b.row_side.size();
        coding::put_varint(out, side.size() + row_side);
        out.put_bytes(side);
        for (const block& b : st.blocks) out.put_bytes(b.row_side);
        out.put_bytes(st.row_side);
        coding::put_varint(out, st.symbols.size());
        out.put_bytes(st.symbols);
    }

    // Decoder: reads one stage's byte ranges and every block's params; returns the side reader
    // positioned at the per-row side bytes.
    byte_reader read_stage(byte_reader& reader, const worker_type& worker, stage& st) const {
        st.side_bytes = reader.get_bytes(coding::get_varint(reader, reader.remaining()));
        st.symbol_bytes = reader.get_bytes(coding::get_varint(reader, reader.remaining()));
        return read_params(worker, st);
    }
    byte_reader read_params(const worker_type& worker, stage& st) const {
        byte_reader side(st.side_bytes, "lossy side stream");
        for (block& b : st.blocks) worker.read_params(b, side);
        if constexpr (ahead)
            for (block& b : st.blocks) worker.compute_row_classes(b);
        return side;
    }

    // Predictors that never read the previous layer's reconstruction make every (layer, K/V) stage
    // independent of the others.
    static constexpr bool layers_independent = [] {
        if constexpr (requires { P::uses_previous_layer; }) return !bool(P::uses_previous_layer);
        else return false;
    }();

    // Decoder, per-head schedules: the stages' byte ranges are found in order (two varints each),
    // then each stage — params, symbols, closed loop, store — is one task. Independent layers: every
    // stage of the chunk at once, each task with its own reconstruction buffer (a thread's scratch,
    // reused); otherwise one layer's K and V at a time in the chunk state's two layer slots.
    void decode_stages(byte_reader& reader, const chunk_input& in, const chunk_destination& out, chunk_state& state,
                       std::span<const std::int32_t> shifts, const worker_type& worker, backend::thread_pool& executor) const {
        const kv_layout& layout = state.layout;
        const std::uint32_t heads = layout.kv_heads, rows = state.rows, stage_count = 2 * layout.layers;
        std::vector<stage> stages(stage_count);
        for (std::uint32_t s = 0; s < stage_count; ++s) {
            stages[s].layer = s / 2, stages[s].kind = kv_kind(s % 2);
            stages[s].side_bytes = reader.get_bytes(coding::get_varint(reader, reader.remaining()));
            stages[s].symbol_bytes = reader.get_bytes(coding::get_varint(reader, reader.remaining()));
        }
        const std::size_t block_size = std::size_t(rows) * layout.head_dim;
        auto run = [&](stage& st) {
            std::vector<block> blocks(heads);
            st.blocks = blocks;
            std::span<float> own;
            if constexpr (layers_independent) {
                thread_local std::vector<float> scratch;
                if (scratch.size() < block_size * heads) scratch.resize(block_size * heads);
                own = std::span(scratch).first(block_size * heads);
            }
            for (std::uint32_t h = 0; h < heads; ++h)
                setup_block(blocks[h], in, state, st.layer, st.kind, h, shifts, own.empty() ? own : own.subspan(h * block_size, block_size));
            byte_reader side = read_params(worker, st);
            if constexpr (ahead) {
                decode_stage_symbols(worker, st);
                for (block& b : blocks) {
                    worker.start(b, true);
                    worker.decode_rows(b, 0, rows, side);
                }
            } else {
                symbol_reader symbols(Coder::id, st.symbol_bytes);
                for (block& b : blocks) {
                    worker.start(b);
                    symbols.set_models(b.alphabets);
                    worker.decode_rows(b, 0, rows, side, symbols);
                }
                symbols.finish();
            }
            require_format(side.at_end(), "lossy chunk: trailing side bytes");
            std::uint8_t* dst = out.blocks[2 * std::size_t(st.layer) + std::size_t(st.kind)];
            state.store_heads(dst, out.head_stride, [&](std::uint32_t h) { return std::span<const float>(blocks[h].recon); });
            st.blocks = {}, st.decoded = {};  // the symbols of a finished stage are not kept
        };
        if constexpr (layers_independent) {
            executor.run(stage_count, [&](std::size_t s) { run(stages[s]); });
        } else {
            for (std::uint32_t l = 0; l < layout.layers; ++l) executor.run(2, [&](std::size_t k) { run(stages[2 * l + k]); });
        }
    }

    Q quantizer_;
    P predictor_;
    R rate_;
    codec_options options_;
};

template <quant::Quantizer Q, predict::ResidualPredictor P, SymbolCoder Coder, Schedule S, backend::Backend B, predict::RatePolicy R>
    requires(!S::token_major || Coder::contexts_known_ahead)
byte_vector closed_loop_codec<Q, P, Coder, S, B, R>::encode(const chunk_input& in, chunk_buffer* recon) const {
    require_usage(in.cache != nullptr && in.end >= in.begin && in.end <= in.cache->layout.tokens, "lossy codec: bad chunk input");
    if (!options_.inputs_checked) detail::require_finite(*in.cache, in.begin, in.end, in.position_base);
    const kv_layout layout = in.cache->layout;
    const auto rows = std::uint32_t(in.token_count());
    const std::uint32_t heads = layout.kv_heads, cols = layout.head_dim;
    chunk_state state(layout, rows);
    cache_angles(state, in.first_position());
    if (recon) *recon = chunk_buffer::for_layout(layout, rows);
    const std::vector<std::int32_t> shifts = row_shifts(in, rows);
    const worker_type worker(quantizer_, predictor_);
    backend::thread_pool& executor = *options_.executor;
    const std::size_t block_size = std::size_t(rows) * cols;
    // Per head: one layer's blocks at a time; token-major: the whole chunk at once.
    const std::uint32_t stage_layers = S::token_major ? layout.layers : 1;
    const std::uint32_t stage_count = 2 * stage_layers, block_count = stage_count * heads;
    std::vector<block> blocks(block_count);
    std::vector<stage> stages(stage_count);
    std::vector<float> originals(block_size * block_count);
    byte_vector payload{payload_version};
    byte_writer out(payload);
    for (std::uint32_t first = 0; first < layout.layers; first += stage_layers) {
        for (std::uint32_t s = 0; s < stage_count; ++s) {
            stages[s] = stage{};
            stages[s].layer = first + s / 2, stages[s].kind = kv_kind(s % 2);
            stages[s].blocks = std::span(blocks).subspan(std::size_t(s) * heads, heads);
        }
        // Plan every block (independent of each other), then run the closed loop.
        executor.run(block_count, [&](std::size_t i) {
            block& b = blocks[i];
            b = block{};
            const stage& st = stages[i / heads];
            const auto h = std::uint32_t(i % heads);
            setup_block(b, in, state, st.layer, st.kind, h, shifts);
            auto orig = std::span(originals).subspan(i * block_size, block_size);
            const kv_tensor_view& src = in.cache->tensor(st.layer, st.kind);
            for (std::uint32_t t = 0; t < rows; ++t) src.load_row(h, in.begin + t, orig.subspan(std::size_t(t) * cols, cols));
            b.original = orig;
            worker.plan(b);
            if constexpr (ahead) worker.compute_row_classes(b);
            worker.start(b);
            if constexpr (!S::token_major) {
                byte_writer row_side(b.row_side);
                worker.encode_rows(b, 0, rows, row_side, ahead);
            }
        });
        if constexpr (S::token_major) {
            S::visit(block_count, rows, [&](std::uint32_t i, std::uint32_t t0, std::uint32_t t1) {
                byte_writer row_side(stages[i / heads].row_side);
                worker.encode_rows(blocks[i], t0, t1, row_side, ahead);
            });
        }
        executor.run(stage_count, [&](std::size_t s) { code_symbols(worker, stages[s]); });
        for (const stage& st : stages) {
            write_stage(out, worker, st);
            if (recon) state.store(st.layer, st.kind, *recon);
        }
    }
    return payload;
}

template <quant::Quantizer Q, predict::ResidualPredictor P, SymbolCoder Coder, Schedule S, backend::Backend B, predict::RatePolicy R>
    requires(!S::token_major || Coder::contexts_known_ahead)
void closed_loop_codec<Q, P, Coder, S, B, R>::decode_into(std::span<const std::uint8_t> payload, const chunk_input& in,
                                                          const chunk_destination& out) const {
    const kv_layout layout = out.layout;
    const auto rows = std::uint32_t(layout.tokens);
    const std::uint32_t heads = layout.kv_heads;
    require_usage(out.blocks.size() == 2 * std::size_t(layout.layers) && out.head_stride >= layout.tokens,
                  "lossy codec: destination not shaped for the chunk");
    chunk_state state(layout, rows, S::token_major || !layers_independent);
    cache_angles(state, in.first_position());
    const std::vector<std::int32_t> shifts = row_shifts(in, rows);
    const worker_type worker(quantizer_, predictor_);
    backend::thread_pool& executor = *options_.executor;
    byte_reader reader(payload, "lossy chunk");
    require_format(reader.get<std::uint8_t>() == payload_version, "lossy chunk: unknown payload version");
    if constexpr (!S::token_major) {
        decode_stages(reader, in, out, state, shifts, worker, executor);
    } else {  // every stage of the chunk at once: blocks are visited row-interleaved across layers
        const std::uint32_t stage_count = 2 * layout.layers, block_count = stage_count * heads;
        std::vector<block> blocks(block_count);
        std::vector<stage> stages(stage_count);
        std::vector<byte_reader> sides;
        for (std::uint32_t s = 0; s < stage_count; ++s) {
            stage& st = stages[s];
            st.layer = s / 2, st.kind = kv_kind(s % 2);
            st.blocks = std::span(blocks).subspan(std::size_t(s) * heads, heads);
            for (std::uint32_t h = 0; h < heads; ++h) setup_block(st.blocks[h], in, state, st.layer, st.kind, h, shifts);
            sides.push_back(read_stage(reader, worker, st));
        }
        executor.run(stage_count, [&](std::size_t s) { decode_stage_symbols(worker, stages[s]); });
        for (block& b : blocks) worker.start(b, true);
        S::visit(block_count, rows, [&](std::uint32_t i, std::uint32_t t0, std::uint32_t t1) {
            worker.decode_rows(blocks[i], t0, t1, sides[i / heads]);
        });
        for (std::uint32_t s = 0; s < stage_count; ++s) {
            require_format(sides[s].at_end(), "lossy chunk: trailing side bytes");
            state.store(stages[s].layer, stages[s].kind, out);
        }
    }
    require_format(reader.at_end(), "lossy chunk: trailing bytes");
}

}  // namespace seqkv::lossy

SEQKV_FP_STRICT_END
