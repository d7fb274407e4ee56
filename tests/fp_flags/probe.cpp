// Compresses and decompresses a bundled SmolLM2 KV dump with the lossy presets and the lossless
// codec, printing each file's and each decoded cache's hash. tests/CMakeLists.txt builds it
// twice -- with the project's flags and as an optimising GNU-mode build with FMA code generation
// and the compiler's default contraction (GCC: fast, clang: on), without the seqkv target's
// -ffp-contract=off -- and fp_flags_compare.cmake requires the two to print the same lines:
// seqkv's headers keep their arithmetic unfused (core/fp_strict.hpp) whatever the includer's flags.
#include <cstdio>
#include <exception>

#include "seqkv/api.hpp"
#include "seqkv/io/kv_safetensors.hpp"
#include "seqkv/preset.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s KV.safetensors\n", argv[0]);
        return 2;
    }
    try {
        if (seqkv::fp_contraction_active()) {
            std::printf("this build fuses multiply-adds inside seqkv\n");
            return 1;
        }
        const auto file = seqkv::io::safetensors_file::load(argv[1]);
        const auto kv = seqkv::io::kv_view(file);
        const auto model = seqkv::model_params_from(file.metadata(), kv.layout);
        for (const char* name : {"lossless", "kivi2", "int8", "fp8", "turbo2.5", "turbo3", "turbo4", "abs:0.05", "bound:0.01",
                                 "seqkv-step:0.5", "seqkv-2bit"}) {
            seqkv::compress_options o = seqkv::preset(name, model);
            o.chunk_tokens = 128;
            const auto packed = seqkv::compress(kv, o);
            const auto decoded = seqkv::decompress(packed);
            std::printf("%s %zu bytes file %016llx decoded %016llx\n", name, packed.size(),
                        static_cast<unsigned long long>(seqkv::content_hash64(packed)),
                        static_cast<unsigned long long>(seqkv::content_hash64(decoded.bytes)));
        }
    } catch (const std::exception& e) {
        std::printf("error: %s\n", e.what());
        return 1;
    }
    return 0;
}
