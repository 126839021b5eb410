// Text clean-up for the corpus builder: byte strings of unknown encoding to
// clean UTF-8, and the plain-text body of a raw RFC 822 / MIME mail.
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace caddie::data {

// Returns `bytes` as valid UTF-8: valid UTF-8 sequences are kept; every other byte
// is read as Windows-1252 (Latin-1 for the bytes 1252 leaves undefined), which is
// what the old mails that are not UTF-8 almost always are.
std::string ToUtf8(std::string_view bytes);

// Decodes `bytes` declared in `charset` (a MIME charset name, any case) to UTF-8.
// Latin-1 / Windows-125x / ASCII are converted byte by byte; anything else goes
// through ToUtf8.
std::string CharsetToUtf8(std::string_view bytes, std::string_view charset);

// Normalises a document: UTF-8 (via ToUtf8), CR LF and lone CR to LF, NUL and
// other C0/C1 control characters (except tab and newline) removed, trailing
// spaces on each line removed, runs of more than two newlines collapsed to
// two, and leading/trailing whitespace trimmed.
std::string NormalizeDocument(std::string_view bytes);

// The plain-text body of a raw mail: headers are skipped, multipart bodies are
// walked recursively, and the text/plain parts (quoted-printable or base64
// decoded, converted from their charset) are joined by a blank line. Returns an
// empty string when the mail has no text/plain part (e.g. HTML only).
std::string MailPlainText(std::string_view raw_mail);

// Decoders for the two MIME transfer encodings (exposed for tests).
std::string DecodeQuotedPrintable(std::string_view in);
std::string DecodeBase64(std::string_view in);

}  // namespace caddie::data
