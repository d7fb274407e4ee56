// Layer 1 report: the PLT prefix store on an agent-like workload built from real SmolLM2 KV.
//
//   seqkv_bench_prefix_store [--sessions N] [--chunk C] [--json] [--redis HOST:PORT | --redis-cluster HOST:PORT]
//   seqkv_bench_prefix_store --near-shift A.safetensors B.safetensors [--chunk C]
//   seqkv_bench_prefix_store --sessions-dir DIR [--chunk C] [--near-gap G] [--lossy-preset P] [--half-life H] [--hit-rates]
//
// --sessions-dir: the real-session workload (bench/make_agent_sessions.py; scripts
// bench/prefix_store_real.sh runs both): bytes alone, with exact-prefix dedup and with near-prefix
// reuse, every session read back (see real_sessions()).
//
// --near-shift: near-prefix reuse across a token-count change on two real dumps of one model
// (tools/near_prefix_measure.py writes them: /tmp/near_prefix/np-User__Alice.safetensors and
// np-User__Bob_Oyelaran_Whitfield.safetensors, SmolLM2-135M). A is stored, then B; printed: the
// bytes of B's new chunks coded alone, against A shifted without rotation (identity key_rotation),
// and against A with its keys RoPE-rotated by the shift (predict::rope_table from the dumps'
// rope_theta / rope_style), and that B reads back bit-exactly each way.
//
// Workload (deterministic, seeded): three agents (system prompts of 96–128 tokens, popularity
// 70 / 20 / 10 %), six tool schemas of 24 tokens (reordered in 20 % of sessions), a date line that
// changes every 50 sessions, one of eight user names, then a task of 24–96 tokens; 15 % of sessions
// are a second turn of an earlier one (its tokens plus 16–48 more). Token ids and KV rows come from
// the bundled SmolLM2-135M dumps (data/kv/smollm2-*.safetensors): each token of a session takes the
// id and the KV row of the source position it was drawn from. The rows are real SmolLM2 KV, but
// spliced, not recomputed for the new sequence (their compressibility is real KV's, their
// cross-position consistency is not).
//
// Reported: bytes with and without prefix dedup (each session its own lossless .skv vs the store);
// hit rate (tokens served from the store / tokens requested, every session asks for its whole
// prompt before it is stored) of the PLT policy, LRU over trie leaves, and vLLM-style chained
// hashing of 16-token blocks with LRU eviction, at equal byte budgets; insert and lookup
// throughput; index bytes per stored token.
//
// --redis HOST:PORT (a standalone server, or any node of a cluster: detected) or --redis-cluster
// HOST:PORT (a cluster node; anything else is an error) runs the unlimited-budget store once more
// with redis_chunk_store instead of memory_chunk_store (put, read back and checked bit-exactly,
// bytes) and prints its put / read MB/s next to the memory store's. Its chunks go under the key
// namespace bench-prefix-<pid> and are removed at the end. Needs hiredis at build time (the
// seqkv::redis target; scripts/bench-prefix-store.sh starts a throwaway server and runs both).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <list>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "seqkv/api.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/predict/rope.hpp"
#include "seqkv/preset.hpp"
#include "seqkv/store/prefix_store.hpp"

#if defined(SEQKV_BENCH_HAVE_HIREDIS)
#include <unistd.h>

#include "seqkv/store/redis_store.hpp"
#endif

using namespace seqkv;
namespace fs = std::filesystem;

namespace {

struct source {
    io::safetensors_file file;
    kv_cache_view cache;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
    explicit source(const fs::path& p) : file(io::safetensors_file::load(p)), cache(io::kv_view(file)) {
        ids = *io::token_ids_of(file, cache.layout.tokens);
        nll = io::nll_of(file, cache.layout.tokens).value_or(std::vector<float>(cache.layout.tokens, 3.0f));
    }
};

// A token of a session: where its id and KV row come from.
struct origin {
    int src;
    std::uint32_t pos;
    std::int32_t id_offset;  // perturbations (dates, names) shift the id so it differs
};

struct session {
    std::vector<origin> from;
    std::vector<std::int32_t> ids;
    std::vector<float> nll;
};

struct workload {
    std::vector<source> sources;
    std::vector<session> sessions;
};

workload make_workload(int count, std::uint32_t seed) {
    workload w;
    w.sources.emplace_back(fs::path(SEQKV_DATA_DIR) / "kv" / "smollm2-gpl3.safetensors");
    w.sources.emplace_back(fs::path(SEQKV_DATA_DIR) / "kv" / "smollm2-py311-textwrap.safetensors");
    std::mt19937 rng(seed);
    auto span_of = [](int src, std::uint32_t begin, std::uint32_t n, std::int32_t off = 0) {
        std::vector<origin> v;
        for (std::uint32_t i = 0; i < n; ++i) v.push_back({src, begin + i, off});
        return v;
    };
    const std::vector<std::vector<origin>> agents{span_of(0, 0, 128), span_of(0, 64, 112), span_of(1, 0, 96)};
    std::vector<std::vector<origin>> tools;
    for (std::uint32_t k = 0; k < 6; ++k) tools.push_back(span_of(1, 100 + 24 * k, 24));
    std::vector<session> out;
    for (int i = 0; i < count; ++i) {
        session s;
        if (!out.empty() && rng() % 100 < 15) {  // a second turn of an earlier session
            const session& prev = out[rng() % out.size()];
            s.from = prev.from;
            const std::uint32_t n = 16 + std::uint32_t(rng() % 33);
            const auto more = span_of(int(rng() % 2), 128 + std::uint32_t(rng() % (128 - n + 1)), n, 0);
            s.from.insert(s.from.end(), more.begin(), more.end());
        } else {
            const unsigned r = rng() % 100;
            const auto& agent = agents[r < 70 ? 0 : r < 90 ? 1 : 2];
            s.from = agent;
            std::vector<int> order{0, 1, 2, 3, 4, 5};
            if (rng() % 100 < 20) std::shuffle(order.begin(), order.end(), rng);
            for (int k : order) s.from.insert(s.from.end(), tools[std::size_t(k)].begin(), tools[std::size_t(k)].end());
            auto date = span_of(0, 200, 4, 0);
            date[2].id_offset = 100000 + i / 50;  // the day
            s.from.insert(s.from.end(), date.begin(), date.end());
            const auto user = span_of(1, 60, 3, 200000 + std::int32_t(rng() % 8));
            s.from.insert(s.from.end(), user.begin(), user.end());
            const std::uint32_t n = 24 + std::uint32_t(rng() % 73);  // a task: n tokens from the second half of a dump
            const auto task = span_of(int(rng() % 2), 128 + std::uint32_t(rng() % (128 - n + 1)), n, 0);
            s.from.insert(s.from.end(), task.begin(), task.end());
        }
        for (const auto& o : s.from) {
            const auto& src = w.sources[std::size_t(o.src)];
            if (o.pos >= src.ids.size()) throw std::logic_error("bench_prefix_store: workload reads past a dump");
            s.ids.push_back(src.ids[o.pos] + o.id_offset);
            s.nll.push_back(src.nll[o.pos]);
        }
        out.push_back(std::move(s));
    }
    w.sessions = std::move(out);
    return w;
}

// The session's KV, assembled row by row from the sources.
chunk_buffer kv_of(const workload& w, const session& s) {
    kv_layout L = w.sources[0].cache.layout;
    auto kv = chunk_buffer::for_layout(L, s.from.size());
    const std::size_t row = L.head_dim * dtype_size(L.type);
    for (std::uint32_t l = 0; l < L.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            auto b = kv.block(l, kind);
            for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                for (std::uint64_t t = 0; t < kv.layout.tokens; ++t) {
                    const auto& src = w.sources[std::size_t(s.from[t].src)].cache;
                    const auto& tensor = kind == kv_kind::value ? src.values[l] : src.keys[l];
                    std::memcpy(b.data() + (h * kv.layout.tokens + t) * row, tensor.element(h, s.from[t].pos, 0), row);
                }
        }
    return kv;
}

// vLLM-style prefix caching: a block of 16 tokens is named by the hash of its tokens chained with
// its parent block's hash; blocks are evicted least recently used first.
class block_hash_cache {
public:
    block_hash_cache(std::uint64_t budget_bytes, double bytes_per_token) : budget_(budget_bytes), block_bytes_(16 * bytes_per_token) {}
    /// Tokens served for a request, then caches the request's full blocks.
    std::uint64_t request(std::span<const std::int32_t> ids) {
        std::uint64_t parent = 0x5eed, served = 0;
        bool hit = true;
        std::vector<std::uint64_t> hashes;
        for (std::size_t b = 0; b + 16 <= ids.size(); b += 16) {
            parent = content_hash64({reinterpret_cast<const std::uint8_t*>(ids.data() + b), 64}, parent);
            hashes.push_back(parent);
            if (hit && lru_pos_.contains(parent)) served += 16;
            else hit = false;
        }
        for (auto h : hashes) {
            if (auto it = lru_pos_.find(h); it != lru_pos_.end()) {
                lru_.erase(it->second);
            } else {
                used_ += block_bytes_;
            }
            lru_.push_front(h);
            lru_pos_[h] = lru_.begin();
        }
        while (used_ > double(budget_) && !lru_.empty()) {
            lru_pos_.erase(lru_.back());
            lru_.pop_back();
            used_ -= block_bytes_;
        }
        return served;
    }

private:
    std::uint64_t budget_;
    double block_bytes_, used_ = 0;
    std::list<std::uint64_t> lru_;
    std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> lru_pos_;
};

// The lossless codec, memoized by chunk content (the same chunk is encoded once per process even
// when the sweep stores it in several stores).
any_chunk_codec memoized(any_chunk_codec inner, std::shared_ptr<std::map<std::uint64_t, byte_vector>> memo) {
    auto encode = inner.encode;
    inner.encode = [encode, memo](const chunk_input& in) {
        std::uint64_t h = in.begin;
        for (std::uint32_t l = 0; l < in.cache->layout.layers; ++l)
            for (const auto* t : {&in.cache->keys[l], &in.cache->values[l]})
                for (std::uint32_t head = 0; head < t->heads; ++head)
                    h = content_hash64({t->element(head, in.begin, 0), (in.end - in.begin) * t->head_dim * dtype_size(t->type)}, h);
        h = content_hash64({reinterpret_cast<const std::uint8_t*>(in.token_ids.data()), in.token_ids.size_bytes()}, h);
        if (auto it = memo->find(h); it != memo->end()) return it->second;
        return (*memo)[h] = encode(in);
    };
    return inner;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The unlimited-budget store over one ChunkStore: every session put, then read back whole.
struct unlimited_run {
    std::uint64_t stored_bytes = 0, shared_tokens = 0, read_tokens = 0;
    double put_seconds = 0, read_seconds = 0;  // read: the read() calls only, not the checks
    bool exact = true;                         // every read returned exactly the session's KV
};

template <class Store>
unlimited_run put_and_read_back(prefix_store<Store>& store, const workload& w, const std::vector<chunk_buffer>& kvs) {
    unlimited_run r;
    const auto t_put = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < kvs.size(); ++i) r.shared_tokens += store.put(view_of(kvs[i]), w.sessions[i].ids, w.sessions[i].nll).shared_tokens;
    r.put_seconds = seconds_since(t_put);
    r.stored_bytes = store.stored_bytes();
    for (std::size_t i = 0; i < kvs.size(); ++i) {
        const auto t = std::chrono::steady_clock::now();
        const prefix_hit hit = store.read(w.sessions[i].ids);
        r.read_seconds += seconds_since(t);
        r.read_tokens += hit.tokens;
        r.exact = r.exact && hit.tokens == kvs[i].layout.tokens && hit.kv.bytes == kvs[i].bytes;
    }
    return r;
}

// --redis / --redis-cluster HOST:PORT.
struct redis_target {
    std::string host;
    int port = 0;
    bool cluster = false;
};
std::optional<redis_target> parse_redis_target(const std::string& arg, bool cluster) {
    const auto colon = arg.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == arg.size()) return std::nullopt;
    char* end = nullptr;
    const long port = std::strtol(arg.c_str() + colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) return std::nullopt;
    return redis_target{arg.substr(0, colon), int(port), cluster};
}

// The prefix store's key_rotation for a dump's model: RoPE by `shift` positions with the dump's
// rope_theta / rope_style (the codec's deterministic cos/sin).
std::function<void(std::span<float>, std::int64_t)> key_rotation_of(const std::map<std::string, std::string>& meta, std::uint32_t head_dim) {
    const double theta = meta.contains("rope_theta") ? std::stod(meta.at("rope_theta")) : 10000.0;
    const bool interleaved = meta.contains("rope_style") && meta.at("rope_style") == "interleaved";
    auto table = std::make_shared<predict::rope_table>(predict::rope_table::inverse_frequencies(theta, head_dim), interleaved);
    return [table](std::span<float> row, std::int64_t shift) {
        std::vector<float> c, s, in(row.begin(), row.end());
        table->angles(std::uint64_t(shift < 0 ? -shift : shift), c, s);
        table->rotate_row(in, row, c, s, shift < 0 ? -1 : +1);
    };
}

// --near-shift A B: see the header.
int near_shift(const fs::path& a_path, const fs::path& b_path, std::uint32_t chunk) {
    const source a(a_path), b(b_path);
    const kv_layout layout = a.cache.layout;
    if (!(b.cache.layout.layers == layout.layers && b.cache.layout.kv_heads == layout.kv_heads && b.cache.layout.head_dim == layout.head_dim &&
          b.cache.layout.type == layout.type))
        throw std::runtime_error("the two dumps have different geometry");
    const auto rotation = key_rotation_of(a.file.metadata(), layout.head_dim);
    const std::uint32_t gap = 16;
    struct variant {
        const char* name;
        std::function<void(std::span<float>, std::int64_t)> rotation;
        std::uint32_t gap;
    };
    const variant variants[] = {{"alone (no near-prefix reuse)", {}, 0},
                                {"against A, shifted, keys not rotated", [](std::span<float>, std::int64_t) {}, gap},
                                {"against A, shifted, keys RoPE-rotated", rotation, gap}};
    std::printf("near-prefix reuse across a shift: A %s (%llu tokens), B %s (%llu tokens), %u-token chunks, lossless\n",
                a_path.filename().c_str(), (unsigned long long)a.ids.size(), b_path.filename().c_str(), (unsigned long long)b.ids.size(), chunk);
    const double raw_per_token = double(layout.elements_per_token() * dtype_size(layout.type));
    std::uint64_t alone = 0;
    bool exact = true;
    for (const auto& v : variants) {
        memory_chunk_store chunks;
        prefix_store_options o{.chunk_tokens = chunk, .near_prefix_gap = v.gap};
        o.key_rotation = v.rotation;
        prefix_store store(chunks, make_codec(lossless_config()), layout, o);
        store.put(a.cache, a.ids, a.nll);
        const put_stats st = store.put(b.cache, b.ids, b.nll);
        if (!v.gap) alone = st.bytes_written;
        const auto hit = store.read(b.ids);
        // B's rows from its first new chunk on must be B's own; the shared prefix's rows are A's
        // (the store keeps a prefix's KV once; these two dumps' forwards differ in a few bf16 words
        // there: a float forward of another length rounds differently).
        const std::uint64_t own = st.shared_tokens / chunk * chunk;
        bool same = hit.tokens == b.ids.size();
        const std::size_t row = layout.head_dim * dtype_size(layout.type);
        for (std::uint32_t l = 0; l < layout.layers && same; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto& tb = kind == kv_kind::key ? b.cache.keys[l] : b.cache.values[l];
                const auto& ta = kind == kv_kind::key ? a.cache.keys[l] : a.cache.values[l];
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h)
                    for (std::uint64_t p = 0; p < b.ids.size(); ++p)
                        same = same && std::memcmp(hit.kv.block(l, kind).data() + (h * b.ids.size() + p) * row,
                                                   p < own ? ta.element(h, p, 0) : tb.element(h, p, 0), row) == 0;
            }
        exact = exact && same;
        const double new_tokens = double(b.ids.size() - own);  // the rows B's new chunks hold
        std::printf("  %-40s %9llu B  %5.2f bits/element  %.2fx   (%llu of %llu new chunks referenced; read back %s)\n", v.name,
                    (unsigned long long)st.bytes_written, 8.0 * double(st.bytes_written) / (new_tokens * raw_per_token / double(dtype_size(layout.type))),
                    double(alone) / double(st.bytes_written), (unsigned long long)st.referenced_chunks, (unsigned long long)st.new_chunks,
                    same ? "bit-exact" : "MISMATCH");
        if (!v.gap) std::printf("  (B shares %llu tokens with A; B's rows from token %llu on are checked against B, the rows below against A)\n",
                                (unsigned long long)st.shared_tokens, (unsigned long long)own);
    }
    return exact ? 0 : 1;
}

// --sessions-dir DIR: real sessions (bench/make_agent_sessions.py: each session's KV computed by
// SmolLM2 for its own tokens), in file-name order. Stored three ways with the same codec and
// chunks: each session alone (a fresh store each), one prefix store (exact-prefix dedup), and one
// prefix store with near-prefix reuse (a session that left a stored neighbour for <= gap tokens and
// continues with the same tokens codes its chunks as the residual from the neighbour's, keys
// RoPE-rotated when the two differ in length) — lossless (integer residuals, read back bit-exactly)
// and, with --lossy-preset P, lossy (value residuals against the neighbour as decoded) at the same
// preset, with the error each way. Every session is read back right after its put: lossless, its
// own chunks must give back its rows bit for bit (shared-prefix rows are the first storer's:
// counted, not failed); lossy, the error of every row against the session's own forward is pooled.
struct real_run {
    std::uint64_t bytes = 0, shared = 0, new_chunks = 0, referenced = 0, own_rows = 0, prefix_rows = 0, prefix_rows_differing = 0;
    double put_seconds = 0, signal = 0, noise = 0, max_error = 0;
    bool exact = true;
    double snr_db() const { return noise > 0 ? 10 * std::log10(signal / noise) : std::numeric_limits<double>::infinity(); }
};

real_run store_sessions(const std::vector<std::unique_ptr<source>>& sessions, const any_chunk_codec& codec, std::uint32_t chunk,
                        std::uint32_t gap, bool lossy, bool fresh_each) {
    const kv_layout layout = sessions[0]->cache.layout;
    const std::size_t row = layout.head_dim * dtype_size(layout.type);
    real_run r;
    prefix_store_options o{.chunk_tokens = chunk, .near_prefix_gap = gap};
    if (gap) o.key_rotation = key_rotation_of(sessions[0]->file.metadata(), layout.head_dim);
    if (lossy) o.near_prefix_residual = prefix_store_options::residual::value;
    auto chunks = std::make_unique<memory_chunk_store>();
    auto store = std::make_unique<prefix_store<memory_chunk_store>>(*chunks, codec, layout, o);
    for (const auto& s : sessions) {
        if (fresh_each) {
            r.bytes += store->stored_bytes();
            store.reset();
            chunks = std::make_unique<memory_chunk_store>();
            store = std::make_unique<prefix_store<memory_chunk_store>>(*chunks, codec, layout, o);
        }
        const auto t = std::chrono::steady_clock::now();
        const put_stats st = store->put(s->cache, s->ids, s->nll);
        r.put_seconds += seconds_since(t);
        r.shared += st.shared_tokens, r.new_chunks += st.new_chunks, r.referenced += st.referenced_chunks;
        const prefix_hit hit = store->read(s->ids);
        const std::uint64_t own = st.shared_tokens / chunk * chunk, T = s->ids.size();
        r.exact = r.exact && hit.tokens == T;
        if (hit.tokens != T) continue;
        const kv_cache_view got = view_of(hit.kv);
        for (std::uint32_t l = 0; l < layout.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto& mine = s->cache.tensor(l, kind);
                for (std::uint32_t h = 0; h < layout.kv_heads; ++h)
                    for (std::uint64_t p = 0; p < T; ++p) {
                        if (lossy) {
                            for (std::uint32_t c = 0; c < layout.head_dim; ++c) {
                                const double x = mine.at(h, p, c), e = got.tensor(l, kind).at(h, p, c) - x;
                                r.signal += x * x, r.noise += e * e, r.max_error = std::max(r.max_error, std::abs(e));
                            }
                            continue;
                        }
                        const bool same = std::memcmp(got.tensor(l, kind).element(h, p, 0), mine.element(h, p, 0), row) == 0;
                        if (p >= own) r.exact = r.exact && same, ++r.own_rows;
                        else ++r.prefix_rows, r.prefix_rows_differing += !same;
                    }
            }
    }
    r.bytes += store->stored_bytes();
    return r;
}

int real_sessions(const fs::path& dir, std::uint32_t chunk, std::uint32_t gap, const std::string& lossy_preset, double half_life,
                  bool hit_rates_only) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a long run: each line as it is measured
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    if (paths.empty()) throw std::runtime_error("no .safetensors sessions in " + dir.string() + " (bench/make_agent_sessions.py writes them)");
    std::vector<std::unique_ptr<source>> sessions;
    for (const auto& p : paths) sessions.push_back(std::make_unique<source>(p));
    const kv_layout layout = sessions[0]->cache.layout;
    for (const auto& s : sessions)
        if (!(s->cache.layout.layers == layout.layers && s->cache.layout.kv_heads == layout.kv_heads &&
              s->cache.layout.head_dim == layout.head_dim && s->cache.layout.type == layout.type))
            throw std::runtime_error("the sessions have different geometry");
    const double raw_per_token = double(layout.elements_per_token() * dtype_size(layout.type));
    std::uint64_t tokens = 0;
    for (const auto& s : sessions) tokens += s->ids.size();
    const double raw = raw_per_token * double(tokens);
    std::printf("prefix store on %zu real sessions from %s (%llu tokens, %.0f B of bf16 KV, each session's KV computed by the model; %u-token chunks)\n",
                sessions.size(), dir.c_str(), (unsigned long long)tokens, raw, chunk);
    bool ok = true;
    struct variant {
        std::string name;
        any_chunk_codec codec;
        bool lossy;
    };
    std::vector<variant> variants{{"lossless", memoized(make_codec(lossless_config()), std::make_shared<std::map<std::uint64_t, byte_vector>>()), false}};
    if (!lossy_preset.empty() && !hit_rates_only)
        variants.push_back({lossy_preset, make_codec(preset(lossy_preset, model_params_from(sessions[0]->file.metadata(), layout)).codec), true});
    for (const auto& v : variants) {
        const real_run dedup = store_sessions(sessions, v.codec, chunk, 0, v.lossy, false);
        // --hit-rates: only the exact-prefix store (its bytes set the budgets) and the hit rates.
        const real_run alone = hit_rates_only ? dedup : store_sessions(sessions, v.codec, chunk, 0, v.lossy, true);
        const real_run near = hit_rates_only ? dedup : store_sessions(sessions, v.codec, chunk, gap, v.lossy, false);
        std::printf("  %s\n", v.name.c_str());
        auto line = [&](const char* what, const real_run& r, const std::string& extra) {
            std::printf("    %-34s %12llu B  %6.2fx", what, (unsigned long long)r.bytes, raw / double(r.bytes));
            if (v.lossy) std::printf("   SNR %5.1f dB, max |error| %.4f", r.snr_db(), r.max_error);
            std::printf("%s\n", extra.c_str());
        };
        char buf[256];
        if (!hit_rates_only) line("each session alone", alone, "");
        std::snprintf(buf, sizeof buf, "   %.1f %% of tokens already stored; put %.1f MB/s raw", 100.0 * double(dedup.shared) / double(tokens),
                      raw / 1e6 / dedup.put_seconds);
        line("prefix store (exact prefixes)", dedup, buf);
        std::snprintf(buf, sizeof buf, "   %llu of %llu new chunks against a neighbour: %.2fx fewer bytes than exact dedup",
                      (unsigned long long)near.referenced, (unsigned long long)near.new_chunks, double(dedup.bytes) / double(near.bytes));
        const std::string near_name = "+ near-prefix reuse (gap <= " + std::to_string(gap) + ")";
        if (!hit_rates_only) line(near_name.c_str(), near, buf);
        if (!v.lossy) {
            std::printf("    read back after each put: own rows %s (%llu rows); shared-prefix rows served from the first storer: %.3f %% "
                        "differ in some bf16 word from the session's own forward\n",
                        alone.exact && dedup.exact && near.exact ? "bit-exact" : "MISMATCH", (unsigned long long)near.own_rows,
                        dedup.prefix_rows ? 100.0 * double(dedup.prefix_rows_differing) / double(dedup.prefix_rows) : 0.0);
            ok = ok && alone.exact && dedup.exact && near.exact;
            // Hit rates at byte budgets (fractions of the deduplicated bytes), as on the spliced workload.
            const double stored_token_bytes = double(dedup.bytes) / double(std::max<std::uint64_t>(1, tokens - dedup.shared));
            std::printf("    hit rate (tokens served / requested) at a byte budget:  budget    PLT     LRU   block16-LRU\n");
            for (double fraction : {0.1, 0.25, 0.5, 1.0}) {
                const auto budget = std::uint64_t(double(dedup.bytes) * fraction);
                double rate[2] = {0, 0};
                for (auto policy : {eviction_policy::plt, eviction_policy::lru}) {
                    memory_chunk_store chunks;
                    prefix_store_options po{.chunk_tokens = chunk, .budget_bytes = budget, .policy = policy};
                    if (half_life > 0) po.reuse_half_life = half_life;
                    prefix_store store(chunks, v.codec, layout, po);
                    std::uint64_t served = 0;
                    for (const auto& s : sessions) {
                        served += store.match(s->ids);
                        store.put(s->cache, s->ids, s->nll);
                    }
                    rate[policy == eviction_policy::plt ? 0 : 1] = double(served) / double(tokens);
                }
                block_hash_cache blocks(budget, stored_token_bytes);
                std::uint64_t served = 0;
                for (const auto& s : sessions) served += blocks.request(s->ids);
                std::printf("    %56.0f %% %6.1f %% %6.1f %% %9.1f %%\n", 100 * fraction, 100 * rate[0], 100 * rate[1],
                            100 * double(served) / double(tokens));
            }
        } else {
            std::printf("    (errors: every row of every session against its own forward, pooled; value residuals against the neighbour as decoded)\n");
        }
    }
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    int count = 240;
    std::uint32_t chunk = 32;
    bool as_json = false;
    std::optional<redis_target> redis;
    std::optional<std::pair<fs::path, fs::path>> shift_pair;
    std::optional<fs::path> sessions_dir;
    std::uint32_t near_gap = 16;
    std::string lossy_preset;
    bool hit_rates_only = false;  // --hit-rates: with --sessions-dir, skip the alone / near-prefix / lossy rows
    double half_life = 0;  // --half-life: the PLT policy's reuse_half_life in the real-session hit rates (0: the store's default)
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--near-shift" && i + 2 < argc) {
            shift_pair = {argv[i + 1], argv[i + 2]};
            i += 2;
        } else if (a == "--sessions-dir" && i + 1 < argc) sessions_dir = argv[++i];
        else if (a == "--near-gap" && i + 1 < argc) near_gap = std::uint32_t(std::stoul(argv[++i]));
        else if (a == "--lossy-preset" && i + 1 < argc) lossy_preset = argv[++i];
        else if (a == "--half-life" && i + 1 < argc) half_life = std::stod(argv[++i]);
        else if (a == "--hit-rates") hit_rates_only = true;
        else if (a == "--sessions" && i + 1 < argc) count = std::stoi(argv[++i]);
        else if (a == "--chunk" && i + 1 < argc) chunk = std::uint32_t(std::stoul(argv[++i]));
        else if (a == "--json") as_json = true;
        else if ((a == "--redis" || a == "--redis-cluster") && i + 1 < argc && !redis) {
            redis = parse_redis_target(argv[++i], a == "--redis-cluster");
            if (!redis) {
                std::fprintf(stderr, "%s: %s wants HOST:PORT, not '%s'\n", argv[0], a.c_str(), argv[i]);
                return 2;
            }
        } else {
            std::fprintf(stderr, "usage: %s [--sessions N] [--chunk C] [--json] [--redis HOST:PORT | --redis-cluster HOST:PORT]\n"
                                 "       %s --near-shift A.safetensors B.safetensors [--chunk C]\n"
                                 "       %s --sessions-dir DIR [--chunk C] [--near-gap G] [--lossy-preset P] [--half-life H] [--hit-rates]\n",
                         argv[0], argv[0], argv[0]);
            return 2;
        }
    }
    if (sessions_dir) {
        try {
            return real_sessions(*sessions_dir, chunk, near_gap, lossy_preset, half_life, hit_rates_only);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: --sessions-dir: %s\n", argv[0], e.what());
            return 1;
        }
    }
    if (shift_pair) {
        try {
            return near_shift(shift_pair->first, shift_pair->second, chunk);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: --near-shift: %s\n", argv[0], e.what());
            return 1;
        }
    }
#if !defined(SEQKV_BENCH_HAVE_HIREDIS)
    if (redis) {
        std::fprintf(stderr, "%s: built without hiredis (apt-get install libhiredis-dev, then reconfigure): no --redis\n", argv[0]);
        return 2;
    }
#endif
    const workload w = make_workload(count, 2026);
    const kv_layout layout = w.sources[0].cache.layout;
    const double raw_per_token = double(layout.elements_per_token() * dtype_size(layout.type));
    std::vector<chunk_buffer> kvs;
    std::uint64_t total_tokens = 0;
    for (const auto& s : w.sessions) kvs.push_back(kv_of(w, s)), total_tokens += s.ids.size();

    // 1. Without dedup: every session's chunks stored for it alone (what one .skv per session
    //    holds as chunk payloads; the memo encodes each distinct chunk once).
    auto memo = std::make_shared<std::map<std::uint64_t, byte_vector>>();
    const any_chunk_codec codec = memoized(make_codec(lossless_config()), memo);
    std::uint64_t separate_bytes = 0;
    const auto t_sep = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < kvs.size(); ++i) {
        const auto view = view_of(kvs[i]);
        const auto& ids = w.sessions[i].ids;
        for (std::uint64_t b = 0; b < ids.size(); b += chunk) {
            const std::uint64_t e = std::min<std::uint64_t>(b + chunk, ids.size());
            separate_bytes += codec.encode(chunk_input{&view, b, e, std::span(ids).subspan(b, e - b), {}, nullptr, nullptr}).size();
        }
    }
    const double encode_seconds = seconds_since(t_sep);
    std::uint64_t distinct_bytes = 0;
    for (const auto& [h, p] : *memo) distinct_bytes += p.size();

    // 2. With dedup, no budget: bytes stored, insert and lookup speed, index size.
    memory_chunk_store unlimited_chunks;
    prefix_store unlimited(unlimited_chunks, codec, layout, {.chunk_tokens = chunk});
    const unlimited_run mem = put_and_read_back(unlimited, w, kvs);
    const double put_seconds = mem.put_seconds, read_seconds = mem.read_seconds;
    const std::uint64_t shared_tokens = mem.shared_tokens, read_tokens = mem.read_tokens;
    const std::uint64_t dedup_bytes = unlimited.stored_bytes();
    const double bytes_per_token_stored = double(dedup_bytes) / double(unlimited.stored_tokens());
    // Lookup: longest stored prefix of every session's prompt, repeated for a stable timing.
    std::uint64_t looked_up = 0;
    const auto t_look = std::chrono::steady_clock::now();
    int rounds = 0;
    do {
        for (const auto& s : w.sessions) looked_up += unlimited.index().longest_prefix(s.ids).depth;
        ++rounds;
    } while (seconds_since(t_look) < 0.5);
    const double lookup_tps = double(looked_up) / seconds_since(t_look);
    const double index_per_token_grown = double(unlimited.index_bytes()) / double(unlimited.stored_tokens());
    unlimited.compact();
    const double index_per_token = double(unlimited.index_bytes()) / double(unlimited.stored_tokens());

    // 2b. The same through Redis (--redis / --redis-cluster).
    std::optional<unlimited_run> over_redis;
#if defined(SEQKV_BENCH_HAVE_HIREDIS)
    if (redis) {
        try {
            redis_store_options o;
            if (redis->cluster) o.topology = redis_store_options::topology_mode::cluster;
            redis_chunk_store redis_chunks(redis->host, redis->port, "bench-prefix-" + std::to_string(::getpid()), o);
            prefix_store over(redis_chunks, codec, layout, {.chunk_tokens = chunk});
            try {
                over_redis = put_and_read_back(over, w, kvs);
            } catch (...) {
                over.clear();  // leave no chunks behind
                throw;
            }
            over.clear();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: Redis at %s:%d: %s\n", argv[0], redis->host.c_str(), redis->port, e.what());
            return 1;
        }
    }
#endif
    const double raw_total = raw_per_token * double(total_tokens);
    const auto put_MBps = [&](const unlimited_run& r) { return raw_total / 1e6 / r.put_seconds; };
    const auto read_MBps = [&](const unlimited_run& r) { return raw_per_token * double(r.read_tokens) / 1e6 / r.read_seconds; };
    const bool exact = mem.exact && (!over_redis || over_redis->exact);

    // 3. Hit rates under budgets (fractions of the dedup'd bytes).
    struct row {
        double fraction;
        double plt, lru, block;
    };
    std::vector<row> rows;
    for (double fraction : {0.1, 0.25, 0.5, 1.0}) {
        const auto budget = std::uint64_t(double(dedup_bytes) * fraction);
        row r{fraction, 0, 0, 0};
        for (auto policy : {eviction_policy::plt, eviction_policy::lru}) {
            memory_chunk_store chunks;
            prefix_store store(chunks, codec, layout, {.chunk_tokens = chunk, .budget_bytes = budget, .policy = policy});
            std::uint64_t served = 0;
            for (std::size_t i = 0; i < kvs.size(); ++i) {
                served += store.match(w.sessions[i].ids);
                store.put(view_of(kvs[i]), w.sessions[i].ids, w.sessions[i].nll);
            }
            (policy == eviction_policy::plt ? r.plt : r.lru) = double(served) / double(total_tokens);
        }
        block_hash_cache blocks(budget, bytes_per_token_stored);
        std::uint64_t served = 0;
        for (const auto& s : w.sessions) served += blocks.request(s.ids);
        r.block = double(served) / double(total_tokens);
        rows.push_back(r);
    }

    if (as_json) {
        std::printf("{\"sessions\": %d, \"tokens\": %llu, \"chunk_tokens\": %u, \"raw_bytes\": %.0f, \"separate_skv_bytes\": %llu, "
                    "\"dedup_bytes\": %llu,  \"index_bytes_per_token\": %.3f, \"lookup_tokens_per_s\": %.0f, \"put_MBps_raw\": %.1f, "
                    "\"read_MBps_raw\": %.1f, \"hit_rates\": [",
                    count, (unsigned long long)total_tokens, chunk, raw_per_token * double(total_tokens),
                    (unsigned long long)separate_bytes, (unsigned long long)dedup_bytes, index_per_token, lookup_tps,
                    raw_per_token * double(total_tokens) / 1e6 / put_seconds, raw_per_token * double(read_tokens) / 1e6 / read_seconds);
        for (std::size_t i = 0; i < rows.size(); ++i)
            std::printf("%s{\"budget_fraction\": %.2f, \"plt\": %.4f, \"lru\": %.4f, \"block16_lru\": %.4f}", i ? ", " : "",
                        rows[i].fraction, rows[i].plt, rows[i].lru, rows[i].block);
        std::printf("]");
        std::printf(", \"memory_store\": {\"put_MBps_raw\": %.1f, \"read_MBps_raw\": %.1f, \"stored_bytes\": %llu, \"exact\": %s}",
                    put_MBps(mem), read_MBps(mem), (unsigned long long)mem.stored_bytes, mem.exact ? "true" : "false");
        if (over_redis)
            std::printf(", \"redis_store\": {\"endpoint\": \"%s:%d\", \"cluster\": %s, \"put_MBps_raw\": %.1f, \"read_MBps_raw\": %.1f, "
                        "\"stored_bytes\": %llu, \"exact\": %s}",
                        redis->host.c_str(), redis->port, redis->cluster ? "true" : "false", put_MBps(*over_redis), read_MBps(*over_redis),
                        (unsigned long long)over_redis->stored_bytes, over_redis->exact ? "true" : "false");
        std::printf("}\n");
        return exact ? 0 : 1;
    }
    std::printf("prefix store on %d agent-like sessions (%llu tokens, SmolLM2-135M KV rows, bf16, %u-token chunks)\n", count,
                (unsigned long long)total_tokens, chunk);
    std::printf("  raw KV                         %12.0f B\n", raw_per_token * double(total_tokens));
    std::printf("  each session's chunks alone    %12llu B  (%.2fx)   (%llu distinct chunks, %llu B, encoded in %.1f s)\n",
                (unsigned long long)separate_bytes, raw_per_token * double(total_tokens) / double(separate_bytes),
                (unsigned long long)memo->size(), (unsigned long long)distinct_bytes, encode_seconds);
    std::printf("  prefix store (dedup)           %12llu B  (%.2fx)   put %.1f MB/s raw (index + chunk store; chunks encoded above), %.1f %% of tokens already stored\n",
                (unsigned long long)dedup_bytes, raw_per_token * double(total_tokens) / double(dedup_bytes),
                raw_per_token * double(total_tokens) / 1e6 / put_seconds, 100.0 * double(shared_tokens) / double(total_tokens));
    std::printf("  read back (decode)             %.1f MB/s raw\n", raw_per_token * double(read_tokens) / 1e6 / read_seconds);
    if (over_redis) {
        const std::string labels[2] = {"memory_chunk_store",
                                       "redis_chunk_store " + redis->host + ":" + std::to_string(redis->port) + (redis->cluster ? " (cluster)" : "")};
        const int width = int(std::max(labels[0].size(), labels[1].size()));
        std::printf("\n  unlimited store, by chunk store\n    %-*s %10s %11s %14s  %s\n", width, "", "put MB/s", "read MB/s", "stored B", "read back");
        for (int k = 0; k < 2; ++k) {
            const unlimited_run& r = k ? *over_redis : mem;
            std::printf("    %-*s %10.1f %11.1f %14llu  %s\n", width, labels[k].c_str(), put_MBps(r), read_MBps(r),
                        (unsigned long long)r.stored_bytes, r.exact ? "bit-exact" : "MISMATCH");
        }
        std::printf("    (raw KV MB/s; put = index + chunk store, the chunks were encoded above; read = fetch + decode)\n\n");
    }
    std::printf("  lookup (longest prefix)        %.1f M tokens/s (one core)\n", lookup_tps / 1e6);
    std::printf("  index                          %.2f B per stored token after compact() (%.2f B as grown; %llu tokens, %zu chunks)\n",
                index_per_token, index_per_token_grown, (unsigned long long)unlimited.stored_tokens(), unlimited.chunk_count());
    std::printf("\n  hit rate (tokens served / requested) at a byte budget\n  %-8s %8s %8s %12s\n", "budget", "PLT", "LRU", "block16-LRU");
    for (const auto& r : rows)
        std::printf("  %6.0f %% %7.1f %% %7.1f %% %11.1f %%\n", 100 * r.fraction, 100 * r.plt, 100 * r.lru, 100 * r.block);
    if (!exact) {
        std::fprintf(stderr, "%s: a read did not return the session's KV exactly\n", argv[0]);
        return 1;
    }
    return 0;
}
