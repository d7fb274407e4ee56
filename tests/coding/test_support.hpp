// Shared generators for the coding tests: reproducible symbol streams of chosen shape.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace seqkv_test {

/// Two-sided geometric (discrete Laplace) symbols around center, clamped into [0, alphabet).
template <class Symbol = std::uint16_t>
std::vector<Symbol> laplace_symbols(std::size_t count, std::uint32_t alphabet, double mean_abs, std::uint64_t seed,
                                    std::uint32_t center = UINT32_MAX) {
    if (center == UINT32_MAX) center = alphabet / 2;
    std::mt19937_64 rng(seed);
    std::geometric_distribution<std::int64_t> magnitude(1.0 / (1.0 + mean_abs));
    std::bernoulli_distribution sign(0.5);
    std::vector<Symbol> out(count);
    for (auto& s : out) {
        const std::int64_t value = static_cast<std::int64_t>(center) + (sign(rng) ? 1 : -1) * magnitude(rng);
        s = static_cast<Symbol>(std::clamp<std::int64_t>(value, 0, alphabet - 1));
    }
    return out;
}

/// Uniform symbols in [0, alphabet).
template <class Symbol = std::uint16_t>
std::vector<Symbol> uniform_symbols(std::size_t count, std::uint32_t alphabet, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::uint32_t> pick(0, alphabet - 1);
    std::vector<Symbol> out(count);
    for (auto& s : out) s = static_cast<Symbol>(pick(rng));
    return out;
}

/// Random contexts in [0, context_count).
template <class Context = std::uint16_t>
std::vector<Context> random_contexts(std::size_t count, std::uint32_t context_count, std::uint64_t seed) {
    return uniform_symbols<Context>(count, context_count, seed);
}

}  // namespace seqkv_test
