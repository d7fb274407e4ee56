// Near-prefix reuse: a session that differs from a stored one in a few tokens (a date) and then
// continues with the same tokens stores its new chunks as the difference from the stored
// session's chunks at the same positions — and still reads back bit-exactly, survives eviction,
// save/load, and export.
#include <gtest/gtest.h>

#include "prefix_store_support.hpp"
#include "seqkv/api.hpp"
#include "seqkv/predict/rope.hpp"
#include "seqkv/preset.hpp"
#include "seqkv/store/prefix_store.hpp"

using namespace seqkv;
using namespace seqkv::prefix_store_test;

namespace {

// b = a with tokens [at, at + n) replaced (their KV rows taken from another dump) and every later
// row nudged the way a small upstream change moves it: +1 on the bf16 word of every 5th element.
session perturbed(const session& a, const real_kv& other, std::uint64_t at, std::uint64_t n) {
    session b = a;
    const std::size_t width = dtype_size(a.layout.type), row = a.layout.head_dim * width;
    for (std::uint64_t t = at; t < at + n; ++t) b.ids[t] += 500000;
    for (std::uint32_t l = 0; l < a.layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            auto blk = b.kv.block(l, kind);
            const auto& src = kind == kv_kind::key ? other.cache.keys[l] : other.cache.values[l];
            for (std::uint32_t h = 0; h < a.layout.kv_heads; ++h) {
                for (std::uint64_t t = at; t < at + n; ++t) std::memcpy(blk.data() + (h * a.layout.tokens + t) * row, src.element(h, t, 0), row);
                for (std::uint64_t t = at + n; t < a.layout.tokens; ++t)
                    for (std::uint32_t c = 0; c < a.layout.head_dim; c += 5) {
                        std::uint16_t w;
                        std::uint8_t* p = blk.data() + (h * a.layout.tokens + t) * row + c * width;
                        std::memcpy(&w, p, 2);
                        ++w;
                        std::memcpy(p, &w, 2);
                    }
            }
        }
    return b;
}

}  // namespace

TEST(PrefixStoreNear, ADateChangeIsCodedAgainstTheStoredNeighbour) {
    const auto& kv = gpl3();
    const session a = splice(kv, 320);
    const session b = perturbed(a, textwrap(), 150, 3);
    std::uint64_t plain_bytes = 0;
    {
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
        store.put(a.view(), a.ids);
        plain_bytes = store.put(b.view(), b.ids).bytes_written;
    }
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64, .near_prefix_gap = 8});
    store.put(a.view(), a.ids);
    const auto st = store.put(b.view(), b.ids);
    EXPECT_EQ(st.shared_tokens, 150u);
    EXPECT_EQ(st.new_chunks, 3u);        // [128,192) [192,256) [256,320)
    EXPECT_EQ(st.referenced_chunks, 3u);
    EXPECT_LT(double(st.bytes_written), 0.6 * double(plain_bytes)) << st.bytes_written << " vs " << plain_bytes;
    for (const session* s : {&a, &b}) {
        const auto hit = store.read(s->ids);
        ASSERT_EQ(hit.tokens, 320u);
        EXPECT_EQ(hit.kv.bytes, s->first(320)) << "bit-exact through the difference";
    }
    // A prompt that follows b for 170 tokens reads them (from inside b's difference chunk).
    std::vector<std::int32_t> q(b.ids.begin(), b.ids.begin() + 170);
    EXPECT_EQ(store.read(q).kv.bytes, b.first(170));

    // Reopened from its index: the references hold.
    prefix_store reopened(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64, .near_prefix_gap = 8});
    reopened.load_index(store.save_index());
    EXPECT_EQ(reopened.read(b.ids).kv.bytes, b.first(320));
    // Export stops before the first difference chunk (a plain .skv decoder cannot add the reference).
    EXPECT_EQ(store.export_session(b.ids, lossless_config()).tokens, 128u);
    EXPECT_EQ(store.export_session(a.ids, lossless_config()).tokens, 320u);
}

TEST(PrefixStoreNear, AReferencedChunkIsNotEvictedBeforeItsDependents) {
    const auto& kv = gpl3();
    const session a = splice(kv, 256);
    std::vector<session> sessions{a};
    for (int i = 0; i < 4; ++i) sessions.push_back(perturbed(a, textwrap(), 140 + 10 * std::uint64_t(i), 2));
    memory_chunk_store probe_chunks;
    prefix_store probe(probe_chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64});
    probe.put(a.view(), a.ids);
    const std::uint64_t budget = probe.stored_bytes();  // a alone: every later session forces evictions
    for (auto policy : {eviction_policy::plt, eviction_policy::lru}) {
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout,
                           {.chunk_tokens = 64, .budget_bytes = budget, .policy = policy, .near_prefix_gap = 8});
        std::uint64_t evicted = 0;
        for (const auto& s : sessions) evicted += store.put(s.view(), s.ids).evicted_chunks;
        EXPECT_GT(evicted, 0u);
        for (const auto& s : sessions) {
            const auto hit = store.read(s.ids);  // never a store_error: references outlive their dependents
            EXPECT_EQ(hit.kv.bytes, s.first(hit.tokens));
        }
    }
}

// Two stored neighbours continue like the new session after a changed date: a longer one whose
// continuation its model found predictable (little probability mass shared) and a shorter one
// whose continuation carries many bits. Longest-shared-length would pick the longer; the trie
// metric picks the one sharing the most probability mass — seen in how many chunks are coded
// against it (the shorter has no chunk at [256, 320)). Both read back bit-exactly.
TEST(PrefixStoreNear, TheNeighbourIsChosenByTheTrieMetricNotByLength) {
    const auto& kv = gpl3();
    const session a = splice(kv, 320);
    session longer = perturbed(a, textwrap(), 150, 3), shorter_full = perturbed(a, textwrap(), 150, 3), c = perturbed(a, textwrap(), 150, 3);
    for (std::uint64_t t = 150; t < 153; ++t) shorter_full.ids[t] += 100000, c.ids[t] += 200000;
    for (std::uint64_t t = 153; t < 320; ++t) longer.nll[t] = 0.01f, shorter_full.nll[t] = 5.0f;
    // The shorter neighbour: the first 256 tokens of its session.
    session shorter = shorter_full;
    shorter.layout.tokens = 256;
    shorter.ids.resize(256), shorter.nll.resize(256);
    shorter.kv = chunk_buffer::for_layout(shorter.layout, 256);
    shorter.kv.bytes = shorter_full.first(256);
    for (int order = 0; order < 2; ++order) {  // whichever is stored first
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64, .near_prefix_gap = 8});
        if (order == 0) store.put(longer.view(), longer.ids, longer.nll), store.put(shorter.view(), shorter.ids, shorter.nll);
        else store.put(shorter.view(), shorter.ids, shorter.nll), store.put(longer.view(), longer.ids, longer.nll);
        const auto st = store.put(c.view(), c.ids, c.nll);
        EXPECT_EQ(st.shared_tokens, 150u);
        EXPECT_EQ(st.new_chunks, 3u);
        EXPECT_EQ(st.referenced_chunks, 2u) << "coded against the shorter neighbour: [128,192) and [192,256) only";
        for (const session* s : {&longer, &shorter, &c}) EXPECT_EQ(store.read(s->ids).kv.bytes, s->first(s->ids.size()));
    }
    // With the surprisals the other way round, the longer one shares more mass and is used for all three.
    for (std::uint64_t t = 153; t < 320; ++t) longer.nll[t] = 5.0f;
    for (std::uint64_t t = 153; t < 256; ++t) shorter.nll[t] = 0.01f;
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(lossless_config()), kv.cache.layout, {.chunk_tokens = 64, .near_prefix_gap = 8});
    store.put(shorter.view(), shorter.ids, shorter.nll);
    store.put(longer.view(), longer.ids, longer.nll);
    EXPECT_EQ(store.put(c.view(), c.ids, c.nll).referenced_chunks, 3u);
    EXPECT_EQ(store.read(c.ids).kv.bytes, c.first(320));
}

namespace {

// Rotates a post-RoPE key row by `shift` positions with the deterministic fp32 RoPE of predict/
// (theta 10000, rotate_half: the test model's).
std::function<void(std::span<float>, std::int64_t)> rope_rotation(std::uint32_t head_dim) {
    auto table = std::make_shared<predict::rope_table>(predict::rope_table::inverse_frequencies(10000.0, head_dim));
    return [table](std::span<float> row, std::int64_t shift) {
        std::vector<float> c, s, in(row.begin(), row.end());
        table->angles(std::uint64_t(shift < 0 ? -shift : shift), c, s);
        table->rotate_row(in, row, c, s, shift < 0 ? -1 : +1);
    };
}

}  // namespace

// A longer name: the new session's gap has 5 tokens where the stored neighbour's had 3, so its
// continuation sits 2 positions later. Its keys there are the neighbour's rotated by 2 positions
// (done here as two 1-position rotations, each rounded to bf16: close to, not equal to, what the
// store predicts). With key_rotation the store codes every new chunk against the neighbour's rows
// 2 earlier (the first straddles two of its chunks), rotated; reads are bit-exact, also after
// save/load; without the rotation the store cannot use the shifted neighbour.
TEST(PrefixStoreNear, AShiftedContinuationIsCodedAgainstTheRotatedNeighbour) {
    const auto& kv = gpl3();
    const kv_layout L = kv.cache.layout;
    const auto rotate = rope_rotation(L.head_dim);
    const session nb = perturbed(splice(kv, 320), textwrap(), 150, 3);
    session c;
    c.layout = L;
    c.layout.tokens = 322;
    c.ids.assign(nb.ids.begin(), nb.ids.begin() + 150);
    for (std::int32_t j = 0; j < 5; ++j) c.ids.push_back(900000 + j);
    c.ids.insert(c.ids.end(), nb.ids.begin() + 153, nb.ids.end());
    c.nll.assign(322, 2.0f);
    c.kv = chunk_buffer::for_layout(c.layout, 322);
    const std::size_t row = L.head_dim * dtype_size(L.type);
    std::vector<float> f(L.head_dim);
    for (std::uint32_t l = 0; l < L.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value}) {
            const auto src = nb.kv.block(l, kind);
            const auto dst = c.kv.block(l, kind);
            for (std::uint32_t h = 0; h < L.kv_heads; ++h)
                for (std::uint64_t t = 0; t < 322; ++t) {
                    // rows: the neighbour's up to 150, its gap rows again for the longer gap, then its row t − 2
                    const std::uint64_t from = t < 150 ? t : t < 155 ? 150 + (t - 150) % 3 : t - 2;
                    std::uint8_t* to = dst.data() + (h * 322 + t) * row;
                    std::memcpy(to, src.data() + (h * 320 + from) * row, row);
                    if (kind == kv_kind::value || t < 155) continue;
                    for (int step = 0; step < 2; ++step) {
                        for (std::uint32_t k = 0; k < L.head_dim; ++k) f[k] = load_as_float(to, L.type, k);
                        rotate(f, 1);
                        for (std::uint32_t k = 0; k < L.head_dim; ++k) store_from_float(to, L.type, k, f[k]);
                    }
                }
        }
    std::uint64_t plain_bytes = 0;
    {
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossless_config()), L, {.chunk_tokens = 64, .near_prefix_gap = 8});
        store.put(nb.view(), nb.ids);
        const auto st = store.put(c.view(), c.ids);
        EXPECT_EQ(st.referenced_chunks, 0u) << "without key_rotation a shifted neighbour is not used";
        plain_bytes = st.bytes_written;
    }
    memory_chunk_store chunks;
    prefix_store_options o{.chunk_tokens = 64, .near_prefix_gap = 8};
    o.key_rotation = rotate;
    prefix_store store(chunks, make_codec(lossless_config()), L, o);
    store.put(nb.view(), nb.ids, nb.nll);
    const auto st = store.put(c.view(), c.ids, c.nll);
    EXPECT_EQ(st.shared_tokens, 150u);
    EXPECT_EQ(st.new_chunks, 4u);  // [128,192) [192,256) [256,320) [320,322)
    EXPECT_EQ(st.referenced_chunks, 4u);
    EXPECT_LT(double(st.bytes_written), 0.6 * double(plain_bytes)) << st.bytes_written << " vs " << plain_bytes;
    std::printf("shifted near-prefix: %llu B against the rotated neighbour vs %llu B alone (%.2fx)\n",
                (unsigned long long)st.bytes_written, (unsigned long long)plain_bytes, double(plain_bytes) / double(st.bytes_written));
    for (const session* s : std::initializer_list<const session*>{&nb, &c}) EXPECT_EQ(store.read(s->ids).kv.bytes, s->first(s->ids.size())) << "bit-exact through the rotation";
    std::vector<std::int32_t> q(c.ids.begin(), c.ids.begin() + 200);  // a read from inside a shifted chunk
    EXPECT_EQ(store.read(q).kv.bytes, c.first(200));

    const auto saved = store.save_index();
    prefix_store reopened(chunks, make_codec(lossless_config()), L, o);
    reopened.load_index(saved);
    EXPECT_EQ(reopened.read(c.ids).kv.bytes, c.first(322));
    prefix_store without(chunks, make_codec(lossless_config()), L, {.chunk_tokens = 64, .near_prefix_gap = 8});
    EXPECT_THROW(without.load_index(saved), format_error) << "shifted chunks need the rotation to be read";
    prefix_store_options other = o;
    other.key_rotation = [rotate](std::span<float> r, std::int64_t shift) { rotate(r, -shift); };  // the wrong way round
    prefix_store wrong(chunks, make_codec(lossless_config()), L, other);
    EXPECT_THROW(wrong.load_index(saved), format_error) << "another rotation would decode wrong KV: refused";
    // The neighbour's chunks outlive the shifted dependents under eviction pressure.
    prefix_store_options tight = o;
    tight.budget_bytes = store.stored_bytes() / 2;
    memory_chunk_store tight_chunks;
    prefix_store small(tight_chunks, make_codec(lossless_config()), L, tight);
    small.put(nb.view(), nb.ids, nb.nll);
    small.put(c.view(), c.ids, c.nll);
    for (const session* s : std::initializer_list<const session*>{&nb, &c}) {
        const auto hit = small.read(s->ids);
        EXPECT_EQ(hit.kv.bytes, s->first(hit.tokens));
    }
}

TEST(PrefixStoreNear, ALossyStoreCodesTheValueResidualWithinThePresetsBound) {
    // Through a lossy codec (abs:0.02, an error-bounded preset) the residual is taken as numbers
    // against the neighbour as it decodes; a read must stay within the bound plus the two roundings
    // to bf16 the value residual adds (|r| 2^-8 + |x^| 2^-8, documented on near_prefix_residual).
    const auto& kv = gpl3();
    ASSERT_EQ(kv.cache.layout.type, dtype::bf16);
    const session a = splice(kv, 320);
    const session b = perturbed(a, textwrap(), 150, 3);
    const double bound = 0.02;
    const format::codec_config lossy = preset("abs:0.02", model_params_from(kv.file.metadata(), kv.cache.layout)).codec;
    std::uint64_t plain_bytes = 0;
    {
        memory_chunk_store chunks;
        prefix_store store(chunks, make_codec(lossy), kv.cache.layout, {.chunk_tokens = 64});
        store.put(a.view(), a.ids);
        plain_bytes = store.put(b.view(), b.ids).bytes_written;
    }
    prefix_store_options o{.chunk_tokens = 64, .near_prefix_gap = 8};
    o.near_prefix_residual = prefix_store_options::residual::value;
    memory_chunk_store chunks;
    prefix_store store(chunks, make_codec(lossy), kv.cache.layout, o);
    store.put(a.view(), a.ids);
    const auto st = store.put(b.view(), b.ids);
    EXPECT_EQ(st.referenced_chunks, 3u);
    EXPECT_LT(double(st.bytes_written), 0.6 * double(plain_bytes)) << st.bytes_written << " vs " << plain_bytes;
    const auto a_hat = store.read(a.ids), b_hat = store.read(b.ids);
    ASSERT_EQ(b_hat.tokens, 320u);
    const kv_cache_view want = b.view(), got = view_of(b_hat.kv), ref = view_of(a_hat.kv);
    double worst = 0, max_error = 0;  // worst: error minus its allowance (must stay <= 0)
    for (std::uint32_t l = 0; l < want.layout.layers; ++l)
        for (kv_kind kind : {kv_kind::key, kv_kind::value})
            for (std::uint32_t h = 0; h < want.layout.kv_heads; ++h)
                for (std::uint64_t t = 0; t < 320; ++t)
                    for (std::uint32_t c = 0; c < want.layout.head_dim; ++c) {
                        const double x = want.tensor(l, kind).at(h, t, c), y = got.tensor(l, kind).at(h, t, c);
                        const double r = x - ref.tensor(l, kind).at(h, t, c);
                        const double allowance = bound + (std::abs(r) + std::abs(y)) * 0x1p-8 + 1e-9;
                        worst = std::max(worst, std::abs(y - x) - allowance);
                        max_error = std::max(max_error, std::abs(y - x));
                    }
    EXPECT_LE(worst, 0.0) << "max error " << max_error;
    EXPECT_GT(max_error, 0.0);  // it is lossy

    // The index records the residual kind: it reopens in a value store, not in an integer one.
    const byte_vector index = store.save_index();
    prefix_store reopened(chunks, make_codec(lossy), kv.cache.layout, o);
    reopened.load_index(index);
    EXPECT_EQ(reopened.read(b.ids).kv.bytes, b_hat.kv.bytes);
    prefix_store_options integer = o;
    integer.near_prefix_residual = prefix_store_options::residual::integer;
    prefix_store wrong(chunks, make_codec(lossy), kv.cache.layout, integer);
    EXPECT_THROW(wrong.load_index(index), format_error);
}
