// Quality of a decoded KV cache against the original: K and V SNR (dB), and causal attention
// fidelity with real queries (`layer.{l}.q`, grouped-query heads mapped h_q -> h_q / (H_q/H_kv)):
//   attention-output relative error = sqrt(Σ ||o − ô||² / Σ ||o||²) over queries and heads,
//   attention-weight KL = mean over (head, query) of KL(p || p̂) in nats.
// Without queries the original keys stand in for them (self-attention proxy; say so in reports).
// fp64 arithmetic; these numbers are for reporting, not for anything the decoder computes.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "seqkv/core/chunk.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::metrics {

/// Quality of one layer (or of the whole cache in kv_quality::overall).
struct layer_quality {
    double snr_k_db = 0, snr_v_db = 0;
    double attention_rel_error = 0;  // fraction, not percent
    double attention_kl = 0;         // nats per query
};

/// Per-layer and overall quality.
struct kv_quality {
    std::vector<layer_quality> layers;
    layer_quality overall;
    bool real_queries = false;  // false: keys were used as queries
};

namespace detail {
struct power_sums {
    double signal = 0, noise = 0;
    double snr_db() const {
        if (noise == 0) return std::numeric_limits<double>::infinity();
        return 10.0 * std::log10(signal / noise);
    }
};
inline void add_power(power_sums& s, const kv_tensor_view& a, const kv_tensor_view& b) {
    for (std::uint32_t h = 0; h < a.heads; ++h)
        for (std::uint64_t t = 0; t < a.tokens; ++t)
            for (std::uint32_t c = 0; c < a.head_dim; ++c) {
                const double x = a.at(h, t, c), y = b.at(h, t, c);
                s.signal += x * x;
                s.noise += (x - y) * (x - y);
            }
}
}  // namespace detail

/// Precomputes original attention outputs and weights once, then scores decoded caches.
class attention_probe {
public:
    /// queries: one [H_q, T, D] view per layer, or empty to use the original keys as queries.
    attention_probe(const kv_cache_view& original, std::span<const kv_tensor_view> queries)
        : original_(original), queries_(queries.begin(), queries.end()) {
        real_ = !queries_.empty();
        if (!real_) queries_ = original.keys;
        require_usage(queries_.size() == original.layout.layers, "attention_probe: need one query tensor per layer");
        for (std::uint32_t l = 0; l < original.layout.layers; ++l) {
            require_usage(queries_[l].head_dim == original.layout.head_dim && queries_[l].tokens == original.layout.tokens &&
                              queries_[l].heads % original.layout.kv_heads == 0,
                          "attention_probe: query shape does not match the cache");
            reference_.push_back(attend(l, original.keys[l], original.values[l]));
        }
    }

    /// Scores a decoded cache of the same layout.
    kv_quality compare(const kv_cache_view& decoded) const {
        require_usage(decoded.layout.layers == original_.layout.layers && decoded.layout.tokens == original_.layout.tokens &&
                          decoded.layout.kv_heads == original_.layout.kv_heads && decoded.layout.head_dim == original_.layout.head_dim,
                      "attention_probe: decoded layout differs");
        kv_quality q;
        q.real_queries = real_;
        detail::power_sums all_k, all_v;
        double all_err = 0, all_ref = 0, all_kl = 0, all_n = 0;
        for (std::uint32_t l = 0; l < original_.layout.layers; ++l) {
            detail::power_sums k, v;
            detail::add_power(k, original_.keys[l], decoded.keys[l]);
            detail::add_power(v, original_.values[l], decoded.values[l]);
            all_k.signal += k.signal, all_k.noise += k.noise, all_v.signal += v.signal, all_v.noise += v.noise;
            const layer_attention got = attend(l, decoded.keys[l], decoded.values[l]);
            const layer_attention& ref = reference_[l];
            double err = 0, norm = 0, kl = 0;
            for (std::size_t i = 0; i < ref.outputs.size(); ++i) {
                const double d = ref.outputs[i] - got.outputs[i];
                err += d * d, norm += ref.outputs[i] * ref.outputs[i];
            }
            for (std::size_t i = 0; i < ref.weights.size(); ++i)
                if (ref.weights[i] > 0) kl += ref.weights[i] * (std::log(ref.weights[i]) - std::log(std::max(got.weights[i], 1e-300)));
            const double queries = double(ref.query_count);
            q.layers.push_back({k.snr_db(), v.snr_db(), norm > 0 ? std::sqrt(err / norm) : 0.0, kl / queries});
            all_err += err, all_ref += norm, all_kl += kl, all_n += queries;
        }
        q.overall = {all_k.snr_db(), all_v.snr_db(), all_ref > 0 ? std::sqrt(all_err / all_ref) : 0.0, all_kl / all_n};
        return q;
    }
    bool real_queries() const { return real_; }

private:
    struct layer_attention {
        std::vector<double> outputs;  // [H_q][T][D]
        std::vector<double> weights;  // [H_q][causal triangle]
        std::size_t query_count = 0;
    };
    layer_attention attend(std::uint32_t l, const kv_tensor_view& keys, const kv_tensor_view& values) const {
        const kv_tensor_view& q = queries_[l];
        const std::uint64_t T = q.tokens;
        const std::uint32_t D = q.head_dim, group = q.heads / keys.heads;
        const double scale = 1.0 / std::sqrt(double(D));
        layer_attention a;
        a.outputs.assign(std::size_t(q.heads) * T * D, 0.0);
        a.weights.reserve(std::size_t(q.heads) * T * (T + 1) / 2);
        a.query_count = std::size_t(q.heads) * T;
        std::vector<double> logits(T), qrow(D), krows(std::size_t(T) * D), vrows(std::size_t(T) * D);
        for (std::uint32_t hq = 0; hq < q.heads; ++hq) {
            const std::uint32_t hk = hq / group;
            for (std::uint64_t s = 0; s < T; ++s)
                for (std::uint32_t c = 0; c < D; ++c) krows[s * D + c] = keys.at(hk, s, c), vrows[s * D + c] = values.at(hk, s, c);
            for (std::uint64_t t = 0; t < T; ++t) {
                for (std::uint32_t c = 0; c < D; ++c) qrow[c] = q.at(hq, t, c);
                double top = -std::numeric_limits<double>::infinity();
                for (std::uint64_t s = 0; s <= t; ++s) {
                    double dot = 0;
                    for (std::uint32_t c = 0; c < D; ++c) dot += qrow[c] * krows[s * D + c];
                    logits[s] = dot * scale;
                    top = std::max(top, logits[s]);
                }
                double z = 0;
                for (std::uint64_t s = 0; s <= t; ++s) z += (logits[s] = std::exp(logits[s] - top));
                double* out = &a.outputs[(std::size_t(hq) * T + t) * D];
                for (std::uint64_t s = 0; s <= t; ++s) {
                    const double p = logits[s] / z;
                    a.weights.push_back(p);
                    for (std::uint32_t c = 0; c < D; ++c) out[c] += p * vrows[s * D + c];
                }
            }
        }
        return a;
    }

    kv_cache_view original_;
    std::vector<kv_tensor_view> queries_;
    std::vector<layer_attention> reference_;
    bool real_ = false;
};

/// One-shot quality of decoded vs original (queries: one per layer, or empty for the key proxy).
inline kv_quality measure_kv_quality(const kv_cache_view& original, const kv_cache_view& decoded,
                                     std::span<const kv_tensor_view> queries = {}) {
    return attention_probe(original, queries).compare(decoded);
}

}  // namespace seqkv::metrics

SEQKV_FP_STRICT_END
