// Corruption matrix on small real files (a slice of the bundled fixture) for each codec family:
// every truncation, every bit of the preamble, chunk headers and CRCs, attachments, index and
// trailer, and a seeded sample of bits inside chunk bodies. Each trial reads the file the way a
// user does (open, decode all and a range, token ids, nll, attachments): the outcome must be a
// seqkv::error, or a success whose every result equals the intact file's. Nothing else passes:
// not another exception type, not different bytes. By docs/FORMAT.md every byte of a file is
// validated or under a CRC, so no flip may be accepted at all. The one documented outcome is a
// flip whose record CRC is re-sealed (what no checksum can see by design): there the codec alone
// stands between the bytes and the decoder, so the file may read with other KV, token ids or nll,
// but still never with another exception type (ForgedCrc test).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <typeinfo>

#include "api_test_support.hpp"
#include "seqkv/codec/lossy/presets.hpp"
#include "seqkv/io/kv_safetensors.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::test;

constexpr std::uint32_t slice_layers = 2, slice_tokens = 40, chunk_tokens = 14;  // chunks of 14, 14, 12
constexpr std::size_t sampled_body_flips = 2000;

/// What a reader gives back from a file: everything a user can ask for.
struct readout {
    byte_vector all, range;  // decode of every token, and of tokens [10, 30)
    std::vector<std::int32_t> token_ids;
    std::vector<float> nll;
    std::vector<std::pair<std::string, byte_vector>> attachments;
    std::vector<std::optional<byte_vector>> found;  // find_attachment of each intact name
    bool operator==(const readout&) const = default;
};

readout read_everything(std::span<const std::uint8_t> bytes, const std::vector<std::string>& names) {
    format::stream_reader reader(bytes);
    readout r;
    for (const auto& a : reader.attachments()) r.attachments.emplace_back(a.name, a.bytes);
    for (const auto& n : names) r.found.push_back(reader.find_attachment(n));
    const auto codec = make_codec(reader.header().codec);
    r.all = reader.decode(codec).bytes;
    r.range = reader.decode(codec, 10, 30).bytes;
    r.token_ids = reader.token_ids();
    r.nll = reader.nll();
    return r;
}

/// A slice of the fixture: the first slice_layers layers, the first slice_tokens tokens.
struct fixture_slice {
    owned_cache cache;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    fixture_slice() {
        const auto file = io::safetensors_file::load(std::filesystem::path(SEQKV_DATA_DIR) / "kv" / "gpl3.safetensors");
        const auto full = io::kv_view(file);
        kv_layout layout = full.layout;
        layout.layers = slice_layers;
        layout.tokens = slice_tokens;
        cache = {layout, chunk_buffer::for_layout(layout, slice_tokens)};
        for (std::uint32_t l = 0; l < slice_layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) gather_block(full.tensor(l, kind), 0, slice_tokens, cache.all.block(l, kind));
        ids = io::token_ids_of(file, full.layout.tokens).value_or(std::vector<std::int32_t>{});
        nll = io::nll_of(file, full.layout.tokens).value_or(std::vector<float>{});
        ids.resize(std::min<std::size_t>(ids.size(), slice_tokens));
        nll.resize(std::min<std::size_t>(nll.size(), slice_tokens));
    }
};

const fixture_slice& slice() {
    static const fixture_slice s;
    return s;
}

struct matrix_file {
    std::string name;
    byte_vector bytes;
};

byte_vector compress_slice(format::codec_config codec) {
    compress_options o;
    o.codec = std::move(codec);
    o.chunk_tokens = chunk_tokens;
    o.metadata = {{"model", "seqkv-tiny-llama"}, {"source", "GPL-3"}};
    return compress(slice().cache.view(), o, slice().ids, slice().nll);
}

std::vector<matrix_file> matrix_files() {
    lossless::plane_options rope;
    rope.rope = lossless::rope::parameters{10000.0, lossless::rope::pairing::rotate_half};
    const lossy_model_info model{10000.0, 64};
    std::vector<matrix_file> files{
        {"lossless", compress_slice(lossless_config())},
        {"lossless+rope", compress_slice(lossless_config(rope))},
        {"seqkv-2bit", compress_slice(lossy_codec_config(lossy_preset("seqkv-2bit", model)))},
        {"kivi4", compress_slice(lossy_codec_config(lossy_preset("kivi4")))},
        {"turbo3+attachments", compress_slice(lossy_codec_config(lossy_preset("turbo3")))},
    };
    auto& t = files.back().bytes;
    t = format::with_attachment(t, "quality.json", {'{', '"', 'o', 'k', '"', ':', '1', '}'});
    t = format::with_attachment(t, "note", byte_vector(37, 0xA5));
    return files;
}

/// The outcome classes of one trial.
/// accepted_*: the file read without an error, with every result equal to the intact file's
/// (same) or not (changed).
enum class outcome { checksum, limit, format, resource, usage, other_seqkv, accepted_same, accepted_changed, foreign, count_ };

struct tally {
    /// The trials re-sealed the record's CRC: a corruption no check can see by design, so an
    /// accepted file is a documented outcome here (and a failure everywhere else).
    bool crc_forged = false;
    std::size_t counts[std::size_t(outcome::count_)] = {};
    std::size_t trials = 0;
    std::vector<std::string> failures;  // first few, for the report

    void add(outcome o, const std::string& where) {
        ++trials;
        ++counts[std::size_t(o)];
        const bool accepted = o == outcome::accepted_same || o == outcome::accepted_changed;
        if ((o == outcome::foreign || (accepted && !crc_forged)) && failures.size() < 10) failures.push_back(where);
    }
    std::size_t operator[](outcome o) const { return counts[std::size_t(o)]; }
};

/// Runs one trial on bytes; `where` names it in a failure.
void trial(tally& t, std::span<const std::uint8_t> bytes, const readout& want, const std::vector<std::string>& names,
           const std::string& where) {
    try {
        const auto got = read_everything(bytes, names);
        t.add(got == want ? outcome::accepted_same : outcome::accepted_changed, where);
    } catch (const checksum_error&) {
        t.add(outcome::checksum, where);
    } catch (const limit_error&) {
        t.add(outcome::limit, where);
    } catch (const format_error&) {
        t.add(outcome::format, where);
    } catch (const resource_error&) {
        t.add(outcome::resource, where);
    } catch (const usage_error& e) {
        t.add(outcome::usage, where + " (" + e.what() + ")");
    } catch (const seqkv::error&) {
        t.add(outcome::other_seqkv, where);
    } catch (const std::exception& e) {
        t.add(outcome::foreign, where + ": " + typeid(e).name() + ": " + e.what());
    } catch (...) {
        t.add(outcome::foreign, where + ": a non-std exception");
    }
}

/// Byte ranges [begin, end) of a file's parts.
struct file_map {
    std::size_t preamble_end = 0, chunks_end = 0, index_begin = 0, size = 0;  // index_begin: the index's offset
    std::vector<format::chunk_entry> chunks;
    std::vector<std::string> attachment_names;
    explicit file_map(std::span<const std::uint8_t> f) : size(f.size()) {
        format::stream_reader reader(f);
        preamble_end = 16 + load_le32(f.data() + 12) + 4;
        chunks = reader.chunks();
        chunks_end = reader.chunks_end();
        const std::uint64_t index_offset = std::uint64_t(load_le32(f.data() + f.size() - format::trailer_bytes)) |
                                           std::uint64_t(load_le32(f.data() + f.size() - format::trailer_bytes + 4)) << 32;
        index_begin = std::size_t(index_offset);
        attachment_names = reader.attachment_names();
    }
};

void flip_range(tally& t, byte_vector& work, std::size_t begin, std::size_t end, const readout& want,
                const std::vector<std::string>& names, const char* part) {
    for (std::size_t i = begin; i < end; ++i)
        for (int bit = 0; bit < 8; ++bit) {
            work[i] ^= std::uint8_t(1u << bit);
            trial(t, work, want, names, std::string(part) + " byte " + std::to_string(i) + " bit " + std::to_string(bit));
            work[i] ^= std::uint8_t(1u << bit);
        }
}

TEST(CorruptionMatrix, EveryTruncationAndFlipIsAnErrorOrChangesNothing) {
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t total_trials = 0;
    for (const auto& f : matrix_files()) {
        SCOPED_TRACE(f.name);
        const auto f0 = std::chrono::steady_clock::now();
        const file_map map(f.bytes);
        ASSERT_GE(map.chunks.size(), 3u);
        const readout want = read_everything(f.bytes, map.attachment_names);
        ASSERT_EQ(want.token_ids, slice().ids);
        ASSERT_EQ(want.nll.size(), slice().nll.size());
        tally t;
        // (a) every truncation
        const std::span<const std::uint8_t> all(f.bytes);
        for (std::size_t n = 0; n < f.bytes.size(); ++n)
            trial(t, all.first(n), want, map.attachment_names, "truncated to " + std::to_string(n));
        // (b) every bit of the preamble, chunk headers and CRCs, attachments, index, trailer
        byte_vector work = f.bytes;
        flip_range(t, work, 0, map.preamble_end, want, map.attachment_names, "preamble");
        for (std::size_t c = 0; c < map.chunks.size(); ++c) {
            const auto& e = map.chunks[c];
            const std::string part = "chunk " + std::to_string(c);
            flip_range(t, work, e.offset, e.offset + 21, want, map.attachment_names, (part + " header").c_str());
            flip_range(t, work, e.offset + e.record_bytes - 4, e.offset + e.record_bytes, want, map.attachment_names,
                       (part + " crc").c_str());
        }
        flip_range(t, work, map.chunks_end, map.index_begin, want, map.attachment_names, "attachments");
        flip_range(t, work, map.index_begin, f.bytes.size(), want, map.attachment_names, "index+trailer");
        // (c) a seeded sample of bits inside chunk bodies (token ids, nll, payload)
        std::vector<std::size_t> body_bytes;
        for (const auto& e : map.chunks)
            for (std::size_t i = e.offset + 21; i + 4 < e.offset + e.record_bytes; ++i) body_bytes.push_back(i);
        std::mt19937_64 rng(0x5EC0 + f.bytes.size());
        for (std::size_t s = 0; s < sampled_body_flips; ++s) {
            const std::size_t i = body_bytes[rng() % body_bytes.size()];
            const int bit = int(rng() % 8);
            work[i] ^= std::uint8_t(1u << bit);
            trial(t, work, want, map.attachment_names, "chunk body byte " + std::to_string(i) + " bit " + std::to_string(bit));
            work[i] ^= std::uint8_t(1u << bit);
        }
        ASSERT_TRUE(work == f.bytes);

        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count();
        std::printf("[corruption matrix] %-18s %6zu bytes %zu chunks %zu attachments: trials %zu (truncations %zu); errors: "
                    "checksum %zu, format %zu, limit %zu, resource %zu, usage %zu, other %zu; documented outcomes 0; "
                    "accepted unchanged %zu, accepted changed %zu; crashes (foreign exceptions) %zu; %.2f s\n",
                    f.name.c_str(), f.bytes.size(), map.chunks.size(), map.attachment_names.size(), t.trials,
                    f.bytes.size(), t[outcome::checksum], t[outcome::format], t[outcome::limit], t[outcome::resource],
                    t[outcome::usage], t[outcome::other_seqkv], t[outcome::accepted_same], t[outcome::accepted_changed],
                    t[outcome::foreign], sec);
        std::fflush(stdout);
        // No field lies outside every check (docs/FORMAT.md): nothing corrupt may be accepted,
        // not even with identical results.
        EXPECT_EQ(t[outcome::accepted_changed], 0u) << "accepted with different results";
        EXPECT_EQ(t[outcome::accepted_same], 0u) << "a corruption accepted";
        EXPECT_EQ(t[outcome::foreign], 0u) << "an exception that is not a seqkv::error";
        for (const auto& w : t.failures) ADD_FAILURE() << w;
        total_trials += t.trials;
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[corruption matrix] total: %zu trials, %.2f s\n", total_trials, sec);
    RecordProperty("trials", std::to_string(total_trials));
}

TEST(CorruptionMatrix, ForgedCrcBodyFlipsReachTheCodecAndNeverEscapeAsAnotherException) {
    constexpr std::size_t forged_flips = 800;  // most of these decode whole files: the slow part
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& f : matrix_files()) {
        SCOPED_TRACE(f.name);
        const file_map map(f.bytes);
        const readout want = read_everything(f.bytes, map.attachment_names);
        tally t;
        t.crc_forged = true;
        byte_vector work = f.bytes;
        std::mt19937_64 rng(0xF0A6 + f.bytes.size());
        for (std::size_t s = 0; s < forged_flips; ++s) {
            const auto& e = map.chunks[rng() % map.chunks.size()];
            const std::size_t body = e.record_bytes - 4 - 21;  // token ids, nll, payload
            const std::size_t i = e.offset + 21 + rng() % body;
            const int bit = int(rng() % 8);
            const auto crc_at = e.offset + e.record_bytes - 4;
            work[i] ^= std::uint8_t(1u << bit);
            put_le32(work, crc_at, crc32c(std::span(work).subspan(e.offset, e.record_bytes - 4)));
            trial(t, work, want, map.attachment_names, "forged chunk body byte " + std::to_string(i) + " bit " + std::to_string(bit));
            work[i] ^= std::uint8_t(1u << bit);
            std::copy_n(f.bytes.begin() + std::ptrdiff_t(crc_at), 4, work.begin() + std::ptrdiff_t(crc_at));
        }
        ASSERT_TRUE(work == f.bytes);
        std::printf("[corruption matrix, CRC re-sealed] %-18s trials %zu; errors: checksum %zu, format %zu, limit %zu, "
                    "resource %zu, usage %zu, other %zu; documented outcomes: read unchanged %zu, read changed %zu; "
                    "crashes (foreign exceptions) %zu\n",
                    f.name.c_str(), t.trials, t[outcome::checksum], t[outcome::format], t[outcome::limit], t[outcome::resource],
                    t[outcome::usage], t[outcome::other_seqkv], t[outcome::accepted_same], t[outcome::accepted_changed],
                    t[outcome::foreign]);
        std::fflush(stdout);
        EXPECT_EQ(t[outcome::foreign], 0u) << "an exception that is not a seqkv::error";
        for (const auto& w : t.failures) ADD_FAILURE() << w;
    }
    std::printf("[corruption matrix, CRC re-sealed] %.2f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

/// The message of the seqkv::error that reading `bytes` throws ("" and a failure if none).
std::string error_of(std::span<const std::uint8_t> bytes, const std::vector<std::string>& names) {
    try {
        (void)read_everything(bytes, names);
        ADD_FAILURE() << "no error";
    } catch (const seqkv::error& e) {
        return e.what();
    }
    return "";
}

void expect_mentions(const std::string& message, std::initializer_list<const char*> words) {
    for (const char* w : words) EXPECT_NE(message.find(w), std::string::npos) << "'" << message << "' lacks '" << w << "'";
}

TEST(CorruptionMatrix, ErrorsNameWhatIsWrong) {
    const auto files = matrix_files();
    const auto& f = files.back();  // has attachments
    const file_map map(f.bytes);
    auto flipped = [&](std::size_t at) {
        auto b = f.bytes;
        b[at] ^= 0x10;
        return error_of(b, map.attachment_names);
    };
    const auto& c1 = map.chunks[1];
    expect_mentions(flipped(c1.offset + c1.record_bytes / 2), {"chunk", "checksum"});   // payload
    expect_mentions(flipped(c1.offset + 5), {"chunk", "checksum"});                      // first_token
    expect_mentions(flipped(c1.offset + c1.record_bytes - 2), {"chunk", "checksum"});    // its CRC
    expect_mentions(flipped(20), {"preamble", "checksum"});                              // preamble body
    expect_mentions(flipped(map.preamble_end - 1), {"preamble", "checksum"});            // its CRC
    expect_mentions(flipped(map.index_begin + 6), {"index", "checksum"});                // chunk 0's offset
    expect_mentions(flipped(map.chunks_end + 3), {"attachment", "checksum"});
    expect_mentions(flipped(f.bytes.size() - 3), {"trailer"});                           // trailer magic
    expect_mentions(flipped(f.bytes.size() - 36), {"trailer", "index"});                 // index_offset
    expect_mentions(flipped(0), {"magic"});
    expect_mentions(error_of(std::span(f.bytes).first(f.bytes.size() - 1), map.attachment_names), {"truncated"});
}

}  // namespace
