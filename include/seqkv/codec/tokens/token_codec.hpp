// Token mode: the paper's floor and the middle ground below it. A chunk's payload is its token
// ids, and decoding recomputes the KV with a deterministic language model (model::model_session).
// Four modes:
//   tokens      ids range-coded under the model's next-token tables; the decoder returns the
//               model's own KV (a lossy reproduction of an engine's KV: the engines' arithmetic
//               differs), at ≈ log2 perplexity bits per token; decoding runs the model token by token;
//   corrected   the same + a coded correction: the difference between the input KV and the
//               model's, so the decoder returns the input bit for bit (any bit pattern);
//   residual    the model is a predictor (typically a cheaper draft: reference::weight_format::int8):
//               ids stored uniformly (log2 V bits each, no tables needed), so the decoder recomputes
//               the chunk in one batched pass, and the input is restored bit for bit from the coded
//               residual against the model's KV;
//   residual_bounded   the same with the residual quantized: every element within `bound` of the
//               input (plus the rounding of the reconstruction to the cache's dtype), finite input only;
//   hybrid, hybrid_bounded   per chunk, the cheaper for the decoder under a cost model (hybrid_cost:
//               the bytes it loads at the user's bandwidth + the model's FLOPs at the user's compute +
//               the coders' decode speed) of: the chunk stored by a model-free codec (lossless, or the
//               lossy error-bounded one with the same bound), the residual against the model's KV
//               (modes 2 / 3), or plain recompute (the residual is zero). After every chunk both ends
//               seed the session with the chunk's restored KV (model_session::assign_kv), so the
//               context is the same whatever each chunk chose, and a stored chunk costs no forward pass.
// Chunks are dependent: the model session (the whole context's KV) is the carry, so a file has one
// keyframe, at token 0. A desync — another model, another machine that computes other bits — is
// detected per chunk by content hashes of the decoded token ids and of the recomputed KV, and
// raised as checksum_error; wrong KV is never returned.
//
// Payload (little-endian): u8 version (1) | u8 mode | u32 tokens |
// u64 content_hash64(token ids, i32) | u64 content_hash64(recomputed KV, chunk_buffer bytes) |
// u32 token-stream bytes | token stream | [modes 1-3] correction stream (the rest) |
// [modes 4-5] u8 choice (0 stored: the stored codec's payload follows; 1 residual: the correction
// stream follows; 2 recompute: nothing follows). A stored chunk's KV hash is that of its restored KV
// (what seeds the context: checked after the stored codec's decode).
//
// Token stream, modes 0 and 1: the sequence's first token (position 0) uniform over the vocabulary;
// every later token t under the model's table after tokens < t, coded in two steps so that the
// range coder never sees a total above 2^16 (its precision loss stays below 0.006 bits per step):
// the block b = t / 256 under the block sums of the table, then t within its block; both tables
// rescaled to a 2^16 total by integer arithmetic (each entry >= 1). Modes 2-5: every token
// uniform over the vocabulary.
//
// Correction stream, per (layer, K/V) block in chunk_buffer order, one integer per element, zigzagged
// to zz: modes 1, 2, 4: d = ord(input) − ord(model) (ord: the monotone map of float bits to unsigned,
// modulo 2^bits); modes 3, 5: q = the integer whose reconstruction lies nearest the input (q = 0: the
// model's value, bit for bit; else to_dtype(float(double(model) + q · 2·bound))), among
// q0 = round((input − model) / 2·bound) and q0 ± 1, ties to the smaller |q|; or the escape
// zz = 2^32 − 1 followed by the input's raw bits where |q0| > 2^29 (or the model's value is not
// finite), or where the best reconstruction misses bound + half the dtype's step at the input or
// at the output (it overflows near the dtype's largest value): so |input − output| <= that always.
// zz's magnitude class under an adaptive model keyed by the same channel's class in the previous
// token, then its bits below the leading one raw (detail::correction_coder).
#pragma once

#include <algorithm>
#include <any>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "seqkv/coding/adaptive_model.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/core/any_codec.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/chunk.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/exact.hpp"
#include "seqkv/core/float_formats.hpp"
#include "seqkv/core/hash.hpp"
#include "seqkv/model/token_model.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::tokens {

using coding::adaptive_frequency_model;
using coding::range_decoder;
using coding::range_encoder;

/// What the decoder returns.
enum class mode : std::uint8_t {
    tokens = 0,            ///< the model's recomputed KV
    corrected = 1,         ///< the input KV, bit for bit (tokens + a coded correction)
    residual = 2,          ///< the input KV, bit for bit (plain ids + batched recompute + residual)
    residual_bounded = 3,  ///< the input KV within a bound (plain ids + batched recompute + quantized residual)
    hybrid = 4,            ///< the input KV, bit for bit: per chunk stored, residual or recompute, by cost
    hybrid_bounded = 5,    ///< the input KV within a bound: per chunk stored (error-bounded), residual or recompute
};

/// True for the modes whose ids are coded under the model's tables (decoded token by token).
constexpr bool codes_under_model(mode m) { return m == mode::tokens || m == mode::corrected; }
/// True for the modes whose output is within a bound rather than bit-exact / the model's own.
constexpr bool is_bounded(mode m) { return m == mode::residual_bounded || m == mode::hybrid_bounded; }
/// True for the modes that choose per chunk.
constexpr bool is_hybrid(mode m) { return m == mode::hybrid || m == mode::hybrid_bounded; }

/// What a hybrid chunk chose (its payload's choice byte).
enum class hybrid_choice : std::uint8_t {
    stored = 0,     ///< the model-free codec's payload: no forward pass at decode
    residual = 1,   ///< ids + the model's recompute + the coded residual
    recompute = 2,  ///< ids + the model's recompute (the input is the model's KV after the restore)
};

/// The decoder's costs the hybrid modes weigh (the encoder's choice; recorded in the file's codec
/// parameters for `seqkv info`, not needed to decode). A chunk's time = payload bytes / bandwidth
/// + (model kinds) forward_flops / compute + KV bytes / the decode speed of the coder it uses.
/// Every field > 0 (inf allowed: free). Defaults: a 100 MB/s link, and this project's measured
/// speeds on one core of the 2-core Xeon VM (docs/TOKEN_MODE.md "Hybrid").
struct hybrid_cost {
    float bandwidth = 100e6f;       ///< bytes/s the decoder reads payloads at (storage or network)
    float compute = 30e9f;          ///< FLOP/s of the decoder's model (language_model::forward_flops per second)
    float stored_decode = 500e6f;   ///< KV bytes/s the stored codec decodes at
    float residual_decode = 60e6f;  ///< KV bytes/s the residual coder decodes at (besides the model)

    bool valid() const {
        auto ok = [](float v) { return v > 0 && !std::isnan(v); };
        return ok(bandwidth) && ok(compute) && ok(stored_decode) && ok(residual_decode);
    }
    /// Seconds to load `payload` bytes and decode `kv` bytes at `speed` after `flops` of model work.
    double seconds(double payload, double flops, double kv, double speed) const {
        return payload / double(bandwidth) + flops / double(compute) + (kv > 0 ? kv / double(speed) : 0.0);
    }
};

namespace detail {

inline constexpr unsigned table_bits = 16;
inline constexpr std::uint32_t block_size = 256;

/// Integer rescale of f (sum `total`, entries >= 1) to a table summing to 2^table_bits, each
/// entry >= 1; what is left goes to the largest entry (the first among equals).
inline void rescale(std::span<const std::uint64_t> f, std::uint64_t total, std::span<std::uint32_t> out) {
    constexpr std::uint64_t target = std::uint64_t{1} << table_bits;
    const std::uint64_t room = target - f.size();
    std::uint64_t sum = 0;
    std::size_t arg = 0;
    for (std::size_t i = 0; i < f.size(); ++i) {
        out[i] = std::uint32_t(1 + f[i] * room / total);
        sum += out[i];
        if (f[i] > f[arg]) arg = i;
    }
    out[arg] += std::uint32_t(target - sum);  // sum <= target: Σ ⌊f·room/total⌋ <= room
}

/// The two-step tables for one model table: block sums and, on demand, one block's entries.
class split_table {
public:
    void set(std::span<const std::uint32_t> freq) {
        freq_ = freq;
        const std::size_t blocks = (freq.size() + block_size - 1) / block_size;
        sums_.assign(blocks, 0);
        for (std::size_t i = 0; i < freq.size(); ++i) sums_[i / block_size] += freq[i];
        hi_.resize(blocks);
        rescale(sums_, model::frequency_total, hi_);
    }
    std::span<const std::uint32_t> high() const { return hi_; }
    std::span<const std::uint32_t> low(std::size_t block) {
        const std::size_t b0 = block * block_size, n = std::min<std::size_t>(block_size, freq_.size() - b0);
        wide_.assign(freq_.begin() + std::ptrdiff_t(b0), freq_.begin() + std::ptrdiff_t(b0 + n));
        lo_.resize(n);
        rescale(wide_, sums_[block], lo_);
        return lo_;
    }

private:
    std::span<const std::uint32_t> freq_;
    std::vector<std::uint64_t> sums_, wide_;
    std::vector<std::uint32_t> hi_, lo_;
};

inline void encode_in(range_encoder& enc, std::span<const std::uint32_t> table, std::size_t symbol) {
    std::uint32_t cum = 0;
    for (std::size_t i = 0; i < symbol; ++i) cum += table[i];
    enc.encode(cum, table[symbol], table_bits);
}
inline std::size_t decode_in(range_decoder& dec, std::span<const std::uint32_t> table) {
    const std::uint32_t slot = dec.decode_slot(table_bits);
    std::uint32_t cum = 0;
    std::size_t s = 0;
    while (s + 1 < table.size() && cum + table[s] <= slot) cum += table[s++];
    dec.consume(cum, table[s]);
    return s;
}

/// Monotone map of an element's bits (16 or 32 wide) to unsigned.
inline std::uint32_t ord(std::uint32_t bits, unsigned width) {
    const std::uint32_t sign = 1u << (width - 1), mask = width == 32 ? ~0u : (1u << width) - 1;
    return (bits & sign) ? (~bits & mask) : (bits | sign);
}
inline std::uint32_t unord(std::uint32_t o, unsigned width) {
    const std::uint32_t sign = 1u << (width - 1), mask = width == 32 ? ~0u : (1u << width) - 1;
    return (o & sign) ? (o & ~sign & mask) : (~o & mask);
}
inline std::uint32_t load_bits(const std::uint8_t* p, unsigned width) {
    std::uint32_t v = 0;
    std::memcpy(&v, p, width / 8);
    return v;
}
/// An element's value and back (bf16 / f16 / f32; to_bits rounds to nearest even).
inline float value_of(std::uint32_t bits, dtype t) {
    if (t == dtype::f32) return std::bit_cast<float>(bits);
    return t == dtype::bf16 ? bf16_to_float(std::uint16_t(bits)) : fp16_to_float(std::uint16_t(bits));
}
inline std::uint32_t to_bits(float v, dtype t) {
    if (t == dtype::f32) return std::bit_cast<std::uint32_t>(v);
    return t == dtype::bf16 ? float_to_bf16(v) : float_to_fp16(v);
}

/// Half the distance from a finite value to its neighbour away from zero in dtype t (toward zero
/// at the largest finite value).
inline double half_step(std::uint32_t bits, dtype t) {
    const double v = value_of(bits, t);
    const float up = value_of(bits + 1, t);
    return 0.5 * std::fabs((std::isfinite(up) ? double(up) : double(value_of(bits - 1, t))) - v);
}

/// Mode 3's quantized residual (see the file comment).
inline constexpr std::uint32_t escape_zz = 0xFFFFFFFFu;
inline constexpr double max_residual_q = double(1u << 29);
inline std::uint32_t bounded_bits(std::uint32_t model_bits, std::int64_t q, double step, dtype t) {
    if (q == 0) return model_bits;  // the prediction itself (keeps −0.0 and every bit)
    return to_bits(float(double(value_of(model_bits, t)) + double(q) * step), t);
}

/// The correction stream's coder for one (layer, K/V) block at a time: the magnitude class
/// c = bit_width(zz) (0..32) under an adaptive model chosen by the class of the same channel in
/// the previous token (0..16, capped; 17 for the block's first token), then the c − 1 bits below
/// zz's leading one raw. Models persist across the blocks of a chunk (the classes of one model's
/// corrections look alike across layers).
class correction_coder {
public:
    explicit correction_coder(std::uint32_t head_dim) : head_dim_(head_dim), prev_(head_dim, 17) {
        models_.reserve(18);
        for (int i = 0; i < 18; ++i) models_.emplace_back(33);
    }
    void start_block() { std::fill(prev_.begin(), prev_.end(), std::uint8_t(17)); }
    void encode(range_encoder& enc, std::size_t element, std::uint32_t zz) {
        const std::size_t ch = element % head_dim_;
        const unsigned c = unsigned(std::bit_width(zz));
        coding::encode_symbol(enc, models_[prev_[ch]], c);
        for (unsigned b = 0; b + 1 < c; b += 16) {
            const unsigned n = std::min(16u, c - 1 - b);
            enc.encode_raw_bits((zz >> b) & ((1u << n) - 1), n);
        }
        prev_[ch] = std::uint8_t(std::min(c, 16u));
    }
    std::uint32_t decode(range_decoder& dec, std::size_t element) {
        const std::size_t ch = element % head_dim_;
        const unsigned c = coding::decode_symbol(dec, models_[prev_[ch]]);
        std::uint32_t zz = c == 0 ? 0 : 1u << (c - 1);
        for (unsigned b = 0; b + 1 < c; b += 16) zz |= dec.decode_raw_bits(std::min(16u, c - 1 - b)) << b;
        prev_[ch] = std::uint8_t(std::min(c, 16u));
        return zz;
    }

private:
    std::uint32_t head_dim_;
    std::vector<std::uint8_t> prev_;
    std::vector<adaptive_frequency_model> models_;
};

/// The residual modes' coder (modes 2 and 3): like correction_coder, but the class's context is
/// the pair (class of the same channel in the previous token, capped 16, 17 at the block's start;
/// the channel's running mean class, capped 16) — a calibrated scale per channel that adapts as
/// the chunk goes — and the first bit below zz's leading one is coded under an adaptive binary
/// model per class (a residual's magnitude is not uniform within its class); the rest raw.
/// Running mean: m ← m + ((16·c − m) >> 2) in 1/16 class units (arithmetic shift), 0 at the block's
/// start; its context is min(16, (m + 8) >> 4).
class residual_coder {
public:
    explicit residual_coder(std::uint32_t head_dim) : head_dim_(head_dim), prev_(head_dim, 17), mean_(head_dim, 0), bits_(33) {
        models_.reserve(contexts);
        for (std::uint32_t i = 0; i < contexts; ++i) models_.emplace_back(33);
    }
    void start_block() {
        std::fill(prev_.begin(), prev_.end(), std::uint8_t(17));
        std::fill(mean_.begin(), mean_.end(), 0);
    }
    void encode(range_encoder& enc, std::size_t element, std::uint32_t zz) {
        const std::size_t ch = element % head_dim_;
        const unsigned c = unsigned(std::bit_width(zz));
        coding::encode_symbol(enc, models_[context(ch)], c);
        if (c >= 2) {
            enc.encode_bit(bits_[c], (zz >> (c - 2)) & 1u);
            for (unsigned b = 0; b + 2 < c; b += 16) {
                const unsigned n = std::min(16u, c - 2 - b);
                enc.encode_raw_bits((zz >> b) & ((1u << n) - 1), n);
            }
        }
        update(ch, c);
    }
    std::uint32_t decode(range_decoder& dec, std::size_t element) {
        const std::size_t ch = element % head_dim_;
        const unsigned c = coding::decode_symbol(dec, models_[context(ch)]);
        std::uint32_t zz = c == 0 ? 0 : 1u << (c - 1);
        if (c >= 2) {
            zz |= std::uint32_t(dec.decode_bit(bits_[c])) << (c - 2);
            for (unsigned b = 0; b + 2 < c; b += 16) zz |= dec.decode_raw_bits(std::min(16u, c - 2 - b)) << b;
        }
        update(ch, c);
        return zz;
    }

private:
    static constexpr std::uint32_t contexts = 18 * 17;
    std::uint32_t context(std::size_t ch) const { return prev_[ch] * 17u + std::uint32_t(std::min(16, (mean_[ch] + 8) >> 4)); }
    void update(std::size_t ch, unsigned c) {
        prev_[ch] = std::uint8_t(std::min(c, 16u));
        mean_[ch] += (std::int32_t(c) * 16 - mean_[ch]) >> 2;
    }
    std::uint32_t head_dim_;
    std::vector<std::uint8_t> prev_;
    std::vector<std::int32_t> mean_;
    std::vector<adaptive_frequency_model> models_;
    std::vector<coding::adaptive_bit_model> bits_;
};

/// What a chunk leaves the next: the session (the whole context's KV) and the next-token table.
struct carry_state {
    std::shared_ptr<model::model_session> session;
    std::vector<std::uint32_t> next;
};

/// Bytes of a payload's fixed header: version, mode, tokens, two hashes, the token stream's length.
inline constexpr std::size_t header_bytes = 1 + 1 + 4 + 8 + 8 + 4;

/// A hybrid payload's choice byte (format_error past the last choice).
inline hybrid_choice read_choice(byte_reader& r) {
    const auto c = r.get<std::uint8_t>();
    if (c > std::uint8_t(hybrid_choice::recompute)) throw format_error("token codec: unknown hybrid choice");
    return hybrid_choice(c);
}

}  // namespace detail

/// Bytes of a payload's token stream (its u32 length field): what the ids cost, headers and the
/// correction excluded. Throws format_error for a payload too short to hold the header.
inline std::uint32_t token_stream_bytes(std::span<const std::uint8_t> payload) {
    constexpr std::size_t length_at = detail::header_bytes - 4;
    if (payload.size() < detail::header_bytes) throw format_error("token codec: payload shorter than its header");
    return load_le32(payload.data() + length_at);
}

/// The choice byte of a hybrid payload (modes 4-5), or nothing for the other modes. Throws
/// format_error for a payload too short for its header or choice.
inline std::optional<hybrid_choice> hybrid_choice_of(std::span<const std::uint8_t> payload) {
    byte_reader r(payload, "token chunk");
    (void)r.get<std::uint8_t>();
    const auto m = r.get<std::uint8_t>();
    if (!is_hybrid(mode(m))) return std::nullopt;
    (void)r.get<std::uint32_t>(), (void)r.get<std::uint64_t>(), (void)r.get<std::uint64_t>();
    (void)r.get_bytes(r.get<std::uint32_t>());
    return detail::read_choice(r);
}

/// Token-mode chunk codec over a language model (ChunkCodec, dependent chunks).
class token_codec {
public:
    static constexpr bool dependent_chunks = true;
    static constexpr bool codes_token_ids = true;  // the container stores no ids; decode returns them in out.token_ids
    static constexpr bool whole_context = true;    // one keyframe, at token 0

    /// `bound`: the bounded modes' largest |input − output| (before the output's rounding to the
    /// cache's dtype); finite and > 0 there, 0 otherwise. The hybrid modes take the model-free codec
    /// a chunk may be stored with (independent chunks; the lossy one within the same bound for
    /// hybrid_bounded) and the cost model that chooses.
    token_codec(std::shared_ptr<const model::language_model> model, mode m, unsigned threads = 1, float bound = 0,
                std::shared_ptr<const any_chunk_codec> stored = nullptr, hybrid_cost cost = {})
        : model_(std::move(model)), mode_(m), threads_(threads), bound_(bound), stored_(std::move(stored)), cost_(cost) {
        require_usage(model_ != nullptr, "token codec: no model");
        require_usage(std::uint8_t(m) <= 5, "token codec: unknown mode");
        require_usage(is_bounded(m) ? (std::isfinite(bound) && bound > 0) : bound == 0,
                      "token codec: a bound (finite, > 0) is the bounded modes' alone");
        require_usage(is_hybrid(m) == (stored_ != nullptr), "token codec: a stored codec is the hybrid modes' alone (and they need one)");
        require_usage(!stored_ || (!stored_->dependent_chunks && !stored_->codes_token_ids),
                      "token codec: the hybrid's stored codec must code independent chunks of KV");
        require_usage(cost_.valid(), "token codec: hybrid costs must be > 0");
    }

    byte_vector encode(const chunk_input& in) const {
        require_usage(in.cache != nullptr && in.end > in.begin, "token codec: empty chunk");
        require_usage(in.token_ids.size() == in.token_count(), "token codec: token mode needs the chunk's token ids");
        check_layout(in.cache->layout);
        auto& st = state_for(in);
        auto& session = *st.session;
        const auto ids = in.token_ids;
        auto remember = [&st](std::size_t, std::span<const std::uint32_t> f) { st.next.assign(f.begin(), f.end()); };
        byte_vector tokens_bytes;
        if (!codes_under_model(mode_)) {
            range_encoder enc(tokens_bytes);
            for (const auto t : ids) encode_first(enc, t);
            enc.finish();
            if (is_hybrid(mode_)) return encode_hybrid(in, session, tokens_bytes);
            session.extend(ids, {});  // one batched pass, no tables
        } else {
            range_encoder enc(tokens_bytes);
            detail::split_table table;
            auto code = [&](std::span<const std::uint32_t> f, std::size_t target) {
                table.set(f);
                const std::size_t t = std::size_t(ids[target]);
                detail::encode_in(enc, table.high(), t / detail::block_size);
                detail::encode_in(enc, table.low(t / detail::block_size), t % detail::block_size);
            };
            std::size_t first = 0;
            if (session.length() == 0) {  // position 0: no context to predict from
                encode_first(enc, ids[0]);
                session.extend(ids.first(1), remember);
                first = 1;
            }
            if (first < ids.size()) {
                code(st.next, first);  // under the table after the context's last token
                // One batched forward pass: the table after token i predicts token i + 1; the one
                // after the chunk's last token is kept for the next chunk.
                session.extend(ids.subspan(first), [&](std::size_t i, std::span<const std::uint32_t> f) {
                    if (first + i + 1 < ids.size()) code(f, first + i + 1);
                    else remember(i, f);
                });
            }
            enc.finish();
        }
        chunk_buffer ours = chunk_buffer::for_layout(in.cache->layout, in.token_count());
        session.kv(session.length() - in.token_count(), session.length(), ours);

        byte_vector out = header(ids, content_hash64(ours.bytes), tokens_bytes);
        if (mode_ != mode::tokens) encode_correction(in, ours, out);
        return out;
    }

    /// Framing only (before the reader allocates): version, mode, the chunk's token count, and a
    /// token stream that fits the payload.
    void check_payload(std::span<const std::uint8_t> payload, const kv_layout& L) const {
        byte_reader r(payload, "token chunk");
        if (r.get<std::uint8_t>() != 1) throw format_error("token codec: unknown payload version");
        if (r.get<std::uint8_t>() != std::uint8_t(mode_)) throw format_error("token codec: payload mode differs from the file's");
        if (r.get<std::uint32_t>() != L.tokens) throw format_error("token codec: chunk token count mismatch");
        (void)r.get<std::uint64_t>(), (void)r.get<std::uint64_t>();
        (void)r.get_bytes(r.get<std::uint32_t>());
        if (mode_ == mode::tokens && !r.at_end()) throw format_error("token codec: trailing bytes");
        if (is_hybrid(mode_)) {
            const auto c = detail::read_choice(r);
            const auto rest = payload.subspan(r.position());
            if (c == hybrid_choice::recompute && !rest.empty()) throw format_error("token codec: trailing bytes after a recompute chunk");
            if (c == hybrid_choice::stored && stored_->check_payload) stored_->check_payload(rest, L);
        }
    }

    void decode(std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) const {
        byte_reader r(payload);
        if (r.get<std::uint8_t>() != 1) throw format_error("token codec: unknown payload version");
        const auto m = r.get<std::uint8_t>();
        if (m != std::uint8_t(mode_)) throw format_error("token codec: payload mode differs from the file's");
        const std::uint32_t n = r.get<std::uint32_t>();
        if (n != in.token_count() || n != out.layout.tokens) throw format_error("token codec: chunk token count mismatch");
        check_layout(out.layout);
        const std::uint64_t want_ids = r.get<std::uint64_t>(), want_kv = r.get<std::uint64_t>();
        const std::uint32_t token_len = r.get<std::uint32_t>();
        const auto token_stream = r.get_bytes(token_len);
        auto& st = state_for(in);
        auto& session = *st.session;
        auto remember = [&st](std::size_t, std::span<const std::uint32_t> f) { st.next.assign(f.begin(), f.end()); };
        std::vector<std::int32_t> ids(n);
        if (!codes_under_model(mode_)) {
            range_decoder dec(token_stream);
            for (std::uint32_t i = 0; i < n; ++i) ids[i] = decode_first(dec);
            if (dec.overrun_bytes() > 3) throw format_error("token codec: token stream truncated");
            if (ids_hash(ids) != want_ids) throw checksum_error("token codec: decoded token ids differ from the encoder's (corrupt stream)");
            if (is_hybrid(mode_)) return decode_hybrid(payload.subspan(r.position()), in, session, want_kv, std::move(ids), out);
            session.extend(ids, {});  // the decoder's price: one batched pass
        } else {
            range_decoder dec(token_stream);
            detail::split_table table;
            const std::uint32_t vocab = model_->vocab_size();
            for (std::uint32_t i = 0; i < n; ++i) {
                if (session.length() == 0) {
                    ids[i] = decode_first(dec);
                } else {
                    table.set(st.next);
                    const std::size_t b = detail::decode_in(dec, table.high());
                    const std::size_t t = b * detail::block_size + detail::decode_in(dec, table.low(b));
                    if (t >= vocab) throw format_error("token codec: corrupt token stream");
                    ids[i] = std::int32_t(t);
                }
                if (dec.overrun_bytes() > 3) throw format_error("token codec: token stream truncated (corrupt, or decoded under a model that computes other bits: desync)");
                session.extend(std::span(ids).subspan(i, 1), remember);  // token by token: the decoder's price
            }
        }
        if (ids_hash(ids) != want_ids)
            throw checksum_error("token codec: decoded token ids differ from the encoder's (corrupt stream, or a model that computes other bits: desync)");
        session.kv(session.length() - n, session.length(), out);
        if (content_hash64(out.bytes) != want_kv)
            throw checksum_error("token codec: the recomputed KV differs from the encoder's (another model or other arithmetic: desync)");
        out.token_ids = std::move(ids);
        if (mode_ != mode::tokens) decode_correction(payload.subspan(r.position()), out);
        else if (!r.at_end()) throw format_error("token codec: trailing bytes after the token stream");
    }

    const model::language_model& model() const { return *model_; }
    enum mode coding_mode() const { return mode_; }
    float bound() const { return bound_; }
    const hybrid_cost& cost() const { return cost_; }

private:
    byte_vector header(std::span<const std::int32_t> ids, std::uint64_t kv_hash, const byte_vector& tokens_bytes) const {
        byte_vector out;
        byte_writer w(out);
        w.put<std::uint8_t>(1);
        w.put<std::uint8_t>(std::uint8_t(mode_));
        w.put<std::uint32_t>(std::uint32_t(ids.size()));
        w.put<std::uint64_t>(ids_hash(ids));
        w.put<std::uint64_t>(kv_hash);
        w.put<std::uint32_t>(std::uint32_t(tokens_bytes.size()));
        w.put_bytes(tokens_bytes);
        return out;
    }

    /// The stored codec's view of the chunk (no carry; the ids as the decoder will have them).
    static chunk_input stored_input(const chunk_input& in, std::span<const std::int32_t> ids) {
        chunk_input s = in;
        s.carry = nullptr;
        s.token_ids = ids;
        return s;
    }

    /// Modes 4-5 (see the file comment): the stored candidate first; the model runs only when its
    /// compute alone leaves it a chance. The session ends holding the chunk's restored KV.
    byte_vector encode_hybrid(const chunk_input& in, model::model_session& session, const byte_vector& tokens_bytes) const {
        const auto& layout = in.cache->layout;
        const auto ids = in.token_ids;
        const std::uint64_t n = in.token_count(), p0 = session.length();
        chunk_buffer input = copy_tokens(*in.cache, in.begin, in.end, layout.layers, layout.type);
        const double kv_bytes = double(input.bytes.size());
        const double common = double(detail::header_bytes + tokens_bytes.size() + 1);
        const byte_vector stored = stored_->encode(stored_input(in, ids));
        const double t_stored = cost_.seconds(common + double(stored.size()), 0, kv_bytes, cost_.stored_decode);
        const double flops = model_->forward_flops(p0, p0 + n);
        hybrid_choice choice = hybrid_choice::stored;
        std::uint64_t kv_hash = 0;
        byte_vector residual;
        chunk_buffer restored;  // bounded: the residual's reconstruction (the model ran), else the stored codec's
        if (cost_.seconds(common, flops, 0, 1) < t_stored) {
            session.extend(ids, {});
            chunk_buffer ours = chunk_buffer::for_layout(layout, n);
            session.kv(p0, p0 + n, ours);
            encode_correction(in, ours, residual);
            if (is_bounded(mode_)) {
                restored = ours;
                decode_correction(residual, restored);
            }
            const bool zero = (is_bounded(mode_) ? restored.bytes : input.bytes) == ours.bytes;
            const double t_model = zero ? cost_.seconds(common, flops, 0, 1)
                                        : cost_.seconds(common + double(residual.size()), flops, kv_bytes, cost_.residual_decode);
            if (t_model < t_stored) {
                choice = zero ? hybrid_choice::recompute : hybrid_choice::residual;
                kv_hash = content_hash64(ours.bytes);
            }
        }
        if (!is_bounded(mode_)) {
            restored = std::move(input);  // bit-exact: every choice restores the input
        } else if (choice == hybrid_choice::stored) {  // closed loop: the context gets what the decoder will have
            restored = chunk_buffer::for_layout(layout, n);
            stored_->decode(stored, stored_input(in, ids), restored);
        }
        if (choice == hybrid_choice::stored) kv_hash = content_hash64(restored.bytes);
        session.assign_kv(p0, ids, restored);
        byte_vector out = header(ids, kv_hash, tokens_bytes);
        out.push_back(std::uint8_t(choice));
        if (choice == hybrid_choice::stored) out.insert(out.end(), stored.begin(), stored.end());
        if (choice == hybrid_choice::residual) out.insert(out.end(), residual.begin(), residual.end());
        return out;
    }

    void decode_hybrid(std::span<const std::uint8_t> rest, const chunk_input& in, model::model_session& session, std::uint64_t want_kv,
                       std::vector<std::int32_t> ids, chunk_buffer& out) const {
        byte_reader r(rest, "token chunk");
        const auto c = detail::read_choice(r);
        const auto body = rest.subspan(r.position());
        const std::uint64_t p0 = session.length(), n = ids.size();
        if (c == hybrid_choice::stored) {
            stored_->decode(body, stored_input(in, ids), out);
            if (content_hash64(out.bytes) != want_kv)
                throw checksum_error("token codec: a stored chunk decodes to other KV than the encoder's (corrupt payload or another stored codec)");
        } else {
            session.extend(ids, {});  // the decoder's price: one batched pass
            session.kv(p0, p0 + n, out);
            if (content_hash64(out.bytes) != want_kv)
                throw checksum_error("token codec: the recomputed KV differs from the encoder's (another model or other arithmetic: desync)");
            if (c == hybrid_choice::residual) decode_correction(body, out);
            else if (!body.empty()) throw format_error("token codec: trailing bytes after a recompute chunk");
        }
        session.assign_kv(p0, ids, out);
        out.token_ids = std::move(ids);
    }

    static std::uint64_t ids_hash(std::span<const std::int32_t> ids) {
        return content_hash64({reinterpret_cast<const std::uint8_t*>(ids.data()), ids.size() * 4});
    }
    /// A token uniform over the vocabulary (position 0 of modes 0-1, every token of modes 2-3).
    void encode_first(range_encoder& enc, std::int32_t t) const { enc.encode_with_total(std::uint32_t(t), 1, model_->vocab_size()); }
    std::int32_t decode_first(range_decoder& dec) const {
        const std::uint32_t t = dec.decode_slot_with_total(model_->vocab_size());  // < vocab
        dec.consume(t, 1);
        return std::int32_t(t);
    }

    void check_layout(const kv_layout& l) const {
        const auto s = model_->kv_shape();
        if (l.layers != s.layers || l.kv_heads != s.kv_heads || l.head_dim != s.head_dim)
            throw usage_error("token codec: the cache's shape (layers, kv heads, head dim) is not the model's");
        if (l.type != dtype::bf16 && l.type != dtype::f16 && l.type != dtype::f32)
            throw usage_error("token codec: KV dtype must be bf16, f16 or f32");
    }

    /// The stream's state in the carry (created at position 0); its session must hold exactly the
    /// tokens before the chunk, and `next` the table after the last of them.
    detail::carry_state& state_for(const chunk_input& in) const {
        require_usage(in.carry != nullptr, "token codec: chunks are dependent (the container passes a carry)");
        if (!in.carry->has_value()) {
            if (in.first_position() != 0)
                throw usage_error("token codec: a keyframe after token 0 (token mode needs the whole context: keyframe interval unbounded)");
            *in.carry = detail::carry_state{std::shared_ptr<model::model_session>(model_->session(threads_)), {}};
        }
        auto* st = std::any_cast<detail::carry_state>(in.carry);
        if (st == nullptr) throw usage_error("token codec: foreign carry");
        if (st->session->length() != in.first_position()) throw format_error("token codec: chunk does not continue the previous one");
        if (codes_under_model(mode_) && st->session->length() != 0 && st->next.size() != model_->vocab_size())
            throw usage_error("token codec: carry without a next-token table");
        return *st;
    }

    void encode_correction(const chunk_input& in, const chunk_buffer& ours, byte_vector& out) const {
        if (mode_ == mode::corrected) encode_correction_with<detail::correction_coder>(in, ours, out);
        else encode_correction_with<detail::residual_coder>(in, ours, out);
    }
    void decode_correction(std::span<const std::uint8_t> stream, chunk_buffer& out) const {
        if (mode_ == mode::corrected) decode_correction_with<detail::correction_coder>(stream, out);
        else decode_correction_with<detail::residual_coder>(stream, out);
    }

    template <class Coder>
    void encode_correction_with(const chunk_input& in, const chunk_buffer& ours, byte_vector& out) const {
        const auto& layout = in.cache->layout;
        const unsigned width = unsigned(dtype_size(layout.type)) * 8;
        const std::size_t es = width / 8;
        const std::uint32_t mask = width == 32 ? ~0u : (1u << width) - 1;
        range_encoder enc(out);
        std::vector<std::uint8_t> block(ours.block_bytes());
        Coder coder(layout.head_dim);
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (auto kind : {kv_kind::key, kv_kind::value}) {
                gather_block(in.cache->tensor(l, kind), in.begin, in.end, block);
                const auto mine = ours.block(l, kind);
                coder.start_block();
                for (std::size_t i = 0, e = 0; i < block.size(); i += es, ++e) {
                    const std::uint32_t x = detail::load_bits(&block[i], width), p = detail::load_bits(&mine[i], width);
                    if constexpr (std::is_same_v<Coder, detail::residual_coder>) {
                        if (is_bounded(mode_)) {
                            encode_bounded(enc, coder, e, x, p, layout.type);
                            continue;
                        }
                    }
                    const std::uint32_t d = (detail::ord(x, width) - detail::ord(p, width)) & mask;
                    const std::int32_t sd = width == 32 ? std::int32_t(d) : std::int32_t(std::int16_t(std::uint16_t(d)));
                    coder.encode(enc, e, zigzag(sd));
                }
            }
        enc.finish();
    }

    /// Mode 3, one element (see the file comment).
    void encode_bounded(range_encoder& enc, detail::residual_coder& coder, std::size_t e, std::uint32_t x_bits, std::uint32_t p_bits,
                        dtype t) const {
        const float x = detail::value_of(x_bits, t), p = detail::value_of(p_bits, t);
        if (!std::isfinite(x))
            throw usage_error("token codec: the bounded residual mode needs finite KV (a NaN or inf element; the lossless residual mode keeps any bits)");
        const double step = 2.0 * double(bound_);
        const double q0 = std::nearbyint((double(x) - double(p)) / step);
        auto escape = [&] {  // the value itself
            coder.encode(enc, e, detail::escape_zz);
            const unsigned width = unsigned(dtype_size(t)) * 8;
            for (unsigned b = 0; b < width; b += 16) enc.encode_raw_bits((x_bits >> b) & 0xFFFFu, 16);
        };
        if (!(std::fabs(q0) <= detail::max_residual_q)) return escape();  // far outside the bound's grid
        std::int64_t best = std::int64_t(q0);
        std::uint32_t best_bits = 0;
        double best_err = INFINITY;
        for (const std::int64_t q : {std::int64_t(q0), std::int64_t(q0) - 1, std::int64_t(q0) + 1}) {
            const std::uint32_t bits = detail::bounded_bits(p_bits, q, step, t);
            const double err = std::fabs(double(x) - double(detail::value_of(bits, t)));  // inf (overflow) or NaN never wins
            if (err < best_err || (err == best_err && std::llabs(q) < std::llabs(best))) best = q, best_err = err, best_bits = bits;
        }
        // The guarantee: |x − output| <= bound + half the dtype's step at x or at the output. Where the
        // grid cannot give it (a reconstruction that overflows the dtype near its largest value, double
        // rounding through float), the element escapes.
        if (!(best_err <= double(bound_) + std::max(detail::half_step(x_bits, t), detail::half_step(best_bits, t)))) return escape();
        coder.encode(enc, e, zigzag(std::int32_t(best)));
    }

    template <class Coder>
    void decode_correction_with(std::span<const std::uint8_t> stream, chunk_buffer& out) const {
        const unsigned width = unsigned(dtype_size(out.layout.type)) * 8;
        const std::size_t es = width / 8;
        const std::uint32_t mask = width == 32 ? ~0u : (1u << width) - 1;
        range_decoder dec(stream);
        Coder coder(out.layout.head_dim);
        for (std::uint32_t l = 0; l < out.layout.layers; ++l)
            for (auto kind : {kv_kind::key, kv_kind::value}) {
                auto blk = out.block(l, kind);
                coder.start_block();
                for (std::size_t i = 0, e = 0; i < blk.size(); i += es, ++e) {
                    const std::uint32_t zz = coder.decode(dec, e);
                    if constexpr (std::is_same_v<Coder, detail::residual_coder>) {
                        if (is_bounded(mode_)) {
                            std::uint32_t bits = 0;
                            if (zz == detail::escape_zz)
                                for (unsigned b = 0; b < width; b += 16) bits |= dec.decode_raw_bits(16) << b;
                            else
                                bits = detail::bounded_bits(detail::load_bits(&blk[i], width), unzigzag(zz), 2.0 * double(bound_), out.layout.type);
                            std::memcpy(&blk[i], &bits, es);
                            continue;
                        }
                    }
                    const std::uint32_t d = std::uint32_t(unzigzag(zz)) & mask;
                    const std::uint32_t bits = detail::unord((detail::ord(detail::load_bits(&blk[i], width), width) + d) & mask, width);
                    std::memcpy(&blk[i], &bits, es);
                }
                if (dec.overrun_bytes() > 3) throw format_error("token codec: correction stream truncated");
            }
    }

    std::shared_ptr<const model::language_model> model_;
    mode mode_;
    unsigned threads_;
    float bound_ = 0;
    std::shared_ptr<const any_chunk_codec> stored_;
    hybrid_cost cost_;
};

}  // namespace seqkv::tokens

SEQKV_FP_STRICT_END
