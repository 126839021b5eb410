// SentencePiece BPE tokenizers with the Parameter Golf settings, trained through
// libsentencepiece, cached by (corpus hash, vocab size); and the per-token byte
// table that val_bpb needs, built exactly as the reference train_gpt.py builds it.
// Thread-safe: free functions; the cache is written through temp names and renames.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/data/corpus.h"
#include "cli/data/spm.h"
#include "common/core/shard_format.h"

namespace caddie::data {

inline constexpr int kMinVocab = 256;
inline constexpr int kMaxVocab = 65535;  // token ids must fit the shards' uint16
// Bumped whenever the training recipe changes, so cached models and data
// directories built by an older recipe are rebuilt.
inline constexpr int kTokenizerRecipe = 3;

struct TokenizerModel {
  std::string serialized;      // the .model file (a ModelProto)
  std::string vocab_text;      // the .vocab file: "piece\tscore" per line
  int sp_vocab_size = 0;       // pieces in the model (<= the requested vocab: hard_vocab_limit=false)
  bool byte_fallback = true;   // false only when the vocab is too small for 256 byte pieces
  double character_coverage = 0.999;
  bool from_cache = false;
};

// Trains (or loads from `cache_dir`/tokenizers/) a BPE model of `vocab` pieces on
// `docs` with the Parameter Golf trainer settings: byte_fallback, split_digits,
// nmt_nfkc, add_dummy_prefix=false, character_coverage 0.999, pad/bos/eos/unk =
// 0/1/2/3, hard_vocab_limit=false. A vocab too small for the 4 special + 256 byte
// pieces + the alphabet (e.g. 256) cannot use byte fallback: it is then trained
// without it and with character_coverage 1.0 (lowered only if the alphabet still
// does not fit), and TokenizerModel says so. `corpus_hash` is CorpusHash(docs).
// InvalidArgument for a vocab outside [256, 65535].
absl::StatusOr<TokenizerModel> TrainOrLoadTokenizer(const std::vector<Document>& docs, int vocab,
                                                    const std::string& corpus_hash,
                                                    const std::string& cache_dir, int threads);

// Loads a .model file; NotFound / DataLoss errors name the file.
absl::StatusOr<std::unique_ptr<SpModel>> LoadTokenizer(const std::string& path);
absl::StatusOr<std::unique_ptr<SpModel>> LoadTokenizerFromBytes(const std::string& serialized);

// The byte table of the reference's build_sentencepiece_luts: table size
// max(pieces, vocab); control/unknown/unused pieces (and ids past the model) are
// boundaries of 0 bytes; byte-fallback pieces <0xXX> are 1 byte; other pieces
// count the UTF-8 bytes after a leading "▁", which sets has_leading_space.
ByteTable BuildByteTable(const SpModel& sp, int vocab);

}  // namespace caddie::data
