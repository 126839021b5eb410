// Every `caddie` command driven as a subprocess: against a real caddie-controller
// and caddie-worker (running caddie-fake-train) where it needs one, and the bad
// input cases (sweep file errors, unreachable controller, unknown ids, bad flags).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/cli/cli_harness.h"

namespace caddie::clitest {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

std::string Src(const std::string& rel) { return std::string(std::getenv("CADDIE_SOURCE_DIR")) + "/" + rel; }

const char kSmallSweep[] = R"(name: cli-e2e
base:
  data: unused-by-the-fake-trainer
  num_layers: 2
  model_dim: 64
  num_heads: 2
  num_kv_heads: 1
axes:
  loops: [1, 2]
gpus: 0
budget:
  train_seconds: 30
)";

TEST(CliOfflineTest, ValidateListsEveryJobOfAShippedExample) {
  RunResult r = RunCaddie({"sweep", "validate", Src("examples/depth_recurrence.yaml")});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sweep depth-recurrence: 8 jobs (grid)"));
  EXPECT_THAT(r.out, HasSubstr("loops=4 unique_blocks=9"));
  RunResult j = RunCaddie({"sweep", "validate", "--json", Src("examples/combined.yaml")});
  ASSERT_EQ(j.code, 0) << j.err;
  const json v = json::parse(j.out);
  EXPECT_TRUE(v["valid"].get<bool>());
  EXPECT_EQ(v["jobs"].size(), 24u);
}

TEST(CliOfflineTest, InvalidSweepReportsEveryErrorAndSubmitsNothing) {
  TempDir d;
  const std::string f = d.path() + "/bad.yaml";
  WriteFile(f,
            "base:\n"
            "  num_layer: 4\n"
            "  vocab_size: 10\n"
            "axes:\n"
            "  qat_bits: [1, 4]\n"
            "budgets: {train_seconds: 60}\n");
  RunResult r = RunCaddie({"sweep", "validate", f});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr(f + ":2:3: error: base.num_layer: unknown spec key \"num_layer\" (did you mean \"num_layers\"?)"));
  EXPECT_THAT(r.err, HasSubstr(f + ":3:15: error: base.vocab_size: vocab_size = 10 is out of range: allowed [256, 65536]"));
  EXPECT_THAT(r.err, HasSubstr(f + ":6:1: error: budgets: unknown sweep key \"budgets\" (did you mean \"budget\"?)"));
  EXPECT_THAT(r.err, HasSubstr(f + ":5:14: error: axes.qat_bits[0]: qat_bits = 1 is out of range: 0 (off) or 2..8"));
  EXPECT_THAT(r.err, HasSubstr("4 errors; nothing was submitted"));

  // submit checks first and never contacts the (here unreachable) controller.
  WriteFile(f, "base: {data: d}\naxes: {loops: [1, 0]}\n");
  r = RunCaddie({"--addr", "127.0.0.1:1", "sweep", "submit", f});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("axes.loops[1]: spec key \"loops\" = 0 is out of range [1, 64]"));
  EXPECT_THAT(r.err, Not(HasSubstr("cannot reach")));

  WriteFile(f, "base:\n  data: [unclosed\n");
  r = RunCaddie({"sweep", "validate", f});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr(f + ":3:1: error: YAML syntax error"));
}

TEST(CliOfflineTest, UnreachableControllerSaysWhereAndHowToStartOne) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--addr", "127.0.0.1:1", "jobs"}, {"--addr", "127.0.0.1:1", "workers", "--json"},
           {"--addr", "127.0.0.1:1", "watch", "j-1"}, {"--addr", "127.0.0.1:1", "leaderboard"}}) {
    RunResult r = RunCaddie(args, {}, std::chrono::seconds(30));
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_THAT(r.err, HasSubstr("cannot reach the caddie controller at 127.0.0.1:1 (address from --addr)"));
    EXPECT_THAT(r.err, HasSubstr("caddie up"));
    EXPECT_THAT(r.err, HasSubstr("caddie-controller --listen"));
  }
  RunResult env = RunCaddie({"sweeps"}, {{"CADDIE_ADDR", "127.0.0.1:2"}});
  EXPECT_EQ(env.code, 3);
  EXPECT_THAT(env.err, HasSubstr("127.0.0.1:2 (address from CADDIE_ADDR)"));
}

TEST(CliOfflineTest, ConfigFileAndFlagErrors) {
  TempDir d;
  WriteFile(d.path() + "/c.yaml", "adr: 127.0.0.1:3\n");
  RunResult r = RunCaddie({"--config", d.path() + "/c.yaml", "jobs"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown config key \"adr\" (did you mean \"addr\"?)"));
  WriteFile(d.path() + "/c.yaml", "addr: 127.0.0.1:3\n");
  r = RunCaddie({"--config", d.path() + "/c.yaml", "jobs"});
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, HasSubstr("127.0.0.1:3 (address from config file " + d.path() + "/c.yaml)"));
  r = RunCaddie({"jobs", "--state", "runing", "--addr", "127.0.0.1:3"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--state \"runing\" is not a job state"));
  r = RunCaddie({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  r = RunCaddie({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("Exit codes:"));
  EXPECT_THAT(r.out, HasSubstr("3    controller unreachable"));
}

// Polls until every job of the sweep is in a terminal state.
json WaitForSweep(LocalCluster& c, const std::string& sweep, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  json jobs;
  while (std::chrono::steady_clock::now() < until) {
    RunResult r = c.Caddie({"jobs", "--sweep", sweep, "--json"});
    if (r.code == 0) {
      jobs = json::parse(r.out)["jobs"];
      bool done = !jobs.empty();
      for (const auto& j : jobs) {
        const std::string s = j["state"];
        done = done && (s == "JOB_STATE_SUCCEEDED" || s == "JOB_STATE_FAILED" || s == "JOB_STATE_CANCELLED" ||
                        s == "JOB_STATE_OVER_BUDGET");
      }
      if (done) return jobs;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return jobs;
}

TEST(CliClusterTest, EveryCommandAgainstARealController) {
  LocalCluster c;
  ASSERT_TRUE(c.ok()) << c.error();
  const std::string f = c.dir() + "/small.yaml";
  WriteFile(f, kSmallSweep);

  // submit
  RunResult r = c.Caddie({"sweep", "submit", f, "--json"});
  ASSERT_EQ(r.code, 0) << r.err << c.ControllerLog();
  const json sub = json::parse(r.out);
  const std::string sweep = sub["sweep"]["id"];
  ASSERT_EQ(sub["jobs"].size(), 2u);
  const std::string job0 = sub["jobs"][0]["id"];
  EXPECT_EQ(json::parse(sub["jobs"][1]["params_json"].get<std::string>())["loops"], 2);

  // watch follows the first job to its end and exits 0 when it succeeds
  r = c.Caddie({"watch", job0}, std::chrono::seconds(60));
  EXPECT_EQ(r.code, 0) << r.out << r.err << c.WorkerLog();
  EXPECT_THAT(r.out, HasSubstr("is succeeded"));
  EXPECT_THAT(r.out, HasSubstr("final: val_bpb 2.5100 after quantisation (2.5000 before), artifact 1.0 kB within budget"));

  const json jobs = WaitForSweep(c, sweep, std::chrono::seconds(60));
  ASSERT_EQ(jobs.size(), 2u);
  for (const auto& j : jobs) EXPECT_EQ(j["state"], "JOB_STATE_SUCCEEDED") << j.dump();

  // sweeps / sweep show
  r = c.Caddie({"sweeps"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(sweep));
  EXPECT_THAT(r.out, HasSubstr("cli-e2e"));
  EXPECT_THAT(r.out, HasSubstr("2/2"));
  r = c.Caddie({"sweeps", "--json"});
  EXPECT_EQ(json::parse(r.out)["sweeps"][0]["spec"]["name"], "cli-e2e");
  r = c.Caddie({"sweep", "show", sweep});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("loops=2"));

  // jobs with filters
  r = c.Caddie({"jobs", "--sweep", sweep, "--state", "succeeded"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(job0));
  EXPECT_THAT(r.out, HasSubstr("succeeded"));
  r = c.Caddie({"jobs", "--sweep", sweep, "--state", "queued,running", "--json"});
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(json::parse(r.out).value("jobs", json::array()).empty()) << r.out;

  // job
  r = c.Caddie({"job", job0});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("state:           succeeded"));
  EXPECT_THAT(r.out, HasSubstr("val_bpb:"));
  EXPECT_THAT(r.out, HasSubstr("within budget"));
  r = c.Caddie({"job", job0, "--json"});
  EXPECT_EQ(json::parse(r.out)["id"], job0);

  // logs
  r = c.Caddie({"logs", job0});
  EXPECT_EQ(r.code, 0) << r.err;
  r = c.Caddie({"logs", job0, "-f"}, std::chrono::seconds(20));
  EXPECT_EQ(r.code, 0) << r.err;  // the job has ended: -f returns

  // cancel of a job that has ended: a clear error, exit 7, and the job keeps its outcome
  r = c.Caddie({"cancel", job0});
  EXPECT_EQ(r.code, 7) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("job " + job0 + " has already ended (succeeded, completed); there is nothing to cancel"));
  EXPECT_EQ(r.out, "");
  r = c.Caddie({"job", job0, "--json"});
  EXPECT_EQ(json::parse(r.out)["state"], "JOB_STATE_SUCCEEDED");

  // leaderboard
  r = c.Caddie({"leaderboard", "--sweep", sweep});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("2.5100"));  // after quantisation
  EXPECT_THAT(r.out, HasSubstr(job0));
  r = c.Caddie({"leaderboard", "--json"});
  EXPECT_EQ(json::parse(r.out)["entries"].size(), 2u);

  // workers
  r = c.Caddie({"workers"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("test-worker"));
  EXPECT_THAT(r.out, HasSubstr("ready"));

  // A job no worker can place: pending reason, then cancel.
  const std::string g = c.dir() + "/gpu.yaml";
  WriteFile(g, "name: needs-gpus\nbase: {data: d}\ngpus: 8\n");
  r = c.Caddie({"sweep", "submit", g, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string queued = json::parse(r.out)["jobs"][0]["id"];
  std::this_thread::sleep_for(std::chrono::seconds(1));
  r = c.Caddie({"job", queued});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("state:           queued"));
  EXPECT_THAT(r.out, HasSubstr("pending reason:"));
  r = c.Caddie({"cancel", queued});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("is cancelled"));
  r = c.Caddie({"watch", queued});
  EXPECT_EQ(r.code, 6) << r.out << r.err;  // ended, but not successfully
  EXPECT_THAT(r.out, HasSubstr("is cancelled"));

  // sweep cancel: every unfinished job of the sweep.
  r = c.Caddie({"sweep", "submit", g, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string gsweep = json::parse(r.out)["sweep"]["id"];
  r = c.Caddie({"sweep", "cancel", gsweep});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("cancelled sweep " + gsweep));
  r = c.Caddie({"jobs", "--sweep", gsweep, "--state", "cancelled", "--json"});
  EXPECT_EQ(json::parse(r.out)["jobs"].size(), 1u) << r.out;

  // Unknown ids: exit 4.
  r = c.Caddie({"job", "no-such-job"});
  EXPECT_EQ(r.code, 4) << r.err;
  r = c.Caddie({"cancel", "no-such-job"});
  EXPECT_EQ(r.code, 4) << r.err;
  r = c.Caddie({"sweep", "show", "no-such-sweep"});
  EXPECT_EQ(r.code, 4) << r.err;
}

// Polls `caddie job ID --json` until the job is in `state` (e.g. "JOB_STATE_RUNNING").
bool WaitForJobState(LocalCluster& c, const std::string& job, const std::string& state, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    RunResult r = c.Caddie({"job", job, "--json"});
    if (r.code == 0 && json::parse(r.out).value("state", "") == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The pid of the fake trainer's rank 0 under `work_dir` (its fake_rank0.json) and
// its run dir; {0, ""} until the trainer has written it.
std::pair<pid_t, std::string> FakeTrainerPid(const std::string& work_dir) {
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(work_dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename() != "fake_rank0.json") continue;
    const json me = json::parse(ReadFileOrEmpty(it->path().string()), nullptr, false);
    if (me.is_object() && me.contains("pid")) return {me["pid"].get<pid_t>(), it->path().parent_path().string()};
  }
  return {0, ""};
}

// `caddie cancel` of a RUNNING job: exit 0, the job ends CANCELLED within two
// heartbeats (the worker learns it from the next one and kills the trainer's
// process group), and the trainer process is gone. A second cancel is refused.
TEST(CliClusterTest, CancelStopsARunningJobWithinTwoHeartbeats) {
  constexpr double kHeartbeatSeconds = 2;
  // About 80 minutes of steps: only the cancel can end it within the test.
  LocalCluster c(R"({"steps": 100000, "step_ms": 50})", true, "", kHeartbeatSeconds);
  ASSERT_TRUE(c.ok()) << c.error();
  absl::StatusOr<std::string> submitted = c.SubmitSweepFile(
      "long.yaml", "name: long\nbase: {data: unused-by-the-fake-trainer}\ngpus: 0\nbudget: {train_seconds: 600}\n");
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string job = *submitted;
  ASSERT_TRUE(WaitForJobState(c, job, "JOB_STATE_RUNNING", std::chrono::seconds(30))) << c.WorkerLog();
  std::pair<pid_t, std::string> trainer;
  for (int i = 0; i < 100 && trainer.first == 0; ++i) {
    trainer = FakeTrainerPid(c.dir() + "/worker");
    if (trainer.first == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GT(trainer.first, 0) << "no fake_rank0.json under " << c.dir() << "/worker";
  ASSERT_EQ(kill(trainer.first, 0), 0) << "the trainer is not running";
  // Still running a moment later: nothing but the cancel stops it.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  RunResult r = c.Caddie({"job", job, "--json"});
  ASSERT_EQ(json::parse(r.out)["state"], "JOB_STATE_RUNNING");

  const auto t0 = std::chrono::steady_clock::now();
  r = c.Caddie({"cancel", job, "--reason", "wrong learning rate"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("job " + job + " is running; cancel requested"));
  ASSERT_TRUE(WaitForJobState(c, job, "JOB_STATE_CANCELLED", std::chrono::seconds(30)))
      << c.WorkerLog() << c.ControllerLog();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LE(took, 2 * kHeartbeatSeconds) << "cancelled after " << took << " s";
  r = c.Caddie({"job", job, "--json"});
  const json j = json::parse(r.out);
  EXPECT_EQ(j["exit_reason"], "EXIT_REASON_CANCELLED") << j.dump();
  EXPECT_EQ(j["message"], "wrong learning rate") << j.dump();
  // The trainer is gone (reaped, not a zombie) and nothing runs in its run dir.
  errno = 0;
  EXPECT_EQ(kill(trainer.first, 0), -1);
  EXPECT_EQ(errno, ESRCH) << "trainer pid " << trainer.first << " still exists";
  EXPECT_TRUE(ProcessesMentioning(trainer.second).empty())
      << ::testing::PrintToString(ProcessesMentioning(trainer.second));

  // It has ended now: cancelling it again is refused with its state, exit 7.
  r = c.Caddie({"cancel", job});
  EXPECT_EQ(r.code, 7) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("job " + job + " has already ended (cancelled); there is nothing to cancel"));
}

// The `line` fields of `caddie logs --json` output, each object checked for its fields.
std::vector<std::string> JsonLogLines(const std::string& out) {
  std::vector<std::string> lines;
  for (absl::string_view l : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    const json j = json::parse(l, nullptr, false);
    EXPECT_TRUE(j.is_object()) << l;
    if (!j.is_object()) continue;
    EXPECT_TRUE(j["ts"].is_number()) << l;
    EXPECT_EQ(j["rank"], 0) << l;
    EXPECT_EQ(j["stream"], "stdout") << l;
    lines.push_back(j.value("line", ""));
  }
  return lines;
}

// `caddie logs ID -f --json` started while the job runs follows it to its end and
// exits 0; every line the fake trainer printed on stdout (rank0.stdout.log in its
// run dir on the worker) arrives through the controller, in order; `logs --json`
// afterwards and `--tail N` agree.
TEST(CliClusterTest, LogsJsonFollowsTheTrainerOutputInOrder) {
  LocalCluster c(R"({"steps": 30, "step_ms": 100})");
  ASSERT_TRUE(c.ok()) << c.error();
  absl::StatusOr<std::string> submitted =
      c.SubmitSweepFile("one.yaml", "name: logs\nbase: {data: unused-by-the-fake-trainer}\ngpus: 0\n");
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string job = *submitted;
  ASSERT_TRUE(WaitForJobState(c, job, "JOB_STATE_RUNNING", std::chrono::seconds(30))) << c.WorkerLog();
  // Started while the job runs (about 3 s of steps left); returns when it ends.
  RunResult followed = c.Caddie({"logs", job, "-f", "--json"}, std::chrono::seconds(60));
  ASSERT_EQ(followed.code, 0) << followed.out << followed.err;
  RunResult r = c.Caddie({"job", job, "--json"});
  EXPECT_EQ(json::parse(r.out)["state"], "JOB_STATE_SUCCEEDED");  // -f returned because the job ended

  const std::vector<std::string> lines = JsonLogLines(followed.out);
  ASSERT_EQ(lines.size(), 33u) << followed.out;  // start, 30 steps, val, final
  EXPECT_EQ(json::parse(lines.front())["event"], "start");
  for (int s = 1; s <= 30; ++s) {
    const json step = json::parse(lines[s]);
    EXPECT_EQ(step["event"], "step") << lines[s];
    EXPECT_EQ(step["step"], s) << lines[s];
  }
  EXPECT_EQ(json::parse(lines[31])["event"], "val");
  EXPECT_EQ(json::parse(lines.back())["event"], "final");
  // Exactly what the trainer wrote, as the worker keeps it on disk.
  const std::string run_dir = FakeTrainerPid(c.dir() + "/worker").second;
  ASSERT_FALSE(run_dir.empty());
  const std::vector<std::string> on_disk =
      absl::StrSplit(ReadFileOrEmpty(run_dir + "/rank0.stdout.log"), '\n', absl::SkipEmpty());
  EXPECT_EQ(lines, on_disk);

  r = c.Caddie({"logs", job, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(JsonLogLines(r.out), lines);
  r = c.Caddie({"logs", job, "--json", "--tail", "3"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(JsonLogLines(r.out), std::vector<std::string>(lines.end() - 3, lines.end()));
  // Plain text: the same lines.
  r = c.Caddie({"logs", job});
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(r.out, '\n', absl::SkipEmpty())), lines);
}

// The lines of `caddie logs` plain output.
std::vector<std::string> Lines(const std::string& out) { return absl::StrSplit(out, '\n', absl::SkipEmpty()); }

// The stderr lines the fake trainer writes for `rank`, steps first..last.
std::vector<std::string> StepLines(int rank, int first, int last) {
  std::vector<std::string> v;
  for (int s = first; s <= last; ++s) v.push_back(absl::StrCat("fake-train rank ", rank, " step ", s));
  return v;
}

// Submits a sweep of one job named `name` on `gpus` GPUs (0: a CPU job) and
// returns the job's id ("" after adding the failure to the test).
std::string SubmitOneJob(LocalCluster& c, const std::string& name, int gpus) {
  absl::StatusOr<std::string> job = c.SubmitSweepFile(
      name + ".yaml", absl::StrCat("name: ", name, "\nbase: {data: unused-by-the-fake-trainer}\ngpus: ", gpus, "\n"));
  if (!job.ok()) ADD_FAILURE() << job.status();
  return job.ok() ? *job : "";
}

// A 2-rank job (a worker declaring 2 GPUs): `caddie logs --rank R --stream S`
// shows that rank's stream through the controller, exactly the file the worker
// keeps — followed live with -f, or afterwards — and still does once the worker
// is SIGKILLed and its disk is gone.
TEST(CliClusterTest, LogsShowAnyRanksStderrThroughTheControllerAlsoAfterTheWorkerIsGone) {
  LocalCluster c(R"({"steps": 40, "step_ms": 50})", true, "", 0, {}, {"--gpus", "2"});
  ASSERT_TRUE(c.ok()) << c.error();
  const std::string job = SubmitOneJob(c, "ranks", 2);
  ASSERT_FALSE(job.empty());
  ASSERT_TRUE(WaitForJobState(c, job, "JOB_STATE_RUNNING", std::chrono::seconds(30))) << c.WorkerLog();
  // Started while the job runs (about 2 s of steps left); returns when it ends.
  RunResult r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "-f"}, std::chrono::seconds(60));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(json::parse(c.Caddie({"job", job, "--json"}).out)["state"], "JOB_STATE_SUCCEEDED");
  const std::vector<std::string> rank1 = Lines(r.out);
  EXPECT_EQ(rank1, StepLines(1, 1, 40));
  // Exactly what rank 1 wrote, as the worker keeps it on disk.
  const std::string run_dir = FakeTrainerPid(c.dir() + "/worker").second;
  ASSERT_FALSE(run_dir.empty());
  EXPECT_EQ(r.out, ReadFileOrEmpty(run_dir + "/rank1.stderr.log"));

  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), rank1);
  r = c.Caddie({"logs", job, "--stream", "stderr"});  // rank 0
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), StepLines(0, 1, 40));
  // Rank 1 printed nothing on stdout: empty, not an error.
  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stdout"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  // --json and --tail; -f on an ended job prints it all and returns.
  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "--tail", "3", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> tail;
  for (const std::string& l : Lines(r.out)) {
    const json j = json::parse(l);
    EXPECT_EQ(j["rank"], 1) << l;
    EXPECT_EQ(j["stream"], "stderr") << l;
    EXPECT_TRUE(j["ts"].is_null()) << l;
    tail.push_back(j["line"].get<std::string>());
  }
  EXPECT_EQ(tail, StepLines(1, 38, 40));
  // -f --tail on the ended job: those lines, and it returns.
  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "-f", "--tail", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), StepLines(1, 39, 40));
  // The default is still rank 0's events.
  r = c.Caddie({"logs", job, "--tail", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["event"], "final") << r.out;
  // Bad input names what was wrong.
  r = c.Caddie({"logs", job, "--rank", "2", "--stream", "stderr"});
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("rank 2 is out of range: job " + job + " has 2 rank(s), 0..1"));
  r = c.Caddie({"logs", job, "--stream", "stdin"});
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("stdin"));

  c.KillWorker();
  std::filesystem::remove_all(c.dir() + "/worker");
  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), rank1);
}

// The worker SIGKILLed in the middle of a job: what its ranks had written up to
// about a batch before is at the controller, in order, with nothing repeated.
TEST(CliClusterTest, LogsOfARunningJobSurviveItsWorkerBeingKilled) {
  LocalCluster c(R"({"steps": 2000, "step_ms": 20})", true, "", 0, {}, {"--gpus", "2"});
  ASSERT_TRUE(c.ok()) << c.error();
  const std::string job = SubmitOneJob(c, "killed", 2);
  ASSERT_FALSE(job.empty());
  std::vector<std::string> seen;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (seen.size() < 20 && std::chrono::steady_clock::now() < until) {
    seen = Lines(c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr"}).out);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_GE(seen.size(), 20u) << c.WorkerLog();
  c.KillWorker();
  const std::string run_dir = FakeTrainerPid(c.dir() + "/worker").second;
  ASSERT_FALSE(run_dir.empty());
  const std::vector<std::string> on_disk = Lines(ReadFileOrEmpty(run_dir + "/rank1.stderr.log"));
  ASSERT_LT(on_disk.size(), 2000u);  // the rank died with its worker
  RunResult r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "--tail", "5000"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> after = Lines(r.out);
  // Steps 1..N in order, at least what was seen before the kill, at most what the rank wrote.
  ASSERT_GE(after.size(), seen.size());
  ASSERT_LE(after.size(), on_disk.size());
  EXPECT_EQ(after, StepLines(1, 1, static_cast<int>(after.size())));
  EXPECT_EQ(after, std::vector<std::string>(on_disk.begin(), on_disk.begin() + after.size()));
  const RunResult job_state = c.Caddie({"job", job, "--json"});
  EXPECT_EQ(json::parse(job_state.out)["state"], "JOB_STATE_RUNNING");  // the lease has not expired yet
}

// With --log-bytes-per-stream 200 the controller keeps the newest 200 bytes of
// each stream: `caddie logs` shows the last whole lines it holds and says, on
// stderr, how many earlier bytes it no longer has.
TEST(CliClusterTest, LogsSayHowManyOlderBytesTheControllerDropped) {
  LocalCluster c(R"({"steps": 40, "step_ms": 10})", true, "", 0, {"--log-bytes-per-stream", "200"});
  ASSERT_TRUE(c.ok()) << c.error();
  const std::string job = SubmitOneJob(c, "capped", 0);
  ASSERT_FALSE(job.empty());
  ASSERT_TRUE(WaitForJobState(c, job, "JOB_STATE_SUCCEEDED", std::chrono::seconds(60))) << c.WorkerLog();
  const std::string run_dir = FakeTrainerPid(c.dir() + "/worker").second;
  const std::string written = ReadFileOrEmpty(run_dir + "/rank0.stderr.log");
  ASSERT_GT(written.size(), 800u);  // 40 lines of about 25 bytes

  RunResult r = c.Caddie({"logs", job, "--stream", "stderr"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_GE(lines.size(), 5u) << r.out;
  EXPECT_LE(r.out.size(), 200u);
  const int first = 40 - static_cast<int>(lines.size()) + 1;
  EXPECT_EQ(lines, StepLines(0, first, 40));
  // Every byte before the lines shown is counted as dropped.
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat("(", written.size() - r.out.size(), " earlier bytes of rank 0 stderr are "
                                            "no longer held by the controller")));
  // A tail within what is held drops nothing and says nothing.
  r = c.Caddie({"logs", job, "--stream", "stderr", "--tail", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), StepLines(0, 39, 40));
  EXPECT_EQ(r.err, "");
}

// A 2-rank job whose rank 1 crashes in its first attempt (the fake trainer's
// crash_attempt) and is retried on the same worker (--retry-avoid 0): `caddie
// logs -f --rank 1 --stream stderr`, started before the job runs, prints the
// crashed attempt's file to its end, then the retry's, and returns when the job
// has ended. --attempt N reads one attempt; beyond the job's attempts it names it.
TEST(CliClusterTest, LogsFollowARanksStderrAcrossARetryAndReadTheCrashedAttempt) {
  LocalCluster c(R"({"steps": 20, "step_ms": 100, "crash_at_step": 10, "crash_rank": 1, "crash_attempt": 1})", true,
                 "", 0, {"--retry-avoid", "0"}, {"--gpus", "2"});
  ASSERT_TRUE(c.ok()) << c.error();
  const std::string job = SubmitOneJob(c, "retried", 2);
  ASSERT_FALSE(job.empty());
  // The first attempt runs for a second before the crash: -f starts well before it ends.
  RunResult r = c.Caddie({"logs", job, "-f", "--rank", "1", "--stream", "stderr"}, std::chrono::seconds(90));
  ASSERT_EQ(r.code, 0) << r.out << r.err << c.WorkerLog();
  const json ended = json::parse(c.Caddie({"job", job, "--json"}).out);
  EXPECT_EQ(ended["state"], "JOB_STATE_SUCCEEDED") << ended.dump();
  EXPECT_EQ(ended["attempt"], 2) << ended.dump();
  std::vector<std::string> crashed = StepLines(1, 1, 10);
  crashed.push_back("fake-train rank 1: crashing at step 10");
  std::vector<std::string> both = crashed;
  for (const std::string& l : StepLines(1, 1, 20)) both.push_back(l);
  EXPECT_EQ(Lines(r.out), both) << r.err;
  EXPECT_THAT(r.err, HasSubstr("(attempt 2 of the job: its output follows)"));

  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "--attempt", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), crashed);
  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "--attempt", "1", "-f"});  // ended: returns
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), crashed);
  for (const char* current : {"0", "2"}) {
    r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "--attempt", current});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(Lines(r.out), StepLines(1, 1, 20)) << current;
  }
  // Rank 0's events of the crashed attempt: its steps, no `final`.
  r = c.Caddie({"logs", job, "--attempt", "1", "--tail", "1000"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_FALSE(Lines(r.out).empty());
  for (const std::string& l : Lines(r.out)) EXPECT_NE(json::parse(l).value("event", ""), "final") << l;
  r = c.Caddie({"logs", job, "--rank", "1", "--stream", "stderr", "--attempt", "3"});
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("attempt 3 is out of range: job " + job + " has 2 attempt(s), 1..2"));
  r = c.Caddie({"logs", job, "--attempt", "1", "-f"});
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("--attempt with -f applies to a rank's log files"));
}

// --log-bytes-total 300 with 200 bytes kept per stream: once a later job's
// stderr puts the total over it, the logs of the job that ended first are
// dropped; `caddie logs` says so on stderr, and the job's events and result stay.
TEST(CliClusterTest, LogsSayWhenTheRetentionBoundDroppedAnEndedJobsLogs) {
  LocalCluster c(R"({"steps": 40, "step_ms": 10})", true, "", 0,
                 {"--log-bytes-per-stream", "200", "--log-bytes-total", "300"});
  ASSERT_TRUE(c.ok()) << c.error();
  const std::string first = SubmitOneJob(c, "first", 0);
  ASSERT_FALSE(first.empty());
  ASSERT_TRUE(WaitForJobState(c, first, "JOB_STATE_SUCCEEDED", std::chrono::seconds(60))) << c.WorkerLog();
  RunResult r = c.Caddie({"logs", first, "--stream", "stderr", "--tail", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), StepLines(0, 40, 40));  // held until the next job's bytes
  const std::string second = SubmitOneJob(c, "second", 0);
  ASSERT_FALSE(second.empty());
  ASSERT_TRUE(WaitForJobState(c, second, "JOB_STATE_SUCCEEDED", std::chrono::seconds(60))) << c.WorkerLog();

  r = c.Caddie({"logs", first, "--stream", "stderr"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("(rank 0 stderr of attempt 1, "));
  EXPECT_THAT(r.err, HasSubstr("was dropped by the controller's retention bound, --log-bytes-total"));
  r = c.Caddie({"logs", second, "--stream", "stderr", "--tail", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), StepLines(0, 39, 40));
  // The first job's events and result are all there.
  r = c.Caddie({"logs", first, "--tail", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["event"], "final") << r.out;
  const json job = json::parse(c.Caddie({"job", first, "--json"}).out);
  EXPECT_EQ(job["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_TRUE(job.contains("result")) << job.dump();
}

// `caddie workers drain` takes the worker out of service while its running job
// finishes; the next job waits, saying why, until `caddie workers undrain`.
TEST(CliClusterTest, WorkersDrainAndUndrainByHand) {
  LocalCluster c(R"({"steps": 60, "step_ms": 50})");
  ASSERT_TRUE(c.ok()) << c.error();
  const std::string f = c.dir() + "/small.yaml";
  WriteFile(f, kSmallSweep);
  RunResult r = c.Caddie({"sweep", "submit", f, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const json sub = json::parse(r.out);
  const std::string sweep = sub["sweep"]["id"], job0 = sub["jobs"][0]["id"], job1 = sub["jobs"][1]["id"];
  ASSERT_TRUE(WaitForJobState(c, job0, "JOB_STATE_RUNNING", std::chrono::seconds(30))) << c.WorkerLog();

  r = c.Caddie({"workers", "drain", "test-worker", "--reason", "swap the disk"}, std::chrono::seconds(30),
               {{"USER", "alice"}});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("drained worker test-worker: swap the disk\n"));
  EXPECT_THAT(r.out, HasSubstr("no new jobs go to it; its running job " + job0 + " goes on to its end"));
  EXPECT_THAT(r.out, HasSubstr("return it to service with: caddie workers undrain test-worker"));
  r = c.Caddie({"workers"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("drained: swap the disk (by alice@"));
  r = c.Caddie({"workers", "--json"});
  const json w = json::parse(r.out)["workers"][0];
  EXPECT_TRUE(w["drained"].get<bool>());
  EXPECT_EQ(w["drain_reason"], "swap the disk");
  EXPECT_THAT(w["drained_by"].get<std::string>(), HasSubstr("alice@"));

  // The running job ends well; the next one stays queued and says why.
  ASSERT_TRUE(WaitForJobState(c, job0, "JOB_STATE_SUCCEEDED", std::chrono::seconds(30))) << c.WorkerLog();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // five lease polls
  r = c.Caddie({"job", job1});
  EXPECT_THAT(r.out, HasSubstr("state:           queued"));
  EXPECT_THAT(r.out, HasSubstr("no live worker (1 registered, 1 drained, 0 lost)"));

  // A second drain is OK and keeps the first.
  r = c.Caddie({"workers", "drain", "test-worker", "--reason", "other"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("worker test-worker was already drained (by alice@"));
  EXPECT_THAT(r.out, HasSubstr("swap the disk; nothing changed"));

  r = c.Caddie({"workers", "undrain", "test-worker", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const json u = json::parse(r.out);
  EXPECT_TRUE(u["changed"].get<bool>());
  EXPECT_FALSE(u["worker"]["drained"].get<bool>());
  const json jobs = WaitForSweep(c, sweep, std::chrono::seconds(60));
  ASSERT_EQ(jobs.size(), 2u);
  for (const auto& j : jobs) EXPECT_EQ(j["state"], "JOB_STATE_SUCCEEDED") << j.dump();
  r = c.Caddie({"workers"});
  EXPECT_THAT(r.out, HasSubstr("ready"));
  r = c.Caddie({"workers", "undrain", "test-worker"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("worker test-worker was not drained; it is ready"));

  // Bad input: exit 4 for an unknown worker, 2 for a missing, empty or over-long reason.
  struct Row {
    std::vector<std::string> args;
    int code;
    std::string err;
  };
  for (const Row& row : std::vector<Row>{
           {{"drain", "no-such-worker", "--reason", "x"}, 4, "unknown worker 'no-such-worker'"},
           {{"undrain", "no-such-worker"}, 4, "unknown worker 'no-such-worker'"},
           {{"drain", "test-worker"}, 2, "--reason is required"},
           {{"drain", "test-worker", "--reason", ""}, 2, "draining worker 'test-worker' needs a reason"},
           {{"drain", "test-worker", "--reason", std::string(513, 'x')}, 2, "the limit is 512 bytes"}}) {
    std::vector<std::string> args = {"workers"};
    args.insert(args.end(), row.args.begin(), row.args.end());
    r = c.Caddie(args);
    EXPECT_EQ(r.code, row.code) << row.args[0] << " " << row.args[1] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(row.err));
  }
  r = c.Caddie({"workers", "--json"});
  EXPECT_FALSE(json::parse(r.out)["workers"][0]["drained"].get<bool>());
}

TEST(CliClusterTest, BearerTokenFromFlagEnvOrConfigFile) {
  LocalCluster c(R"({})", /*with_worker=*/false, /*user_token=*/"s3cret");
  ASSERT_TRUE(c.ok()) << c.error();
  RunResult r = c.Caddie({"sweeps"});
  EXPECT_EQ(r.code, 5) << r.err;
  EXPECT_THAT(r.err, HasSubstr("rejected the request"));
  EXPECT_THAT(r.err, HasSubstr("no token was sent"));
  r = c.Caddie({"sweeps", "--token", "wrong"}, std::chrono::seconds(30), {{"CADDIE_TOKEN", "s3cret"}});
  EXPECT_EQ(r.code, 5) << r.err;  // the flag wins over the environment
  EXPECT_THAT(r.err, HasSubstr("(token from --token)"));
  r = c.Caddie({"sweeps"}, std::chrono::seconds(30), {{"CADDIE_TOKEN", "s3cret"}});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("no sweeps yet"));
  WriteFile(c.dir() + "/cfg.yaml", "token: s3cret\n");
  r = c.Caddie({"--config", c.dir() + "/cfg.yaml", "workers"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("no workers registered"));
  // Drain and undrain are user calls: the same token rules.
  r = c.Caddie({"workers", "drain", "w-1", "--reason", "maintenance"});
  EXPECT_EQ(r.code, 5) << r.err;
  r = c.Caddie({"workers", "undrain", "w-1"});
  EXPECT_EQ(r.code, 5) << r.err;
  r = c.Caddie({"workers", "undrain", "w-1"}, std::chrono::seconds(30), {{"CADDIE_TOKEN", "s3cret"}});
  EXPECT_EQ(r.code, 4) << r.err;
}

}  // namespace
}  // namespace caddie::clitest
