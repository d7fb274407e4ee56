// seqkv version (kept equal to the CMake project version).
#pragma once

#define SEQKV_VERSION_MAJOR 0
#define SEQKV_VERSION_MINOR 1
#define SEQKV_VERSION_PATCH 0
#define SEQKV_VERSION_STRING "0.1.0"
