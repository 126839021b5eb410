#include "cli/data/builder.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "caddie/version.h"
#include "cli/data/progress.h"
#include "cli/data/tokenizer.h"
#include "common/status_macros.h"

namespace caddie::data {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int kBosId = 1;
constexpr char kFormat[] = "caddie-data/1";

absl::Status FromLite(const LiteStatus& s) {
  return s.ok() ? absl::OkStatus() : absl::DataLossError(s.message());
}

// A failed write is I/O (disk full, file too large), not bad input: Unavailable,
// as WriteFileAtomically reports it (`caddie data` exits 1, not 2).
absl::Status FromLiteWrite(const LiteStatus& s) {
  return s.ok() ? absl::OkStatus() : absl::UnavailableError(s.message());
}

// What the corpus depends on: sources (with size and mtime of user files), cap,
// seed, validation fraction. Equal keys mean an equal corpus.
absl::StatusOr<std::string> CorpusRecipe(const DataOptions& o) {
  json sources = json::array();
  for (const auto& c : o.corpus) {
    if (c == "builtin") {
      sources.push_back({{"builtin", kStdlibPackage}, {"sha512", kStdlibSha512Hex},
                         {"bible", kBibleSha256Hex}});
      continue;
    }
    std::error_code ec;
    const auto size = fs::file_size(c, ec);
    if (ec) return absl::NotFoundError(absl::StrCat(c, ": corpus file not found"));
    const auto mtime = fs::last_write_time(c, ec).time_since_epoch().count();
    sources.push_back({{"file", fs::absolute(c).string()}, {"size", size}, {"mtime", mtime}});
  }
  json r = {{"sources", sources}, {"max_bytes", o.max_bytes}, {"seed", o.seed},
            {"val_fraction", o.val_fraction}, {"format", kFormat}, {"recipe", kCorpusRecipe}};
  // Only a non-default split joins the recipe, so corpora built before it existed stay valid.
  if (o.split_order != SplitOrder::kSeeded) r["val_split"] = SplitOrderName(o.split_order);
  return r.dump();
}

absl::StatusOr<Split> LoadOrBuildCorpus(const DataOptions& o, const std::string& cache_dir,
                                        int64_t* duplicates) {
  ASSIGN_OR_RETURN(const std::string recipe, CorpusRecipe(o));
  const fs::path dir = fs::path(o.out_dir) / "corpus";
  const fs::path marker = dir / "corpus.json";
  if (!o.force && fs::exists(marker)) {
    auto text = ReadFile(marker.string());
    if (text.ok()) {
      json m = json::parse(*text, nullptr, false);
      if (!m.is_discarded() && m.is_object() && m.value("recipe", "") == recipe) {
        Split s;
        auto train = ReadJsonl((dir / "train.jsonl").string());
        auto val = ReadJsonl((dir / "val.jsonl").string());
        if (train.ok() && val.ok() && !train->empty() && !val->empty()) {
          s.train = *std::move(train);
          s.val = *std::move(val);
          *duplicates = m.value("duplicates_removed", int64_t{0});
          return s;
        }
      }
    }
  }
  std::vector<Document> docs;
  for (const auto& c : o.corpus) {
    if (c == "builtin") {
      ASSIGN_OR_RETURN(auto b, LoadBuiltinCorpus(cache_dir, o.progress));
      docs.insert(docs.end(), std::make_move_iterator(b.begin()), std::make_move_iterator(b.end()));
    } else {
      ASSIGN_OR_RETURN(auto u, LoadUserFiles({c}));
      docs.insert(docs.end(), std::make_move_iterator(u.begin()), std::make_move_iterator(u.end()));
    }
  }
  if (docs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty corpus: no document with text in ", absl::StrJoin(o.corpus, ", ")));
  }
  *duplicates = Dedupe(docs);
  ASSIGN_OR_RETURN(Split split, SplitCorpus(std::move(docs), o.seed, o.val_fraction, o.max_bytes,
                                                     o.split_order));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(dir.string(), ": cannot create: ", ec.message()));
  fs::remove(marker, ec);  // the JSONL files are being replaced: invalid until the marker is back
  RETURN_IF_ERROR(WriteJsonl((dir / "train.jsonl").string(), split.train));
  RETURN_IF_ERROR(WriteJsonl((dir / "val.jsonl").string(), split.val));
  json m = {{"recipe", recipe},
            {"duplicates_removed", *duplicates},
            {"train_docs", split.train.size()},
            {"val_docs", split.val.size()},
            {"train_bytes", TextBytes(split.train)},
            {"val_bytes", TextBytes(split.val)}};
  RETURN_IF_ERROR(WriteFileAtomically(marker.string(), m.dump(2) + "\n"));
  return split;
}

json SplitJson(const SplitSummary& s) {
  return {{"docs", s.docs},     {"bytes", s.bytes},   {"table_bytes", s.table_bytes},
          {"tokens", s.tokens}, {"shards", s.shards}, {"unk_tokens", s.unk_tokens}};
}

SplitSummary SplitFromJson(const json& j) {
  SplitSummary s;
  s.docs = j.value("docs", int64_t{0});
  s.bytes = j.value("bytes", int64_t{0});
  s.table_bytes = j.value("table_bytes", int64_t{0});
  s.tokens = j.value("tokens", int64_t{0});
  s.shards = j.value("shards", int64_t{0});
  s.unk_tokens = j.value("unk_tokens", int64_t{0});
  return s;
}

// Replaces `final_dir` with the complete `tmp_dir`. On failure `tmp_dir` is
// removed and `final_dir` is what it was.
absl::Status SwapDirectory(const fs::path& tmp_dir, const fs::path& final_dir) {
  std::error_code ec;
  const fs::path old = final_dir.parent_path() / absl::StrCat(".", final_dir.filename().string(),
                                                              ".old.", ::getpid());
  // Left by a process of the same pid that died between the renames (pids repeat
  // in containers): a non-empty one would make the rename below fail for ever.
  fs::remove_all(old, ec);
  bool moved_aside = false;
  if (fs::exists(final_dir)) {
    fs::rename(final_dir, old, ec);
    if (ec) {
      const std::string why = ec.message();
      fs::remove_all(tmp_dir, ec);
      return absl::UnavailableError(absl::StrCat(final_dir.string(), ": cannot move aside: ", why));
    }
    moved_aside = true;
  }
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove_all(tmp_dir, ec);
    if (moved_aside) fs::rename(old, final_dir, ec);
    return absl::UnavailableError(absl::StrCat(final_dir.string(), ": rename failed: ", why));
  }
  fs::remove_all(old, ec);
  return absl::OkStatus();
}

// The meta.json of an up-to-date directory, or null.
json UpToDateMeta(const fs::path& dir, const std::string& key) {
  auto text = ReadFile((dir / "meta.json").string());
  if (!text.ok()) return nullptr;
  json m = json::parse(*text, nullptr, false);
  if (m.is_discarded() || !m.is_object() || m.value("build_key", "") != key) return nullptr;
  for (const char* f : {"byte_table.json", "tokenizer.model", "tokenizer.vocab"}) {
    if (!fs::exists(dir / f)) return nullptr;
  }
  for (const char* split : {"train", "val"}) {
    auto shards = ListShards(dir.string(), split);
    if (!shards.ok()) return nullptr;
    if (static_cast<int64_t>(shards->size()) != m["splits"][split].value("shards", int64_t{-1})) return nullptr;
  }
  return m;
}

absl::StatusOr<VocabSummary> BuildVocab(const DataOptions& o, const Split& split,
                                        const std::string& corpus_hash, const std::string& cache_dir,
                                        int vocab, int threads) {
  VocabSummary vs;
  vs.vocab = vocab;
  const fs::path final_dir = fs::path(o.out_dir) / absl::StrCat("sp", vocab);
  vs.dir = final_dir.string();
  const std::string key = absl::StrCat(corpus_hash, ":", vocab, ":", o.shard_tokens, ":", kFormat,
                                       ":r", kTokenizerRecipe);
  if (!o.force) {
    json m = UpToDateMeta(final_dir, key);
    if (!m.is_null()) {
      vs.up_to_date = true;
      vs.sp_vocab = m.value("sp_vocab_size", 0);
      vs.byte_fallback = m.value("byte_fallback", true);
      vs.character_coverage = m.value("character_coverage", 0.0);
      vs.train = SplitFromJson(m["splits"]["train"]);
      vs.val = SplitFromJson(m["splits"]["val"]);
      return vs;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  // Like the reference (its tokenizer reads docs_selected.jsonl from the top, where
  // the validation documents are), the tokenizer trains on every document. It also
  // means a small vocab without byte fallback has every character of the
  // validation text in its alphabet, so validation needs no <unk>.
  std::vector<Document> all_docs = split.val;
  all_docs.insert(all_docs.end(), split.train.begin(), split.train.end());
  absl::StatusOr<TokenizerModel> trained;
  {
    ElapsedTicker ticker(absl::StrFormat("tokenizer: SentencePiece BPE, vocab %d, %d docs", vocab,
                                         all_docs.size()),
                         o.progress);
    trained = TrainOrLoadTokenizer(all_docs, vocab, corpus_hash, cache_dir, threads);
  }
  all_docs = {};
  if (!trained.ok()) return trained.status();
  TokenizerModel model = *std::move(trained);
  if (o.progress) {
    std::fprintf(stderr, "tokenizer vocab %d: %d pieces%s%s (%.1fs)\n", vocab, model.sp_vocab_size,
               model.byte_fallback ? ", byte fallback" : ", NO byte fallback (vocab too small)",
               model.from_cache ? ", from cache" : "",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  vs.sp_vocab = model.sp_vocab_size;
  vs.tokenizer_from_cache = model.from_cache;
  vs.byte_fallback = model.byte_fallback;
  vs.character_coverage = model.character_coverage;
  ASSIGN_OR_RETURN(auto sp, LoadTokenizerFromBytes(model.serialized));
  const ByteTable table = BuildByteTable(*sp, vocab);

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  const fs::path tmp = fs::path(o.out_dir) / absl::StrCat(".sp", vocab, ".tmp.", ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(tmp.string(), ": cannot create: ", ec.message()));
  auto build = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(vs.val, WriteSplitShards(*sp, table, split.val, tmp.string(), "val",
                                              o.shard_tokens, threads, o.progress));
    ASSIGN_OR_RETURN(vs.train, WriteSplitShards(*sp, table, split.train, tmp.string(), "train",
                                                o.shard_tokens, threads, o.progress));
    RETURN_IF_ERROR(FromLiteWrite(WriteByteTable((tmp / "byte_table.json").string(), table)));
    RETURN_IF_ERROR(WriteFileAtomically((tmp / "tokenizer.model").string(), model.serialized));
    RETURN_IF_ERROR(WriteFileAtomically((tmp / "tokenizer.vocab").string(), model.vocab_text));
    json meta = {
        {"format", kFormat},
        {"name", final_dir.filename().string()},
        {"build_key", key},
        {"corpus_hash", corpus_hash},
        {"corpus", o.corpus},
        {"max_bytes", o.max_bytes},
        {"seed", o.seed},
        {"val_fraction", o.val_fraction},
        {"val_split", SplitOrderName(o.split_order)},
        {"vocab_size", table.vocab_size()},
        {"requested_vocab_size", vocab},
        {"sp_vocab_size", model.sp_vocab_size},
        {"tokenizer",
         {{"type", "sentencepiece_bpe"}, {"byte_fallback", model.byte_fallback},
          {"character_coverage", model.character_coverage}, {"split_digits", true},
          {"normalization_rule_name", "nmt_nfkc"}, {"add_dummy_prefix", false},
          {"pad_id", 0}, {"bos_id", 1}, {"eos_id", 2}, {"unk_id", 3},
          {"hard_vocab_limit", false}}},
        {"byte_fallback", model.byte_fallback},
        {"character_coverage", model.character_coverage},
        {"bos_id", kBosId},
        {"append_eos", false},
        {"shard_tokens", o.shard_tokens},
        {"splits", {{"train", SplitJson(vs.train)}, {"val", SplitJson(vs.val)}}},
        {"created_by", absl::StrCat("caddie data ", CADDIE_VERSION)},
    };
    return WriteFileAtomically((tmp / "meta.json").string(), meta.dump(2) + "\n");
  };
  absl::Status s = build();
  if (!s.ok()) {
    // Nothing half-written: the temp directory goes, `final_dir` stays as it was.
    fs::remove_all(tmp, ec);
    return absl::Status(s.code(), absl::StrCat(final_dir.string(), ": ", s.message()));
  }
  RETURN_IF_ERROR(SwapDirectory(tmp, final_dir));
  return vs;
}

}  // namespace

int64_t TableBytes(const ByteTable& table, const std::vector<uint16_t>& tokens) {
  int64_t n = 0;
  for (size_t i = 1; i < tokens.size(); ++i) n += table.TokenBytes(tokens[i - 1], tokens[i]);
  return n;
}

absl::StatusOr<SplitSummary> WriteSplitShards(const SpModel& sp,
                                              const ByteTable& table,
                                              const std::vector<Document>& docs,
                                              const std::string& dir, const std::string& split,
                                              int64_t shard_tokens, int threads, bool progress) {
  if (shard_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("shard size ", shard_tokens, " tokens is not positive"));
  }
  SplitSummary sum;
  sum.docs = static_cast<int64_t>(docs.size());
  sum.bytes = TextBytes(docs);
  threads = std::max(1, threads);
  const int unk = sp.UnkId();
  std::vector<uint16_t> buf;
  buf.reserve(static_cast<size_t>(std::min<int64_t>(shard_tokens, 1 << 24)));
  auto flush = [&]() -> absl::Status {
    if (buf.empty()) return absl::OkStatus();
    const std::string path = absl::StrFormat("%s/%s_%06d.bin", dir, split, sum.shards);
    RETURN_IF_ERROR(FromLiteWrite(WriteShard(path, buf)));
    ++sum.shards;
    buf.clear();
    return absl::OkStatus();
  };
  ProgressBar bar(absl::StrCat("encoding ", split), sum.bytes, "B", progress);
  constexpr size_t kBatch = 64;
  std::vector<std::vector<int>> ids(kBatch);
  std::vector<std::string> errors(kBatch);
  std::vector<char> ok(kBatch);
  uint16_t prev = kBosId;
  for (size_t start = 0; start < docs.size(); start += kBatch) {
    const size_t n = std::min(kBatch, docs.size() - start);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (size_t i = static_cast<size_t>(t); i < n; i += static_cast<size_t>(threads)) {
          ok[i] = sp.Encode(docs[start + i].text, &ids[i], &errors[i]);
        }
      });
    }
    for (auto& th : pool) th.join();
    for (size_t i = 0; i < n; ++i) {
      const Document& d = docs[start + i];
      if (!ok[i]) {
        return absl::InternalError(absl::StrCat("cannot encode document ", d.source, "/", d.id, ": ",
                                                errors[i]));
      }
      // Each document: BOS, then its tokens; no EOS (as the reference's shards).
      std::vector<uint16_t> doc_tokens;
      doc_tokens.reserve(ids[i].size() + 1);
      doc_tokens.push_back(kBosId);
      for (int id : ids[i]) {
        if (id < 0 || id >= table.vocab_size() || id > 65535) {
          return absl::InternalError(absl::StrCat("token id ", id, " of document ", d.source, "/",
                                                  d.id, " is outside the vocab ", table.vocab_size()));
        }
        if (id == unk) ++sum.unk_tokens;
        doc_tokens.push_back(static_cast<uint16_t>(id));
      }
      for (uint16_t tok : doc_tokens) {
        sum.table_bytes += table.TokenBytes(prev, tok);
        prev = tok;
        buf.push_back(tok);
        if (static_cast<int64_t>(buf.size()) == shard_tokens) RETURN_IF_ERROR(flush());
      }
      sum.tokens += static_cast<int64_t>(doc_tokens.size());
      bar.Add(static_cast<int64_t>(d.text.size()));
    }
  }
  RETURN_IF_ERROR(flush());
  bar.Finish();
  return sum;
}

absl::StatusOr<DataSummary> BuildData(const DataOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.vocabs.empty()) return absl::InvalidArgumentError("no vocab size given (--vocab)");
  for (int v : o.vocabs) {
    if (v < kMinVocab || v > kMaxVocab) {
      return absl::InvalidArgumentError(absl::StrCat("vocab ", v, " is outside ", kMinVocab, "..", kMaxVocab));
    }
  }
  if (o.corpus.empty()) return absl::InvalidArgumentError("no corpus given (--corpus)");
  if (o.max_bytes < 0) return absl::InvalidArgumentError(absl::StrCat("--max-bytes ", o.max_bytes, " is negative"));
  const std::string cache_dir = o.cache_dir.empty() ? DefaultCacheDir() : o.cache_dir;
  const int threads = o.threads > 0 ? o.threads
                                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  DataSummary out;
  ASSIGN_OR_RETURN(Split split, LoadOrBuildCorpus(o, cache_dir, &out.duplicates_removed));
  out.corpus_hash = CorpusHash(split.train);
  // The hash of both splits keys the tokenizer cache and the shards.
  std::string both = out.corpus_hash + CorpusHash(split.val);
  for (int v : o.vocabs) {
    ASSIGN_OR_RETURN(VocabSummary vs, BuildVocab(o, split, both, cache_dir, v, threads));
    out.vocabs.push_back(std::move(vs));
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

std::string FormatSummary(const DataSummary& s) {
  std::string out = absl::StrFormat("corpus %s (%d duplicate documents removed)\n", s.corpus_hash,
                                    s.duplicates_removed);
  absl::StrAppend(&out, absl::StrFormat("%-18s %-6s %8s %12s %12s %10s %8s\n", "data dir", "split",
                                        "docs", "bytes", "tokens", "bytes/tok", "shards"));
  for (const auto& v : s.vocabs) {
    for (const auto* sp : {&v.train, &v.val}) {
      const bool train = sp == &v.train;
      const double bpt = sp->tokens > 0 ? static_cast<double>(sp->bytes) / static_cast<double>(sp->tokens) : 0;
      absl::StrAppend(&out, absl::StrFormat("%-18s %-6s %8d %12d %12d %10.3f %8d\n",
                                            train ? v.dir : "", train ? "train" : "val", sp->docs,
                                            sp->bytes, sp->tokens, bpt, sp->shards));
    }
    absl::StrAppend(&out, absl::StrFormat(
        "  vocab %d (%d pieces, %s)%s; val bytes counted by the byte table: %d, unk tokens: %d\n",
        v.vocab, v.sp_vocab, v.byte_fallback ? "byte fallback" : "no byte fallback",
        v.up_to_date ? ", up to date" : v.tokenizer_from_cache ? ", tokenizer from cache" : "",
        v.val.table_bytes, v.val.unk_tokens + v.train.unk_tokens));
  }
  absl::StrAppend(&out, absl::StrFormat("done in %.1fs\n", s.seconds));
  return out;
}

absl::StatusOr<VocabSummary> ImportShards(const ImportOptions& o) {
  const fs::path dir = o.shards_dir;
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat(o.shards_dir, ": not a directory"));
  std::string tok = o.tokenizer;
  if (tok.empty()) {
    if (fs::exists(dir / "tokenizer.model")) {
      tok = (dir / "tokenizer.model").string();
    } else {
      std::vector<std::string> models;
      for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().extension() == ".model") models.push_back(e.path().string());
      }
      if (models.size() != 1) {
        return absl::NotFoundError(absl::StrCat(
            o.shards_dir, ": missing tokenizer: ", models.empty() ? "no" : "more than one",
            " *.model file there; pass --tokenizer"));
      }
      tok = models[0];
    }
  }
  ASSIGN_OR_RETURN(auto sp, LoadTokenizer(tok));
  VocabSummary vs;
  vs.sp_vocab = sp->PieceSize();
  vs.vocab = vs.sp_vocab;
  const ByteTable table = BuildByteTable(*sp, vs.vocab);
  vs.byte_fallback = false;
  for (int id = 0; id < vs.sp_vocab; ++id) vs.byte_fallback = vs.byte_fallback || sp->IsByte(id);
  std::vector<std::string> all;
  for (const char* split : {"train", "val"}) {
    auto shards = ListShards(dir.string(), split);
    if (!shards.ok()) return FromLite(shards.status());
    SplitSummary& sum = std::string(split) == "train" ? vs.train : vs.val;
    for (const auto& path : *shards) {
      all.push_back(path);
      if (std::string(split) == "val") {
        // Validation is small and what val_bpb reads: check every id and count bytes.
        auto tokens = ReadShard(path);
        if (!tokens.ok()) return FromLite(tokens.status());
        for (uint16_t t : *tokens) {
          if (t >= table.vocab_size()) {
            return absl::DataLossError(absl::StrCat(path, ": token id ", t, " is outside the vocab ",
                                                    table.vocab_size(), " of ", tok));
          }
          if (t == kBosId) ++sum.docs;
        }
        sum.table_bytes += TableBytes(table, *tokens);
        sum.tokens += static_cast<int64_t>(tokens->size());
      } else {
        auto count = ReadShardTokenCount(path);
        if (!count.ok()) return FromLite(count.status());
        sum.tokens += *count;
      }
      ++sum.shards;
    }
  }
  const fs::path out = o.out_dir.empty() ? dir : fs::path(o.out_dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(out.string(), ": cannot create: ", ec.message()));
  vs.dir = out.string();
  if (fs::weakly_canonical(out) != fs::weakly_canonical(dir)) {
    for (const auto& path : all) {
      const fs::path link = out / fs::path(path).filename();
      fs::remove(link, ec);
      fs::create_symlink(fs::absolute(path), link, ec);
      if (ec) return absl::UnavailableError(absl::StrCat(link.string(), ": cannot link: ", ec.message()));
    }
  }
  if (fs::weakly_canonical(tok) != fs::weakly_canonical(out / "tokenizer.model")) {
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(tok));
    RETURN_IF_ERROR(WriteFileAtomically((out / "tokenizer.model").string(), bytes));
  }
  RETURN_IF_ERROR(FromLiteWrite(WriteByteTable((out / "byte_table.json").string(), table)));
  json meta = {{"format", kFormat},
               {"name", out.filename().string()},
               {"imported_from", fs::absolute(dir).string()},
               {"vocab_size", table.vocab_size()},
               {"sp_vocab_size", vs.sp_vocab},
               {"byte_fallback", vs.byte_fallback},
               {"bos_id", kBosId},
               {"splits", {{"train", SplitJson(vs.train)}, {"val", SplitJson(vs.val)}}},
               {"created_by", absl::StrCat("caddie data ", CADDIE_VERSION)}};
  RETURN_IF_ERROR(WriteFileAtomically((out / "meta.json").string(), meta.dump(2) + "\n"));
  return vs;
}

}  // namespace caddie::data
