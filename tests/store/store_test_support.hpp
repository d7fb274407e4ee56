// Shared by the store tests: random chunks, scratch folders, and (with hiredis) redis-server
// processes and a 3-master Redis Cluster that the tests start themselves on free loopback ports.
//
// Servers: redis-server from $SEQKV_REDIS_SERVER or PATH, started with fork/exec (no shell, no
// system service) as `redis-server --port P --bind 127.0.0.1 --save "" --appendonly no
// --daemonize no ...` in a scratch folder, killed (SIGKILL, and PR_SET_PDEATHSIG should the test
// process die first) when the test ends. Ports are drawn at random from [12000, 22000) and
// checked by binding (the cluster bus port P + 10000 too): both stay below Linux's ephemeral range
// (32768+), and a server that still fails to bind is retried on other ports, so test processes
// that ctest runs side by side never collide.
#pragma once

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "seqkv/core/bytes.hpp"

#if defined(SEQKV_TEST_HAVE_HIREDIS)
#include "seqkv/store/redis_store.hpp"
#endif

namespace seqkv::store_test {

/// n pseudo-random bytes from seed.
inline byte_vector random_bytes(std::size_t n, std::uint64_t seed) {
    byte_vector b(n);
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + n);
    for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t w = rng();
        for (std::size_t k = 0; k < 8 && i + k < n; ++k) b[i + k] = static_cast<std::uint8_t>(w >> (8 * k));
    }
    return b;
}

/// A fresh folder under the system temp dir, removed with everything in it on destruction.
class temp_dir {
public:
    temp_dir() {
        std::string templ = (std::filesystem::temp_directory_path() / "seqkv-store-test-XXXXXX").string();
        if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
        path_ = templ;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

inline constexpr const char* no_redis_server_message =
    "redis-server is not installed (scripts/install-deps.sh installs it): Redis backend untested";

/// The redis-server binary ($SEQKV_REDIS_SERVER, else redis-server on PATH), or nullopt.
inline std::optional<std::string> find_redis_server() {
    if (const char* env = std::getenv("SEQKV_REDIS_SERVER"); env && *env) return std::string(env);
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        const std::size_t end = std::min(dirs.find(':', start), dirs.size());
        const std::filesystem::path candidate = std::filesystem::path(dirs.substr(start, end - start)) / "redis-server";
        if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
        start = end + 1;
    }
    return std::nullopt;
}

/// Whether 127.0.0.1:port can be bound right now.
inline bool port_is_free(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

/// A port in [12000, 22000) that is free, with port + 10000 free too (a cluster's bus port).
inline int pick_port() {
    static std::mt19937 rng(static_cast<unsigned>(::getpid()) ^
                            static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
    std::uniform_int_distribution<int> dist(12000, 21999);
    for (int i = 0; i < 1000; ++i) {
        const int p = dist(rng);
        if (port_is_free(p) && port_is_free(p + 10000)) return p;
    }
    throw std::runtime_error("no free loopback port in [12000, 22000)");
}

#if defined(SEQKV_TEST_HAVE_HIREDIS)

using reply_ptr = detail::redis_reply_ptr;
using context_ptr = detail::redis_context_ptr;

/// Options for the fault tests: short timeouts, enough tries to outlast a restart.
inline redis_store_options fast_redis_options() {
    redis_store_options o;
    o.connect_timeout = std::chrono::milliseconds(500);
    o.command_timeout = std::chrono::milliseconds(500);
    o.max_attempts = 8;
    o.retry_delay = std::chrono::milliseconds(100);
    return o;
}

/// A connection to 127.0.0.1:port (nullptr if it cannot connect within timeout_ms).
inline context_ptr connect_to(int port, int timeout_ms = 1000) {
    const timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    context_ptr c(redisConnectWithTimeout("127.0.0.1", port, tv));
    if (!c || c->err) return nullptr;
    redisSetTimeout(c.get(), timeval{10, 0});
    return c;
}

/// Runs one command on c (binary-safe arguments); throws std::runtime_error if the connection fails.
inline reply_ptr command(redisContext* c, const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> len;
    for (const auto& a : args) argv.push_back(a.data()), len.push_back(a.size());
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), len.data()));
    if (!r) throw std::runtime_error(std::string("redis command failed: ") + c->errstr);
    return reply_ptr(r);
}

/// Runs one command on a fresh connection to 127.0.0.1:port.
inline reply_ptr command(int port, const std::vector<std::string>& args) {
    context_ptr c = connect_to(port);
    if (!c) throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
    return command(c.get(), args);
}

inline std::string reply_text(const reply_ptr& r) { return r->str ? std::string(r->str, r->len) : std::string(); }

/// One redis-server process on 127.0.0.1, in its own scratch folder.
class redis_server {
public:
    struct config {
        bool cluster = false;
        bool appendonly = false;  // appendfsync always: the data survives kill -9 and restart
    };

    redis_server(std::string binary, std::filesystem::path dir, config cfg)
        : binary_(std::move(binary)), dir_(std::move(dir)), cfg_(cfg) {
        std::filesystem::create_directories(dir_);
        for (int attempt = 0; attempt < 8; ++attempt) {
            port_ = pick_port();
            if (launch()) return;
        }
        throw std::runtime_error("redis-server did not start (log: " + (dir_ / "redis.log").string() + ")");
    }
    ~redis_server() { kill(); }
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    int port() const { return port_; }
    bool running() const { return pid_ > 0; }

    /// SIGKILL, as a crash would; waits for the process to go.
    void kill() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }
    /// Starts it again on the same port(s) and folder (after kill()).
    void restart() {
        kill();
        for (int attempt = 0; attempt < 50; ++attempt) {  // the old socket may linger a moment
            if (launch()) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        throw std::runtime_error("redis-server did not restart on port " + std::to_string(port_));
    }
    /// Freezes / thaws the process (it keeps its sockets: clients hang until their timeouts).
    void pause() { ::kill(pid_, SIGSTOP); }
    void resume() { ::kill(pid_, SIGCONT); }

private:
    bool launch() {
        std::vector<std::string> args = {binary_, "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                         "--save", "", "--daemonize", "no", "--dir", dir_.string(),
                                         "--logfile", (dir_ / "redis.log").string(), "--protected-mode", "no"};
        if (cfg_.appendonly) {
            for (const char* a : {"--appendonly", "yes", "--appendfsync", "always"}) args.push_back(a);
        } else {
            for (const char* a : {"--appendonly", "no"}) args.push_back(a);
        }
        if (cfg_.cluster) {
            for (const char* a : {"--cluster-enabled", "yes", "--cluster-node-timeout", "15000"}) args.push_back(a);
            args.push_back("--cluster-config-file");
            args.push_back((dir_ / "nodes.conf").string());
        }
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        const pid_t parent = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("fork failed");
        if (pid == 0) {  // child: async-signal-safe calls only until exec
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(1);
            const int null = ::open("/dev/null", O_RDWR);
            if (null >= 0) ::dup2(null, 0), ::dup2(null, 1), ::dup2(null, 2);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        pid_ = pid;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: most likely the port was taken
                pid_ = -1;
                return false;
            }
            if (context_ptr c = connect_to(port_, 200)) {
                auto* r = static_cast<redisReply*>(redisCommand(c.get(), "PING"));
                const bool pong = r && r->type == REDIS_REPLY_STATUS && std::string(r->str, r->len) == "PONG";
                if (r) freeReplyObject(r);
                if (pong) return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        kill();
        return false;
    }

    std::string binary_;
    std::filesystem::path dir_;
    config cfg_;
    int port_ = 0;
    pid_t pid_ = -1;
};

/// Three cluster-enabled masters on loopback, slots split evenly, no replicas: the equivalent of
/// `redis-cli --cluster create ... --cluster-replicas 0`, done with CLUSTER ADDSLOTS / MEET, then
/// waits until every node reports cluster_state:ok and knows the other two (~2 s: a new master
/// waits 2 s before it turns writable).
class redis_cluster {
public:
    redis_cluster(const std::string& binary, const std::filesystem::path& dir) {
        for (int i = 0; i < 3; ++i)
            nodes_.push_back(std::make_unique<redis_server>(binary, dir / ("node" + std::to_string(i)),
                                                            redis_server::config{.cluster = true}));
        const int per = 16384 / 3;
        for (int i = 0; i < 3; ++i) {
            std::vector<std::string> args = {"CLUSTER", "ADDSLOTS"};
            const int lo = i * per, hi = i == 2 ? 16383 : (i + 1) * per - 1;
            for (int s = lo; s <= hi; ++s) args.push_back(std::to_string(s));
            expect_ok(command(nodes_[i]->port(), args), "CLUSTER ADDSLOTS");
        }
        for (int i = 1; i < 3; ++i)
            expect_ok(command(nodes_[0]->port(), {"CLUSTER", "MEET", "127.0.0.1", std::to_string(nodes_[i]->port())}),
                      "CLUSTER MEET");
        wait_until_ok();
    }
    redis_server& node(std::size_t i) { return *nodes_.at(i); }
    std::size_t size() const { return nodes_.size(); }

    /// Index of the node that serves slot (from node 0's CLUSTER SLOTS).
    std::size_t owner_of(int slot) {
        reply_ptr r = command(nodes_[0]->port(), {"CLUSTER", "SLOTS"});
        for (std::size_t i = 0; i < r->elements; ++i) {
            const redisReply* range = r->element[i];
            if (slot >= range->element[0]->integer && slot <= range->element[1]->integer) {
                const int port = static_cast<int>(range->element[2]->element[1]->integer);
                for (std::size_t n = 0; n < nodes_.size(); ++n)
                    if (nodes_[n]->port() == port) return n;
            }
        }
        throw std::runtime_error("slot " + std::to_string(slot) + " has no owner");
    }
    /// The cluster node id of node i.
    std::string node_id(std::size_t i) { return reply_text(command(nodes_.at(i)->port(), {"CLUSTER", "MYID"})); }

private:
    static void expect_ok(const reply_ptr& r, const char* what) {
        if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string(what) + ": " + reply_text(r));
    }
    void wait_until_ok() {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (std::chrono::steady_clock::now() < deadline) {
            bool all = true;
            for (auto& n : nodes_) {
                const std::string info = reply_text(command(n->port(), {"CLUSTER", "INFO"}));
                all = all && info.find("cluster_state:ok") != std::string::npos &&
                      info.find("cluster_known_nodes:3") != std::string::npos;
            }
            if (all) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        throw std::runtime_error("the Redis cluster did not reach cluster_state:ok within 30 s");
    }
    std::vector<std::unique_ptr<redis_server>> nodes_;
};

#endif  // SEQKV_TEST_HAVE_HIREDIS

}  // namespace seqkv::store_test
