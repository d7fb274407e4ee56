// Maps the runtime codec configuration a file records to a compile-time composed codec.
#pragma once

#include <string>

#include "seqkv/codec/any_codec.hpp"
#include "seqkv/codec/lossless_codec.hpp"
#include "seqkv/format/container.hpp"

namespace seqkv {

/// Codec family ids stored in the preamble.
enum class codec_family : std::uint16_t { lossless = 1, lossy = 2 };

/// Configuration of the lossless codec.
inline format::codec_config lossless_config(const lossless::plane_options& o = {}) {
    require_usage(o.max_channel_classes >= 1 && o.max_channel_classes <= 255, "lossless: 1..255 channel classes");
    return {static_cast<std::uint16_t>(codec_family::lossless),
            {static_cast<std::uint8_t>(o.max_channel_classes),
             static_cast<std::uint8_t>((o.try_xor_previous_token ? 1 : 0) | (o.try_same_token ? 2 : 0))}};
}

/// Builds the codec a configuration names; Backend selects the kernels. Throws format_error
/// for an unknown family or malformed parameters.
template <backend::Backend Backend = backend::simd>
any_chunk_codec make_codec(const format::codec_config& config) {
    switch (static_cast<codec_family>(config.codec_id)) {
        case codec_family::lossless: {
            if (config.params.size() != 2 || config.params[0] == 0 || config.params[1] > 3)
                throw format_error("lossless codec: bad parameters");
            lossless::plane_options o;
            o.max_channel_classes = config.params[0];
            o.try_xor_previous_token = config.params[1] & 1;
            o.try_same_token = config.params[1] & 2;
            return any_chunk_codec::wrap(lossless_codec<Backend>(o), std::string("lossless (") + Backend::name + ")");
        }
        default:
            throw format_error("unknown codec family " + std::to_string(config.codec_id));
    }
}

}  // namespace seqkv
