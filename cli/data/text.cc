#include "cli/data/text.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <vector>

namespace caddie::data {
namespace {

// Windows-1252 code points for 0x80..0x9F; 0 where 1252 is undefined (read as Latin-1).
constexpr uint16_t kCp1252High[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

void AppendCodePoint(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t Cp1252(unsigned char b) {
  if (b >= 0x80 && b < 0xA0 && kCp1252High[b - 0x80] != 0) return kCp1252High[b - 0x80];
  return b;
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid
// (overlong forms, surrogates and code points past U+10FFFF are invalid).
size_t ValidUtf8Length(std::string_view s, size_t i, uint32_t* cp) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n;
  uint32_t v;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    v = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    v = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    v = (v << 6) | (d & 0x3F);
  }
  if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10FFFF)) ||
      (v >= 0xD800 && v <= 0xDFFF)) {
    return 0;
  }
  *cp = v;
  return n;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

struct MimePart {
  std::map<std::string, std::string> headers;  // lower-case name -> unfolded value
  std::string_view body;
};

// Splits a mail (or MIME part) into its headers and body at the first empty line.
MimePart ParsePart(std::string_view raw) {
  MimePart part;
  size_t pos = 0;
  std::string last;
  while (pos < raw.size()) {
    size_t eol = raw.find('\n', pos);
    if (eol == std::string_view::npos) eol = raw.size();
    std::string_view line = raw.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = eol + 1;
    if (line.empty()) {
      part.body = pos <= raw.size() ? raw.substr(pos) : std::string_view();
      return part;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !last.empty()) {
      std::string& value = part.headers[last];
      value.push_back(' ');
      value.append(Trim(line));
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 ||
        line.substr(0, colon).find(' ') != std::string_view::npos) {
      last.clear();  // e.g. the mbox "From addr date" line
      continue;
    }
    last = Lower(line.substr(0, colon));
    part.headers[last] = std::string(Trim(line.substr(colon + 1)));
  }
  part.body = std::string_view();  // headers only
  return part;
}

// The value of parameter `name` in a header such as `text/plain; charset="x"`.
std::string HeaderParam(const std::string& value, std::string_view name) {
  const std::string lower = Lower(value);
  size_t pos = 0;
  while ((pos = lower.find(name, pos)) != std::string::npos) {
    const bool starts = pos == 0 || lower[pos - 1] == ';' || std::isspace(static_cast<unsigned char>(lower[pos - 1]));
    size_t eq = pos + name.size();
    while (eq < lower.size() && lower[eq] == ' ') ++eq;
    if (starts && eq < lower.size() && lower[eq] == '=') {
      size_t v = eq + 1;
      while (v < value.size() && value[v] == ' ') ++v;
      if (v < value.size() && value[v] == '"') {
        const size_t end = value.find('"', v + 1);
        return value.substr(v + 1, end == std::string::npos ? std::string::npos : end - v - 1);
      }
      size_t end = v;
      while (end < value.size() && value[end] != ';' && !std::isspace(static_cast<unsigned char>(value[end]))) ++end;
      return value.substr(v, end - v);
    }
    pos += name.size();
  }
  return "";
}

void CollectPlainText(std::string_view raw, int depth, std::vector<std::string>& out) {
  if (depth > 8) return;  // pathological nesting
  MimePart part = ParsePart(raw);
  const auto ct_it = part.headers.find("content-type");
  const std::string ct = ct_it == part.headers.end() ? "text/plain" : ct_it->second;
  const std::string type = Lower(Trim(std::string_view(ct).substr(0, ct.find(';'))));
  if (type.rfind("multipart/", 0) == 0) {
    const std::string boundary = HeaderParam(ct, "boundary");
    if (boundary.empty()) return;
    const std::string delim = "--" + boundary;
    std::string_view body = part.body;
    size_t pos = 0;
    size_t start = std::string_view::npos;
    while (pos < body.size()) {
      size_t eol = body.find('\n', pos);
      if (eol == std::string_view::npos) eol = body.size();
      std::string_view line = body.substr(pos, eol - pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.rfind(delim, 0) == 0) {
        if (start != std::string_view::npos) {
          CollectPlainText(body.substr(start, pos - start), depth + 1, out);
        }
        if (line.substr(delim.size()).rfind("--", 0) == 0) return;  // closing delimiter
        start = eol + 1;
      }
      pos = eol + 1;
    }
    if (start != std::string_view::npos && start < body.size()) {
      CollectPlainText(body.substr(start), depth + 1, out);
    }
    return;
  }
  if (type == "message/rfc822") {
    CollectPlainText(part.body, depth + 1, out);
    return;
  }
  if (type != "text/plain" && type != "text") return;
  const auto cte_it = part.headers.find("content-transfer-encoding");
  const std::string cte = cte_it == part.headers.end() ? "" : Lower(Trim(cte_it->second));
  std::string decoded;
  if (cte == "quoted-printable") {
    decoded = DecodeQuotedPrintable(part.body);
  } else if (cte == "base64") {
    decoded = DecodeBase64(part.body);
  } else {
    decoded = std::string(part.body);
  }
  out.push_back(CharsetToUtf8(decoded, HeaderParam(ct, "charset")));
}

}  // namespace

std::string ToUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    uint32_t cp = 0;
    const size_t n = ValidUtf8Length(bytes, i, &cp);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      AppendCodePoint(Cp1252(static_cast<unsigned char>(bytes[i])), out);
      ++i;
    }
  }
  return out;
}

std::string CharsetToUtf8(std::string_view bytes, std::string_view charset) {
  const std::string cs = Lower(Trim(charset));
  const bool single_byte = cs.rfind("iso-8859", 0) == 0 || cs.rfind("windows-125", 0) == 0 ||
                           cs == "latin1" || cs == "latin-1" || cs == "cp1252";
  if (!single_byte) return ToUtf8(bytes);
  std::string out;
  out.reserve(bytes.size());
  for (char c : bytes) AppendCodePoint(Cp1252(static_cast<unsigned char>(c)), out);
  return out;
}

std::string NormalizeDocument(std::string_view bytes) {
  const std::string utf8 = ToUtf8(bytes);
  std::string text;
  text.reserve(utf8.size());
  size_t i = 0;
  while (i < utf8.size()) {
    uint32_t cp = 0;
    const size_t n = ValidUtf8Length(utf8, i, &cp);  // always > 0 after ToUtf8
    if (cp == '\r') {
      text.push_back('\n');
      if (i + 1 < utf8.size() && utf8[i + 1] == '\n') ++i;
    } else if (cp == '\n' || cp == '\t') {
      text.push_back(static_cast<char>(cp));
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == 0xFEFF) {
      // control characters and byte-order marks carry no text
    } else {
      text.append(utf8, i, n);
    }
    i += n;
  }
  // Per line: drop trailing blanks; collapse runs of blank lines to one.
  std::string out;
  out.reserve(text.size());
  int newlines = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    if (line.empty()) {
      ++newlines;
    } else {
      if (!out.empty()) out.append(std::min(newlines + 1, 2), '\n');
      newlines = 0;
      out.append(line);
    }
    pos = eol + 1;
  }
  return std::string(Trim(out));
}

std::string MailPlainText(std::string_view raw_mail) {
  std::vector<std::string> parts;
  CollectPlainText(raw_mail, 0, parts);
  std::string out;
  for (const auto& p : parts) {
    if (Trim(p).empty()) continue;
    if (!out.empty()) out += "\n\n";
    out += p;
  }
  return out;
}

std::string DecodeQuotedPrintable(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '=') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 1 < in.size() && in[i + 1] == '\n') {  // soft line break
      ++i;
    } else if (i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') {
      i += 2;
    } else if (i + 2 < in.size() && hex(in[i + 1]) >= 0 && hex(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2])));
      i += 2;
    } else {
      out.push_back('=');  // malformed escape: keep it literally
    }
  }
  return out;
}

std::string DecodeBase64(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == '=') break;
    else continue;  // line breaks and stray characters
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

}  // namespace caddie::data
