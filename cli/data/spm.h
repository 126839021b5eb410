// A narrow wrapper of libsentencepiece. SentencePiece's headers declare
// `absl::string_view` themselves, which clashes with the real Abseil, so only
// spm.cc includes them and this header uses plain std types.
// SpModel is thread-safe for concurrent const use (Encode/Decode), as
// SentencePieceProcessor is.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/data/document.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace caddie::data {

class SpModel {
 public:
  // Parses a serialized ModelProto (.model file bytes); nullptr and `error` set on failure.
  static std::unique_ptr<SpModel> FromBytes(const std::string& serialized, std::string* error);
  ~SpModel();

  int PieceSize() const;
  int UnkId() const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsUnused(int id) const;
  bool IsByte(int id) const;
  std::string IdToPiece(int id) const;
  float Score(int id) const;
  // Returns false and sets `error` on failure.
  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const;
  std::string Decode(const std::vector<int>& ids) const;

 private:
  SpModel();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

// Trains a model with SentencePieceTrainer on `docs`, fed one line (or a
// whitespace-bounded chunk of at most 4000 bytes, below the trainer's
// max_sentence_length) at a time. Returns "" and fills `serialized`, or the
// trainer's error message.
std::string TrainSentencePiece(const std::map<std::string, std::string>& flags,
                               const std::vector<Document>& docs, std::string* serialized);

}  // namespace caddie::data
