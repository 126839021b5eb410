#include "worker/job_runner.h"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/worker/process.h"

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

json ReadJson(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in, nullptr, false);
}

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
    batch_sizes_.clear();
    delivered_unix_.clear();
    runner_ = std::make_unique<JobRunner>(config, a, [this](std::vector<caddie::v1::Event> batch) {
      ++batches_;
      batch_sizes_.push_back(batch.size());
      const double now =
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      for (auto& e : batch) {
        events_.push_back(std::move(e));
        delivered_unix_.push_back(now);
      }
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
      // Run() has reaped its ranks: gone now, no waiting.
      EXPECT_TRUE(testing_support::ProcessGone(me["pid"].get<pid_t>(), std::chrono::milliseconds(0)))
          << "rank " << r << " survived";
    }
  }

  fs::path run_dir_;
  std::vector<caddie::v1::Event> events_;
  int batches_ = 0;
  std::vector<size_t> batch_sizes_;
  std::vector<double> delivered_unix_;  // per event: when its batch was handed on
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
  // Limit 1 s → SIGTERM 1 s after start (the fake's clock starts with it), SIGKILL 0.5 s later.
  JobOutcome o = RunJob({{"max_wallclock_seconds", 100.0},
                         {"fake", {{"steps", 100000}, {"step_ms", 20}, {"ignore_sigterm", true}}}},
                        MakeBudget(1.0, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TIME_LIMIT_KILLED) << o.message;
  EXPECT_FALSE(o.infra_failure);
  EXPECT_NE(o.message.find("training limit 1 s: SIGTERM, then SIGKILL after 0.5 s grace"), std::string::npos)
      << o.message;
  EXPECT_GE(elapsed_s_, 1.4);
  EXPECT_LT(elapsed_s_, 3.0);
  // It trained on through the SIGTERM until the SIGKILL: its last report is past the limit.
  ASSERT_FALSE(events_.empty());
  const json last = json::parse(events_.back().json());
  EXPECT_GE(last.value("train_time_s", 0.0), 1.3) << events_.back().json();
  ExpectNoRankAlive(1);
}

TEST_F(JobRunnerTest, WarmUpAndEvaluationLeftOffTheTrainersClockDoNotCountTowardTheLimit) {
  // 1 s of warm-up, then a 2 s training clock with a 0.25 s evaluation every 5 steps (0.5 s):
  // the trainer stops itself at its budget about 3.75 s after start. A wall-clock limit of
  // 2 s + 0.5 s grace would SIGTERM it at 2.5 s.
  JobOutcome o = RunJob({{"fake", {{"steps", 100000}, {"step_ms", 100}, {"warmup_ms", 1000}, {"val_every", 5},
                                   {"val_ms", 250}}}},
                        MakeBudget(2.0, 0.5, 5.0));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TIME_BUDGET) << o.message;
  EXPECT_EQ(o.message, "");
  EXPECT_GE(o.result.train_seconds(), 2.0);
  EXPECT_GE(elapsed_s_, 3.5);
  int vals = 0;
  for (const auto& e : events_) vals += e.type() == "val";
  EXPECT_GE(vals, 4);  // three during training, one at the end
}

TEST_F(JobRunnerTest, ATrainerClockThatLagsIsBoundedByTheEvaluationBudget) {
  // The fake's clock runs at a tenth of real time: left to itself it would train 10 s. The
  // worker lets a trainer leave at most eval_seconds (0.5 s) off its clock: SIGTERM at 1.5 s.
  JobOutcome o = RunJob({{"fake", {{"steps", 100000}, {"step_ms", 20}, {"clock_scale", 0.1}}}},
                        MakeBudget(1.0, 0.5, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TERMINATED) << o.message;
  EXPECT_NE(o.message.find("SIGTERM at the training limit"), std::string::npos) << o.message;
  EXPECT_GE(elapsed_s_, 1.4);
  EXPECT_LT(elapsed_s_, 3.0);
}

TEST(EstimateTrainingSecondsTest, FollowsTheTrainersClockWithinTheExcludedTimeBound) {
  // No report yet: wall time since start.
  EXPECT_DOUBLE_EQ(EstimateTrainingSeconds(5.0, std::nullopt, 0, 2.0), 5.0);
  // The reported clock plus the time since the report.
  EXPECT_DOUBLE_EQ(EstimateTrainingSeconds(10.0, 3.0, 1.0, 8.0), 4.0);
  // ... but never more than max_excluded behind the wall time since start.
  EXPECT_DOUBLE_EQ(EstimateTrainingSeconds(10.0, 3.0, 1.0, 2.0), 8.0);
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
  // SIGTERM at 1 s after start (silence limit max(1, 0.5) + 2 = 3 s); the first step ends at
  // 2.4 s, inside the 2 s grace.
  JobOutcome o = RunJob({{"max_wallclock_seconds", 100.0}, {"fake", {{"steps", 100000}, {"step_ms", 2400}}}},
                        MakeBudget(1.0, 2.0, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_TERMINATED) << o.message;
  EXPECT_EQ(o.result.steps(), 1);
  EXPECT_EQ(Types().back(), "final");
}

TEST_F(JobRunnerTest, TrainerSilentPastTheTrainingLimitIsNoProgressAfterTheGrace) {
  // SIGTERM at 1 s, unanswered; the silence limit (1.5 s) waits out the grace: SIGKILL at
  // 1.5 s, no progress.
  JobOutcome o = RunJob({{"max_wallclock_seconds", 100.0}, {"fake", {{"silent", true}}}}, MakeBudget(1.0, 0.5, 0.5));
  EXPECT_EQ(o.state, caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_NO_PROGRESS) << o.message;
  EXPECT_TRUE(o.infra_failure);
  EXPECT_GE(elapsed_s_, 1.4);
  EXPECT_LT(elapsed_s_, 3.5);
  ExpectNoRankAlive(1);
}

TEST_F(JobRunnerTest, AFastTrainersEventsGoOutInBatchesOfAtMost64InOrder) {
  RunnerConfig c;
  c.batch_interval = std::chrono::milliseconds(1000);  // only the size bound flushes mid-run
  JobOutcome o = RunJob({{"fake", {{"steps", 600}, {"step_ms", 0}}}}, {}, {}, c);
  ASSERT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  ASSERT_EQ(events_.size(), 603u);  // start, 600 steps, val, final
  for (size_t i = 0; i < events_.size(); ++i) ASSERT_EQ(events_[i].seq(), static_cast<int64_t>(i + 1));
  size_t full = 0;
  for (size_t n : batch_sizes_) {
    EXPECT_GE(n, 1u);
    EXPECT_LE(n, 64u);
    full += n == 64;
  }
  EXPECT_GE(full, 5u);  // 603 events in well under a second: mostly full batches
  EXPECT_LE(batch_sizes_.size(), 40u);
}

TEST_F(JobRunnerTest, ASlowTrainersEventsGoOutWithinTheBatchInterval) {
  // A step every 150 ms and a 200 ms batch interval: each event leaves within the interval
  // (plus a poll), not held for a full batch or for the end of the run.
  JobOutcome o = RunJob({{"fake", {{"steps", 10}, {"step_ms", 150}}}});
  ASSERT_EQ(o.state, caddie::v1::JOB_STATE_SUCCEEDED) << o.message;
  ASSERT_EQ(events_.size(), 13u);
  EXPECT_GE(batches_, 5);
  for (size_t i = 0; i + 2 < events_.size(); ++i) {  // val and final leave with the final flush
    EXPECT_LT(delivered_unix_[i] - events_[i].time_unix(), 0.6) << "event " << i << " " << events_[i].type();
  }
}

TEST_F(JobRunnerTest, ARanksOwnChildProcessesDieWithTheJob) {
  JobOutcome o = RunJob({{"fake", {{"steps", 100000}, {"step_ms", 20}, {"crash_at_step", 5}, {"crash_rank", 1},
                                   {"spawn_child", true}}}},
                        {}, {0, 1});
  EXPECT_EQ(o.exit_reason, caddie::v1::EXIT_REASON_CRASHED) << o.message;
  for (int r = 0; r < 2; ++r) {
    json me = ReadJson(run_dir_ / ("fake_rank" + std::to_string(r) + ".json"));
    ASSERT_TRUE(me.contains("child_pid")) << me.dump();
    const long long child = me["child_pid"].get<long long>();
    // Reparented when its rank died; the group SIGKILL still reached it (a zombie awaiting
    // its new parent's reap counts as gone).
    const bool gone = testing_support::ProcessGone(static_cast<pid_t>(child), std::chrono::milliseconds(2000));
    EXPECT_TRUE(gone) << "rank " << r << "'s child " << child << " outlived the job";
  }
  ExpectNoRankAlive(2);
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
