#include "worker/job_runner.h"

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

json ReadJson(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in, nullptr, false);
}

bool ProcessGone(long long pid) { return kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

class JobRunnerTest : public testing::Test {
 protected:
  void TearDown() override {
    std::error_code ec;
    if (!HasFailure() && !run_dir_.empty()) fs::remove_all(run_dir_, ec);
  }

  // Runs `spec` (with `gpus` fake GPU indices) under `budget`; collects events.
  JobOutcome RunJob(json spec, caddie::v1::Budget budget = {}, std::vector<int> gpus = {},
                    RunnerConfig config = {}) {
    static int n = 0;
    caddie::v1::Job job;
    job.set_id("job-" + std::to_string(++n));
    job.set_attempt(1);
    job.mutable_spec()->set_spec_json(spec.dump());
    job.mutable_spec()->set_gpus(static_cast<int>(gpus.size()));
    *job.mutable_spec()->mutable_budget() = budget;
    JobAssignment a;
    a.job = job;
    a.fencing_token = 7;
    a.gpu_indices = gpus;
    run_dir_ = fs::path(testing::TempDir()) / ("runner_" + std::to_string(getpid())) / job.id();
    a.run_dir = run_dir_.string();
    if (config.trainer.empty()) config.trainer = CADDIE_FAKE_TRAIN_PATH;
    if (config.data_dir.empty()) config.data_dir = "/data/default";
    events_.clear();
    batches_ = 0;
    runner_ = std::make_unique<JobRunner>(config, a, [this](std::vector<caddie::v1::Event> batch) {
      ++batches_;
      for (auto& e : batch) events_.push_back(std::move(e));
    });
    live_.store(runner_.get());
    const auto t0 = Clock::now();
    JobOutcome o = runner_->Run();
    elapsed_s_ = std::chrono::duration<double>(Clock::now() - t0).count();
    return o;
  }

  std::vector<std::string> Types() const {
    std::vector<std::string> t;
    for (const auto& e : events_) t.push_back(e.type());
    return t;
  }

  void ExpectNoRankAlive(int ranks) {
    for (int r = 0; r < ranks; ++r) {
      json me = ReadJson(run_dir_ / ("fake_rank" + std::to_string(r) + ".json"));
      ASSERT_TRUE(me.is_object()) << "rank " << r;
      EXPECT_TRUE(ProcessGone(me["pid"].get<long long>())) << "rank " << r << " survived";
    }
  }

  fs::path run_dir_;
  std::vector<caddie::v1::Event> events_;
  int batches_ = 0;
  double elapsed_s_ = 0;
  std::unique_ptr<JobRunner> runner_;
  std::atomic<JobRunner*> live_{nullptr};  // for other threads: set before Run
};

caddie::v1::Budget MakeBudget(double train, double grace, double eval = 0) {
  caddie::v1::Budget b;
  b.set_train_seconds(train);
  b.set_grace_seconds(grace);
  b.set_eval_seconds(eval);
  return b;
}

TEST(ParseEventLineTest, TrainerEventKeepsTheWholeLine) {
  const std::string line = R"({"event":"step","time":12.5,"step":7,"train_loss":3.1})";
  caddie::v1::Event e = ParseEventLine(line, 99.0);
  EXPECT_EQ(e.type(), "step");
  EXPECT_EQ(e.step(), 7);
  EXPECT_DOUBLE_EQ(e.time_unix(), 12.5);
  EXPECT_EQ(e.json(), line);
}

TEST(ParseEventLineTest, OtherOutputBecomesALogEvent) {
  caddie::v1::Event e = ParseEventLine("warning: something \"odd\"", 99.0);
  EXPECT_EQ(e.type(), "log");
  EXPECT_DOUBLE_EQ(e.time_unix(), 99.0);
  json j = json::parse(e.json());
  EXPECT_EQ(j["message"], "warning: something \"odd\"");
  EXPECT_EQ(ParseEventLine("[1,2]", 1.0).type(), "log");
}

TEST(ResolveBudgetTest, ZeroMeansDefault) {
  EffectiveBudget b = ResolveBudget(caddie::v1::Budget{});
  EXPECT_EQ(b.train_seconds, 600);
  EXPECT_EQ(b.eval_seconds, 600);
  EXPECT_EQ(b.artifact_limit_bytes, 16000000);
  EXPECT_EQ(b.grace_seconds, 30);
}

TEST_F(JobRunnerTest, SuccessStreamsEventsInOrderAndKeepsLogs) {
  JobOutcome o = RunJob({{"fake", {{"steps", 5}, {"step_ms", 20}}}});
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_COMPLETED);
  EXPECT_FALSE(o.infra_failure);
  EXPECT_EQ(Types(), (std::vector<std::string>{"start", "step", "step", "step", "step", "step", "val", "final"}));
  for (size_t i = 0; i < events_.size(); ++i) {
    EXPECT_EQ(events_[i].seq(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(events_[i].attempt(), 1);
  }
  EXPECT_EQ(events_[5].step(), 5);
  EXPECT_EQ(o.result.steps(), 5);
  EXPECT_EQ(o.result.artifact_bytes(), 1000);
  EXPECT_TRUE(o.result.within_budget());
  EXPECT_DOUBLE_EQ(o.result.val_bpb(), 2.5);
  EXPECT_EQ(json::parse(o.result.final_json())["event"], "final");
  // The spec on disk: budget and data filled in, the rest untouched.
  json spec = ReadJson(run_dir_ / "spec.json");
  EXPECT_EQ(spec["max_wallclock_seconds"], 600.0);
  EXPECT_EQ(spec["data"], "/data/default");
  EXPECT_EQ(spec["fake"]["steps"], 5);
  // Logs stay on disk.
  std::ifstream out(run_dir_ / "rank0.stdout.log");
  std::string first;
  std::getline(out, first);
  EXPECT_EQ(json::parse(first)["event"], "start");
  EXPECT_NE(TailFile((run_dir_ / "rank0.stderr.log").string(), 1).find("step 5"), std::string::npos);
}

TEST_F(JobRunnerTest, SpecKeysWinOverWorkerDefaults) {
  JobOutcome o = RunJob({{"max_wallclock_seconds", 123.0}, {"data", "/mine"}, {"fake", {{"steps", 1}}}});
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  json spec = ReadJson(run_dir_ / "spec.json");
  EXPECT_EQ(spec["max_wallclock_seconds"], 123.0);
  EXPECT_EQ(spec["data"], "/mine");
}

TEST_F(JobRunnerTest, RanksGetRendezvousEnvironment) {
  JobOutcome o = RunJob({{"fake", {{"steps", 2}, {"step_ms", 10}}}}, {}, {3, 5});
  ASSERT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  json r0 = ReadJson(run_dir_ / "fake_rank0.json"), r1 = ReadJson(run_dir_ / "fake_rank1.json");
  EXPECT_EQ(r0["CUDA_VISIBLE_DEVICES"], "3,5");
  EXPECT_EQ(r1["CUDA_VISIBLE_DEVICES"], "3,5");
  EXPECT_EQ(r0["RANK"], "0");
  EXPECT_EQ(r1["RANK"], "1");
  EXPECT_EQ(r1["LOCAL_RANK"], "1");
  EXPECT_EQ(r0["WORLD_SIZE"], "2");
  EXPECT_EQ(r0["MASTER_ADDR"], "127.0.0.1");
  EXPECT_EQ(r0["MASTER_PORT"], r1["MASTER_PORT"]);
  EXPECT_GT(std::stoi(r0["MASTER_PORT"].get<std::string>()), 0);
  // Ranks share one process group led by rank 0, distinct from ours.
  EXPECT_NE(r0["pid"], r1["pid"]);
}

TEST(WithoutSecretsTest, DropsCaddieTokenVariablesAndWithheldValues) {
  const std::vector<std::string> env = {"CADDIE_TOKEN=u", "CADDIE_WORKER_TOKEN=w", "CADDIE_USER_TOKEN_FILE=/f",
                                        "CADDIE_TOKEN", "CADDIE_ADDR=h:1", "MY_TOKEN=kept", "ALIAS=s3cret",
                                        "ALIAS2=s3cret-not", "RANK=0", "EMPTY="};
  EXPECT_EQ(WithoutSecrets(env, {"s3cret", ""}),
            (std::vector<std::string>{"CADDIE_ADDR=h:1", "MY_TOKEN=kept", "ALIAS2=s3cret-not", "RANK=0", "EMPTY="}));
}

// The trainer runs the job's code: no caddie token reaches it, whatever the
// variable, while the rendezvous variables and the rest of the env still do.
TEST_F(JobRunnerTest, TrainerGetsNoTokens) {
  const std::vector<std::pair<std::string, std::string>> set = {
      {"CADDIE_TOKEN", "user-secret-1"}, {"CADDIE_WORKER_TOKEN", "worker-secret-2"},
      {"CADDIE_USER_TOKEN", "user-secret-3"}, {"WORKER_TOKEN_COPY", "worker-secret-4"},
      {"CADDIE_KEEP_ME", "kept"}};
  for (const auto& [k, v] : set) setenv(k.c_str(), v.c_str(), 1);
  RunnerConfig config;
  config.withheld_values = {"worker-secret-4"};
  JobOutcome o = RunJob({{"fake", {{"steps", 1}, {"step_ms", 10}, {"dump_env", true}}}}, {}, {3, 5}, config);
  for (const auto& [k, v] : set) unsetenv(k.c_str());
  ASSERT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  for (const char* rank : {"fake_rank0.json", "fake_rank1.json"}) {
    const json env = ReadJson(run_dir_ / rank).value("env", json::object());
    ASSERT_FALSE(env.empty()) << rank;
    for (const char* gone : {"CADDIE_TOKEN", "CADDIE_WORKER_TOKEN", "CADDIE_USER_TOKEN", "WORKER_TOKEN_COPY"}) {
      EXPECT_FALSE(env.contains(gone)) << rank << " has " << gone;
    }
    EXPECT_EQ(env.value("CADDIE_KEEP_ME", ""), "kept");
    for (const char* present : {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                "CUDA_VISIBLE_DEVICES", "CADDIE_JOB_ID", "CADDIE_ATTEMPT", "PATH"}) {
      EXPECT_TRUE(env.contains(present)) << rank << " lacks " << present;
    }
    EXPECT_EQ(env.value("WORLD_SIZE", ""), "2");
  }
}

TEST_F(JobRunnerTest, CpuJobSeesNoGpus) {
  JobOutcome o = RunJob({{"fake", {{"steps", 1}}}});
  ASSERT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  json r0 = ReadJson(run_dir_ / "fake_rank0.json");
  EXPECT_EQ(r0["CUDA_VISIBLE_DEVICES"], "");
  EXPECT_EQ(r0["WORLD_SIZE"], "1");
}

TEST_F(JobRunnerTest, TrainerIgnoringSigtermIsKilledAtLimitPlusGrace) {
  // Limit 1 s + 0.5 s grace → SIGTERM at 1.5 s after start, SIGKILL 0.5 s later.
  JobOutcome o = RunJob({{"max_wallclock_seconds", 100.0},
                         {"fake", {{"steps", 100000}, {"step_ms", 20}, {"ignore_sigterm", true}}}},
                        MakeBudget(1.0, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TIME_LIMIT_KILLED) << o.message;
  EXPECT_FALSE(o.infra_failure);
  EXPECT_NE(o.message.find("training limit 1 s"), std::string::npos) << o.message;
  EXPECT_GE(elapsed_s_, 1.9);
  EXPECT_LT(elapsed_s_, 4.0);
  ExpectNoRankAlive(1);
}

TEST_F(JobRunnerTest, TrainerHonouringSigtermFinishesWithTerminated) {
  JobOutcome o = RunJob({{"max_wallclock_seconds", 100.0}, {"fake", {{"steps", 100000}, {"step_ms", 20}}}},
                        MakeBudget(0.5, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TERMINATED);
  EXPECT_NE(o.message.find("SIGTERM at the training limit"), std::string::npos) << o.message;
  EXPECT_EQ(Types().back(), "final");
  EXPECT_LT(elapsed_s_, 3.0);
}

TEST_F(JobRunnerTest, TrainerStopsItselfAtItsBudget) {
  JobOutcome o = RunJob({{"fake", {{"steps", 100000}, {"step_ms", 20}}}}, MakeBudget(0.4, 5.0));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TIME_BUDGET);
  EXPECT_EQ(o.message, "");
}

TEST_F(JobRunnerTest, EvaluationPastItsLimitIsKilled) {
  // Training ends at `iterations`; evaluation then takes 30 s against a 0.5 s limit.
  JobOutcome o = RunJob({{"iterations", 3}, {"fake", {{"step_ms", 10}, {"eval_ms", 30000}}}},
                        MakeBudget(60, 0.3, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_EVAL_LIMIT_KILLED) << o.message;
  EXPECT_LT(elapsed_s_, 3.0);
}

TEST_F(JobRunnerTest, ArtifactOneByteOverTheLimitIsOverBudgetMeasuredOnDisk) {
  // The fake claims 1,000 bytes; the file on disk has 16,000,001.
  JobOutcome o = RunJob({{"fake", {{"steps", 1}, {"artifact_bytes", 16000001}, {"reported_artifact_bytes", 1000}}}});
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_OVER_BUDGET) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_OVER_BUDGET);
  EXPECT_EQ(o.result.artifact_bytes(), 16000001);
  EXPECT_EQ(o.result.limit_bytes(), 16000000);
  EXPECT_FALSE(o.result.within_budget());
  EXPECT_NE(o.message.find("16000001"), std::string::npos) << o.message;
  EXPECT_NE(o.message.find("reported 1000"), std::string::npos) << o.message;
}

TEST_F(JobRunnerTest, ArtifactExactlyAtTheLimitCountsCodeBytes) {
  JobOutcome ok = RunJob({{"fake", {{"steps", 1}, {"artifact_bytes", 15999000}, {"code_bytes", 1000}}}});
  EXPECT_EQ(ok.state, caddie::v1::JOB_STATE_SUCCEEDED) << ok.message;
  EXPECT_EQ(ok.result.artifact_bytes(), 16000000);
  JobOutcome over = RunJob({{"fake", {{"steps", 1}, {"artifact_bytes", 15999000}, {"code_bytes", 1001}}}});
  EXPECT_EQ(over.state, caddie::v1::JOB_STATE_OVER_BUDGET) << over.message;
}

TEST_F(JobRunnerTest, OneRankCrashingKillsTheOthersAndReportsIt) {
  JobOutcome o = RunJob({{"fake", {{"steps", 100000}, {"step_ms", 20}, {"crash_at_step", 3}, {"crash_rank", 1},
                                   {"crash_exit_code", 7}}}},
                        {}, {0, 1});
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_CRASHED);
  EXPECT_TRUE(o.infra_failure);
  EXPECT_NE(o.message.find("rank 1 exited with exit code 7"), std::string::npos) << o.message;
  EXPECT_NE(o.message.find("crashing at step 3"), std::string::npos) << o.message;
  EXPECT_LT(elapsed_s_, 3.0);
  ExpectNoRankAlive(2);
}

TEST_F(JobRunnerTest, RankKilledBySignalIsReported) {
  JobOutcome o = RunJob({{"fake", {{"steps", 100}, {"step_ms", 10}, {"crash_at_step", 2}, {"crash_signal", SIGSEGV}}}});
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_CRASHED);
  EXPECT_NE(o.message.find("rank 0 exited with signal 11"), std::string::npos) << o.message;
}

TEST_F(JobRunnerTest, BadSpecIsNotAnInfraFailure) {
  JobOutcome o = RunJob({{"fake", "not an object"}});
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_CRASHED);
  EXPECT_FALSE(o.infra_failure);
  EXPECT_NE(o.message.find("exit code 2"), std::string::npos) << o.message;
  EXPECT_NE(o.message.find("spec key \"fake\" must be an object"), std::string::npos) << o.message;
}

TEST_F(JobRunnerTest, SilentTrainerFailsWithNoProgress) {
  RunnerConfig c;
  c.silence_seconds = 0.5;
  JobOutcome o = RunJob({{"fake", {{"silent", true}}}}, {}, {}, c);
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_NO_PROGRESS) << o.message;
  EXPECT_TRUE(o.infra_failure);
  EXPECT_EQ(Types(), std::vector<std::string>{"start"});
  EXPECT_LT(elapsed_s_, 3.0);
  ExpectNoRankAlive(1);
}

// The default silence limit, max(train, eval) + grace, is also the moment of the training
// limit's SIGTERM. A trainer silent since its start (a slow warm-up, a first step longer than
// the budget: the SSM hybrid on one H100) must still get the SIGTERM's grace, not a SIGKILL one
// poll later.
TEST_F(JobRunnerTest, StepLongerThanTheBudgetGetsItsSigtermGrace) {
  // SIGTERM at 1 + 1 = 2 s after start; the first step ends at 2.4 s, inside the grace.
  JobOutcome o = RunJob({{"max_wallclock_seconds", 100.0}, {"fake", {{"steps", 100000}, {"step_ms", 2400}}}},
                        MakeBudget(1.0, 1.0, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TERMINATED) << o.message;
  EXPECT_EQ(o.result.steps(), 1);
  EXPECT_EQ(Types().back(), "final");
}

TEST_F(JobRunnerTest, TrainerSilentPastTheTrainingLimitIsNoProgressAfterTheGrace) {
  // SIGTERM at 1.5 s (silence limit 1.5 s too), unanswered: SIGKILL at 2 s, no progress.
  JobOutcome o = RunJob({{"max_wallclock_seconds", 100.0}, {"fake", {{"silent", true}}}}, MakeBudget(1.0, 0.5, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_NO_PROGRESS) << o.message;
  EXPECT_TRUE(o.infra_failure);
  EXPECT_GE(elapsed_s_, 1.9);
  EXPECT_LT(elapsed_s_, 4.0);
  ExpectNoRankAlive(1);
}

TEST_F(JobRunnerTest, CancelKillsTheGroupAtOnce) {
  std::thread canceller([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    JobRunner* r = nullptr;
    while ((r = live_.load()) == nullptr) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    r->Cancel("user asked");
  });
  JobOutcome o = RunJob({{"fake", {{"steps", 100000}, {"step_ms", 20}, {"ignore_sigterm", true}}}}, {}, {0, 1});
  canceller.join();
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_CANCELLED);
  EXPECT_EQ(o.message, "user asked");
  EXPECT_LT(elapsed_s_, 2.0);
  ExpectNoRankAlive(2);
}

TEST_F(JobRunnerTest, MissingTrainerIsAnInfraError) {
  RunnerConfig c;
  c.trainer = "/nonexistent/caddie-train";
  JobOutcome o = RunJob({{"fake", {{"steps", 1}}}}, {}, {}, c);
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_INFRA_ERROR);
  EXPECT_TRUE(o.infra_failure);
  EXPECT_NE(o.message.find("/nonexistent/caddie-train"), std::string::npos) << o.message;
}

}  // namespace
}  // namespace caddie::worker
