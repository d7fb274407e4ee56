// Context selection for KV streams: maps (layer, head, channel) to a small context id so that
// each group of statistically similar scalars gets its own table (static or adaptive).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::coding {

/// Contexts are laid out layer-major: id = ((layer * heads_per_context_layer) + head_group) *
/// channel_groups + channel / channel_group_size. Setting a share_* flag collapses that axis
/// (all layers, or all heads, share statistics).
struct kv_context_layout {
    std::uint32_t layers = 1;
    std::uint32_t heads = 1;
    std::uint32_t channels = 1;            // head dimension D
    std::uint32_t channel_group_size = 1;  // channels per context group; >= channels = one group
    bool share_layers = false;
    bool share_heads = false;

    std::uint32_t layer_slots() const { return share_layers ? 1 : layers; }
    std::uint32_t head_slots() const { return share_heads ? 1 : heads; }
    std::uint32_t channel_groups() const { return (channels + channel_group_size - 1) / channel_group_size; }
    /// Number of distinct context ids (<= 2^16, validated).
    std::uint32_t context_count() const {
        validate();
        return layer_slots() * head_slots() * channel_groups();
    }
    /// Context id of one scalar.
    std::uint16_t context_of(std::uint32_t layer, std::uint32_t head, std::uint32_t channel) const {
        const std::uint32_t l = share_layers ? 0 : layer, h = share_heads ? 0 : head;
        return static_cast<std::uint16_t>((l * head_slots() + h) * channel_groups() + channel / channel_group_size);
    }
    /// Fills contexts for `tokens` consecutive D-channel vectors of one (layer, head), the order
    /// a [T, D] slice is coded in; contexts.size() must be tokens * channels.
    void fill_vector_contexts(std::uint32_t layer, std::uint32_t head, std::span<std::uint16_t> contexts) const {
        require_usage(channels > 0 && contexts.size() % channels == 0, "kv_context_layout: contexts not a multiple of channels");
        require_usage(layer < layers && head < heads, "kv_context_layout: layer or head out of range");
        for (std::size_t i = 0; i < contexts.size(); ++i)
            contexts[i] = context_of(layer, head, static_cast<std::uint32_t>(i % channels));
    }
    void validate() const {
        require_usage(layers >= 1 && heads >= 1 && channels >= 1 && channel_group_size >= 1,
                      "kv_context_layout: zero-sized axis");
        const std::uint64_t count = std::uint64_t{layer_slots()} * head_slots() * channel_groups();
        require_usage(count <= (1u << 16), "kv_context_layout: more than 2^16 contexts");
    }
};

}  // namespace seqkv::coding

SEQKV_FP_STRICT_END
