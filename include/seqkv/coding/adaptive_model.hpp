// Adaptive frequency model for the range coder: counts that grow with every coded symbol and
// are halved when their total passes a limit, kept in a Fenwick tree so cumulative lookups
// and symbol search cost O(log alphabet) even for 2^16-symbol alphabets.
#pragma once

#include <cstdint>
#include <vector>

#include "seqkv/coding/frequency_table.hpp"
#include "seqkv/coding/range_coder.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

/// Order-0 adaptive model over [0, alphabet_size). Invariants: every frequency >= 1 (any symbol
/// stays codable), total() <= max_total <= range_coder_max_total. Encoder and decoder that apply
/// the same update() sequence hold identical state (pure integer arithmetic).
class adaptive_frequency_model {
public:
    /// increment: count added per coded symbol; max_total: rescale threshold (0 = automatic:
    /// max(2^16, 4 * alphabet_size)).
    explicit adaptive_frequency_model(std::uint32_t alphabet_size, std::uint32_t increment = 24,
                                      std::uint32_t max_total = 0)
        : freq_(alphabet_size, 1), tree_(alphabet_size + 1, 0), increment_(increment) {
        require_usage(alphabet_size >= 1 && alphabet_size <= max_alphabet_size,
                      "adaptive_frequency_model: alphabet size out of range");
        if (max_total == 0) max_total = std::max<std::uint32_t>(1u << 16, 4 * alphabet_size);
        require_usage(max_total <= range_coder_max_total && max_total >= 2 * alphabet_size + 2 * increment,
                      "adaptive_frequency_model: max_total out of range");
        require_usage(increment >= 1, "adaptive_frequency_model: increment must be >= 1");
        max_total_ = max_total;
        top_bit_ = 1;
        while (top_bit_ * 2 <= alphabet_size) top_bit_ *= 2;
        rebuild();
    }

    std::uint32_t alphabet_size() const { return static_cast<std::uint32_t>(freq_.size()); }
    std::uint32_t total() const { return total_; }
    std::uint32_t frequency(std::uint32_t symbol) const { return freq_[symbol]; }
    /// Sum of frequencies of symbols below symbol.
    std::uint32_t cumulative(std::uint32_t symbol) const {
        std::uint32_t sum = 0;
        for (std::uint32_t i = symbol; i > 0; i &= i - 1) sum += tree_[i];
        return sum;
    }
    /// The symbol whose subrange holds target (< total()); sets cumulative_out to its start.
    std::uint32_t find(std::uint32_t target, std::uint32_t& cumulative_out) const {
        std::uint32_t position = 0, below = 0;  // Fenwick descent: largest prefix with sum <= target
        for (std::uint32_t bit = top_bit_; bit != 0; bit >>= 1) {
            const std::uint32_t next = position + bit;
            if (next <= alphabet_size() && below + tree_[next] <= target) {
                position = next;
                below += tree_[next];
            }
        }
        cumulative_out = below;
        return position;  // symbols [0, position) sum to below <= target
    }
    /// Records one occurrence of symbol; halves all counts (keeping them >= 1) past max_total.
    void update(std::uint32_t symbol) {
        freq_[symbol] += increment_;
        total_ += increment_;
        for (std::uint32_t i = symbol + 1; i < tree_.size(); i += i & (0u - i)) tree_[i] += increment_;
        if (total_ > max_total_) {
            for (auto& f : freq_) f = (f + 1) / 2;
            rebuild();
        }
    }

private:
    void rebuild() {
        total_ = 0;
        for (std::uint32_t i = 1; i < tree_.size(); ++i) tree_[i] = freq_[i - 1];
        for (std::uint32_t i = 1; i < tree_.size(); ++i) {
            const std::uint32_t parent = i + (i & (0u - i));
            if (parent < tree_.size()) tree_[parent] += tree_[i];
            total_ += freq_[i - 1];
        }
    }

    std::vector<std::uint32_t> freq_;
    std::vector<std::uint32_t> tree_;  // Fenwick tree over freq_, 1-based
    std::uint32_t increment_;
    std::uint32_t max_total_ = 0;
    std::uint32_t total_ = 0;
    std::uint32_t top_bit_ = 1;
};

/// Codes symbol under the model's current state, then adapts the model.
inline void encode_symbol(range_encoder& enc, adaptive_frequency_model& model, std::uint32_t symbol) {
    enc.encode_with_total(model.cumulative(symbol), model.frequency(symbol), model.total());
    model.update(symbol);
}
/// Decodes one symbol and adapts the model exactly as encode_symbol did.
inline std::uint32_t decode_symbol(range_decoder& dec, adaptive_frequency_model& model) {
    std::uint32_t cumulative = 0;
    const std::uint32_t symbol = model.find(dec.decode_slot_with_total(model.total()), cumulative);
    dec.consume(cumulative, model.frequency(symbol));
    model.update(symbol);
    return symbol;
}

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
