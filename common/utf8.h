// UTF-8 well-formedness (RFC 3629: no overlong forms, no surrogates, at most
// U+10FFFF). Text that crosses into a protobuf `string` field or a JSON writer
// must be well-formed: the sweep file's YAML scalars, the trainers' log bytes.
// Thread-safe: free functions, no state.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace caddie {

// Offset of the first byte at or after `from` that does not start or continue
// a well-formed UTF-8 sequence (a sequence cut short by the end counts), or npos.
size_t FirstInvalidUtf8(std::string_view s, size_t from = 0);

// How many bytes at the end of `s` (0 to 3) are the well-formed start of a
// sequence that `s` cuts short — text read in pieces holds them back for the next.
size_t IncompleteUtf8Suffix(std::string_view s);

// `s` with each byte that FirstInvalidUtf8 rejects replaced by `replacement`
// (e.g. "?", or "\xEF\xBF\xBD" for U+FFFD); well-formed text is returned unchanged.
std::string ReplaceInvalidUtf8(std::string_view s, std::string_view replacement);

}  // namespace caddie
