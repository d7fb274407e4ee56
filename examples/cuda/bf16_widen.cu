// CUDA seam smoke test: seqkv's constexpr bit-exact conversions used inside a kernel. Built
// when SEQKV_ENABLE_CUDA=ON; the CUDA backend proper joins through backend/ later.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "seqkv/core/float_formats.hpp"

__global__ void widen_bf16(const unsigned short* in, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = seqkv::decode_narrow<seqkv::bf16_traits>(in[i]);
}

int main() {
    const int n = 1 << 16;
    std::vector<unsigned short> host(n);
    for (int i = 0; i < n; ++i) host[i] = static_cast<unsigned short>(i);
    unsigned short* d_in = nullptr;
    float* d_out = nullptr;
    if (cudaMalloc(&d_in, n * sizeof(unsigned short)) != cudaSuccess || cudaMalloc(&d_out, n * sizeof(float)) != cudaSuccess) {
        std::printf("no CUDA device: skipped\n");
        return 0;
    }
    cudaMemcpy(d_in, host.data(), n * sizeof(unsigned short), cudaMemcpyHostToDevice);
    widen_bf16<<<(n + 255) / 256, 256>>>(d_in, d_out, n);
    std::vector<float> back(n);
    cudaMemcpy(back.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < n; ++i) {
        unsigned int a, b;
        const float ref = seqkv::bf16_to_float(host[i]);
        std::memcpy(&a, &back[i], 4);
        std::memcpy(&b, &ref, 4);
        bad += a != b;
    }
    cudaFree(d_in);
    cudaFree(d_out);
    std::printf("%d of %d bf16 patterns differ on the device\n", bad, n);
    return bad ? 1 : 0;
}
