// The `caddie data` pipeline: corpus -> per-vocab tokenizer -> Parameter Golf
// shards, byte table and meta.json in `<out>/sp<V>/` (docs/contracts.md, "Data
// directory"); and the import of existing shards (e.g. fineweb10B_sp1024).
// Every output directory appears complete or not at all: it is built under a
// temp name and renamed into place. Thread-safe: free functions; each call owns
// its output paths (two concurrent builds of the same path: the last rename wins,
// both results complete).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/data/corpus.h"
#include "cli/data/spm.h"
#include "common/core/shard_format.h"

namespace caddie::data {

struct DataOptions {
  std::vector<int> vocabs = {1024};
  std::string out_dir = "data";
  std::vector<std::string> corpus = {"builtin"};  // "builtin" and/or .jsonl / text files
  int64_t max_bytes = 0;                          // 0: the whole corpus
  uint64_t seed = 1337;
  double val_fraction = 0.05;
  SplitOrder split_order = SplitOrder::kSeeded;  // kHead: the reference's split
  std::string cache_dir;                          // empty: DefaultCacheDir()
  int64_t shard_tokens = 100'000'000;             // tokens per shard, as the reference
  int threads = 0;                                // 0: all cores
  bool progress = true;
  bool force = false;                             // rebuild even when up to date
};

struct SplitSummary {
  int64_t docs = 0;
  int64_t bytes = 0;        // UTF-8 bytes of the documents' text
  int64_t table_bytes = 0;  // bytes the byte table counts (val_bpb's denominator)
  int64_t tokens = 0;       // including one BOS per document
  int64_t shards = 0;
  int64_t unk_tokens = 0;
};

struct VocabSummary {
  int vocab = 0;
  int sp_vocab = 0;
  bool byte_fallback = true;
  double character_coverage = 0.999;
  bool up_to_date = false;  // nothing rebuilt
  // The tokenizer was loaded from <cache>/tokenizers/ (same corpus and vocab), not
  // trained; false when up_to_date (no tokenizer was needed).
  bool tokenizer_from_cache = false;
  std::string dir;
  SplitSummary train, val;
};

struct DataSummary {
  std::string corpus_hash;
  int64_t duplicates_removed = 0;
  std::vector<VocabSummary> vocabs;
  double seconds = 0;
};

// Builds `<out>/corpus/{train,val}.jsonl` and `<out>/sp<V>/` for each vocab,
// skipping whatever is already up to date. Errors name the file or value.
absl::StatusOr<DataSummary> BuildData(const DataOptions& opts);

// A human-readable summary table (documents, bytes, tokens per split, bytes per token).
std::string FormatSummary(const DataSummary& s);

// Encodes `docs` (BOS id 1, then the document's tokens, no EOS; as the
// reference) into `<dir>/<split>_000000.bin`, ... of at most `shard_tokens` tokens.
absl::StatusOr<SplitSummary> WriteSplitShards(const SpModel& sp,
                                              const ByteTable& table,
                                              const std::vector<Document>& docs,
                                              const std::string& dir, const std::string& split,
                                              int64_t shard_tokens, int threads, bool progress);

// Bytes the table counts for a token stream (BOS separates documents).
int64_t TableBytes(const ByteTable& table, const std::vector<uint16_t>& tokens);

struct ImportOptions {
  std::string shards_dir;  // holds *train_*.bin and *val_*.bin
  std::string tokenizer;   // .model; empty: <shards_dir>/tokenizer.model or the one *.model there
  std::string out_dir;     // empty: write byte_table.json and meta.json beside the shards
};

// Checks every shard's header against its size, checks validation token ids
// against the tokenizer, and writes byte_table.json / meta.json (plus links to
// the unchanged shards and a copy of the tokenizer when out_dir is another folder).
absl::StatusOr<VocabSummary> ImportShards(const ImportOptions& opts);

}  // namespace caddie::data
