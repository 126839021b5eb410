#include "cli/data/corpus.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace caddie::data {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::vector<Document> MakeDocs(int n) {
  std::vector<Document> docs;
  for (int i = 0; i < n; ++i) {
    docs.push_back({"t", std::to_string(i), std::string(100 + (i * 37) % 900, static_cast<char>('a' + i % 26)) + std::to_string(i)});
  }
  return docs;
}

TEST(SplitCorpus, ValidationHoldsAtLeastTheFractionAndIsDisjoint) {
  auto split = SplitCorpus(MakeDocs(200), 1337, 0.05, 0);
  ASSERT_TRUE(split.ok()) << split.status().message();
  const double vb = static_cast<double>(TextBytes(split->val));
  const double tb = static_cast<double>(TextBytes(split->train));
  EXPECT_GE(vb / (vb + tb), 0.05);
  EXPECT_LT(vb / (vb + tb), 0.08);
  EXPECT_EQ(split->val.size() + split->train.size(), 200u);
  std::set<std::string> ids;
  for (const auto& d : split->train) ids.insert(d.id);
  for (const auto& d : split->val) EXPECT_EQ(ids.count(d.id), 0u);
}

TEST(SplitCorpus, HeadSplitTakesTheFirstDocumentsByCountInInputOrder) {
  // The reference's rule: 4,100 documents at 5% give the first 205 as validation.
  auto docs = MakeDocs(4100);
  auto split = SplitCorpus(docs, 1337, 0.05, 0, SplitOrder::kHead);
  ASSERT_TRUE(split.ok()) << split.status().message();
  ASSERT_EQ(split->val.size(), 205u);
  ASSERT_EQ(split->train.size(), 3895u);
  for (size_t i = 0; i < split->val.size(); ++i) EXPECT_EQ(split->val[i].id, docs[i].id);
  for (size_t i = 0; i < split->train.size(); ++i) EXPECT_EQ(split->train[i].id, docs[205 + i].id);
  // The seed plays no part: the order is the input's.
  auto other_seed = SplitCorpus(docs, 7, 0.05, 0, SplitOrder::kHead);
  ASSERT_TRUE(other_seed.ok());
  EXPECT_EQ(other_seed->val.back().id, split->val.back().id);
  // A fraction that does not divide evenly rounds up: 101 documents at 5% -> 6.
  auto odd = SplitCorpus(MakeDocs(101), 1, 0.05, 0, SplitOrder::kHead);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->val.size(), 6u);
}

TEST(SplitCorpus, SplitOrderNamesParseAndUnknownNamesAreRefused) {
  EXPECT_EQ(*ParseSplitOrder("head"), SplitOrder::kHead);
  EXPECT_EQ(*ParseSplitOrder("seeded"), SplitOrder::kSeeded);
  EXPECT_STREQ(SplitOrderName(SplitOrder::kHead), "head");
  auto bad = ParseSplitOrder("tail");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("'tail'"));
}

TEST(SplitCorpus, DeterministicForASeedAndDifferentAcrossSeeds) {
  auto a = SplitCorpus(MakeDocs(100), 7, 0.1, 0);
  auto b = SplitCorpus(MakeDocs(100), 7, 0.1, 0);
  auto c = SplitCorpus(MakeDocs(100), 8, 0.1, 0);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(CorpusHash(a->val), CorpusHash(b->val));
  EXPECT_EQ(CorpusHash(a->train), CorpusHash(b->train));
  EXPECT_NE(CorpusHash(a->val), CorpusHash(c->val));
}

TEST(SplitCorpus, MaxBytesCapsTheSubset) {
  auto s = SplitCorpus(MakeDocs(200), 1, 0.05, 5000);
  ASSERT_TRUE(s.ok());
  const int64_t total = TextBytes(s->train) + TextBytes(s->val);
  EXPECT_GE(total, 5000);
  EXPECT_LT(total, 5000 + 1100);
}

TEST(SplitCorpus, EmptyOrTooSmallCorpusIsAnError) {
  auto empty = SplitCorpus({}, 1, 0.05, 0);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("empty corpus"));
  auto one = SplitCorpus(MakeDocs(1), 1, 0.05, 0);
  ASSERT_FALSE(one.ok());
  EXPECT_THAT(std::string(one.status().message()), HasSubstr("corpus too small to split: 1 document"));
  auto frac = SplitCorpus(MakeDocs(10), 1, 1.5, 0);
  ASSERT_FALSE(frac.ok());
  EXPECT_THAT(std::string(frac.status().message()), HasSubstr("validation fraction 1.5"));
}

TEST(Dedupe, RemovesExactDuplicatesKeepingTheFirst) {
  std::vector<Document> docs = {{"a", "1", "x"}, {"b", "2", "y"}, {"c", "3", "x"}, {"d", "4", "y"}};
  EXPECT_EQ(Dedupe(docs), 2);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].source, "a");
  EXPECT_EQ(docs[1].source, "b");
}

TEST(Jsonl, RoundTripAndUserFiles) {
  const fs::path dir = fs::temp_directory_path() / ("caddie_corpus_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::vector<Document> docs = {{"s", "1", "line one\nline \"two\" \xE2\x80\x94 \xF0\x9F\x98\x80"},
                                      {"s", "2", "tab\there"}};
  ASSERT_TRUE(WriteJsonl((dir / "d.jsonl").string(), docs).ok());
  auto back = ReadJsonl((dir / "d.jsonl").string());
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].text, docs[0].text);
  EXPECT_EQ((*back)[1].id, "2");

  std::ofstream(dir / "plain.txt") << "caf\xE9\r\nau lait\n";  // Latin-1, CRLF
  auto user = LoadUserFiles({(dir / "d.jsonl").string(), (dir / "plain.txt").string()});
  ASSERT_TRUE(user.ok()) << user.status().message();
  ASSERT_EQ(user->size(), 3u);
  EXPECT_EQ((*user)[2].text, "caf\xC3\xA9\nau lait");

  std::ofstream(dir / "bad.jsonl") << "{\"text\": \"ok\"}\n{not json\n";
  auto bad = LoadUserFiles({(dir / "bad.jsonl").string()});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bad.jsonl:2: not valid JSON"));
  fs::remove_all(dir);
}

TEST(RunProgram, ReportsExitCodeAndStderr) {
  auto ok = RunProgram({"printf", "hello"});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "hello");
  auto bad = RunProgram({"sh", "-c", "echo oops >&2; exit 3"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("exited with 3: oops"));
  auto missing = RunProgram({"caddie-no-such-program-xyz"});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("exited with 127"));
}

}  // namespace
}  // namespace caddie::data
