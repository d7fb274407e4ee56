// Included first by every src/*.cpp. Each of those files makes explicit instantiation definitions
// of what the headers declare extern under SEQKV_SEPARATE_RUNTIME; the macro keeps each file from
// instantiating the other files' share again. (Set here too, for builds that compile src/*.cpp
// without the CMake target's definition.)
#pragma once
#ifndef SEQKV_SEPARATE_RUNTIME
#define SEQKV_SEPARATE_RUNTIME 1
#endif
