// Schedule policies of the lossy codec: which blocks the closed loop visits, in which order, and
// what context a block sees. A block is (layer, K/V, head) with rows = the chunk's tokens.
//   per_head_schedule:   layer by layer; within a layer every (K/V, head) block runs all its rows
//                        and the blocks are independent (an executor may run them concurrently);
//                        a block sees the previous layer's finished reconstruction.
//   token_major_schedule: token by token across every layer and head (what model-driven coding
//                        needs: the model steps one token through all layers). A block sees the
//                        previous layer's rows up to the current token only, so predictors that
//                        read a whole previous-layer block at reset see zeros there. Needs a symbol
//                        coder with contexts known ahead (a compile error otherwise).
// Both write the same payload layout (codec/lossy/codec.hpp), so one decoder reads either.
#pragma once

#include <concepts>
#include <cstdint>
#include <string_view>

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::lossy {

struct per_head_schedule {
    static constexpr std::string_view name = "per-head";
    static constexpr bool token_major = false;
    /// Calls step(block, t0, t1) in this schedule's order for `blocks` blocks of `rows` rows.
    template <class Step>
    static void visit(std::uint32_t blocks, std::uint32_t rows, Step&& step) {
        for (std::uint32_t b = 0; b < blocks; ++b) step(b, 0u, rows);
    }
};

struct token_major_schedule {
    static constexpr std::string_view name = "token-major";
    static constexpr bool token_major = true;
    template <class Step>
    static void visit(std::uint32_t blocks, std::uint32_t rows, Step&& step) {
        for (std::uint32_t t = 0; t < rows; ++t)
            for (std::uint32_t b = 0; b < blocks; ++b) step(b, t, t + 1);
    }
};

/// A schedule names itself, says whether it is token-major and visits (block, row range) steps.
template <class S>
concept Schedule = requires {
    { S::name } -> std::convertible_to<std::string_view>;
    { S::token_major } -> std::convertible_to<bool>;
    S::visit(std::uint32_t{}, std::uint32_t{}, [](std::uint32_t, std::uint32_t, std::uint32_t) {});
};

static_assert(Schedule<per_head_schedule>);
static_assert(Schedule<token_major_schedule>);

}  // namespace seqkv::lossy

SEQKV_FP_STRICT_END
