// One corpus document. Plain std types: shared by the Abseil side of the data
// pipeline and the SentencePiece wrapper (whose headers clash with Abseil's).
#pragma once

#include <string>

namespace caddie::data {

struct Document {
  std::string source;  // "sotu", "moby-dick", "spam-assassin-ham", "bible-kjv", or a file path
  std::string id;      // unique within the source (file name, book, line number)
  std::string text;    // normalised UTF-8
};

}  // namespace caddie::data
