// Token-conditioned prediction: a vector is predicted by the running mean of earlier
// reconstructions of the SAME token id in this block (same layer, kind, head), optionally
// blended with the per-model expected KV table as a prior of weight `prior_weight`:
//   seen in chunk:  (Σ recon + w · table) / (n + w)     (class 0; w = 0 without a table entry)
//   table only:     table                               (class 1)
//   neither:        running mean of all earlier rows    (class 2; zero for the first row)
// Keys should run inside rope_domain (pre-RoPE), where a repeated token repeats its vector.
// Sums are fp64 accumulated in row order; the mean is one fp64 division rounded to fp32.
#pragma once

#include <unordered_map>

#include "seqkv/predict/expected_kv.hpp"
#include "seqkv/predict/predictor.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::predict {

/// Running mean of earlier reconstructions of the same token id, with an optional table prior.
class token_mean {
public:
    using params = no_params;
    static constexpr std::uint32_t context_classes = 3;
    static constexpr bool uses_previous_layer = false;

    explicit token_mean(double prior_weight = 1.0) : prior_weight_(double(float(prior_weight))) {
        require_usage(prior_weight >= 0, "token_mean: prior weight must be >= 0");
    }
    params fit(const block_context&, std::span<const float>) const { return {}; }
    void write_params(const params&, byte_writer&) const {}
    params read_params(const block_context&, byte_reader&) const { return {}; }

    void reset(const block_context& ctx, const params&) {
        ctx_ = ctx;
        use_table_ = table_usable(ctx);
        slots_.clear();
        sums_.clear();
        counts_.clear();
        global_sum_.assign(ctx.cols, 0.0);
        global_count_ = 0;
    }
    /// Classes of every row from the token ids and the table alone (what predict() will return).
    void row_classes(const block_context& ctx, const params&, std::span<std::uint8_t> out) const {
        const bool table = table_usable(ctx);
        std::unordered_map<std::int32_t, char> seen;
        for (std::uint32_t t = 0; t < out.size(); ++t) {
            const std::int64_t id = t < ctx.token_ids.size() ? ctx.token_ids[t] : -1;
            if (id >= 0 && !seen.try_emplace(std::int32_t(id), 1).second) out[t] = 0;
            else out[t] = table && id >= 0 && prior_of(ctx, id).size() == ctx.cols ? 1 : 2;
        }
    }
    std::uint32_t predict(std::uint32_t row, std::span<float> out) {
        const std::int64_t id = row < ctx_.token_ids.size() ? ctx_.token_ids[row] : -1;
        std::span<const float> prior;
        if (use_table_ && id >= 0) prior = prior_of(ctx_, id);
        if (prior.size() != ctx_.cols) prior = {};
        const auto it = id >= 0 ? slots_.find(std::int32_t(id)) : slots_.end();
        if (it != slots_.end()) {
            const double* sum = &sums_[std::size_t(it->second) * ctx_.cols];
            const double n = counts_[it->second];
            // w · prior is exact in double (w is an fp32 value, so 24 × 24 mantissa bits), hence
            // no FMA contraction can change the sum: no unfused_mul needed, and the loop vectorizes.
            const double w = prior.empty() ? 0.0 : prior_weight_, denominator = n + w;
            if (prior.empty())
                for (std::uint32_t c = 0; c < ctx_.cols; ++c) out[c] = float(sum[c] / denominator);
            else
                for (std::uint32_t c = 0; c < ctx_.cols; ++c) out[c] = float((sum[c] + w * double(prior[c])) / denominator);
            return 0;
        }
        if (!prior.empty()) {
            std::copy(prior.begin(), prior.end(), out.begin());
            return 1;
        }
        for (std::uint32_t c = 0; c < ctx_.cols; ++c)
            out[c] = global_count_ ? float(global_sum_[c] / double(global_count_)) : 0.0f;
        return 2;
    }
    void observe(std::uint32_t row, std::span<const float> recon) {
        const std::int64_t id = row < ctx_.token_ids.size() ? ctx_.token_ids[row] : -1;
        for (std::uint32_t c = 0; c < ctx_.cols; ++c) global_sum_[c] += recon[c];
        ++global_count_;
        if (id < 0) return;
        auto [it, inserted] = slots_.try_emplace(std::int32_t(id), std::uint32_t(counts_.size()));
        if (inserted) {
            counts_.push_back(0);
            sums_.resize(sums_.size() + ctx_.cols, 0.0);
        }
        double* sum = &sums_[std::size_t(it->second) * ctx_.cols];
        for (std::uint32_t c = 0; c < ctx_.cols; ++c) sum[c] += recon[c];
        ++counts_[it->second];
    }

private:
    // Key means in the table live in the pre-RoPE domain: usable only when rope_domain is active.
    static bool table_usable(const block_context& ctx) {
        return ctx.table != nullptr && (ctx.kind == kv_kind::value || ctx.table->keys_prerope() == (ctx.rope != nullptr));
    }
    static std::span<const float> prior_of(const block_context& ctx, std::int64_t id) {
        return ctx.table->find(ctx.layer, ctx.kind, ctx.head, id);
    }

    double prior_weight_;
    block_context ctx_;
    bool use_table_ = false;
    std::unordered_map<std::int32_t, std::uint32_t> slots_;  // token id -> slot
    std::vector<double> sums_;                               // [slot][cols]
    std::vector<std::uint32_t> counts_;                      // [slot]
    std::vector<double> global_sum_;
    std::uint64_t global_count_ = 0;
};
static_assert(RowClassesKnownAhead<token_mean>);

}  // namespace seqkv::predict

SEQKV_FP_STRICT_END
