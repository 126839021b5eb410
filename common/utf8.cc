#include "common/utf8.h"

namespace caddie {

size_t FirstInvalidUtf8(std::string_view s, size_t from) {
  size_t i = from;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b < 0x80) {
      ++i;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

std::string ReplaceInvalidUtf8(std::string_view s, std::string_view replacement) {
  std::string out;
  out.reserve(s.size());
  size_t done = 0;
  for (size_t bad = FirstInvalidUtf8(s); bad != std::string_view::npos; bad = FirstInvalidUtf8(s, done)) {
    out.append(s.substr(done, bad - done));
    out.append(replacement);
    done = bad + 1;
  }
  out.append(s.substr(done));
  return out;
}

}  // namespace caddie
