#include "cli/data/text.h"

#include <gtest/gtest.h>

namespace caddie::data {
namespace {

TEST(ToUtf8, KeepsValidUtf8AndReadsOtherBytesAsWindows1252) {
  EXPECT_EQ(ToUtf8("caf\xC3\xA9 \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xF0\x9F\x98\x80");
  EXPECT_EQ(ToUtf8("caf\xE9"), "caf\xC3\xA9");               // Latin-1 é
  EXPECT_EQ(ToUtf8("\x93quoted\x94"), "\xE2\x80\x9Cquoted\xE2\x80\x9D");  // 1252 quotes
  EXPECT_EQ(ToUtf8("\x81"), "\xC2\x81");                      // undefined in 1252: Latin-1
  EXPECT_EQ(ToUtf8("\xC0\xAF"), "\xC3\x80\xC2\xAF");          // overlong form is not UTF-8
  EXPECT_EQ(ToUtf8("\xED\xA0\x80"), "\xC3\xAD\xC2\xA0\xE2\x82\xAC");  // surrogate rejected
  EXPECT_EQ(ToUtf8("\xE2\x82"), "\xC3\xA2\xE2\x80\x9A");      // truncated sequence
}

TEST(CharsetToUtf8, ConvertsDeclaredSingleByteCharsets) {
  // "\xC3\xA9" is valid UTF-8, but in a Latin-1 mail it is two characters.
  EXPECT_EQ(CharsetToUtf8("\xC3\xA9", "ISO-8859-1"), "\xC3\x83\xC2\xA9");
  EXPECT_EQ(CharsetToUtf8("\xC3\xA9", "utf-8"), "\xC3\xA9");
  EXPECT_EQ(CharsetToUtf8("\x80", "windows-1252"), "\xE2\x82\xAC");
}

TEST(NormalizeDocument, LineEndingsControlsBlankLinesAndTrim) {
  static constexpr char kRaw[] = "  a\r\nb\rc  \n\n\n\n d\x01\x7F\tx\0y  \n";
  const std::string raw(kRaw, sizeof(kRaw) - 1);  // keeps the embedded NUL
  EXPECT_EQ(NormalizeDocument(raw), "a\nb\nc\n\n d\txy");
  EXPECT_EQ(NormalizeDocument("\xEF\xBB\xBFhello"), "hello");  // BOM dropped
  EXPECT_EQ(NormalizeDocument(" \n\t\n"), "");
}

TEST(TransferEncodings, QuotedPrintableAndBase64) {
  EXPECT_EQ(DecodeQuotedPrintable("caf=C3=A9 soft=\nbreak =3D x=ZZ"), "caf\xC3\xA9 softbreak = x=ZZ");
  EXPECT_EQ(DecodeBase64("SGVsbG8s\r\nIHdvcmxkIQ=="), "Hello, world!");
}

TEST(MailPlainText, PlainMailDropsHeaders) {
  const std::string mail =
      "From someone@example.com  Thu Aug 22 12:36:23 2002\n"
      "Subject: hi\n"
      "Received: from a\n\tby b\n"
      "\n"
      "Body line one.\nBody line two.\n";
  EXPECT_EQ(MailPlainText(mail), "Body line one.\nBody line two.\n");
}

TEST(MailPlainText, MultipartKeepsTextPlainDecoded) {
  const std::string mail =
      "Subject: x\n"
      "Content-Type: multipart/alternative;\n boundary=\"BOUND\"\n"
      "\n"
      "preamble\n"
      "--BOUND\n"
      "Content-Type: text/plain; charset=iso-8859-1\n"
      "Content-Transfer-Encoding: quoted-printable\n"
      "\n"
      "caf=E9 ol=\n"
      "e\n"
      "--BOUND\n"
      "Content-Type: text/html\n"
      "\n"
      "<p>html</p>\n"
      "--BOUND\n"
      "Content-Type: multipart/mixed; boundary=inner\n"
      "\n"
      "--inner\n"
      "Content-Type: text/plain\n"
      "Content-Transfer-Encoding: base64\n"
      "\n"
      "bmVzdGVkIHBhcnQ=\n"
      "--inner--\n"
      "--BOUND--\n"
      "epilogue\n";
  EXPECT_EQ(MailPlainText(mail), "caf\xC3\xA9 ole\n\n\nnested part");
}

TEST(MailPlainText, HtmlOnlyMailHasNoText) {
  EXPECT_EQ(MailPlainText("Content-Type: text/html\n\n<b>buy</b>\n"), "");
}

}  // namespace
}  // namespace caddie::data
