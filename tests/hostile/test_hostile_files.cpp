// Hostile headers: crafted .skv files that claim the maximum of every field (layers, heads,
// head_dim, tokens, chunk sizes, attachment sizes, counts) with payloads that cannot back the
// claim. Each must end in a seqkv error, and the largest single allocation the reader makes
// while it finds out is measured (this binary replaces the global operator new to record it):
//   * a claim that the file's own bytes contradict (a count beyond the bytes present, a record
//     whose CRC fails) is refused before anything proportional to the claim is allocated:
//     at most 64 x the file's size;
//   * a payload whose framing cannot be a chunk of the claimed size (the codec's check_payload)
//     is refused before the reader allocates for it;
//   * a claim the bytes are consistent with (a valid record whose correctly framed payload says
//     "64 MiB of KV") is bounded by the reader's max_decode_bytes cap (container_limits).
// The table printed at the end is the README's "largest allocation a hostile file can cause".
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "seqkv/api.hpp"
#include "seqkv/format/index.hpp"
#include "seqkv/format/reader.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SEQKV_NO_NEW_HOOK 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SEQKV_NO_NEW_HOOK 1
#endif

namespace {
std::atomic<std::size_t> largest_allocation{0};
#ifdef SEQKV_NO_NEW_HOOK
constexpr bool measuring = false;  // ASan owns operator new: errors are still checked, sizes not
#else
constexpr bool measuring = true;
#endif
}  // namespace

#ifndef SEQKV_NO_NEW_HOOK
void* operator new(std::size_t n) {
    std::size_t seen = largest_allocation.load(std::memory_order_relaxed);
    while (n > seen && !largest_allocation.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace {

using namespace seqkv;

struct chunk_spec {
    std::uint32_t tokens = 1;
    byte_vector payload;
};

/// A complete, correctly checksummed file around whatever header and payloads it is given.
byte_vector craft(const format::preamble& p, const std::vector<chunk_spec>& chunks,
                  const std::vector<format::attachment>& attachments = {}) {
    byte_vector out(format::file_magic, format::file_magic + 8);
    byte_writer w(out);
    const byte_vector body = format::encode_preamble(p);
    w.put<std::uint16_t>(format::format_version);
    w.put<std::uint16_t>(0);
    w.put<std::uint32_t>(std::uint32_t(body.size()));
    w.put_bytes(body);
    w.put<std::uint32_t>(crc32c(body));
    std::vector<format::chunk_entry> entries;
    std::uint64_t token = 0;
    for (const auto& c : chunks) {
        const std::size_t start = out.size();
        std::vector<std::int32_t> ids(p.has_token_ids ? c.tokens : 0, 1);
        format::append_chunk_record(out, token, c.tokens, 0, ids, {}, c.payload);
        entries.push_back({start, token, c.tokens, std::uint32_t(out.size() - start), 0});
        token += c.tokens;
    }
    format::append_tail(out, out.size(), entries, attachments, token);
    return out;
}

format::preamble header(std::uint32_t layers, std::uint32_t heads, std::uint32_t head_dim, std::uint32_t chunk_tokens,
                        dtype t = dtype::bf16, format::codec_config codec = lossless_config()) {
    format::preamble p;
    p.layout = {layers, heads, head_dim, 0, t};
    p.chunk_tokens = chunk_tokens;
    p.codec = std::move(codec);
    p.keyframe_interval = 1;
    return p;
}

struct outcome {
    bool seqkv_error = false;
    std::string message;
    std::size_t largest = 0;
};

/// Opens and decodes `file` like `seqkv decompress` (every token), recording the largest allocation.
outcome open_and_decode(std::span<const std::uint8_t> file, const format::container_limits& limits) {
    outcome o;
    largest_allocation = 0;
    try {
        format::stream_reader reader(file, limits);
        reader.require_resources({});
        (void)reader.decode(make_codec(reader.header().codec), 0, std::nullopt);
        (void)reader.token_ids();
    } catch (const seqkv::error& e) {
        o.seqkv_error = true;
        o.message = e.what();
    }
    o.largest = largest_allocation;
    return o;
}

struct row {
    std::string name;
    std::size_t file_bytes, largest;
    std::string error;
};
std::vector<row> report;

void expect_refused(const std::string& name, const byte_vector& file, const format::container_limits& limits, std::size_t bound) {
    const outcome o = open_and_decode(file, limits);
    EXPECT_TRUE(o.seqkv_error) << name << ": decoded without an error";
    if (measuring) EXPECT_LE(o.largest, bound) << name << ": allocated " << o.largest << " bytes for a " << file.size() << "-byte file (" << o.message << ")";
    report.push_back({name, file.size(), o.largest, o.message});
}

TEST(HostileFiles, ClaimsTheBytesContradictAreRefusedBeforeAllocating) {
    const format::container_limits defaults;  // the library's default limits
    auto bound = [](const byte_vector& f) { return 64 * f.size(); };
    const byte_vector tiny_payload(16, 0x5a);

    // Every geometry field at its limit: one chunk would be 2^63 bytes.
    auto f = craft(header(4096, 4096, 65536, 1u << 20), {{1, tiny_payload}});
    expect_refused("layers/heads/head_dim/chunk_tokens at max", f, defaults, bound(f));
    // Just inside the one-chunk limit (4 GiB a token), but the record's CRC is wrong.
    f = craft(header(4096, 4, 65536, 1), {{1, tiny_payload}});
    f[std::size_t(std::search(f.begin(), f.end(), tiny_payload.begin(), tiny_payload.end()) - f.begin())] ^= 0x01;  // a payload byte
    expect_refused("4 GiB chunk, record CRC wrong", f, defaults, bound(f));
    // Geometry past the limits one field at a time.
    for (auto [l, h, d] : {std::array<std::uint32_t, 3>{4097, 1, 1}, {1, 4097, 1}, {1, 1, 65537}, {0, 1, 1}, {1, 0, 1}, {1, 1, 0}}) {
        f = craft(header(1, 1, 1, 1), {});
        // Rewrite the body's geometry in place (offsets 16, 20, 24) and fix the body CRC.
        const std::uint32_t body_len = load_le32(f.data() + 12);
        for (int i = 0; i < 4; ++i) f[16 + i] = std::uint8_t(l >> (8 * i)), f[20 + i] = std::uint8_t(h >> (8 * i)), f[24 + i] = std::uint8_t(d >> (8 * i));
        const std::uint32_t crc = crc32c(std::span<const std::uint8_t>(f.data() + 16, body_len));
        for (int i = 0; i < 4; ++i) f[16 + body_len + i] = std::uint8_t(crc >> (8 * i));
        expect_refused("geometry " + std::to_string(l) + "x" + std::to_string(h) + "x" + std::to_string(d), f, defaults, bound(f));
    }
    // chunk_tokens past its limit.
    f = craft(header(1, 1, 1, (1u << 20) + 1), {});
    expect_refused("chunk_tokens 2^20 + 1", f, defaults, bound(f));
    // Metadata and resources that claim more entries than the body holds.
    {
        format::preamble p = header(1, 1, 8, 4);
        p.metadata = {{"k", "v"}};
        f = craft(p, {{4, tiny_payload}});
        // metadata_count follows params; find the 'k' key's length prefix and inflate the count before it.
        // Body: layers, heads, head_dim (u32), dtype (u8), chunk_tokens (u32), flags (u8), codec id (u16), params_len (u32) at 20.
        const std::size_t params_len = load_le32(f.data() + 16 + 20);
        const std::size_t count_at = 16 + 24 + params_len;
        for (int i = 0; i < 4; ++i) f[count_at + i] = 0xff;
        const std::uint32_t body_len = load_le32(f.data() + 12);
        const std::uint32_t crc = crc32c(std::span<const std::uint8_t>(f.data() + 16, body_len));
        for (int i = 0; i < 4; ++i) f[16 + body_len + i] = std::uint8_t(crc >> (8 * i));
        expect_refused("metadata count 2^32 - 1", f, defaults, bound(f));
    }
    // An attachment record that claims 2^63 bytes (its index entry points at it; CRCs valid).
    {
        f = craft(header(1, 1, 8, 4), {{4, tiny_payload}}, {{"quality.json", byte_vector{'{', '}'}}});
        // The attachment record is name (u32 len + 12 bytes), u64 size, bytes, crc; set size = 2^63.
        const byte_vector needle{'q', 'u', 'a', 'l', 'i', 't', 'y', '.', 'j', 's', 'o', 'n'};
        const auto at = std::search(f.begin(), f.end(), needle.begin(), needle.end()) - f.begin() + 12;
        for (int i = 0; i < 8; ++i) f[std::size_t(at) + i] = i == 7 ? 0x80 : 0;
        expect_refused("attachment size 2^63", f, defaults, bound(f));
    }
    // Index and trailer claims: a chunk count beyond the index, a token count beyond the limit.
    {
        f = craft(header(1, 1, 8, 4), {{4, tiny_payload}});
        const std::uint64_t index_offset = load_le32(f.data() + f.size() - 36);
        for (int i = 0; i < 4; ++i) f[index_offset + i] = 0xff;
        const std::uint32_t crc = crc32c(std::span<const std::uint8_t>(f.data() + index_offset, f.size() - 12 - index_offset));
        for (int i = 0; i < 4; ++i) f[f.size() - 12 + i] = std::uint8_t(crc >> (8 * i));
        expect_refused("index chunk count 2^32 - 1", f, defaults, bound(f));
        f = craft(header(1, 1, 8, 4), {{4, tiny_payload}});
        for (int i = 0; i < 8; ++i) f[f.size() - 36 + 16 + i] = i == 5 ? 0x01 : 0;  // total_tokens = 2^40
        const std::uint32_t crc2 = crc32c(std::span<const std::uint8_t>(f.data() + index_offset, f.size() - 12 - index_offset));
        for (int i = 0; i < 4; ++i) f[f.size() - 12 + i] = std::uint8_t(crc2 >> (8 * i));
        expect_refused("trailer tokens 2^40", f, defaults, bound(f));
    }
}

TEST(HostileFiles, ConsistentClaimsAreBoundedByTheDecodeCap) {
    // Valid records whose tiny payloads claim far more KV than they hold: the reader may allocate
    // for the claim (a valid file of constant KV really is this small), but never past the cap.
    format::container_limits capped;
    capped.max_decode_bytes = 256u << 20;
    const byte_vector tiny_payload(16, 0x5a);
    const std::size_t slack = 1u << 20;  // the reader's own bookkeeping besides the KV buffers
    // A lossless payload whose framing is right (2 x layers length-prefixed blocks of header size:
    // it passes check_payload), so what refuses or bounds the decode is the cap itself.
    auto framed = [](std::uint32_t layers) {
        byte_vector p;
        for (std::uint32_t b = 0; b < 2 * layers; ++b) {
            const byte_vector block{0, 1, 0, 3, 1, 0, 0, 0, 0xAB, 3, 1, 0, 0};  // 13 = 3 + 5 x 2 bytes
            for (int i = 0; i < 4; ++i) p.push_back(std::uint8_t(block.size() >> (8 * i)));
            p.insert(p.end(), block.begin(), block.end());
        }
        return p;
    };
    auto expect_capped = [&](const std::string& name, const byte_vector& f, std::size_t bound) {
        expect_refused(name, f, capped, bound);
        EXPECT_NE(report.back().error.find("max_decode_bytes"), std::string::npos) << name << ": " << report.back().error;
    };
    // One chunk of 4 GiB (the one-chunk limit) with a framed payload: over the cap, refused before allocating.
    auto f = craft(header(1, 4096, 65536, 4), {{4, framed(1)}});
    expect_capped("4 GiB chunk, framed payload", f, slack + 64 * f.size());
    // Many chunks of 2^20 tokens each (512 MiB a chunk): the whole decode is over the cap.
    std::vector<chunk_spec> many(64, chunk_spec{1u << 20, framed(1)});
    f = craft(header(1, 2, 64, 1u << 20), many);
    expect_capped("64 chunks x 2^20 tokens, framed", f, slack + 64 * f.size());
    // With token ids in the records: the same claim, still refused by the cap.
    auto with_ids = header(1, 4096, 65536, 4);
    with_ids.has_token_ids = true;
    f = craft(with_ids, {{4, framed(1)}});
    expect_capped("4 GiB chunk with token ids, framed", f, slack + 64 * f.size());
    // A garbled payload (wrong framing) is refused by check_payload even under the cap.
    f = craft(header(4, 8, 128, 4096), {{4096, tiny_payload}});
    expect_refused("64 MiB chunk under the cap, garbage payload", f, capped, slack + 64 * f.size());
    f = craft(header(4, 8, 128, 4096, dtype::bf16, lossy_codec_config(lossy_preset("kivi4"))), {{4096, tiny_payload}});
    expect_refused("64 MiB lossy chunk, garbage payload", f, capped, slack + 64 * f.size());
    // Under the cap with a framed payload: the reader allocates what the claim needs (output +
    // one chunk, which the cap admits) and the block decoder then refuses it.
    f = craft(header(4, 8, 128, 4096), {{4096, framed(4)}});
    const std::size_t claim = 2ull * 4 * 8 * 128 * 2 * 4096;
    expect_refused("64 MiB chunk under the cap, framed payload", f, capped, 2 * claim + slack);
}

TEST(HostileFiles, PrintTheLargestAllocationTable) {
    // Runs after the two above (gtest keeps declaration order within a file).
    std::printf("%-46s %10s %14s %9s  %s\n", "hostile file", "bytes", "largest alloc", "x size", "error");
    for (const auto& r : report)
        std::printf("%-46s %10zu %14zu %9.1f  %.60s\n", r.name.c_str(), r.file_bytes, r.largest,
                    double(r.largest) / double(r.file_bytes), r.error.c_str());
    SUCCEED();
}

}  // namespace
