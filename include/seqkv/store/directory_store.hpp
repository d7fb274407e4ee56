// directory_chunk_store: a ChunkStore (store/chunk_store.hpp) with one file per chunk (POSIX).
//
// Layout: <dir>/<first 2 hex digits of the key>/<16 hex digits>.chunk, each file the 32-byte
// stored-chunk header (store/chunk_store.hpp, detail::chunk_frame_header) followed by the chunk's
// bytes (docs/STORE.md "Directory"). get checks the header, that the file is exactly 32 + length
// bytes (before allocating), and that the payload hashes to the key; any mismatch throws
// (format_error, checksum_error, limit_error) and never returns the bytes.
//
// A put writes a temporary file in the chunk's own folder (".<hex>.<pid>-<token>.<n>.tmp"), fsyncs it,
// renames it over <hex>.chunk and fsyncs the folder: a crash leaves either the old state or the
// whole chunk, plus perhaps a temporary file that no reader ever opens
// (remove_stale_temp_files cleans those). Several processes may share one directory.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <system_error>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/store/chunk_store.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

struct directory_store_options {
    /// fsync the file and its folder on every put (off only for scratch stores and tests).
    bool durable = true;
    /// get refuses a file whose header claims more payload bytes than this (limit_error).
    std::uint64_t max_chunk_bytes = std::uint64_t(4) << 30;
};

class directory_chunk_store {
public:
    static constexpr std::size_t header_bytes = detail::chunk_frame_header_bytes;

    /// Opens (creating if needed) the store rooted at dir.
    explicit directory_chunk_store(std::filesystem::path dir, directory_store_options options = {})
        : dir_(std::move(dir)), options_(options) {
        std::error_code ec;
        std::filesystem::create_directories(dir_, ec);
        if (ec || !std::filesystem::is_directory(dir_))
            throw io_error("directory_chunk_store: cannot create '" + dir_.string() + "': " + ec.message());
    }

    const std::filesystem::path& root() const { return dir_; }

    /// The file that holds key's chunk (it may not exist).
    std::filesystem::path chunk_path(std::uint64_t key) const {
        const std::string hex = chunk_key_hex(key);
        return dir_ / hex.substr(0, 2) / (hex + ".chunk");
    }

    void put(std::uint64_t key, std::span<const std::uint8_t> bytes) {
        detail::check_chunk_key(key, bytes, "directory_chunk_store");
        const std::filesystem::path path = chunk_path(key);
        const std::filesystem::path folder = path.parent_path();
        if (::mkdir(folder.c_str(), 0755) == 0) {
            if (options_.durable) sync_directory(dir_);
        } else if (errno != EEXIST) {
            throw_errno("cannot create folder", folder);
        }
        // Unique among threads (counter), processes (pid) and hosts sharing the folder (a random
        // per-process token); O_EXCL would refuse a clash rather than share a file.
        static std::atomic<std::uint64_t> counter{0};
        static const std::string token = chunk_key_hex((std::uint64_t(std::random_device{}()) << 32) ^
                                                       std::random_device{}()).substr(4);
        const std::filesystem::path tmp =
            folder / ("." + chunk_key_hex(key) + "." + std::to_string(::getpid()) + "-" + token + "." +
                      std::to_string(counter.fetch_add(1)) + ".tmp");
        const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) throw_errno("cannot create", tmp);
        try {
            write_all(fd, detail::chunk_frame_header(key, bytes.size()), tmp);
            write_all(fd, bytes, tmp);
            if (options_.durable && ::fsync(fd) != 0) throw_errno("cannot fsync", tmp);
        } catch (...) {
            ::close(fd);
            ::unlink(tmp.c_str());
            throw;
        }
        if (::close(fd) != 0) {
            const int saved = errno;
            ::unlink(tmp.c_str());
            errno = saved;
            throw_errno("cannot close", tmp);
        }
        if (::rename(tmp.c_str(), path.c_str()) != 0) {
            const int saved = errno;
            ::unlink(tmp.c_str());
            errno = saved;
            throw_errno("cannot rename into place", path);
        }
        if (options_.durable) sync_directory(folder);
    }

    std::optional<byte_vector> get(std::uint64_t key) const {
        const std::filesystem::path path = chunk_path(key);
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
            throw_errno("cannot open", path);
        }
        struct fd_closer {
            int fd;
            ~fd_closer() { ::close(fd); }
        } closer{fd};
        struct stat st {};
        if (::fstat(fd, &st) != 0) throw_errno("cannot stat", path);
        const std::string where = "directory_chunk_store '" + path.string() + "'";
        if (!S_ISREG(st.st_mode)) throw format_error(where + ": not a regular file");
        const std::uint64_t file_size = static_cast<std::uint64_t>(st.st_size);
        std::uint8_t header[header_bytes];
        const std::size_t have = static_cast<std::size_t>(std::min<std::uint64_t>(file_size, header_bytes));
        read_all(fd, {header, have}, path);
        const std::uint64_t length = detail::check_chunk_frame_header({header, have}, key, where);
        if (length > options_.max_chunk_bytes)
            throw limit_error(where + ": claims a " + std::to_string(length) + "-byte chunk, limit " +
                              std::to_string(options_.max_chunk_bytes));
        if (file_size != header_bytes + length)
            throw format_error(where + ": header says " + std::to_string(length) + " payload bytes, the file has " +
                               std::to_string(file_size - header_bytes));
        byte_vector bytes(static_cast<std::size_t>(length));
        read_all(fd, bytes, path);
        detail::verify_chunk(key, bytes, where);
        return bytes;
    }

    bool contains(std::uint64_t key) const {
        struct stat st {};
        return ::stat(chunk_path(key).c_str(), &st) == 0 && S_ISREG(st.st_mode);
    }

    void remove(std::uint64_t key) {
        const std::filesystem::path path = chunk_path(key);
        if (::unlink(path.c_str()) != 0 && errno != ENOENT && errno != ENOTDIR) throw_errno("cannot remove", path);
    }

    /// Deletes temporary files that a crashed put left behind, if older than min_age (a younger
    /// one may belong to a put in progress in another process). Returns how many it deleted.
    std::size_t remove_stale_temp_files(std::chrono::seconds min_age = std::chrono::hours(1)) {
        std::size_t removed = 0;
        std::error_code ec;
        const auto now = std::filesystem::file_time_type::clock::now();
        // Error codes throughout: folders may vanish under a concurrent cleaner; skip them.
        using iterator = std::filesystem::directory_iterator;
        for (iterator folder(dir_, ec), end; !ec && folder != end; folder.increment(ec)) {
            std::error_code fec;
            if (!folder->is_directory(fec)) continue;
            for (iterator file(folder->path(), fec); !fec && file != end; file.increment(fec)) {
                const std::string name = file->path().filename().string();
                std::error_code e;
                if (name.size() < 5 || name[0] != '.' || !name.ends_with(".tmp") || !file->is_regular_file(e)) continue;
                const auto mtime = file->last_write_time(e);
                if (!e && now - mtime >= min_age && std::filesystem::remove(file->path(), e)) ++removed;
            }
        }
        return removed;
    }

private:
    [[noreturn]] static void throw_errno(const char* what, const std::filesystem::path& path) {
        throw io_error(std::string("directory_chunk_store: ") + what + " '" + path.string() +
                       "': " + std::strerror(errno));
    }
    static void write_all(int fd, std::span<const std::uint8_t> bytes, const std::filesystem::path& path) {
        while (!bytes.empty()) {
            const ssize_t n = ::write(fd, bytes.data(), bytes.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw_errno("cannot write", path);
            bytes = bytes.subspan(static_cast<std::size_t>(n));
        }
    }
    static void read_all(int fd, std::span<std::uint8_t> bytes, const std::filesystem::path& path) {
        while (!bytes.empty()) {
            const ssize_t n = ::read(fd, bytes.data(), bytes.size());
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("cannot read", path);
            if (n == 0) throw format_error("directory_chunk_store '" + path.string() + "': file shrank while read");
            bytes = bytes.subspan(static_cast<std::size_t>(n));
        }
    }
    static void sync_directory(const std::filesystem::path& dir) {
        const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw_errno("cannot open folder", dir);
        const int rc = ::fsync(fd);
        const int saved = errno;
        ::close(fd);
        errno = saved;
        if (rc != 0) throw_errno("cannot fsync folder", dir);
    }

    std::filesystem::path dir_;
    directory_store_options options_;
};
static_assert(ChunkStore<directory_chunk_store>);

}  // namespace seqkv

SEQKV_FP_STRICT_END
