// redis_chunk_store: a ChunkStore (store/chunk_store.hpp) in Redis or Redis Cluster, through
// hiredis (Debian libhiredis-dev; link hiredis, in this project's build the seqkv::redis target).
//
// Keys: "seqkv:<namespace>:c:{<16 hex digits of the chunk key>}". The hash tag is the chunk key
// itself, so chunks spread evenly over the cluster's 16384 slots while anything ever kept beside
// a chunk under the same tag would land in the chunk's slot. Values: the 32-byte stored-chunk
// header (detail::chunk_frame_header) followed by the chunk's bytes; never empty, so a 0-byte
// GETRANGE answer means "absent".
//
// put is one SET (atomic in Redis: a client that dies mid-command leaves nothing); get is
// GETRANGE key 0 <header + max_chunk_bytes>, so an absurd value is refused without reading it
// whole, and the bytes are returned only if they hash to the key. contains is EXISTS, remove DEL.
//
// Cluster: hiredis 0.14 has no cluster client, so this one does the minimum: CRC16 (XMODEM) key
// slots with hash tags, the slot map from CLUSTER SLOTS, MOVED (re-read the map, go to the named
// node) and ASK (ASKING + the command on the named node, map unchanged), at most max_redirects
// hops per operation. Standalone or cluster is detected at construction (CLUSTER SLOTS).
//
// Failures: a lost connection, a timeout, LOADING / TRYAGAIN / CLUSTERDOWN / MASTERDOWN is retried
// on a fresh connection (the map re-read in a cluster) up to max_attempts tries per operation with
// a doubling delay; then store_error says what failed last. Every operation is idempotent, so a
// retried put or remove is safe. Thread-safe: each operation takes a pooled connection to its
// node (hiredis contexts are never shared between threads).
#pragma once

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/store/chunk_store.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

/// A Redis server's address.
struct redis_endpoint {
    std::string host = "127.0.0.1";
    int port = 6379;
};

struct redis_store_options {
    std::chrono::milliseconds connect_timeout{2000};
    /// Per command (socket send/receive timeout); a large chunk must cross the network within it.
    std::chrono::milliseconds command_timeout{10000};
    /// Tries per operation when the connection fails or the cluster is busy (>= 1).
    int max_attempts = 5;
    /// Wait before the third try, doubled before each further one (the second try is immediate).
    std::chrono::milliseconds retry_delay{100};
    /// MOVED / ASK hops per operation before store_error.
    int max_redirects = 16;
    /// put refuses larger chunks (limit_error); get never reads more than this plus the header.
    std::uint64_t max_chunk_bytes = std::uint64_t(256) << 20;
    enum class topology_mode { detect, standalone, cluster };
    topology_mode topology = topology_mode::detect;
    /// More cluster nodes to ask for the slot map when the known ones do not answer.
    std::vector<redis_endpoint> extra_seeds;
    /// Idle connections kept per node for reuse.
    std::size_t max_idle_connections = 8;
};

/// Counters since construction (for tests and monitoring).
struct redis_store_stats {
    std::uint64_t connects = 0;        ///< connections opened
    std::uint64_t retries = 0;         ///< operation tries after a failure
    std::uint64_t moved = 0;           ///< MOVED redirects followed
    std::uint64_t asked = 0;           ///< ASK redirects followed
    std::uint64_t slot_map_reads = 0;  ///< CLUSTER SLOTS answers taken
};

namespace detail {
struct redis_reply_deleter {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
/// An owned hiredis reply.
using redis_reply_ptr = std::unique_ptr<redisReply, redis_reply_deleter>;
struct redis_context_deleter {
    void operator()(redisContext* c) const { redisFree(c); }
};
/// An owned hiredis connection.
using redis_context_ptr = std::unique_ptr<redisContext, redis_context_deleter>;
}  // namespace detail

/// Redis Cluster key slot: CRC16-XMODEM of the key (or of its first non-empty {hash tag}) mod 16384.
inline std::uint16_t redis_key_slot(std::string_view key) {
    const auto open = key.find('{');
    if (open != std::string_view::npos) {
        const auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
    }
    std::uint16_t crc = 0;
    for (const char ch : key) {
        crc ^= static_cast<std::uint16_t>(static_cast<std::uint8_t>(ch) << 8);
        for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021) : crc << 1;
    }
    return crc & 16383;
}

class redis_chunk_store {
public:
    static constexpr std::size_t slot_count = 16384;

    /// Connects to host:port (a standalone server or any node of a cluster); key_namespace is
    /// 1-64 characters of [A-Za-z0-9_.-]. Throws store_error if no server answers within
    /// options.max_attempts tries.
    redis_chunk_store(std::string host, int port, std::string key_namespace = "default",
                      redis_store_options options = {})
        : namespace_(std::move(key_namespace)), options_(std::move(options)) {
        check_namespace(namespace_);
        require_usage(options_.max_attempts >= 1, "redis_chunk_store: max_attempts must be >= 1");
        seeds_.push_back({std::move(host), port});
        for (const auto& e : options_.extra_seeds) seeds_.push_back(e);
        owner_.fill(-1);
        detect_topology();
    }
    redis_chunk_store(const redis_chunk_store&) = delete;
    redis_chunk_store& operator=(const redis_chunk_store&) = delete;
    ~redis_chunk_store() {
        for (auto& [node, idle] : idle_)
            for (redisContext* c : idle) redisFree(c);
    }

    void put(std::uint64_t key, std::span<const std::uint8_t> bytes) {
        detail::check_chunk_key(key, bytes, "redis_chunk_store");
        if (bytes.size() > options_.max_chunk_bytes)
            throw limit_error("redis_chunk_store: a " + std::to_string(bytes.size()) + "-byte chunk, limit " +
                              std::to_string(options_.max_chunk_bytes));
        byte_vector value = detail::chunk_frame_header(key, bytes.size());
        value.insert(value.end(), bytes.begin(), bytes.end());
        const std::string name = key_name(key);
        const std::string_view args[] = {"SET", name, as_chars(value)};
        execute(name, args);
    }

    std::optional<byte_vector> get(std::uint64_t key) {
        const std::string name = key_name(key);
        const std::string last = std::to_string(detail::chunk_frame_header_bytes + options_.max_chunk_bytes);
        const std::string_view args[] = {"GETRANGE", name, "0", last};
        const reply_ptr reply = execute(name, args);
        const std::string where = "redis_chunk_store '" + name + "'";
        if (reply->type != REDIS_REPLY_STRING) throw store_error(where + ": GETRANGE answered " + describe(reply.get()));
        if (reply->len == 0) return std::nullopt;
        const std::span<const std::uint8_t> value(reinterpret_cast<const std::uint8_t*>(reply->str), reply->len);
        if (value.size() > detail::chunk_frame_header_bytes + options_.max_chunk_bytes)
            throw limit_error(where + ": the stored value is larger than the " +
                              std::to_string(options_.max_chunk_bytes) + "-byte chunk limit");
        const std::uint64_t length = detail::check_chunk_frame_header(value, key, where);
        if (length != value.size() - detail::chunk_frame_header_bytes)
            throw format_error(where + ": the header says " + std::to_string(length) + " payload bytes, the value has " +
                               std::to_string(value.size() - detail::chunk_frame_header_bytes));
        const auto payload = value.subspan(detail::chunk_frame_header_bytes);
        detail::verify_chunk(key, payload, where);
        return byte_vector(payload.begin(), payload.end());
    }

    bool contains(std::uint64_t key) {
        const std::string name = key_name(key);
        const std::string_view args[] = {"EXISTS", name};
        const reply_ptr reply = execute(name, args);
        if (reply->type != REDIS_REPLY_INTEGER)
            throw store_error("redis_chunk_store: EXISTS answered " + describe(reply.get()));
        return reply->integer != 0;
    }

    void remove(std::uint64_t key) {
        const std::string name = key_name(key);
        const std::string_view args[] = {"DEL", name};
        execute(name, args);
    }

    /// The Redis key a chunk is stored under.
    std::string key_name(std::uint64_t key) const { return "seqkv:" + namespace_ + ":c:{" + chunk_key_hex(key) + "}"; }
    const std::string& key_namespace() const { return namespace_; }
    bool is_cluster() const { return cluster_; }
    redis_store_stats stats() const {
        return {connects_.load(), retries_.load(), moved_.load(), asked_.load(), slot_map_reads_.load()};
    }

private:
    using reply_ptr = detail::redis_reply_ptr;
    using context_ptr = detail::redis_context_ptr;

    static std::string_view as_chars(std::span<const std::uint8_t> b) {
        return {reinterpret_cast<const char*>(b.data()), b.size()};
    }
    static std::string node_name(const redis_endpoint& e) { return e.host + ":" + std::to_string(e.port); }
    static timeval to_timeval(std::chrono::milliseconds ms) {
        timeval tv{};
        tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
        tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
        return tv;
    }
    static std::string describe(const redisReply* r) {
        switch (r->type) {
            case REDIS_REPLY_ERROR: return "error '" + std::string(r->str, r->len) + "'";
            case REDIS_REPLY_STATUS: return "status '" + std::string(r->str, r->len) + "'";
            case REDIS_REPLY_STRING: return "a " + std::to_string(r->len) + "-byte string";
            case REDIS_REPLY_INTEGER: return "integer " + std::to_string(r->integer);
            case REDIS_REPLY_NIL: return "nil";
            case REDIS_REPLY_ARRAY: return "an array of " + std::to_string(r->elements);
            default: return "reply type " + std::to_string(r->type);
        }
    }
    static void check_namespace(const std::string& ns) {
        const bool ok = !ns.empty() && ns.size() <= 64 && std::all_of(ns.begin(), ns.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                   c == '.' || c == '-';
        });
        if (!ok) throw usage_error("redis_chunk_store: namespace '" + ns + "' is not 1-64 characters of [A-Za-z0-9_.-]");
    }

    // ---- connections ----

    /// An idle connection to node, or a new one; nullptr (and why in error) if it cannot connect.
    context_ptr checkout(const redis_endpoint& node, std::string& error) {
        {
            std::lock_guard lock(mutex_);
            auto it = idle_.find(node_name(node));
            if (it != idle_.end() && !it->second.empty()) {
                context_ptr c(it->second.back());
                it->second.pop_back();
                return c;
            }
        }
        ++connects_;
        context_ptr c(redisConnectWithTimeout(node.host.c_str(), node.port, to_timeval(options_.connect_timeout)));
        if (!c || c->err) {
            error = "cannot connect to " + node_name(node) + ": " + (c ? std::string(c->errstr) : "out of memory");
            return nullptr;
        }
        if (redisSetTimeout(c.get(), to_timeval(options_.command_timeout)) != REDIS_OK) {
            error = "cannot set the timeout on " + node_name(node) + ": " + c->errstr;
            return nullptr;
        }
        redisEnableKeepAlive(c.get());
        return c;
    }
    void checkin(const redis_endpoint& node, context_ptr c) {
        if (!c || c->err) return;
        std::lock_guard lock(mutex_);
        auto& idle = idle_[node_name(node)];
        if (idle.size() < options_.max_idle_connections) idle.push_back(c.release());
    }
    /// Closes the idle connections to node (after one of them failed: the others are likely stale).
    void drop_idle(const redis_endpoint& node) {
        std::vector<redisContext*> stale;
        {
            std::lock_guard lock(mutex_);
            auto it = idle_.find(node_name(node));
            if (it != idle_.end()) stale.swap(it->second);
        }
        for (redisContext* c : stale) redisFree(c);
    }

    /// Blocks SIGPIPE in this thread while it lives and swallows one raised meanwhile: hiredis
    /// writes with write(), and a server that closed the connection must not kill the process.
    class sigpipe_guard {
    public:
        sigpipe_guard() {
            sigemptyset(&pipe_);
            sigaddset(&pipe_, SIGPIPE);
            sigset_t pending;
            sigpending(&pending);
            already_pending_ = sigismember(&pending, SIGPIPE) == 1;
            pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
        }
        ~sigpipe_guard() {
            sigset_t pending;
            if (!already_pending_ && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
                const timespec none{};
                while (sigtimedwait(&pipe_, nullptr, &none) < 0 && errno == EINTR) {
                }
            }
            pthread_sigmask(SIG_SETMASK, &old_, nullptr);
        }
        sigpipe_guard(const sigpipe_guard&) = delete;
        sigpipe_guard& operator=(const sigpipe_guard&) = delete;

    private:
        sigset_t pipe_{}, old_{};
        bool already_pending_ = false;
    };

    /// Sends one command (after ASKING if asking) on c; nullptr on a connection failure.
    static reply_ptr command(redisContext* c, std::span<const std::string_view> args, bool asking) {
        const sigpipe_guard no_sigpipe;
        std::vector<const char*> argv;
        std::vector<std::size_t> argvlen;
        for (const auto a : args) argv.push_back(a.data()), argvlen.push_back(a.size());
        if (asking && redisAppendCommand(c, "ASKING") != REDIS_OK) return nullptr;
        if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), argvlen.data()) != REDIS_OK)
            return nullptr;
        void* raw = nullptr;
        if (asking) {
            if (redisGetReply(c, &raw) != REDIS_OK) return nullptr;
            freeReplyObject(raw);  // +OK (an error here shows again as the command's own answer)
            raw = nullptr;
        }
        if (redisGetReply(c, &raw) != REDIS_OK) return nullptr;
        return reply_ptr(static_cast<redisReply*>(raw));
    }

    // ---- topology ----

    void detect_topology() {
        using mode = redis_store_options::topology_mode;
        if (options_.topology == mode::standalone) return;
        std::string last_error;
        for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
            if (attempt > 0) backoff(attempt);
            for (const auto& seed : seeds_) {
                std::string error;
                context_ptr c = checkout(seed, error);
                if (!c) {
                    last_error = error;
                    continue;
                }
                const std::string_view args[] = {"CLUSTER", "SLOTS"};
                reply_ptr reply = command(c.get(), args, false);
                if (!reply) {
                    last_error = "CLUSTER SLOTS on " + node_name(seed) + ": " + c->errstr;
                    continue;
                }
                if (reply->type == REDIS_REPLY_ERROR) {
                    const std::string_view msg(reply->str, reply->len);
                    if (msg.starts_with("LOADING") || msg.starts_with("BUSY")) {
                        last_error = "CLUSTER SLOTS on " + node_name(seed) + ": " + std::string(msg);
                        continue;
                    }
                    if (options_.topology == mode::cluster)
                        throw store_error("redis_chunk_store: " + node_name(seed) + " is not a cluster node: " +
                                          std::string(msg));
                    checkin(seed, std::move(c));
                    return;  // cluster support disabled: a standalone server
                }
                cluster_ = true;
                install_slot_map(reply.get(), seed);
                checkin(seed, std::move(c));
                return;
            }
        }
        throw store_error("redis_chunk_store: no server answered after " + std::to_string(options_.max_attempts) +
                          " tries: " + last_error);
    }

    /// Replaces the slot map with a CLUSTER SLOTS answer from node `from`; false if malformed.
    bool install_slot_map(const redisReply* r, const redis_endpoint& from) {
        if (r->type != REDIS_REPLY_ARRAY) return false;
        std::array<int, slot_count> owner;
        owner.fill(-1);
        std::vector<redis_endpoint> nodes;
        for (std::size_t i = 0; i < r->elements; ++i) {
            const redisReply* range = r->element[i];
            if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) return false;
            const redisReply* lo = range->element[0];
            const redisReply* hi = range->element[1];
            const redisReply* master = range->element[2];
            if (lo->type != REDIS_REPLY_INTEGER || hi->type != REDIS_REPLY_INTEGER || lo->integer < 0 ||
                hi->integer >= static_cast<long long>(slot_count) || lo->integer > hi->integer)
                return false;
            if (master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
                master->element[0]->type != REDIS_REPLY_STRING || master->element[1]->type != REDIS_REPLY_INTEGER)
                return false;
            redis_endpoint node{std::string(master->element[0]->str, master->element[0]->len),
                                static_cast<int>(master->element[1]->integer)};
            if (node.host.empty()) node.host = from.host;  // "" = the node that answered
            if (node.host == "?") continue;                 // endpoint unknown: leave the slots unmapped
            auto it = std::find_if(nodes.begin(), nodes.end(),
                                   [&](const redis_endpoint& n) { return n.host == node.host && n.port == node.port; });
            const int index = static_cast<int>(it - nodes.begin());
            if (it == nodes.end()) nodes.push_back(node);
            for (long long s = lo->integer; s <= hi->integer; ++s) owner[static_cast<std::size_t>(s)] = index;
        }
        std::lock_guard lock(mutex_);
        nodes_ = std::move(nodes);
        owner_ = owner;
        ++slot_map_reads_;
        return true;
    }

    /// Re-reads the slot map from any known node or seed; false if none answered.
    bool refresh_slot_map() {
        std::vector<redis_endpoint> candidates;
        {
            std::lock_guard lock(mutex_);
            candidates = nodes_;
        }
        candidates.insert(candidates.end(), seeds_.begin(), seeds_.end());
        for (const auto& node : candidates) {
            std::string error;
            context_ptr c = checkout(node, error);
            if (!c) continue;
            const std::string_view args[] = {"CLUSTER", "SLOTS"};
            reply_ptr reply = command(c.get(), args, false);
            if (!reply) continue;
            const bool ok = install_slot_map(reply.get(), node);
            checkin(node, std::move(c));
            if (ok) return true;
        }
        return false;
    }

    /// The node serving slot (in a cluster), else the first seed.
    redis_endpoint node_for(std::uint16_t slot) {
        std::lock_guard lock(mutex_);
        if (cluster_ && owner_[slot] >= 0) return nodes_[static_cast<std::size_t>(owner_[slot])];
        return seeds_.front();
    }
    /// Records a MOVED answer: slot is served by node.
    void set_owner(std::uint16_t slot, const redis_endpoint& node) {
        std::lock_guard lock(mutex_);
        auto it = std::find_if(nodes_.begin(), nodes_.end(),
                               [&](const redis_endpoint& n) { return n.host == node.host && n.port == node.port; });
        if (it == nodes_.end()) it = nodes_.insert(nodes_.end(), node);
        owner_[slot] = static_cast<int>(it - nodes_.begin());
    }
    /// Parses "<host>:<port>" at the end of a MOVED / ASK error ("MOVED 3999 127.0.0.1:6381").
    static std::optional<redis_endpoint> redirect_target(std::string_view msg, const redis_endpoint& from) {
        const auto space = msg.rfind(' ');
        const auto colon = msg.rfind(':');
        if (space == std::string_view::npos || colon == std::string_view::npos || colon < space) return std::nullopt;
        redis_endpoint e{std::string(msg.substr(space + 1, colon - space - 1)), 0};
        for (const char ch : msg.substr(colon + 1)) {
            if (ch < '0' || ch > '9' || e.port > 65535) return std::nullopt;
            e.port = e.port * 10 + (ch - '0');
        }
        if (e.port <= 0 || e.port > 65535) return std::nullopt;
        if (e.host.empty()) e.host = from.host;
        return e;
    }

    void backoff(int attempt) const {
        if (attempt < 2) return;
        auto delay = options_.retry_delay * (1 << std::min(attempt - 2, 10));
        std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(delay, std::chrono::milliseconds(2000)));
    }

    // ---- one operation ----

    /// Runs args (whose key is key) where the key lives, following redirects and retrying
    /// failures; returns the first answer that is not an error, throws store_error otherwise.
    reply_ptr execute(const std::string& key, std::span<const std::string_view> args) {
        const std::uint16_t slot = redis_key_slot(key);
        const std::string what = std::string(args[0]) + " " + key;
        redis_endpoint target = node_for(slot);
        bool asking = false;
        int attempt = 0, redirects = 0;
        std::string last_error;
        while (true) {
            std::string error;
            context_ptr c = checkout(target, error);
            if (c) {
                reply_ptr reply = command(c.get(), args, asking);
                if (!reply) {
                    error = node_name(target) + ": " + c->errstr;
                    drop_idle(target);
                } else if (reply->type != REDIS_REPLY_ERROR) {
                    checkin(target, std::move(c));
                    return reply;
                } else {
                    const std::string msg(reply->str, reply->len);
                    checkin(target, std::move(c));
                    const bool moved = msg.starts_with("MOVED "), ask = msg.starts_with("ASK ");
                    if (moved || ask) {
                        const auto to = redirect_target(msg, target);
                        if (!to) throw store_error("redis_chunk_store: " + what + ": bad redirect '" + msg + "'");
                        if (++redirects > options_.max_redirects)
                            throw store_error("redis_chunk_store: " + what + ": more than " +
                                              std::to_string(options_.max_redirects) + " redirects, last '" + msg + "'");
                        if (moved) {
                            ++moved_;
                            cluster_ = true;
                            refresh_slot_map();
                            set_owner(slot, *to);
                        } else {
                            ++asked_;
                        }
                        target = *to;
                        asking = ask;
                        continue;
                    }
                    const bool transient = msg.starts_with("TRYAGAIN") || msg.starts_with("CLUSTERDOWN") ||
                                           msg.starts_with("LOADING") || msg.starts_with("MASTERDOWN") ||
                                           msg.starts_with("BUSY");
                    if (!transient) throw store_error("redis_chunk_store: " + what + " on " + node_name(target) + ": " + msg);
                    error = node_name(target) + ": " + msg;
                }
            }
            last_error = error;
            if (++attempt >= options_.max_attempts)
                throw store_error("redis_chunk_store: " + what + " failed after " + std::to_string(attempt) +
                                  " tries: " + last_error);
            ++retries_;
            backoff(attempt);
            if (cluster_) refresh_slot_map();
            target = node_for(slot);
            asking = false;
        }
    }

    std::string namespace_;
    redis_store_options options_;
    std::vector<redis_endpoint> seeds_;
    std::atomic<bool> cluster_{false};

    mutable std::mutex mutex_;  // guards the slot map and the idle connections
    std::vector<redis_endpoint> nodes_;
    std::array<int, slot_count> owner_{};
    std::map<std::string, std::vector<redisContext*>> idle_;

    std::atomic<std::uint64_t> connects_{0}, retries_{0}, moved_{0}, asked_{0}, slot_map_reads_{0};
};
static_assert(ChunkStore<redis_chunk_store>);

}  // namespace seqkv

SEQKV_FP_STRICT_END
