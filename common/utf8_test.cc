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

}  // namespace
}  // namespace caddie
