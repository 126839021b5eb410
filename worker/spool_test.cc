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
    ASSERT_TRUE((*s)->Append(Batch("j1", 1, 3)).ok());
    ASSERT_TRUE((*s)->Append(Batch("j1", 4, 2)).ok());
    ASSERT_TRUE((*s)->Append(Done("j1")).ok());
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
  ASSERT_TRUE(id.ok());
  EXPECT_GT(*id, list[2].id);
}

TEST(SpoolTest, RemoveIsDurableAndIdempotent) {
  const fs::path dir = FreshDir("remove");
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok());
  auto a = (*s)->Append(Batch("j1", 1, 1));
  auto b = (*s)->Append(Batch("j1", 2, 1));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*s)->Remove(*a).ok());
  ASSERT_TRUE((*s)->Remove(*a).ok());
  EXPECT_EQ((*s)->Front()->id, *b);
  auto again = Spool::Open(dir.string());
  ASSERT_TRUE(again.ok());
  ASSERT_EQ((*again)->size(), 1u);
  EXPECT_EQ((*again)->Front()->id, *b);
}

TEST(SpoolTest, RemoveJobDropsOnlyThatJob) {
  const fs::path dir = FreshDir("removejob");
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Append(Batch("j1", 1, 1)).ok());
  ASSERT_TRUE((*s)->Append(Batch("j2", 1, 1)).ok());
  ASSERT_TRUE((*s)->Append(Done("j1")).ok());
  EXPECT_EQ((*s)->RemoveJob("j1"), 2);
  ASSERT_EQ((*s)->size(), 1u);
  EXPECT_EQ((*s)->Front()->job_id(), "j2");
}

TEST(SpoolTest, TornAndCorruptFilesDoNotBlockReplay) {
  const fs::path dir = FreshDir("torn");
  {
    auto s = Spool::Open(dir.string());
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Append(Batch("j1", 1, 1)).ok());
  }
  std::ofstream(dir / "00000000000000000002.events.tmp") << "half";
  std::ofstream(dir / "00000000000000000003.complete") << "\xff\xff\xff garbage";
  auto s = Spool::Open(dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ((*s)->size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "00000000000000000002.events.tmp"));
  EXPECT_TRUE(fs::exists(dir / "00000000000000000003.complete.bad"));
}

TEST(SpoolTest, UncreatableDirectoryIsInternal) {
  auto s = Spool::Open("/proc/caddie-no-such-dir/spool");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.status().message().find("/proc/caddie-no-such-dir/spool"), std::string::npos);
}

}  // namespace
}  // namespace caddie::worker
