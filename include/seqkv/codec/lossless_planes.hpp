// Lossless coding of one [heads, tokens, head_dim] block of raw float elements, bit-exact for
// any bit pattern (NaN payloads, -0.0, subnormals, Inf).
//
// Each element's bits are first passed through a bit-domain predictor (none, or XOR with the same
// channel of the previous token), then split into byte planes whose first plane holds the
// exponent: for 16-bit types plane 0 = bits 14..7 and plane 1 = sign << 7 | bits 6..0; for fp32
// plane 0 = bits 30..23, plane 1 = sign << 7 | bits 22..16, planes 2, 3 = the low mantissa
// bytes; fp8 has one plane. Plane 0 is coded with one context per *channel class* (channels of
// similar mean exponent share a table; the class map is side information), the other planes
// with a per-plane choice of context (none, channel class, or the element's plane-0 byte bucket).
// The encoder tries the variants and keeps the cheapest in real coded bytes.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "seqkv/coding/rans_block.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"

namespace seqkv::lossless {

/// Bit-domain prediction applied before the plane split.
enum class bit_predictor : std::uint8_t {
    none = 0,                 ///< code the bits as they are
    xor_previous_token = 1,   ///< bits XOR the same channel's bits one token earlier
    xor_same_token = 2,       ///< bits XOR the last earlier token with the same id (else as they are)
    xor_same_or_previous = 3, ///< bits XOR the last earlier token with the same id, else the previous token
};

/// Context choice for planes after the first.
enum class plane_context : std::uint8_t {
    none = 0,           ///< one table for the plane
    channel_class = 1,  ///< the element's channel class
    exponent = 2,       ///< bucket of the element's plane-0 byte
};

/// Dimensions of a block of elements.
struct block_shape {
    std::uint32_t heads = 0;
    std::uint64_t tokens = 0;
    std::uint32_t head_dim = 0;
    std::uint64_t elements() const { return std::uint64_t(heads) * tokens * head_dim; }
    std::uint64_t channels() const { return std::uint64_t(heads) * head_dim; }
};

/// Encoder choices (the decoder reads what was chosen from the stream).
struct plane_options {
    std::uint32_t max_channel_classes = 24;  // contexts for plane 0
    bool try_xor_previous_token = true;
    bool try_same_token = true;  // needs the chunk's token ids
    coding::rans::decode_path decode_path = coding::rans::decode_path::automatic;
};

namespace detail {

inline constexpr std::uint32_t exponent_buckets = 16;

inline std::uint32_t plane_count(dtype t) { return static_cast<std::uint32_t>(dtype_size(t)); }

/// Loads element i as an unsigned integer of the dtype's width.
inline std::uint32_t load_bits(const std::uint8_t* p, std::size_t es, std::size_t i) {
    std::uint32_t u = 0;
    for (std::size_t b = 0; b < es; ++b) u |= std::uint32_t(p[i * es + b]) << (8 * b);
    return u;
}
inline void store_bits(std::uint8_t* p, std::size_t es, std::size_t i, std::uint32_t u) {
    for (std::size_t b = 0; b < es; ++b) p[i * es + b] = static_cast<std::uint8_t>(u >> (8 * b));
}

/// Splits an element's bits into planes (plane 0 = exponent byte).
inline void split(std::uint32_t u, std::size_t es, std::uint8_t* planes_out) {
    if (es == 1) {
        planes_out[0] = static_cast<std::uint8_t>(u);
    } else if (es == 2) {
        planes_out[0] = static_cast<std::uint8_t>(u >> 7);
        planes_out[1] = static_cast<std::uint8_t>(((u >> 15) << 7) | (u & 0x7f));
    } else {
        planes_out[0] = static_cast<std::uint8_t>(u >> 23);
        planes_out[1] = static_cast<std::uint8_t>(((u >> 31) << 7) | ((u >> 16) & 0x7f));
        planes_out[2] = static_cast<std::uint8_t>(u >> 8);
        planes_out[3] = static_cast<std::uint8_t>(u);
    }
}
inline std::uint32_t join(const std::uint8_t* p, std::size_t es) {
    if (es == 1) return p[0];
    if (es == 2) return (std::uint32_t(p[1] >> 7) << 15) | (std::uint32_t(p[0]) << 7) | (p[1] & 0x7fu);
    return (std::uint32_t(p[1] >> 7) << 31) | (std::uint32_t(p[0]) << 23) | (std::uint32_t(p[1] & 0x7f) << 16) |
           (std::uint32_t(p[2]) << 8) | p[3];
}

inline constexpr std::uint64_t no_reference = ~std::uint64_t{0};

/// Reference token of every token under predictor p (no_reference = code as is); always < t.
inline std::vector<std::uint64_t> reference_tokens(bit_predictor p, std::uint64_t tokens, std::span<const std::int32_t> ids) {
    std::vector<std::uint64_t> ref(tokens, no_reference);
    if (p == bit_predictor::xor_previous_token) {
        for (std::uint64_t t = 1; t < tokens; ++t) ref[t] = t - 1;
    } else if (p == bit_predictor::xor_same_token || p == bit_predictor::xor_same_or_previous) {
        std::unordered_map<std::int32_t, std::uint64_t> last;
        for (std::uint64_t t = 0; t < tokens; ++t) {
            auto it = last.find(ids[t]);
            if (it != last.end()) ref[t] = it->second;
            else if (p == bit_predictor::xor_same_or_previous && t > 0) ref[t] = t - 1;
            last[ids[t]] = t;
        }
    }
    return ref;
}

/// Applies (or, with inverse, undoes) the bit predictor along the token axis, in place.
/// Layout [heads][tokens][head_dim]; element bits held in u32. References point backwards, so
/// the forward pass runs from the last token down and the inverse from the first token up.
inline void apply_predictor(std::vector<std::uint32_t>& bits, const block_shape& s, std::span<const std::uint64_t> ref,
                            bool inverse) {
    const std::size_t D = s.head_dim;
    for (std::uint32_t h = 0; h < s.heads; ++h) {
        std::uint32_t* base = bits.data() + std::size_t(h) * s.tokens * D;
        auto one = [&](std::uint64_t t) {
            if (ref[t] == no_reference) return;
            for (std::size_t c = 0; c < D; ++c) base[t * D + c] ^= base[ref[t] * D + c];
        };
        if (!inverse)
            for (std::uint64_t t = s.tokens; t-- > 0;) one(t);
        else
            for (std::uint64_t t = 0; t < s.tokens; ++t) one(t);
    }
}

/// Channel classes from plane 0: channels sorted into up to max_classes groups of similar mean.
inline std::vector<std::uint8_t> channel_classes(std::span<const std::uint8_t> plane0, const block_shape& s,
                                                 std::uint32_t max_classes) {
    const std::size_t D = s.head_dim;
    std::vector<std::uint64_t> sums(s.channels(), 0);
    for (std::uint32_t h = 0; h < s.heads; ++h)
        for (std::uint64_t t = 0; t < s.tokens; ++t)
            for (std::size_t c = 0; c < D; ++c) sums[h * D + c] += plane0[(h * s.tokens + t) * D + c];
    // Rank channels by mean, cut the ranking into equal-size classes (integer arithmetic only).
    std::vector<std::uint32_t> order(s.channels());
    for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return sums[a] < sums[b]; });
    const std::uint32_t classes = std::max<std::uint32_t>(1, std::min<std::uint64_t>(max_classes, s.channels()));
    std::vector<std::uint8_t> cls(s.channels());
    for (std::size_t r = 0; r < order.size(); ++r) cls[order[r]] = static_cast<std::uint8_t>(r * classes / order.size());
    return cls;
}

inline std::uint8_t exponent_bucket(std::uint8_t plane0) {
    return static_cast<std::uint8_t>(std::min<std::uint32_t>(plane0 / 8, exponent_buckets - 1));
}

/// Context of every element for a plane given the context choice.
inline void make_contexts(plane_context choice, std::span<const std::uint8_t> plane0, std::span<const std::uint8_t> cls,
                          const block_shape& s, std::vector<std::uint8_t>& ctx) {
    ctx.resize(plane0.size());
    const std::size_t D = s.head_dim;
    if (choice == plane_context::channel_class) {
        for (std::uint32_t h = 0; h < s.heads; ++h)
            for (std::uint64_t t = 0; t < s.tokens; ++t) {
                const std::size_t o = (h * s.tokens + t) * D;
                for (std::size_t c = 0; c < D; ++c) ctx[o + c] = cls[h * D + c];
            }
    } else if (choice == plane_context::exponent) {
        for (std::size_t i = 0; i < plane0.size(); ++i) ctx[i] = exponent_bucket(plane0[i]);
    } else {
        std::fill(ctx.begin(), ctx.end(), std::uint8_t{0});
    }
}

inline std::uint32_t context_count(plane_context choice, std::uint32_t classes) {
    return choice == plane_context::channel_class ? classes : choice == plane_context::exponent ? exponent_buckets : 1;
}

}  // namespace detail

}  // namespace seqkv::lossless

namespace seqkv::lossless {

/// Encodes a [heads, tokens, head_dim] block of raw little-endian elements of KV float type t.
/// token_ids (one per token, or empty) enable the same-token predictors.
inline byte_vector encode_block(std::span<const std::uint8_t> raw, dtype t, const block_shape& s,
                                const plane_options& options = {}, std::span<const std::int32_t> token_ids = {}) {
    using namespace detail;
    const std::size_t es = dtype_size(t), n = s.elements();
    require_usage(is_kv_float(t), "lossless: not a KV float dtype");
    require_usage(raw.size() == n * es, "lossless: block size does not match its shape");
    require_usage(token_ids.empty() || token_ids.size() == s.tokens, "lossless: one token id per token");
    std::vector<std::uint32_t> bits(n);
    for (std::size_t i = 0; i < n; ++i) bits[i] = load_bits(raw.data(), es, i);

    byte_vector best;
    for (bit_predictor pred : {bit_predictor::none, bit_predictor::xor_previous_token, bit_predictor::xor_same_token,
                               bit_predictor::xor_same_or_previous}) {
        if (pred == bit_predictor::xor_previous_token && !options.try_xor_previous_token) continue;
        if ((pred == bit_predictor::xor_same_token || pred == bit_predictor::xor_same_or_previous) &&
            (token_ids.empty() || !options.try_same_token))
            continue;
        std::vector<std::uint32_t> residual = bits;
        apply_predictor(residual, s, reference_tokens(pred, s.tokens, token_ids), false);
        const std::uint32_t planes = plane_count(t);
        std::vector<std::vector<std::uint8_t>> plane(planes, std::vector<std::uint8_t>(n));
        std::uint8_t tmp[4];
        for (std::size_t i = 0; i < n; ++i) {
            split(residual[i], es, tmp);
            for (std::uint32_t p = 0; p < planes; ++p) plane[p][i] = tmp[p];
        }
        const auto cls = channel_classes(plane[0], s, options.max_channel_classes);
        const std::uint32_t classes = n == 0 ? 1 : std::min<std::uint32_t>(options.max_channel_classes,
                                                                           std::max<std::uint64_t>(1, s.channels()));
        byte_vector out;
        byte_writer w(out);
        w.put<std::uint8_t>(static_cast<std::uint8_t>(pred));
        w.put<std::uint8_t>(static_cast<std::uint8_t>(classes));
        if (classes > 1) w.put_bytes(cls);
        std::vector<std::uint8_t> ctx;
        for (std::uint32_t p = 0; p < planes; ++p) {
            byte_vector best_plane;
            plane_context best_choice = plane_context::none;
            for (plane_context choice : {plane_context::channel_class, plane_context::none, plane_context::exponent}) {
                if (p == 0 && choice == plane_context::exponent) continue;
                make_contexts(choice, plane[0], cls, s, ctx);
                auto coded = coding::encode_bytes(plane[p], ctx, context_count(choice, classes));
                if (best_plane.empty() || coded.size() < best_plane.size()) {
                    best_plane = std::move(coded);
                    best_choice = choice;
                }
            }
            w.put<std::uint8_t>(static_cast<std::uint8_t>(best_choice));
            w.put<std::uint32_t>(static_cast<std::uint32_t>(best_plane.size()));
            w.put_bytes(best_plane);
        }
        if (best.empty() || out.size() < best.size()) best = std::move(out);
    }
    return best;
}

/// Decodes a block written by encode_block into out (raw little-endian elements of type t).
/// Throws format_error on any inconsistency; never reads outside `coded`.
inline void decode_block(std::span<const std::uint8_t> coded, dtype t, const block_shape& s, std::span<std::uint8_t> out,
                         coding::rans::decode_path path = coding::rans::decode_path::automatic,
                         std::span<const std::int32_t> token_ids = {}) {
    using namespace detail;
    const std::size_t es = dtype_size(t), n = s.elements();
    require_usage(out.size() == n * es, "lossless: output size does not match the block shape");
    byte_reader r(coded, "lossless block");
    const auto pred = r.get<std::uint8_t>();
    if (pred > static_cast<std::uint8_t>(bit_predictor::xor_same_or_previous)) throw format_error("lossless block: unknown predictor");
    if (pred >= static_cast<std::uint8_t>(bit_predictor::xor_same_token) && token_ids.size() != s.tokens)
        throw format_error("lossless block: same-token prediction without token ids");
    const std::uint32_t classes = r.get<std::uint8_t>();
    if (classes == 0 || classes > s.channels() + (n == 0)) throw format_error("lossless block: bad class count");
    std::vector<std::uint8_t> cls(s.channels(), 0);
    if (classes > 1) {
        auto b = r.get_bytes(cls.size());
        std::copy(b.begin(), b.end(), cls.begin());
        for (auto c : cls)
            if (c >= classes) throw format_error("lossless block: channel class out of range");
    }
    const std::uint32_t planes = plane_count(t);
    std::vector<std::vector<std::uint8_t>> plane(planes, std::vector<std::uint8_t>(n));
    std::vector<std::uint8_t> ctx;
    for (std::uint32_t p = 0; p < planes; ++p) {
        const auto choice = r.get<std::uint8_t>();
        if (choice > static_cast<std::uint8_t>(plane_context::exponent) || (p == 0 && choice == 2))
            throw format_error("lossless block: bad plane context");
        const auto len = r.get<std::uint32_t>();
        auto bytes = r.get_bytes(len);
        make_contexts(static_cast<plane_context>(choice), plane[0], cls, s, ctx);
        coding::decode_bytes(bytes, ctx, plane[p], path);
    }
    if (!r.at_end()) throw format_error("lossless block: trailing bytes");
    std::vector<std::uint32_t> bits(n);
    std::uint8_t tmp[4];
    for (std::size_t i = 0; i < n; ++i) {
        for (std::uint32_t p = 0; p < planes; ++p) tmp[p] = plane[p][i];
        bits[i] = join(tmp, es);
    }
    apply_predictor(bits, s, reference_tokens(static_cast<bit_predictor>(pred), s.tokens, token_ids), true);
    for (std::size_t i = 0; i < n; ++i) store_bits(out.data(), es, i, bits[i]);
}

}  // namespace seqkv::lossless
