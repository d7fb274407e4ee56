// seqkv::runtime: the lossless chunk codec for both backends.
#include "runtime_part.hpp"

#include "seqkv/codec/lossless/codec.hpp"

namespace seqkv {
template class lossless_codec<backend::simd>;
template class lossless_codec<backend::scalar>;
}  // namespace seqkv
