#include "cli/data/tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace caddie::data {
namespace {

namespace fs = std::filesystem;

struct Attempt {
  bool byte_fallback;
  double coverage;
};

bool IsVocabTooSmall(const std::string& error) {
  return error.find("Vocabulary size is smaller than required_chars") !=
         std::string::npos;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SpModel>> LoadTokenizerFromBytes(const std::string& serialized) {
  std::string error;
  auto sp = SpModel::FromBytes(serialized, &error);
  if (!sp) return absl::DataLossError(absl::StrCat("not a SentencePiece model: ", error));
  return sp;
}

absl::StatusOr<std::unique_ptr<SpModel>> LoadTokenizer(const std::string& path) {
  if (!fs::is_regular_file(path)) {
    return absl::NotFoundError(absl::StrCat(path, ": tokenizer model not found"));
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  auto sp = LoadTokenizerFromBytes(bytes);
  if (!sp.ok()) return absl::DataLossError(absl::StrCat(path, ": ", sp.status().message()));
  return sp;
}

absl::StatusOr<TokenizerModel> TrainOrLoadTokenizer(const std::vector<Document>& docs, int vocab,
                                                    const std::string& corpus_hash,
                                                    const std::string& cache_dir, int threads) {
  if (vocab < kMinVocab || vocab > kMaxVocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab ", vocab, " is outside ", kMinVocab, "..", kMaxVocab));
  }
  if (docs.empty()) return absl::InvalidArgumentError("empty corpus: nothing to train a tokenizer on");
  const fs::path dir = fs::path(cache_dir) / "tokenizers";
  const std::string stem = absl::StrCat(corpus_hash, "-bpe", vocab, "-r", kTokenizerRecipe);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(dir.string(), ": cannot create: ", ec.message()));

  TokenizerModel model;
  const fs::path model_path = dir / (stem + ".model");
  if (fs::exists(model_path)) {
    ASSIGN_OR_RETURN(model.serialized, ReadFile(model_path.string()));
    auto sp = LoadTokenizerFromBytes(model.serialized);
    auto settings = ReadFile((dir / (stem + ".coverage")).string());
    if (sp.ok() && settings.ok()) {
      model.from_cache = true;
      model.character_coverage = std::atof(settings->c_str());
    } else {
      fs::remove(model_path, ec);  // a damaged cache entry: retrain
      model.serialized.clear();
    }
  }
  if (!model.from_cache) {
    const Attempt attempts[] = {{true, 0.999}, {false, 1.0}, {false, 0.9995}, {false, 0.999},
                                {false, 0.995}, {false, 0.99}, {false, 0.98}};
    std::string last;
    bool trained = false;
    for (const Attempt& a : attempts) {
      const std::map<std::string, std::string> flags = {
          {"model_type", "bpe"},
          {"vocab_size", std::to_string(vocab)},
          {"character_coverage", absl::StrFormat("%g", a.coverage)},
          {"byte_fallback", a.byte_fallback ? "true" : "false"},
          {"split_digits", "true"},
          {"normalization_rule_name", "nmt_nfkc"},
          {"add_dummy_prefix", "false"},
          {"pad_id", "0"},
          {"bos_id", "1"},
          {"eos_id", "2"},
          {"unk_id", "3"},
          {"hard_vocab_limit", "false"},
          {"num_threads", std::to_string(std::max(1, threads))},
          {"minloglevel", "2"},
          // Without byte fallback, unknown characters become <unk>, which the byte
          // table counts as 0 bytes (as the reference does): decode it to nothing
          // too, so the decoded text is exactly what val_bpb counts.
          {"unk_surface", a.byte_fallback ? " \xE2\x81\x87 " : ""},
      };
      std::string serialized;
      last = TrainSentencePiece(flags, docs, &serialized);
      if (last.empty()) {
        model.serialized = std::move(serialized);
        model.byte_fallback = a.byte_fallback;
        model.character_coverage = a.coverage;
        trained = true;
        break;
      }
      if (!IsVocabTooSmall(last)) break;
    }
    if (!trained) {
      return absl::InternalError(absl::StrCat("SentencePiece training for vocab ", vocab,
                                              " failed: ", last));
    }
    // The coverage used is not recorded in the model: keep it beside the model.
    RETURN_IF_ERROR(WriteFileAtomically((dir / (stem + ".coverage")).string(),
                                        absl::StrFormat("%g\n", model.character_coverage)));
    RETURN_IF_ERROR(WriteFileAtomically(model_path.string(), model.serialized));
  }
  ASSIGN_OR_RETURN(auto sp, LoadTokenizerFromBytes(model.serialized));
  model.sp_vocab_size = sp->PieceSize();
  model.byte_fallback = false;
  for (int id = 0; id < sp->PieceSize(); ++id) {
    if (sp->IsByte(id)) model.byte_fallback = true;
    absl::StrAppend(&model.vocab_text, sp->IdToPiece(id), "\t",
                    absl::StrFormat("%g", sp->Score(id)), "\n");
  }
  return model;
}

ByteTable BuildByteTable(const SpModel& sp, int vocab) {
  const int pieces = sp.PieceSize();
  const int size = std::max(pieces, vocab);
  ByteTable t;
  t.base_bytes.assign(size, 0);
  t.has_leading_space.assign(size, 0);
  t.is_boundary.assign(size, 1);
  static const std::string kSpace = "\xE2\x96\x81";  // "▁"
  for (int id = 0; id < pieces; ++id) {
    if (sp.IsControl(id) || sp.IsUnknown(id) || sp.IsUnused(id)) continue;
    t.is_boundary[id] = 0;
    if (sp.IsByte(id)) {
      t.base_bytes[id] = 1;
      continue;
    }
    std::string piece = sp.IdToPiece(id);
    if (piece.rfind(kSpace, 0) == 0) {
      t.has_leading_space[id] = 1;
      piece.erase(0, kSpace.size());
    }
    t.base_bytes[id] = static_cast<int16_t>(piece.size());
  }
  return t;
}

}  // namespace caddie::data
