// caddie-controller (in process, real gRPC, real SQLite file) with a real
// caddie-worker process running caddie-fake-train: jobs run end to end to the
// leaderboard. Drain, retries and budgets: tests/scheduler (issue 15).
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "controller/server.h"
#include "tests/controller/harness.h"

namespace caddie::controller {
namespace {

using caddie::testing::Client;
using nlohmann::json;

constexpr char kUser[] = "e2e-user";
constexpr char kWorker[] = "e2e-worker";

class ControllerWorkerE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = caddie::testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    ControllerOptions o;
    o.db_path = dir_ + "/caddie.db";
    o.listen = "127.0.0.1:0";
    o.tokens = {kUser, kWorker};
    o.scheduler.tick_seconds = 0.05;
    o.scheduler.lease_ttl_seconds = 5;
    o.scheduler.heartbeat_interval_seconds = 0.2;
    o.scheduler.drain_after = 2;
    o.sqlite_synchronous_normal = true;
    auto c = Controller::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    controller_ = std::move(*c);
    client_ = std::make_unique<Client>(controller_->address(), kUser, kWorker);
  }
  void TearDown() override {
    if (worker_pid_ > 0) {
      ::kill(worker_pid_, SIGKILL);
      waitpid(worker_pid_, nullptr, 0);
    }
    client_.reset();
    controller_.reset();
    std::filesystem::remove_all(dir_);
  }
  void StartWorker(const json& plan) {
    const std::string bin = std::getenv("CADDIE_BINARY_DIR") ? std::getenv("CADDIE_BINARY_DIR") : ".";
    SpawnOptions o;
    o.argv = {bin + "/worker/caddie-worker", "--controller", controller_->address(), "--work-dir", dir_ + "/worker",
              "--id", "w-e2e", "--trainer", bin + "/tests/fake_trainer/caddie-fake-train", "--cpu-slots", "1",
              "--heartbeat-interval", "0.2", "--lease-interval", "0.1", "--http-listen", ""};
    o.env = CurrentEnvironment();
    SetEnv(&o.env, "CADDIE_WORKER_TOKEN", kWorker);
    SetEnv(&o.env, "CADDIE_FAKE_TRAIN", plan.dump());
    o.stdout_path = dir_ + "/worker.log";
    o.stderr_path = dir_ + "/worker.log";
    o.kill_with_parent = true;
    auto c = Spawn(o);
    ASSERT_TRUE(c.ok()) << c.status();
    worker_pid_ = c->pid;
  }
  v1::SubmitSweepResponse SubmitCpu(int n, int64_t artifact_limit = 0) {
    std::vector<int> seeds(n);
    for (int i = 0; i < n; ++i) seeds[i] = i;
    v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name("e2e");
    req.mutable_spec()->set_sweep_json(json({{"base", {{"iterations", 3}}}, {"axes", {{"seed", seeds}}}}).dump());
    req.mutable_spec()->set_gpus(0);
    req.mutable_spec()->set_max_attempts(3);
    req.mutable_spec()->mutable_budget()->set_train_seconds(20);
    req.mutable_spec()->mutable_budget()->set_eval_seconds(20);
    req.mutable_spec()->mutable_budget()->set_grace_seconds(2);
    if (artifact_limit) req.mutable_spec()->mutable_budget()->set_artifact_limit_bytes(artifact_limit);
    v1::SubmitSweepResponse resp;
    auto st = client_->user()->SubmitSweep(client_->UserCtx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  // Polls until `pred(jobs)` or 60 s; returns the last listing.
  std::vector<v1::Job> WaitFor(const std::string& sweep, const std::function<bool(const std::vector<v1::Job>&)>& pred) {
    std::vector<v1::Job> jobs;
    for (int i = 0; i < 600; ++i) {
      jobs = client_->ListJobs(sweep);
      if (pred(jobs)) return jobs;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "timed out; worker log:\n" << WorkerLog();
    return jobs;
  }
  std::string WorkerLog() {
    std::ifstream f(dir_ + "/worker.log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::string dir_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<Client> client_;
  pid_t worker_pid_ = -1;
};

bool AllIn(const std::vector<v1::Job>& jobs, v1::JobState s) {
  for (const auto& j : jobs) {
    if (j.state() != s) return false;
  }
  return !jobs.empty();
}

TEST_F(ControllerWorkerE2eTest, JobsRunThroughARealWorkerToTheLeaderboard) {
  ASSERT_NO_FATAL_FAILURE(StartWorker({{"steps", 3}, {"step_ms", 10}, {"val_bpb", 1.9}}));
  auto sub = SubmitCpu(2);
  auto jobs = WaitFor(sub.sweep().id(), [](const auto& j) { return AllIn(j, v1::JOB_STATE_SUCCEEDED); });
  ASSERT_TRUE(AllIn(jobs, v1::JOB_STATE_SUCCEEDED));
  for (const auto& j : jobs) {
    EXPECT_EQ(j.attempt(), 1);
    EXPECT_EQ(j.worker_id(), "w-e2e");
    EXPECT_GT(j.result().val_bpb_post_quant(), 0);
  }
  v1::LeaderboardRequest lr;
  lr.set_sweep_id(sub.sweep().id());
  v1::LeaderboardResponse lb;
  ASSERT_TRUE(client_->user()->Leaderboard(client_->UserCtx().get(), lr, &lb).ok());
  EXPECT_EQ(lb.entries_size(), 2) << WorkerLog();
  v1::GetJobLogsRequest gl;
  gl.set_job_id(jobs[0].id());
  v1::GetJobLogsResponse logs;
  ASSERT_TRUE(client_->user()->GetJobLogs(client_->UserCtx().get(), gl, &logs).ok());
  EXPECT_NE(logs.text().find("\"event\":\"final\""), std::string::npos) << logs.text();
}

}  // namespace
}  // namespace caddie::controller
