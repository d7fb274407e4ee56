// The prefix store: sessions' KV stored once per shared token prefix (layer 1, docs/STORE.md).
//
//   memory_chunk_store chunks;
//   prefix_store<memory_chunk_store> store(chunks, make_codec(lossless_config()), layout, {.chunk_tokens = 256});
//   store.put(cache, tokens, nll);                  // encodes only chunks no stored session has
//   auto hit = store.read(new_prompt_tokens);       // KV of the longest stored prefix
//   engine.prefill(new_prompt_tokens.subspan(hit.tokens), hit.kv);
//
// Chunks sit at absolute positions: chunk k holds tokens [k·C, (k+1)·C) of a session, or
// [k·C, T) for the last one. The KV at a position depends only on the tokens up to it, so every
// session whose tokens agree up to position e shares the chunk ending at e: the PLT trie
// (trie/plt_trie.hpp) has a node at every chunk end and the node's value names the chunk
// (content hash in the ChunkStore, bytes, use statistics). A read of a prefix that ends inside a
// chunk decodes any stored chunk below that point and keeps its first tokens.
//
// Eviction (a byte budget on the chunk store): only chunks at the trie's leaves are evicted (a
// chunk that another stored chunk extends is never evicted before it), ranked by the policy:
//   lru — least recently used first;
//   plt — lowest expected reuse × raw bytes saved per stored byte first (rank()). Expected reuse
//         is the decayed use count plus a prior from the model, 2^(−mean surprisal bits per token
//         of the chunk's tokens) (predictable boilerplate — templates, schemas — ranks high before
//         any reuse is seen), times the chance that the chunk is still alive: a chunk several
//         sessions used is overdue when it goes unused for long against its own rate of use (a
//         date's branch once the date changed: e^(−w·rate·idle)); a chunk one session used (its
//         own tail) keeps half its chance every single_use_half_life puts (a follow-up turn comes
//         soon or not at all).
// Time is counted in puts. A victim is found by ranking the candidates when a put exceeds the
// budget (ranks move with time at each chunk's own rate, so no order is kept between puts): one
// pass over the chunk records, then O(log n) a victim.
//
// Index memory (docs/PREFIX_STORE.md): the trie (3 B a token, 40 B a node), a 48-B record per
// chunk (its token range is its node's), an open-addressing table of records by chunk key;
// ≈ 7.6 B per stored token on the bench after compact().
// A chunk that a later session's longer chunk covers at the same start (a turn's partial last
// chunk) is dropped at once: its KV is the first tokens of the longer one.
//
// Concurrency: one writer (put, evict) or many readers (match, read) at a time (a shared mutex);
// readers fetch and decode under the shared lock, so a chunk is never evicted under a reader.
//
// The codec must be self-contained per chunk (no dependent chunks). Token ids go to the codec
// (lossless token references); nll does not (the store keeps it only as trie surprisal).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <optional>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "seqkv/core/any_codec.hpp"
#include "seqkv/core/bytes.hpp"
#include "seqkv/core/checksum.hpp"
#include "seqkv/core/chunk.hpp"
#include "seqkv/core/chunk_view.hpp"
#include "seqkv/core/dtype.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/core/hash.hpp"
#include "seqkv/core/layout.hpp"
#include "seqkv/core/resource.hpp"
#include "seqkv/core/sync.hpp"
#include "seqkv/format/writer.hpp"
#include "seqkv/store/chunk_store.hpp"
#include "seqkv/trie/plt_trie.hpp"
#include "seqkv/trie/serialize.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

enum class eviction_policy : std::uint8_t { plt = 0, lru = 1 };

struct prefix_store_options {
    std::uint32_t chunk_tokens = 256;
    /// Stored chunk bytes kept at most (eviction beyond it); the default keeps everything.
    std::uint64_t budget_bytes = std::numeric_limits<std::uint64_t>::max();
    eviction_policy policy = eviction_policy::plt;
    /// plt: uses of a chunk lose half their weight every this many puts.
    double reuse_half_life = 256;
    /// plt: a chunk used by more than one put that goes unused for `idle` puts keeps
    /// e^(−overdue_weight · rate · idle) of its expected reuse, rate = its decayed uses per put
    /// since it was stored (a branch used every put is likely dead after a few idle ones; one used
    /// every 20th put is not).
    double overdue_weight = 0.75;
    /// plt: a chunk only the put that stored it has used keeps half its expected reuse every this
    /// many puts (a session's own tail: a follow-up turn comes soon or not at all).
    double single_use_half_life = 8;
    /// The store's name in the resource table of the .skv files it exports (its id is the name's content_hash64).
    std::string name = "seqkv prefix store";
    /// Near-prefix reuse (0: off). A session that leaves a stored one for at most this many tokens
    /// (a date, a name: the same token count) and then continues with the same tokens has its new
    /// chunks coded as the element-wise residual from the stored session's chunk at the same
    /// positions (see near_prefix_residual).
    std::uint32_t near_prefix_gap = 0;
    /// How a near-prefix chunk is the residual of its neighbour's:
    ///   integer — (x − ref) modulo 2^bits on the elements' words; with a lossless codec the chunk
    ///             reads back bit-exactly. Meaningless through a lossy codec: use value there.
    ///   value   — x − ref as numbers (float), rounded to the element type, where ref is the
    ///             neighbour as it decodes; a read gives ref + decoded residual, rounded. For lossy
    ///             codecs: the error is the codec's error on the (small) residual plus at most two
    ///             roundings to the element type (|r|·2^-p + |x̂|·2^-p, p = 8 for bf16, 11 for f16).
    /// One store uses one kind for the chunks it codes; a saved index records it per chunk and
    /// loads only into a store set to the same kind.
    enum class residual : std::uint8_t { integer = 0, value = 1 };
    residual near_prefix_residual = residual::integer;
    /// Near-prefix reuse across a token-count change (a longer name: the continuation sits d
    /// positions later than in the neighbour). Rotates one key row (head_dim values of the model's
    /// cached, post-RoPE keys) by `shift` positions in place, deterministically — build it from
    /// predict::rope_table (angles(|shift|), rotate_row, direction = sign of shift), whose cos/sin
    /// are the same bits everywhere. With it, the neighbour's keys at p − d are rotated by d and
    /// rounded back to the element type before the integer difference is taken (values are not
    /// rotated). Unset: only same-count gaps are used. A store that reads shifted chunks (also
    /// after load_index) needs the same rotation.
    std::function<void(std::span<float> row, std::int64_t shift)> key_rotation = {};
};

/// What export_session returns: a .skv of the first `tokens` tokens whose chunks live in the store.
struct exported_session {
    std::uint64_t tokens = 0;
    byte_vector skv;
};

/// What put() did.
struct put_stats {
    std::uint64_t tokens = 0;           // tokens of the session
    std::uint64_t referenced_chunks = 0;  // of new_chunks, coded as a difference from a neighbour's chunk
    std::uint64_t repaired_chunks = 0;    // reused chunks the ChunkStore had lost, stored again from this session
    std::uint64_t shared_tokens = 0;    // of them, already stored before this put (no encode)
    std::uint64_t new_chunks = 0, reused_chunks = 0;
    std::uint64_t bytes_written = 0;    // chunk bytes added to the ChunkStore
    std::uint64_t evicted_chunks = 0;
};

/// What read() returns: the KV of the first `tokens` tokens of the query.
struct prefix_hit {
    std::uint64_t tokens = 0;
    chunk_buffer kv;  // [layer][K/V][head][token][channel], tokens = this->tokens
};

template <ChunkStore Store>
class prefix_store {
public:
    /// layout: the cache geometry every session has (tokens ignored).
    prefix_store(Store& chunks, any_chunk_codec codec, kv_layout layout, prefix_store_options options = {},
                 const resource_provider* resources = nullptr)
        : chunks_(&chunks), codec_(std::move(codec)), layout_(layout), options_(options), resources_(resources) {
        require_usage(options_.chunk_tokens > 0, "prefix_store: chunk_tokens must be positive");
        require_usage(std::isfinite(options_.reuse_half_life) && options_.reuse_half_life > 0 && std::isfinite(options_.single_use_half_life) &&
                          options_.single_use_half_life > 0 && std::isfinite(options_.overdue_weight) && options_.overdue_weight >= 0,
                      "prefix_store: half-lives must be positive and finite, overdue_weight finite and not negative");
        require_usage(!codec_.dependent_chunks, "prefix_store: the codec's chunks must decode on their own");
        require_usage(options_.near_prefix_gap == 0 || options_.near_prefix_residual != prefix_store_options::residual::value ||
                          is_kv_float(layout.type),
                      "prefix_store: value residuals need a float element type (bf16, f16, f32, fp8)");
        layout_.tokens = 0;
    }

    /// Stores a session: tokens [0, T) of cache with their ids (and −ln p in nats, optional).
    /// Chunks whose prefix is stored already are not encoded again.
    put_stats put(const kv_cache_view& cache, std::span<const std::int32_t> tokens, std::span<const float> nll = {}) {
        require_usage(cache.layout.layers == layout_.layers && cache.layout.kv_heads == layout_.kv_heads &&
                          cache.layout.head_dim == layout_.head_dim && cache.layout.type == layout_.type,
                      "prefix_store: cache layout differs from the store's");
        require_usage(tokens.size() == cache.layout.tokens, "prefix_store: one token id per cached token");
        std::unique_lock lock(mutex_);
        ++clock_;
        put_stats st;
        st.tokens = tokens.size();
        if (tokens.empty()) return st;
        const trie::point diverge = trie_.longest_prefix(tokens);
        st.shared_tokens = diverge.depth;
        const neighbour_match neighbour = find_neighbour(tokens, diverge);
        const trie::node_id leaf = trie_.insert(tokens, nll);
        trie_.acquire(leaf);  // nothing on this path is evicted while we work
        const std::uint64_t C = options_.chunk_tokens, T = tokens.size();
        for (std::uint64_t begin = 0; begin < T; begin += C) {
            const std::uint64_t end = std::min(begin + C, T);
            const trie::node_id node = trie_.split_at(leaf, end);
            if (trie_.value(node) != trie::no_value) {
                const std::uint64_t id = trie_.value(node);
                touch(static_cast<std::uint32_t>(id));
                ++st.reused_chunks;
                if (!chunks_->contains(records_[id].key)) st.repaired_chunks += repair(static_cast<std::uint32_t>(id), cache, tokens);
                continue;
            }
            if (end == T && trie_.child_count(node) > 0) continue;  // a longer stored chunk from `begin` holds them
            // Against the neighbour when at least half the chunk's rows lie before the agreement ends.
            const bool near = neighbour.leaf != trie::no_node && 2 * (std::min(end, neighbour.until) - std::min(begin, neighbour.until)) >= end - begin;
            std::uint32_t ref = near ? reference_for(neighbour, begin, end) : no_record;
            std::int64_t shift = neighbour.shift;
            byte_vector payload;
            if (ref == no_record) {
                chunk_input in{&cache, begin, end, tokens.subspan(begin, end - begin), {}, resources_, nullptr};
                payload = codec_.encode(in);
            } else {  // the difference from the neighbour's rows at the aligned positions
                // nullopt: a value residual the element type cannot hold (overflow, saturation).
                const auto against = [&](std::uint32_t r, std::int64_t sh) -> std::optional<byte_vector> {
                    bool representable = true;
                    const chunk_buffer diff = difference(cache, begin, end, reference_rows(r, sh, begin, end), representable);
                    if (!representable) return std::nullopt;
                    const kv_cache_view diff_view = view_of(diff);
                    chunk_input in{&diff_view, 0, end - begin, tokens.subspan(begin, end - begin), {}, resources_, nullptr};
                    in.position_base = begin;
                    return codec_.encode(in);
                };
                std::optional<byte_vector> near_payload = against(ref, shift);
                // A shifted chunk that still holds rows before the continuation (shared prefix, gap):
                // the unshifted neighbour rows may be the better reference there; keep the smaller.
                if (shift != 0 && begin < diverge.depth + options_.near_prefix_gap) {
                    const std::uint32_t plain_ref = reference_for(neighbour_match{neighbour.leaf, 0, neighbour.until}, begin, end);
                    if (plain_ref != no_record) {
                        std::optional<byte_vector> other = against(plain_ref, 0);
                        if (other && (!near_payload || other->size() < near_payload->size()))
                            near_payload = std::move(other), ref = plain_ref, shift = 0;
                    }
                }
                if (near_payload) {
                    payload = std::move(*near_payload);
                    ++st.referenced_chunks;
                } else {  // coded alone after all
                    ref = no_record, shift = 0;
                    chunk_input in{&cache, begin, end, tokens.subspan(begin, end - begin), {}, resources_, nullptr};
                    payload = codec_.encode(in);
                }
            }
            const std::uint64_t key = chunk_key(payload);
            require_usage(payload.size() < no_record, "prefix_store: a chunk payload of 4 GiB or more");
            if (!key_stored(key)) {
                chunks_->put(key, payload);
                stored_bytes_ += payload.size();
                st.bytes_written += payload.size();
            }
            const std::uint32_t id = add_record(key, node, begin, end, static_cast<std::uint32_t>(payload.size()), nll);
            records_[id].ref = ref;
            if (ref != no_record) {
                ++records_[ref].dependents;
                if (shift != 0) shifts_[id] = static_cast<std::int32_t>(shift);
            }
            trie_.set_value(node, id);
            ++st.new_chunks;
            drop_shadowed(leaf, begin, end);
        }
        trie_.release(leaf);
        st.evicted_chunks = evict_to_budget();
        return st;
    }

    /// Tokens of the query whose KV read() returns (the longest stored prefix); no chunk is fetched.
    std::uint64_t match(std::span<const std::int32_t> tokens) const {
        std::shared_lock lock(mutex_);
        return readable(tokens).tokens;
    }

    /// The KV of the longest stored prefix of tokens (at most max_tokens), decoded from the store.
    prefix_hit read(std::span<const std::int32_t> tokens, std::uint64_t max_tokens = std::numeric_limits<std::uint64_t>::max()) {
        std::shared_lock lock(mutex_);
        const plan p = readable(tokens.first(std::min<std::uint64_t>(tokens.size(), max_tokens)));
        prefix_hit hit;
        hit.tokens = p.tokens;
        kv_layout L = layout_;
        L.tokens = p.tokens;
        hit.kv = chunk_buffer::for_layout(L, p.tokens);
        for (const auto& piece : p.pieces) decode_into(piece, hit.kv);
        for (const auto& piece : p.pieces) note_use(static_cast<std::uint32_t>(piece.record));
        return hit;
    }

    /// The index (trie + chunk records + statistics) as bytes, to reopen the store over the same
    /// ChunkStore later or on another host (layout, chunk size and codec must match). Layout:
    /// magic "SKVPSTOR", u32 version 3, u32 chunk_tokens, u32 layers, u32 kv_heads, u32 head_dim,
    /// u8 dtype, u64 clock, u64 key_rotation fingerprint (0: none), u64 trie bytes + the trie
    /// (trie/serialize.hpp), u64 record count, per
    /// record u64 key, u32 bytes, f32 prior, f32 uses, u64 last_use, u32 passes (puts and reads
    /// that used it, saturating), u32 age (puts from its storing to its last use, saturating), u32 ref (near-prefix
    /// reference record or all ones), i32 shift (of the reference's positions; 0 when none), u8
    /// flags (bit 0 live, bit 1 a value residual: near_prefix_residual = value); u32 CRC-32C. A record's tokens are those of the
    /// chunk that ends at the trie node whose value names it (begin = the chunk boundary below).
    byte_vector save_index() const {
        std::shared_lock lock(mutex_);
        byte_vector out;
        byte_writer w(out);
        w.put_bytes(index_magic);
        w.put<std::uint32_t>(index_version);
        w.put<std::uint32_t>(options_.chunk_tokens);
        w.put<std::uint32_t>(layout_.layers);
        w.put<std::uint32_t>(layout_.kv_heads);
        w.put<std::uint32_t>(layout_.head_dim);
        w.put<std::uint8_t>(static_cast<std::uint8_t>(layout_.type));
        w.put<std::uint64_t>(clock_);
        w.put<std::uint64_t>(rotation_fingerprint());
        const byte_vector trie_bytes = trie::save(trie_);
        w.put<std::uint64_t>(trie_bytes.size());
        w.put_bytes(trie_bytes);
        w.put<std::uint64_t>(records_.size());
        std::lock_guard stats(stats_mutex_);  // readers update use statistics under the shared lock
        for (const auto& r : records_) {
            w.put<std::uint64_t>(r.key);
            w.put<std::uint32_t>(r.bytes);
            w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(r.prior));
            w.put<std::uint32_t>(std::bit_cast<std::uint32_t>(r.uses));
            w.put<std::uint64_t>(r.last_use);
            w.put<std::uint32_t>(r.passes);
            w.put<std::uint32_t>(r.age);
            w.put<std::uint32_t>(r.ref);
            w.put<std::int32_t>(static_cast<std::int32_t>(shift_of(static_cast<std::uint32_t>(&r - records_.data()))));
            w.put<std::uint8_t>(std::uint8_t((live(r) ? 1 : 0) | (live(r) && r.ref != no_record && value_residuals() ? 2 : 0)));
        }
        w.put<std::uint32_t>(crc32c(out));
        return out;
    }

    /// Replaces the index with one saved by save_index (for this layout and chunk size). Every
    /// size is checked before allocating; the records must agree with the trie (each value names a
    /// live record whose tokens end at that node). The chunks themselves are not fetched:
    /// missing_chunks() says how many the ChunkStore lacks.
    void load_index(std::span<const std::uint8_t> bytes) {
        if (bytes.size() < 4) throw format_error("prefix store index truncated");
        byte_reader tail(bytes.last(4), "prefix store index");
        if (tail.get<std::uint32_t>() != crc32c(bytes.first(bytes.size() - 4))) throw checksum_error("prefix store index: CRC mismatch");
        byte_reader r(bytes.first(bytes.size() - 4), "prefix store index");
        const auto magic = r.get_bytes(index_magic.size());
        if (!std::equal(magic.begin(), magic.end(), index_magic.begin())) throw format_error("prefix store index: bad magic");
        const std::uint32_t version = r.get<std::uint32_t>();
        if (version != index_version && version != 2) throw format_error("prefix store index: unsupported version");
        const std::uint32_t chunk_tokens = r.get<std::uint32_t>();
        kv_layout L = layout_;
        L.layers = r.get<std::uint32_t>(), L.kv_heads = r.get<std::uint32_t>(), L.head_dim = r.get<std::uint32_t>();
        L.type = static_cast<dtype>(r.get<std::uint8_t>());
        if (chunk_tokens != options_.chunk_tokens || !(L == layout_))
            throw format_error("prefix store index: saved for another layout or chunk size");
        const std::uint64_t clock = r.get<std::uint64_t>();
        const std::uint64_t fingerprint = r.get<std::uint64_t>();
        const std::uint64_t trie_size = r.get<std::uint64_t>();
        if (trie_size > r.remaining()) throw format_error("prefix store index: trie size exceeds the data");
        trie::plt_trie t = trie::load(r.get_bytes(trie_size));
        const std::uint64_t count = r.get<std::uint64_t>();
        const std::size_t record_bytes = 8 + 4 + 4 + 4 + 8 + (version >= 3 ? 8 : 0) + 4 + 4 + 1;
        if (count > r.remaining() / record_bytes || r.remaining() != count * record_bytes || count >= no_record)
            throw format_error("prefix store index: record count does not match the data");
        std::vector<chunk_record> records(count);
        std::vector<std::uint32_t> free_records;
        std::vector<std::uint8_t> is_live(count, 0);
        std::unordered_map<std::uint32_t, std::int32_t> shifts;
        for (std::uint64_t i = 0; i < count; ++i) {
            auto& rec = records[i];
            rec.key = r.get<std::uint64_t>();
            rec.bytes = r.get<std::uint32_t>();
            rec.prior = std::bit_cast<float>(r.get<std::uint32_t>());
            rec.uses = std::bit_cast<float>(r.get<std::uint32_t>());
            rec.last_use = r.get<std::uint64_t>();
            if (version >= 3) {
                rec.passes = r.get<std::uint32_t>();
                rec.age = r.get<std::uint32_t>();
            } else {  // version 2 counted uses after the put that stored the chunk; its birth is unknown (taken as put 0)
                rec.passes = rec.uses >= 0.5f ? 2 : 1;
                rec.uses += 1;
                rec.age = static_cast<std::uint32_t>(std::min<std::uint64_t>(rec.last_use, std::numeric_limits<std::uint32_t>::max()));
            }
            rec.ref = r.get<std::uint32_t>();
            const auto shift = r.get<std::int32_t>();
            const auto flag = r.get<std::uint8_t>();
            if (shift != 0) {
                if (!flag || rec.ref == no_record) throw format_error("prefix store index: a shift without a reference");
                if (!options_.key_rotation) throw format_error("prefix store index: shifted near-prefix chunks need options.key_rotation");
                if (fingerprint != rotation_fingerprint())
                    throw format_error("prefix store index: saved with another key_rotation (its shifted chunks would decode wrong)");
                shifts[static_cast<std::uint32_t>(i)] = shift;
            }
            if (flag > 3 || flag == 2) throw format_error("prefix store index: bad record flag");
            if (flag == 3 && rec.ref == no_record) throw format_error("prefix store index: a value residual without a reference");
            if (rec.ref != no_record && flag && (flag == 3) != value_residuals())
                throw format_error(std::string("prefix store index: saved with ") + (flag == 3 ? "value" : "integer") +
                                   " near-prefix residuals; open it with options.near_prefix_residual set so");
            is_live[i] = flag ? 1 : 0;
            if (!flag) {
                free_records.push_back(static_cast<std::uint32_t>(i));
                continue;
            }
            if (!(rec.prior >= 0 && rec.prior <= 1) || !(rec.uses >= 0 && rec.uses < 1e30f) || rec.last_use > clock || rec.passes == 0)
                throw format_error("prefix store index: inconsistent chunk record");
        }
        // Every trie value names a live record (the chunk ending at that node), every live record is
        // named once.
        std::vector<trie::node_id> stack{trie::plt_trie::root};
        while (!stack.empty()) {
            const auto n = stack.back();
            stack.pop_back();
            if (const auto v = t.value(n); v != trie::no_value) {
                if (n == trie::plt_trie::root || v >= count || !is_live[v] || records[v].node != trie::no_node)
                    throw format_error("prefix store index: trie and chunk records disagree");
                records[v].node = n;
            }
            t.for_each_child(n, [&](trie::node_id c) { stack.push_back(c); });
        }
        for (std::uint64_t i = 0; i < count; ++i)
            if (is_live[i] && records[i].node == trie::no_node) throw format_error("prefix store index: a chunk record no node names");
        auto begin_in = [&](const chunk_record& rec) { return (t.depth(rec.node) - 1) / chunk_tokens * chunk_tokens; };
        // References: unshifted, to a live record of the same start that holds at least as many
        // tokens; shifted by s, to a live record holding row end − 1 − s, rows from begin − s ≥ 0 on,
        // and the whole chunk before it when they start below it. The chains end (each step strictly
        // back in a chain of at most 64 records).
        for (std::uint64_t i = 0; i < count; ++i) {
            auto& rec = records[i];
            if (!is_live[i] || rec.ref == no_record) continue;
            if (rec.ref >= count || !is_live[rec.ref]) throw format_error("prefix store index: bad near-prefix reference");
            const chunk_record& to = records[rec.ref];
            const auto it = shifts.find(static_cast<std::uint32_t>(i));
            const std::int64_t shift = it == shifts.end() ? 0 : it->second;
            const std::int64_t b = std::int64_t(begin_in(rec)), e = std::int64_t(t.depth(rec.node));
            const std::int64_t rb = std::int64_t(begin_in(to)), re = std::int64_t(t.depth(to.node));
            bool ok = shift == 0 ? rb == b && re >= e : b - shift >= 0 && e - 1 - shift >= rb && e - shift <= re;
            if (ok && shift != 0 && b - shift < rb) {  // the chunk before the reference, on its path
                const trie::node_id m = t.ancestor_at(to.node, std::uint64_t(rb));
                const std::uint64_t v = m == trie::no_node ? trie::no_value : t.value(m);
                ok = b - shift >= rb - std::int64_t(chunk_tokens) && v != trie::no_value && begin_in(records[v]) + chunk_tokens == std::uint64_t(rb);
            }
            if (!ok) throw format_error("prefix store index: bad near-prefix reference");
            ++records[rec.ref].dependents;
        }
        for (std::uint64_t i = 0; i < count; ++i) {  // every live ref is valid now: walk the chains
            std::uint64_t steps = 0;
            for (std::uint64_t j = i; is_live[j] && records[j].ref != no_record; j = records[j].ref)
                if (++steps > 64) throw format_error("prefix store index: reference cycle or chain too long");
        }
        // Chunk keys: bytes once per distinct key (records with one key must agree on its size).
        trie::id_table keys;
        const auto hash_of = [&](std::uint32_t id) { return trie::mix64(records[id].key); };
        keys.fit(count - free_records.size(), hash_of);
        std::uint64_t stored = 0;
        for (std::uint32_t i = 0; i < count; ++i) {
            if (!is_live[i]) continue;
            const std::uint32_t other = keys.find(hash_of(i), [&](std::uint32_t j) { return records[j].key == records[i].key; });
            if (other == trie::id_table::empty) stored += records[i].bytes;
            else if (records[other].bytes != records[i].bytes) throw format_error("prefix store index: one chunk key, two sizes");
            keys.insert(i, hash_of);
        }
        std::unique_lock lock(mutex_);
        trie_ = std::move(t);
        records_ = std::move(records);
        free_records_ = std::move(free_records);
        keys_ = std::move(keys);
        shifts_ = std::move(shifts);
        stored_bytes_ = stored;
        clock_ = clock;
    }

    /// Live chunks the ChunkStore does not hold (after load_index on another host, an eviction
    /// elsewhere, a wiped server). A read that needs one throws store_error.
    std::size_t missing_chunks() const {
        std::shared_lock lock(mutex_);
        std::size_t missing = 0;
        for_each_distinct_key([&](std::uint64_t key) { missing += !chunks_->contains(key); });
        return missing;
    }

    /// This store as a resource (kind prefix_store): what an exported .skv declares it needs.
    resource_ref resource() const {
        const auto& n = options_.name;
        return {resource_kind::prefix_store, content_hash64({reinterpret_cast<const std::uint8_t*>(n.data()), n.size()}), n};
    }

    /// A provider that resolves this store (resource()) and its chunks (chunk_payload by content
    /// hash, fetched from the ChunkStore and verified by it), for decompress() of exported files.
    /// Add other resources (an expected-KV table) to it with add(). Valid while the store lives.
    resource_provider provider() const {
        const resource_ref self = resource();
        return resource_provider([this, self](resource_kind kind, std::uint64_t hash) -> std::shared_ptr<const void> {
            if (kind == resource_kind::prefix_store && hash == self.content_hash) return std::make_shared<const int>(0);
            if (kind != resource_kind::chunk_payload) return nullptr;
            auto bytes = chunks_->get(hash);
            if (!bytes) return nullptr;
            return std::make_shared<const byte_vector>(std::move(*bytes));
        });
    }

    /// A .skv of the longest stored prefix of tokens that whole stored chunks hold (a prefix ending
    /// inside a chunk stops at that chunk's start): token ids inline, every chunk record external
    /// (its payload's hash and length only), the store in the resource table. codec_config must be
    /// the configuration of this store's codec (the file names it). Decode with
    /// decompress(skv, begin, end, store.provider()) wherever the ChunkStore is reachable.
    exported_session export_session(std::span<const std::int32_t> tokens, const format::codec_config& codec_config,
                                    std::map<std::string, std::string> metadata = {}) const {
        std::shared_lock lock(mutex_);
        const plan p = readable(tokens);
        format::preamble pre;
        pre.layout = layout_;
        pre.codec = codec_config;
        pre.chunk_tokens = options_.chunk_tokens;
        pre.has_token_ids = true;
        pre.metadata = std::move(metadata);
        pre.resources = {resource()};
        exported_session out;
        format::stream_writer writer([&](std::span<const std::uint8_t> b) { out.skv.insert(out.skv.end(), b.begin(), b.end()); },
                                     pre, codec_);
        for (const auto& piece : p.pieces) {
            const chunk_record& r = records_[piece.record];
            const std::uint64_t begin = begin_of(r), end = end_of(r);
            if (piece.take != end - begin) break;  // a partial chunk: its payload holds more tokens
            if (r.ref != no_record) break;         // a difference chunk: a plain decoder cannot use it
            writer.append_external(static_cast<std::uint32_t>(end - begin), trie_.sequence(piece.node, begin), {}, r.bytes, r.key);
            out.tokens = end;
            if (end - begin < options_.chunk_tokens) break;
        }
        writer.finish();
        return out;
    }

    /// Drops every chunk and the index (the ChunkStore's chunks are removed).
    void clear() {
        std::unique_lock lock(mutex_);
        for_each_distinct_key([&](std::uint64_t key) { chunks_->remove(key); });
        keys_.clear();
        shifts_.clear();
        records_.clear();
        free_records_.clear();
        trie_ = trie::plt_trie{};
        stored_bytes_ = 0;
    }

    /// Releases spare capacity of the index (pools compacted, vectors shrunk to size).
    void compact() {
        std::unique_lock lock(mutex_);
        trie_.shrink_to_fit();
        records_.shrink_to_fit();
        free_records_.shrink_to_fit();
        keys_.fit(keys_.size(), key_hash_of());
    }

    // ---- size and statistics ----
    std::uint64_t stored_bytes() const {
        std::shared_lock lock(mutex_);
        return stored_bytes_;
    }
    std::uint64_t stored_tokens() const {
        std::shared_lock lock(mutex_);
        return trie_.stored_tokens();
    }
    std::size_t chunk_count() const {
        std::shared_lock lock(mutex_);
        return records_.size() - free_records_.size();
    }
    /// Bytes of the index (trie, chunk records, key table), for "index bytes per stored token".
    std::size_t index_bytes() const {
        std::shared_lock lock(mutex_);
        return trie_.memory_bytes() + records_.capacity() * sizeof(chunk_record) + free_records_.capacity() * sizeof(std::uint32_t) +
               keys_.memory_bytes() +
               shifts_.size() * (sizeof(std::uint64_t) + 2 * sizeof(void*)) + shifts_.bucket_count() * sizeof(void*);
    }
    /// The trie, for queries such as shared_bits (read-only; do not hold across a put).
    const trie::plt_trie& index() const { return trie_; }
    const prefix_store_options& options() const { return options_; }

private:
    static constexpr std::array<std::uint8_t, 8> index_magic{'S', 'K', 'V', 'P', 'S', 'T', 'O', 'R'};

    static constexpr std::uint32_t index_version = 3;  // 2: records without passes / age (still read)
    static constexpr double rank_half_lives = 4;  // plt rank: decay half-life in units of reuse_half_life
    static constexpr std::uint32_t no_record = std::numeric_limits<std::uint32_t>::max();

    // 48 bytes: a chunk's token range is not stored — it ends at its node (trie depth) and starts
    // at the chunk boundary below that.
    struct chunk_record {
        std::uint64_t key = 0;
        std::uint64_t last_use = 0;
        float uses = 0;    // plt: decayed use count (the put that stored it included), as of last_use
        float prior = 0;   // plt: 2^(−mean surprisal bits per token)
        std::uint32_t passes = 0;  // puts and reads that used it, the storing put included (saturates)
        std::uint32_t age = 0;     // puts from the storing one to the last use (saturates)
        std::uint32_t bytes = 0;
        trie::node_id node = trie::no_node;  // the trie node whose value this record is; no_node: a free slot
        std::uint32_t ref = no_record;       // near-prefix reuse: the chunk this one is the difference from
        std::uint32_t dependents = 0;        // records whose ref is this one (never evicted while > 0)
    };
    static_assert(sizeof(chunk_record) == 48);
    struct heap_entry {  // an eviction candidate, ranked when evict_to_budget() looks for victims
        double rank;
        std::uint32_t record;
        bool operator>(const heap_entry& o) const { return rank != o.rank ? rank > o.rank : record > o.record; }
    };
    struct piece {
        std::uint64_t record;
        std::uint64_t take;        // tokens used from the chunk's start
        trie::node_id node;        // where the chunk's tokens are (for its ids)
    };
    struct plan {
        std::uint64_t tokens = 0;
        std::vector<piece> pieces;
    };

    static bool live(const chunk_record& r) { return r.node != trie::no_node; }
    std::uint64_t end_of(const chunk_record& r) const { return trie_.depth(r.node); }
    std::uint64_t begin_of(const chunk_record& r) const { return (end_of(r) - 1) / options_.chunk_tokens * options_.chunk_tokens; }

    std::uint32_t add_record(std::uint64_t key, trie::node_id node, std::uint64_t begin, std::uint64_t end, std::uint32_t bytes,
                             std::span<const float> nll) {
        chunk_record r;
        r.key = key, r.node = node, r.bytes = bytes, r.last_use = clock_;
        r.uses = 1, r.passes = 1, r.age = 0;
        double bits = 8.0 * double(end - begin);  // the trie's default surprisal when nll is absent
        if (!nll.empty()) {  // at the nll's own resolution (1/256 bit), not the trie's coarser grid
            bits = 0;
            for (std::uint64_t t = begin; t < end; ++t) {
                const double b = double(nll[t]) / std::log(2.0);
                bits += !(b > 0) ? (b == 0 || b < 0 ? 0.0 : 256.0) : std::min(std::floor(b * 256 + 0.5), 65535.0) / 256;
            }
        }
        r.prior = static_cast<float>(std::exp2(-bits / double(end - begin)));
        std::uint32_t id;
        if (!free_records_.empty()) {
            id = free_records_.back();
            free_records_.pop_back();
            records_[id] = r;
        } else {
            require_usage(records_.size() < no_record - 1, "prefix_store: too many chunks");
            records_.push_back(r);
            id = static_cast<std::uint32_t>(records_.size() - 1);
        }
        keys_.insert(id, key_hash_of());
        return id;
    }
    void touch(std::uint32_t id) {
        auto& r = records_[id];
        r.uses = static_cast<float>(decayed_uses(r) + 1);
        r.age = static_cast<std::uint32_t>(std::min<std::uint64_t>(std::uint64_t(r.age) + (clock_ - r.last_use), std::numeric_limits<std::uint32_t>::max()));
        r.last_use = clock_;
        r.passes += r.passes != std::numeric_limits<std::uint32_t>::max();
    }
    void note_use(std::uint32_t id) {  // under the shared lock: statistics only, serialized here
        std::lock_guard lock(stats_mutex_);
        touch(id);
    }
    double decayed_uses(const chunk_record& r) const {
        return double(r.uses) * std::exp2(-double(clock_ - r.last_use) / options_.reuse_half_life);
    }
    /// Eviction order now, lowest first:
    ///   lru: last use;
    ///   plt: log2 of (u + prior) · alive · raw/stored · 2^(−idle/(4·reuse_half_life)), with
    ///        u = the uses decayed to now (half every reuse_half_life puts), idle = puts since the
    ///        last use, and alive = 2^(−idle/single_use_half_life) for a chunk only its storing put
    ///        used, else e^(−overdue_weight · rate · idle), rate = u / (the decayed weight of the
    ///        puts since it was stored). The last factor only breaks ties between equally used
    ///        chunks in favour of the recent one. The constants (0.75, 8) are a point inside the
    ///        range that beats LRU on all three bench workloads (docs/PREFIX_STORE.md has the grid).
    double rank(const chunk_record& r) const {
        if (options_.policy == eviction_policy::lru) return double(r.last_use);
        const double raw = double(end_of(r) - begin_of(r)) * double(layout_.elements_per_token() * dtype_size(layout_.type));
        const double h = options_.reuse_half_life;
        const double idle = double(clock_ - r.last_use);
        const double u = decayed_uses(r);
        double alive;
        if (r.passes <= 1) {
            alive = std::exp2(-idle / options_.single_use_half_life);
        } else {
            const double since = idle + double(r.age) + 1;  // puts since stored, the storing one included
            const double ln2 = std::log(2.0);
            const double window = std::expm1(-since * ln2 / h) / std::expm1(-ln2 / h);  // Σ 2^(−i/h), i < since
            // Reads count as uses but time runs in puts: a rate above one use a put (a prefix read
            // by many requests) says "hot", not "due again within the put" — capped there.
            const double rate = std::min(u / window, 1.0);
            alive = std::exp(-options_.overdue_weight * rate * idle);
        }
        return std::log2((u + double(r.prior)) * alive * raw / double(std::max<std::uint32_t>(r.bytes, 1)) + 1e-300) -
               idle / (rank_half_lives * h);
    }

    // ---- chunk keys: records by content key (a key's bytes are stored once) ----
    auto key_hash_of() const {
        return [this](std::uint32_t id) { return trie::mix64(records_[id].key); };
    }
    /// Whether a live record other than `except` names key.
    bool key_stored(std::uint64_t key, std::uint32_t except = no_record) const {
        return keys_.find(trie::mix64(key), [&](std::uint32_t id) { return id != except && records_[id].key == key; }) !=
               trie::id_table::empty;
    }
    template <class F>
    void for_each_distinct_key(F&& f) const {
        for (std::uint32_t i = 0; i < records_.size(); ++i) {
            const auto& r = records_[i];
            if (live(r) && keys_.find(trie::mix64(r.key), [&](std::uint32_t id) { return records_[id].key == r.key; }) == i) f(r.key);
        }
    }

    // ---- eviction candidates: ranked when a put exceeds the budget (a heap for that eviction only) ----
    bool candidate(std::uint32_t id) const {
        const auto& r = records_[id];
        return live(r) && r.dependents == 0 && trie_.removable(r.node);
    }
    /// A record that became a candidate during an eviction (its last child or dependent went).
    void push_candidate(std::uint32_t id) {
        if (!evicting_) return;
        heap_.push_back({rank(records_[id]), id});
        std::push_heap(heap_.begin(), heap_.end(), std::greater<>{});
    }
    /// The lowest-ranked record that can be evicted now, or no_record.
    std::uint32_t pop_victim() {
        while (!heap_.empty()) {
            std::pop_heap(heap_.begin(), heap_.end(), std::greater<>{});
            const heap_entry e = heap_.back();
            heap_.pop_back();
            // Nothing is used during an eviction, so ranks hold; an entry is void once its record
            // was freed (or pushed twice).
            if (candidate(e.record)) return e.record;
        }
        return no_record;
    }

    /// The readable prefix of tokens and the chunks that hold it.
    plan readable(std::span<const std::int32_t> tokens) const {
        plan p;
        const trie::point at = trie_.longest_prefix(tokens);
        const std::uint64_t C = options_.chunk_tokens;
        std::uint64_t covered = 0;
        // Whole chunks on the path: nodes at every multiple of C up to the match.
        while (covered + C <= at.depth) {
            const trie::node_id n = trie_.ancestor_at(at.node, covered + C);
            if (n == trie::no_node || trie_.value(n) == trie::no_value) break;
            p.pieces.push_back({trie_.value(n), C, n});
            covered += C;
        }
        if (covered + C <= at.depth || covered == at.depth) {  // stopped early, or nothing left
            p.tokens = covered;
            return p;
        }
        // The rest [covered, at.depth): the first chunk at or below the match point starts at `covered`
        // (no chunk boundary lies between) and its first tokens are the query's.
        trie::node_id n = at.node;
        while (trie_.value(n) == trie::no_value) {
            trie::node_id next = trie::no_node;
            trie_.for_each_child(n, [&](trie::node_id c) {
                if (next == trie::no_node) next = c;
            });
            if (next == trie::no_node) break;
            n = next;
        }
        const std::uint64_t id = trie_.value(n);
        if (id != trie::no_value && begin_of(records_[id]) == covered) {
            p.pieces.push_back({id, at.depth - covered, n});
            covered = at.depth;
        }
        p.tokens = covered;
        return p;
    }

    /// Stores record id's chunk again from a session that holds its tokens (the ChunkStore lost it:
    /// a wiped or restarted server, a deleted file). A difference chunk is stored plain (its
    /// reference may be gone too). Returns 1.
    std::uint64_t repair(std::uint32_t id, const kv_cache_view& cache, std::span<const std::int32_t> tokens) {
        chunk_record& r = records_[id];
        const std::uint64_t begin = begin_of(r), end = end_of(r);
        chunk_input in{&cache, begin, end, tokens.subspan(begin, end - begin), {}, resources_, nullptr};
        const byte_vector payload = codec_.encode(in);
        require_usage(payload.size() < no_record, "prefix_store: a chunk payload of 4 GiB or more");
        const std::uint64_t key = chunk_key(payload);
        // Chunks coded against this one need its old rows: repaired only with the very same bytes
        // (a plain chunk re-encoded from the same KV); otherwise it stays missing — reading it or a
        // dependent is a store_error, never rows other than those the dependents were coded against.
        if (r.dependents > 0 && (r.ref != no_record || key != r.key)) return 0;
        if (r.ref != no_record) drop_reference(r);
        if (key != r.key) {  // a plain chunk re-encodes to the same bytes; a former difference chunk does not
            keys_.erase(id, key_hash_of());
            if (!key_stored(r.key)) stored_bytes_ -= r.bytes;
            if (!key_stored(key)) stored_bytes_ += payload.size();
            r.key = key, r.bytes = static_cast<std::uint32_t>(payload.size());
            keys_.insert(id, key_hash_of());
        }
        chunks_->put(key, payload);
        return 1;
    }

    /// The whole chunk of record id, decoded (its reference first, for a difference chunk).
    chunk_buffer decode_record(std::uint64_t id, unsigned depth = 0) const {
        require_format(depth < 64, "prefix_store: reference chain too long");
        const chunk_record& r = records_[id];
        const auto payload = chunks_->get(r.key);
        if (!payload) throw store_error("prefix_store: chunk " + chunk_key_hex(r.key) + " is missing from the chunk store");
        const std::uint64_t begin = begin_of(r), end = end_of(r);
        const std::vector<std::int32_t> ids = trie_.sequence(r.node, begin);  // the chunk ends at its node
        auto buf = chunk_buffer::for_layout(layout_, end - begin);
        chunk_input in{nullptr, 0, end - begin, ids, {}, resources_, nullptr};
        in.position_base = begin;
        codec_.decode(*payload, in, buf);
        if (r.ref != no_record)
            add_reference(buf, reference_rows(r.ref, shift_of(static_cast<std::uint32_t>(id)), begin, end, depth + 1), value_residuals());
        return buf;
    }

    void decode_into(const piece& pc, chunk_buffer& out) const {
        const std::uint64_t begin = begin_of(records_[pc.record]);
        const chunk_buffer buf = decode_record(pc.record);
        // Copy tokens [0, take) of every (layer, kind, head) row block to out at r.begin.
        const std::uint64_t row = layout_.head_dim * dtype_size(layout_.type);
        for (std::uint32_t l = 0; l < layout_.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto src = buf.block(l, kind);
                const auto dst = out.block(l, kind);
                for (std::uint32_t h = 0; h < layout_.kv_heads; ++h)
                    std::memcpy(dst.data() + (h * out.layout.tokens + begin) * row, src.data() + h * buf.layout.tokens * row,
                                pc.take * row);
            }
    }

    // ---- near-prefix reuse ----

    /// Element-wise integer operation on the words of one element (1, 2 or 4 bytes), modulo its width.
    template <bool Subtract>
    static void combine(std::uint8_t* dst, const std::uint8_t* a, const std::uint8_t* b, std::size_t elements, std::size_t width) {
        auto run = [&]<class U>(U) {
            for (std::size_t i = 0; i < elements; ++i) {
                U x, y;
                std::memcpy(&x, a + i * sizeof(U), sizeof(U));
                std::memcpy(&y, b + i * sizeof(U), sizeof(U));
                const U z = static_cast<U>(Subtract ? U(x - y) : U(x + y));
                std::memcpy(dst + i * sizeof(U), &z, sizeof(U));
            }
        };
        if (width == 1) run(std::uint8_t{});
        else if (width == 2) run(std::uint16_t{});
        else if (width == 4) run(std::uint32_t{});
        else run(std::uint64_t{});
    }

    bool value_residuals() const { return options_.near_prefix_residual == prefix_store_options::residual::value; }

    /// Elements a − b (value residuals: as floats, rounded to the element type) or a + b, into dst.
    /// False when a difference does not fit the element type (not finite, or saturated: off by more
    /// than 1/8 of itself, beyond any rounding of bf16, f16 or fp8).
    template <bool Subtract>
    bool combine_values(std::uint8_t* dst, const std::uint8_t* a, const std::uint8_t* b, std::size_t elements) const {
        bool fits = true;
        for (std::size_t i = 0; i < elements; ++i) {
            const float x = load_as_float(a, layout_.type, i), y = load_as_float(b, layout_.type, i), z = Subtract ? x - y : x + y;
            store_from_float(dst, layout_.type, i, z);
            const float back = load_as_float(dst, layout_.type, i);
            fits = fits && std::isfinite(back) && std::abs(back - z) <= 0.125f * std::abs(z);
        }
        return fits;
    }

    /// Tokens [begin, end) of cache minus the first end − begin tokens of the reference chunk.
    /// representable: set false when a value residual does not fit the element type.
    chunk_buffer difference(const kv_cache_view& cache, std::uint64_t begin, std::uint64_t end, const chunk_buffer& reference,
                            bool& representable) const {
        auto diff = chunk_buffer::for_layout(layout_, end - begin);
        const std::size_t width = dtype_size(layout_.type), row = layout_.head_dim * width;
        const bool values = value_residuals();
        std::vector<std::uint8_t> mine(row);
        for (std::uint32_t l = 0; l < layout_.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto& t = kind == kv_kind::key ? cache.keys[l] : cache.values[l];
                const auto ref = reference.block(l, kind);
                const auto dst = diff.block(l, kind);
                for (std::uint32_t h = 0; h < layout_.kv_heads; ++h)
                    for (std::uint64_t i = 0; i < end - begin; ++i) {
                        for (std::uint32_t c = 0; c < layout_.head_dim; ++c) std::memcpy(mine.data() + c * width, t.element(h, begin + i, c), width);
                        std::uint8_t* d = dst.data() + (h * (end - begin) + i) * row;
                        const std::uint8_t* r = ref.data() + (h * reference.layout.tokens + i) * row;
                        if (values) representable = combine_values<true>(d, mine.data(), r, layout_.head_dim) && representable;
                        else combine<true>(d, mine.data(), r, layout_.head_dim, width);
                    }
            }
        return diff;
    }

    /// buf (a decoded difference chunk of record id) += the first buf-tokens of the reference chunk.
    void add_reference(chunk_buffer& buf, const chunk_buffer& reference, bool values) const {
        require_format(reference.layout.tokens >= buf.layout.tokens, "prefix_store: reference chunk shorter than its dependent");
        const std::size_t width = dtype_size(layout_.type), row = layout_.head_dim * width;
        for (std::uint32_t l = 0; l < layout_.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto ref = reference.block(l, kind);
                const auto dst = buf.block(l, kind);
                for (std::uint32_t h = 0; h < layout_.kv_heads; ++h) {
                    std::uint8_t* d = dst.data() + h * buf.layout.tokens * row;
                    const std::uint8_t* r = ref.data() + h * reference.layout.tokens * row;
                    if (values) (void)combine_values<false>(d, d, r, buf.layout.tokens * layout_.head_dim);
                    else combine<false>(d, d, r, buf.layout.tokens * layout_.head_dim, width);
                }
            }
    }

    struct neighbour_match {
        trie::node_id leaf = trie::no_node;
        std::int64_t shift = 0;  // the new session's token at p continues the neighbour's at p − shift
        std::uint64_t until = 0;  // the two agree (after the gap) on the new session's tokens up to here
    };

    /// A stored session (its leaf) that agrees with tokens except in at most near_prefix_gap
    /// tokens right after the shared prefix and then continues with the same tokens — at the same
    /// positions, or (with key_rotation) shifted when the two gaps differ in length — for a run of
    /// at least max(8, chunk_tokens / 2) tokens (or to the end of the shorter of the two): a date
    /// line that changes and the same tool schemas after it, whatever follows them. Among those,
    /// the nearest by the trie metric: the most shared probability mass (Σ surprisal, in the
    /// neighbour's own context, of the run's tokens), then the longest run, then the smallest
    /// shift. none when none (or the option is off). At most 16 stored sessions below the
    /// divergence point are examined.
    neighbour_match find_neighbour(std::span<const std::int32_t> tokens, const trie::point& at) const {
        const std::uint64_t gap = options_.near_prefix_gap, d = at.depth, T = tokens.size();
        if (gap == 0 || d >= T) return {};
        const std::uint64_t max_other = options_.key_rotation ? gap : 0;  // the neighbour's gap minus ours
        neighbour_match best;
        std::uint64_t best_units = 0, best_length = 0, best_abs = 0;
        std::vector<trie::node_id> stack{at.node};
        for (int examined = 0; !stack.empty() && examined < 16;) {
            const trie::node_id n = stack.back();
            stack.pop_back();
            if (trie_.child_count(n) > 0) {
                trie_.for_each_child(n, [&](trie::node_id c) { stack.push_back(c); });
                continue;
            }
            ++examined;
            const std::uint64_t depth = trie_.depth(n);
            if (depth <= d) continue;
            const std::vector<std::int32_t> theirs = trie_.sequence(n, d);  // tokens [d, depth)
            for (std::uint64_t g_new = 0; g_new <= gap; ++g_new)
                for (std::uint64_t g_old = 0; g_old <= gap; ++g_old) {
                    if (g_new != g_old ? max_other == 0 : g_new != gap) continue;  // same count: the old rule, gap = g
                    const std::uint64_t a = d + g_new, b = d + g_old;  // continuation starts: ours, theirs
                    if (a >= T || b >= depth) continue;
                    const std::uint64_t most = std::min(T - a, depth - b);  // aligned to the end of the shorter
                    std::uint64_t length = 0;                               // the run of equal tokens
                    while (length < most && tokens[a + length] == theirs[b - d + length]) ++length;
                    if (length < std::min<std::uint64_t>(most, std::max<std::uint64_t>(8, options_.chunk_tokens / 2))) continue;
                    const std::uint64_t units = trie_.prefix_units_at(n, b + length) - trie_.prefix_units_at(n, b);
                    const std::int64_t shift = std::int64_t(g_new) - std::int64_t(g_old);
                    const std::uint64_t abs_shift = std::uint64_t(shift < 0 ? -shift : shift);
                    if (best.leaf == trie::no_node || units > best_units || (units == best_units && length > best_length) ||
                        (units == best_units && length == best_length && abs_shift < best_abs))
                        best = {n, shift, a + length}, best_units = units, best_length = length, best_abs = abs_shift;
                }
        }
        return best;
    }

    /// The neighbour's record to code [begin, end) against: unshifted, its chunk that starts at
    /// begin and holds at least [begin, end); shifted by s, its chunk that holds row end − 1 − s
    /// (rows [begin − s, end − s) come from it and the whole chunk before it). no_record if none.
    std::uint32_t reference_for(const neighbour_match& nb, std::uint64_t begin, std::uint64_t end) const {
        std::uint32_t found = no_record;
        if (nb.shift == 0) {
            for (trie::node_id m = nb.leaf; m != trie::no_node && trie_.depth(m) > begin; m = trie_.parent(m)) {
                const std::uint64_t id = trie_.value(m);
                if (id != trie::no_value && begin_of(records_[id]) == begin && end_of(records_[id]) >= end) found = static_cast<std::uint32_t>(id);
            }
            return found;
        }
        if (std::int64_t(begin) < nb.shift || std::int64_t(end) - nb.shift > std::int64_t(trie_.depth(nb.leaf))) return no_record;
        const std::uint64_t first = std::uint64_t(std::int64_t(begin) - nb.shift), last = std::uint64_t(std::int64_t(end) - nb.shift) - 1;
        for (trie::node_id m = nb.leaf; m != trie::no_node && trie_.depth(m) > last; m = trie_.parent(m)) {
            const std::uint64_t id = trie_.value(m);
            if (id != trie::no_value && begin_of(records_[id]) <= last) found = static_cast<std::uint32_t>(id);
        }
        if (found != no_record && first < begin_of(records_[found]) && previous_chunk(found) == no_record) return no_record;
        return found;
    }
    /// The whole chunk that ends where record id's chunk starts, on its path (no_record if none).
    std::uint32_t previous_chunk(std::uint32_t id) const {
        const std::uint64_t b = begin_of(records_[id]);
        if (b == 0) return no_record;
        const trie::node_id m = trie_.ancestor_at(records_[id].node, b);
        if (m == trie::no_node || trie_.value(m) == trie::no_value) return no_record;
        const auto prev = static_cast<std::uint32_t>(trie_.value(m));
        return begin_of(records_[prev]) + options_.chunk_tokens == b ? prev : no_record;
    }
    /// A hash of what key_rotation does to a fixed probe row at shifts 1, −3 and 1000 (0 when
    /// unset): an index with shifted chunks loads only into a store whose rotation gives the same bits.
    std::uint64_t rotation_fingerprint() const {
        if (!options_.key_rotation) return 0;
        std::uint64_t h = 1;
        std::vector<float> row(layout_.head_dim);
        for (std::int64_t shift : {1, -3, 1000}) {
            for (std::uint32_t c = 0; c < layout_.head_dim; ++c) row[c] = 0.25f + float(c % 7) - float(c % 3) * 0.5f;
            options_.key_rotation(row, shift);
            h = content_hash64({reinterpret_cast<const std::uint8_t*>(row.data()), row.size() * sizeof(float)}, h);
        }
        return h == 0 ? 1 : h;
    }
    std::int64_t shift_of(std::uint32_t id) const {
        const auto it = shifts_.find(id);
        return it == shifts_.end() ? 0 : it->second;
    }

    /// The reference rows for [begin, end) of a dependent: rows [begin − shift, end − shift) of the
    /// neighbour's chunks (record ref and, when they start before it, the chunk before it), keys
    /// rotated by shift positions (key_rotation) and rounded back to the element type.
    chunk_buffer reference_rows(std::uint32_t ref, std::int64_t shift, std::uint64_t begin, std::uint64_t end, unsigned depth = 0) const {
        if (shift == 0) return decode_record(ref, depth);
        require_format(bool(options_.key_rotation), "prefix_store: a shifted near-prefix chunk needs options.key_rotation");
        const std::uint64_t first = std::uint64_t(std::int64_t(begin) - shift), n = end - begin;
        const std::uint64_t ref_begin = begin_of(records_[ref]);
        const chunk_buffer last = decode_record(ref, depth);
        chunk_buffer before;
        if (first < ref_begin) {
            const std::uint32_t prev = previous_chunk(ref);
            require_format(prev != no_record, "prefix_store: the chunk before a shifted reference is gone");
            before = decode_record(prev, depth);
        }
        auto out = chunk_buffer::for_layout(layout_, n);
        const std::size_t width = dtype_size(layout_.type), row = layout_.head_dim * width;
        std::vector<float> f(layout_.head_dim);
        for (std::uint32_t l = 0; l < layout_.layers; ++l)
            for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
                const auto dst = out.block(l, kind);
                for (std::uint32_t h = 0; h < layout_.kv_heads; ++h)
                    for (std::uint64_t i = 0; i < n; ++i) {
                        const std::uint64_t p = first + i;  // the neighbour's position
                        const chunk_buffer& src = p < ref_begin ? before : last;
                        const std::uint64_t at = p - (p < ref_begin ? ref_begin - options_.chunk_tokens : ref_begin);
                        require_format(at < src.layout.tokens, "prefix_store: a shifted reference row outside its chunk");
                        const std::uint8_t* from = src.block(l, kind).data() + (h * src.layout.tokens + at) * row;
                        std::uint8_t* to = dst.data() + (h * n + i) * row;
                        if (kind == kv_kind::value) {
                            std::memcpy(to, from, row);
                            continue;
                        }
                        for (std::uint32_t c = 0; c < layout_.head_dim; ++c) f[c] = load_as_float(from, layout_.type, c);
                        options_.key_rotation(f, shift);
                        for (std::uint32_t c = 0; c < layout_.head_dim; ++c) store_from_float(to, layout_.type, c, f[c]);
                    }
            }
        return out;
    }

    /// After storing chunk [begin, end) at the session's path: a shorter chunk with the same start
    /// on that path (a previous turn's last chunk) is covered by it; drop it.
    void drop_shadowed(trie::node_id leaf, std::uint64_t begin, std::uint64_t end) {
        for (trie::node_id n = trie_.parent(trie_.ancestor_at(leaf, end)); n != trie::no_node && trie_.depth(n) > begin;
             n = trie_.parent(n)) {
            const std::uint64_t id = trie_.value(n);
            if (id == trie::no_value || begin_of(records_[id]) != begin || records_[id].dependents > 0) continue;
            release_record(static_cast<std::uint32_t>(id));
            trie_.set_value(n, trie::no_value);
        }
    }
    void drop_reference(chunk_record& r) {
        if (--records_[r.ref].dependents == 0) push_candidate(r.ref);
        r.ref = no_record;
        shifts_.erase(static_cast<std::uint32_t>(&r - records_.data()));
    }
    void release_record(std::uint32_t id) {
        chunk_record& r = records_[id];
        if (r.ref != no_record) drop_reference(r);
        keys_.erase(id, key_hash_of());
        if (!key_stored(r.key)) {
            chunks_->remove(r.key);
            stored_bytes_ -= r.bytes;
        }
        r.node = trie::no_node;
        shifts_.erase(id);
        free_records_.push_back(id);
    }

    /// Evicts leaf chunks, lowest rank first, until the budget holds; returns how many. Every
    /// candidate (a leaf chunk no difference chunk needs) is ranked once into a heap (one pass over
    /// the records), chunks that become candidates on the way join it: O(log n) a victim.
    std::uint64_t evict_to_budget() {
        if (stored_bytes_ <= options_.budget_bytes) return 0;
        heap_.clear();
        for (std::uint32_t i = 0; i < records_.size(); ++i)
            if (candidate(i)) heap_.push_back({rank(records_[i]), i});
        std::make_heap(heap_.begin(), heap_.end(), std::greater<>{});
        evicting_ = true;
        struct done_evicting {  // also when a ChunkStore's remove throws
            prefix_store* s;
            ~done_evicting() { s->evicting_ = false, s->heap_ = {}; }
        } guard{this};
        std::uint64_t evicted = 0;
        while (stored_bytes_ > options_.budget_bytes) {
            const std::uint32_t victim = pop_victim();
            if (victim == no_record) break;  // everything left is in use or needed
            remove_leaf_chain(records_[victim].node);
            ++evicted;
        }
        return evicted;  // the guard drops the scratch heap: not kept between puts
    }
    /// Removes a leaf and its chunk, then any value-less leaf left above it; the first ancestor
    /// with a chunk that is a leaf now becomes a candidate.
    void remove_leaf_chain(trie::node_id n) {
        while (n != trie::no_node && n != trie::plt_trie::root && trie_.removable(n)) {
            if (const auto id = trie_.value(n); id != trie::no_value) release_record(static_cast<std::uint32_t>(id));
            const trie::node_id parent = trie_.remove_leaf(n);
            if (parent == trie::no_node) break;
            if (const auto id = trie_.value(parent); id != trie::no_value) {
                push_candidate(static_cast<std::uint32_t>(id));
                break;
            }
            n = parent;
        }
    }

    Store* chunks_;
    any_chunk_codec codec_;
    kv_layout layout_;
    prefix_store_options options_;
    const resource_provider* resources_;
    mutable writer_priority_mutex mutex_;  // a waiting put is not starved by a stream of reads
    mutable std::mutex stats_mutex_;  // use statistics written by readers (note_use), read by save_index
    trie::plt_trie trie_;
    std::vector<chunk_record> records_;
    std::vector<std::uint32_t> free_records_;
    trie::id_table keys_;            // live records by chunk key
    std::unordered_map<std::uint32_t, std::int32_t> shifts_;  // record -> position shift of its reference (≠ 0 only)
    std::vector<heap_entry> heap_;   // during evict_to_budget(): the candidates, min-heap by rank
    bool evicting_ = false;
    std::uint64_t stored_bytes_ = 0;
    std::uint64_t clock_ = 0;  // store operations so far
};

}  // namespace seqkv

SEQKV_FP_STRICT_END
