// Encoder of the lossless plane codec (included by codec/lossless/planes.hpp). Chooses predictor, sign
// map, channel-class count and plane modes from histogram cost estimates, then encodes once.
#pragma once

#include <numeric>

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossless {
namespace detail {

/// Calls f(channel, plane_index, residual) for every coded element in storage order. Rows with
/// copied[row] set are skipped (plane indices count coded elements only); xor_ref: XOR with the
/// reference row, else the reference only marks the row as predicted. The sign map applies to
/// rows coded without an XOR reference. token_stride > 1 visits only every token_stride-th token
/// (the predictor search's sample; plane indices then count the visited elements).
template <class U, class F>
inline void for_each_residual(const std::uint8_t* src, const block_shape& s, std::span<const std::uint64_t> ref, bool xor_ref,
                              std::span<const std::uint8_t> copied, std::span<const U> flip, F&& f, std::uint64_t token_stride = 1) {
    const std::size_t D = s.head_dim;
    std::size_t k = 0;
    for (std::uint32_t h = 0; h < s.heads; ++h)
        for (std::uint64_t t = 0; t < s.tokens; t += token_stride) {
            const std::size_t row = (std::size_t(h) * s.tokens + t) * D, ch = std::size_t(h) * D;
            if (!copied.empty() && copied[std::size_t(h) * s.tokens + t]) continue;
            const bool has_ref = xor_ref && !ref.empty() && ref[t] != no_reference;
            const std::size_t ref_row = has_ref ? (std::size_t(h) * s.tokens + ref[t]) * D : 0;
            if (has_ref) {
                for (std::size_t c = 0; c < D; ++c, ++k) f(ch + c, k, U(load<U>(src, row + c) ^ load<U>(src, ref_row + c)), true);
            } else if (!flip.empty()) {
                for (std::size_t c = 0; c < D; ++c, ++k) f(ch + c, k, U(load<U>(src, row + c) ^ flip[ch + c]), false);
            } else {
                for (std::size_t c = 0; c < D; ++c, ++k) f(ch + c, k, load<U>(src, row + c), false);
            }
        }
}

/// Row bitmap of the copy predictor: row (h, t) equals its same-id reference row exactly.
inline std::vector<std::uint8_t> copied_rows(const std::uint8_t* src, const block_shape& s, std::span<const std::uint64_t> ref,
                                             std::size_t es) {
    std::vector<std::uint8_t> copied(std::size_t(s.heads) * s.tokens, 0);
    const std::size_t row_bytes = std::size_t(s.head_dim) * es;
    for (std::uint32_t h = 0; h < s.heads; ++h)
        for (std::uint64_t t = 0; t < s.tokens; ++t)
            if (ref[t] != no_reference)
                copied[std::size_t(h) * s.tokens + t] = std::memcmp(src + (std::size_t(h) * s.tokens + t) * row_bytes,
                                                                    src + (std::size_t(h) * s.tokens + ref[t]) * row_bytes, row_bytes) == 0;
    return copied;
}

/// Symbol of a rotated residual: z below 255, else 255 and z goes to the escape stream.
template <class U>
inline std::uint8_t rotated_symbol(U z) { return z < 255 ? static_cast<std::uint8_t>(z) : std::uint8_t{255}; }

/// Residuals z (rope::residual against the rotated reference row) of every visited row with a
/// reference into z ([row][channel] over all rows; the entries of other rows are not written).
template <class U>
inline void rotated_residuals(const std::uint8_t* src, const block_shape& s, std::span<const std::uint64_t> ref,
                              const rope::rotation_table& rot, rope::row_predictor<U> predict, std::span<U> z,
                              std::uint64_t token_stride = 1) {
    const std::size_t D = s.head_dim;
    U row[256], pred[256], cur[256];
    for (std::uint32_t h = 0; h < s.heads; ++h)
        for (std::uint64_t t = 0; t < s.tokens; t += token_stride) {
            if (ref[t] == no_reference) continue;
            const std::size_t base = (std::size_t(h) * s.tokens + t) * D, ref_base = (std::size_t(h) * s.tokens + ref[t]) * D;
            std::memcpy(row, src + ref_base * sizeof(U), D * sizeof(U));
            std::memcpy(cur, src + base * sizeof(U), D * sizeof(U));
            predict(row, D, rot.cos(t), pred);
            for (std::size_t c = 0; c < D; ++c) z[base + c] = rope::residual<U>(cur[c], pred[c]);
        }
}

/// Cheap test before trying predictor 5 on a block: on a sample of referenced rows (about one in
/// eight, at least 16), does any row's rotated cost (sample symbol table, escapes at full width)
/// come within reach of the best other predictor's mean cost per element? Values and other
/// non-rotated blocks fail it and skip the full evaluation.
template <class U>
inline bool rotation_may_pay(const std::uint8_t* src, const block_shape& s, std::span<const std::uint64_t> ref,
                             const rope::rotation_table& rot, rope::row_predictor<U> predict, double best_bits_per_element) {
    constexpr std::size_t P = sizeof(U);
    const std::size_t D = s.head_dim;
    std::vector<std::size_t> rows;  // h * tokens + t
    for (std::uint32_t h = 0; h < s.heads; ++h)
        for (std::uint64_t t = 0; t < s.tokens; ++t)
            if (ref[t] != no_reference) rows.push_back(std::size_t(h) * s.tokens + t);
    if (rows.empty()) return false;
    const std::size_t stride = std::max<std::size_t>(1, std::min<std::size_t>(8, rows.size() / 16));
    std::vector<std::uint8_t> sym;
    U row[256], pred[256];
    std::vector<std::uint32_t> hz(256, 0);
    for (std::size_t k = 0; k < rows.size(); k += stride) {
        const std::size_t r = rows[k], t = r % s.tokens, h = r / s.tokens;
        std::memcpy(row, src + (h * s.tokens + ref[t]) * D * sizeof(U), D * sizeof(U));
        predict(row, D, rot.cos(t), pred);
        for (std::size_t c = 0; c < D; ++c) {
            const std::uint8_t b = rotated_symbol<U>(rope::residual<U>(load<U>(src, r * D + c), pred[c]));
            sym.push_back(b), ++hz[b];
        }
    }
    double cost[256];
    const double total = double(sym.size());
    for (int b = 0; b < 256; ++b) cost[b] = std::log2((total + 1) / (double(hz[b]) + 0.5)) + (b == 255 ? 8.0 * P : 0.0);
    const double limit = 1.1 * best_bits_per_element * double(D);
    for (std::size_t k = 0; k < sym.size(); k += D) {
        double bits = 0;
        for (std::size_t c = 0; c < D; ++c) bits += cost[sym[k + c]];
        if (bits < limit) return true;
    }
    return false;
}

/// Channel -> group: channels ranked by the sum of their raw values' class keys (plane 0, every
/// token_stride-th token; ties keep channel order) and cut into `groups` equal groups.
template <class U>
inline std::vector<std::uint16_t> rank_channels(const std::uint8_t* src, const block_shape& s, std::uint32_t groups,
                                                std::uint64_t token_stride = 1) {
    const std::uint64_t C = s.channels();
    std::vector<std::uint64_t> sums(C, 0);
    for_each_residual<U>(
        src, s, {}, false, {}, {}, [&](std::size_t ch, std::size_t, U r, bool) { sums[ch] += class_key<U>(plane_byte<U, 0>(r)); },
        token_stride);
    std::vector<std::uint32_t> order(C);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return sums[a] < sums[b]; });
    std::vector<std::uint16_t> group_of(C);
    for (std::uint64_t r = 0; r < C; ++r) group_of[order[r]] = static_cast<std::uint16_t>(r * groups / C);
    return group_of;
}

/// Rows to rotate: those with a reference whose estimated rotated cost (pooled symbol table,
/// escapes at full width) beats their estimated raw cost (plane-0 table per group, pooled other planes).
/// token_stride > 1: only the sampled tokens' rows are counted and decided (z holds only theirs).
template <class U>
inline std::vector<std::uint8_t> rows_to_rotate(const std::uint8_t* src, const block_shape& s, std::span<const std::uint64_t> ref,
                                                std::span<const U> z, std::span<const std::uint16_t> group_of, std::uint32_t groups,
                                                std::uint64_t token_stride = 1) {
    constexpr std::size_t P = sizeof(U);
    const std::size_t D = s.head_dim, rows = std::size_t(s.heads) * s.tokens;
    const auto sampled = [&](std::size_t row) { return (row % s.tokens) % token_stride == 0; };
    std::vector<std::uint32_t> h0(std::size_t(groups) * 256, 0), hp(P * 256, 0), hz(256, 0);
    for (std::size_t row = 0; row < rows; ++row) {
        if (!sampled(row)) continue;
        const bool has_ref = ref[row % s.tokens] != no_reference;
        for (std::size_t c = 0; c < D; ++c) {
            const U u = load<U>(src, row * D + c);
            ++h0[std::size_t(group_of[(row / s.tokens) * D + c]) * 256 + plane_byte<U, 0>(u)];
            for (std::size_t q = 1; q < P; ++q) ++hp[q * 256 + plane_byte<U>(u, q)];
            if (has_ref) ++hz[rotated_symbol<U>(z[row * D + c])];
        }
    }
    // Code-length tables, flat: c0 per group (plane 0), cp per plane >= 1, cz of a rotated symbol
    // with its escape's full width added (the same sums as adding it per element).
    auto costs = [](const std::uint32_t* h, double* out) {
        std::uint64_t total = 0;
        for (int b = 0; b < 256; ++b) total += h[b];
        const double unused = std::log2(double(total + 1) / 0.5);  // the value of every empty bin, computed once
        for (int b = 0; b < 256; ++b) out[b] = h[b] ? std::log2(double(total + 1) / (double(h[b]) + 0.5)) : unused;
    };
    std::vector<double> c0(std::size_t(groups) * 256), cp(P * 256), cz(256);
    for (std::uint32_t g = 0; g < groups; ++g) costs(h0.data() + std::size_t(g) * 256, c0.data() + std::size_t(g) * 256);
    for (std::size_t q = 1; q < P; ++q) costs(hp.data() + q * 256, cp.data() + q * 256);
    costs(hz.data(), cz.data());
    cz[255] = cz[255] + 8.0 * P;
    std::vector<std::uint8_t> rotate(rows, 0);
    for (std::size_t row = 0; row < rows; ++row) {
        if (ref[row % s.tokens] == no_reference || !sampled(row)) continue;
        const std::uint16_t* g = group_of.data() + (row / s.tokens) * D;
        const U* zr = z.data() + row * D;
        double raw = 0, rot = 0;
        for (std::size_t c = 0; c < D; ++c) {
            const U u = load<U>(src, row * D + c);
            raw += c0[std::size_t(g[c]) * 256 + plane_byte<U, 0>(u)];
            for (std::size_t q = 1; q < P; ++q) raw += cp[q * 256 + plane_byte<U>(u, q)];
            rot += cz[rotated_symbol<U>(zr[c])];
        }
        rotate[row] = rot < raw;
    }
    return rotate;
}

/// Cheapest class count and per-plane modes given per-group histograms of every plane.
struct plane_plan {
    std::uint32_t classes = 1;
    std::vector<std::uint16_t> class_of_group;
    std::array<plane_context, 4> mode{};
    double bits = 0;
};

/// Ranks groups by mean class key of their plane-0 histogram (ascending). symbols: the plane-0
/// bytes any group counts (the others are 0 in every group).
template <class U>
inline std::vector<std::uint32_t> rank_groups(const std::uint32_t* hist0, std::uint32_t groups, std::span<const std::uint8_t> symbols) {
    std::vector<std::uint64_t> sum(groups, 0), count(groups, 0);
    std::uint32_t key[256];
    for (std::size_t j = 0; j < symbols.size(); ++j) key[j] = class_key<U>(symbols[j]);
    for (std::uint32_t g = 0; g < groups; ++g) {
        std::uint64_t s = 0, c = 0;  // in registers: summing into sum[g] / count[g] chains every step through memory
        const std::uint32_t* h = hist0 + std::size_t(g) * 256;
        for (std::size_t j = 0; j < symbols.size(); ++j) {
            const std::uint32_t n = h[symbols[j]];
            s += std::uint64_t(n) * key[j];
            c += n;
        }
        sum[g] = s, count[g] = c;
    }
    std::vector<std::uint32_t> order(groups);
    std::iota(order.begin(), order.end(), 0u);
    // Compare means sum/count by cross-multiplication (integers only: the choice is deterministic).
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) {
        __extension__ typedef unsigned __int128 u128;
        return u128(sum[a]) * count[b] < u128(sum[b]) * count[a];
    });
    std::vector<std::uint32_t> rank(groups);
    for (std::uint32_t r = 0; r < groups; ++r) rank[order[r]] = r;
    return rank;
}

/// hist[p] holds groups x 256 counts of plane p; exp[p] 16 x 256 counts (planes >= 1; null: not
/// counted). A class count k cuts the groups, ranked by mean class key, into k runs of consecutive
/// ranks, so each class's histogram is a difference of two prefix sums over the ranked groups:
/// every candidate k costs k x 256, not groups x 256. scale: the counts are a 1/scale sample.
template <class U>
inline plane_plan plan_planes(std::span<const std::uint32_t* const> hist, std::span<const std::uint32_t* const> exp,
                              std::uint32_t groups, std::uint64_t channels, std::uint64_t n, const plane_options& o,
                              double scale = 1.0) {
    const std::size_t P = hist.size();
    // The symbols each plane uses in any group: the estimates below visit only those (a plane-0
    // histogram of real KV holds a few dozen exponents), with the same bits as the full histograms.
    std::array<std::array<std::uint8_t, 256>, 4> used{};
    std::array<std::uint32_t, 4> n_used{};
    for (std::size_t p = 0; p < P; ++p) {
        std::uint32_t any[256] = {};
        for (std::uint32_t g = 0; g < groups; ++g) {
            const std::uint32_t* __restrict h = hist[p] + std::size_t(g) * 256;
            for (std::size_t b = 0; b < 256; ++b) any[b] |= h[b];
        }
        for (std::uint32_t b = 0; b < 256; ++b)
            if (any[b]) used[p][n_used[p]++] = static_cast<std::uint8_t>(b);
    }
    const auto rank = rank_groups<U>(hist[0], groups, std::span<const std::uint8_t>(used[0].data(), n_used[0]));
    std::vector<std::uint32_t> order(groups);
    for (std::uint32_t g = 0; g < groups; ++g) order[rank[g]] = g;
    const std::uint32_t most = std::max<std::uint32_t>(1, std::min<std::uint32_t>(o.max_channel_classes, groups));
    std::vector<std::uint32_t> candidates;
    for (std::uint32_t k : {1u, 2u, 4u, 8u, 12u, 16u, 24u, 32u, 48u, 64u, 96u, 128u, 192u})
        if (k < most) candidates.push_back(k);
    candidates.push_back(most);

    const double stored_bits = 8.0 * double(n) * scale;
    const double coded_limit = stored_bits * (1.0 - o.min_coding_gain);
    auto pick = [&](double coded_bits, plane_context mode, double& best, plane_context& best_mode) {
        if (coded_bits < best && coded_bits < coded_limit) best = coded_bits, best_mode = mode;
    };
    // Prefix sums over ranked groups of every plane's used symbols (row r: groups of rank < r), and
    // the context-independent alternatives of planes >= 1: one table (the last row), exponent buckets.
    std::vector<std::unique_ptr<std::uint32_t[]>> cum(P);
    std::array<double, 4> none_bits{}, exp_bits{};
    for (std::size_t p = 0; p < P; ++p) {
        const std::size_t nu = n_used[p];
        const std::uint8_t* sym = used[p].data();
        cum[p] = std::make_unique_for_overwrite<std::uint32_t[]>(std::size_t(groups + 1) * nu);
        std::uint32_t* c = cum[p].get();
        std::fill_n(c, nu, 0u);
        for (std::size_t r = 0; r < groups; ++r) {
            const std::uint32_t* __restrict h = hist[p] + std::size_t(order[r]) * 256;
            const std::uint32_t* __restrict prev = c + r * nu;
            std::uint32_t* __restrict next = c + (r + 1) * nu;
            if (nu == 256) {
                for (std::size_t b = 0; b < 256; ++b) next[b] = prev[b] + h[b];
            } else {
                for (std::size_t j = 0; j < nu; ++j) next[j] = prev[j] + h[sym[j]];
            }
        }
        none_bits[p] = cost::histogram_bits_sparse(c + std::size_t(groups) * nu, sym, std::uint32_t(nu), scale) +
                       cost::rans_block_overhead_bits;
        exp_bits[p] = 1e300;
        if (p > 0 && p < exp.size() && exp[p]) {
            exp_bits[p] = cost::rans_block_overhead_bits;
            std::uint32_t bucket[256];
            for (std::uint32_t e = 0; e < exponent_buckets; ++e) {  // a bucket counts a subset of the plane's symbols
                for (std::size_t j = 0; j < nu; ++j) bucket[j] = exp[p][e * 256 + sym[j]];
                exp_bits[p] += cost::histogram_bits_sparse(bucket, sym, std::uint32_t(nu), scale);
            }
        }
    }
    plane_plan best;
    best.bits = 1e300;
    std::array<std::uint32_t, 256> merged{};
    unsigned worse = 0;  // candidates in a row that did not beat the best
    for (std::uint32_t k : candidates) {
        // The cost over k falls, then rises (more classes: sharper tables, more table bytes): after
        // two candidates past the minimum the larger ones (the most expensive to estimate) are skipped.
        if (worse >= 2) break;
        plane_plan plan;
        plan.classes = k;
        plan.bits = k > 1 ? 8.0 * double(channels) : 0.0;
        for (std::size_t p = 0; p < P; ++p) {
            double class_bits = cost::rans_block_overhead_bits;
            if (k > 1) {
                const std::uint32_t* c = cum[p].get();
                const std::size_t nu = n_used[p];
                for (std::uint32_t cl = 0; cl < k; ++cl) {  // class cl: ranks [ceil(cl g / k), ceil((cl + 1) g / k))
                    const std::size_t lo = (std::uint64_t(cl) * groups + k - 1) / k, hi = (std::uint64_t(cl + 1) * groups + k - 1) / k;
                    for (std::size_t j = 0; j < nu; ++j) merged[j] = c[hi * nu + j] - c[lo * nu + j];
                    class_bits += cost::histogram_bits_sparse(merged.data(), used[p].data(), std::uint32_t(nu), scale);
                }
            }
            double bits = stored_bits;
            plane_context mode = plane_context::stored;
            pick(none_bits[p], plane_context::none, bits, mode);
            if (k > 1) pick(class_bits, plane_context::channel_class, bits, mode);
            if (p > 0) pick(exp_bits[p], plane_context::exponent, bits, mode);
            plan.mode[p] = mode;
            plan.bits += bits;
        }
        if (plan.bits < best.bits) best = std::move(plan), worse = 0;
        else ++worse;
    }
    best.class_of_group.resize(groups);
    for (std::uint32_t g = 0; g < groups; ++g)
        best.class_of_group[g] = static_cast<std::uint16_t>(std::uint64_t(rank[g]) * best.classes / groups);
    return best;
}

/// The rotated section of predictor 5: symbols of the rotated rows (mode, length, bytes), then escapes.
template <class U>
inline void write_rotated(byte_writer& w, const block_shape& s, const std::vector<std::uint8_t>& rotated, std::span<const U> z,
                          const std::vector<std::uint8_t>& cls, std::uint32_t classes) {
    const std::size_t D = s.head_dim;
    std::vector<std::uint8_t> symbols, ctx;
    byte_vector escapes;
    byte_writer e(escapes);
    std::vector<std::uint32_t> pooled(256, 0), by_class(std::size_t(classes) * 256, 0);
    for (std::size_t row = 0; row < rotated.size(); ++row)
        if (rotated[row])
            for (std::size_t c = 0; c < D; ++c) {
                const U zz = z[row * D + c];
                const std::uint8_t sym = rotated_symbol<U>(zz), k = cls[(row / s.tokens) * D + c];
                symbols.push_back(sym), ctx.push_back(k);
                ++pooled[sym], ++by_class[std::size_t(k) * 256 + sym];
                if (sym == 255) e.put<U>(zz);
            }
    double class_bits = 1e300;
    if (classes > 1) {
        class_bits = 0;
        for (std::uint32_t k = 0; k < classes; ++k) class_bits += cost::histogram_bits(by_class.data() + std::size_t(k) * 256);
    }
    plane_context mode = class_bits < cost::histogram_bits(pooled.data()) ? plane_context::channel_class : plane_context::none;
    byte_vector coded = mode == plane_context::none ? coding::encode_bytes_counted(symbols, {}, 1, pooled)
                                                    : coding::encode_bytes_counted(symbols, ctx, classes, by_class);
    if (!symbols.empty() && coded.size() >= symbols.size()) mode = plane_context::stored;
    const auto& bytes = mode == plane_context::stored ? symbols : coded;
    w.put<std::uint8_t>(static_cast<std::uint8_t>(mode));
    w.put<std::uint32_t>(static_cast<std::uint32_t>(bytes.size()));
    w.put_bytes(bytes);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(escapes.size()));
    w.put_bytes(escapes);
}

template <class U>
byte_vector encode_typed(std::span<const std::uint8_t> raw, const block_shape& s, const plane_options& o,
                         const token_references& refs, dtype type) {
    constexpr std::size_t P = sizeof(U);
    const std::uint64_t n = s.elements(), C = s.channels();
    const std::uint8_t* src = raw.data();
    const auto groups = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, std::min<std::uint64_t>(C, 256)));

    // Channel -> fine group. With <= 256 channels every channel is its own group; otherwise
    // channels are ranked by the raw mean class key and cut into 256 equal groups.
    std::vector<std::uint16_t> group_of(C);
    if (C <= 256) {
        std::iota(group_of.begin(), group_of.end(), std::uint16_t{0});
    } else {
        group_of = rank_channels<U>(src, s, groups);
    }

    // 1. Predictor: estimated cost of plane 0 (channel classes) + other planes (one table each).
    std::vector<bit_predictor> preds{bit_predictor::none};
    if (o.try_xor_previous_token && s.tokens > 1) preds.push_back(bit_predictor::xor_previous_token);
    if (o.try_same_token && refs.has_ids() && s.tokens > 1) {
        preds.push_back(bit_predictor::xor_same_token);
        preds.push_back(bit_predictor::xor_same_or_previous);
        preds.push_back(bit_predictor::copy_same_token);
        if (refs.rope() && s.head_dim % 2 == 0 && s.head_dim <= 256) preds.push_back(bit_predictor::rotate_same_token);
    }
    bit_predictor pred = bit_predictor::none;
    // Per channel: set sign bits and count of elements coded without an XOR reference (on the
    // predictor search's sample when it ran on one: a majority per channel needs no more).
    std::vector<std::uint32_t> signs(C, 0), unref(C, 0);
    std::vector<std::uint8_t> copied, best_copied;  // rows copied (predictor 4) or rotated (predictor 5)
    std::unique_ptr<U[]> rot_z_buffer;             // rotated residuals (predictor 5 tried): rows with a reference only
    std::span<U> rot_z;
    double sign_scale = 1.0;                        // signs/unref count a 1/sign_scale sample
    if (preds.size() > 1) {
        // The search runs on every stride-th token (automatic: about 64 tokens per head, at most
        // every 8th): each predictor's plane-0 plan and the pooled other planes, scaled to the block.
        const std::uint64_t stride = std::max<std::uint64_t>(
            1, std::min<std::uint64_t>(s.tokens, o.estimate_stride ? o.estimate_stride : std::clamp<std::uint64_t>(s.tokens / 64, 1, 8)));
        const std::uint64_t sampled_tokens = (s.tokens + stride - 1) / stride;
        const double scale = double(s.tokens) / double(sampled_tokens);
        const auto sampled_row = [&](std::size_t row) { return (row % s.tokens) % stride == 0; };
        // Sampled, plane 0 is estimated with at most 16 channel groups (channels ranked by the
        // sample's mean raw class key), so a predictor's estimate costs its sample, not channels x
        // 256. Stride 1 is the exhaustive search (every token, the fine groups: version 1's choices).
        const auto search_groups = stride == 1 ? groups : static_cast<std::uint32_t>(std::min<std::uint64_t>(C, 16));
        const std::vector<std::uint16_t> search_group_of = stride == 1 ? group_of : rank_channels<U>(src, s, search_groups, stride);
        double best_bits = 1e300;
        std::vector<std::uint32_t> hist0(std::size_t(search_groups) * 256), histp(P * 256), none_hist0, none_histp;
        // xor_same_or_previous codes each row as xor_same or xor_previous_token does: when all three
        // are tried, those two passes count the rows with and without a same-id reference apart
        // (row masks: rows to skip) and the third predictor's counts are a sum, not a pass.
        const bool split = std::count(preds.begin(), preds.end(), bit_predictor::xor_previous_token) &&
                           std::count(preds.begin(), preds.end(), bit_predictor::xor_same_or_previous);
        std::vector<std::uint8_t> with_same, without_same;
        std::vector<std::uint32_t> previous_part0, previous_partp, same_part0, same_partp;
        if (split) {
            const auto same = refs.get(bit_predictor::xor_same_token);
            with_same.resize(std::size_t(s.heads) * s.tokens);
            without_same.resize(with_same.size());
            for (std::size_t row = 0; row < with_same.size(); ++row) {
                with_same[row] = same[row % s.tokens] != no_reference;
                without_same[row] = !with_same[row];
            }
        }
        for (bit_predictor p : preds) {
            const bool rotate = p == bit_predictor::rotate_same_token;
            const bool copy = p == bit_predictor::copy_same_token || rotate;
            if (rotate) {
                const auto predict = rope::fast_predictor<U>(type, refs.rope()->style);
                if (!rotation_may_pay<U>(src, s, refs.get(p), refs.rotations(s.head_dim), predict, best_bits / double(n))) continue;
                rot_z_buffer = std::make_unique_for_overwrite<U[]>(n);
                rot_z = std::span<U>(rot_z_buffer.get(), n);
                rotated_residuals<U>(src, s, refs.get(p), refs.rotations(s.head_dim), predict, rot_z, stride);
                copied = rows_to_rotate<U>(src, s, refs.get(p), rot_z, search_group_of, search_groups, stride);
            } else {
                copied = copy ? copied_rows(src, s, refs.get(p), P) : std::vector<std::uint8_t>{};
            }
            std::uint64_t m = std::uint64_t(s.heads) * sampled_tokens * s.head_dim;  // sampled coded elements
            for (std::size_t row = 0; row < copied.size(); ++row) m -= copied[row] && sampled_row(row) ? s.head_dim : 0;
            // The loop's arrays as local pointers (captured by value): stores through them cannot
            // make the compiler reload the vectors' data pointers every element.
            const auto count = [h0 = hist0.data(), hp = histp.data(), gof = search_group_of.data()](std::size_t ch, U r, std::uint32_t d) {
                h0[std::size_t(gof[ch]) * 256 + plane_byte<U, 0>(r)] += d;
                if constexpr (P > 1) hp[256 + plane_byte<U, 1>(r)] += d;
                if constexpr (P > 2) hp[512 + plane_byte<U, 2>(r)] += d, hp[768 + plane_byte<U, 3>(r)] += d;
            };
            if (copy) {
                // Copy and rotate code the other rows as they are: predictor none's counts (the
                // first one tried) less the copied or rotated sampled rows, the same integers as a pass.
                std::copy(none_hist0.begin(), none_hist0.end(), hist0.begin());  // in place: count holds hist0's buffer
                std::copy(none_histp.begin(), none_histp.end(), histp.begin());
                for (std::size_t row = 0; row < copied.size(); ++row)
                    if (copied[row] && sampled_row(row))
                        for (std::size_t c = 0, ch = (row / s.tokens) * s.head_dim; c < s.head_dim; ++c)
                            count(ch + c, load<U>(src, row * s.head_dim + c), ~std::uint32_t{0});  // - 1 (mod 2^32)
            } else if (p == bit_predictor::xor_same_or_previous && split) {
                // Rows with a same-id reference code as under xor_same, the others as under
                // xor_previous_token: the sum of the two parts counted in those passes.
                for (std::size_t i = 0; i < hist0.size(); ++i) hist0[i] = same_part0[i] + previous_part0[i];
                for (std::size_t i = 0; i < histp.size(); ++i) histp[i] = same_partp[i] + previous_partp[i];
            } else {
                std::fill(hist0.begin(), hist0.end(), 0u);
                std::fill(histp.begin(), histp.end(), 0u);
                const auto pass = [&](std::span<const std::uint8_t> skip) {
                    for_each_residual<U>(
                        src, s, refs.get(p), true, skip, {}, [&count](std::size_t ch, std::size_t, U r, bool) { count(ch, r, 1); }, stride);
                };
                if (split && p == bit_predictor::xor_previous_token) {  // first the rows without a same-id reference
                    pass(with_same);
                    previous_part0 = hist0, previous_partp = histp;
                    pass(without_same);
                } else if (split && p == bit_predictor::xor_same_token) {  // first the rows with one
                    pass(without_same);
                    same_part0 = hist0, same_partp = histp;
                    pass(with_same);
                } else {
                    pass({});
                }
                if (p == bit_predictor::none) none_hist0 = hist0, none_histp = histp;
            }
            // The copy bitmap is paid in full; planes >= 1 were counted in one group.
            double bits = copy ? double(copied.size()) : 0.0;
            if (rotate) {
                std::vector<std::uint32_t> hz(256, 0);
                std::uint64_t escapes = 0;
                for (std::size_t row = 0; row < copied.size(); ++row)
                    if (copied[row])
                        for (std::size_t c = 0; c < s.head_dim; ++c) {
                            const auto sym = rotated_symbol<U>(rot_z[row * s.head_dim + c]);
                            ++hz[sym], escapes += sym == 255;
                        }
                bits += cost::histogram_bits(hz.data(), 256, scale) + cost::rans_block_overhead_bits + 8.0 * P * double(escapes) * scale + 64;
            }
            {
                plane_options o0 = o;
                o0.min_coding_gain = 0;
                const std::uint32_t* h0[1] = {hist0.data()};
                bits += plan_planes<U>(h0, {}, search_groups, C, m, o0, scale).bits;
            }
            for (std::size_t q = 1; q < P; ++q)
                bits += std::min(cost::histogram_bits(histp.data() + q * 256, 256, scale), 8.0 * double(m) * scale);
            if (bits < best_bits) best_bits = bits, pred = p, best_copied = copied;
        }
        copied = std::move(best_copied);
        // Signs of the chosen predictor's elements coded without an XOR reference, on the sample.
        const bool chosen_copy = pred == bit_predictor::copy_same_token || pred == bit_predictor::rotate_same_token;
        for_each_residual<U>(
            src, s, refs.get(pred), !chosen_copy, copied, {},
            [sg = signs.data(), un = unref.data()](std::size_t ch, std::size_t, U r, bool has_ref) {
                if (!has_ref) sg[ch] += (r & sign_bit<U>) != 0, ++un[ch];
            },
            stride);
        sign_scale = scale;
        if (pred == bit_predictor::rotate_same_token && stride > 1) {  // the sample chose it: rows of every token now
            const auto predict = rope::fast_predictor<U>(type, refs.rope()->style);
            rotated_residuals<U>(src, s, refs.get(pred), refs.rotations(s.head_dim), predict, rot_z);
            copied = rows_to_rotate<U>(src, s, refs.get(pred), rot_z, search_group_of, search_groups);
        }
    } else {
        for_each_residual<U>(src, s, {}, false, {}, {}, [&](std::size_t ch, std::size_t, U r, bool) {
            signs[ch] += (r & sign_bit<U>) != 0, ++unref[ch];
        });
    }
    const std::uint64_t m = n - std::uint64_t(std::count(copied.begin(), copied.end(), std::uint8_t{1})) * s.head_dim;  // coded elements
    const auto ref = refs.get(pred);

    // 2. Sign map: flip channels whose residual sign is mostly set, if the pooled sign entropy drops enough.
    std::vector<U> flip;
    {
        std::uint64_t before = 0, after = 0, total = 0;
        for (std::uint64_t c = 0; c < C; ++c) before += signs[c], after += std::min(signs[c], unref[c] - signs[c]), total += unref[c];
        const double gain = sign_scale * (cost::binary_bits(total - before, before) - cost::binary_bits(total - after, after));
        if (o.try_sign_map && gain > 8.0 * double((C + 7) / 8 + 1)) {
            flip.resize(C);
            for (std::uint64_t c = 0; c < C; ++c) flip[c] = 2 * signs[c] > unref[c] ? sign_bit<U> : U(0);
        }
    }

    // 3. Residual planes and their histograms by group and by exponent bucket; then the plan.
    const bool rotate = pred == bit_predictor::rotate_same_token;
    const bool copy = pred == bit_predictor::copy_same_token || rotate;
    std::array<std::unique_ptr<std::uint8_t[]>, P> plane_buffer;  // every byte is written below: no zero-fill
    std::array<std::span<std::uint8_t>, P> plane;
    for (std::size_t q = 0; q < P; ++q) plane_buffer[q] = std::make_unique_for_overwrite<std::uint8_t[]>(m), plane[q] = {plane_buffer[q].get(), m};
    // Plane q's group histograms and (q >= 1) exponent-bucket ones, each its own zeroed vector.
    const std::size_t hist_size = std::size_t(groups) * 256, exp_size = P > 1 ? exponent_buckets * 256 : 0;
    std::array<std::vector<std::uint32_t>, P> hist, exp;
    for (std::size_t q = 0; q < P; ++q) hist[q].resize(hist_size), exp[q].resize(q > 0 ? exp_size : 0);
    {
        std::array<std::uint8_t*, P> pl{};
        std::array<std::uint32_t*, P> hs{}, ex{};
        for (std::size_t q = 0; q < P; ++q) pl[q] = plane[q].data(), hs[q] = hist[q].data(), ex[q] = exp[q].data();
        // Local pointer copies (captured by value): the byte stores cannot alias them.
        for_each_residual<U>(src, s, ref, !copy, copied, flip, [pl, hs, ex, gof = group_of.data()](std::size_t ch, std::size_t i, U r, bool) {
            (void)ex;  // one-byte elements have no exponent-bucketed planes
            const std::size_t g = std::size_t(gof[ch]) * 256;
            const std::uint8_t b0 = plane_byte<U, 0>(r);
            pl[0][i] = b0;
            ++hs[0][g + b0];
            if constexpr (P > 1) {
                const std::size_t e = std::size_t(exponent_bucket(b0)) * 256;
                for (std::size_t q = 1; q < P; ++q) {
                    const std::uint8_t b = plane_byte<U>(r, q);
                    pl[q][i] = b;
                    ++hs[q][g + b];
                    ++ex[q][e + b];
                }
            }
        });
    }
    std::array<const std::uint32_t*, P> hist_of{}, exp_of{};
    for (std::size_t q = 0; q < P; ++q) hist_of[q] = hist[q].data(), exp_of[q] = q > 0 ? exp[q].data() : nullptr;
    const plane_plan plan = plan_planes<U>(hist_of, exp_of, groups, C, m, o);

    // 4. Write the block (into its final buffer: room for every plane stored, which coding never exceeds).
    byte_vector out;
    {
        std::size_t bound = 16 + copied.size() / 8 + 2 * C + P * (5 + m);
        if (rotate) bound += 9 + (n - m) * (1 + P);
        out.reserve(bound);
    }
    byte_writer w(out);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(pred));
    if (copy) {
        std::vector<std::uint8_t> bits((copied.size() + 7) / 8, 0);
        for (std::size_t i = 0; i < copied.size(); ++i)
            if (copied[i]) bits[i / 8] |= static_cast<std::uint8_t>(1u << (i % 8));
        w.put_bytes(bits);
    }
    w.put<std::uint8_t>(static_cast<std::uint8_t>(plan.classes));
    std::vector<std::uint8_t> cls(C, 0);
    if (plan.classes > 1) {
        for (std::uint64_t c = 0; c < C; ++c) cls[c] = static_cast<std::uint8_t>(plan.class_of_group[group_of[c]]);
        w.put_bytes(cls);
    }
    w.put<std::uint8_t>(flip.empty() ? 0 : 1);
    if (!flip.empty()) {
        std::vector<std::uint8_t> bits((C + 7) / 8, 0);
        for (std::uint64_t c = 0; c < C; ++c)
            if (flip[c]) bits[c / 8] |= static_cast<std::uint8_t>(1u << (c % 8));
        w.put_bytes(bits);
    }
    std::vector<std::uint8_t> ctx;
    std::vector<std::uint32_t> class_counts;
    for (std::size_t p = 0; p < P; ++p) {
        plane_context mode = plan.mode[p];
        byte_vector coded;
        if (mode != plane_context::stored) {
            if (mode == plane_context::channel_class) {
                ctx.resize(m);
                const std::size_t D = s.head_dim;
                std::size_t k = 0;
                for (std::uint32_t h = 0; h < s.heads; ++h)
                    for (std::uint64_t t = 0; t < s.tokens; ++t)
                        if (copied.empty() || !copied[std::size_t(h) * s.tokens + t])
                            std::memcpy(ctx.data() + k, cls.data() + std::size_t(h) * D, D), k += D;
            } else if (mode == plane_context::exponent) {
                ctx.resize(m);
                for (std::size_t i = 0; i < m; ++i) ctx[i] = exponent_bucket(plane[0][i]);
            }
            const std::uint32_t contexts =
                mode == plane_context::channel_class ? plan.classes : mode == plane_context::exponent ? exponent_buckets : 1;
            // The coder's counts from the histograms of step 3 (the same integers it would count):
            // groups summed by class (one class for none); the exponent buckets as they are.
            std::span<const std::uint32_t> counts;
            if (mode == plane_context::exponent) {
                counts = exp[p];
            } else {
                class_counts.assign(std::size_t(contexts) * 256, 0u);
                for (std::uint32_t g = 0; g < groups; ++g) {
                    std::uint32_t* __restrict to = class_counts.data() + (mode == plane_context::none ? 0 : std::size_t(plan.class_of_group[g]) * 256);
                    const std::uint32_t* __restrict from = hist[p].data() + std::size_t(g) * 256;
                    for (std::size_t b = 0; b < 256; ++b) to[b] += from[b];
                }
                counts = class_counts;
            }
            coded = coding::encode_bytes_counted(plane[p], mode == plane_context::none ? std::span<const std::uint8_t>{} : ctx,
                                                 contexts, counts);
            if (m > 0 && coded.size() >= m) mode = plane_context::stored;  // the estimate was wrong: never expand
        }
        w.put<std::uint8_t>(static_cast<std::uint8_t>(mode));
        const auto bytes = mode == plane_context::stored ? std::span<const std::uint8_t>(plane[p]) : std::span<const std::uint8_t>(coded);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(bytes.size()));
        w.put_bytes(bytes);
    }
    if (rotate) write_rotated<U>(w, s, copied, rot_z, cls, plan.classes);
    return out;
}

}  // namespace detail
}  // namespace seqkv::lossless

SEQKV_FP_STRICT_END
