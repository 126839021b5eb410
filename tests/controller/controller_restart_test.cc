// caddie-controller as a real process, SIGKILLed between transitions and
// restarted on the same SQLite file: nothing is lost, the queue survives, every
// lease is intact, every job runs exactly once (issues 8 and 15).
#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "tests/controller/harness.h"

namespace caddie {
namespace {

using caddie::testing::Client;
using caddie::testing::ControllerProcess;
using nlohmann::json;

constexpr char kUser[] = "u-token";
constexpr char kWorker[] = "w-token";

class ControllerRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = caddie::testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    proc_ = std::make_unique<ControllerProcess>(dir_ + "/caddie.db", dir_ + "/controller.log",
                                                std::vector<std::string>{"--shutdown-grace", "2"});
  }
  void TearDown() override {
    proc_.reset();
    if (!std::getenv("CADDIE_KEEP_TEST_DIR")) std::filesystem::remove_all(dir_);
  }
  // (Re)starts the process and points client_ at it.
  void Start() {
    const std::string addr = proc_->Start(kUser, kWorker);
    ASSERT_FALSE(addr.empty());
    client_ = std::make_unique<Client>(addr, kUser, kWorker);
  }
  void KillAndRestart() {
    auto st = proc_->Kill(SIGKILL);
    ASSERT_TRUE(st && st->signaled && st->signal == SIGKILL);
    Start();
  }
  std::string dir_;
  std::unique_ptr<ControllerProcess> proc_;
  std::unique_ptr<Client> client_;
};

// Issue 15 "the whole queue survives a restart" + issue 8 "SIGKILL between two
// transitions loses nothing": 30 queued + 2 running, killed, restarted; all 32
// accounted for, both leases intact, and every job runs exactly once.
TEST_F(ControllerRestartTest, SigkillWith30QueuedAnd2RunningLosesNothingAndEachJobRunsOnce) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<int> seeds(32);
  for (int i = 0; i < 32; ++i) seeds[i] = i;
  auto sub = client_->Submit({{"axes", {{"seed", seeds}}}});
  ASSERT_EQ(sub.jobs_size(), 32);
  const std::string sweep = sub.sweep().id();
  ASSERT_EQ(client_->Register("w-1", 2), "w-1");
  v1::LeaseJobResponse a, b;
  ASSERT_TRUE(client_->Lease("w-1", 2, &a).ok());
  ASSERT_TRUE(client_->Lease("w-1", 1, &b).ok());
  ASSERT_FALSE(a.job().id().empty());
  ASSERT_FALSE(b.job().id().empty());
  v1::ReportEventsResponse r;
  ASSERT_TRUE(client_->Report("w-1", a.job().id(), a.fencing_token(),
                              {{{"event", "start"}}, {{"event", "step"}, {"step", 1}}}, 1, &r)
                  .ok());
  ASSERT_TRUE(client_->Report("w-1", b.job().id(), b.fencing_token(), {{{"event", "start"}}}, 1, &r).ok());

  ASSERT_NO_FATAL_FAILURE(KillAndRestart());

  auto jobs = client_->ListJobs(sweep);
  ASSERT_EQ(jobs.size(), 32u);
  int queued = 0, running = 0;
  for (const auto& j : jobs) {
    if (j.state() == v1::JOB_STATE_QUEUED) ++queued;
    if (j.state() == v1::JOB_STATE_RUNNING) {
      ++running;
      EXPECT_EQ(j.worker_id(), "w-1");
      EXPECT_EQ(j.fencing_token(), j.id() == a.job().id() ? a.fencing_token() : b.fencing_token());
    }
  }
  EXPECT_EQ(queued, 30);
  EXPECT_EQ(running, 2);
  // The worker kept running through the restart: its leases are intact.
  v1::HeartbeatResponse hb;
  ASSERT_TRUE(client_->Heartbeat("w-1", {{a.job().id(), a.fencing_token()}, {b.job().id(), b.fencing_token()}}, &hb)
                  .ok());
  EXPECT_EQ(hb.lost_job_ids_size(), 0);
  EXPECT_FALSE(hb.reregister());
  // Events before the kill were kept: the next seq continues.
  ASSERT_TRUE(client_->Report("w-1", a.job().id(), a.fencing_token(), {{{"event", "step"}, {"step", 2}}}, 3, &r).ok());
  EXPECT_EQ(r.acked_seq(), 3);

  v1::CompleteJobResponse c;
  ASSERT_TRUE(client_->Complete("w-1", a.job().id(), a.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.5, &c)
                  .ok());
  ASSERT_NO_FATAL_FAILURE(KillAndRestart());  // between two completions
  // The completion before the kill stuck; replaying it is idempotent.
  EXPECT_EQ(client_->GetJob(a.job().id()).state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(client_->Complete("w-1", a.job().id(), a.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.5, &c)
                  .ok());
  ASSERT_TRUE(client_->Complete("w-1", b.job().id(), b.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.4, &c)
                  .ok());

  // Drain the queue, killing the controller every 10 jobs.
  std::set<std::string> ran = {a.job().id(), b.job().id()};
  for (int n = 0; n < 30; ++n) {
    if (n % 10 == 5) {
      ASSERT_NO_FATAL_FAILURE(KillAndRestart());
    }
    v1::LeaseJobResponse l;
    ASSERT_TRUE(client_->Lease("w-1", 1, &l).ok());
    ASSERT_FALSE(l.job().id().empty()) << "job " << n;
    EXPECT_TRUE(ran.insert(l.job().id()).second) << l.job().id() << " leased twice";
    ASSERT_TRUE(client_->Complete("w-1", l.job().id(), l.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                  v1::EXIT_REASON_COMPLETED, 1.0 + n * 0.01, &c)
                    .ok());
  }
  v1::LeaseJobResponse none;
  ASSERT_TRUE(client_->Lease("w-1", 2, &none).ok());
  EXPECT_TRUE(none.job().id().empty());
  jobs = client_->ListJobs(sweep);
  ASSERT_EQ(jobs.size(), 32u);
  for (const auto& j : jobs) {
    EXPECT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.id();
    EXPECT_EQ(j.attempt(), 1) << j.id() << " ran more than once";
  }
  EXPECT_EQ(ran.size(), 32u);
}

TEST_F(ControllerRestartTest, SigtermExitsCleanlyAndRestartResumes) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto sub = client_->Submit({{"base", json::object()}});
  client_->Register("w-1", 1);
  v1::LeaseJobResponse l;
  ASSERT_TRUE(client_->Lease("w-1", 1, &l).ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto st = proc_->Kill(SIGTERM);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->ok()) << st->ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  ASSERT_NO_FATAL_FAILURE(Start());
  auto job = client_->GetJob(l.job().id());
  EXPECT_EQ(job.state(), v1::JOB_STATE_LEASED);
  EXPECT_EQ(job.fencing_token(), l.fencing_token());
  v1::CompleteJobResponse c;
  EXPECT_TRUE(client_->Complete("w-1", l.job().id(), l.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.2, &c)
                  .ok());
}

TEST_F(ControllerRestartTest, BadDatabasePathExitsWithCode2AndAMessage) {
  ControllerProcess bad("/nonexistent-dir/sub/caddie.db", dir_ + "/bad.log");
  ::testing::internal::CaptureStderr();
  SpawnOptions o;
  o.argv = {ControllerProcess::Binary(), "--db", "/nonexistent-dir/sub/caddie.db", "--listen", "127.0.0.1:0"};
  o.stdout_path = dir_ + "/bad.log";
  o.stderr_path = dir_ + "/bad.log";
  auto child = Spawn(o);
  ASSERT_TRUE(child.ok());
  int ws = 0;
  waitpid(child->pid, &ws, 0);
  ::testing::internal::GetCapturedStderr();
  auto es = DecodeWaitStatus(ws);
  EXPECT_EQ(es.code, 2) << es.ToString();
  std::ifstream f(dir_ + "/bad.log");
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_NE(ss.str().find("/nonexistent-dir/sub/caddie.db"), std::string::npos) << ss.str();
}

}  // namespace
}  // namespace caddie
