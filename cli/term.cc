#include "cli/term.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace caddie::cli {

bool ShouldColor(int fd, bool no_color_flag) {
  if (no_color_flag) return false;
  const char* nc = std::getenv("NO_COLOR");
  if (nc != nullptr && nc[0] != '\0') return false;
  const char* term = std::getenv("TERM");
  if (term != nullptr && std::strcmp(term, "dumb") == 0) return false;
  return isatty(fd) == 1;
}

size_t DisplayWidth(const std::string& s) {
  size_t w = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == 0x1b) {  // ESC [ ... final byte in @..~
      ++i;
      if (i < s.size() && s[i] == '[') {
        while (i + 1 < s.size() && !(s[i + 1] >= '@' && s[i + 1] <= '~')) ++i;
        ++i;
      }
      continue;
    }
    if ((c & 0xC0) != 0x80) ++w;  // count lead bytes only
  }
  return w;
}

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<size_t>& right_align, const Style& style) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = DisplayWidth(header[c]);
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], DisplayWidth(r[c]));
  }
  auto line = [&](const std::vector<std::string>& cells, bool is_header) {
    std::string out;
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      const size_t pad = width[c] - std::min(width[c], DisplayWidth(cell));
      const bool right = std::find(right_align.begin(), right_align.end(), c) != right_align.end();
      std::string shown = is_header ? style.Bold(cell) : cell;
      if (right) shown = std::string(pad, ' ') + shown;
      if (c + 1 < width.size()) {
        if (!right) shown += std::string(pad, ' ');
        shown += "  ";
      }
      out += shown;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header, true);
  for (const auto& r : rows) out += line(r, false);
  return out;
}

std::string ProgressBar(double fraction, int width, const Style& style) {
  if (!std::isfinite(fraction)) fraction = 0;
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int full = static_cast<int>(std::floor(fraction * width + 1e-9));
  std::string done, rest;
  for (int i = 0; i < full; ++i) done += style.color() ? "█" : "#";
  for (int i = full; i < width; ++i) rest += style.color() ? "░" : "-";
  char pct[16];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(std::floor(fraction * 100 + 1e-9)));
  std::string out = "[";
  out += style.Green(done);
  out += style.Dim(rest);
  out += "] ";
  out += pct;
  return out;
}

std::string FormatBytes(int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes < 1000) {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  } else if (bytes < 1000000) {
    std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  } else if (bytes < 1000000000) {
    std::snprintf(buf, sizeof buf, "%.2f MB", b / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  }
  return buf;
}

std::string FormatDuration(double seconds) {
  char buf[32];
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, seconds < 10 ? "%.1fs" : "%.0fs", seconds);
  } else if (seconds < 3600) {
    const int s = static_cast<int>(seconds);
    std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  } else {
    const int m = static_cast<int>(seconds / 60);
    std::snprintf(buf, sizeof buf, "%dh%02dm", m / 60, m % 60);
  }
  return buf;
}

std::string FormatAge(int64_t unix_ms, int64_t now_ms) {
  if (unix_ms <= 0) return "-";
  return FormatDuration(static_cast<double>(std::max<int64_t>(0, now_ms - unix_ms)) / 1000.0) + " ago";
}

std::string FormatInt(int64_t v) {
  // Built back to front: digits with a comma every three.
  uint64_t u = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  char buf[32];
  int i = sizeof buf;
  int digits = 0;
  do {
    if (digits > 0 && digits % 3 == 0) buf[--i] = ',';
    buf[--i] = static_cast<char>('0' + u % 10);
    u /= 10;
    ++digits;
  } while (u > 0);
  if (v < 0) buf[--i] = '-';
  return std::string(buf + i, sizeof buf - static_cast<size_t>(i));
}

}  // namespace caddie::cli
