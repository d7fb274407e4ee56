// The probabilistic language trie (PLT): a radix trie over token ids whose edges carry each
// token's surprisal under the model, so every point of the trie knows log2 P(prefix).
//
//   trie::plt_trie t;
//   auto end = t.insert(tokens, nll_nats);          // node ending exactly at tokens.size()
//   auto m = t.longest_prefix(other_tokens);         // deepest point shared with anything stored
//   double bits = t.shared_bits(m);                  // -log2 P(s ∧ s'), the paper's trie metric
//
// Storage (the index's bytes per stored token, docs/STORE.md): node records in one array (slots of
// removed nodes reused), edge labels as slices of one token pool with a parallel pool of per-token
// surprisals (u16, 1/256 bit), children found through one hash map keyed (parent, first token).
// A node ends where a stored sequence ends, where sequences diverge, or where the caller asked
// for a boundary (split_at: the prefix store puts one at every chunk end).
//
// Surprisal is integer (units of 1/256 bit, each token clamped to [0, 65535]): sums are exact, so
// the metric and everything ranked by it are identical on every machine.
//
// Concurrency: none inside; plt_trie is a plain value. concurrent_plt (trie/concurrent.hpp) adds
// the many-readers / one-writer model.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <unordered_map>
#include <vector>

#include "seqkv/core/error.hpp"

namespace seqkv::trie {

/// Surprisal of one token in 1/256 bit, as the trie stores it.
using surprisal_units = std::uint16_t;
inline constexpr double units_per_bit = 256.0;

/// Surprisal units of a token whose −ln p is nll_nats (clamped to the u16 range; NaN → the max).
inline surprisal_units to_units(float nll_nats) {
    const double bits = double(nll_nats) / std::log(2.0);
    if (!(bits > 0)) return bits == 0 || bits < 0 ? 0 : 65535;  // negative (rounding) → 0, NaN → max
    const double u = std::floor(bits * units_per_bit + 0.5);
    return u >= 65535.0 ? 65535 : static_cast<surprisal_units>(u);
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

class plt_trie {
public:
    static constexpr node_id root = 0;

    /// Surprisal assumed for a token stored without nll (8 bits: the metric then ranks by length).
    explicit plt_trie(surprisal_units default_units = 8 * 256) : default_units_(default_units) {
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
            const std::int32_t* label = token_pool_.data() + r.label_begin;
            const std::uint64_t room = std::min<std::uint64_t>(r.label_length, tokens.size() - i);
            std::uint32_t k = 1;  // the first token matched through the child map
            while (k < room && label[k] == tokens[i + k]) ++k;
            i += k;
            if (k < r.label_length) return partial(c, k);
            n = c;
        }
        p.node = n;
        p.offset = nodes_[n].label_length;
        p.depth = nodes_[n].depth;
        p.prefix_units = nodes_[n].prefix_units;
        return p;
    }

    /// −log2 P(prefix up to p) in bits: the paper's d(s, s') when p = longest_prefix(s) on the path of s'.
    static double shared_bits(const point& p) { return double(p.prefix_units) / units_per_bit; }
    /// −log2 P(prefix ending at node n) in bits.
    double prefix_bits(node_id n) const { return double(record(n).prefix_units) / units_per_bit; }

    /// Tokens from the root to the end of node n.
    std::uint64_t depth(node_id n) const { return record(n).depth; }
    node_id parent(node_id n) const { return record(n).parent; }
    std::uint32_t child_count(node_id n) const { return record(n).child_count; }
    /// The edge label into n (tokens) and their surprisal units.
    std::span<const std::int32_t> label(node_id n) const {
        const auto& r = record(n);
        return {token_pool_.data() + r.label_begin, r.label_length};
    }
    std::span<const surprisal_units> label_units(node_id n) const {
        const auto& r = record(n);
        return {units_pool_.data() + r.label_begin, r.label_length};
    }
    /// Tokens [begin, depth(n)) of the sequence that ends at n (begin 0: the whole sequence); only
    /// the labels that overlap the range are visited.
    std::vector<std::int32_t> sequence(node_id n, std::uint64_t begin = 0) const {
        const std::uint64_t end = record(n).depth;
        require_usage(begin <= end, "plt_trie: sequence range starts below the node");
        std::vector<std::int32_t> out(end - begin);
        for (node_id m = n; m != root && nodes_[m].depth > begin; m = nodes_[m].parent) {
            const auto l = label(m);
            const std::uint64_t start = nodes_[m].depth - l.size(), from = std::max(start, begin);
            std::copy(l.begin() + std::ptrdiff_t(from - start), l.end(), out.begin() + std::ptrdiff_t(from - begin));
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
    std::uint64_t value(node_id n) const { return record(n).value; }
    void set_value(node_id n, std::uint64_t v) { record(n).value = v; }
    /// References (sessions reading through n) and pins: a node with either, and its ancestors,
    /// is never removed.
    void acquire(node_id n) { ++record(n).refs; }
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
        require_usage(tokens.size() < (std::uint64_t{1} << 40), "plt_trie: sequence too long");
        const point p = longest_prefix(tokens);
        node_id n = materialize(p);
        if (p.depth == tokens.size()) return n;
        // A new leaf for the rest.
        const std::uint64_t rest = tokens.size() - p.depth;
        require_usage(token_pool_.size() + rest < std::numeric_limits<std::uint32_t>::max(), "plt_trie: token pool full");
        const auto begin = static_cast<std::uint32_t>(token_pool_.size());
        std::uint64_t units = nodes_[n].prefix_units;
        for (std::uint64_t i = p.depth; i < tokens.size(); ++i) {
            token_pool_.push_back(tokens[i]);
            const surprisal_units u = nll_nats.empty() ? default_units_ : to_units(nll_nats[i]);
            units_pool_.push_back(u);
            units += u;
        }
        const node_id leaf = new_node();
        node_record& r = nodes_[leaf];
        r.parent = n;
        r.label_begin = begin;
        r.label_length = static_cast<std::uint32_t>(rest);
        r.depth = tokens.size();
        r.prefix_units = units;
        link_child(n, leaf);
        live_tokens_ += rest;
        return leaf;
    }

    /// Makes `p` a node (splitting its edge when it lies inside one) and returns it.
    node_id materialize(const point& p) {
        if (p.offset == record(p.node).label_length) return p.node;
        return split(p.node, p.offset);
    }

    /// The node ending at `depth` on the path from the root to n (splitting an edge if needed).
    node_id split_at(node_id n, std::uint64_t depth) {
        require_usage(depth <= record(n).depth, "plt_trie: split below the node");
        node_id m = n;
        while (nodes_[m].parent != no_node && nodes_[nodes_[m].parent].depth >= depth) m = nodes_[m].parent;
        if (nodes_[m].depth == depth) return m;
        return split(m, static_cast<std::uint32_t>(depth - (nodes_[m].depth - nodes_[m].label_length)));
    }

    /// Removes leaf n (no children, no references, not pinned). A parent left with one child, no
    /// value, no references and no pin is merged into that child (and no_node is returned);
    /// otherwise the parent is returned (it may now be a removable leaf).
    node_id remove_leaf(node_id n) {
        node_record& r = record(n);
        require_usage(n != root && r.child_count == 0 && r.refs == 0 && !r.pinned, "plt_trie: only an unused leaf can be removed");
        const node_id parent = r.parent;
        unlink_child(parent, n);
        dead_tokens_ += r.label_length;
        live_tokens_ -= r.label_length;
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
    /// Bytes the index holds now (node records, pools, child map), for "bytes per stored token".
    std::size_t memory_bytes() const {
        return nodes_.capacity() * sizeof(node_record) + token_pool_.capacity() * sizeof(std::int32_t) +
               units_pool_.capacity() * sizeof(surprisal_units) + free_.capacity() * sizeof(node_id) +
               children_.bucket_count() * sizeof(void*) + children_.size() * (sizeof(child_key) + sizeof(node_id) + 2 * sizeof(void*));
    }
    /// Compacts the pools and releases spare capacity (node ids stay valid).
    void shrink_to_fit() {
        compact();
        nodes_.shrink_to_fit();
        token_pool_.shrink_to_fit();
        units_pool_.shrink_to_fit();
    }
    surprisal_units default_units() const { return default_units_; }

private:
    friend struct trie_codec;  // serialization (trie/serialize.hpp)

    struct node_record {
        node_id parent = 0;
        node_id first_child = no_node;
        node_id next_sibling = no_node;
        std::uint32_t label_begin = 0;
        std::uint32_t label_length = 0;
        std::uint32_t child_count = 0;
        std::uint32_t refs = 0;
        bool pinned = false;
        bool live = true;
        std::uint64_t depth = 0;
        std::uint64_t prefix_units = 0;
        std::uint64_t value = no_value;
    };
    using child_key = std::uint64_t;
    static child_key key(node_id parent, std::int32_t first) {
        return (std::uint64_t(parent) << 32) | std::uint32_t(first);
    }

    const node_record& record(node_id n) const {
        require_usage(n < nodes_.size() && nodes_[n].live, "plt_trie: no such node");
        return nodes_[n];
    }
    node_record& record(node_id n) {
        require_usage(n < nodes_.size() && nodes_[n].live, "plt_trie: no such node");
        return nodes_[n];
    }
    node_id child(node_id n, std::int32_t first) const {
        const auto it = children_.find(key(n, first));
        return it == children_.end() ? no_node : it->second;
    }
    point partial(node_id c, std::uint32_t k) const {
        const node_record& r = nodes_[c];
        point p{c, k, r.depth - r.label_length + k, nodes_[r.parent].prefix_units};
        for (std::uint32_t j = 0; j < k; ++j) p.prefix_units += units_pool_[r.label_begin + j];
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
    void link_child(node_id parent, node_id c) {
        children_.emplace(key(parent, token_pool_[nodes_[c].label_begin]), c);
        nodes_[c].next_sibling = nodes_[parent].first_child;
        nodes_[parent].first_child = c;
        ++nodes_[parent].child_count;
    }
    void unlink_child(node_id parent, node_id c) {
        children_.erase(key(parent, token_pool_[nodes_[c].label_begin]));
        node_id* link = &nodes_[parent].first_child;
        while (*link != c) link = &nodes_[*link].next_sibling;
        *link = nodes_[c].next_sibling;
        --nodes_[parent].child_count;
    }
    /// Splits the edge into c after k tokens (0 < k < label length); returns the new upper node.
    node_id split(node_id c, std::uint32_t k) {
        require_usage(k > 0 && k < nodes_[c].label_length, "plt_trie: split inside the edge only");
        const node_id parent = nodes_[c].parent;
        unlink_child(parent, c);
        const node_id mid = new_node();  // may reallocate nodes_: index, never hold references
        node_record& m = nodes_[mid];
        m.parent = parent;
        m.label_begin = nodes_[c].label_begin;
        m.label_length = k;
        m.depth = nodes_[c].depth - nodes_[c].label_length + k;
        m.prefix_units = nodes_[parent].prefix_units;
        for (std::uint32_t j = 0; j < k; ++j) m.prefix_units += units_pool_[m.label_begin + j];
        link_child(parent, mid);
        nodes_[c].parent = mid;
        nodes_[c].label_begin += k;
        nodes_[c].label_length -= k;
        link_child(mid, c);
        return mid;
    }
    /// Merges n into its only child when n is a bare chain link.
    bool merge_if_chain(node_id n) {
        node_record& r = nodes_[n];
        if (r.child_count != 1 || r.value != no_value || r.refs != 0 || r.pinned) return false;
        const node_id c = r.first_child;
        const node_id parent = r.parent;
        // The merged label = n's label + c's label, contiguous in the pool (copied to its end when not).
        const std::uint32_t n_len = r.label_length, c_len = nodes_[c].label_length;
        unlink_child(parent, n);
        unlink_child(n, c);
        if (nodes_[n].label_begin + n_len != nodes_[c].label_begin) {
            const auto begin = static_cast<std::uint32_t>(token_pool_.size());
            for (std::uint32_t j = 0; j < n_len; ++j) append_token(nodes_[n].label_begin + j);
            for (std::uint32_t j = 0; j < c_len; ++j) append_token(nodes_[c].label_begin + j);
            dead_tokens_ += n_len + c_len;
            nodes_[c].label_begin = begin;
        } else {
            nodes_[c].label_begin = nodes_[n].label_begin;
        }
        nodes_[c].label_length = n_len + c_len;
        nodes_[c].parent = parent;
        link_child(parent, c);
        free_node(n);
        return true;
    }
    void append_token(std::uint32_t from) {
        token_pool_.push_back(token_pool_[from]);
        units_pool_.push_back(units_pool_[from]);
    }
    void maybe_compact() {
        if (dead_tokens_ > 4096 && dead_tokens_ > live_tokens_) compact();
    }
    /// Rewrites the pools with live labels only (node ids unchanged).
    void compact() {
        if (dead_tokens_ == 0) return;
        std::vector<std::int32_t> tokens;
        std::vector<surprisal_units> units;
        tokens.reserve(live_tokens_);
        units.reserve(live_tokens_);
        for (auto& r : nodes_) {
            if (!r.live) continue;
            const auto begin = static_cast<std::uint32_t>(tokens.size());
            tokens.insert(tokens.end(), token_pool_.begin() + r.label_begin, token_pool_.begin() + r.label_begin + r.label_length);
            units.insert(units.end(), units_pool_.begin() + r.label_begin, units_pool_.begin() + r.label_begin + r.label_length);
            r.label_begin = begin;
        }
        token_pool_ = std::move(tokens);
        units_pool_ = std::move(units);
        dead_tokens_ = 0;
    }

    std::vector<node_record> nodes_;
    std::vector<node_id> free_;
    std::vector<std::int32_t> token_pool_;
    std::vector<surprisal_units> units_pool_;
    std::unordered_map<child_key, node_id> children_;
    std::uint64_t live_tokens_ = 0, dead_tokens_ = 0;
    surprisal_units default_units_;
};

}  // namespace seqkv::trie
