// The probabilistic language trie (PLT): a radix trie over token ids whose edges carry each
// token's surprisal under the model, so every point of the trie knows log2 P(prefix).
//
//   trie::plt_trie t;
//   auto end = t.insert(tokens, nll_nats);          // node ending exactly at tokens.size()
//   auto m = t.longest_prefix(other_tokens);         // deepest point shared with anything stored
//   double bits = t.shared_bits(m);                  // -log2 P(s ∧ s'), the paper's trie metric
//
// Storage (the index's bytes per stored token, docs/PREFIX_STORE.md): 40-byte node records in one
// array (slots of removed nodes reused); edge labels are slices of one token pool — u16 per token,
// ids outside [0, 65535) as an escape code plus an (index, id) entry in a sorted side list — with a
// parallel pool of u8 surprisal codes. A node finds its children through its sibling list; the
// children of a node with more than wide_fanout of them are also in one open-addressing table of
// node ids keyed by (parent, first token). A node ends where a stored sequence ends, where
// sequences diverge, or where the caller asked for a boundary (split_at: the prefix store puts one
// at every chunk end).
//
// Surprisal is integer, in units of 1/256 bit, on a grid that one byte per token codes
// (surprisal_code): steps of 1/16 bit below 8 bits, 1/8 bit below 16 bits, 1/4 bit up to 31.5 bits
// (higher values clamp to 31.5 bits), and one code for "no probability" (NaN, or ≥ 256 bits:
// 65535 units). to_units() rounds to the nearest grid point, so sums are exact integers and the
// metric and everything ranked by it are identical on every machine.
//
// Concurrency: none inside; plt_trie is a plain value. shared_trie (trie/shared_trie.hpp) adds
// the many-readers / one-writer model.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "seqkv/core/error.hpp"
#include "seqkv/trie/id_table.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::trie {

/// Surprisal of one token in 1/256 bit, as the trie sums it.
using surprisal_units = std::uint16_t;
inline constexpr double units_per_bit = 256.0;

/// The one-byte code of a surprisal grid point (see the header comment): code → units.
inline constexpr surprisal_units code_units(std::uint8_t c) {
    if (c < 128) return static_cast<surprisal_units>(c * 16);                 // [0, 8) bits, 1/16 bit
    if (c < 192) return static_cast<surprisal_units>(2048 + (c - 128) * 32);  // [8, 16) bits, 1/8 bit
    if (c < 255) return static_cast<surprisal_units>(4096 + (c - 192) * 64);  // [16, 31.5] bits, 1/4 bit
    return 65535;                                                             // no probability
}
/// The code of the grid point nearest to u units (ties up); u ≥ 65535 → the "no probability" code.
inline constexpr std::uint8_t surprisal_code(std::uint32_t u) {
    if (u >= 65535) return 255;
    if (u < 2048) return static_cast<std::uint8_t>((u + 8) / 16);
    if (u < 4096) return static_cast<std::uint8_t>(128 + (u - 2048 + 16) / 32);
    return static_cast<std::uint8_t>(std::min<std::uint32_t>(192 + (u - 4096 + 32) / 64, 254));
}

/// Surprisal units of a token whose −ln p is nll_nats, on the stored grid (negative → 0, NaN or
/// ≥ 256 bits → 65535, between 31.5 and 256 bits → 31.5 bits).
inline surprisal_units to_units(float nll_nats) {
    const double bits = double(nll_nats) / std::log(2.0);
    if (!(bits > 0)) return bits == 0 || bits < 0 ? 0 : 65535;  // negative (rounding) → 0, NaN → max
    const double u = std::floor(bits * units_per_bit + 0.5);
    return code_units(surprisal_code(u >= 65535.0 ? 65535u : static_cast<std::uint32_t>(u)));
}

using node_id = std::uint32_t;
inline constexpr node_id no_node = std::numeric_limits<node_id>::max();
inline constexpr std::uint64_t no_value = std::numeric_limits<std::uint64_t>::max();

/// A point of the trie: inside the edge into `node`, after `offset` of its label's tokens
/// (offset == label length: at the node itself). depth = tokens from the root.
struct point {
    node_id node = 0;
    std::uint32_t offset = 0;
    std::uint64_t depth = 0;
    std::uint64_t prefix_units = 0;  // Σ surprisal units of the tokens [0, depth)
};

/// Token ids at two bytes each: an id in [0, 65535) is its own code; any other id is the escape
/// code plus an (index, id) entry in a list sorted by index (appends keep it sorted).
class token_pool {
public:
    static constexpr std::uint16_t escape = 0xFFFF;
    static std::uint16_t code_of(std::int32_t id) { return id >= 0 && id < escape ? static_cast<std::uint16_t>(id) : escape; }

    std::size_t size() const { return codes_.size(); }
    std::int32_t operator[](std::size_t i) const {
        const std::uint16_t c = codes_[i];
        return c != escape ? std::int32_t(c) : escaped(i);
    }
    /// Whether token i is id (code first; the side list only for escaped ids).
    bool matches(std::size_t i, std::int32_t id) const {
        const std::uint16_t c = codes_[i];
        return c == code_of(id) && (c != escape || escaped(i) == id);
    }
    void push_back(std::int32_t id) {
        const std::uint16_t c = code_of(id);
        if (c == escape) escapes_.push_back({static_cast<std::uint32_t>(codes_.size()), id});
        codes_.push_back(c);
    }
    void reserve(std::size_t n) { codes_.reserve(n); }
    void shrink_to_fit() {
        codes_.shrink_to_fit();
        escapes_.shrink_to_fit();
    }
    std::size_t memory_bytes() const {
        return codes_.capacity() * sizeof(std::uint16_t) + escapes_.capacity() * sizeof(escapes_[0]);
    }
    std::size_t escaped_count() const { return escapes_.size(); }

private:
    std::int32_t escaped(std::size_t i) const {
        const auto it = std::lower_bound(escapes_.begin(), escapes_.end(), i, [](const auto& e, std::size_t k) { return e.first < k; });
        return it->second;  // an escape code always has its entry
    }
    std::vector<std::uint16_t> codes_;
    std::vector<std::pair<std::uint32_t, std::int32_t>> escapes_;
};

class plt_trie {
public:
    static constexpr node_id root = 0;
    /// A node with more children than this also finds them through the shared child table.
    static constexpr std::uint32_t wide_fanout = 8;

    /// Surprisal assumed for a token stored without nll (8 bits: the metric then ranks by length);
    /// rounded to the grid.
    explicit plt_trie(surprisal_units default_units = 8 * 256) : default_code_(surprisal_code(default_units)) {
        nodes_.push_back(node_record{});
        nodes_[0].parent = no_node;
    }

    // ---- queries ----

    /// The deepest point of the trie on the path of `tokens` (depth = the longest stored prefix).
    point longest_prefix(std::span<const std::int32_t> tokens) const {
        point p{root, 0, 0, 0};
        std::uint64_t i = 0;
        node_id n = root;
        while (i < tokens.size()) {
            const node_id c = child(n, tokens[i]);
            if (c == no_node) break;
            const node_record& r = nodes_[c];
            const std::uint64_t length = r.depth - nodes_[n].depth;
            const std::uint64_t room = std::min<std::uint64_t>(length, tokens.size() - i);
            std::uint32_t k = 1;  // the first token matched through the child lookup
            while (k < room && pool_.matches(r.label_begin + k, tokens[i + k])) ++k;
            i += k;
            if (k < length) return partial(c, k);
            n = c;
        }
        p.node = n;
        p.offset = label_length(n);
        p.depth = nodes_[n].depth;
        p.prefix_units = nodes_[n].prefix_units;
        return p;
    }

    /// −log2 P(prefix up to p) in bits: the paper's d(s, s') when p = longest_prefix(s) on the path of s'.
    static double shared_bits(const point& p) { return double(p.prefix_units) / units_per_bit; }
    /// −log2 P(prefix ending at node n) in bits.
    double prefix_bits(node_id n) const { return double(record(n).prefix_units) / units_per_bit; }
    /// Σ surprisal units of the tokens [0, depth(n)).
    std::uint64_t prefix_units(node_id n) const { return record(n).prefix_units; }

    /// Σ surprisal units of the tokens [0, depth) on the path from the root to n (depth ≤ depth(n)).
    std::uint64_t prefix_units_at(node_id n, std::uint64_t depth) const {
        require_usage(depth <= record(n).depth, "plt_trie: depth below the node");
        node_id m = n;
        while (m != root && nodes_[nodes_[m].parent].depth >= depth) m = nodes_[m].parent;
        if (m == root) return 0;
        const node_record& r = nodes_[m];
        const std::uint64_t start = nodes_[r.parent].depth;
        std::uint64_t units = nodes_[r.parent].prefix_units;
        for (std::uint64_t k = start; k < depth; ++k) units += code_units(codes_[r.label_begin + (k - start)]);
        return units;
    }

    /// Tokens from the root to the end of node n.
    std::uint64_t depth(node_id n) const { return record(n).depth; }
    node_id parent(node_id n) const { return record(n).parent; }
    std::uint32_t child_count(node_id n) const { return static_cast<std::uint32_t>(record(n).child_count); }
    /// Tokens on the edge into n.
    std::uint32_t label_length(node_id n) const {
        const auto& r = record(n);
        return n == root ? 0 : static_cast<std::uint32_t>(r.depth - nodes_[r.parent].depth);
    }
    /// Token i of the edge label into n.
    std::int32_t label_token(node_id n, std::uint32_t i) const {
        require_usage(i < label_length(n), "plt_trie: label index out of range");
        return pool_[nodes_[n].label_begin + i];
    }
    /// The edge label into n (tokens) and their surprisal units.
    std::vector<std::int32_t> label(node_id n) const {
        const auto& r = record(n);
        std::vector<std::int32_t> out(label_length(n));
        for (std::uint32_t j = 0; j < out.size(); ++j) out[j] = pool_[r.label_begin + j];
        return out;
    }
    std::vector<surprisal_units> label_units(node_id n) const {
        const auto& r = record(n);
        std::vector<surprisal_units> out(label_length(n));
        for (std::uint32_t j = 0; j < out.size(); ++j) out[j] = code_units(codes_[r.label_begin + j]);
        return out;
    }
    /// Tokens [begin, depth(n)) of the sequence that ends at n (begin 0: the whole sequence); only
    /// the labels that overlap the range are visited.
    std::vector<std::int32_t> sequence(node_id n, std::uint64_t begin = 0) const {
        const std::uint64_t end = record(n).depth;
        require_usage(begin <= end, "plt_trie: sequence range starts below the node");
        std::vector<std::int32_t> out(end - begin);
        for (node_id m = n; m != root && nodes_[m].depth > begin; m = nodes_[m].parent) {
            const std::uint64_t start = nodes_[nodes_[m].parent].depth, from = std::max(start, begin);
            for (std::uint64_t k = from; k < nodes_[m].depth; ++k) out[k - begin] = pool_[nodes_[m].label_begin + (k - start)];
        }
        return out;
    }
    /// The node on the path from the root to n that ends at `depth` (no_node if none ends there).
    node_id ancestor_at(node_id n, std::uint64_t depth) const {
        for (node_id m = n; m != no_node; m = nodes_[m].parent) {
            if (nodes_[m].depth == depth) return m;
            if (nodes_[m].depth < depth) return no_node;
        }
        return no_node;
    }
    /// Children of n (unordered).
    template <class F>
    void for_each_child(node_id n, F&& f) const {
        for (node_id c = record(n).first_child; c != no_node; c = nodes_[c].next_sibling) f(c);
    }

    // ---- per-node data the store keeps ----
    /// A value below 2^32 − 1, or no_value.
    std::uint64_t value(node_id n) const {
        const std::uint32_t v = record(n).value;
        return v == no_value32 ? no_value : v;
    }
    void set_value(node_id n, std::uint64_t v) {
        require_usage(v == no_value || v < no_value32, "plt_trie: node values are below 2^32 - 1");
        record(n).value = v == no_value ? no_value32 : static_cast<std::uint32_t>(v);
    }
    /// References (sessions reading through n) and pins: a node with either, and its ancestors,
    /// is never removed.
    void acquire(node_id n) {
        auto& r = record(n);
        require_usage(r.refs < std::numeric_limits<std::uint32_t>::max(), "plt_trie: too many references");
        ++r.refs;
    }
    void release(node_id n) {
        auto& r = record(n);
        require_usage(r.refs > 0, "plt_trie: release without acquire");
        --r.refs;
    }
    void pin(node_id n, bool pinned) { record(n).pinned = pinned; }
    std::uint32_t refs(node_id n) const { return record(n).refs; }
    bool pinned(node_id n) const { return record(n).pinned; }
    bool live(node_id n) const { return n < nodes_.size() && nodes_[n].live; }

    // ---- updates ----

    /// Stores `tokens` (with their −ln p in nats; empty: default surprisal) and returns the node
    /// that ends exactly at tokens.size(), splitting an edge or adding one as needed. A prefix
    /// already stored gains nothing; its surprisals are kept (first writer wins).
    node_id insert(std::span<const std::int32_t> tokens, std::span<const float> nll_nats = {}) {
        require_usage(nll_nats.empty() || nll_nats.size() == tokens.size(), "plt_trie: one nll per token");
        require_usage(tokens.size() < max_depth, "plt_trie: sequence too long");
        const point p = longest_prefix(tokens);
        node_id n = materialize(p);
        if (p.depth == tokens.size()) return n;
        // A new leaf for the rest.
        const std::uint64_t rest = tokens.size() - p.depth;
        require_usage(pool_.size() + rest < std::numeric_limits<std::uint32_t>::max(), "plt_trie: token pool full");
        const auto begin = static_cast<std::uint32_t>(pool_.size());
        std::uint64_t units = nodes_[n].prefix_units;
        for (std::uint64_t i = p.depth; i < tokens.size(); ++i) {
            pool_.push_back(tokens[i]);
            const std::uint8_t c = nll_nats.empty() ? default_code_ : surprisal_code(to_units(nll_nats[i]));
            codes_.push_back(c);
            units += code_units(c);
        }
        const node_id leaf = new_node();
        node_record& r = nodes_[leaf];
        r.parent = n;
        r.label_begin = begin;
        r.depth = tokens.size();
        r.prefix_units = units;
        link_child(n, leaf);
        live_tokens_ += rest;
        return leaf;
    }

    /// Makes `p` a node (splitting its edge when it lies inside one) and returns it.
    node_id materialize(const point& p) {
        if (p.offset == label_length(p.node)) return p.node;
        return split(p.node, p.offset);
    }

    /// The node ending at `depth` on the path from the root to n (splitting an edge if needed).
    node_id split_at(node_id n, std::uint64_t depth) {
        require_usage(depth <= record(n).depth, "plt_trie: split below the node");
        node_id m = n;
        while (nodes_[m].parent != no_node && nodes_[nodes_[m].parent].depth >= depth) m = nodes_[m].parent;
        if (nodes_[m].depth == depth) return m;
        return split(m, static_cast<std::uint32_t>(depth - nodes_[nodes_[m].parent].depth));
    }

    /// Removes leaf n (no children, no references, not pinned). A parent left with one child, no
    /// value, no references and no pin is merged into that child (and no_node is returned);
    /// otherwise the parent is returned (it may now be a removable leaf).
    node_id remove_leaf(node_id n) {
        node_record& r = record(n);
        require_usage(n != root && r.child_count == 0 && r.refs == 0 && !r.pinned, "plt_trie: only an unused leaf can be removed");
        const node_id parent = r.parent;
        const std::uint32_t length = label_length(n);
        unlink_child(parent, n);
        dead_tokens_ += length;
        live_tokens_ -= length;
        free_node(n);
        const bool merged = parent != root && merge_if_chain(parent);
        maybe_compact();
        return merged ? no_node : parent;
    }

    /// Nodes that remove_leaf accepts.
    bool removable(node_id n) const {
        const auto& r = record(n);
        return n != root && r.live && r.child_count == 0 && r.refs == 0 && !r.pinned;
    }

    // ---- size ----
    std::size_t node_count() const { return nodes_.size() - free_.size(); }
    /// Tokens on edges (each stored prefix counted once).
    std::uint64_t stored_tokens() const { return live_tokens_; }
    /// Bytes the index holds now (node records, pools, child table), for "bytes per stored token".
    std::size_t memory_bytes() const {
        return nodes_.capacity() * sizeof(node_record) + pool_.memory_bytes() + codes_.capacity() +
               free_.capacity() * sizeof(node_id) + wide_.memory_bytes();
    }
    /// Compacts the pools and releases spare capacity (node ids stay valid).
    void shrink_to_fit() {
        compact();
        nodes_.shrink_to_fit();
        free_.shrink_to_fit();
        pool_.shrink_to_fit();
        codes_.shrink_to_fit();
        rebuild_wide();
    }
    surprisal_units default_units() const { return code_units(default_code_); }

private:
    friend struct trie_codec;  // serialization (trie/serialize.hpp)

    static constexpr std::uint32_t no_value32 = std::numeric_limits<std::uint32_t>::max();
    static constexpr std::uint64_t max_depth = std::uint64_t{1} << 40;
    static constexpr std::uint64_t max_children = (std::uint64_t{1} << 22) - 1;

    struct node_record {
        node_id parent = 0;
        node_id first_child = no_node;
        node_id next_sibling = no_node;
        std::uint32_t label_begin = 0;
        std::uint32_t refs = 0;
        std::uint32_t value = no_value32;
        std::uint64_t depth : 40 = 0;        // label length = depth − parent's depth
        std::uint64_t child_count : 22 = 0;
        std::uint64_t pinned : 1 = 0;
        std::uint64_t live : 1 = 1;
        std::uint64_t prefix_units = 0;
    };
    static_assert(sizeof(node_record) == 40);

    const node_record& record(node_id n) const {
        require_usage(n < nodes_.size() && nodes_[n].live, "plt_trie: no such node");
        return nodes_[n];
    }
    node_record& record(node_id n) {
        require_usage(n < nodes_.size() && nodes_[n].live, "plt_trie: no such node");
        return nodes_[n];
    }
    std::int32_t first_token(node_id c) const { return pool_[nodes_[c].label_begin]; }

    // ---- the child table of wide nodes: (parent, first token) → node ----
    static std::uint64_t child_hash(node_id parent, std::int32_t first) {
        return mix64((std::uint64_t(parent) << 32) | std::uint32_t(first));
    }
    auto child_hash_of() const {
        return [this](node_id c) { return child_hash(nodes_[c].parent, first_token(c)); };
    }
    void rebuild_wide() {
        std::size_t count = 0;
        for (const auto& r : nodes_)
            if (r.live && r.child_count > wide_fanout) count += r.child_count;
        wide_.clear();
        wide_.fit(count, child_hash_of());
        for (node_id n = 0; n < nodes_.size(); ++n)
            if (nodes_[n].live && nodes_[n].child_count > wide_fanout)
                for (node_id c = nodes_[n].first_child; c != no_node; c = nodes_[c].next_sibling) wide_.insert(c, child_hash_of());
    }

    node_id child(node_id n, std::int32_t first) const {
        if (nodes_[n].child_count > wide_fanout)
            return wide_.find(child_hash(n, first), [&](node_id c) { return nodes_[c].parent == n && pool_.matches(nodes_[c].label_begin, first); });
        for (node_id c = nodes_[n].first_child; c != no_node; c = nodes_[c].next_sibling)
            if (pool_.matches(nodes_[c].label_begin, first)) return c;
        return no_node;
    }
    point partial(node_id c, std::uint32_t k) const {
        const node_record& r = nodes_[c];
        point p{c, k, nodes_[r.parent].depth + k, nodes_[r.parent].prefix_units};
        for (std::uint32_t j = 0; j < k; ++j) p.prefix_units += code_units(codes_[r.label_begin + j]);
        return p;
    }
    node_id new_node() {
        if (!free_.empty()) {
            const node_id n = free_.back();
            free_.pop_back();
            nodes_[n] = node_record{};
            return n;
        }
        require_usage(nodes_.size() < no_node, "plt_trie: too many nodes");
        nodes_.push_back(node_record{});
        return static_cast<node_id>(nodes_.size() - 1);
    }
    void free_node(node_id n) {
        nodes_[n].live = false;
        free_.push_back(n);
    }
    /// c's parent, label and depth must be set.
    void link_child(node_id parent, node_id c) {
        require_usage(nodes_[parent].child_count < max_children, "plt_trie: too many children of one node");
        nodes_[c].next_sibling = nodes_[parent].first_child;
        nodes_[parent].first_child = c;
        const auto count = ++nodes_[parent].child_count;
        if (count == wide_fanout + 1) {
            for (node_id k = nodes_[parent].first_child; k != no_node; k = nodes_[k].next_sibling) wide_.insert(k, child_hash_of());
        } else if (count > wide_fanout + 1) {
            wide_.insert(c, child_hash_of());
        }
    }
    /// Before c's parent, label or depth change.
    void unlink_child(node_id parent, node_id c) {
        if (nodes_[parent].child_count > wide_fanout) wide_.erase(c, child_hash_of());
        node_id* link = &nodes_[parent].first_child;
        while (*link != c) link = &nodes_[*link].next_sibling;
        *link = nodes_[c].next_sibling;
        if (--nodes_[parent].child_count == wide_fanout)
            for (node_id k = nodes_[parent].first_child; k != no_node; k = nodes_[k].next_sibling) wide_.erase(k, child_hash_of());
    }
    /// Splits the edge into c after k tokens (0 < k < label length); returns the new upper node.
    node_id split(node_id c, std::uint32_t k) {
        require_usage(k > 0 && k < label_length(c), "plt_trie: split inside the edge only");
        const node_id parent = nodes_[c].parent;
        unlink_child(parent, c);
        const node_id mid = new_node();  // may reallocate nodes_: index, never hold references
        node_record& m = nodes_[mid];
        m.parent = parent;
        m.label_begin = nodes_[c].label_begin;
        m.depth = nodes_[parent].depth + k;
        m.prefix_units = nodes_[parent].prefix_units;
        for (std::uint32_t j = 0; j < k; ++j) m.prefix_units += code_units(codes_[m.label_begin + j]);
        link_child(parent, mid);
        nodes_[c].parent = mid;
        nodes_[c].label_begin += k;
        link_child(mid, c);
        return mid;
    }
    /// Merges n into its only child when n is a bare chain link.
    bool merge_if_chain(node_id n) {
        node_record& r = nodes_[n];
        if (r.child_count != 1 || r.value != no_value32 || r.refs != 0 || r.pinned) return false;
        const node_id c = r.first_child;
        const node_id parent = r.parent;
        // The merged label = n's label + c's label, contiguous in the pool (copied to its end when not).
        const std::uint32_t n_len = label_length(n), c_len = label_length(c);
        unlink_child(parent, n);
        unlink_child(n, c);
        if (nodes_[n].label_begin + n_len != nodes_[c].label_begin) {
            require_usage(pool_.size() + n_len + c_len < std::numeric_limits<std::uint32_t>::max(), "plt_trie: token pool full");
            const auto begin = static_cast<std::uint32_t>(pool_.size());
            for (std::uint32_t j = 0; j < n_len; ++j) append_token(nodes_[n].label_begin + j);
            for (std::uint32_t j = 0; j < c_len; ++j) append_token(nodes_[c].label_begin + j);
            dead_tokens_ += n_len + c_len;
            nodes_[c].label_begin = begin;
        } else {
            nodes_[c].label_begin = nodes_[n].label_begin;
        }
        nodes_[c].parent = parent;
        link_child(parent, c);
        free_node(n);
        return true;
    }
    void append_token(std::uint32_t from) {
        pool_.push_back(pool_[from]);
        codes_.push_back(codes_[from]);
    }
    void maybe_compact() {
        if (dead_tokens_ > 4096 && dead_tokens_ > live_tokens_) compact();
    }
    /// Rewrites the pools with live labels only (node ids unchanged; first tokens unchanged, so the
    /// child table stays valid).
    void compact() {
        if (dead_tokens_ == 0) return;
        token_pool tokens;
        std::vector<std::uint8_t> codes;
        tokens.reserve(live_tokens_);
        codes.reserve(live_tokens_);
        for (node_id n = 1; n < nodes_.size(); ++n) {
            node_record& r = nodes_[n];
            if (!r.live) continue;
            const auto begin = static_cast<std::uint32_t>(tokens.size());
            const std::uint32_t length = label_length(n);
            for (std::uint32_t j = 0; j < length; ++j) tokens.push_back(pool_[r.label_begin + j]);
            codes.insert(codes.end(), codes_.begin() + r.label_begin, codes_.begin() + r.label_begin + length);
            r.label_begin = begin;
        }
        pool_ = std::move(tokens);
        codes_ = std::move(codes);
        dead_tokens_ = 0;
    }

    std::vector<node_record> nodes_;
    std::vector<node_id> free_;
    token_pool pool_;
    std::vector<std::uint8_t> codes_;  // surprisal codes, parallel to pool_
    id_table wide_;                    // the children of wide nodes
    std::uint64_t live_tokens_ = 0, dead_tokens_ = 0;
    std::uint8_t default_code_;
};

}  // namespace seqkv::trie

SEQKV_FP_STRICT_END
