// The ResidualPredictor concept: predicts each row (token) of one block (layer, K or V, head) from
// reconstructions the decoder already has, so the codec runs closed loop and quantization error
// never accumulates along the sequence. Models here: zero and previous_token; see linear.hpp,
// token_mean.hpp and rope.hpp for the others.
//
// Contract (tested in tests/predict/): given the same block_context, params and sequence of
// observe() calls, predict() returns bit-identical values and context classes on every run and
// machine (fixed operation order, no libm in anything both sides compute, unfused products).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::predict {

class expected_kv_table;
class rope_table;

/// Everything a predictor may know about its block on both sides of the channel.
struct block_context {
    std::uint32_t layer = 0;
    kv_kind kind = kv_kind::key;
    std::uint32_t head = 0;
    std::uint32_t rows = 0;            // tokens in the block
    std::uint32_t cols = 0;            // channels (head_dim)
    std::uint64_t first_position = 0;  // absolute position of row 0 in the sequence
    std::span<const std::int32_t> token_ids;            // rows ids, or empty if unknown
    std::span<const float> previous_layer_recon;        // [rows, cols] of layer - 1 (same kind, head), or empty
    const expected_kv_table* table = nullptr;           // per-model expected KV per token id, or null
    const rope_table* rope = nullptr;                   // RoPE angles for key-domain transforms, or null
    std::span<const float> rope_cos, rope_sin;          // optional cache: [rows][cols / 2] angles of rope
};

/// A closed-loop residual predictor. Stateful: reset() starts a block, then for every row in
/// order predict() followed by observe() of that row's reconstruction.
template <class P>
concept ResidualPredictor =
    requires(P& p, const P& cp, const block_context& ctx, std::span<const float> block, const typename P::params& params,
             byte_writer& w, byte_reader& r, std::uint32_t row, std::span<float> out, std::span<const float> recon) {
        typename P::params;
        /// Number of distinct context classes predict() returns (entropy-coding contexts).
        { P::context_classes } -> std::convertible_to<std::uint32_t>;
        /// Encoder: fits per-block parameters on the originals ([rows, cols]).
        { cp.fit(ctx, block) } -> std::same_as<typename P::params>;
        { cp.write_params(params, w) } -> std::same_as<void>;
        { cp.read_params(ctx, r) } -> std::same_as<typename P::params>;
        { p.reset(ctx, params) } -> std::same_as<void>;
        /// Writes the prediction of `row` (cols values) and returns its context class.
        { p.predict(row, out) } -> std::same_as<std::uint32_t>;
        /// Records the reconstruction of `row` (must follow predict(row)).
        { p.observe(row, recon) } -> std::same_as<void>;
    };

/// Optional capability: the class predict() will return for every row, computed before any row
/// is coded (from the block context and params only). Static-table entropy coders need it.
template <class P>
concept RowClassesKnownAhead =
    ResidualPredictor<P> && requires(const P& cp, const block_context& ctx, const typename P::params& params,
                                     std::span<std::uint8_t> classes) {
        { cp.row_classes(ctx, params, classes) } -> std::same_as<void>;
    };

/// No parameters (most predictors).
struct no_params {};

/// Predicts zero: plain quantization of the values themselves.
class zero_predictor {
public:
    using params = no_params;
    static constexpr std::uint32_t context_classes = 1;
    static constexpr bool uses_previous_layer = false;
    params fit(const block_context&, std::span<const float>) const { return {}; }
    void write_params(const params&, byte_writer&) const {}
    params read_params(const block_context&, byte_reader&) const { return {}; }
    void reset(const block_context&, const params&) {}
    std::uint32_t predict(std::uint32_t, std::span<float> out) {
        std::fill(out.begin(), out.end(), 0.0f);
        return 0;
    }
    void observe(std::uint32_t, std::span<const float>) {}
    void row_classes(const block_context&, const params&, std::span<std::uint8_t> out) const {
        std::fill(out.begin(), out.end(), std::uint8_t(0));
    }
};
static_assert(RowClassesKnownAhead<zero_predictor>);

/// Predicts the previous token's reconstruction (row 0: zero, class 1).
class previous_token {
public:
    using params = no_params;
    static constexpr std::uint32_t context_classes = 2;
    static constexpr bool uses_previous_layer = false;
    params fit(const block_context&, std::span<const float>) const { return {}; }
    void write_params(const params&, byte_writer&) const {}
    params read_params(const block_context&, byte_reader&) const { return {}; }
    void reset(const block_context& ctx, const params&) {
        previous_.assign(ctx.cols, 0.0f);
        have_ = false;
    }
    std::uint32_t predict(std::uint32_t, std::span<float> out) {
        std::copy(previous_.begin(), previous_.end(), out.begin());
        return have_ ? 0 : 1;
    }
    void observe(std::uint32_t, std::span<const float> recon) {
        std::copy(recon.begin(), recon.end(), previous_.begin());
        have_ = true;
    }
    void row_classes(const block_context&, const params&, std::span<std::uint8_t> out) const {
        for (std::size_t t = 0; t < out.size(); ++t) out[t] = t == 0 ? 1 : 0;
    }

private:
    std::vector<float> previous_;
    bool have_ = false;
};
static_assert(RowClassesKnownAhead<previous_token>);

}  // namespace seqkv::predict

SEQKV_FP_STRICT_END
