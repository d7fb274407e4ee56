// Format tests that go through the public API (compress / decompress and the registry's codecs).
#pragma once

#include "format_test_support.hpp"
#include "seqkv/api.hpp"

namespace seqkv::test {

/// compress() options: the default codec, chunks of chunk_tokens, payloads offered to `external`.
inline compress_options chunked(std::uint32_t chunk_tokens, format::external_payload_fn external = {}) {
    compress_options o;
    o.chunk_tokens = chunk_tokens;
    o.external_payloads = std::move(external);
    return o;
}

}  // namespace seqkv::test
