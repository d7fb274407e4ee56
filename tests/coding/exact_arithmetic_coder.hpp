// Test oracle: an arithmetic coder in exact rational arithmetic (Boost.Multiprecision). It keeps
// the coding interval [low/D, (low+width)/D) without any rounding, so its code length is the
// ideal -log2(width/D) rounded up to whole bits (+1), and its decoder is a reference for ours.
#pragma once

#include <boost/multiprecision/cpp_bin_float.hpp>
#include <boost/multiprecision/cpp_int.hpp>
#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/coding/frequency_table.hpp"

namespace seqkv_test {

using boost::multiprecision::cpp_int;
using exact_float = boost::multiprecision::cpp_bin_float_50;

/// One model step: the subrange [cumulative, cumulative+frequency) of total.
struct model_interval {
    std::uint32_t cumulative, frequency, total;
};

/// Exact encoder: narrows the interval step by step with big-integer arithmetic.
class exact_arithmetic_encoder {
public:
    void push(const model_interval& step) {
        low_ = low_ * step.total + cpp_int(step.cumulative) * width_;
        width_ *= step.frequency;
        denominator_ *= step.total;
    }
    /// Bits of the shortest binary fraction v / 2^k inside the interval, and v.
    std::pair<cpp_int, std::size_t> shortest_code() const {
        const std::size_t lower = msb(denominator_) > msb(width_) + 1 ? msb(denominator_) - msb(width_) - 1 : 0;
        for (std::size_t k = lower;; ++k) {
            const cpp_int scaled_low = low_ << k;
            cpp_int v = scaled_low / denominator_;
            if (v * denominator_ < scaled_low) ++v;
            if (v * denominator_ < (low_ + width_) << k) return {v, k};
        }
    }
    /// -log2(width / D): the ideal code length in bits, to 50 digits.
    exact_float ideal_bits() const {
        return exact_float(boost::multiprecision::log2(exact_float(denominator_)) - boost::multiprecision::log2(exact_float(width_)));
    }
    /// Exact integer bounds: floor and ceil of the ideal length via bit lengths.
    std::size_t ideal_bits_floor_bound() const {
        return msb(denominator_) > msb(width_) ? msb(denominator_) - msb(width_) - 1 : 0;
    }

private:
    static std::size_t msb(const cpp_int& v) { return v == 0 ? 0 : boost::multiprecision::msb(v); }
    cpp_int low_ = 0, width_ = 1, denominator_ = 1;
};

/// Exact decoder for code v / 2^k. Model must provide total(), find(slot) -> model_interval plus
/// symbol, and update(symbol). Keeps A = v*D - low*2^k and B = width*2^k so each step needs only
/// small-by-big products: slot = floor(A * total / B).
template <class Model>
std::vector<std::uint32_t> exact_decode(const cpp_int& v, std::size_t k, std::size_t count, Model& model) {
    cpp_int a = v, b = cpp_int(1) << k;
    std::vector<std::uint32_t> symbols;
    symbols.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t total = model.total();
        const auto slot = static_cast<std::uint32_t>(cpp_int((a * total) / b));
        const auto [symbol, step] = model.find(slot);
        a = a * total - cpp_int(step.cumulative) * b;
        b *= step.frequency;
        model.update(symbol);
        symbols.push_back(symbol);
    }
    return symbols;
}

/// Static-table model adaptor for exact_decode.
struct static_table_model {
    const seqkv::coding::frequency_table* table;
    std::uint32_t total() const { return table->total(); }
    std::pair<std::uint32_t, model_interval> find(std::uint32_t slot) const {
        std::uint32_t s = 0;
        while (!(table->cumulative(s) <= slot && slot < table->cumulative(s) + table->frequency(s))) ++s;
        return {s, {table->cumulative(s), table->frequency(s), table->total()}};
    }
    void update(std::uint32_t) {}
};

/// Ideal code length sum_s n_s * (P - log2 f_s) of a histogram under a static table, to 50 digits.
inline exact_float ideal_bits(std::span<const std::uint64_t> counts, const seqkv::coding::frequency_table& table) {
    exact_float bits = 0;
    for (std::uint32_t s = 0; s < counts.size(); ++s)
        if (counts[s] != 0)
            bits += exact_float(counts[s]) * (exact_float(table.precision_bits()) - boost::multiprecision::log2(exact_float(table.frequency(s))));
    return bits;
}

}  // namespace seqkv_test
