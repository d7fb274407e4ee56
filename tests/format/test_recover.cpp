// Recovering an unfinished or damaged stream (format/recover.hpp): whatever was flushed comes
// back — a cut at any byte, a writer process killed at random moments, a flipped byte in chunk j
// keep exactly the whole valid chunks before it, decoded bit-exactly as the full stream decodes
// them — with a lossless, a lossy and a dependent-chunk codec; a complete stream comes back as is.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>

#include "api_test_support.hpp"
#include "seqkv/core/file_io.hpp"
#include "seqkv/format/recover.hpp"

namespace {

using namespace seqkv;
using namespace seqkv::test;
namespace fs = std::filesystem;

/// A codec under test: the configuration its files record and how to build it.
struct codec_case {
    std::string name;
    format::codec_config config;
    std::function<any_chunk_codec()> make;
    bool lossless = true;
    std::uint32_t keyframe_interval = 16;
};

std::vector<codec_case> codec_cases() {
    return {
        {"lossless", lossless_config(), [] { return make_codec(lossless_config()); }, true, 16},
        {"lossy int8", lossy_codec_config(lossy_preset("int8")), [] { return make_codec(lossy_codec_config(lossy_preset("int8"))); },
         false, 16},
        {"xor chain (dependent chunks)", {77, {1, 2, 3}}, [] { return xor_chain(); }, true, 3},
    };
}

constexpr std::uint32_t chunk_tokens = 8;

/// Writes `cache` through stream_writer into `sink` one chunk at a time (after_chunk() after each),
/// with token ids and nll; finish() at the end when asked (which adds the attachment "note").
std::vector<format::chunk_entry> write_chunk_by_chunk(format::byte_sink sink, const owned_cache& cache, const codec_case& c,
                                                      bool finish, const std::function<void()>& after_chunk = {}) {
    format::preamble p;
    p.layout = cache.layout;
    p.codec = c.config;
    p.chunk_tokens = chunk_tokens;
    p.keyframe_interval = c.keyframe_interval;
    p.has_token_ids = p.has_nll = true;
    p.metadata["purpose"] = "recover test";
    const std::uint64_t T = cache.layout.tokens;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    for (std::uint64_t t = 0; t < T; ++t) ids.push_back(std::int32_t(t * 11 % 17)), nll.push_back(0.25f * float(t));
    format::stream_writer w(std::move(sink), p, c.make());
    for (std::uint64_t t = 0; t < T; t += chunk_tokens) {
        const std::uint64_t e = std::min<std::uint64_t>(T, t + chunk_tokens);
        w.append(cache.view(), t, e, std::span(ids).subspan(t, e - t), std::span(nll).subspan(t, e - t));
        if (after_chunk) after_chunk();
    }
    if (finish) {
        w.add_attachment("note", {1, 2, 3, 4});
        w.finish();
    }
    return w.chunks();
}

/// One stream written twice: unfinished (finish() never called: the full chunks only) and
/// finished; the finished stream's decoded KV is what any kept prefix must decode to.
struct written {
    owned_cache cache;
    codec_case codec;
    byte_vector unfinished, finished;
    std::vector<format::chunk_entry> chunks;  // of the finished stream
    owned_cache reference;                    // its full decode
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    std::map<std::size_t, byte_vector> expected_files;  // k -> preamble, chunks [0, k), fresh tail

    written(owned_cache c, codec_case cc) : cache(std::move(c)), codec(std::move(cc)) {
        auto into = [](byte_vector& out) {
            return [&out](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); };
        };
        write_chunk_by_chunk(into(unfinished), cache, codec, false);
        chunks = write_chunk_by_chunk(into(finished), cache, codec, true);
        format::stream_reader reader(finished);
        reference = {cache.layout, reader.decode(codec.make())};
        if (codec.lossless) expect_same_bytes(reference.all, cache.slice(0, cache.layout.tokens));
        ids = reader.token_ids();
        nll = reader.nll();
    }
    std::uint64_t data_begin() const { return chunks.front().offset; }
    std::uint64_t end_of(std::size_t k) const { return k ? chunks[k - 1].offset + chunks[k - 1].record_bytes : data_begin(); }
    std::uint64_t tokens_of(std::size_t k) const { return k ? chunks[k - 1].first_token + chunks[k - 1].tokens : 0; }
    /// Chunks whose records lie wholly within the first n bytes.
    std::size_t whole_chunks(std::uint64_t n) const {
        std::size_t k = 0;
        while (k < chunks.size() && end_of(k + 1) <= n) ++k;
        return k;
    }

    /// Expects r to be exactly the first k chunks: the same bytes as preamble + records + a fresh
    /// tail, and (checked once per k) that file decodes to the reference's tokens [0, tokens_of(k)).
    void expect_first_chunks(const format::recovery& r, std::size_t k, const std::string& where) {
        ASSERT_EQ(r.chunks, k) << where << ": " << r.reason;
        EXPECT_EQ(r.tokens, tokens_of(k)) << where;
        EXPECT_EQ(r.chunks_end, end_of(k)) << where;
        auto [it, fresh] = expected_files.try_emplace(k);
        if (fresh) {
            it->second.assign(finished.begin(), finished.begin() + std::ptrdiff_t(end_of(k)));
            format::append_tail(it->second, end_of(k), std::span(chunks).first(k), {}, tokens_of(k));
            format::stream_reader reader(it->second);
            ASSERT_EQ(reader.tokens(), tokens_of(k));
            ASSERT_EQ(reader.chunks().size(), k);
            expect_same_bytes(reader.decode(codec.make()), reference.slice(0, tokens_of(k)));
            EXPECT_EQ(reader.token_ids(), std::vector<std::int32_t>(ids.begin(), ids.begin() + std::ptrdiff_t(tokens_of(k))));
            EXPECT_EQ(reader.nll(), std::vector<float>(nll.begin(), nll.begin() + std::ptrdiff_t(tokens_of(k))));
        }
        EXPECT_TRUE(r.file == it->second) << where << ": the recovered file differs from the first " << k << " chunks";
    }
};

written small_stream(const codec_case& c) { return written(random_cache({2, 2, 8, 37, dtype::bf16}, 41), c); }

TEST(Recover, ACompleteStreamComesBackUnchanged) {
    for (const auto& c : codec_cases()) {
        SCOPED_TRACE(c.name);
        const auto w = small_stream(c);
        const auto r = format::recover_stream(w.finished);
        EXPECT_TRUE(r.complete) << r.reason;
        EXPECT_EQ(r.chunks, w.chunks.size());
        EXPECT_EQ(r.tokens, 37u);
        EXPECT_EQ(r.attachments, 1u);
        EXPECT_EQ(r.dropped_bytes, 0u);
        EXPECT_EQ(r.damaged_at, w.finished.size());
        EXPECT_TRUE(r.file == w.finished);
        format::stream_reader reader(r.file);
        EXPECT_EQ(reader.attachment_names(), std::vector<std::string>{"note"});
        expect_same_bytes(reader.decode(c.make()), w.reference.all);
    }
}

TEST(Recover, CompressedFilesAndVersionOneVectorsComeBackUnchanged) {
    const auto cache = random_cache({2, 2, 16, 50, dtype::f16}, 42);
    for (const auto& c : codec_cases()) {
        if (c.config.codec_id == 77) continue;  // not a registry codec
        SCOPED_TRACE(c.name);
        compress_options o = chunked(16);
        o.codec = c.config;
        const auto file = compress(cache.view(), o);
        const auto r = format::recover_stream(file);
        EXPECT_TRUE(r.complete && r.file == file) << r.reason;
        expect_same_bytes(decompress(r.file), decompress(file));
    }
    const auto v1 = read_file(fs::path(SEQKV_VECTORS_DIR) / "v1" / "lossless.skv");
    const auto r = format::recover_stream(v1);
    EXPECT_TRUE(r.complete && r.file == v1) << r.reason;
    // A version-1 stream cut inside chunk 1 keeps chunk 0, still as version 1.
    format::stream_reader original(v1);
    ASSERT_GE(original.chunks().size(), 2u);
    const auto& c1 = original.chunks()[1];
    const byte_vector cut(v1.begin(), v1.begin() + std::ptrdiff_t(c1.offset + c1.record_bytes / 2));
    const auto part = format::recover_stream(cut);
    EXPECT_EQ(part.chunks, 1u);
    EXPECT_EQ(format::stream_reader(part.file).version(), 1);
    expect_same_bytes(decompress(part.file), decompress(v1, 0, c1.first_token));
}

// Every cut after the preamble keeps exactly the chunks wholly before it; a cut inside the
// preamble is the reader's error. Both for a stream written without finish() and a finished one.
TEST(Recover, EveryTruncationKeepsExactlyTheWholeChunksBeforeIt) {
    for (const auto& c : codec_cases()) {
        SCOPED_TRACE(c.name);
        auto w = small_stream(c);
        ASSERT_EQ(w.chunks.size(), 5u);
        ASSERT_EQ(w.unfinished.size(), w.end_of(4));  // the 4 full chunks were flushed; the 5th was staged
        for (const byte_vector* source : {&w.unfinished, &w.finished}) {
            const bool finished = source == &w.finished;
            for (std::size_t n = 0; n <= source->size(); ++n) {
                const std::span<const std::uint8_t> cut(source->data(), n);
                const std::string where = (finished ? "finished" : "unfinished") + std::string(" stream cut at ") + std::to_string(n);
                if (n < w.data_begin()) {
                    EXPECT_THROW(format::recover_stream(cut), format_error) << where;
                    continue;
                }
                format::recovery r;
                try {
                    r = format::recover_stream(cut);
                } catch (const std::exception& e) {
                    ADD_FAILURE() << where << ": " << e.what();
                    continue;
                }
                const std::size_t k = w.whole_chunks(n);
                if (finished && n == source->size()) {
                    EXPECT_TRUE(r.complete && r.file == w.finished) << where;
                    continue;
                }
                EXPECT_FALSE(r.complete) << where;
                EXPECT_EQ(r.damaged_at, n == w.end_of(k) ? n : w.end_of(k)) << where;
                EXPECT_EQ(r.dropped_bytes, n - w.end_of(k)) << where;
                EXPECT_FALSE(r.reason.empty());
                w.expect_first_chunks(r, k, where);
                if (::testing::Test::HasFailure()) return;  // one report, not thousands
            }
        }
    }
}

TEST(Recover, AFlippedByteInChunkJKeepsTheChunksBeforeIt) {
    for (const auto& c : codec_cases()) {
        SCOPED_TRACE(c.name);
        auto w = small_stream(c);
        for (const byte_vector* source : {&w.unfinished, &w.finished})
            for (std::size_t j = 0; j < w.chunks.size() && w.end_of(j + 1) <= source->size(); ++j)
                for (std::uint64_t i = w.chunks[j].offset; i < w.end_of(j + 1); ++i)
                    for (std::uint8_t mask : {0x01, 0x80}) {
                        auto bad = *source;
                        bad[i] ^= mask;
                        const auto r = format::recover_stream(bad);
                        const std::string where = "chunk " + std::to_string(j) + ", byte " + std::to_string(i) + " ^ " + std::to_string(mask);
                        EXPECT_FALSE(r.complete) << where;
                        EXPECT_EQ(r.damaged_at, w.chunks[j].offset) << where;
                        w.expect_first_chunks(r, j, where);
                        if (::testing::Test::HasFailure()) return;
                    }
    }
}

/// Rewrites chunk record `c`'s CRC after an edit of its header.
void recrc(byte_vector& file, const format::chunk_entry& c) {
    put_le32(file, c.offset + c.record_bytes - 4, crc32c(std::span(file).subspan(c.offset, c.record_bytes - 4)));
}

// Records with a valid CRC that a reader would still reject stop the walk too.
TEST(Recover, RecordsAReaderRejectsStopTheWalkEvenWithAValidCrc) {
    auto w = small_stream(codec_cases()[2]);  // xor chain: keyframes at chunks 0 and 3
    auto check = [&](std::size_t j, const std::function<void(byte_vector&, const format::chunk_entry&)>& edit,
                     const std::string& word) {
        auto bad = w.unfinished;
        edit(bad, w.chunks[j]);
        recrc(bad, w.chunks[j]);
        const auto r = format::recover_stream(bad);
        EXPECT_NE(r.reason.find(word), std::string::npos) << r.reason;
        w.expect_first_chunks(r, j, "chunk " + std::to_string(j) + " " + word);
    };
    const auto set_flags = [](std::uint8_t f) { return [f](byte_vector& b, const format::chunk_entry& c) { b[c.offset + 16] = f; }; };
    check(0, set_flags(format::chunk_dependent), "keyframe");
    check(3, set_flags(format::chunk_dependent), "keyframe");
    check(1, set_flags(format::chunk_dependent | 0x40), "flags");
    check(2, [](byte_vector& b, const format::chunk_entry& c) { b[c.offset + 4] ^= 1; }, "first_token");
    check(1, [](byte_vector& b, const format::chunk_entry& c) { put_le32(b, c.offset + 12, 0); }, "token count");
    check(2, [](byte_vector& b, const format::chunk_entry& c) { put_le32(b, c.offset + 12, chunk_tokens + 1); }, "token count");
    check(1, [](byte_vector& b, const format::chunk_entry& c) { put_le32(b, c.offset + 17, 0xfffffff0u); }, "truncated");
    // A reader's tighter limit on total tokens.
    format::container_limits limits;
    limits.max_tokens = 20;
    const auto r = format::recover_stream(w.unfinished, limits);
    EXPECT_EQ(r.chunks, 2u);
    EXPECT_NE(r.reason.find("max_tokens"), std::string::npos) << r.reason;
}

TEST(Recover, ADamagedPreambleIsTheReadersError) {
    const auto w = small_stream(codec_cases()[0]);
    auto bad = w.unfinished;
    bad[20] ^= 1;  // inside the preamble body
    EXPECT_THROW(format::recover_stream(bad), checksum_error);
    bad = w.unfinished;
    bad[0] = 'X';
    EXPECT_THROW(format::recover_stream(bad), format_error);
    const auto r = format::recover_stream(std::span(w.unfinished).first(w.data_begin()));  // the preamble alone
    EXPECT_EQ(r.chunks, 0u);
    EXPECT_EQ(format::stream_reader(r.file).tokens(), 0u);
}

/// Forks a child that writes w's stream chunk by chunk into `path` through stream_writer — each
/// piece the writer emits goes out in write() calls of at most 61 bytes, then fsync — pausing
/// between chunks, and finishes it; returns the child's pid.
pid_t start_writer(const fs::path& path, const written& w, const any_chunk_codec& codec, useconds_t pause_us) {
    const pid_t child = ::fork();
    if (child != 0) return child;
    int status = 0;
    try {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) ::_exit(3);
        auto sink = [fd](std::span<const std::uint8_t> bytes) {
            for (std::size_t at = 0; at < bytes.size();) {
                const auto n = ::write(fd, bytes.data() + at, std::min<std::size_t>(61, bytes.size() - at));
                if (n <= 0) ::_exit(4);
                at += std::size_t(n);
            }
            ::fsync(fd);
        };
        codec_case same = w.codec;
        same.make = [&] { return codec; };  // built before fork: the child only writes
        write_chunk_by_chunk(sink, w.cache, same, true, [pause_us] { ::usleep(pause_us); });
        ::close(fd);
    } catch (...) {
        status = 5;
    }
    ::_exit(status);
}

// A child process writes a stream chunk by chunk into a file (start_writer); the parent SIGKILLs
// it at a random moment — a seeded fraction of how long one whole write took, so the moments
// repeat in proportion — then recovers the file. Whatever chunks were wholly on disk come back
// bit-exact; a file cut inside its preamble is the reader's error.
TEST(Recover, AWriterKilledAtRandomMomentsLosesNoFlushedChunk) {
    auto w = written(random_cache({2, 2, 16, 100, dtype::bf16}, 43), codec_cases()[0]);  // 13 chunks
    const auto dir = fs::temp_directory_path() / ("seqkv_recover_test_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    constexpr useconds_t pause_us = 2000;
    const auto codec = w.codec.make();
    // One write left alone: it must produce the reference bytes, and it says how long a write takes.
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t whole = start_writer(dir / "whole.skv", w, codec, pause_us);
    ASSERT_GE(whole, 0);
    int whole_status = 0;
    ASSERT_EQ(::waitpid(whole, &whole_status, 0), whole);
    const double write_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(WIFEXITED(whole_status) && WEXITSTATUS(whole_status) == 0);
    ASSERT_TRUE(read_file(dir / "whole.skv") == w.finished);
    std::mt19937 rng(20240613);
    std::uniform_real_distribution<double> fraction(0.0, 1.1);
    std::map<std::size_t, int> outcomes;  // chunks kept -> trials
    for (int trial = 0; trial < 16; ++trial) {
        const auto path = dir / ("trial" + std::to_string(trial) + ".skv");
        const auto delay = useconds_t(fraction(rng) * write_us);
        const pid_t child = start_writer(path, w, codec, pause_us);
        ASSERT_GE(child, 0);
        ::usleep(delay);
        ::kill(child, SIGKILL);
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) << "trial " << trial;
        const byte_vector bytes = fs::exists(path) ? read_file(path) : byte_vector{};
        const std::string where = "trial " + std::to_string(trial) + " (killed after " + std::to_string(delay) + " us, " +
                                  std::to_string(bytes.size()) + " bytes on disk)";
        ASSERT_TRUE(std::equal(bytes.begin(), bytes.end(), w.finished.begin(), w.finished.begin() + std::ptrdiff_t(std::min(bytes.size(), w.finished.size()))))
            << where << ": the child wrote other bytes than the reference";
        if (bytes.size() < w.data_begin()) {
            EXPECT_THROW(format::recover_stream(bytes), format_error) << where;
            ++outcomes[std::size_t(-1)];
            continue;
        }
        const auto r = format::recover_stream(bytes);
        if (bytes.size() == w.finished.size()) {
            EXPECT_TRUE(r.complete && r.file == w.finished) << where;
        } else {
            w.expect_first_chunks(r, w.whole_chunks(bytes.size()), where);
        }
        ++outcomes[r.chunks];
    }
    std::string summary;
    for (auto [k, n] : outcomes) summary += (k == std::size_t(-1) ? std::string("no preamble") : std::to_string(k) + " chunks") + ": " + std::to_string(n) + " trial(s); ";
    RecordProperty("outcomes", summary);
    std::cout << "[ recover  ] kill outcomes: " << summary << "\n";
    fs::remove_all(dir);
}

}  // namespace
