// caddie-controller in-process: real gRPC on loopback, a real SQLite file.
// Issue 8's "must show" behaviours through the public API (issue 15's, with
// separate processes, are in tests/scheduler).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "controller/server.h"
#include "tests/controller/harness.h"

namespace caddie::controller {
namespace {

using caddie::testing::Client;
using nlohmann::json;

constexpr char kUser[] = "user-secret";
constexpr char kWorker[] = "worker-secret";

class ControllerGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = caddie::testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name()); }
  void TearDown() override {
    client_.reset();
    controller_.reset();
    std::filesystem::remove_all(dir_);
  }
  void StartController(double ttl = 30, double tick = 0.05) {
    ControllerOptions o;
    o.db_path = dir_ + "/caddie.db";
    o.listen = "127.0.0.1:0";
    o.http_listen = "127.0.0.1:0";
    o.tokens = {kUser, kWorker};
    o.scheduler.lease_ttl_seconds = ttl;
    o.scheduler.tick_seconds = tick;
    o.sqlite_synchronous_normal = true;
    auto c = Controller::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    controller_ = std::move(*c);
    client_ = std::make_unique<Client>(controller_->address(), kUser, kWorker);
  }
  // The lease tests' start: a controller with lease TTL `ttl`, a one-job sweep
  // leased to w-1, and w-2 registered with nothing to do.
  void LeaseOneJobToW1(double ttl, v1::LeaseJobResponse* l1) {
    ASSERT_NO_FATAL_FAILURE(StartController(ttl, /*tick=*/0.05));
    auto sub = client_->Submit({{"base", json::object()}});
    client_->Register("w-1", 1);
    client_->Register("w-2", 1);
    ASSERT_TRUE(client_->Lease("w-1", 1, l1).ok());
    ASSERT_EQ(l1->job().id(), sub.jobs(0).id());
  }
  // w-2 heartbeats and asks for work every 50 ms until it gets a job or
  // `within` has passed (then the answer has no job).
  v1::LeaseJobResponse LeaseToW2Within(std::chrono::milliseconds within) {
    v1::LeaseJobResponse l2;
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (l2.job().id().empty() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      v1::HeartbeatResponse hb;
      EXPECT_TRUE(client_->Heartbeat("w-2", {}, &hb).ok());
      EXPECT_TRUE(client_->Lease("w-2", 1, &l2).ok());
    }
    return l2;
  }
  v1::LeaderboardResponse Leaderboard(const std::string& sweep_id) {
    v1::LeaderboardRequest req;
    req.set_sweep_id(sweep_id);
    v1::LeaderboardResponse resp;
    auto st = client_->user()->Leaderboard(client_->UserCtx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  // Issue 8's synthetic sweep for early stopping: 8 jobs (seed 0..7) under
  // `early_stopping`, each leased to its own worker w<seed>, each reporting
  // val_bpb 2.0 − 0.1·seed at step 100, in seed order: seeds 0..3 are the worse
  // half. Each worker then heartbeats and reports a step, as a real one does, and
  // finishes as told: CANCELLED / EARLY_STOPPED when the controller said stop
  // (the reason must name the rule), else SUCCEEDED. Returns the seeds stopped.
  std::set<int> RunSyntheticEarlyStoppingSweep(const json& early_stopping, const std::string& rule) {
    auto sub = client_->Submit({{"axes", {{"seed", {0, 1, 2, 3, 4, 5, 6, 7}}}}, {"early_stopping", early_stopping}});
    EXPECT_EQ(sub.jobs_size(), 8);
    sweep_id_ = sub.sweep().id();
    std::map<int, v1::LeaseJobResponse> by_seed;
    for (int i = 0; i < sub.jobs_size(); ++i) {
      const std::string w = client_->Register(absl::StrCat("w", i), 1);
      v1::LeaseJobResponse l;
      EXPECT_TRUE(client_->Lease(w, 1, &l).ok());
      by_seed[json::parse(l.job().params_json())["seed"].get<int>()] = l;
    }
    EXPECT_EQ(by_seed.size(), 8u);
    for (const auto& [seed, l] : by_seed) {
      v1::ReportEventsResponse r;
      EXPECT_TRUE(client_->Report(l.job().worker_id(), l.job().id(), l.fencing_token(),
                                  {{{"event", "start"}}, {{"event", "val"}, {"step", 100}, {"val_bpb", 2.0 - 0.1 * seed}}},
                                  1, &r)
                      .ok());
    }
    std::set<int> stopped;
    for (const auto& [seed, l] : by_seed) {
      const std::string& w = l.job().worker_id();
      v1::HeartbeatResponse hb;
      EXPECT_TRUE(client_->Heartbeat(w, {{l.job().id(), l.fencing_token()}}, &hb).ok());
      EXPECT_EQ(hb.lost_job_ids_size(), 0);
      const bool told_by_heartbeat = hb.cancel_job_ids_size() == 1 && hb.cancel_job_ids(0) == l.job().id();
      v1::ReportEventsResponse r;
      EXPECT_TRUE(
          client_->Report(w, l.job().id(), l.fencing_token(), {{{"event", "step"}, {"step", 101}}}, 3, &r).ok());
      EXPECT_EQ(r.cancel(), told_by_heartbeat) << "seed " << seed;
      v1::CompleteJobResponse c;
      if (r.cancel()) {
        stopped.insert(seed);
        EXPECT_TRUE(absl::StartsWith(r.cancel_reason(), "early_stopped (" + rule + "): ")) << r.cancel_reason();
        EXPECT_TRUE(client_->Complete(w, l.job().id(), l.fencing_token(), v1::JOB_STATE_CANCELLED,
                                      v1::EXIT_REASON_EARLY_STOPPED, 0, &c)
                        .ok());
      } else {
        EXPECT_TRUE(client_->Complete(w, l.job().id(), l.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                      v1::EXIT_REASON_COMPLETED, 2.0 - 0.1 * seed, &c)
                        .ok());
      }
    }
    return stopped;
  }
  // After RunSyntheticEarlyStoppingSweep: what SQLite recorded for each job,
  // read back over gRPC, and the leaderboard of the survivors.
  void ExpectTheWorseHalfStoppedWithTheReason(const std::string& rule, const std::string& because) {
    auto jobs = client_->ListJobs(sweep_id_);
    ASSERT_EQ(jobs.size(), 8u);
    for (const auto& j : jobs) {
      const int seed = json::parse(j.params_json())["seed"];
      if (seed < 4) {
        EXPECT_EQ(j.state(), v1::JOB_STATE_CANCELLED) << "seed " << seed;
        EXPECT_EQ(j.exit_reason(), v1::EXIT_REASON_EARLY_STOPPED) << "seed " << seed;
        EXPECT_TRUE(absl::StartsWith(j.message(), "early_stopped (" + rule + "): ")) << j.message();
        EXPECT_NE(j.message().find(because), std::string::npos) << j.message();
      } else {
        EXPECT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << "seed " << seed << ": " << j.message();
      }
    }
    EXPECT_EQ(controller_->scheduler()->counters().early_stopped.load(), 4);
    auto lb = Leaderboard(sweep_id_);
    ASSERT_EQ(lb.entries_size(), 4);
    EXPECT_DOUBLE_EQ(lb.entries(0).val_bpb_post_quant(), 2.0 - 0.1 * 7);
    EXPECT_DOUBLE_EQ(lb.entries(3).val_bpb_post_quant(), 2.0 - 0.1 * 4);
  }
  std::string dir_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<Client> client_;
  std::string sweep_id_;
};

// Params of each job in index order.
std::vector<json> ParamsInOrder(std::vector<v1::Job> jobs) {
  std::sort(jobs.begin(), jobs.end(),
            [](const v1::Job& a, const v1::Job& b) { return a.index_in_sweep() < b.index_in_sweep(); });
  std::vector<json> out;
  for (const auto& j : jobs) out.push_back(json::parse(j.params_json()));
  return out;
}
std::vector<json> ParamsInOrder(const v1::SubmitSweepResponse& sub) {
  return ParamsInOrder(std::vector<v1::Job>(sub.jobs().begin(), sub.jobs().end()));
}

TEST_F(ControllerGrpcTest, SubmitLeaseEventsCompleteLeaderboard) {
  StartController();
  auto sub = client_->Submit({{"base", {{"iterations", 200}}}, {"axes", {{"model_dim", {256, 384}}}}});
  ASSERT_EQ(sub.jobs_size(), 2);
  const std::string w = client_->Register("w-1", 1);
  ASSERT_EQ(w, "w-1");

  // A watcher on job 0 from the start.
  grpc::ClientContext wctx;
  wctx.AddMetadata("authorization", std::string("Bearer ") + kUser);
  v1::WatchJobRequest wreq;
  wreq.set_job_id(sub.jobs(0).id());
  auto reader = client_->user()->WatchJob(&wctx, wreq);

  std::map<std::string, double> bpb = {{sub.jobs(0).id(), 1.31}, {sub.jobs(1).id(), 1.22}};
  for (int i = 0; i < 2; ++i) {
    v1::LeaseJobResponse l;
    ASSERT_TRUE(client_->Lease(w, 1, &l).ok());
    ASSERT_FALSE(l.job().id().empty());
    EXPECT_EQ(l.job().state(), v1::JOB_STATE_LEASED);
    v1::ReportEventsResponse r;
    ASSERT_TRUE(client_->Report(w, l.job().id(), l.fencing_token(),
                                {{{"event", "start"}, {"params", 1000}},
                                 {{"event", "step"}, {"step", 100}, {"train_loss", 3.2}},
                                 {{"event", "val"}, {"step", 200}, {"val_bpb", bpb[l.job().id()] + 0.02}},
                                 {{"event", "final"}, {"val_bpb_post_quant", bpb[l.job().id()]}}},
                                1, &r)
                    .ok());
    EXPECT_EQ(r.acked_seq(), 4);
    // The same batch again (a worker replaying its spool) is idempotent.
    ASSERT_TRUE(client_->Report(w, l.job().id(), l.fencing_token(), {{{"event", "start"}}}, 1, &r).ok());
    EXPECT_EQ(r.acked_seq(), 4);
    v1::CompleteJobResponse c;
    ASSERT_TRUE(client_->Complete(w, l.job().id(), l.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                  v1::EXIT_REASON_COMPLETED, bpb[l.job().id()], &c)
                    .ok());
    EXPECT_EQ(c.job().state(), v1::JOB_STATE_SUCCEEDED);
    // A repeated completion by the same lease answers OK and changes nothing.
    ASSERT_TRUE(client_->Complete(w, l.job().id(), l.fencing_token(), v1::JOB_STATE_FAILED,
                                  v1::EXIT_REASON_CRASHED, 0, &c)
                    .ok());
    EXPECT_EQ(c.job().state(), v1::JOB_STATE_SUCCEEDED);
  }

  // The watch stream delivered every event, then the final state, and ended.
  const caddie::testing::WatchSeen seen = caddie::testing::ReadWatch(reader.get());
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(seen.types, (std::vector<std::string>{"start", "step", "val", "final"}));
  EXPECT_EQ(seen.last, v1::JOB_STATE_SUCCEEDED);

  v1::LeaderboardRequest lr;
  lr.set_sweep_id(sub.sweep().id());
  v1::LeaderboardResponse lb;
  ASSERT_TRUE(client_->user()->Leaderboard(client_->UserCtx().get(), lr, &lb).ok());
  ASSERT_EQ(lb.entries_size(), 2);
  EXPECT_EQ(lb.entries(0).job_id(), sub.jobs(1).id());
  EXPECT_DOUBLE_EQ(lb.entries(0).val_bpb_post_quant(), 1.22);
  EXPECT_EQ(json::parse(lb.entries(0).spec_diff_json()), (json{{"iterations", 200}, {"model_dim", 384}}));

  v1::GetJobLogsRequest gl;
  gl.set_job_id(sub.jobs(0).id());
  gl.set_tail_lines(2);
  v1::GetJobLogsResponse logs;
  ASSERT_TRUE(client_->user()->GetJobLogs(client_->UserCtx().get(), gl, &logs).ok());
  EXPECT_NE(logs.text().find("\"event\":\"final\""), std::string::npos) << logs.text();
  EXPECT_EQ(logs.text().find("\"event\":\"start\""), std::string::npos) << logs.text();

  v1::GetSweepRequest gs;
  gs.set_sweep_id(sub.sweep().id());
  v1::Sweep sw;
  ASSERT_TRUE(client_->user()->GetSweep(client_->UserCtx().get(), gs, &sw).ok());
  EXPECT_EQ(sw.jobs_by_state().at("succeeded"), 2);
}

// Issue 8 "grid through gRPC + SQLite": loops × vocab_size × qat_bits = 3×3×2 is
// exactly 18 stored jobs, one per combination, in axis (key) order with the last
// axis fastest, each spec carrying its values over the base.
TEST_F(ControllerGrpcTest, GridSweep3x3x2StoresExactly18JobsOnePerCombination) {
  StartController();
  auto sub = client_->Submit({{"base", {{"iterations", 50}}},
                              {"axes", {{"loops", {1, 2, 3}}, {"vocab_size", {512, 1024, 4096}}, {"qat_bits", {4, 8}}}}});
  ASSERT_EQ(sub.jobs_size(), 18);
  auto jobs = client_->ListJobs(sub.sweep().id());
  ASSERT_EQ(jobs.size(), 18u);
  std::vector<json> want;
  for (int loops : {1, 2, 3}) {
    for (int bits : {4, 8}) {
      for (int vocab : {512, 1024, 4096}) want.push_back({{"loops", loops}, {"qat_bits", bits}, {"vocab_size", vocab}});
    }
  }
  EXPECT_EQ(ParamsInOrder(jobs), want);
  std::set<std::string> ids;
  for (const auto& j : jobs) {
    ids.insert(j.id());
    EXPECT_EQ(j.sweep_id(), sub.sweep().id());
    EXPECT_EQ(j.state(), v1::JOB_STATE_QUEUED);
    const json spec = json::parse(j.spec().spec_json());
    const json params = json::parse(j.params_json());
    EXPECT_EQ(spec["iterations"], 50) << j.id();
    for (const auto& [k, v] : params.items()) EXPECT_EQ(spec[k], v) << j.id() << " " << k;
  }
  EXPECT_EQ(ids.size(), 18u);
  v1::GetSweepRequest gs;
  gs.set_sweep_id(sub.sweep().id());
  v1::Sweep sw;
  ASSERT_TRUE(client_->user()->GetSweep(client_->UserCtx().get(), gs, &sw).ok());
  EXPECT_EQ(sw.jobs_total(), 18);
  EXPECT_EQ(sw.jobs_by_state().at("queued"), 18);
}

// Issue 8 "random through gRPC + SQLite": the same seed draws the same jobs —
// in a dry run, in a stored sweep, and in a second stored sweep — and another
// seed draws others; every draw lies in its axis' range.
TEST_F(ControllerGrpcTest, RandomSweepIsReproducibleFromItsSeed) {
  StartController();
  auto random = [](int seed) {
    return json{{"mode", "random"},
                {"samples", 6},
                {"seed", seed},
                {"axes",
                 {{"matrix_lr", {{"log_uniform", {0.01, 0.1}}}},
                  {"loops", {{"int_uniform", {1, 4}}}},
                  {"qat_bits", {2, 4, 8}}}}};
  };
  auto dry = client_->Submit(random(7), 1, 3, /*dry_run=*/true);
  EXPECT_TRUE(dry.sweep().id().empty());
  ASSERT_EQ(dry.jobs_size(), 6);
  const std::vector<json> drawn = ParamsInOrder(dry);
  EXPECT_EQ(ParamsInOrder(client_->Submit(random(7), 1, 3, true)), drawn);
  auto first = client_->Submit(random(7));
  auto second = client_->Submit(random(7));
  ASSERT_NE(first.sweep().id(), second.sweep().id());
  EXPECT_EQ(ParamsInOrder(client_->ListJobs(first.sweep().id())), drawn);
  EXPECT_EQ(ParamsInOrder(client_->ListJobs(second.sweep().id())), drawn);
  const std::vector<json> other = ParamsInOrder(client_->Submit(random(8), 1, 3, true));
  ASSERT_EQ(other.size(), 6u);
  EXPECT_NE(other, drawn);
  std::set<std::string> distinct;
  for (const auto& p : drawn) {
    distinct.insert(p.dump());
    EXPECT_GE(p["matrix_lr"].get<double>(), 0.01) << p;
    EXPECT_LE(p["matrix_lr"].get<double>(), 0.1) << p;
    EXPECT_TRUE(p["loops"].is_number_integer()) << p;
    EXPECT_GE(p["loops"].get<int>(), 1) << p;
    EXPECT_LE(p["loops"].get<int>(), 4) << p;
    EXPECT_TRUE(p["qat_bits"] == 2 || p["qat_bits"] == 4 || p["qat_bits"] == 8) << p;
  }
  EXPECT_EQ(distinct.size(), 6u);  // six draws, not one value six times
  // The dry runs stored nothing: only the two submitted sweeps exist.
  v1::ListSweepsRequest lr;
  v1::ListSweepsResponse ls;
  ASSERT_TRUE(client_->user()->ListSweeps(client_->UserCtx().get(), lr, &ls).ok());
  EXPECT_EQ(ls.sweeps_size(), 2);
}

// Issue 8 "ASHA through ReportEvents over gRPC": with every job at rung 100
// (min_trials 8), the worse half is stopped, the reason recorded on the job.
TEST_F(ControllerGrpcTest, AshaOverGrpcStopsTheWorseHalfOfASyntheticSweep) {
  StartController();
  const std::set<int> stopped = RunSyntheticEarlyStoppingSweep(
      {{"type", "asha"}, {"grace_steps", 100}, {"reduction_factor", 2}, {"min_trials", 8}}, "asha");
  EXPECT_EQ(stopped, (std::set<int>{0, 1, 2, 3}));
  ExpectTheWorseHalfStoppedWithTheReason("asha", "at rung step 100 is not in the best 4 of 8");
}

// The median rule over gRPC: each job is judged as the others report, so the
// worse half goes as soon as enough better ones are in; the best half stays.
TEST_F(ControllerGrpcTest, MedianRuleOverGrpcStopsTheWorseHalfOfASyntheticSweep) {
  StartController();
  const std::set<int> stopped = RunSyntheticEarlyStoppingSweep({{"type", "median"}, {"grace_steps", 100}}, "median");
  EXPECT_EQ(stopped, (std::set<int>{0, 1, 2, 3}));
  ExpectTheWorseHalfStoppedWithTheReason("median", "by step 100 is worse than the median");
}

// Issue 8 "the leaderboard ranks only jobs within budget": a better score over
// the size budget — OVER_BUDGET, or a SUCCEEDED result that is not within budget
// or whose artifact exceeds the job's limit — never shows; the one within does.
TEST_F(ControllerGrpcTest, LeaderboardRanksOnlyJobsWithinBudget) {
  StartController();
  auto sub = client_->Submit({{"axes", {{"seed", {0, 1, 2, 3}}}}});
  ASSERT_EQ(sub.jobs_size(), 4);
  const std::string w = client_->Register("w-1", 1);
  std::vector<v1::LeaseJobResponse> leases(4);
  for (auto& l : leases) {
    ASSERT_TRUE(client_->Lease(w, 1, &l).ok());
    ASSERT_FALSE(l.job().id().empty());
  }
  v1::CompleteJobResponse c;
  // Within budget, the worst score of the four.
  ASSERT_TRUE(client_->Complete(w, leases[0].job().id(), leases[0].fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.30, &c)
                  .ok());
  // Over budget as the worker measured it: 17 MB of 16 MB.
  v1::Result over = Client::RunResult(1.05);
  over.set_artifact_bytes(17'000'000);
  over.set_within_budget(false);
  ASSERT_TRUE(client_->CompleteWithResult(w, leases[1].job().id(), leases[1].fencing_token(),
                                          v1::JOB_STATE_OVER_BUDGET, v1::EXIT_REASON_OVER_BUDGET, over, &c)
                  .ok());
  EXPECT_EQ(c.job().state(), v1::JOB_STATE_OVER_BUDGET);
  // SUCCEEDED, but the result says it is not within budget.
  v1::Result not_within = Client::RunResult(1.10);
  not_within.set_within_budget(false);
  ASSERT_TRUE(client_->CompleteWithResult(w, leases[2].job().id(), leases[2].fencing_token(),
                                          v1::JOB_STATE_SUCCEEDED, v1::EXIT_REASON_COMPLETED, not_within, &c)
                  .ok());
  // SUCCEEDED and "within budget", but the artifact is over the job's 16 MB limit.
  v1::Result too_big = Client::RunResult(1.15);
  too_big.set_artifact_bytes(16'000'001);
  ASSERT_TRUE(client_->CompleteWithResult(w, leases[3].job().id(), leases[3].fencing_token(),
                                          v1::JOB_STATE_SUCCEEDED, v1::EXIT_REASON_COMPLETED, too_big, &c)
                  .ok());

  auto lb = Leaderboard(sub.sweep().id());
  ASSERT_EQ(lb.entries_size(), 1);
  EXPECT_EQ(lb.entries(0).job_id(), leases[0].job().id());
  EXPECT_DOUBLE_EQ(lb.entries(0).val_bpb_post_quant(), 1.30);
  EXPECT_EQ(Leaderboard("").entries_size(), 1);  // all sweeps
  // The leaderboard gauge has the same one job.
  std::vector<std::string> gauge;
  std::istringstream text(controller_->registry()->Render());
  for (std::string line; std::getline(text, line);) {
    if (absl::StartsWith(line, "caddie_leaderboard_val_bpb{")) gauge.push_back(line);
  }
  ASSERT_EQ(gauge.size(), 1u) << absl::StrJoin(gauge, "\n");
  EXPECT_NE(gauge[0].find(absl::StrCat("job_id=\"", leases[0].job().id(), "\"")), std::string::npos) << gauge[0];
}

// Issue 8 "heartbeats extend the lease": a 1 s lease kept alive by heartbeats
// for 3.5 TTLs stays at attempt 1 with its fencing token, and another worker
// asking all along gets nothing; once the heartbeats stop, it expires and the
// other worker gets the job (attempt 2, a new token).
TEST_F(ControllerGrpcTest, HeartbeatsKeepAShortLeaseAliveAndItsTokenUnchanged) {
  v1::LeaseJobResponse l1;
  ASSERT_NO_FATAL_FAILURE(LeaseOneJobToW1(/*ttl=*/1.0, &l1));
  const auto start = std::chrono::steady_clock::now();
  int beats = 0;
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(3500)) {
    v1::HeartbeatResponse hb;
    ASSERT_TRUE(client_->Heartbeat("w-1", {{l1.job().id(), l1.fencing_token()}}, &hb).ok());
    ASSERT_EQ(hb.lost_job_ids_size(), 0) << "after " << beats << " heartbeats";
    ++beats;
    ASSERT_TRUE(client_->Heartbeat("w-2", {}, &hb).ok());
    v1::LeaseJobResponse other;
    ASSERT_TRUE(client_->Lease("w-2", 1, &other).ok());
    ASSERT_TRUE(other.job().id().empty()) << "re-leased to w-2 after " << beats << " heartbeats";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto job = client_->GetJob(l1.job().id());
  EXPECT_EQ(job.state(), v1::JOB_STATE_LEASED);
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.fencing_token(), l1.fencing_token());
  EXPECT_EQ(job.worker_id(), "w-1");
  EXPECT_EQ(controller_->scheduler()->counters().leases_expired.load(), 0);

  // w-1 goes silent: within a few TTLs the lease expires and w-2 gets the job.
  const auto silent = std::chrono::steady_clock::now();
  const v1::LeaseJobResponse l2 = LeaseToW2Within(std::chrono::seconds(10));
  ASSERT_EQ(l2.job().id(), l1.job().id());
  EXPECT_EQ(l2.job().attempt(), 2);
  EXPECT_GT(l2.fencing_token(), l1.fencing_token());
  EXPECT_GE(std::chrono::steady_clock::now() - silent, std::chrono::milliseconds(900));
  EXPECT_EQ(controller_->scheduler()->counters().leases_expired.load(), 1);
  v1::HeartbeatResponse hb;
  ASSERT_TRUE(client_->Heartbeat("w-1", {{l1.job().id(), l1.fencing_token()}}, &hb).ok());
  EXPECT_EQ(hb.lost_job_ids_size(), 1);
}

TEST_F(ControllerGrpcTest, WrongTokenIsUnauthenticatedAndUserTokenOnWorkerMethodIsDenied) {
  StartController();
  v1::ListSweepsRequest req;
  v1::ListSweepsResponse resp;
  auto st = client_->user()->ListSweeps(Client::Ctx("nope").get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(st.error_message(), "invalid bearer token");
  st = client_->user()->ListSweeps(Client::Ctx("").get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::LeaseJobRequest lreq;
  lreq.set_worker_id("w");
  v1::LeaseJobResponse lresp;
  st = client_->worker()->LeaseJob(Client::Ctx(kUser).get(), lreq, &lresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  st = client_->user()->ListSweeps(Client::Ctx(kUser).get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  // Unknown worker: NOT_FOUND so it registers again.
  st = client_->worker()->LeaseJob(Client::Ctx(kWorker).get(), lreq, &lresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ControllerGrpcTest, SilentWorkerLosesItsLeaseAndTheJobIsLeasedAgainStaleCompletionRejected) {
  v1::LeaseJobResponse l1;
  ASSERT_NO_FATAL_FAILURE(LeaseOneJobToW1(/*ttl=*/0.5, &l1));
  // w-1 goes silent. Within a few TTLs the job is back in the queue.
  const v1::LeaseJobResponse l2 = LeaseToW2Within(std::chrono::seconds(5));
  ASSERT_EQ(l2.job().id(), l1.job().id());
  EXPECT_EQ(l2.job().attempt(), 2);
  EXPECT_EQ(l2.job().worker_id(), "w-2");
  // w-1 wakes up and completes with its stale token.
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kWorker);
  v1::CompleteJobResponse c;
  auto st = client_->Complete("w-1", l1.job().id(), l1.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                              v1::EXIT_REASON_COMPLETED, 1.0, &c, &ctx);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  auto md = ctx.GetServerTrailingMetadata();
  auto it = md.find("caddie-error-bin");
  ASSERT_NE(it, md.end());
  v1::ErrorDetail d;
  ASSERT_TRUE(d.ParseFromString(std::string(it->second.data(), it->second.size())));
  EXPECT_EQ(d.code(), "stale_fencing_token");
  // Its heartbeat tells it the lease is lost.
  v1::HeartbeatResponse hb;
  ASSERT_TRUE(client_->Heartbeat("w-1", {{l1.job().id(), l1.fencing_token()}}, &hb).ok());
  ASSERT_EQ(hb.lost_job_ids_size(), 1);
  auto job = client_->GetJob(l1.job().id());
  EXPECT_EQ(job.state(), v1::JOB_STATE_LEASED);
  EXPECT_EQ(job.worker_id(), "w-2");
  EXPECT_FALSE(job.has_result());
  EXPECT_EQ(controller_->scheduler()->counters().stale_reports_rejected.load(), 1);
}

TEST_F(ControllerGrpcTest, CancelQueuedAndRunningJobs) {
  StartController();
  auto sub = client_->Submit({{"axes", {{"seed", {1, 2}}}}});
  client_->Register("w-1", 1);
  v1::LeaseJobResponse l;
  ASSERT_TRUE(client_->Lease("w-1", 1, &l).ok());
  v1::CancelJobRequest cq;
  cq.set_job_id(sub.jobs(1).id());
  v1::Job job;
  ASSERT_TRUE(client_->user()->CancelJob(client_->UserCtx().get(), cq, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  cq.set_job_id(l.job().id());
  cq.set_reason("bad idea");
  ASSERT_TRUE(client_->user()->CancelJob(client_->UserCtx().get(), cq, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_LEASED);
  v1::HeartbeatResponse hb;
  ASSERT_TRUE(client_->Heartbeat("w-1", {{l.job().id(), l.fencing_token()}}, &hb).ok());
  ASSERT_EQ(hb.cancel_job_ids_size(), 1);
  EXPECT_EQ(hb.cancel_job_ids(0), l.job().id());
  v1::CompleteJobResponse c;
  ASSERT_TRUE(client_->Complete("w-1", l.job().id(), l.fencing_token(), v1::JOB_STATE_CANCELLED,
                                v1::EXIT_REASON_CANCELLED, 0, &c)
                  .ok());
  EXPECT_EQ(client_->GetJob(l.job().id()).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(client_->GetJob(l.job().id()).message(), "bad idea");
}

TEST_F(ControllerGrpcTest, MetricsAndHealthzAreServed) {
  StartController();
  client_->Submit({{"base", json::object()}});
  const std::string addr = controller_->http_address();
  httplib::Client http(addr.substr(0, addr.rfind(':')), std::stoi(addr.substr(addr.rfind(':') + 1)));
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res);
  const std::string* text = &res->body;
  EXPECT_NE(text->find("caddie_jobs{state=\"queued\"}"), std::string::npos);
  EXPECT_NE(text->find("caddie_sqlite_transaction_seconds_bucket"), std::string::npos);
  EXPECT_NE(text->find("caddie_grpc_server_calls_total{method=\"SubmitSweep\"} 1"), std::string::npos) << *text;
}

TEST_F(ControllerGrpcTest, TlsWhenCertAndKeyAreGiven) {
  const std::string key = dir_ + "/key.pem", cert = dir_ + "/cert.pem";
  auto gen = RunAndCapture({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "1", "-subj", "/CN=localhost", "-addext",
                            "subjectAltName=IP:127.0.0.1,DNS:localhost"},
                           std::chrono::seconds(30));
  ASSERT_TRUE(gen.ok()) << gen.status();
  auto read = [](const std::string& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  ControllerOptions o;
  o.db_path = dir_ + "/caddie.db";
  o.listen = "127.0.0.1:0";
  o.tokens = {kUser, kWorker};
  o.tls_cert_pem = read(cert);
  o.tls_key_pem = read(key);
  auto c = Controller::Start(o);
  ASSERT_TRUE(c.ok()) << c.status();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = read(cert);
  auto tls_channel = grpc::CreateChannel((*c)->address(), grpc::SslCredentials(ssl));
  auto stub = v1::UserService::NewStub(tls_channel);
  v1::ListSweepsRequest req;
  v1::ListSweepsResponse resp;
  auto st = stub->ListSweeps(Client::Ctx(kUser).get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  // A plaintext client cannot talk to it.
  auto plain = v1::UserService::NewStub(grpc::CreateChannel((*c)->address(), grpc::InsecureChannelCredentials()));
  auto ctx = Client::Ctx(kUser);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  st = plain->ListSweeps(ctx.get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace caddie::controller
