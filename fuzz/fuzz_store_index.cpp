// libFuzzer target: the PLT trie's serialized index and the prefix store's saved index (which
// embeds a trie), on the bytes as given and with the trailing CRC recomputed so mutations reach
// the parsers; a loaded trie then answers a few queries.
#include "fuzz_support.hpp"
#include "seqkv/api.hpp"
#include "seqkv/store/chunk_store.hpp"
#include "seqkv/store/prefix_store.hpp"
#include "seqkv/trie/serialize.hpp"

namespace {

using namespace seqkv;

void run(std::span<const std::uint8_t> bytes) {
    fuzz::expect_seqkv_errors_only([&] {
        const trie::plt_trie t = trie::load(bytes);
        const std::int32_t probe[] = {1, 2, 3, 4, 5, 6, 7, 8};
        (void)t.longest_prefix(probe);
    });
    fuzz::expect_seqkv_errors_only([&] {
        memory_chunk_store chunks;
        const kv_layout layout{2, 2, 64, 0, dtype::bf16};
        prefix_store<memory_chunk_store> store(chunks, make_codec(lossless_config()), layout, {.chunk_tokens = 16});
        store.load_index(bytes);
        (void)store.missing_chunks();
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::uint8_t> bytes(data, data + size);
    run(bytes);
    if (bytes.size() >= 4) {
        fuzz::put_le32(bytes.data() + bytes.size() - 4, crc32c(std::span<const std::uint8_t>(bytes.data(), bytes.size() - 4)));
        run(bytes);
    }
    return 0;
}
