// Terminal output of the CLI: colour decisions (NO_COLOR, non-tty), aligned
// tables, progress bars and number formatting. Pure formatting: nothing here
// writes to a stream. Thread-safe: value types and free functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace caddie::cli {

// ANSI styling that collapses to plain text when colour is off.
class Style {
 public:
  explicit Style(bool color) : color_(color) {}
  bool color() const { return color_; }
  std::string Bold(const std::string& s) const { return Wrap("1", s); }
  std::string Dim(const std::string& s) const { return Wrap("2", s); }
  std::string Red(const std::string& s) const { return Wrap("31", s); }
  std::string Green(const std::string& s) const { return Wrap("32", s); }
  std::string Yellow(const std::string& s) const { return Wrap("33", s); }
  std::string Blue(const std::string& s) const { return Wrap("34", s); }
  std::string Cyan(const std::string& s) const { return Wrap("36", s); }

 private:
  std::string Wrap(const char* code, const std::string& s) const {
    return color_ ? "\033[" + std::string(code) + "m" + s + "\033[0m" : s;
  }
  bool color_;
};

// Colour is on when `fd` is a terminal, NO_COLOR is unset or empty
// (https://no-color.org), TERM is not "dumb", and --no-color was not given.
bool ShouldColor(int fd, bool no_color_flag);

// Display width of `s`: ANSI escapes take no columns; a UTF-8 sequence takes one.
size_t DisplayWidth(const std::string& s);

// A left-aligned table; columns listed in `right_align` are right-aligned (numbers).
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<size_t>& right_align, const Style& style);

// "[██████░░░░░░]  42%" of `width` cells; fraction is clamped to [0, 1].
std::string ProgressBar(double fraction, int width, const Style& style);

// 15,860,000 → "15.86 MB" (decimal, as the Parameter Golf limit).
std::string FormatBytes(int64_t bytes);
// 75.2 → "1m15s"; 4000 → "1h06m"; 9.5 → "9.5s".
std::string FormatDuration(double seconds);
// A compact age of a unix-ms timestamp relative to now_ms: "12s ago", "3m ago".
std::string FormatAge(int64_t unix_ms, int64_t now_ms);
// 1234567 → "1,234,567".
std::string FormatInt(int64_t v);

}  // namespace caddie::cli
