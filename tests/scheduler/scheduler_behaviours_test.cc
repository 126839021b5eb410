// Issue 15: scheduler behaviours where Ray Tune, Optuna, W&B, Katib and
// Determined are known to fail. One test per behaviour, named after the
// failure, each against real processes — caddie-controller on its own SQLite
// file, caddie-worker running caddie-fake-train, the caddie CLI, promtool —
// and each asserting the stated outcome, read back through the API, the CLI,
// /metrics and the SQLite file itself. docs/scheduler-behaviours.md maps each
// bullet of the issue to its test.
#include <signal.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/chaos/harness.h"
#include "tests/controller/harness.h"
#include "tests/worker/process.h"

namespace caddie::scheduler_test {
namespace {

namespace fs = std::filesystem;
using caddie::testing::Client;
using caddie::testing_support::Process;
using reliability::SeriesValue;
using reliability::WaitUntil;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr char kUser[] = "sched-user";
constexpr char kWorker[] = "sched-worker";

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_OVER_BUDGET ||
         s == v1::JOB_STATE_CANCELLED;
}

class SchedulerBehaviours : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("caddie_sched_", getpid()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    for (auto& [id, w] : workers_) w->Kill();
    if (HasFailure() && controller_) {
      std::fprintf(stderr, "--- controller log\n%s\n", controller_->Log().c_str());
      for (auto& [id, w] : workers_) std::fprintf(stderr, "--- worker %s log\n%s\n", id.c_str(), w->Log().c_str());
    }
    workers_.clear();
    if (controller_) controller_->Kill9();
    controller_.reset();
    std::error_code ec;
    if (!HasFailure()) fs::remove_all(dir_, ec);
  }

  // caddie-controller on dir_/controller/caddie.db with short intervals; `flags`
  // override the defaults (CLI11 takes each flag once).
  void StartController(std::map<std::string, std::string> flags = {}) {
    std::map<std::string, std::string> all = {{"--heartbeat-interval", "0.2"}, {"--lease-ttl", "5"}};
    for (auto& [k, v] : flags) all[k] = v;
    std::vector<std::string> argv;
    for (auto& [k, v] : all) argv.insert(argv.end(), {k, v});
    controller_ = std::make_unique<reliability::ControllerProcess>(CADDIE_CONTROLLER_BIN, dir_ / "controller");
    const absl::Status s =
        controller_->Start(argv, {{"CADDIE_USER_TOKEN", kUser}, {"CADDIE_WORKER_TOKEN", kWorker}});
    ASSERT_TRUE(s.ok()) << s;
    client_ = std::make_unique<Client>(controller_->address(), kUser, kWorker);
  }
  // SIGKILL, then the same binary on the same port and database.
  void KillAndRestartController() {
    controller_->Kill9();
    const absl::Status s = controller_->Restart();
    ASSERT_TRUE(s.ok()) << s;
    client_ = std::make_unique<Client>(controller_->address(), kUser, kWorker);
  }

  // A caddie-worker running caddie-fake-train with `plan` (CADDIE_FAKE_TRAIN).
  void StartWorker(const std::string& id, const json& plan, int cpu_slots, int gpus = 0,
                   std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {CADDIE_WORKER_BIN, "--controller", controller_->address(), "--work-dir",
                                     (dir_ / "work").string(), "--id", id, "--trainer", CADDIE_FAKE_TRAIN_BIN,
                                     "--cpu-slots", std::to_string(cpu_slots), "--nvidia-smi",
                                     "/nonexistent/nvidia-smi", "--heartbeat-interval", "0.2",
                                     "--lease-interval", "0.05", "--http-listen", ""};
    if (gpus > 0) argv.insert(argv.end(), {"--gpus", std::to_string(gpus)});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = std::make_unique<Process>();
    const absl::Status s = p->Start(argv, dir_ / ("worker-" + id + ".log"),
                                    {{"CADDIE_WORKER_TOKEN", kWorker}, {"CADDIE_FAKE_TRAIN", plan.dump()}});
    ASSERT_TRUE(s.ok()) << s;
    workers_[id] = std::move(p);
    ASSERT_TRUE(WaitUntil([&] { return Worker(id).has_value(); }, 20s)) << id << " did not register";
  }

  std::optional<v1::Worker> Worker(const std::string& id) {
    v1::ListWorkersResponse ws;
    if (!client_->user()->ListWorkers(client_->UserCtx().get(), v1::ListWorkersRequest(), &ws).ok()) return {};
    for (const auto& w : ws.workers()) {
      if (w.id() == id) return w;
    }
    return std::nullopt;
  }

  // A sweep of `n` jobs (axis seed = 0..n-1).
  v1::SubmitSweepResponse Submit(int n, int gpus, int max_attempts, const v1::Budget& budget = {},
                                 json base = {{"iterations", 3}}) {
    std::vector<int> seeds(n);
    for (int i = 0; i < n; ++i) seeds[i] = i;
    v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name("issue15");
    req.mutable_spec()->set_sweep_json(json({{"base", base}, {"axes", {{"seed", seeds}}}}).dump());
    req.mutable_spec()->set_gpus(gpus);
    req.mutable_spec()->set_max_attempts(max_attempts);
    *req.mutable_spec()->mutable_budget() = budget;
    v1::SubmitSweepResponse resp;
    const grpc::Status st = client_->user()->SubmitSweep(client_->UserCtx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.jobs_size(), n);
    return resp;
  }

  // Waits until `pred` holds for the job; returns the last state seen.
  v1::Job WaitJob(const std::string& id, const std::function<bool(const v1::Job&)>& pred,
                  std::chrono::milliseconds timeout = 30s) {
    v1::Job job;
    WaitUntil(
        [&] {
          v1::GetJobRequest req;
          req.set_job_id(id);
          if (!client_->user()->GetJob(client_->UserCtx().get(), req, &job).ok()) return false;
          return pred(job);
        },
        timeout);
    return job;
  }
  v1::Job WaitDone(const std::string& id, std::chrono::milliseconds timeout = 30s) {
    return WaitJob(id, [](const v1::Job& j) { return Terminal(j.state()); }, timeout);
  }
  static int Count(const std::vector<v1::Job>& jobs, v1::JobState s) {
    int n = 0;
    for (const auto& j : jobs) n += j.state() == s ? 1 : 0;
    return n;
  }

  std::string Metrics() { return reliability::ScrapeMetrics(controller_->http_address()); }
  // Waits until the series has `want` (the controller refreshes gauges every tick).
  bool WaitMetric(const std::string& series, double want, std::chrono::milliseconds timeout = 10s) {
    return WaitUntil([&] { return SeriesValue(Metrics(), series) == want; }, timeout);
  }

  // Runs the caddie CLI against this controller.
  reliability::RunResult Caddie(std::vector<std::string> args) {
    std::vector<std::string> argv = {CADDIE_CLI_BIN, "--addr", controller_->address(), "--token", kUser};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = reliability::RunToExit(argv, dir_ / "cli", {{"NO_COLOR", "1"}, {"HOME", dir_.string()}});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : reliability::RunResult{};
  }

  // One column of a query on the controller's SQLite file, as text.
  std::vector<std::string> Sql(const std::string& query) {
    sqlite3* db = nullptr;
    std::vector<std::string> out;
    if (sqlite3_open_v2(controller_->db().c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << controller_->db();
      sqlite3_close(db);
      return out;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, query.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << query << ": " << sqlite3_errmsg(db);
    } else {
      while (sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char* t = sqlite3_column_text(st, 0);
        out.push_back(t != nullptr ? reinterpret_cast<const char*>(t) : "");
      }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }
  std::string SqlOne(const std::string& query) {
    auto rows = Sql(query);
    return rows.empty() ? "" : rows[0];
  }

  // One job whose trainer goes silent after step 2, on a worker with
  // --silence-limit `worker_limit`; the job once it has ended, its rank gone.
  v1::Job RunSilentTrainer(const std::string& worker_limit) {
    StartWorker("w-1", {{"steps", 1000}, {"step_ms", 20}, {"silent_after_step", 2}}, 1, 0,
                {"--silence-limit", worker_limit});
    const v1::Job job = WaitDone(Submit(1, 0, 1).jobs(0).id());
    const json rank = json::parse(
        reliability::ReadAll(dir_ / "work/w-1/runs" / (job.id() + "-a1") / "fake_rank0.json"), nullptr, false);
    EXPECT_TRUE(rank.is_object() && testing_support::ProcessGone(rank["pid"].get<pid_t>(), 2s));
    return job;
  }

  // Run directories the workers made ("<job>-a<attempt>" → worker id).
  std::map<std::string, std::string> RunDirs() {
    std::map<std::string, std::string> out;
    std::error_code ec;
    for (const auto& w : fs::directory_iterator(dir_ / "work", ec)) {
      for (const auto& r : fs::directory_iterator(w.path() / "runs", ec)) {
        out[r.path().filename().string()] = w.path().filename().string();
      }
    }
    return out;
  }

  fs::path dir_;
  std::unique_ptr<reliability::ControllerProcess> controller_;
  std::unique_ptr<Client> client_;
  std::map<std::string, std::unique_ptr<Process>> workers_;
};

// W&B sweeps started more runs than the grid had. 200 workers lease at the same
// instant against a 50-job sweep: exactly 50 leases are granted, each job once.
TEST_F(SchedulerBehaviours, WandbSweepOvershoot_ExactlyFiftyJobsStartUnder200ConcurrentLeases) {
  ASSERT_NO_FATAL_FAILURE(StartController({{"--lease-ttl", "60"}}));
  const auto sub = Submit(50, /*gpus=*/1, /*max_attempts=*/3);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(client_->Register(absl::StrCat("w-", i), 1), absl::StrCat("w-", i));
  // Several channels, so the calls reach the server on separate connections.
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 8; ++i) clients.push_back(std::make_unique<Client>(controller_->address(), kUser, kWorker));
  auto lease_all = [&](std::multiset<std::string>* ids) {
    std::latch go(200);
    std::atomic<int> errors{0};
    std::mutex mu;
    std::vector<std::thread> threads;
    for (int i = 0; i < 200; ++i) {
      threads.emplace_back([&, i] {
        go.arrive_and_wait();
        v1::LeaseJobResponse l;
        if (!clients[i % clients.size()]->Lease(absl::StrCat("w-", i), 1, &l).ok()) {
          ++errors;
        } else if (!l.job().id().empty()) {
          std::lock_guard<std::mutex> g(mu);
          ids->insert(l.job().id());
        }
      });
    }
    for (auto& t : threads) t.join();
    return errors.load();
  };
  std::multiset<std::string> granted;
  EXPECT_EQ(lease_all(&granted), 0);
  EXPECT_EQ(granted.size(), 50u);
  EXPECT_EQ(std::set<std::string>(granted.begin(), granted.end()).size(), 50u);  // no job twice
  // A second wave finds nothing left to start.
  std::multiset<std::string> again;
  EXPECT_EQ(lease_all(&again), 0);
  EXPECT_TRUE(again.empty());
  // The database agrees: 50 leases, one per job, on 50 different workers.
  const std::string sweep = sub.sweep().id();
  EXPECT_EQ(SqlOne(absl::StrCat("SELECT COUNT(*) FROM jobs WHERE sweep_id = '", sweep,
                                "' AND state = ", v1::JOB_STATE_LEASED, " AND attempt = 1")),
            "50");
  EXPECT_EQ(SqlOne(absl::StrCat("SELECT COUNT(*) FROM jobs WHERE sweep_id = '", sweep, "'")), "50");
  EXPECT_EQ(SqlOne("SELECT COUNT(DISTINCT worker_id) FROM jobs WHERE worker_id != ''"), "50");
  EXPECT_TRUE(WaitMetric("caddie_jobs{state=\"leased\"}", 50));
}

// Ray Tune forgot queued trials across a restart. SIGKILL the controller with
// 30 jobs queued and 2 running: after the restart all 32 are there, the 2
// running ones keep their leases, and every job runs exactly once.
TEST_F(SchedulerBehaviours, RayTuneForgotQueuedTrials_WholeQueueSurvivesControllerSigkill) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  // w-1's runs are long (25 × 100 ms) so the 2 running jobs outlive the outage.
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-1", {{"steps", 25}, {"step_ms", 100}}, /*cpu_slots=*/2));
  const auto sub = Submit(32, /*gpus=*/0, /*max_attempts=*/3);
  const std::string sweep = sub.sweep().id();
  std::vector<v1::Job> jobs;
  ASSERT_TRUE(WaitUntil(
      [&] {
        jobs = client_->ListJobs(sweep);
        return Count(jobs, v1::JOB_STATE_RUNNING) == 2;
      },
      20s));
  ASSERT_EQ(Count(jobs, v1::JOB_STATE_QUEUED), 30);
  std::map<std::string, int64_t> running;  // job → fencing token
  for (const auto& j : jobs) {
    if (j.state() == v1::JOB_STATE_RUNNING) running[j.id()] = j.fencing_token();
  }

  ASSERT_NO_FATAL_FAILURE(KillAndRestartController());

  jobs = client_->ListJobs(sweep);
  ASSERT_EQ(jobs.size(), 32u);
  for (const auto& j : jobs) {
    if (running.count(j.id())) {
      // Still its first lease (or already completed by it): nothing was restarted.
      EXPECT_TRUE(j.state() == v1::JOB_STATE_RUNNING || j.state() == v1::JOB_STATE_SUCCEEDED) << j.id();
      EXPECT_EQ(j.fencing_token(), running[j.id()]) << j.id();
      EXPECT_EQ(j.attempt(), 1) << j.id();
    } else {
      EXPECT_EQ(j.state(), v1::JOB_STATE_QUEUED) << j.id();
      EXPECT_EQ(j.attempt(), 0) << j.id();
    }
  }
  // A second worker with short runs drains the queue.
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-2", {{"steps", 3}, {"step_ms", 50}}, /*cpu_slots=*/14));
  ASSERT_TRUE(WaitUntil(
      [&] {
        jobs = client_->ListJobs(sweep);
        return Count(jobs, v1::JOB_STATE_SUCCEEDED) == 32;
      },
      60s))
      << Count(jobs, v1::JOB_STATE_SUCCEEDED) << " of 32 succeeded";
  for (const auto& j : jobs) EXPECT_EQ(j.attempt(), 1) << j.id() << " ran more than once";
  // Run once, by the workers' own records and by the database.
  const auto runs = RunDirs();
  EXPECT_EQ(runs.size(), 32u);
  for (const auto& j : jobs) EXPECT_EQ(runs.count(j.id() + "-a1"), 1u) << j.id();
  EXPECT_EQ(SqlOne("SELECT COUNT(DISTINCT job_id) FROM events WHERE type = 'final'"), "32");
  EXPECT_EQ(SqlOne("SELECT COUNT(*) FROM events WHERE type = 'final'"), "32");
  EXPECT_EQ(SqlOne("SELECT MAX(attempt) FROM events"), "1");
  EXPECT_EQ(SqlOne("SELECT COUNT(*) FROM results WHERE attempt = 1"), "32");
}

// A queued job that cannot be placed says why — in `caddie job ID` and in
// /metrics — instead of a silent PENDING.
TEST_F(SchedulerBehaviours, SilentPending_UnplaceableJobSaysWhyInCaddieJobAndMetrics) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const json plan = {{"steps", 1000000}, {"step_ms", 200}};
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-1", plan, 0, /*gpus=*/8));
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-2", plan, 0, /*gpus=*/4));
  const std::string busy = Submit(1, 8, 1).jobs(0).id();
  ASSERT_EQ(WaitJob(busy, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; }).worker_id(), "w-1");
  const std::string waits = Submit(1, 8, 1).jobs(0).id();
  const std::string too_big = Submit(1, 16, 1).jobs(0).id();

  reliability::RunResult out;
  ASSERT_TRUE(WaitUntil(
      [&] {
        out = Caddie({"job", waits});
        return absl::StrContains(out.output, "needs 8 GPUs on one worker; largest free: 4 on w-2");
      },
      10s))
      << out.output;
  EXPECT_EQ(out.status.code, 0) << out.output;
  EXPECT_TRUE(absl::StrContains(out.output, "pending reason:  needs 8 GPUs on one worker; largest free: 4 on w-2"))
      << out.output;
  out = Caddie({"job", too_big});
  EXPECT_TRUE(absl::StrContains(out.output, "pending reason:  needs 16 GPUs on one worker; largest: 8 on w-1"))
      << out.output;
  EXPECT_TRUE(WaitMetric("caddie_pending_jobs{reason=\"insufficient_free_gpus\"}", 1));
  EXPECT_TRUE(WaitMetric("caddie_pending_jobs{reason=\"no_worker_large_enough\"}", 1));
  EXPECT_TRUE(WaitMetric("caddie_queue_depth", 2));

  // The reason is the real obstacle: once w-1's GPUs are free the job runs there.
  v1::CancelJobRequest cancel;
  cancel.set_job_id(busy);
  v1::Job cancelled;
  ASSERT_TRUE(client_->user()->CancelJob(client_->UserCtx().get(), cancel, &cancelled).ok());
  const v1::Job placed = WaitJob(waits, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; });
  EXPECT_EQ(placed.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(placed.worker_id(), "w-1");
  EXPECT_TRUE(WaitMetric("caddie_pending_jobs{reason=\"insufficient_free_gpus\"}", 0));
}

// Optuna let a late result from a dead trial overwrite the retried one. A
// report and a completion for a lease that expired (and whose job then ran to
// success elsewhere) are rejected with stale_fencing_token, counted in
// /metrics, and change nothing; the controller keeps serving.
TEST_F(SchedulerBehaviours, OptunaLateResult_StaleReportAndCompletionAreRejectedCountedAndOverwriteNothing) {
  ASSERT_NO_FATAL_FAILURE(StartController({{"--lease-ttl", "1"}}));
  const std::string id = Submit(1, 0, 3).jobs(0).id();
  // The slow worker: leases, reports, then goes silent past its lease.
  ASSERT_EQ(client_->Register("w-late", 0, 1), "w-late");
  v1::LeaseJobResponse stale;
  ASSERT_TRUE(client_->Lease("w-late", 0, &stale, 1).ok());
  ASSERT_EQ(stale.job().id(), id);
  v1::ReportEventsResponse rr;
  ASSERT_TRUE(client_->Report("w-late", id, stale.fencing_token(), {{{"event", "start"}}}, 1, &rr).ok());

  // What the dead lease sends late: a val event and a better-looking success
  // (0.5 against the real run's 2.01). Both must be refused with the code.
  auto expect_stale = [](const grpc::Status& st, grpc::ClientContext& ctx) {
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
    EXPECT_TRUE(absl::StrContains(st.error_message(), "stale fencing token")) << st.error_message();
    const auto md = ctx.GetServerTrailingMetadata();
    const auto it = md.find("caddie-error-bin");
    ASSERT_NE(it, md.end());
    v1::ErrorDetail d;
    ASSERT_TRUE(d.ParseFromString(std::string(it->second.data(), it->second.size())));
    EXPECT_EQ(d.code(), "stale_fencing_token");
  };
  auto send_late = [&] {
    v1::ReportEventsRequest req;
    req.set_worker_id("w-late");
    req.mutable_lease()->set_job_id(id);
    req.mutable_lease()->set_fencing_token(stale.fencing_token());
    auto* e = req.add_events();
    e->set_seq(2);
    e->set_type("val");
    e->set_json(json({{"event", "val"}, {"step", 3}, {"val_bpb", 0.5}}).dump());
    auto rctx = client_->WorkerCtx();
    v1::ReportEventsResponse rresp;
    expect_stale(client_->worker()->ReportEvents(rctx.get(), req, &rresp), *rctx);
    auto cctx = client_->WorkerCtx();
    v1::CompleteJobResponse cresp;
    expect_stale(client_->Complete("w-late", id, stale.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                   v1::EXIT_REASON_COMPLETED, 0.5, &cresp, cctx.get()),
                 *cctx);
  };

  // The lease expires and the job is requeued: late messages now are refused
  // and leave it queued, with no result.
  const v1::Job requeued = WaitJob(id, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_QUEUED; }, 10s);
  ASSERT_EQ(requeued.state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(absl::StrContains(requeued.message(), "lease on w-late expired")) << requeued.message();
  send_late();
  const v1::Job still = client_->GetJob(id);
  EXPECT_EQ(still.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(still.attempt(), 1);
  EXPECT_FALSE(still.has_result());

  // It runs to success elsewhere; late messages then change nothing either.
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-2", {{"steps", 3}, {"step_ms", 20}, {"val_bpb", 2.0}}, 1));
  const v1::Job done = WaitDone(id);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.message();
  ASSERT_EQ(done.attempt(), 2);
  ASSERT_EQ(done.worker_id(), "w-2");
  const double bpb = done.result().val_bpb_post_quant();
  EXPECT_DOUBLE_EQ(bpb, 2.01);
  send_late();
  EXPECT_TRUE(WaitMetric("caddie_stale_reports_rejected_total", 4));
  EXPECT_TRUE(controller_->running());
  const v1::Job after = client_->GetJob(id);
  EXPECT_EQ(after.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(after.attempt(), 2);
  EXPECT_EQ(after.worker_id(), "w-2");
  EXPECT_DOUBLE_EQ(after.result().val_bpb_post_quant(), bpb);
  v1::LeaderboardRequest lr;
  v1::LeaderboardResponse lb;
  ASSERT_TRUE(client_->user()->Leaderboard(client_->UserCtx().get(), lr, &lb).ok());
  ASSERT_EQ(lb.entries_size(), 1);
  EXPECT_DOUBLE_EQ(lb.entries(0).val_bpb_post_quant(), bpb);
  // On disk: attempt 1 kept only what its live lease reported; the result is attempt 2's.
  EXPECT_EQ(SqlOne(absl::StrCat("SELECT COUNT(*) FROM events WHERE job_id = '", id, "' AND attempt = 1")), "1");
  EXPECT_EQ(SqlOne(absl::StrCat("SELECT attempt FROM results WHERE job_id = '", id, "'")), "2");
  EXPECT_EQ(SqlOne(absl::StrCat("SELECT COUNT(*) FROM results WHERE val_bpb_post_quant < 1")), "0");
}

// Katib let a trial that reports no metrics run on. A trainer silent past the
// worker's silence limit is killed and the job failed with no_progress.
TEST_F(SchedulerBehaviours, KatibNoMetrics_SilentTrainerIsKilledAndFailedWithNoProgress) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const v1::Job job = RunSilentTrainer("1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_reason(), v1::EXIT_REASON_NO_PROGRESS) << job.message();
  EXPECT_TRUE(absl::StrContains(job.message(), "no event from the trainer for 1 s (silence limit): killed"))
      << job.message();
  // start + 2 steps, then silence.
  EXPECT_EQ(SqlOne(absl::StrCat("SELECT COUNT(*) FROM events WHERE job_id = '", job.id(), "'")), "3");
}

// The same failure caught by the controller's own backstop (--silence-limit on
// the controller; by default train + eval budget + 2 × grace + 60 s per job),
// for a worker whose own limit is far away.
TEST_F(SchedulerBehaviours, KatibNoMetrics_ControllerBackstopFailsASilentJobWithNoProgress) {
  ASSERT_NO_FATAL_FAILURE(StartController({{"--silence-limit", "1"}}));
  const v1::Job job = RunSilentTrainer("600");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_reason(), v1::EXIT_REASON_NO_PROGRESS) << job.message();
  EXPECT_TRUE(absl::StrContains(job.message(), "no_progress: no event from the trainer for")) << job.message();
}

// Determined kept scheduling onto a node whose jobs kept failing. Two jobs in a
// row failing for infrastructure reasons drain the worker: the reason shows in
// `caddie workers`, /metrics has it, and the alert rule fires on that value.
TEST_F(SchedulerBehaviours, DeterminedBadNode_WorkerFailingJobsInARowIsDrainedVisiblyAndAlerted) {
  ASSERT_NO_FATAL_FAILURE(StartController({{"--drain-after", "2"}}));
  ASSERT_NO_FATAL_FAILURE(
      StartWorker("w-bad", {{"steps", 5}, {"step_ms", 10}, {"crash_at_step", 1}, {"crash_exit_code", 3}}, 1));
  const auto sub = Submit(3, 0, 3);
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto w = Worker("w-bad");
        return w && w->drained();
      },
      30s));
  const reliability::RunResult out = Caddie({"workers"});
  EXPECT_EQ(out.status.code, 0) << out.output;
  EXPECT_TRUE(absl::StrContains(out.output, "drained: 2 jobs in a row failed for infrastructure reasons"))
      << out.output;
  EXPECT_TRUE(WaitMetric("caddie_worker_drained{worker=\"w-bad\"}", 1));
  EXPECT_TRUE(WaitMetric("caddie_workers{state=\"drained\"}", 1));

  // The alert rule of deploy/, evaluated by promtool on the scraped value.
  const double scraped = SeriesValue(Metrics(), "caddie_worker_drained{worker=\"w-bad\"}");
  const char* source = std::getenv("CADDIE_SOURCE_DIR");  // set by CTest (caddie_add_test)
  ASSERT_NE(source, nullptr);
  const fs::path rules = fs::path(source) / "deploy/prometheus/alerts.yml";
  const fs::path test = dir_ / "drained_alert_test.yml";
  std::ofstream(test) << "rule_files: [" << rules.string() << "]\n"
                      << "tests:\n  - interval: 1m\n    input_series:\n"
                      << "      - series: 'caddie_worker_drained{worker=\"w-bad\"}'\n"
                      << "        values: '" << scraped << " " << scraped << "'\n"
                      << "    alert_rule_test:\n      - eval_time: 1m\n        alertname: CaddieWorkerDrained\n"
                      << "        exp_alerts:\n          - exp_labels: {severity: warning, worker: w-bad}\n"
                      << "            exp_annotations:\n"
                      << "              summary: 'worker w-bad is drained: no new jobs go to it'\n"
                      << "              description: 'Its last jobs failed for infrastructure reasons (crash, no "
                         "progress, launch error). `caddie workers` shows the reason.'\n";
  auto promtool = reliability::RunToExit({"promtool", "test", "rules", test.string()}, dir_ / "cli");
  ASSERT_TRUE(promtool.ok()) << promtool.status();
  EXPECT_EQ(promtool->status.code, 0) << promtool->output;

  // Its two crashed jobs wait for another worker, the third was never offered to it.
  std::vector<v1::Job> jobs = client_->ListJobs(sub.sweep().id());
  ASSERT_EQ(Count(jobs, v1::JOB_STATE_QUEUED), 3);
  int requeued = 0;
  for (const auto& j : jobs) {
    if (j.attempt() == 0) continue;
    ++requeued;
    EXPECT_EQ(j.exit_reason(), v1::EXIT_REASON_CRASHED) << j.id();
    EXPECT_TRUE(absl::StrContains(j.message(), "failed on w-bad")) << j.message();
    EXPECT_TRUE(absl::StrContains(j.message(), "retrying on another worker")) << j.message();
  }
  EXPECT_EQ(requeued, 2);

  // Nothing more reaches it; a healthy worker runs everything, crashed jobs as a retry.
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-good", {{"steps", 3}, {"step_ms", 10}}, 2));
  ASSERT_TRUE(WaitUntil(
      [&] {
        jobs = client_->ListJobs(sub.sweep().id());
        return Count(jobs, v1::JOB_STATE_SUCCEEDED) == 3;
      },
      30s));
  int retried = 0;
  for (const auto& j : jobs) {
    EXPECT_EQ(j.worker_id(), "w-good");
    retried += j.attempt() == 2 ? 1 : 0;
  }
  EXPECT_EQ(retried, 2);
  int on_bad = 0;
  for (const auto& [run, worker] : RunDirs()) on_bad += worker == "w-bad" ? 1 : 0;
  EXPECT_EQ(on_bad, 2);
}

// Bullet 6, the way back. The operator fixes the drained node (here: restarts
// its worker) and returns it with `caddie workers undrain`: /metrics drops the
// drain with the call, re-registering keeps it in service, and its count of
// failures in a row restarted, so it takes --drain-after new failures (not one)
// to drain it again.
TEST_F(SchedulerBehaviours, DeterminedBadNode_UndrainReturnsTheWorkerAndItsFailureCountRestarts) {
  ASSERT_NO_FATAL_FAILURE(StartController({{"--drain-after", "2"}, {"--retry-avoid", "0"}}));
  const json crashing = {{"steps", 5}, {"step_ms", 10}, {"crash_at_step", 1}, {"crash_exit_code", 3}};
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-bad", crashing, 1));
  const auto sub = Submit(3, 0, 3);
  auto attempts = [&] {
    int n = 0;
    for (const auto& j : client_->ListJobs(sub.sweep().id())) n += j.attempt();
    return n;
  };
  auto drained = [&] {
    const auto w = Worker("w-bad");
    return w && w->drained();
  };
  ASSERT_TRUE(WaitUntil(drained, 30s));
  EXPECT_TRUE(WaitMetric("caddie_worker_drained{worker=\"w-bad\"}", 1));
  EXPECT_EQ(attempts(), 2);

  workers_["w-bad"]->Kill();
  const reliability::RunResult undrain = Caddie({"workers", "undrain", "w-bad"});
  EXPECT_EQ(undrain.status.code, 0) << undrain.output;
  EXPECT_TRUE(absl::StrContains(undrain.output, "worker w-bad is back in service")) << undrain.output;
  // No wait: the gauges changed with the call.
  const std::string m = Metrics();
  EXPECT_EQ(SeriesValue(m, "caddie_worker_drained{worker=\"w-bad\"}"), 0) << m;
  EXPECT_EQ(SeriesValue(m, "caddie_workers{state=\"drained\"}"), 0) << m;
  EXPECT_EQ(Sql("SELECT drained || ' ' || infra_failure_streak FROM workers WHERE id = 'w-bad'"),
            std::vector<std::string>{"0 0"});

  // The same node comes back, still failing: two new failures in a row drain it again.
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-bad", crashing, 1));
  ASSERT_TRUE(WaitUntil(drained, 30s));
  EXPECT_TRUE(WaitMetric("caddie_worker_drained{worker=\"w-bad\"}", 1));
  EXPECT_EQ(attempts(), 4);
  EXPECT_EQ(Worker("w-bad")->drained_by(), "controller");
}

// Retries that do not fight the budget (1/2): an infrastructure failure is
// retried on another worker, up to max_attempts, then the job fails.
TEST_F(SchedulerBehaviours, RetriesVsBudget_InfraFailureIsRetriedElsewhereUpToMaxAttempts) {
  ASSERT_NO_FATAL_FAILURE(StartController({{"--drain-after", "0"}}));  // keep both crashing workers in play
  const json crash = {{"steps", 5}, {"step_ms", 10}, {"crash_at_step", 1}, {"crash_exit_code", 3}};
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-a", crash, 1));
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-b", crash, 1));
  const std::string id = Submit(1, 0, 3).jobs(0).id();
  const v1::Job job = WaitDone(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_reason(), v1::EXIT_REASON_CRASHED);
  EXPECT_EQ(job.attempt(), 3);
  const auto runs = RunDirs();
  ASSERT_EQ(runs.size(), 3u);
  for (int a = 2; a <= 3; ++a) {
    const std::string prev = runs.at(absl::StrCat(id, "-a", a - 1)), cur = runs.at(absl::StrCat(id, "-a", a));
    EXPECT_NE(cur, prev) << "attempt " << a << " ran on " << cur << " again";
  }
  EXPECT_EQ(SqlOne(absl::StrCat("SELECT MAX(attempt) FROM events WHERE job_id = '", id, "'")), "3");
}

// Retries that do not fight the budget (2/2): a run killed at its time limit
// and a run whose artifact is over the size limit end at attempt 1 — never
// retried, and never counted against the worker (which --drain-after 1 would drain).
TEST_F(SchedulerBehaviours, RetriesVsBudget_TimeLimitAndOversizeArtifactAreNeverRetried) {
  ASSERT_NO_FATAL_FAILURE(StartController({{"--drain-after", "1"}}));
  ASSERT_NO_FATAL_FAILURE(StartWorker("w-big", {{"steps", 2}, {"step_ms", 10}, {"artifact_bytes", 50000}}, 1));
  v1::Budget size;
  size.set_artifact_limit_bytes(10000);
  const std::string big = Submit(1, 0, 3, size).jobs(0).id();
  const v1::Job over = WaitDone(big);
  EXPECT_EQ(over.state(), v1::JOB_STATE_OVER_BUDGET);
  EXPECT_EQ(over.exit_reason(), v1::EXIT_REASON_OVER_BUDGET);
  EXPECT_EQ(over.attempt(), 1);
  workers_["w-big"]->Kill();  // the next job must go to w-slow

  ASSERT_NO_FATAL_FAILURE(StartWorker(
      "w-slow", {{"steps", 1000000}, {"step_ms", 20}, {"ignore_sigterm", true}}, 1));
  v1::Budget time;
  time.set_train_seconds(1);
  time.set_grace_seconds(0.5);
  // The trainer's own clock is far away: only the worker's limit stops it.
  const std::string slow = Submit(1, 0, 3, time, {{"max_wallclock_seconds", 1000}}).jobs(0).id();
  const v1::Job killed = WaitDone(slow);
  EXPECT_EQ(killed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(killed.exit_reason(), v1::EXIT_REASON_TIME_LIMIT_KILLED) << killed.message();
  EXPECT_EQ(killed.attempt(), 1);

  for (const char* w : {"w-big", "w-slow"}) {
    const auto rec = Worker(w);
    ASSERT_TRUE(rec.has_value()) << w;
    EXPECT_FALSE(rec->drained()) << w << ": " << rec->drain_reason();
  }
  EXPECT_EQ(SqlOne("SELECT MAX(attempt) FROM jobs"), "1");
  EXPECT_EQ(SqlOne("SELECT COUNT(*) FROM events WHERE attempt > 1"), "0");
  EXPECT_EQ(RunDirs().size(), 2u);
}

}  // namespace
}  // namespace caddie::scheduler_test
