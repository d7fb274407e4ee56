// The model seams of token mode (ARCHITECTURE "Layer 2"): a TokenModel gives, for a context, the
// next token's distribution as a deterministic integer frequency table; a KvProducer gives the KV
// of the context (an engine's prefill). Both are one object here, a model_session that grows its
// context token by token or in batches; a language_model makes sessions and is the resource a
// token-mode file names (resource_kind::model_weights, by content hash).
//
// Determinism contract (what makes the paper's floor exact): a session's frequency tables and KV
// are a function of the weights and the context only — the same bits whether the context was
// appended in one batch or one token at a time, at any thread count, on any x86-64 CPU. The
// reference model (seqkv/reference/llama.hpp) keeps it with a fixed reduction order, no FMA
// contraction and its own exp / cos / sin; an engine's own prefill may be plugged in as a
// KvProducer, but only a deterministic model may drive the coder.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "seqkv/core/chunk.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/model/det_math.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::model {

/// Frequency tables sum to 2^frequency_bits (the range coder's largest total).
inline constexpr unsigned frequency_bits = 22;
inline constexpr std::uint32_t frequency_total = 1u << frequency_bits;
/// Largest vocabulary a frequency table can give every token a nonzero frequency with room to spare.
inline constexpr std::uint32_t max_vocab = frequency_total / 4;

/// Called once per appended token i (0-based within the batch) with the frequency table of the
/// token that follows it (vocab_size entries, each >= 1, summing to frequency_total).
using next_fn = std::function<void(std::size_t, std::span<const std::uint32_t>)>;

/// Logits -> frequency table, deterministically: e_i = exp_f32(l_i − max l), S = Σ e_i summed in
/// double in index order, f_i = 1 + ⌊e_i · (T − V) / S⌋, and what is left of T goes to the most
/// probable token (the lowest index among equals). Throws resource_error on a non-finite logit
/// (broken weights), usage_error on a size mismatch.
inline void quantize_distribution(std::span<const float> logits, std::span<std::uint32_t> freq) {
    const std::size_t v = logits.size();
    require_usage(v >= 1 && v <= max_vocab && freq.size() == v, "quantize_distribution: vocabulary size");
    float hi = logits[0];
    std::size_t arg = 0;
    for (std::size_t i = 0; i < v; ++i) {
        if (!std::isfinite(logits[i])) throw resource_error("model: non-finite logit (broken weights?)");
        if (logits[i] > hi) hi = logits[i], arg = i;
    }
    double sum = 0;
    for (std::size_t i = 0; i < v; ++i) sum += double(exp_f32(logits[i] - hi));
    const double scale = double(frequency_total - std::uint32_t(v)) / sum;  // sum >= 1 (the max contributes e^0)
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < v; ++i) {
        double f = double(exp_f32(logits[i] - hi)) * scale;
        f = f > double(frequency_total) ? double(frequency_total) : f;
        freq[i] = 1 + static_cast<std::uint32_t>(f);
        total += freq[i];
    }
    // Rounding leaves total <= T in practice; give (or, never in practice, take) the rest at the mode.
    if (total <= frequency_total) freq[arg] += std::uint32_t(frequency_total - total);
    else {
        const std::uint64_t excess = total - frequency_total;
        if (freq[arg] <= excess) throw resource_error("model: degenerate distribution");
        freq[arg] -= std::uint32_t(excess);
    }
}

/// A growing context under a model: next-token distributions (TokenModel) and the context's KV
/// (KvProducer). Not thread-safe; one session per stream.
class model_session {
public:
    virtual ~model_session() = default;
    /// Appends tokens to the context; if on_next is set, calls it for each appended token with the
    /// distribution of the token after it. Throws usage_error for an id outside the vocabulary.
    virtual void extend(std::span<const std::int32_t> tokens, const next_fn& on_next) = 0;
    /// Tokens in the context.
    virtual std::uint64_t length() const = 0;
    /// KV of context tokens [begin, end) in out's dtype (bf16, f16 or f32; rounded to nearest even),
    /// laid out as a chunk_buffer: out.layout must be the model's kv_shape() with tokens = end − begin.
    virtual void kv(std::uint64_t begin, std::uint64_t end, chunk_buffer& out) const = 0;
    /// Forgets the context (keeps allocations).
    virtual void reset() = 0;
    /// Seeds the context with given KV instead of the model's own: tokens [begin, begin + n) of the
    /// context (n = tokens.size() = kv.layout.tokens, begin <= length()) take kv's values, converted
    /// exactly to the session's precision; positions beyond length() are appended without a forward
    /// pass. Later forward passes attend to these values; no next-token table follows the seeded
    /// tokens (a session that codes ids under its tables must extend, not seed). What token mode's
    /// hybrid uses so a chunk stored without the model still enters the model's context, and so the
    /// context is the restored KV on both ends whatever each chunk chose. Sessions that cannot be
    /// seeded throw usage_error (the default).
    virtual void assign_kv(std::uint64_t begin, std::span<const std::int32_t> tokens, const chunk_buffer& kv) {
        (void)begin, (void)tokens, (void)kv;
        throw usage_error("model session: this model cannot be seeded with KV");
    }
};

/// A model that makes sessions; what a token-mode file names as its model_weights resource.
class language_model {
public:
    virtual ~language_model() = default;
    virtual std::uint32_t vocab_size() const = 0;
    /// layers, kv_heads, head_dim of its KV (tokens = 0; type = the dtype it was loaded for).
    virtual kv_layout kv_shape() const = 0;
    /// content_hash64 of its weights and configuration: what a file records.
    virtual std::uint64_t content_hash() const = 0;
    virtual std::string name() const = 0;
    /// A new empty session whose forward passes use up to `threads` threads (0: every core).
    virtual std::unique_ptr<model_session> session(unsigned threads = 1) const = 0;
    /// Floating-point or integer multiply-adds ×2 of one batched forward pass over context
    /// positions [begin, end) after `begin` tokens, without next-token tables: what a decoder pays
    /// to recompute those positions (token mode's cost model divides it by the decoder's FLOP/s).
    /// 0 when unknown (the hybrid's cost model then counts the model's compute as free).
    virtual double forward_flops(std::uint64_t begin, std::uint64_t end) const {
        (void)begin, (void)end;
        return 0;
    }
};

/// A source of next-token distributions over a growing context.
template <class M>
concept TokenModel = requires(M& m, std::span<const std::int32_t> tokens, const next_fn& f) {
    m.extend(tokens, f);
    { m.length() } -> std::convertible_to<std::uint64_t>;
    m.reset();
};

/// A source of the context's KV (an engine's prefill).
template <class P>
concept KvProducer = requires(const P& p, std::uint64_t b, chunk_buffer& out) {
    p.kv(b, b, out);
    { p.length() } -> std::convertible_to<std::uint64_t>;
};

static_assert(TokenModel<model_session> && KvProducer<model_session>);

}  // namespace seqkv::model

SEQKV_FP_STRICT_END
