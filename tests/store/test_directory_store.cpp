// directory_chunk_store beyond the conformance suite: the file layout, every kind of damage to a
// chunk file (never returned as valid), leftovers of a crashed put, several stores on one folder.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "seqkv/core/checksum.hpp"
#include "seqkv/store/directory_store.hpp"
#include "store_test_support.hpp"

namespace {

using namespace seqkv;
using store_test::random_bytes;

byte_vector read_all(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return byte_vector(std::istreambuf_iterator<char>(in), {});
}
void write_all(const std::filesystem::path& p, const byte_vector& b) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

class DirectoryStore : public ::testing::Test {
protected:
    store_test::temp_dir tmp;
    directory_chunk_store store{tmp.path() / "chunks"};
    const byte_vector chunk = random_bytes(1000, 11);
    const std::uint64_t key = chunk_key(chunk);
    std::filesystem::path file() const { return store.chunk_path(key); }
    /// The chunk's file with f applied to its bytes.
    template <class F>
    void damage(F f) {
        byte_vector b = read_all(file());
        f(b);
        write_all(file(), b);
    }
};

TEST_F(DirectoryStore, Layout) {
    store.put(key, chunk);
    const std::string hex = chunk_key_hex(key);
    EXPECT_EQ(file(), tmp.path() / "chunks" / hex.substr(0, 2) / (hex + ".chunk"));
    const byte_vector b = read_all(file());
    ASSERT_EQ(b.size(), 32 + chunk.size());
    EXPECT_EQ(std::string(b.begin(), b.begin() + 4), "SKVC");
    EXPECT_EQ(byte_vector(b.begin() + 32, b.end()), chunk);
    EXPECT_EQ(byte_vector(b.begin(), b.begin() + 32), detail::chunk_frame_header(key, chunk.size()));
    // Only the chunk file is left in its folder (no temporary file).
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(file().parent_path())) ++files;
    EXPECT_EQ(files, 1u);
}

TEST_F(DirectoryStore, FlippedPayloadByteIsChecksumError) {
    store.put(key, chunk);
    damage([](byte_vector& b) { b[32 + 500] ^= 0x10; });
    EXPECT_THROW(store.get(key), checksum_error);
    EXPECT_TRUE(store.contains(key));  // contains does not read the bytes
}

TEST_F(DirectoryStore, FlippedHeaderByteIsRejected) {
    for (std::size_t at : {0u, 5u, 9u, 17u, 25u, 30u}) {
        store.put(key, chunk);
        damage([at](byte_vector& b) { b[at] ^= 0x01; });
        EXPECT_THROW(store.get(key), format_error) << "byte " << at;
    }
}

TEST_F(DirectoryStore, TruncatedFileIsRejected) {
    for (std::size_t keep : {0u, 1u, 31u, 32u, 33u, 1031u}) {
        store.put(key, chunk);
        damage([keep](byte_vector& b) { b.resize(keep); });
        EXPECT_THROW(store.get(key), format_error) << "kept " << keep;
    }
}

TEST_F(DirectoryStore, ExtendedFileIsRejected) {
    store.put(key, chunk);
    damage([](byte_vector& b) { b.push_back(0); });
    EXPECT_THROW(store.get(key), format_error);
}

TEST_F(DirectoryStore, AbsurdClaimedSizeRejectedBeforeAllocating) {
    store.put(key, chunk);
    // A header with a valid CRC that claims 1 TiB: limit_error, nothing allocated.
    damage([this](byte_vector& b) {
        const byte_vector h = detail::chunk_frame_header(key, std::uint64_t(1) << 40);
        std::copy(h.begin(), h.end(), b.begin());
    });
    EXPECT_THROW(store.get(key), limit_error);
    // One that claims a few bytes more than the file has: format_error.
    damage([this](byte_vector& b) {
        const byte_vector h = detail::chunk_frame_header(key, chunk.size() + 8);
        std::copy(h.begin(), h.end(), b.begin());
    });
    EXPECT_THROW(store.get(key), format_error);
}

TEST_F(DirectoryStore, ChunkFileOfAnotherKeyIsRejected) {
    const byte_vector other = random_bytes(1000, 12);
    store.put(chunk_key(other), other);
    std::filesystem::create_directories(file().parent_path());
    std::filesystem::copy_file(store.chunk_path(chunk_key(other)), file());
    EXPECT_THROW(store.get(key), format_error);
}

TEST_F(DirectoryStore, PutRepairsACorruptChunk) {
    store.put(key, chunk);
    damage([](byte_vector& b) { b[40] ^= 0xff; });
    EXPECT_THROW(store.get(key), checksum_error);
    store.put(key, chunk);
    EXPECT_EQ(store.get(key), chunk);
}

TEST_F(DirectoryStore, LeftoverTempFileIsNotAChunk) {
    // What a put killed before its rename leaves behind: a complete or partial temporary file.
    const std::filesystem::path folder = file().parent_path();
    std::filesystem::create_directories(folder);
    byte_vector full = detail::chunk_frame_header(key, chunk.size());
    full.insert(full.end(), chunk.begin(), chunk.end());
    const auto tmp1 = folder / ("." + chunk_key_hex(key) + ".4242.0.tmp");
    const auto tmp2 = folder / ("." + chunk_key_hex(key) + ".4242.1.tmp");
    write_all(tmp1, full);
    write_all(tmp2, byte_vector(full.begin(), full.begin() + 500));
    EXPECT_FALSE(store.contains(key));
    EXPECT_FALSE(store.get(key).has_value());
    // Young temporary files may belong to a put in progress: kept.
    EXPECT_EQ(store.remove_stale_temp_files(std::chrono::hours(1)), 0u);
    EXPECT_TRUE(std::filesystem::exists(tmp1));
    EXPECT_EQ(store.remove_stale_temp_files(std::chrono::seconds(0)), 2u);
    EXPECT_FALSE(std::filesystem::exists(tmp1));
    EXPECT_FALSE(std::filesystem::exists(tmp2));
    store.put(key, chunk);
    EXPECT_EQ(store.remove_stale_temp_files(std::chrono::seconds(0)), 0u);
    EXPECT_EQ(store.get(key), chunk);
}

TEST_F(DirectoryStore, WriterKilledMidPutLeavesNoHalfChunk) {
    // A child process puts 32 MiB chunks in a loop and is SIGKILLed at some point: every chunk
    // file that exists afterwards is whole and valid, whatever the moment of death.
    std::vector<byte_vector> chunks;
    for (int i = 0; i < 3; ++i) chunks.push_back(random_bytes(32u << 20, 20 + i));
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        directory_chunk_store child(tmp.path() / "chunks");
        for (const auto& c : chunks) child.put(chunk_key(c), c);
        ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    for (const auto& c : chunks) {
        const auto got = store.get(chunk_key(c));  // never throws: nothing half written is visible
        if (got) {
            EXPECT_TRUE(*got == c);
        }
    }
    store.remove_stale_temp_files(std::chrono::seconds(0));
}

TEST_F(DirectoryStore, TwoStoresShareOneFolder) {
    directory_chunk_store other(tmp.path() / "chunks", {.durable = false});
    other.put(key, chunk);
    EXPECT_EQ(store.get(key), chunk);
    store.remove(key);
    EXPECT_FALSE(other.contains(key));
}

TEST_F(DirectoryStore, SameChunkFromManyThreads) {
    const byte_vector big = random_bytes(1u << 20, 13);
    std::vector<std::thread> pool;
    std::atomic<int> bad{0};
    for (int t = 0; t < 4; ++t)
        pool.emplace_back([&] {
            for (int i = 0; i < 10; ++i) {
                store.put(chunk_key(big), big);
                const auto got = store.get(chunk_key(big));
                if (!got || *got != big) ++bad;
            }
        });
    for (auto& th : pool) th.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(store.remove_stale_temp_files(std::chrono::seconds(0)), 0u);
}

TEST(MemoryStore, Stats) {
    memory_chunk_store store;
    const byte_vector a = random_bytes(100, 1), b = random_bytes(50, 2);
    put_chunk(store, a);
    put_chunk(store, a);
    put_chunk(store, b);
    EXPECT_EQ(store.chunk_count(), 2u);
    EXPECT_EQ(store.stored_bytes(), 150u);
    store.remove(chunk_key(a));
    EXPECT_EQ(store.chunk_count(), 1u);
    EXPECT_EQ(store.stored_bytes(), 50u);
}

TEST(ChunkKey, HexIsSixteenLowercaseDigits) {
    EXPECT_EQ(chunk_key_hex(0x0123456789abcdefull), "0123456789abcdef");
    EXPECT_EQ(chunk_key_hex(0), "0000000000000000");
    EXPECT_EQ(chunk_key_hex(~0ull), "ffffffffffffffff");
}

}  // namespace
