#include "common/utf8.h"

namespace caddie {
namespace {

// The length of the sequence lead byte `b` starts (1 for ASCII, 0 for a byte
// no sequence starts with) and the allowed range of its second byte.
size_t SequenceLength(unsigned char b, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) {
    if (b == 0xE0) *lo = 0xA0;
    if (b == 0xED) *hi = 0x9F;  // no surrogates
    return 3;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    if (b == 0xF0) *lo = 0x90;
    if (b == 0xF4) *hi = 0x8F;  // at most U+10FFFF
    return 4;
  }
  return 0;
}

// How many bytes of the sequence at s[i] (of `len` bytes) are present and well formed.
size_t WellFormedPrefix(std::string_view s, size_t i, size_t len, unsigned char lo, unsigned char hi) {
  size_t k = 1;
  for (; k < len && i + k < s.size(); ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
  }
  return k;
}

}  // namespace

size_t FirstInvalidUtf8(std::string_view s, size_t from) {
  size_t i = from;
  while (i < s.size()) {
    unsigned char lo, hi;
    const size_t len = SequenceLength(static_cast<unsigned char>(s[i]), &lo, &hi);
    if (len == 0 || WellFormedPrefix(s, i, len, lo, hi) < len) return i;
    i += len;
  }
  return std::string_view::npos;
}

size_t IncompleteUtf8Suffix(std::string_view s) {
  for (size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    const size_t i = s.size() - k;
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x80 && b <= 0xBF) continue;  // a continuation byte: look further back
    unsigned char lo, hi;
    const size_t len = SequenceLength(b, &lo, &hi);
    return len > k && WellFormedPrefix(s, i, len, lo, hi) == k ? k : 0;
  }
  return 0;
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
