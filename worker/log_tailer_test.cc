#include "worker/log_tailer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;

class LogTailerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "log_tailer_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  static void Append(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::app | std::ios::binary) << text;
  }
  // The chunks' bytes joined, checking that each starts where the one before ended.
  static std::string Joined(const std::vector<caddie::v1::LogChunk>& chunks, int64_t first_offset) {
    std::string text;
    int64_t next = first_offset;
    for (const auto& c : chunks) {
      EXPECT_EQ(c.offset(), next) << "a gap or an overlap before " << c.data();
      next = c.offset() + static_cast<int64_t>(c.data().size());
      text += c.data();
    }
    return text;
  }

  std::string dir_;
};

TEST_F(LogTailerTest, EachPollHandsOutWhatTheFilesGainedSinceTheLastWithTheirOffsets) {
  LogTailer t({}, /*attempt=*/2);
  t.Add(0, log_streams::kStderr, Path("rank0.stderr.log"));
  t.Add(1, log_streams::kStdout, Path("rank1.stdout.log"));
  EXPECT_TRUE(t.Poll().empty());  // neither file exists yet

  Append(Path("rank0.stderr.log"), "first line\nsecond ");
  auto chunks = t.Poll();
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].attempt(), 2);
  EXPECT_EQ(chunks[0].rank(), 0);
  EXPECT_EQ(chunks[0].stream(), "stderr");
  EXPECT_EQ(chunks[0].offset(), 0);
  EXPECT_EQ(chunks[0].data(), "first line\nsecond ");
  EXPECT_TRUE(t.Poll().empty());  // nothing new

  Append(Path("rank0.stderr.log"), "half\n");
  Append(Path("rank1.stdout.log"), "rank 1 says hi\n");
  chunks = t.Poll();
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].rank(), 0);
  EXPECT_EQ(chunks[0].offset(), 18);
  EXPECT_EQ(chunks[0].data(), "half\n");
  EXPECT_EQ(chunks[1].rank(), 1);
  EXPECT_EQ(chunks[1].stream(), "stdout");
  EXPECT_EQ(chunks[1].offset(), 0);
  EXPECT_EQ(chunks[1].data(), "rank 1 says hi\n");
  EXPECT_EQ(t.skipped_bytes(), 0);
}

TEST_F(LogTailerTest, NewBytesAreCutIntoChunksOfAtMostChunkBytes) {
  LogTailerOptions o;
  o.chunk_bytes = 4;
  LogTailer t(o, 1);
  t.Add(0, log_streams::kStderr, Path("e.log"));
  Append(Path("e.log"), "abcdefghij");
  const auto chunks = t.Poll();
  ASSERT_EQ(chunks.size(), 3u);
  for (const auto& c : chunks) EXPECT_LE(c.data().size(), 4u);
  EXPECT_EQ(Joined(chunks, 0), "abcdefghij");
}

TEST_F(LogTailerTest, AFileGrowingFasterThanTheRateSkipsItsOldestNewBytes) {
  LogTailerOptions o;
  o.poll_bytes = 5;
  o.final_bytes = 8;
  LogTailer t(o, 1);
  t.Add(3, log_streams::kStderr, Path("e.log"));
  Append(Path("e.log"), "0123456789AB");
  auto chunks = t.Poll();
  EXPECT_EQ(Joined(chunks, 7), "789AB");  // the newest 5 bytes; 0..6 skipped
  EXPECT_EQ(t.skipped_bytes(), 7);
  Append(Path("e.log"), "CDEFGHIJKLMN");
  chunks = t.Poll(/*final=*/true);  // the job's end: up to final_bytes
  EXPECT_EQ(Joined(chunks, 16), "GHIJKLMN");
  EXPECT_EQ(t.skipped_bytes(), 11);
}

TEST(GroupByBytesTest, GroupsInOrderWithinTheLimitAndNeverSplitsAChunk) {
  std::vector<caddie::v1::LogChunk> chunks;
  for (const std::string d : {"aaa", "bb", "cccccc", "d", "ee"}) {
    caddie::v1::LogChunk c;
    c.set_data(d);
    chunks.push_back(c);
  }
  const auto groups = GroupByBytes(chunks, 5);
  std::vector<std::vector<std::string>> got;
  for (const auto& g : groups) {
    got.emplace_back();
    for (const auto& c : g) got.back().push_back(c.data());
  }
  const std::vector<std::vector<std::string>> want = {{"aaa", "bb"}, {"cccccc"}, {"d", "ee"}};
  EXPECT_EQ(got, want);
  EXPECT_TRUE(GroupByBytes({}, 5).empty());
}

}  // namespace
}  // namespace caddie::worker
