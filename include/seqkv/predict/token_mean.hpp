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

namespace seqkv::predict {

/// Running mean of earlier reconstructions of the same token id, with an optional table prior.
class token_mean {
public:
    using params = no_params;
    static constexpr std::uint32_t context_classes = 3;

    explicit token_mean(double prior_weight = 1.0) : prior_weight_(prior_weight) {
        require_usage(prior_weight >= 0, "token_mean: prior weight must be >= 0");
    }
    params fit(const block_context&, std::span<const float>) const { return {}; }
    void write_params(const params&, byte_writer&) const {}
    params read_params(const block_context&, byte_reader&) const { return {}; }

    void reset(const block_context& ctx, const params&) {
        ctx_ = ctx;
        // Key means in the table live in the pre-RoPE domain: usable only when rope_domain is active.
        use_table_ = ctx.table != nullptr &&
                     (ctx.kind == kv_kind::value || ctx.table->keys_prerope() == (ctx.rope != nullptr));
        slots_.clear();
        sums_.clear();
        counts_.clear();
        global_sum_.assign(ctx.cols, 0.0);
        global_count_ = 0;
    }
    std::uint32_t predict(std::uint32_t row, std::span<float> out) {
        const std::int64_t id = row < ctx_.token_ids.size() ? ctx_.token_ids[row] : -1;
        std::span<const float> prior;
        if (use_table_ && id >= 0) prior = ctx_.table->find(ctx_.layer, ctx_.kind, ctx_.head, id);
        if (prior.size() != ctx_.cols) prior = {};
        const auto it = id >= 0 ? slots_.find(std::int32_t(id)) : slots_.end();
        if (it != slots_.end()) {
            const double* sum = &sums_[std::size_t(it->second) * ctx_.cols];
            const double n = counts_[it->second];
            const double w = prior.empty() ? 0.0 : prior_weight_;
            for (std::uint32_t c = 0; c < ctx_.cols; ++c)
                out[c] = float((sum[c] + (prior.empty() ? 0.0 : quant::unfused_mul(w, double(prior[c])))) / (n + w));
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
    double prior_weight_;
    block_context ctx_;
    bool use_table_ = false;
    std::unordered_map<std::int32_t, std::uint32_t> slots_;  // token id -> slot
    std::vector<double> sums_;                               // [slot][cols]
    std::vector<std::uint32_t> counts_;                      // [slot]
    std::vector<double> global_sum_;
    std::uint64_t global_count_ = 0;
};
static_assert(ResidualPredictor<token_mean>);

}  // namespace seqkv::predict
