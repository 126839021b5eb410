#include "cli/data/spm.h"

// Only this file includes SentencePiece (see spm.h): no Abseil headers here.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <unordered_map>

namespace caddie::data {
namespace {

// SentencePiece skips training sentences longer than max_sentence_length (4192
// bytes by default). Pieces never cross whitespace (split_by_whitespace), so
// cutting long lines at a space changes no statistics and keeps every document.
constexpr size_t kMaxChunk = 4000;

// Feeds documents to the trainer one line (or whitespace-bounded chunk) at a time.
class DocLineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit DocLineIterator(const std::vector<Document>& docs) : docs_(docs) { Advance(); }
  bool done() const override { return done_; }
  void Next() override { Advance(); }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void Advance() {
    for (;;) {
      if (doc_ >= docs_.size()) {
        done_ = true;
        return;
      }
      const std::string& text = docs_[doc_].text;
      if (pos_ >= text.size()) {
        ++doc_;
        pos_ = 0;
        continue;
      }
      size_t eol = text.find('\n', pos_);
      if (eol == std::string::npos) eol = text.size();
      size_t end = eol;
      if (end - pos_ > kMaxChunk) {
        end = text.rfind(' ', pos_ + kMaxChunk);
        if (end == std::string::npos || end <= pos_) end = pos_ + kMaxChunk;
        // never cut inside a UTF-8 sequence
        while (end > pos_ && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
      }
      std::string_view chunk(text.data() + pos_, end - pos_);
      pos_ = end == eol ? eol + 1 : end;
      while (!chunk.empty() && (chunk.front() == ' ' || chunk.front() == '\t')) chunk.remove_prefix(1);
      while (!chunk.empty() && (chunk.back() == ' ' || chunk.back() == '\t')) chunk.remove_suffix(1);
      if (chunk.empty()) continue;
      value_.assign(chunk);
      return;
    }
  }

  const std::vector<Document>& docs_;
  size_t doc_ = 0;
  size_t pos_ = 0;
  bool done_ = false;
  std::string value_;
};

}  // namespace

SpModel::SpModel() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
SpModel::~SpModel() = default;

std::unique_ptr<SpModel> SpModel::FromBytes(const std::string& serialized, std::string* error) {
  std::unique_ptr<SpModel> m(new SpModel());
  const auto s = m->sp_->LoadFromSerializedProto(serialized);
  if (!s.ok()) {
    *error = s.message();
    return nullptr;
  }
  return m;
}

int SpModel::PieceSize() const { return sp_->GetPieceSize(); }
int SpModel::UnkId() const { return sp_->unk_id(); }
bool SpModel::IsControl(int id) const { return sp_->IsControl(id); }
bool SpModel::IsUnknown(int id) const { return sp_->IsUnknown(id); }
bool SpModel::IsUnused(int id) const { return sp_->IsUnused(id); }
bool SpModel::IsByte(int id) const { return sp_->IsByte(id); }
std::string SpModel::IdToPiece(int id) const { return sp_->IdToPiece(id); }
float SpModel::Score(int id) const { return sp_->GetScore(id); }

bool SpModel::Encode(std::string_view text, std::vector<int>* ids, std::string* error) const {
  ids->clear();
  const auto s = sp_->Encode(absl::string_view(text.data(), text.size()), ids);
  if (!s.ok()) {
    *error = s.message();
    return false;
  }
  return true;
}

std::string SpModel::Decode(const std::vector<int>& ids) const {
  std::string out;
  sp_->Decode(ids, &out).IgnoreError();
  return out;
}

std::string TrainSentencePiece(const std::map<std::string, std::string>& flags,
                               const std::vector<Document>& docs, std::string* serialized) {
  const std::unordered_map<std::string, std::string> kwargs(flags.begin(), flags.end());
  DocLineIterator it(docs);
  const auto s = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, serialized);
  return s.ok() ? std::string() : std::string(s.message());
}

}  // namespace caddie::data
