// Floating-point contraction off for seqkv's own code, whatever flags the including build uses.
//
// seqkv's lossy stages run closed-loop and its decoders must rebuild the values the encoder saw,
// bit for bit, on any machine and under any build of these headers. A compiler allowed to fuse
// a*b+c into one FMA (GCC's default -ffp-contract=fast in GNU modes, clang's default "on",
// -march with FMA) rounds once where the source rounds twice, so a file could decode to other
// bits than its encoder's reconstruction. CMake and pkg-config consumers get -ffp-contract=off
// from the seqkv target; these pragmas keep the headers exact for everyone else. Every seqkv
// header opens its declarations with SEQKV_FP_STRICT_BEGIN and closes them with
// SEQKV_FP_STRICT_END (GCC: push_options / optimize("fp-contract=off") / pop_options, which
// also covers templates instantiated later; clang: float_control(push) / fp contract(off) / pop).
// The including code's own functions keep its flags. Files compiled by nvcc (host and device
// code) are not covered. GCC does not inline across a difference in such options, so a build
// whose own flags contract still gets exact results but loses inlining where seqkv code meets
// the includer's (std algorithms with seqkv callbacks included): pass -ffp-contract=off too for
// full speed.
// (-ffast-math is beyond repair by pragmas: it changes NaN, infinity and signed-zero handling,
// which the lossless mode must keep bit-exact; do not build seqkv with it.)
#pragma once

#if defined(__CUDACC__)
#define SEQKV_FP_STRICT_BEGIN
#define SEQKV_FP_STRICT_END
#elif defined(__clang__)
#define SEQKV_FP_STRICT_BEGIN _Pragma("float_control(push)") _Pragma("clang fp contract(off)")
#define SEQKV_FP_STRICT_END _Pragma("float_control(pop)")
#elif defined(__GNUC__)
#define SEQKV_FP_STRICT_BEGIN _Pragma("GCC push_options") _Pragma("GCC optimize(\"fp-contract=off\")")
#define SEQKV_FP_STRICT_END _Pragma("GCC pop_options")
#else
#define SEQKV_FP_STRICT_BEGIN
#define SEQKV_FP_STRICT_END
#endif
