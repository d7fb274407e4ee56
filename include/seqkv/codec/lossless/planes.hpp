// Public: lossless coding of one [heads, tokens, head_dim] block of raw float elements, bit-exact for
// any bit pattern (NaN payloads, -0.0, subnormals, Inf). Normative layout: docs/FORMAT.md,
// "Codec 1: lossless".
//
// Pipeline per element u (the element's little-endian integer):
//   r = u XOR u[ref(t)] (bit-domain predictor along the token axis), or, for rows without a
//   reference, r = u XOR sign_flip[channel] << (width - 1) (optional per-channel sign map);
//   the copy predictor instead drops rows that equal their same-id reference (row bitmap); the
//   rotate predictor (keys, RoPE parameters known) codes bitmap rows as zigzag integer residuals
//   against their same-id reference rotated by the relative RoPE angle (detail/rope.hpp)
// then r is split into byte planes whose plane 0 holds the exponent (16-bit types: plane 0 =
// bits 14..7, plane 1 = sign << 7 | bits 6..0; fp32: plane 0 = bits 30..23, plane 1 = sign << 7 |
// bits 22..16, planes 2, 3 = low mantissa bytes; fp8: one plane = r). Plane 0 is coded with one
// context per channel class (channels of similar mean exponent share a table; the class map is
// side information); each other plane picks one context, the channel class, the plane-0 byte
// bucket, or is stored raw. The encoder picks predictor, class count, sign map and plane modes
// from histogram cost estimates (detail/cost.hpp) and then encodes once; the predictor search
// estimates on a sample of tokens (plane_options::estimate_stride), the plan on every element.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>  // for detail/encode.hpp, included below inside the fp-strict region
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "seqkv/codec/lossless/detail/cost.hpp"
#include "seqkv/codec/lossless/detail/rope.hpp"
#include "seqkv/coding/rans_block.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossless {

static_assert(std::endian::native == std::endian::little, "lossless planes load elements with memcpy");

/// Bit-domain prediction applied before the plane split.
enum class bit_predictor : std::uint8_t {
    none = 0,                 ///< code the bits as they are
    xor_previous_token = 1,   ///< bits XOR the same channel's bits one token earlier
    xor_same_token = 2,       ///< bits XOR the last earlier token with the same id (else as they are)
    xor_same_or_previous = 3, ///< bits XOR the last earlier token with the same id, else the previous token
    copy_same_token = 4,      ///< rows equal to the last earlier same-id row are copied (bitmap), others coded as they are
    rotate_same_token = 5,    ///< rows (bitmap) predicted as the last earlier same-id row rotated by RoPE (needs rope parameters)
};

/// How a plane is stored.
enum class plane_context : std::uint8_t {
    none = 0,           ///< rANS, one table for the plane
    channel_class = 1,  ///< rANS, the element's channel class selects the table
    exponent = 2,       ///< rANS, bucket of the element's plane-0 byte selects the table (not plane 0)
    stored = 3,         ///< the plane's bytes as they are
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
    std::uint32_t max_channel_classes = 24;  // most contexts for plane 0
    bool try_xor_previous_token = true;
    bool try_same_token = true;  // needs the chunk's token ids
    bool try_sign_map = true;    // per-channel sign flip map
    /// A plane is stored raw unless entropy coding is estimated to save more than this fraction
    /// of its bytes (trades a little ratio for decode speed on near-random mantissa planes).
    double min_coding_gain = 0.0;
    /// The predictor search estimates each predictor's cost on every estimate_stride-th token of
    /// the block (0: automatic, 1: every token; the final plan always counts every element). The
    /// choice only moves the encoder's speed and the ratio; the decoder reads what was chosen.
    std::uint32_t estimate_stride = 0;
    coding::rans::decode_path decode_path = coding::rans::decode_path::automatic;
    /// RoPE parameters of the keys; with token ids they enable (and decoding needs them for) the
    /// rotated same-token predictor. Recorded in the codec params.
    std::optional<rope::parameters> rope;
};

namespace detail {

inline constexpr std::uint32_t exponent_buckets = 16;
inline constexpr std::uint64_t no_reference = ~std::uint64_t{0};

inline std::uint8_t exponent_bucket(std::uint8_t plane0) {
    return static_cast<std::uint8_t>(std::min<std::uint32_t>(plane0 / 8, exponent_buckets - 1));
}

/// Unsigned integer of each element width.
template <std::size_t Bytes>
using uint_of = std::conditional_t<Bytes == 1, std::uint8_t, std::conditional_t<Bytes == 2, std::uint16_t, std::uint32_t>>;

template <class U>
inline constexpr U sign_bit = static_cast<U>(U(1) << (8 * sizeof(U) - 1));

/// Plane p's byte of residual bits r (plane 0 = exponent byte).
template <class U, std::size_t P>
inline std::uint8_t plane_byte(U r) {
    if constexpr (sizeof(U) == 1) return r;
    else if constexpr (sizeof(U) == 2) {
        if constexpr (P == 0) return static_cast<std::uint8_t>(r >> 7);
        else return static_cast<std::uint8_t>(((r >> 8) & 0x80) | (r & 0x7f));
    } else {
        if constexpr (P == 0) return static_cast<std::uint8_t>(r >> 23);
        else if constexpr (P == 1) return static_cast<std::uint8_t>(((r >> 24) & 0x80) | ((r >> 16) & 0x7f));
        else if constexpr (P == 2) return static_cast<std::uint8_t>(r >> 8);
        else return static_cast<std::uint8_t>(r);
    }
}
template <class U>
inline std::uint8_t plane_byte(U r, std::size_t p) {
    switch (p) {
        case 0: return plane_byte<U, 0>(r);
        case 1: return plane_byte<U, 1>(r);
        case 2: return plane_byte<U, 2>(r);
        default: return plane_byte<U, 3>(r);
    }
}
/// Inverse of the plane split.
inline std::uint8_t join1(std::uint8_t a) { return a; }
inline std::uint16_t join2(std::uint8_t a, std::uint8_t b) {
    return static_cast<std::uint16_t>(((b & 0x80u) << 8) | (std::uint32_t(a) << 7) | (b & 0x7fu));
}
inline std::uint32_t join4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    return (std::uint32_t(b & 0x80u) << 24) | (std::uint32_t(a) << 23) | (std::uint32_t(b & 0x7fu) << 16) |
           (std::uint32_t(c) << 8) | d;
}
/// The value channels are ranked by for classing: the exponent field (fp8: the byte without sign).
template <class U>
inline std::uint32_t class_key(std::uint8_t plane0) {
    return sizeof(U) == 1 ? (plane0 & 0x7fu) : plane0;
}

template <class U>
inline U load(const std::uint8_t* p, std::size_t i) {
    U u;
    std::memcpy(&u, p + i * sizeof(U), sizeof(U));
    return u;
}
template <class U>
inline void store(std::uint8_t* p, std::size_t i, U u) {
    std::memcpy(p + i * sizeof(U), &u, sizeof(U));
}

}  // namespace detail

/// Reference tokens of a chunk for each predictor (and the RoPE rotation tables of the rotated
/// predictor), computed once and shared by all its blocks.
class token_references {
public:
    token_references(std::uint64_t tokens, std::span<const std::int32_t> ids, std::optional<rope::parameters> rope = std::nullopt)
        : tokens_(tokens), ids_(ids), rope_(rope) {
        require_usage(ids.empty() || ids.size() == tokens, "lossless: one token id per token");
        require_usage(!rope || rope::valid(*rope), "lossless: invalid rope parameters");
    }
    bool has_ids() const { return !ids_.empty() || tokens_ == 0; }
    const std::optional<rope::parameters>& rope() const { return rope_; }
    /// Rotation tables of the rotated predictor for head_dim (even; rope parameters and ids present).
    /// Safe to call from several threads at once (the blocks of a chunk run on the executor): the
    /// memo is filled under a lock and an entry, once made, is never replaced or moved.
    const rope::rotation_table& rotations(std::uint32_t head_dim) const {
        const auto refs = get(bit_predictor::rotate_same_token);
        std::lock_guard lock(memo_mutex_);
        for (const auto& [dim, table] : rotations_)
            if (dim == head_dim) return *table;
        rotations_.emplace_back(head_dim, std::make_unique<const rope::rotation_table>(*rope_, head_dim, refs, detail::no_reference));
        return *rotations_.back().second;
    }
    std::uint64_t tokens() const { return tokens_; }
    /// ref(t) < t of every token under p (detail::no_reference = none); p must not need ids it lacks.
    std::span<const std::uint64_t> get(bit_predictor p) const {
        std::lock_guard lock(memo_mutex_);
        auto& slot = cache_[static_cast<std::size_t>(p)];
        if (!slot) slot = compute(p);  // a vector's buffer stays put when the optional is never reset
        return *slot;
    }

private:
    std::vector<std::uint64_t> compute(bit_predictor p) const {
        std::vector<std::uint64_t> ref(tokens_, detail::no_reference);
        if (p == bit_predictor::xor_previous_token) {
            for (std::uint64_t t = 1; t < tokens_; ++t) ref[t] = t - 1;
        } else if (p != bit_predictor::none) {  // same id (copy and rotate use the same references)
            std::unordered_map<std::int32_t, std::uint64_t> last;
            last.reserve(tokens_);
            for (std::uint64_t t = 0; t < tokens_; ++t) {
                auto [it, fresh] = last.try_emplace(ids_[t], t);
                if (!fresh) {
                    ref[t] = it->second;
                    it->second = t;
                } else if (p == bit_predictor::xor_same_or_previous && t > 0) {
                    ref[t] = t - 1;
                }
            }
        }
        return ref;
    }
    std::uint64_t tokens_;
    std::span<const std::int32_t> ids_;
    std::optional<rope::parameters> rope_;
    mutable std::mutex memo_mutex_;
    mutable std::array<std::optional<std::vector<std::uint64_t>>, 6> cache_;
    mutable std::vector<std::pair<std::uint32_t, std::unique_ptr<const rope::rotation_table>>> rotations_;
};

}  // namespace seqkv::lossless

#include "seqkv/codec/lossless/detail/encode.hpp"
#include "seqkv/codec/lossless/detail/decode.hpp"

namespace seqkv::lossless {

/// Encodes a [heads, tokens, head_dim] block of raw little-endian elements of KV float type t,
/// with the chunk's reference tokens (shared by its blocks).
inline byte_vector encode_block(std::span<const std::uint8_t> raw, dtype t, const block_shape& s, const plane_options& options,
                                const token_references& refs) {
    const std::size_t es = dtype_size(t);
    require_usage(is_kv_float(t), "lossless: not a KV float dtype");
    require_usage(raw.size() == s.elements() * es, "lossless: block size does not match its shape");
    require_usage(refs.tokens() == s.tokens, "lossless: references for a different token count");
    require_usage(options.max_channel_classes >= 1 && options.max_channel_classes <= 255, "lossless: 1..255 channel classes");
    if (es == 1) return detail::encode_typed<std::uint8_t>(raw, s, options, refs, t);
    if (es == 2) return detail::encode_typed<std::uint16_t>(raw, s, options, refs, t);
    return detail::encode_typed<std::uint32_t>(raw, s, options, refs, t);
}

/// Encodes one block; token_ids (one per token, or empty) enable the same-token predictors
/// (with options.rope also the rotated one).
inline byte_vector encode_block(std::span<const std::uint8_t> raw, dtype t, const block_shape& s, const plane_options& options = {},
                                std::span<const std::int32_t> token_ids = {}) {
    require_usage(token_ids.empty() || token_ids.size() == s.tokens, "lossless: one token id per token");
    return encode_block(raw, t, s, options, token_references(s.tokens, token_ids, options.rope));
}

/// Decodes a block written by encode_block into out (raw little-endian elements of type t),
/// with the chunk's reference tokens. Throws format_error on any inconsistency; never reads
/// outside `coded`.
/// head_stride (0: s.tokens): tokens from one head's rows to the next's in out, which then spans
/// ((heads − 1) · head_stride + tokens) rows (rows of a larger buffer; the others are not touched).
inline void decode_block(std::span<const std::uint8_t> coded, dtype t, const block_shape& s, std::span<std::uint8_t> out,
                         coding::rans::decode_path path, const token_references& refs, std::uint64_t head_stride = 0) {
    const std::size_t es = dtype_size(t);
    if (head_stride == 0) head_stride = s.tokens;
    require_usage(is_kv_float(t), "lossless: not a KV float dtype");
    require_usage(head_stride >= s.tokens, "lossless: head stride below the block's tokens");
    const std::size_t rows = s.heads == 0 || s.tokens == 0 ? 0 : (std::size_t(s.heads) - 1) * head_stride + s.tokens;
    require_usage(out.size() == rows * s.head_dim * es, "lossless: output size does not match the block shape");
    require_usage(refs.tokens() == s.tokens, "lossless: references for a different token count");
    if (es == 1) return detail::decode_typed<std::uint8_t>(coded, s, out, path, refs, t, head_stride);
    if (es == 2) return detail::decode_typed<std::uint16_t>(coded, s, out, path, refs, t, head_stride);
    detail::decode_typed<std::uint32_t>(coded, s, out, path, refs, t, head_stride);
}

/// Decodes one block; token_ids and rope must be the ones given at encoding (or empty if none were).
inline void decode_block(std::span<const std::uint8_t> coded, dtype t, const block_shape& s, std::span<std::uint8_t> out,
                         coding::rans::decode_path path = coding::rans::decode_path::automatic,
                         std::span<const std::int32_t> token_ids = {}, std::optional<rope::parameters> rope = std::nullopt) {
    if (!token_ids.empty() && token_ids.size() != s.tokens) throw format_error("lossless block: token id count differs from tokens");
    decode_block(coded, t, s, out, path, token_references(s.tokens, token_ids, rope));
}

}  // namespace seqkv::lossless

SEQKV_FP_STRICT_END
