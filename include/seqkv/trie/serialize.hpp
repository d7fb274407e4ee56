// Saving and reloading a plt_trie.
//
// Layout (little-endian), version 2:
//   u8[8]  magic "SKVTRIE\0"
//   u32    version (2; version 1 — u64 values, u16 surprisal units per token — is not read)
//   u16    default surprisal units (a grid point: code_units(surprisal_code(u)) == u)
//   u16    reserved (0)
//   u32    node count N (root included, ≥ 1)
//   u64    token count M (Σ label lengths)
//   N-1 × node record, in an order where every parent precedes its children (root = 0, implicit):
//          u32 parent, u32 label length (≥ 1), u32 value (all ones: none), u8 flags (bit 0: pinned)
//   M × i32 label tokens, then M × u8 surprisal codes (trie::code_units), in node order
//   u32    CRC-32C of every byte before it
// Node ids are renumbered by the save; references (acquire) are run-time state and not saved.
// Reading checks the CRC first, then every count against the bytes present before allocating,
// and the structure (parents precede children, no two children of a node start with one token).
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "seqkv/core/bytes.hpp"
#include "seqkv/core/checksum.hpp"
#include "seqkv/core/error.hpp"
#include "seqkv/trie/plt_trie.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::trie {

inline constexpr std::array<std::uint8_t, 8> trie_magic{'S', 'K', 'V', 'T', 'R', 'I', 'E', 0};
inline constexpr std::uint32_t trie_format_version = 2;

struct trie_codec {
    static byte_vector save(const plt_trie& t) {
        // Preorder from the root: parents first. Children in first-token order, so equal tries
        // save to equal bytes whatever their insertion history.
        std::vector<node_id> order{plt_trie::root};
        std::vector<node_id> new_id(t.nodes_.size(), no_node);
        new_id[plt_trie::root] = 0;
        std::vector<node_id> stack{plt_trie::root};
        while (!stack.empty()) {
            const node_id n = stack.back();
            stack.pop_back();
            std::vector<node_id> kids;
            t.for_each_child(n, [&](node_id c) { kids.push_back(c); });
            std::sort(kids.begin(), kids.end(), [&](node_id a, node_id b) { return t.first_token(a) > t.first_token(b); });
            for (node_id c : kids) stack.push_back(c);  // reversed: smallest first token popped first
            if (n != plt_trie::root) {
                new_id[n] = static_cast<node_id>(order.size());
                order.push_back(n);
            }
        }
        byte_vector out;
        out.reserve(28 + 13 * order.size() + 5 * std::size_t(t.live_tokens_) + 4);  // the exact size
        byte_writer w(out);
        for (std::uint8_t b : trie_magic) w.put<std::uint8_t>(b);  // (a range insert here trips GCC 12's -Wstringop-overflow)
        w.put<std::uint32_t>(trie_format_version);
        w.put<std::uint16_t>(t.default_units());
        w.put<std::uint16_t>(0);
        w.put<std::uint32_t>(static_cast<std::uint32_t>(order.size()));
        w.put<std::uint64_t>(t.live_tokens_);
        for (std::size_t i = 1; i < order.size(); ++i) {
            const auto& r = t.nodes_[order[i]];
            w.put<std::uint32_t>(new_id[r.parent]);
            w.put<std::uint32_t>(t.label_length(order[i]));
            w.put<std::uint32_t>(r.value);
            w.put<std::uint8_t>(r.pinned ? 1 : 0);
        }
        for (std::size_t i = 1; i < order.size(); ++i)
            for (std::int32_t tok : t.label(order[i])) w.put<std::int32_t>(tok);
        for (std::size_t i = 1; i < order.size(); ++i) {
            const auto& r = t.nodes_[order[i]];
            for (std::uint32_t j = 0; j < t.label_length(order[i]); ++j) w.put<std::uint8_t>(t.codes_[r.label_begin + j]);
        }
        w.put<std::uint32_t>(crc32c(out));
        return out;
    }

    static plt_trie load(std::span<const std::uint8_t> bytes) {
        if (bytes.size() < 4) throw format_error("trie index truncated");
        const auto body = bytes.first(bytes.size() - 4);
        byte_reader tail(bytes.last(4), "trie index");
        if (tail.get<std::uint32_t>() != crc32c(body)) throw checksum_error("trie index: CRC mismatch");
        byte_reader r(body, "trie index");
        const auto magic = r.get_bytes(trie_magic.size());
        if (!std::equal(magic.begin(), magic.end(), trie_magic.begin())) throw format_error("trie index: bad magic");
        if (const auto v = r.get<std::uint32_t>(); v != trie_format_version)
            throw format_error("trie index: unsupported version " + std::to_string(v));
        const auto default_units = r.get<std::uint16_t>();
        if (code_units(surprisal_code(default_units)) != default_units) throw format_error("trie index: default surprisal off the grid");
        plt_trie t(default_units);
        if (r.get<std::uint16_t>() != 0) throw format_error("trie index: reserved field set");
        const std::uint32_t n = r.get<std::uint32_t>();
        const std::uint64_t m = r.get<std::uint64_t>();
        constexpr std::size_t record_bytes = 13, token_bytes = 5;
        if (n == 0 || std::uint64_t(n - 1) * record_bytes > r.remaining())
            throw format_error("trie index: node count exceeds the data");
        if (m > (r.remaining() - std::uint64_t(n - 1) * record_bytes) / token_bytes || m >= std::numeric_limits<std::uint32_t>::max())
            throw format_error("trie index: token count exceeds the data");
        if (r.remaining() != std::uint64_t(n - 1) * record_bytes + m * token_bytes) throw format_error("trie index: size mismatch");

        t.nodes_.resize(n);
        std::vector<std::uint32_t> lengths(n, 0);
        std::uint64_t label_sum = 0;
        for (std::uint32_t i = 1; i < n; ++i) {
            auto& rec = t.nodes_[i];
            rec.parent = r.get<std::uint32_t>();
            lengths[i] = r.get<std::uint32_t>();
            rec.value = r.get<std::uint32_t>();
            const auto flags = r.get<std::uint8_t>();
            if (rec.parent >= i) throw format_error("trie index: a node precedes its parent");
            if (lengths[i] == 0) throw format_error("trie index: empty edge label");
            if (flags > 1) throw format_error("trie index: unknown node flags");
            rec.pinned = flags & 1;
            rec.label_begin = static_cast<std::uint32_t>(label_sum);
            label_sum += lengths[i];
            if (label_sum > m) throw format_error("trie index: labels exceed the token count");
        }
        if (label_sum != m) throw format_error("trie index: labels do not cover the token count");
        t.pool_.reserve(m);
        for (std::uint64_t k = 0; k < m; ++k) t.pool_.push_back(r.get<std::int32_t>());
        const auto codes = r.get_bytes(m);
        t.codes_.assign(codes.begin(), codes.end());
        for (std::uint32_t i = 1; i < n; ++i) {
            auto& rec = t.nodes_[i];
            const auto& parent = t.nodes_[rec.parent];
            rec.depth = parent.depth + lengths[i];  // < 2^40: Σ lengths = m < 2^32
            rec.prefix_units = parent.prefix_units;
            for (std::uint32_t j = 0; j < lengths[i]; ++j) rec.prefix_units += code_units(t.codes_[rec.label_begin + j]);
            if (t.child(rec.parent, t.first_token(i)) != no_node) throw format_error("trie index: two children start with the same token");
            if (parent.child_count >= plt_trie::max_children) throw format_error("trie index: too many children of one node");
            t.link_child(rec.parent, i);
        }
        t.live_tokens_ = m;
        return t;
    }
};

/// Serializes the trie (see the layout above).
inline byte_vector save(const plt_trie& t) { return trie_codec::save(t); }
/// Reloads a saved trie; any inconsistency raises a seqkv::format_error (checksum_error for the CRC).
inline plt_trie load(std::span<const std::uint8_t> bytes) { return trie_codec::load(bytes); }

}  // namespace seqkv::trie

SEQKV_FP_STRICT_END
