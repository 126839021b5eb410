// `caddie up` end to end with real caddie-controller and caddie-worker processes
// and caddie-fake-train standing in for the trainer (the real one needs minutes):
// the demo sweep runs to a leaderboard, a second run reuses everything, and
// Ctrl-C leaves no process behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/subprocess.h"
#include "tests/cli/cli_harness.h"

namespace caddie::clitest {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class CliUpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A bin dir where caddie-train is the fake trainer.
    bin_ = tmp_.path() + "/bin";
    data_ = tmp_.path() + "/state";
    fs::create_directories(bin_);
    fs::create_symlink(CADDIE_CONTROLLER_BIN, bin_ + "/caddie-controller");
    fs::create_symlink(CADDIE_WORKER_BIN, bin_ + "/caddie-worker");
    fs::create_symlink(CADDIE_FAKE_TRAIN_BIN, bin_ + "/caddie-train");
    // The demo data, present already (the fake trainer does not read it), so
    // `up` skips the corpus build.
    fs::create_directories(data_ + "/data/sp1024");
    WriteFile(data_ + "/data/sp1024/meta.json", "{}");
    WriteFile(data_ + "/data/sp1024/byte_table.json", "{}");
  }

  std::vector<std::string> UpArgs(bool once) {
    std::vector<std::string> a = {"up", "--port", "0", "--data-dir", data_, "--bin-dir", bin_};
    if (once) a.push_back("--once");
    return a;
  }

  TempDir tmp_;
  std::string bin_, data_;
};

TEST_F(CliUpTest, RunsTheDemoToALeaderboardThenReusesEverything) {
  const std::map<std::string, std::string> env = {{"CADDIE_FAKE_TRAIN", R"({"steps": 10, "step_ms": 20, "val_bpb": 2.25})"}};
  RunResult r = RunCaddie(UpArgs(true), env, std::chrono::seconds(120));
  ASSERT_EQ(r.code, 0) << r.out << r.err << ReadFileOrEmpty(data_ + "/worker.log");
  EXPECT_THAT(r.out, HasSubstr("data: " + data_ + "/data/sp1024 (reused)"));
  EXPECT_THAT(r.out, HasSubstr("controller: 127.0.0.1:"));
  EXPECT_THAT(r.out, HasSubstr("worker: local (CPU only"));
  EXPECT_THAT(r.out, HasSubstr("submitted sweep"));
  EXPECT_THAT(r.out, HasSubstr("leaderboard of sweep"));
  // Four demo jobs ranked, with val_bpb and artifact sizes.
  size_t rows = 0;
  for (size_t at = 0; (at = r.out.find("2.2600", at)) != std::string::npos; ++at) ++rows;
  EXPECT_GE(rows, 4u) << r.out;
  EXPECT_THAT(r.out, HasSubstr("1.0 kB"));  // the fake artifact: 1000 bytes
  EXPECT_THAT(r.out, HasSubstr("stopped; nothing left running"));
  EXPECT_TRUE(fs::exists(data_ + "/caddie.db"));
  EXPECT_FALSE(fs::exists(data_ + "/controller.addr"));
  EXPECT_TRUE(ProcessesMentioning(data_).empty()) << ::testing::PrintToString(ProcessesMentioning(data_));

  // Again: same database and sweep, nothing resubmitted, the leaderboard at once.
  RunResult again = RunCaddie(UpArgs(true), env, std::chrono::seconds(60));
  ASSERT_EQ(again.code, 0) << again.out << again.err;
  EXPECT_THAT(again.out, HasSubstr("from an earlier run (reused)"));
  EXPECT_THAT(again.out, ::testing::Not(HasSubstr("submitted sweep")));
  EXPECT_THAT(again.out, HasSubstr("leaderboard of sweep"));
  EXPECT_TRUE(ProcessesMentioning(data_).empty());
}

TEST_F(CliUpTest, CtrlCStopsEverythingCleanly) {
  // Slow fake jobs so that Ctrl-C lands mid-training.
  SpawnOptions o;
  o.argv = {CADDIE_CLI_BIN};
  for (const auto& a : UpArgs(false)) o.argv.push_back(a);
  o.env = CurrentEnvironment();
  SetEnv(&o.env, "NO_COLOR", "1");
  SetEnv(&o.env, "CADDIE_FAKE_TRAIN", R"({"steps": 2000, "step_ms": 50})");
  o.stdout_path = tmp_.path() + "/up.out";
  o.stderr_path = tmp_.path() + "/up.err";
  o.process_group = 0;
  auto child = Spawn(o);
  ASSERT_TRUE(child.ok()) << child.status();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool running = false;
  while (std::chrono::steady_clock::now() < until && !running) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    running = ReadFileOrEmpty(o.stdout_path).find(" running") != std::string::npos;
    if (TryReap(child->pid)) break;
  }
  ASSERT_TRUE(running) << ReadFileOrEmpty(o.stdout_path) << ReadFileOrEmpty(o.stderr_path);
  EXPECT_FALSE(ProcessesMentioning(data_).empty());  // controller, worker, trainer
  kill(child->pid, SIGINT);
  std::optional<ExitStatus> st;
  const auto stop_until = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  while (!(st = TryReap(child->pid)) && std::chrono::steady_clock::now() < stop_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!st) {
    kill(-child->pgid, SIGKILL);
    FAIL() << "caddie up did not stop within 40 s of Ctrl-C";
  }
  EXPECT_EQ(st->code, 130) << st->ToString();
  const std::string out = ReadFileOrEmpty(o.stdout_path);
  EXPECT_THAT(out, HasSubstr("stopping the worker"));
  EXPECT_THAT(out, HasSubstr("stopped; nothing left running"));
  EXPECT_TRUE(ProcessesMentioning(data_).empty()) << ::testing::PrintToString(ProcessesMentioning(data_));
  EXPECT_FALSE(fs::exists(data_ + "/controller.addr"));
}

}  // namespace
}  // namespace caddie::clitest
