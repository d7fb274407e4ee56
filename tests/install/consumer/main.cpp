// A downstream project built against the installed seqkv package.
#include <seqkv/seqkv.hpp>

#include <cstdio>

int main() {
    // bf16 round trip through the installed headers.
    float x = 1.5f;
    if (seqkv::bf16_to_float(seqkv::float_to_bf16(x)) != x) return 1;
    std::printf("seqkv %s consumer ok\n", SEQKV_VERSION_STRING);
    return 0;
}
