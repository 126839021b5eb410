#include "worker/spool.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;

caddie::v1::ReportEventsRequest Batch(const std::string& job, int64_t first_seq, int n) {
  caddie::v1::ReportEventsRequest r;
  r.set_worker_id("w1");
  r.mutable_lease()->set_job_id(job);
  r.mutable_lease()->set_fencing_token(3);
  for (int i = 0; i < n; ++i) {
    auto* e = r.add_events();
    e->set_seq(first_seq + i);
    e->set_type("step");
  }
  return r;
}

caddie::v1::CompleteJobRequest Done(const std::string& job) {
  caddie::v1::CompleteJobRequest c;
  c.mutable_lease()->set_job_id(job);
  c.set_state(caddie::v1::JOB_STATE_SUCCEEDED);
  return c;
}

fs::path FreshDir(const std::string& name) {
  fs::path d = fs::path(testing::TempDir()) / ("spool_" + std::to_string(getpid())) / name;
  fs::remove_all(d);
  return d;
}

TEST(SpoolTest, RecordsSurviveReopenInOrder) {
  const fs::path dir = FreshDir("reopen");
  {
    auto s = Spool::Open(dir.string());
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->Append(Batch("j1", 1, 3)).write_error.ok());
    ASSERT_TRUE((*s)->Append(Batch("j1", 4, 2)).write_error.ok());
    ASSERT_TRUE((*s)->Append(Done("j1")).write_error.ok());
  }
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  auto list = (*s)->List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_FALSE(list[0].is_completion());
  EXPECT_EQ(std::get<0>(list[0].message).events(0).seq(), 1);
  EXPECT_EQ(std::get<0>(list[1].message).events(0).seq(), 4);
  EXPECT_TRUE(list[2].is_completion());
  EXPECT_EQ(list[2].job_id(), "j1");
  // New ids continue after the old ones.
  auto id = (*s)->Append(Batch("j2", 1, 1));
  ASSERT_TRUE(id.write_error.ok());
  EXPECT_GT(id.id, list[2].id);
}

TEST(SpoolTest, RemoveIsDurableAndIdempotent) {
  const fs::path dir = FreshDir("remove");
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok());
  auto a = (*s)->Append(Batch("j1", 1, 1));
  auto b = (*s)->Append(Batch("j1", 2, 1));
  ASSERT_TRUE(a.write_error.ok() && b.write_error.ok());
  ASSERT_TRUE((*s)->Remove(a.id).ok());
  ASSERT_TRUE((*s)->Remove(a.id).ok());
  EXPECT_EQ((*s)->Front()->id, b.id);
  auto again = Spool::Open(dir.string());
  ASSERT_TRUE(again.ok());
  ASSERT_EQ((*again)->size(), 1u);
  EXPECT_EQ((*again)->Front()->id, b.id);
}

TEST(SpoolTest, RemoveJobDropsOnlyThatJob) {
  const fs::path dir = FreshDir("removejob");
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Append(Batch("j1", 1, 1)).write_error.ok());
  ASSERT_TRUE((*s)->Append(Batch("j2", 1, 1)).write_error.ok());
  ASSERT_TRUE((*s)->Append(Done("j1")).write_error.ok());
  EXPECT_EQ((*s)->RemoveJob("j1"), 2);
  ASSERT_EQ((*s)->size(), 1u);
  EXPECT_EQ((*s)->Front()->job_id(), "j2");
}

TEST(SpoolTest, TornAndCorruptFilesDoNotBlockReplay) {
  const fs::path dir = FreshDir("torn");
  {
    auto s = Spool::Open(dir.string());
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Append(Batch("j1", 1, 1)).write_error.ok());
  }
  std::ofstream(dir / "00000000000000000002.events.tmp") << "half";
  std::ofstream(dir / "00000000000000000003.complete") << "\xff\xff\xff garbage";
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ((*s)->size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "00000000000000000002.events.tmp"));
  EXPECT_TRUE(fs::exists(dir / "00000000000000000003.complete.bad"));
}

// A disk that refuses writes (here: the spool directory replaced by a file, so
// every create fails) loses nothing: records are held in memory in order, and
// written once the directory is back — then a reopened spool has all of them.
TEST(SpoolTest, RefusedWritesAreHeldInOrderAndWrittenWhenTheDiskIsBack) {
  const fs::path dir = FreshDir("refused");
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->Append(Batch("j1", 1, 2)).write_error.ok());
  const fs::path away = dir.string() + ".away";
  fs::rename(dir, away);
  std::ofstream(dir) << "not a directory";
  const auto held1 = (*s)->Append(Batch("j1", 3, 2));
  const auto held2 = (*s)->Append(Done("j1"));
  EXPECT_EQ(held1.write_error.code(), absl::StatusCode::kInternal);
  EXPECT_NE(held1.write_error.message().find("Not a directory"), std::string::npos) << held1.write_error;
  EXPECT_FALSE(held2.write_error.ok());
  EXPECT_EQ((*s)->held(), 2u);
  EXPECT_GT((*s)->held_bytes(), 0u);
  // Still in the queue, in order, for the sender.
  auto list = (*s)->List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_TRUE(list[0].durable);
  EXPECT_FALSE(list[1].durable);
  EXPECT_EQ(list[1].id, held1.id);
  EXPECT_EQ(list[2].id, held2.id);
  EXPECT_FALSE((*s)->Flush().ok());
  EXPECT_EQ((*s)->held(), 2u);

  fs::remove(dir);
  fs::rename(away, dir);
  ASSERT_TRUE((*s)->Flush().ok());
  EXPECT_EQ((*s)->held(), 0u);
  EXPECT_EQ((*s)->held_bytes(), 0u);
  auto again = Spool::Open(dir.string());
  ASSERT_TRUE(again.ok()) << again.status();
  list = (*again)->List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(std::get<0>(list[0].message).events(0).seq(), 1);
  EXPECT_EQ(std::get<0>(list[1].message).events(0).seq(), 3);
  EXPECT_TRUE(list[2].is_completion());
}

// A record acknowledged while held is simply forgotten; a record appended while
// older ones are held is held too (a restart must replay a prefix, not a gap).
TEST(SpoolTest, HeldRecordsKeepTheDiskAPrefix) {
  const fs::path dir = FreshDir("prefix");
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  const fs::path away = dir.string() + ".away";
  fs::rename(dir, away);
  std::ofstream(dir) << "x";
  const auto a = (*s)->Append(Batch("j1", 1, 1));
  ASSERT_FALSE(a.write_error.ok());
  fs::remove(dir);
  fs::rename(away, dir);
  // The disk is back: the new record is written only after the held one.
  const auto b = (*s)->Append(Batch("j1", 2, 1));
  EXPECT_TRUE(b.write_error.ok());
  EXPECT_EQ((*s)->held(), 0u);
  EXPECT_TRUE(fs::exists(dir / "00000000000000000001.events"));
  EXPECT_TRUE(fs::exists(dir / "00000000000000000002.events"));
  // Held, then acknowledged before the disk came back: nothing left behind.
  fs::rename(dir, away);
  std::ofstream(dir) << "x";
  const auto c = (*s)->Append(Batch("j2", 1, 1));
  ASSERT_FALSE(c.write_error.ok());
  ASSERT_TRUE((*s)->Remove(c.id).ok());
  EXPECT_EQ((*s)->held(), 0u);
  EXPECT_EQ((*s)->held_bytes(), 0u);
  EXPECT_EQ((*s)->RemoveJob("j1"), 2);
  fs::remove(dir);
  fs::rename(away, dir);
  EXPECT_TRUE((*s)->Flush().ok());
  EXPECT_EQ((*s)->size(), 0u);
}

TEST(SpoolTest, UncreatableDirectoryIsInternal) {
  auto s = Spool::Open("/proc/caddie-no-such-dir/spool");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.status().message().find("/proc/caddie-no-such-dir/spool"), std::string::npos);
}

}  // namespace
}  // namespace caddie::worker
