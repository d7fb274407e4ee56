// seqkv::runtime: make_codec and the lossy runtime codec's dispatch, for both backends. The
// codecs they build are compiled in lossless.cpp and lossy_<coder>_<backend>.cpp (the headers
// declare them extern under SEQKV_SEPARATE_RUNTIME, so this file instantiates none of them).
#include "runtime_part.hpp"

#include "seqkv/codec/registry.hpp"

namespace seqkv {
template any_chunk_codec make_codec<backend::simd>(const format::codec_config&, const resource_provider&,
                                                   std::shared_ptr<backend::thread_pool>);
template any_chunk_codec make_codec<backend::scalar>(const format::codec_config&, const resource_provider&,
                                                     std::shared_ptr<backend::thread_pool>);
namespace lossy {
template class runtime_codec<backend::simd>;
template class runtime_codec<backend::scalar>;
}  // namespace lossy
}  // namespace seqkv
