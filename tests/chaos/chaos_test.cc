// The short chaos run in CTest (scripts/chaos.sh runs the full one): 50 jobs on
// 4 workers while the controller, workers and trainer ranks are SIGKILLed and a
// worker's disk fills; then nothing lost, nothing duplicated, database intact.
#include "tests/chaos/chaos.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

namespace caddie::chaos {
namespace {

TEST(Chaos, ShortRunLosesAndDuplicatesNothing) {
  ChaosOptions o;
  o.controller_bin = CADDIE_CONTROLLER_BIN;
  o.worker_bin = CADDIE_WORKER_BIN;
  o.fake_train_bin = CADDIE_FAKE_TRAIN_BIN;
  o.dir = (std::filesystem::path(::testing::TempDir()) / ("chaos_" + std::to_string(getpid()))).string();
  o.jobs = 50;
  o.workers = 4;
  o.steps = 10;
  o.step_ms = 300;
  o.action_interval_s = 1.0;
  o.deadline_s = 150;
  o.seed = 7;
  const ChaosReport r = RunChaos(o);
  std::printf("%s", r.Summary().c_str());
  EXPECT_TRUE(r.all_terminal) << "not every job finished within the deadline";
  EXPECT_EQ(r.jobs, 50);
  EXPECT_EQ(r.non_terminal, 0);
  EXPECT_EQ(r.duplicates, 0);
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(r.integrity, "ok");
  EXPECT_TRUE(r.problems.empty()) << r.Summary();
  EXPECT_GE(r.controller_kills, 1);
  EXPECT_GE(r.worker_kills, 1);
  EXPECT_GE(r.rank_kills, 1);
  EXPECT_GT(r.events, 50 * 4);
  // Where the size-limited tmpfs could be mounted (root), the disk must really
  // have filled at least once, with nothing recorded lost (above); elsewhere the
  // run logged why disk fills were skipped.
  if (r.tmpfs) {
    EXPECT_GE(r.disk_fills, 1) << "a tmpfs was mounted but the worker's disk never filled";
  } else {
    std::printf("chaos: no tmpfs (mount refused, uid %d): disk fills skipped, not asserted\n",
                static_cast<int>(geteuid()));
  }
  if (r.ok()) std::filesystem::remove_all(o.dir);
}

}  // namespace
}  // namespace caddie::chaos
