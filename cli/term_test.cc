#include "cli/term.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

namespace caddie::cli {
namespace {

TEST(TermTest, ColourIsOffForNoColorAndNonTty) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  unsetenv("NO_COLOR");
  EXPECT_FALSE(ShouldColor(fds[1], false));  // a pipe is not a terminal
  close(fds[0]);
  close(fds[1]);
  EXPECT_FALSE(ShouldColor(STDOUT_FILENO, true));
  setenv("NO_COLOR", "1", 1);
  EXPECT_FALSE(ShouldColor(STDOUT_FILENO, false));
  unsetenv("NO_COLOR");
}

TEST(TermTest, StyleWrapsOnlyWhenColoured) {
  EXPECT_EQ(Style(false).Red("x"), "x");
  EXPECT_EQ(Style(true).Red("x"), "\033[31mx\033[0m");
  EXPECT_EQ(DisplayWidth(Style(true).Bold("abc")), 3u);
  EXPECT_EQ(DisplayWidth("█░é"), 3u);
}

TEST(TermTest, TableAlignsColumnsIgnoringEscapes) {
  const Style st(true);
  std::string t = FormatTable({"A", "NUM"}, {{"x", "1"}, {"long", "100"}}, {1}, Style(false));
  EXPECT_EQ(t, "A     NUM\nx       1\nlong  100\n");
  std::string c = FormatTable({"A", "B"}, {{st.Red("x"), "y"}}, {}, st);
  EXPECT_NE(c.find("\033[31mx\033[0m  y"), std::string::npos) << c;
}

TEST(TermTest, ProgressBar) {
  EXPECT_EQ(ProgressBar(0.5, 10, Style(false)), "[#####-----]  50%");
  EXPECT_EQ(ProgressBar(2.0, 4, Style(false)), "[####] 100%");
  EXPECT_EQ(ProgressBar(-1, 4, Style(false)), "[----]   0%");
  EXPECT_EQ(ProgressBar(0.25, 4, Style(true)), "[\033[32m█\033[0m\033[2m░░░\033[0m]  25%");
}

TEST(TermTest, Numbers) {
  EXPECT_EQ(FormatBytes(999), "999 B");
  EXPECT_EQ(FormatBytes(15860000), "15.86 MB");
  EXPECT_EQ(FormatBytes(1500), "1.5 kB");
  EXPECT_EQ(FormatDuration(9.5), "9.5s");
  EXPECT_EQ(FormatDuration(75.2), "1m15s");
  EXPECT_EQ(FormatDuration(4000), "1h06m");
  EXPECT_EQ(FormatInt(1234567), "1,234,567");
  EXPECT_EQ(FormatInt(-1000), "-1,000");
  EXPECT_EQ(FormatInt(0), "0");
  EXPECT_EQ(FormatAge(1000, 61000), "1m00s ago");
  EXPECT_EQ(FormatAge(0, 5), "-");
}

}  // namespace
}  // namespace caddie::cli
