// Type-erased chunk codec: what the container holds once a runtime configuration has been
// mapped to a compile-time composed codec.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "seqkv/core/chunk_codec.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// A ChunkCodec behind std::function, plus a short human-readable description.
struct any_chunk_codec {
    std::function<byte_vector(const chunk_input&)> encode;
    std::function<void(std::span<const std::uint8_t>, const chunk_input&, chunk_buffer&)> decode;
    std::string description;
    bool dependent_chunks = false;  // chunks use chunk_input::carry (see ChunkCodec)
    bool codes_token_ids = false;   // the payload codes the ids (token mode): the container passes them, stores none
    bool whole_context = false;     // dependent chunks that need every earlier chunk: one keyframe, at token 0
    std::vector<resource_ref> resources;  // what the codec needs at decode time (the file's resource table)
    /// Optional, cheap: throws format_error when a payload's framing cannot be what a chunk of
    /// this layout (layout.tokens = the chunk's tokens) decodes from. A reader runs it on every
    /// record a decode needs before it allocates the decoded KV (a short or garbled payload that
    /// claims gigabytes fails there, not after the allocation).
    std::function<void(std::span<const std::uint8_t>, const kv_layout&)> check_payload;
    /// Optional: decode straight into rows of a larger buffer (chunk_destination), as `decode` but
    /// without a staging chunk_buffer; a reader uses it for chunks wholly inside the decoded range.
    std::function<void(std::span<const std::uint8_t>, const chunk_input&, const chunk_destination&)> decode_into;

    /// Wraps a concrete codec (copied into shared state).
    template <ChunkCodec C>
    static any_chunk_codec wrap(C codec, std::string description) {
        auto shared = std::make_shared<const C>(std::move(codec));
        return {[shared](const chunk_input& in) { return shared->encode(in); },
                [shared](std::span<const std::uint8_t> payload, const chunk_input& in, chunk_buffer& out) {
                    shared->decode(payload, in, out);
                },
                std::move(description), has_dependent_chunks<C>(), seqkv::codes_token_ids<C>(), seqkv::whole_context<C>(), {},
                check_of(shared), decode_into_of(shared)};
    }

private:
    template <class C>
    static std::function<void(std::span<const std::uint8_t>, const chunk_input&, const chunk_destination&)> decode_into_of(
        const std::shared_ptr<const C>& c) {
        if constexpr (requires(std::span<const std::uint8_t> p, const chunk_input& in, const chunk_destination& d) { c->decode_into(p, in, d); })
            return [c](std::span<const std::uint8_t> p, const chunk_input& in, const chunk_destination& d) { c->decode_into(p, in, d); };
        else
            return {};
    }
    template <class C>
    static std::function<void(std::span<const std::uint8_t>, const kv_layout&)> check_of(const std::shared_ptr<const C>& c) {
        if constexpr (requires(std::span<const std::uint8_t> p, const kv_layout& l) { c->check_payload(p, l); })
            return [c](std::span<const std::uint8_t> p, const kv_layout& l) { c->check_payload(p, l); };
        else
            return {};
    }
};

}  // namespace seqkv

SEQKV_FP_STRICT_END
