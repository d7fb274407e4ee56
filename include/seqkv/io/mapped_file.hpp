// Files read in place: a read-only memory map of a whole file (POSIX mmap), so a multi-GB KV dump
// or .skv is parsed and decoded without a copy in memory (only the pages touched are read). On
// platforms without mmap it falls back to reading the file (same interface, no memory bound).
// A mapped file must not shrink while it is mapped (another process truncating it makes the
// reader's next access to the lost pages fault: SIGBUS); read a file that may still be written
// with read_file instead.
// Output written as it is produced: file_sink appends to a temporary file renamed into place by
// commit() (nothing half-written is ever visible under the final name) and can write at offsets.
#pragma once

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/file_io.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define SEQKV_HAVE_MMAP 1
#endif

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::io {

/// A whole file, read-only, mapped into memory (or read, without mmap). Move-only.
class mapped_file {
public:
    mapped_file() = default;
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    mapped_file(mapped_file&& o) noexcept { swap(o); }
    mapped_file& operator=(mapped_file&& o) noexcept {
        mapped_file tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    ~mapped_file() {
#ifdef SEQKV_HAVE_MMAP
        if (map_) ::munmap(map_, size_);
#endif
    }

    /// Maps `path`; io_error when it cannot be opened or mapped.
    static mapped_file open(const std::filesystem::path& path) {
        mapped_file f;
#ifdef SEQKV_HAVE_MMAP
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw io_error("cannot open '" + path.string() + "' for reading");
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            throw io_error("'" + path.string() + "' is not a regular file");
        }
        f.size_ = static_cast<std::size_t>(st.st_size);
        if (f.size_ > 0) {
            void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                ::close(fd);
                throw io_error("cannot map '" + path.string() + "' into memory");
            }
            ::madvise(p, f.size_, MADV_SEQUENTIAL);
            f.map_ = p;
        }
        ::close(fd);  // the mapping stays valid
#else
        f.copy_ = read_file(path);
        f.size_ = f.copy_.size();
#endif
        return f;
    }

    std::span<const std::uint8_t> bytes() const {
#ifdef SEQKV_HAVE_MMAP
        return {static_cast<const std::uint8_t*>(map_), size_};
#else
        return copy_;
#endif
    }
    std::size_t size() const { return size_; }

    /// Lets the kernel drop the pages wholly inside `part` (a range of bytes()) from this process's
    /// memory; they are read again from the file if touched later. For a reader that is done with
    /// a region (a decoded chunk) and wants its resident memory bounded. No effect without mmap.
    void release(std::span<const std::uint8_t> part) const {
#ifdef SEQKV_HAVE_MMAP
        if (!map_ || part.empty()) return;
        const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
        const auto lo = (reinterpret_cast<std::uintptr_t>(part.data()) + page - 1) / page * page;
        const auto hi = (reinterpret_cast<std::uintptr_t>(part.data()) + part.size()) / page * page;
        const auto base = reinterpret_cast<std::uintptr_t>(map_);
        if (lo < hi && lo >= base && hi <= base + size_) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
#else
        (void)part;
#endif
    }

private:
    void swap(mapped_file& o) noexcept {
        std::swap(map_, o.map_);
        std::swap(size_, o.size_);
        std::swap(copy_, o.copy_);
    }
    void* map_ = nullptr;
    std::size_t size_ = 0;
    byte_vector copy_;  // without mmap
};

/// Output written as it is produced, to `path + ".seqkv-tmp"`, renamed to `path` by commit();
/// destroyed without commit() (an error on the way), the temporary file is removed.
class file_sink {
public:
    explicit file_sink(std::filesystem::path path) : path_(std::move(path)) {
#ifdef SEQKV_HAVE_MMAP
        // A unique temporary name (O_EXCL): two writers of one path never share a file. Created
        // with mode 0666 less the umask, like the file fopen would make.
        static std::atomic<std::uint64_t> counter{0};
        int fd = -1;
        for (int attempt = 0; attempt < 64 && fd < 0; ++attempt) {
            const std::uint64_t tag = (std::uint64_t(::getpid()) << 32) ^ (counter.fetch_add(1) * 0x9e3779b97f4a7c15ull) ^ std::random_device{}();
            char hex[17];
            std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(tag));
            tmp_ = path_.string() + "." + hex + ".seqkv-tmp";
            fd = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (fd < 0 && errno != EEXIST) break;
        }
        if (fd < 0) throw io_error("cannot create a temporary file beside '" + path_.string() + "'");
        file_ = ::fdopen(fd, "w+b");
        if (!file_) {
            ::close(fd);
            std::error_code ec;
            std::filesystem::remove(tmp_, ec);
        }
#else
        tmp_ = path_.string() + ".seqkv-tmp";
        file_ = std::fopen(tmp_.string().c_str(), "w+b");
#endif
        if (!file_) throw io_error("cannot open '" + tmp_.string() + "' for writing");
    }
    file_sink(const file_sink&) = delete;
    file_sink& operator=(const file_sink&) = delete;
    ~file_sink() {
        if (file_) {
            std::fclose(file_);
            std::error_code ec;
            std::filesystem::remove(tmp_, ec);
        }
    }

    /// Appends bytes at the end.
    void append(std::span<const std::uint8_t> b) {
        if (std::fseek(file_, 0, SEEK_END) != 0) fail("seek");
        put(b);
    }
    /// Writes bytes at `offset` (the file grows as needed).
    void write_at(std::uint64_t offset, std::span<const std::uint8_t> b) {
        if (!seek(offset)) fail("seek");
        put(b);
    }
    /// Cuts the file to `size` bytes.
    void truncate(std::uint64_t size) {
        if (std::fflush(file_) != 0) fail("flush");
        std::error_code ec;
        std::filesystem::resize_file(tmp_, size, ec);
        if (ec) fail("truncate");
    }
    /// Bytes written so far (the file's size).
    std::uint64_t size() {
        if (std::fseek(file_, 0, SEEK_END) != 0) fail("seek");
#ifdef SEQKV_HAVE_MMAP
        return static_cast<std::uint64_t>(::ftello(file_));
#else
        return static_cast<std::uint64_t>(std::ftell(file_));
#endif
    }
    /// Pushes buffered bytes to the file (before it is read back, e.g. mapped).
    void flush() {
        if (std::fflush(file_) != 0) fail("flush");
    }
    /// Flushes, closes and renames the file into place.
    void commit() {
        const bool ok = std::fflush(file_) == 0;
        const bool closed = std::fclose(file_) == 0;
        file_ = nullptr;
        std::error_code ec;
        if (!ok || !closed) {
            std::filesystem::remove(tmp_, ec);
            throw io_error("write to '" + tmp_.string() + "' failed");
        }
        std::filesystem::rename(tmp_, path_, ec);
        if (ec) {
            std::error_code ignored;
            std::filesystem::remove(tmp_, ignored);
            throw io_error("cannot rename '" + tmp_.string() + "' to '" + path_.string() + "': " + ec.message());
        }
    }
    /// The temporary file (complete after every byte is written; renamed by commit()).
    const std::filesystem::path& temporary_path() const { return tmp_; }

private:
    bool seek(std::uint64_t offset) {
#ifdef SEQKV_HAVE_MMAP
        return offset <= std::uint64_t(INT64_MAX) && ::fseeko(file_, static_cast<off_t>(offset), SEEK_SET) == 0;
#else
        return offset <= std::uint64_t(LONG_MAX) && std::fseek(file_, static_cast<long>(offset), SEEK_SET) == 0;
#endif
    }
    void put(std::span<const std::uint8_t> b) {
        if (!b.empty() && std::fwrite(b.data(), 1, b.size(), file_) != b.size()) fail("write");
    }
    [[noreturn]] void fail(const char* what) { throw io_error(std::string(what) + " on '" + tmp_.string() + "' failed"); }

    std::filesystem::path path_, tmp_;
    std::FILE* file_ = nullptr;
};

}  // namespace seqkv::io

SEQKV_FP_STRICT_END
