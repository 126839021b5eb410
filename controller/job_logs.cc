#include "controller/job_logs.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace caddie::controller {

LogText AssembleLog(const LogRead& held, std::optional<int64_t> from_offset, int tail_lines) {
  LogText out;
  const int64_t start = from_offset.value_or(held.held_from);
  std::string bytes;
  int64_t cursor = start;
  for (const auto& c : held.chunks) {
    std::string_view data = c.data();
    int64_t offset = c.offset();
    if (offset + static_cast<int64_t>(data.size()) <= cursor) continue;
    if (offset < cursor) {
      data.remove_prefix(static_cast<size_t>(cursor - offset));
      offset = cursor;
    }
    if (offset > cursor) {
      if (bytes.empty()) {
        out.dropped_bytes += offset - cursor;  // before the text: dropped by the cap, or never sent
      } else {
        if (bytes.back() != '\n') bytes += '\n';
        absl::StrAppend(&bytes, "[caddie: ", offset - cursor,
                        " bytes missing here: the trainer wrote faster than the worker sends logs]\n");
      }
      cursor = offset;
    }
    bytes.append(data);
    cursor += static_cast<int64_t>(data.size());
  }
  if (bytes.empty() && held.end_offset > cursor) {
    out.dropped_bytes += held.end_offset - cursor;  // asked from bytes no longer held
    cursor = held.end_offset;
  }
  size_t begin = 0;
  if (!from_offset) {
    // The last tail_lines lines: a final line without '\n' counts as one.
    const int n = tail_lines > 0 ? tail_lines : 100;
    size_t pos = bytes.size();
    if (pos > 0 && bytes[pos - 1] == '\n') --pos;
    int lines = 0;
    while (pos > 0) {
      const size_t nl = bytes.rfind('\n', pos - 1);
      if (nl == std::string::npos) {
        pos = 0;
        break;
      }
      if (++lines == n) {
        pos = nl + 1;
        break;
      }
      pos = nl;
    }
    begin = pos;
    // Dropped bytes matter only when the tail reaches back to them.
    out.dropped_bytes = begin == 0 ? held.held_from : 0;
  }
  if (begin == 0 && out.dropped_bytes > 0) {
    // The first held byte may be in the middle of a line: start at the next one.
    const size_t nl = bytes.find('\n');
    if (nl != std::string::npos && nl + 1 < bytes.size()) {
      begin = nl + 1;
      out.dropped_bytes += static_cast<int64_t>(begin);
    }
  }
  std::string_view text = std::string_view(bytes).substr(begin);
  const size_t cut = IncompleteUtf8Suffix(text);
  text.remove_suffix(cut);
  out.next_offset = cursor - static_cast<int64_t>(cut);
  out.text = ReplaceInvalidUtf8(text, "\xEF\xBF\xBD");
  return out;
}

}  // namespace caddie::controller
