// libFuzzer target: llama.cpp state reading (sequence files, session files, raw
// llama_state_seq_get_data blobs) with and without the cell extension, then the KV plan and
// gather the converter runs on it; and GGUF metadata parsing on the same bytes.
#include "fuzz_support.hpp"
#include "seqkv/convert/llama_skv.hpp"
#include "seqkv/io/gguf.hpp"
#include "seqkv/io/llama_state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace seqkv;
    const std::span<const std::uint8_t> bytes(data, size);
    for (int variant = 0; variant < 3; ++variant) {
        io::llama::parse_options o;
        if (variant == 1) o.cell_ext = true;
        if (variant == 2) o.cell_ext = false, o.has_values = false;
        fuzz::expect_seqkv_errors_only([&] {
            const io::llama::state s = io::llama::parse_state(bytes, o);
            const io::llama::kv_plan p = io::llama::plan_kv(s);
            (void)io::llama::gather_kv(s, p);
        });
    }
    fuzz::expect_seqkv_errors_only([&] { (void)io::gguf::parse_metadata(bytes); });
    return 0;
}
