#include "controller/job_logs.h"

#include <gtest/gtest.h>

namespace caddie::controller {
namespace {

// What the store would hold: chunks at these offsets, the stream received up to `end`.
LogRead Held(std::vector<std::pair<int64_t, std::string>> chunks, int64_t end) {
  LogRead r;
  r.end_offset = end;
  r.held_from = chunks.empty() ? end : chunks.front().first;
  for (auto& [offset, data] : chunks) {
    v1::LogChunk c;
    c.set_offset(offset);
    c.set_data(data);
    r.chunks.push_back(c);
  }
  return r;
}

TEST(AssembleLogTest, TailIsTheLastLinesAcrossChunkBoundaries) {
  const LogRead r = Held({{0, "one\ntw"}, {6, "o\nthree\nfo"}, {16, "ur\n"}}, 19);
  LogText t = AssembleLog(r, std::nullopt, 2);
  EXPECT_EQ(t.text, "three\nfour\n");
  EXPECT_EQ(t.next_offset, 19);
  EXPECT_EQ(t.dropped_bytes, 0);
  EXPECT_EQ(AssembleLog(r, std::nullopt, 100).text, "one\ntwo\nthree\nfour\n");
  // An unfinished last line counts as a line.
  EXPECT_EQ(AssembleLog(Held({{0, "a\nb\nhalf"}}, 8), std::nullopt, 1).text, "half");
}

TEST(AssembleLogTest, FromAnOffsetGivesEveryByteOnAndWhereToGoOn) {
  const LogRead r = Held({{0, "one\ntw"}, {6, "o\nthree\n"}}, 14);
  LogText t = AssembleLog(r, 5, 0);
  EXPECT_EQ(t.text, "wo\nthree\n");
  EXPECT_EQ(t.next_offset, 14);
  EXPECT_EQ(t.dropped_bytes, 0);
  t = AssembleLog(r, 14, 0);  // caught up
  EXPECT_EQ(t.text, "");
  EXPECT_EQ(t.next_offset, 14);
  // No output yet: empty, from 0.
  t = AssembleLog(LogRead{}, 0, 0);
  EXPECT_EQ(t.text, "");
  EXPECT_EQ(t.next_offset, 0);
}

TEST(AssembleLogTest, BytesNoLongerHeldAreCountedAndTheTextStartsAtALine) {
  // "line 1\nline 2\nline 3\nline 4\n" (28 bytes); the cap kept bytes 10.., inside "line 2".
  const LogRead r = Held({{10, "e 2\nline 3\nline 4\n"}}, 28);
  LogText t = AssembleLog(r, std::nullopt, 100);
  EXPECT_EQ(t.text, "line 3\nline 4\n");
  EXPECT_EQ(t.dropped_bytes, 14);  // 10 dropped + the cut line's rest "e 2\n"
  EXPECT_EQ(t.next_offset, 28);
  // A tail that does not reach back to the dropped bytes has lost nothing.
  t = AssembleLog(r, std::nullopt, 1);
  EXPECT_EQ(t.text, "line 4\n");
  EXPECT_EQ(t.dropped_bytes, 0);
  // A follower that fell behind the cap.
  t = AssembleLog(r, 4, 0);
  EXPECT_EQ(t.text, "line 3\nline 4\n");
  EXPECT_EQ(t.dropped_bytes, 10);
  EXPECT_EQ(t.next_offset, 28);
}

TEST(AssembleLogTest, AGapBetweenChunksIsMarkedWithItsSize) {
  const LogRead r = Held({{0, "before\n"}, {107, "after\n"}}, 113);
  const LogText t = AssembleLog(r, 0, 0);
  EXPECT_EQ(t.text,
            "before\n[caddie: 100 bytes missing here: the trainer wrote faster than the worker sends logs]\nafter\n");
  EXPECT_EQ(t.next_offset, 113);
}

TEST(AssembleLogTest, InvalidUtf8IsReplacedAndACutCharacterWaitsForTheNextCall) {
  // "é" is C3 A9; the held bytes end after its first byte.
  const LogRead r = Held({{0, "bad \xFF ok caf\xC3"}}, 13);
  LogText t = AssembleLog(r, 0, 0);
  EXPECT_EQ(t.text, "bad \xEF\xBF\xBD ok caf");
  EXPECT_EQ(t.next_offset, 12);  // the C3 comes again with its A9
  const LogRead later = Held({{0, "bad \xFF ok caf\xC3"}, {13, "\xA9\n"}}, 15);
  t = AssembleLog(later, 12, 0);
  EXPECT_EQ(t.text, "\xC3\xA9\n");
  EXPECT_EQ(t.next_offset, 15);
}

}  // namespace
}  // namespace caddie::controller
