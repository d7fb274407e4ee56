// The PLT radix trie against a brute-force model: every query answered from the list of stored
// sequences directly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "seqkv/trie/plt_trie.hpp"
#include "seqkv/trie/serialize.hpp"

using namespace seqkv;
using trie::plt_trie;

namespace {

using seq = std::vector<std::int32_t>;

std::uint64_t lcp(const seq& a, std::span<const std::int32_t> b) {
    std::uint64_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    return i;
}

// Sessions that share prefixes the way chat sessions do: a few templates, perturbed tails.
std::vector<seq> sessions(std::mt19937& rng, int count, int vocab) {
    std::vector<seq> templates;
    for (int i = 0; i < 4; ++i) {
        seq s(50 + rng() % 100);
        for (auto& t : s) t = std::int32_t(rng() % vocab);
        templates.push_back(s);
    }
    std::vector<seq> out;
    for (int i = 0; i < count; ++i) {
        const seq& base = templates[rng() % templates.size()];
        seq s(base.begin(), base.begin() + std::ptrdiff_t(rng() % (base.size() + 1)));
        const int tail = int(rng() % 40);
        for (int j = 0; j < tail; ++j) s.push_back(std::int32_t(rng() % vocab));
        out.push_back(s);
    }
    return out;
}

std::vector<float> nll_of(const seq& s) {  // a deterministic "model": surprisal from the token id
    std::vector<float> nll(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) nll[i] = i == 0 ? 0.0f : 0.1f + float(std::uint32_t(s[i]) % 13) * 0.37f;
    return nll;
}

std::uint64_t units_of_prefix(const seq& s, std::uint64_t n) {
    const auto nll = nll_of(s);
    std::uint64_t u = 0;
    for (std::uint64_t i = 0; i < n; ++i) u += trie::to_units(nll[i]);
    return u;
}

}  // namespace

TEST(PltTrie, LongestPrefixMatchesBruteForce) {
    std::mt19937 rng(7);
    plt_trie t;
    std::vector<seq> stored;
    for (const auto& s : sessions(rng, 300, 50)) {
        const auto n = t.insert(s, nll_of(s));
        EXPECT_EQ(t.depth(n), s.size());
        EXPECT_EQ(t.sequence(n), s);
        const std::size_t k = s.size() / 3;  // a range: only the overlapping labels are read
        EXPECT_EQ(t.sequence(n, k), seq(s.begin() + std::ptrdiff_t(k), s.end()));
        stored.push_back(s);
        // The metric at any depth of the path: exact, even inside an edge (the first writer's nll
        // of a shared prefix is the same tokens' here, nll_of depends on the token only).
        EXPECT_EQ(t.prefix_units_at(n, k), units_of_prefix(s, k));
        EXPECT_EQ(t.prefix_units_at(n, s.size()), t.prefix_units(n));
    }
    for (const auto& q : sessions(rng, 300, 50)) {
        std::uint64_t best = 0;
        for (const auto& s : stored) best = std::max(best, lcp(s, q));
        const auto p = t.longest_prefix(q);
        ASSERT_EQ(p.depth, best);
        // The metric: exact integer sum of the first `best` tokens' surprisal units (first writer's nll;
        // every stored copy of a prefix has the same tokens, so the same nll here).
        EXPECT_EQ(p.prefix_units, units_of_prefix(q, best));
        EXPECT_DOUBLE_EQ(plt_trie::shared_bits(p), double(p.prefix_units) / 256.0);
    }
    // Each shared prefix stored once: tokens on edges = distinct prefixes of all sequences.
    std::set<seq> prefixes;
    for (const auto& s : stored)
        for (std::size_t i = 1; i <= s.size(); ++i) prefixes.insert(seq(s.begin(), s.begin() + std::ptrdiff_t(i)));
    EXPECT_EQ(t.stored_tokens(), prefixes.size());
}

TEST(PltTrie, SplitAtMakesABoundaryWithoutChangingContent) {
    plt_trie t;
    const seq s{1, 2, 3, 4, 5, 6, 7, 8};
    const auto leaf = t.insert(s);
    const auto mid = t.split_at(leaf, 3);
    EXPECT_EQ(t.depth(mid), 3u);
    EXPECT_EQ(t.parent(leaf), mid);
    EXPECT_EQ(t.split_at(leaf, 3), mid) << "a boundary that exists is returned, not made twice";
    EXPECT_EQ(t.sequence(leaf), s);
    EXPECT_EQ(t.ancestor_at(leaf, 3), mid);
    EXPECT_EQ(t.ancestor_at(leaf, 4), trie::no_node);
    EXPECT_EQ(t.longest_prefix(seq{1, 2, 3, 9}).depth, 3u);
    EXPECT_EQ(t.stored_tokens(), 8u);
    EXPECT_EQ(t.prefix_bits(mid), 3 * 8.0) << "default surprisal: 8 bits per token";
}

TEST(PltTrie, RemoveKeepsEverythingElseAndMergesChains) {
    std::mt19937 rng(11);
    plt_trie t;
    std::map<seq, trie::node_id> stored;
    for (const auto& s : sessions(rng, 400, 20)) stored[s] = t.insert(s);
    // Remove leaves in random order until half the sequences are gone; the rest stay retrievable.
    std::vector<seq> keys;
    for (auto& [s, n] : stored) keys.push_back(s);
    std::shuffle(keys.begin(), keys.end(), rng);
    std::set<seq> gone;
    for (const auto& s : keys) {
        if (gone.size() * 2 >= keys.size()) break;
        const auto p = t.longest_prefix(s);
        ASSERT_EQ(p.depth, s.size());
        const auto n = t.materialize(p);
        if (!t.removable(n)) continue;  // a prefix of another stored sequence
        t.remove_leaf(n);
        gone.insert(s);
    }
    for (const auto& s : keys) {
        if (gone.contains(s)) continue;
        EXPECT_EQ(t.longest_prefix(s).depth, s.size());
    }
    std::set<seq> prefixes;
    for (const auto& s : keys)
        if (!gone.contains(s))
            for (std::size_t i = 1; i <= s.size(); ++i) prefixes.insert(seq(s.begin(), s.begin() + std::ptrdiff_t(i)));
    EXPECT_EQ(t.stored_tokens(), prefixes.size());
    // After removals (and the chain merges they cause) the index still saves and reloads to the same bytes.
    const auto saved = trie::save(t);
    EXPECT_EQ(trie::save(trie::load(saved)), saved);
}

TEST(PltTrie, ReferencedAndPinnedNodesAreNotRemovable) {
    plt_trie t;
    const auto a = t.insert(seq{1, 2, 3});
    const auto b = t.insert(seq{1, 2, 4});
    t.acquire(a);
    EXPECT_FALSE(t.removable(a));
    EXPECT_THROW(t.remove_leaf(a), usage_error);
    t.release(a);
    t.pin(b, true);
    EXPECT_FALSE(t.removable(b));
    EXPECT_TRUE(t.removable(a));
    EXPECT_EQ(t.remove_leaf(a), trie::no_node) << "{1,2} was left a bare chain link and merged into {1,2,4}";
    EXPECT_EQ(t.parent(b), plt_trie::root);
    EXPECT_EQ(t.label(b).size(), 3u);
    EXPECT_EQ(t.longest_prefix(seq{1, 2, 4}).depth, 3u);
    const auto c = t.insert(seq{1, 2, 4, 5});
    const auto d = t.insert(seq{1, 2, 4, 6});
    t.set_value(t.parent(c), 42);
    EXPECT_EQ(t.remove_leaf(c), t.parent(d)) << "a parent with a value is kept, not merged";
    EXPECT_FALSE(t.removable(t.parent(d))) << "an interior node is never removable";
    EXPECT_THROW(t.release(b), usage_error);
}

TEST(PltTrie, SaveLoadRoundTripsAndIsIndependentOfInsertionOrder) {
    std::mt19937 rng(3);
    auto ss = sessions(rng, 200, 30);
    plt_trie a, b;
    for (const auto& s : ss) a.set_value(a.insert(s, nll_of(s)), s.size());
    std::reverse(ss.begin(), ss.end());
    for (const auto& s : ss) b.set_value(b.insert(s, nll_of(s)), s.size());
    const auto bytes = trie::save(a);
    EXPECT_EQ(bytes, trie::save(b));
    const auto c = trie::load(bytes);
    for (const auto& s : ss) {
        const auto p = c.longest_prefix(s);
        ASSERT_EQ(p.depth, s.size());
        EXPECT_EQ(p.prefix_units, a.longest_prefix(s).prefix_units);
        EXPECT_EQ(c.value(p.node), s.size());
    }
}

TEST(PltTrie, CorruptIndexesAreRejected) {
    std::mt19937 rng(5);
    plt_trie t;
    for (const auto& s : sessions(rng, 30, 30)) t.insert(s, nll_of(s));
    const auto good = trie::save(t);
    for (std::size_t n = 0; n < good.size(); n += 1 + n / 16) {
        const std::span<const std::uint8_t> cut(good.data(), n);
        EXPECT_THROW(trie::load(cut), format_error) << "truncated to " << n;
    }
    for (int trial = 0; trial < 500; ++trial) {
        auto bad = good;
        bad[rng() % bad.size()] ^= std::uint8_t(1u << (rng() % 8));
        EXPECT_THROW(trie::load(bad), format_error);
    }
    // With the CRC recomputed, structural checks still catch lies (or the result is a valid trie).
    auto reseal = [](byte_vector b) {
        const auto crc = crc32c(std::span<const std::uint8_t>(b.data(), b.size() - 4));
        for (int i = 0; i < 4; ++i) b[b.size() - 4 + std::size_t(i)] = std::uint8_t(crc >> (8 * i));
        return b;
    };
    int rejected = 0;
    for (int trial = 0; trial < 2000; ++trial) {
        auto bad = good;
        bad[rng() % (bad.size() - 4)] ^= std::uint8_t(1u << (rng() % 8));
        try {
            const auto u = trie::load(reseal(bad));
            (void)trie::save(u);  // whatever loads is a consistent trie
        } catch (const format_error&) {
            ++rejected;
        }
    }
    EXPECT_GT(rejected, 0);
    // A header claiming 2^31 nodes in a small file is refused before allocating.
    auto huge = good;
    huge[16] = 0xff, huge[17] = 0xff, huge[18] = 0xff, huge[19] = 0x7f;
    EXPECT_THROW(trie::load(reseal(huge)), format_error);
}

TEST(PltTrie, SurprisalUnits) {
    EXPECT_EQ(trie::to_units(0.0f), 0);
    EXPECT_EQ(trie::to_units(-1e-7f), 0);
    EXPECT_EQ(trie::to_units(float(std::log(2.0))), 256);  // one bit
    EXPECT_EQ(trie::to_units(1e30f), 65535);
    EXPECT_EQ(trie::to_units(std::numeric_limits<float>::quiet_NaN()), 65535);
    // The one-byte grid: 1/16 bit below 8 bits, 1/8 below 16, 1/4 up to 31.5, then the clamp.
    const auto nats = [](double bits) { return float(bits * std::log(2.0)); };
    EXPECT_EQ(trie::to_units(nats(3.0 + 1.0 / 16)), 3 * 256 + 16);
    EXPECT_EQ(trie::to_units(nats(3.0 + 1.0 / 40)), 3 * 256) << "rounded to the nearest 1/16 bit";
    EXPECT_EQ(trie::to_units(nats(12.0 + 1.0 / 16 + 0.01)), 12 * 256 + 32) << "1/8 bit steps above 8 bits";
    EXPECT_EQ(trie::to_units(nats(20.3)), 20 * 256 + 64) << "1/4 bit steps above 16 bits";
    EXPECT_EQ(trie::to_units(nats(40.0)), 8064) << "31.5 bits: the clamp below 'no probability'";
    std::uint32_t previous = 0;
    for (int c = 0; c < 256; ++c) {
        const auto u = trie::code_units(std::uint8_t(c));
        EXPECT_EQ(trie::surprisal_code(u), c) << "every grid point codes to itself";
        if (c > 0) {
            EXPECT_GT(u, previous) << "codes are ordered";
        }
        previous = u;
    }
    for (std::uint32_t u = 0; u < 65536; u += 7) {  // nearest grid point, never far
        const auto g = trie::code_units(trie::surprisal_code(u));
        if (u <= 8064) {
            EXPECT_LE(std::abs(int(g) - int(u)), 32) << u;
        }
    }
}

// Ids outside [0, 65535) take the token pool's escape path; nodes with many children take the
// child table, and leave it when removals bring them back under wide_fanout. Both against brute force.
TEST(PltTrie, EscapedIdsAndWideNodesMatchBruteForce) {
    const std::int32_t odd[] = {65535, 65534, -1, std::numeric_limits<std::int32_t>::min(), 1 << 30, 70000, 0, 65536};
    std::mt19937 rng(13);
    auto draw = [&](int vocab) {  // sessions over a vocabulary where a third of the ids escape
        auto ss = sessions(rng, 300, vocab);
        for (auto& s : ss)
            for (auto& t : s)
                if (t % 4 == 0) t = odd[std::uint32_t(t) % 8];
        return ss;
    };
    plt_trie t;
    std::vector<seq> stored;
    auto all = draw(40);
    for (std::int32_t k = 0; k < 40; ++k)  // a wide node: 40 children under {1, 2}, escaped ids among them
        all.push_back(seq{1, 2, k * 9000 - 100000, std::int32_t(rng() % 5), odd[std::uint32_t(k) % 8]});
    std::shuffle(all.begin(), all.end(), rng);
    for (const auto& s : all) {
        const auto n = t.insert(s, nll_of(s));
        ASSERT_EQ(t.sequence(n), s);
        stored.push_back(s);
    }
    auto check = [&](const std::vector<seq>& live) {
        for (const auto& q : draw(40)) {
            std::uint64_t best = 0;
            for (const auto& s : live) best = std::max(best, lcp(s, q));
            ASSERT_EQ(t.longest_prefix(q).depth, best);
        }
        for (const auto& s : live) ASSERT_EQ(t.longest_prefix(s).depth, s.size());
    };
    std::uint32_t widest = 0;
    std::vector<trie::node_id> stack{plt_trie::root};
    while (!stack.empty()) {
        const auto n = stack.back();
        stack.pop_back();
        widest = std::max(widest, t.child_count(n));
        t.for_each_child(n, [&](trie::node_id c) { stack.push_back(c); });
    }
    EXPECT_GT(widest, plt_trie::wide_fanout) << "the workload must exercise the child table";
    check(stored);
    // Remove most sequences (wide nodes shrink back under the threshold), checking as we go.
    std::shuffle(stored.begin(), stored.end(), rng);
    std::vector<seq> live = stored;
    for (std::size_t k = 0; k < stored.size() * 9 / 10; ++k) {
        const auto p = t.longest_prefix(stored[k]);
        if (p.depth != stored[k].size()) continue;
        const auto n = t.materialize(p);
        if (!t.removable(n)) continue;
        t.remove_leaf(n);
        live.erase(std::find(live.begin(), live.end(), stored[k]));
        if (k % 50 == 0) check(live);
    }
    check(live);
    t.shrink_to_fit();
    check(live);
    const auto saved = trie::save(t);
    auto u = trie::load(saved);
    EXPECT_EQ(trie::save(u), saved);
    for (const auto& s : live) EXPECT_EQ(u.sequence(u.materialize(u.longest_prefix(s))), s);
}

// The index's size: 40-byte nodes, 2 bytes of id and 1 of surprisal per token.
TEST(PltTrie, BytesPerStoredToken) {
    std::mt19937 rng(17);
    plt_trie t;
    for (int i = 0; i < 500; ++i) {
        seq s(64);
        for (auto& x : s) x = std::int32_t(rng() % 50000);
        t.insert(s, nll_of(s));
    }
    t.shrink_to_fit();
    const double per_token = double(t.memory_bytes()) / double(t.stored_tokens());
    EXPECT_LT(per_token, 3.0 + 40.0 / 64 + 0.3) << per_token;
    EXPECT_GT(per_token, 3.0) << per_token;
}
