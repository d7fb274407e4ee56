// UTF-8 validation of the strings files carry.
#include <gtest/gtest.h>

#include "seqkv/core/utf8.hpp"

using seqkv::valid_utf8;

TEST(Utf8, AcceptsWellFormedText) {
    EXPECT_TRUE(valid_utf8(""));
    EXPECT_TRUE(valid_utf8("SmolLM2-135M-Instruct.Q4_1"));
    EXPECT_TRUE(valid_utf8("\xC3\xA9t\xC3\xA9"));              // été
    EXPECT_TRUE(valid_utf8("\xE2\x82\xAC"));                   // €
    EXPECT_TRUE(valid_utf8("\xF0\x9F\x98\x80"));               // U+1F600
    EXPECT_TRUE(valid_utf8("\xF4\x8F\xBF\xBF"));               // U+10FFFF
}

TEST(Utf8, RejectsMalformedText) {
    for (const char* bad : {"\xC3", "\xC3\x28", "\x80", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80" /* surrogate */,
                            "\xF4\x90\x80\x80" /* > U+10FFFF */, "\xF8\x88\x80\x80\x80", "\xFF", "ok\xE2\x82"})
        EXPECT_FALSE(valid_utf8(bad)) << bad;
}
