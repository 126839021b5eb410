#include "common/utf8.h"

#include <gtest/gtest.h>

namespace caddie {
namespace {

TEST(Utf8Test, WellFormedTextIsAcceptedAndKept) {
  const std::string ok = "ascii, é (2), € (3), 𝄞 (4)";
  EXPECT_EQ(FirstInvalidUtf8(ok), std::string::npos);
  EXPECT_EQ(ReplaceInvalidUtf8(ok, "?"), ok);
  EXPECT_EQ(ReplaceInvalidUtf8("", "?"), "");
}

TEST(Utf8Test, FindsEachKindOfBadSequenceAtItsOffset) {
  EXPECT_EQ(FirstInvalidUtf8("ab\x84"), 2u);          // lone continuation byte
  EXPECT_EQ(FirstInvalidUtf8("a\xC3"), 1u);           // cut short by the end
  EXPECT_EQ(FirstInvalidUtf8("\xC0\xAF"), 0u);        // overlong '/'
  EXPECT_EQ(FirstInvalidUtf8("x\xED\xA0\x80"), 1u);   // surrogate U+D800
  EXPECT_EQ(FirstInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(FirstInvalidUtf8("\x84" "ab\x84", 1), 3u);  // from an offset
}

TEST(Utf8Test, ReplacesEveryBadByteAndKeepsTheRest) {
  EXPECT_EQ(ReplaceInvalidUtf8("a\x84\x85" "b é", "?"), "a??b é");
  // A character cut at the front (as a log chunk may start) and at the end.
  EXPECT_EQ(ReplaceInvalidUtf8("\xA9t\xC3", "\xEF\xBF\xBD"), "\xEF\xBF\xBDt\xEF\xBF\xBD");
}

TEST(Utf8Test, AnIncompleteSequenceAtTheEndIsMeasuredOnlyWhenWellFormedSoFar) {
  EXPECT_EQ(IncompleteUtf8Suffix("abc"), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix(""), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix("ab\xC3"), 1u);            // é cut after 1 of 2
  EXPECT_EQ(IncompleteUtf8Suffix("\xE2\x82"), 2u);          // € cut after 2 of 3
  EXPECT_EQ(IncompleteUtf8Suffix("x\xF0\x9D\x84"), 3u);     // 𝄞 cut after 3 of 4
  EXPECT_EQ(IncompleteUtf8Suffix("\xC3\xA9"), 0u);          // complete
  EXPECT_EQ(IncompleteUtf8Suffix("a\x84"), 0u);              // a stray continuation: invalid, not cut
  EXPECT_EQ(IncompleteUtf8Suffix("\xE0\x80"), 0u);          // overlong start: invalid, not cut
}

}  // namespace
}  // namespace caddie
