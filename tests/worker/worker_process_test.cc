// caddie-worker as a real process, running caddie-fake-train rank processes,
// against a WorkerService on loopback (tests/worker/fake_controller.h) that can
// be shut down and served again on the same port — a controller restart whose
// database is the FakeController object. Issue 9's "must show" list.
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/worker/fake_controller.h"
#include "tests/worker/process.h"

namespace caddie {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using testing_support::FakeController;
using testing_support::Process;
using testing_support::ProcessGone;
using Clock = std::chrono::steady_clock;

fs::path BinaryDir() {
  const char* d = std::getenv("CADDIE_BINARY_DIR");
  return d != nullptr ? fs::path(d) : fs::current_path();
}

caddie::v1::Job MakeJob(const std::string& id, json spec, int gpus = 0, caddie::v1::Budget budget = {}) {
  caddie::v1::Job j;
  j.set_id(id);
  j.set_attempt(1);
  j.mutable_spec()->set_spec_json(spec.dump());
  j.mutable_spec()->set_gpus(gpus);
  *j.mutable_spec()->mutable_budget() = budget;
  return j;
}

class WorkerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("worker_process_" + std::to_string(getpid())) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "worker.token") << "tok-123\n";
    fake_.heartbeat_s = 0.5;
    server_ = testing_support::Serve(&fake_, &port_);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    worker_.Kill();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
    if (HasFailure()) {
      std::fprintf(stderr, "--- worker log\n%s\n", worker_.Log().c_str());
    } else {
      std::error_code ec;
      fs::remove_all(dir_, ec);  // artifacts of 16 MB add up
    }
  }

  void StartWorker(int gpus, const std::string& trainer = "", std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        (BinaryDir() / "worker/caddie-worker").string(),
        "--controller", "127.0.0.1:" + std::to_string(port_),
        "--token-file", (dir_ / "worker.token").string(),
        "--work-dir", (dir_ / "work").string(),
        "--id", "w1",
        "--trainer", trainer.empty() ? (BinaryDir() / "tests/fake_trainer/caddie-fake-train").string() : trainer,
        "--gpus", std::to_string(gpus),  // -1: not given
        "--nvidia-smi", "/nonexistent/nvidia-smi",  // the same inventory on every CI machine
        "--lease-interval", "0.1",
        "--http-listen", "127.0.0.1:0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSERT_TRUE(worker_.Start(argv, dir_ / "worker.log").ok());
    ASSERT_TRUE(fake_.WaitFor([&] { return !fake_.registrations.empty(); }, 20s)) << worker_.Log();
  }

  fs::path RunDir(const std::string& job) { return dir_ / "work" / "w1" / "runs" / (job + "-a1"); }
  // A rank's pid, or with key "child_pid" the pid of the child it forked (spawn_child).
  pid_t RankPid(const std::string& job, int rank, const char* key = "pid") {
    std::ifstream in(RunDir(job) / ("fake_rank" + std::to_string(rank) + ".json"));
    json j = json::parse(in, nullptr, false);
    return j.is_object() && j.contains(key) ? j[key].get<pid_t>() : -1;
  }
  bool WaitCompleted(const std::string& job, std::chrono::milliseconds timeout) {
    return fake_.WaitFor([&] { return fake_.completions.count(job) > 0; }, timeout);
  }
  caddie::v1::CompleteJobRequest Completion(const std::string& job) {
    absl::MutexLock l(&fake_.mu);
    return fake_.completions[job];
  }
  std::vector<caddie::v1::Event> Events(const std::string& job) {
    absl::MutexLock l(&fake_.mu);
    return fake_.events[job];
  }
  void Enqueue(caddie::v1::Job job) {
    absl::MutexLock l(&fake_.mu);
    fake_.queue.push_back(std::move(job));
  }

  fs::path dir_;
  FakeController fake_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  Process worker_;
};

TEST_F(WorkerProcessTest, JobRunsToSuccessAndEventsArriveInOrder) {
  Enqueue(MakeJob("ok", {{"fake", {{"steps", 6}, {"step_ms", 30}}}}));
  StartWorker(0);
  ASSERT_TRUE(WaitCompleted("ok", 20s));
  const auto c = Completion("ok");
  EXPECT_EQ(c.state(), caddie::v1::JOB_STATE_SUCCEEDED) << c.message();
  EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_COMPLETED);
  EXPECT_EQ(c.result().steps(), 6);
  const auto events = Events("ok");
  ASSERT_EQ(events.size(), 9u);  // start, 6 × step, val, final
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
  EXPECT_EQ(events.front().type(), "start");
  for (int s = 1; s <= 6; ++s) EXPECT_EQ(events[s].step(), s);
  EXPECT_EQ(events.back().type(), "final");
  absl::MutexLock l(&fake_.mu);
  EXPECT_EQ(fake_.auth, "Bearer tok-123");
  EXPECT_FALSE(fake_.gaps);
}

TEST_F(WorkerProcessTest, TrainerIgnoringSigtermIsKilledAtLimitPlusGrace) {
  caddie::v1::Budget b;
  b.set_train_seconds(1);
  b.set_grace_seconds(1);
  Enqueue(MakeJob("stubborn",
                  {{"max_wallclock_seconds", 1000},
                   {"fake", {{"steps", 1000000}, {"step_ms", 20}, {"ignore_sigterm", true}}}},
                  0, b));
  StartWorker(0);
  ASSERT_TRUE(WaitCompleted("stubborn", 20s));
  const double done_at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const auto c = Completion("stubborn");
  EXPECT_EQ(c.state(), caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_TIME_LIMIT_KILLED) << c.message();
  EXPECT_FALSE(c.infra_failure());
  const auto events = Events("stubborn");
  ASSERT_FALSE(events.empty());
  // SIGTERM at the 1 s limit of the training clock, SIGKILL after the 1 s grace: about 2 s
  // after `start` (the fake's clock starts with it).
  const double took = done_at - events.front().time_unix();
  EXPECT_GE(took, 1.9);
  EXPECT_LT(took, 4.0);
  const pid_t rank0 = RankPid("stubborn", 0);
  ASSERT_GT(rank0, 0);
  EXPECT_TRUE(ProcessGone(rank0, 1s));
}

TEST_F(WorkerProcessTest, ArtifactOf16000001BytesIsOverBudget) {
  Enqueue(MakeJob("big", {{"fake", {{"steps", 2}, {"artifact_bytes", 16000001}, {"reported_artifact_bytes", 15000000}}}}));
  StartWorker(0);
  ASSERT_TRUE(WaitCompleted("big", 20s));
  const auto c = Completion("big");
  EXPECT_EQ(c.state(), caddie::v1::JOB_STATE_OVER_BUDGET) << c.message();
  EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_OVER_BUDGET);
  EXPECT_EQ(c.result().artifact_bytes(), 16000001);
  EXPECT_EQ(c.result().limit_bytes(), 16000000);
  EXPECT_FALSE(c.result().within_budget());
  EXPECT_FALSE(c.infra_failure());
}

TEST_F(WorkerProcessTest, ControllerRestartMidJobLosesNoEvent) {
  Enqueue(MakeJob("long", {{"fake", {{"steps", 30}, {"step_ms", 100}}}}));
  StartWorker(0);
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["long"].size() >= 3; }, 20s));
  // The controller process goes away (its connections drop) for 1.5 s...
  server_->Shutdown(std::chrono::system_clock::now());
  server_.reset();
  std::this_thread::sleep_for(1500ms);
  // ...and comes back on the same port with its state, not knowing the worker.
  {
    absl::MutexLock l(&fake_.mu);
    fake_.reregister = true;
  }
  server_ = testing_support::Serve(&fake_, &port_);
  ASSERT_NE(server_, nullptr);
  ASSERT_TRUE(WaitCompleted("long", 20s));
  const auto events = Events("long");
  ASSERT_EQ(events.size(), 33u);  // start, 30 × step, val, final — none lost
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
  EXPECT_EQ(Completion("long").state(), caddie::v1::JOB_STATE_SUCCEEDED);
  absl::MutexLock l(&fake_.mu);
  EXPECT_FALSE(fake_.gaps);
  EXPECT_GE(fake_.registrations.size(), 2u);  // registered again after the restart
}

TEST_F(WorkerProcessTest, KillingOneOfTwoRanksFailsTheJobAndLeavesNoOrphan) {
  // Each rank also forks a helper process (as a data loader would): no orphan means those too.
  Enqueue(MakeJob("pair", {{"fake", {{"steps", 1000000}, {"step_ms", 20}, {"spawn_child", true}}}}, 2));
  StartWorker(2);
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["pair"].size() >= 3; }, 20s));
  const pid_t r0 = RankPid("pair", 0), r1 = RankPid("pair", 1);
  const pid_t c0 = RankPid("pair", 0, "child_pid"), c1 = RankPid("pair", 1, "child_pid");
  ASSERT_GT(r0, 0);
  ASSERT_GT(r1, 0);
  ASSERT_GT(c0, 0);
  ASSERT_GT(c1, 0);
  ASSERT_FALSE(ProcessGone(c0, 0ms)) << "rank 0's child is not running";
  ASSERT_EQ(kill(r1, SIGKILL), 0);
  ASSERT_TRUE(WaitCompleted("pair", 10s));
  const auto c = Completion("pair");
  EXPECT_EQ(c.state(), caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_CRASHED);
  EXPECT_TRUE(c.infra_failure());
  EXPECT_NE(c.message().find("rank 1 exited with signal 9"), std::string::npos) << c.message();
  EXPECT_NE(c.message().find("fake-train rank 1 step"), std::string::npos) << c.message();  // its last log lines
  EXPECT_TRUE(ProcessGone(r0, 2s)) << "rank 0 survived its peer";
  EXPECT_TRUE(ProcessGone(r1, 2s));
  EXPECT_TRUE(ProcessGone(c0, 2s)) << "rank 0's child outlived the job";
  EXPECT_TRUE(ProcessGone(c1, 2s)) << "rank 1's child outlived the job";
}

TEST_F(WorkerProcessTest, CancelStopsARunningJobWithinTwoHeartbeats) {
  Enqueue(MakeJob("victim", {{"fake", {{"steps", 1000000}, {"step_ms", 20}, {"ignore_sigterm", true}}}}));
  StartWorker(0);
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["victim"].size() >= 3; }, 20s));
  const auto t0 = Clock::now();
  {
    absl::MutexLock l(&fake_.mu);
    fake_.cancel.insert("victim");
  }
  ASSERT_TRUE(WaitCompleted("victim", 10s));
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(took, 2 * fake_.heartbeat_s);
  const auto c = Completion("victim");
  EXPECT_EQ(c.state(), caddie::v1::JOB_STATE_CANCELLED) << c.message();
  EXPECT_TRUE(ProcessGone(RankPid("victim", 0), 1s));
}

TEST_F(WorkerProcessTest, SilentTrainerFailsWithNoProgress) {
  Enqueue(MakeJob("mute", {{"fake", {{"steps", 100}, {"step_ms", 20}, {"silent_after_step", 2}}}}));
  StartWorker(0, "", {"--silence-limit", "1"});
  ASSERT_TRUE(WaitCompleted("mute", 20s));
  const auto c = Completion("mute");
  EXPECT_EQ(c.state(), caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_NO_PROGRESS) << c.message();
  EXPECT_TRUE(c.infra_failure());
  EXPECT_EQ(Events("mute").size(), 3u);  // start, step 1, step 2
}

TEST_F(WorkerProcessTest, SigkilledWorkerLeavesNoOrphanRanks) {
  Enqueue(MakeJob("orphan", {{"fake", {{"steps", 1000000}, {"step_ms", 20}, {"ignore_sigterm", true}}}}, 2));
  StartWorker(2);
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["orphan"].size() >= 3; }, 20s));
  const pid_t r0 = RankPid("orphan", 0), r1 = RankPid("orphan", 1);
  ASSERT_GT(r0, 0);
  ASSERT_GT(r1, 0);
  worker_.Signal(SIGKILL);
  ASSERT_TRUE(worker_.Wait(5s).has_value());
  EXPECT_TRUE(ProcessGone(r0, 3s));
  EXPECT_TRUE(ProcessGone(r1, 3s));
}

TEST_F(WorkerProcessTest, SigtermedWorkerReportsItsJobAsRetryable) {
  Enqueue(MakeJob("drain", {{"fake", {{"steps", 1000000}, {"step_ms", 20}}}}));
  StartWorker(0);
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["drain"].size() >= 3; }, 20s));
  worker_.Signal(SIGTERM);
  auto st = worker_.Wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->ok()) << st->ToString();
  ASSERT_TRUE(WaitCompleted("drain", 1s));
  const auto c = Completion("drain");
  EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_INFRA_ERROR);
  EXPECT_TRUE(c.infra_failure());
  EXPECT_TRUE(ProcessGone(RankPid("drain", 0), 1s));
}

TEST_F(WorkerProcessTest, TwoWorkersOnOneHostDoNotCollide) {
  // Same work dir, different ids and GPU sets; each leases one 2-GPU job.
  Enqueue(MakeJob("a", {{"fake", {{"steps", 15}, {"step_ms", 40}}}}, 2));
  Enqueue(MakeJob("b", {{"fake", {{"steps", 15}, {"step_ms", 40}}}}, 2));
  StartWorker(-1, "", {"--gpu-ids", "0,1"});
  Process second;
  ASSERT_TRUE(second
                  .Start({(BinaryDir() / "worker/caddie-worker").string(), "--controller",
                          "127.0.0.1:" + std::to_string(port_), "--work-dir", (dir_ / "work").string(), "--id", "w2",
                          "--trainer", (BinaryDir() / "tests/fake_trainer/caddie-fake-train").string(), "--gpu-ids",
                          "2,3", "--nvidia-smi", "/nonexistent/nvidia-smi", "--lease-interval", "0.1",
                          "--http-listen", "127.0.0.1:0"},
                         dir_ / "worker2.log")
                  .ok());
  ASSERT_TRUE(WaitCompleted("a", 20s));
  ASSERT_TRUE(WaitCompleted("b", 20s)) << second.Log();
  EXPECT_EQ(Completion("a").state(), caddie::v1::JOB_STATE_SUCCEEDED) << Completion("a").message();
  EXPECT_EQ(Completion("b").state(), caddie::v1::JOB_STATE_SUCCEEDED) << Completion("b").message();
  // Which worker ran which job: its run dir says.
  std::map<std::string, json> rank0;
  for (const char* w : {"w1", "w2"}) {
    for (const char* j : {"a", "b"}) {
      std::ifstream in(dir_ / "work" / w / "runs" / (std::string(j) + "-a1") / "fake_rank0.json");
      if (in) rank0[w] = json::parse(in);
    }
  }
  ASSERT_EQ(rank0.size(), 2u) << "each worker ran one job in its own directory";
  EXPECT_EQ(rank0["w1"]["CUDA_VISIBLE_DEVICES"], "0,1");
  EXPECT_EQ(rank0["w2"]["CUDA_VISIBLE_DEVICES"], "2,3");
  EXPECT_NE(rank0["w1"]["MASTER_PORT"], rank0["w2"]["MASTER_PORT"]);
  // A third worker claiming id w2 in the same work dir is refused.
  Process dup;
  ASSERT_TRUE(dup.Start({(BinaryDir() / "worker/caddie-worker").string(), "--controller",
                         "127.0.0.1:" + std::to_string(port_), "--work-dir", (dir_ / "work").string(), "--id", "w2",
                         "--trainer", "/bin/true", "--gpus", "0", "--nvidia-smi", "/nonexistent/nvidia-smi"},
                        dir_ / "worker3.log")
                  .ok());
  auto st = dup.Wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code, 2);
  EXPECT_NE(dup.Log().find("worker id \"w2\" is in use"), std::string::npos) << dup.Log();
}

}  // namespace
}  // namespace caddie
