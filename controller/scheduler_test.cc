#include "controller/scheduler.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controller/sqlite_store.h"

namespace caddie::controller {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A worker's drain fields in one string: "drained|reason|by|ms".
std::string DrainRecord(const v1::Worker& w) {
  return absl::StrCat(w.drained() ? "drained" : "in service", "|", w.drain_reason(), "|", w.drained_by(), "|",
                      w.drained_unix_ms());
}

// Scheduler on a real SQLite file with a fake clock and no tick thread.
class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / absl::StrCat("caddie_sched_test_", getpid(), "_",
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto s = SqliteStore::Open((dir_ / "caddie.db").string(), {});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    SchedulerOptions o;
    o.tick_seconds = 0;
    o.lease_ttl_seconds = 10;
    o.drain_after = 2;
    o.silence_limit_seconds = 5;
    o.now_ms = [this] { return now_.load(); };
    sched_ = std::make_unique<Scheduler>(store_.get(), &registry_, o);
  }
  void TearDown() override {
    sched_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  v1::SubmitSweepResponse Submit(const json& sweep_json, int gpus = 1, int max_attempts = 3) {
    v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name("t");
    req.mutable_spec()->set_sweep_json(sweep_json.dump());
    req.mutable_spec()->set_gpus(gpus);
    req.mutable_spec()->set_max_attempts(max_attempts);
    auto r = sched_->SubmitSweep(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::SubmitSweepResponse();
  }
  void Register(const std::string& id, int gpus, int cpu_slots = 0) {
    v1::RegisterWorkerRequest req;
    req.mutable_worker()->set_id(id);
    req.mutable_worker()->set_cpu_slots(cpu_slots);
    for (int i = 0; i < gpus; ++i) req.mutable_worker()->add_gpus()->set_index(i);
    ASSERT_TRUE(sched_->RegisterWorker(req).ok());
  }
  v1::LeaseJobResponse Lease(const std::string& w, int gpus_free, int cpu_free = 0) {
    v1::LeaseJobRequest req;
    req.set_worker_id(w);
    req.set_gpus_free(gpus_free);
    req.set_cpu_slots_free(cpu_free);
    auto r = sched_->LeaseJob(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::LeaseJobResponse();
  }
  absl::StatusOr<v1::ReportEventsResponse> Report(const std::string& w, const v1::Job& job, int64_t token,
                                                  const std::vector<json>& lines, int64_t first_seq = 1) {
    v1::ReportEventsRequest req;
    req.set_worker_id(w);
    req.mutable_lease()->set_job_id(job.id());
    req.mutable_lease()->set_fencing_token(token);
    int64_t seq = first_seq;
    for (const auto& l : lines) {
      auto* e = req.add_events();
      e->set_seq(seq++);
      e->set_type(l["event"].get<std::string>());
      e->set_step(l.value("step", 0));
      e->set_json(l.dump());
    }
    return sched_->ReportEvents(req);
  }
  absl::StatusOr<v1::CompleteJobResponse> Complete(const std::string& w, const std::string& job_id, int64_t token,
                                                   v1::JobState state, v1::ExitReason reason, double bpb = 0,
                                                   bool infra = false) {
    v1::CompleteJobRequest req;
    req.set_worker_id(w);
    req.mutable_lease()->set_job_id(job_id);
    req.mutable_lease()->set_fencing_token(token);
    req.set_state(state);
    req.set_exit_reason(reason);
    req.set_infra_failure(infra);
    if (bpb > 0) {
      req.mutable_result()->set_val_bpb(bpb + 0.01);
      req.mutable_result()->set_val_bpb_post_quant(bpb);
      req.mutable_result()->set_artifact_bytes(1000000);
      req.mutable_result()->set_within_budget(true);
      req.mutable_result()->set_steps(100);
    }
    return sched_->CompleteJob(req);
  }

  fs::path dir_;
  std::atomic<int64_t> now_{1'000'000};
  metrics::Registry registry_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<Scheduler> sched_;
};

TEST_F(SchedulerTest, SubmitLeaseEventsCompleteLeaderboardWithSpecDiff) {
  auto sub = Submit({{"base", {{"iterations", 50}}}, {"axes", {{"num_layers", {4, 6}}}}});
  ASSERT_EQ(sub.jobs_size(), 2);
  Register("w1", 2);
  auto l1 = Lease("w1", 2);
  auto l2 = Lease("w1", 1);
  ASSERT_EQ(l1.job().id(), sub.jobs(0).id());
  ASSERT_EQ(l2.job().id(), sub.jobs(1).id());
  auto r = Report("w1", l1.job(), l1.fencing_token(),
                  {{{"event", "start"}}, {{"event", "val"}, {"step", 50}, {"val_bpb", 1.5}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->acked_seq(), 2);
  EXPECT_EQ(sched_->GetJob(l1.job().id())->state(), v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(Complete("w1", l1.job().id(), l1.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                       v1::EXIT_REASON_COMPLETED, 1.40).ok());
  ASSERT_TRUE(Complete("w1", l2.job().id(), l2.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                       v1::EXIT_REASON_COMPLETED, 1.30).ok());
  v1::LeaderboardRequest lr;
  auto lb = sched_->Leaderboard(lr);
  ASSERT_TRUE(lb.ok());
  ASSERT_EQ(lb->entries_size(), 2);
  EXPECT_EQ(lb->entries(0).job_id(), l2.job().id());
  EXPECT_EQ(lb->entries(0).rank(), 1);
  EXPECT_DOUBLE_EQ(lb->entries(0).val_bpb_post_quant(), 1.30);
  EXPECT_EQ(json::parse(lb->entries(0).spec_diff_json()), (json{{"iterations", 50}, {"num_layers", 6}}));
  lr.set_sweep_id(sub.sweep().id());
  EXPECT_EQ(sched_->Leaderboard(lr)->entries_size(), 2);
  v1::GetJobLogsRequest gl;
  gl.set_job_id(l1.job().id());
  gl.set_tail_lines(1);
  auto logs = sched_->JobLogs(gl);
  ASSERT_TRUE(logs.ok());
  EXPECT_NE(logs->text().find("\"val_bpb\":1.5"), std::string::npos) << logs->text();
  const std::string text = registry_.Render();
  EXPECT_NE(text.find("caddie_jobs_finished_total{state=\"succeeded\"} 2"), std::string::npos);
  EXPECT_NE(text.find(absl::StrCat("caddie_leaderboard_val_bpb{sweep_id=\"", sub.sweep().id(), "\",job_id=\"",
                                   l2.job().id(), "\"} 1.3")),
            std::string::npos);
}

TEST_F(SchedulerTest, JobLogsServesARanksStreamAndRefusesAStreamOrRankThatIsNot) {
  Submit(json{{"base", {{"iterations", 10}}}}, /*gpus=*/2);
  Register("w1", 2);
  auto l = Lease("w1", 2);
  ASSERT_FALSE(l.job().id().empty());
  const std::string id = l.job().id();
  // Events and rank 1's stderr in one batch, as the worker sends them.
  v1::ReportEventsRequest req;
  req.set_worker_id("w1");
  req.mutable_lease()->set_job_id(id);
  req.mutable_lease()->set_fencing_token(l.fencing_token());
  auto* e = req.add_events();
  e->set_seq(1);
  e->set_type("start");
  e->set_json(R"({"event":"start"})");
  auto* c = req.add_logs();
  c->set_attempt(l.job().attempt());
  c->set_rank(1);
  c->set_stream("stderr");
  c->set_data("rank 1: a\nrank 1: b\n");
  ASSERT_TRUE(sched_->ReportEvents(req).ok());
  // A chunk the controller refuses: the batch is refused, its events were kept.
  req.mutable_events(0)->set_seq(2);
  req.mutable_logs(0)->set_rank(5);
  EXPECT_EQ(sched_->ReportEvents(req).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched_->ListEvents(id, 0, 0)->size(), 2u);

  v1::GetJobLogsRequest gl;
  gl.set_job_id(id);
  auto r = sched_->JobLogs(gl);  // the default: the events
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text(), "{\"event\":\"start\"}\n{\"event\":\"start\"}\n");
  gl.set_rank(1);
  gl.set_stream("stderr");
  r = sched_->JobLogs(gl);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text(), "rank 1: a\nrank 1: b\n");
  EXPECT_EQ(r->next_offset(), 20);
  EXPECT_EQ(r->dropped_bytes(), 0);
  EXPECT_EQ(r->attempt(), 1);
  gl.set_from_offset(10);
  EXPECT_EQ(sched_->JobLogs(gl)->text(), "rank 1: b\n");
  gl.clear_from_offset();
  gl.set_stream("stdout");  // no output yet: empty, not an error
  r = sched_->JobLogs(gl);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text(), "");

  gl.set_stream("stdin");
  r = sched_->JobLogs(gl);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "stream \"stdin\" is not one of")) << r.status();
  gl.set_stream("stderr");
  gl.set_rank(2);
  r = sched_->JobLogs(gl);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "rank 2 is out of range")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "2 rank(s), 0..1")) << r.status();
  gl.set_rank(-1);
  EXPECT_EQ(sched_->JobLogs(gl).status().code(), absl::StatusCode::kInvalidArgument);
  gl.set_rank(0);
  gl.set_stream("");
  gl.set_from_offset(0);  // the events have no byte offsets
  EXPECT_EQ(sched_->JobLogs(gl).status().code(), absl::StatusCode::kInvalidArgument);
  gl.set_job_id("s9-j9");
  EXPECT_EQ(sched_->JobLogs(gl).status().code(), absl::StatusCode::kNotFound);
}

// One chunk of rank 0's stderr for the lease, with one event.
absl::Status ReportStderr(Scheduler& sched, const v1::LeaseJobResponse& l, int64_t seq, int64_t offset,
                          const std::string& data) {
  v1::ReportEventsRequest req;
  req.set_worker_id("w1");
  req.mutable_lease()->set_job_id(l.job().id());
  req.mutable_lease()->set_fencing_token(l.fencing_token());
  auto* e = req.add_events();
  e->set_seq(seq);
  e->set_type("start");
  e->set_json(absl::StrCat(R"({"event":"start","attempt":)", l.job().attempt(), "}"));
  auto* c = req.add_logs();
  c->set_rank(0);
  c->set_stream("stderr");
  c->set_offset(offset);
  c->set_data(data);
  return sched.ReportEvents(req).status();
}

// GetJobLogs' attempt: 0 is the current attempt, N an earlier one (a crashed
// run's stderr after its retry), beyond the job's attempts INVALID_ARGUMENT
// naming it. Over the bound on all log bytes an ended job's streams say they
// were dropped, while its events stay; caddie_log_bytes_stored follows.
TEST_F(SchedulerTest, JobLogsReadsAnEarlierAttemptAndSaysWhenTheBoundDroppedIt) {
  sched_.reset();
  store_.reset();
  SqliteStore::Options so;
  so.log_bytes_per_stream = 1000;
  so.log_bytes_total = 40;
  auto s = SqliteStore::Open((dir_ / "bounded.db").string(), so);
  ASSERT_TRUE(s.ok()) << s.status();
  store_ = std::move(*s);
  SchedulerOptions o;
  o.tick_seconds = 0;
  o.now_ms = [this] { return now_.load(); };
  sched_ = std::make_unique<Scheduler>(store_.get(), &registry_, o);

  auto sub = Submit({{"base", {{"iterations", 10}}}, {"axes", {{"num_layers", {4, 6}}}}}, /*gpus=*/0);
  ASSERT_EQ(sub.jobs_size(), 2);
  const std::string id = sub.jobs(0).id();
  Register("w1", 0, /*cpu_slots=*/1);
  v1::GetJobLogsRequest gl;
  gl.set_job_id(id);
  gl.set_stream("stderr");
  gl.set_attempt(1);
  auto r = sched_->JobLogs(gl);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "attempt 1 is out of range")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "has not started an attempt yet")) << r.status();

  auto l1 = Lease("w1", 0, 1);
  ASSERT_EQ(l1.job().id(), id);
  ASSERT_TRUE(ReportStderr(*sched_, l1, 1, 0, "attempt 1: Segmentation fault\n").ok());  // 30 bytes
  auto done = Complete("w1", id, l1.fencing_token(), v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED, 0, true);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(absl::StrContains(registry_.Render(), "caddie_log_bytes_stored 30\n")) << registry_.Render();
  now_ += 61'000;  // past the retry's avoidance of w1
  auto l2 = Lease("w1", 0, 1);
  ASSERT_EQ(l2.job().id(), id);
  ASSERT_EQ(l2.job().attempt(), 2);
  ASSERT_TRUE(ReportStderr(*sched_, l2, 1, 0, "attempt 2 runs\n").ok());  // 15 bytes: 45 held, over 40,
  // but nothing has ended: all is kept.
  EXPECT_EQ(store_->LogBytesHeld(), 45);

  gl.set_attempt(0);
  r = sched_->JobLogs(gl);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text(), "attempt 2 runs\n");
  EXPECT_EQ(r->attempt(), 2);
  gl.set_attempt(1);
  r = sched_->JobLogs(gl);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text(), "attempt 1: Segmentation fault\n");
  EXPECT_EQ(r->attempt(), 1);
  EXPECT_FALSE(r->dropped_by_retention());
  gl.set_from_offset(11);  // following attempt 1 from an offset
  EXPECT_EQ(sched_->JobLogs(gl)->text(), "Segmentation fault\n");
  gl.clear_from_offset();
  for (int bad : {3, -1}) {
    gl.set_attempt(bad);
    r = sched_->JobLogs(gl);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(r.status().message(), absl::StrCat("attempt ", bad, " is out of range: job ", id,
                                                                     " has 2 attempt(s), 1..2")))
        << r.status();
  }
  // Rank 0's stdout (the events) by attempt too.
  v1::GetJobLogsRequest events;
  events.set_job_id(id);
  events.set_attempt(1);
  EXPECT_EQ(sched_->JobLogs(events)->text(), "{\"event\":\"start\",\"attempt\":1}\n");
  events.set_attempt(0);
  EXPECT_EQ(sched_->JobLogs(events)->text(), "{\"event\":\"start\",\"attempt\":2}\n");

  // The first job ends; the second's bytes put the total over 40: the first
  // job's streams go, oldest attempt first, only as far as the bound needs;
  // its events and result stay.
  ASSERT_TRUE(Complete("w1", id, l2.fencing_token(), v1::JOB_STATE_SUCCEEDED, v1::EXIT_REASON_COMPLETED, 1.25).ok());
  auto l3 = Lease("w1", 0, 1);
  ASSERT_EQ(l3.job().id(), sub.jobs(1).id());
  ASSERT_TRUE(ReportStderr(*sched_, l3, 1, 0, "second job\n").ok());  // 11 bytes: 56, attempt 1 goes
  EXPECT_EQ(store_->LogBytesHeld(), 26);
  EXPECT_TRUE(absl::StrContains(registry_.Render(), "caddie_log_bytes_stored 26\n")) << registry_.Render();
  gl.set_attempt(1);
  r = sched_->JobLogs(gl);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->dropped_by_retention());
  EXPECT_EQ(r->text(), "");
  EXPECT_EQ(r->dropped_bytes(), 30);
  EXPECT_EQ(r->next_offset(), 30);
  gl.set_attempt(2);
  EXPECT_EQ(sched_->JobLogs(gl)->text(), "attempt 2 runs\n");
  ASSERT_TRUE(ReportStderr(*sched_, l3, 2, 11, std::string(19, 'y') + "\n").ok());  // 46: attempt 2 goes
  EXPECT_EQ(store_->LogBytesHeld(), 31);
  r = sched_->JobLogs(gl);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->dropped_by_retention());
  EXPECT_EQ(r->text(), "");
  EXPECT_EQ(r->dropped_bytes(), 15);
  EXPECT_EQ(sched_->JobLogs(events)->text(), "{\"event\":\"start\",\"attempt\":2}\n");
  EXPECT_DOUBLE_EQ(sched_->GetJob(id)->result().val_bpb_post_quant(), 1.25);
  gl.set_job_id(l3.job().id());
  gl.set_attempt(0);
  r = sched_->JobLogs(gl);
  EXPECT_EQ(r->text(), "second job\n" + std::string(19, 'y') + "\n");
  EXPECT_FALSE(r->dropped_by_retention());
  ASSERT_TRUE(sched_->Tick().ok());
  EXPECT_TRUE(absl::StrContains(registry_.Render(), "caddie_log_bytes_stored 31\n"));
}

TEST_F(SchedulerTest, InvalidTrainerKeyIsRejectedNamingJobAndKey) {
  v1::SubmitSweepRequest req;
  req.mutable_spec()->set_sweep_json(json({{"axes", {{"num_layerz", {1, 2}}}}}).dump());
  auto r = sched_->SubmitSweep(req);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("job 0"), std::string::npos) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("num_layerz"), std::string::npos) << r.status();
  req.mutable_spec()->set_sweep_json(json({{"axes", {{"num_layers", {1, 2, 3}}}}, {"max_jobs", 2}}).dump());
  EXPECT_EQ(sched_->SubmitSweep(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, ExpiredLeaseIsLeasedAgainAndLateReportIsRejectedAndCounted) {
  auto sub = Submit({{"base", json::object()}});
  Register("w1", 1);
  Register("w2", 1);
  auto l1 = Lease("w1", 1);
  ASSERT_FALSE(l1.job().id().empty());
  now_ += 11'000;  // past the 10 s TTL without a heartbeat
  ASSERT_TRUE(sched_->Tick().ok());
  EXPECT_EQ(sched_->counters().leases_expired.load(), 1);
  auto l2 = Lease("w2", 1);
  ASSERT_EQ(l2.job().id(), l1.job().id());
  EXPECT_EQ(l2.job().attempt(), 2);
  EXPECT_GT(l2.fencing_token(), l1.fencing_token());
  auto late = Complete("w1", l1.job().id(), l1.fencing_token(), v1::JOB_STATE_SUCCEEDED, v1::EXIT_REASON_COMPLETED,
                       1.0);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(late.status()), kStaleFencingToken);
  auto late_events = Report("w1", l1.job(), l1.fencing_token(), {{{"event", "start"}}});
  EXPECT_EQ(late_events.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sched_->counters().stale_reports_rejected.load(), 2);
  auto hb = sched_->Heartbeat([&] {
    v1::HeartbeatRequest h;
    h.set_worker_id("w1");
    auto* l = h.add_leases();
    l->set_job_id(l1.job().id());
    l->set_fencing_token(l1.fencing_token());
    return h;
  }());
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->lost_job_ids_size(), 1);
  EXPECT_EQ(sched_->GetJob(l1.job().id())->worker_id(), "w2");  // nothing overwritten
  EXPECT_NE(registry_.Render().find("caddie_stale_reports_rejected_total 2"), std::string::npos);
}

TEST_F(SchedulerTest, CancelQueuedNowAndRunningThroughHeartbeatAndReport) {
  auto sub = Submit({{"axes", {{"seed", {1, 2}}}}});
  Register("w1", 1);
  auto l = Lease("w1", 1);
  auto q = sched_->CancelJob(sub.jobs(1).id(), "");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->state(), v1::JOB_STATE_CANCELLED);
  auto r = sched_->CancelJob(l.job().id(), "wrong lr");
  EXPECT_EQ(r->state(), v1::JOB_STATE_LEASED);
  v1::HeartbeatRequest h;
  h.set_worker_id("w1");
  h.add_leases()->set_job_id(l.job().id());
  h.mutable_leases(0)->set_fencing_token(l.fencing_token());
  auto hb = sched_->Heartbeat(h);
  ASSERT_EQ(hb->cancel_job_ids_size(), 1);
  EXPECT_EQ(hb->cancel_job_ids(0), l.job().id());
  auto rep = Report("w1", l.job(), l.fencing_token(), {{{"event", "start"}}});
  EXPECT_TRUE(rep->cancel());
  EXPECT_EQ(rep->cancel_reason(), "wrong lr");
  auto done = Complete("w1", l.job().id(), l.fencing_token(), v1::JOB_STATE_CANCELLED, v1::EXIT_REASON_CANCELLED);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->job().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(done->job().message(), "wrong lr");
}

TEST_F(SchedulerTest, AshaStopsTheWorseHalfOfASyntheticSweep) {
  auto sub = Submit({{"axes", {{"seed", {0, 1, 2, 3, 4, 5, 6, 7}}}},
                     {"early_stopping", {{"type", "asha"}, {"grace_steps", 100}, {"reduction_factor", 2},
                                         {"min_trials", 8}}}});
  ASSERT_EQ(sub.jobs_size(), 8);
  std::vector<v1::LeaseJobResponse> leases;
  for (int i = 0; i < 8; ++i) {
    Register(absl::StrCat("w", i), 1);
    leases.push_back(Lease(absl::StrCat("w", i), 1));
  }
  // Job with seed k reports val_bpb 2.0 − 0.1·k: seeds 0..3 are the worse half.
  int cancels = 0;
  for (int i = 0; i < 8; ++i) {
    const auto& l = leases[i];
    const int seed = json::parse(l.job().params_json())["seed"];
    auto r = Report(absl::StrCat("w", i), l.job(), l.fencing_token(),
                    {{{"event", "val"}, {"step", 100}, {"val_bpb", 2.0 - 0.1 * seed}}});
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->cancel()) ++cancels;
  }
  EXPECT_EQ(sched_->counters().early_stopped.load(), 4);
  for (int i = 0; i < 8; ++i) {
    const auto& l = leases[i];
    const int seed = json::parse(l.job().params_json())["seed"];
    // Every worker learns its verdict on the next report (or heartbeat).
    auto r = Report(absl::StrCat("w", i), l.job(), l.fencing_token(), {{{"event", "step"}, {"step", 101}}}, 2);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->cancel(), seed < 4) << "seed " << seed;
    if (r->cancel()) {
      EXPECT_NE(r->cancel_reason().find("early_stopped (asha)"), std::string::npos) << r->cancel_reason();
      auto done = Complete(absl::StrCat("w", i), l.job().id(), l.fencing_token(), v1::JOB_STATE_CANCELLED,
                           v1::EXIT_REASON_EARLY_STOPPED);
      ASSERT_TRUE(done.ok());
      EXPECT_EQ(done->job().exit_reason(), v1::EXIT_REASON_EARLY_STOPPED);
      EXPECT_NE(done->job().message().find("not in the best 4 of 8"), std::string::npos) << done->job().message();
    }
  }
}

TEST_F(SchedulerTest, PendingReasonNamesTheLargestFreeWorker) {
  auto sub = Submit({{"base", json::object()}}, /*gpus=*/8);
  ASSERT_TRUE(sched_->Tick().ok());
  EXPECT_NE(sched_->GetJob(sub.jobs(0).id())->pending_reason().find("no live worker"), std::string::npos);
  Register("w-1", 8);
  Register("w-2", 4);
  auto other = Submit({{"base", json::object()}}, /*gpus=*/1);
  auto l = Lease("w-1", 8);  // takes the 8-GPU job first (FIFO), then w-1 reports 0 free
  ASSERT_EQ(l.job().id(), sub.jobs(0).id());
  auto sub2 = Submit({{"base", json::object()}}, /*gpus=*/8);
  Lease("w-1", 0);
  Lease("w-2", 0);
  v1::HeartbeatRequest h;
  h.set_worker_id("w-2");
  h.set_gpus_free(4);
  ASSERT_TRUE(sched_->Heartbeat(h).ok());
  ASSERT_TRUE(sched_->Tick().ok());
  EXPECT_EQ(sched_->GetJob(sub2.jobs(0).id())->pending_reason(), "needs 8 GPUs on one worker; largest free: 4 on w-2");
  auto big = Submit({{"base", json::object()}}, /*gpus=*/16);
  ASSERT_TRUE(sched_->Tick().ok());
  EXPECT_EQ(sched_->GetJob(big.jobs(0).id())->pending_reason(), "needs 16 GPUs on one worker; largest: 8 on w-1");
  const std::string text = registry_.Render();
  EXPECT_NE(text.find("caddie_pending_jobs{reason=\"insufficient_free_gpus\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("caddie_pending_jobs{reason=\"no_worker_large_enough\"} 1"), std::string::npos);
  (void)other;
}

TEST_F(SchedulerTest, InfraFailuresRetryElsewhereAndDrainTheNodeBudgetFailuresNeverRetry) {
  auto sub = Submit({{"axes", {{"seed", {1, 2, 3}}}}}, 1, /*max_attempts=*/3);
  Register("bad", 1);
  Register("good", 1);
  auto l = Lease("bad", 1);
  auto c = Complete("bad", l.job().id(), l.fencing_token(), v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED, 0, true);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->job().state(), v1::JOB_STATE_QUEUED);
  auto retry = Lease("good", 1);
  EXPECT_EQ(retry.job().id(), l.job().id());  // retried on the other worker
  EXPECT_EQ(retry.job().attempt(), 2);
  auto l2 = Lease("bad", 1);
  c = Complete("bad", l2.job().id(), l2.fencing_token(), v1::JOB_STATE_FAILED, v1::EXIT_REASON_NO_PROGRESS, 0, true);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(sched_->counters().workers_drained.load(), 1);
  auto ws = sched_->ListWorkers();
  bool found = false;
  for (const auto& w : *ws) {
    if (w.id() != "bad") continue;
    found = true;
    EXPECT_TRUE(w.drained());
    EXPECT_NE(w.drain_reason().find("2 jobs in a row failed for infrastructure reasons"), std::string::npos);
  }
  EXPECT_TRUE(found);
  auto none = Lease("bad", 1);
  EXPECT_TRUE(none.job().id().empty());
  EXPECT_NE(none.pending_reason().find("drained"), std::string::npos);
  // Budget failure: never retried even when flagged infra.
  auto l3 = Lease("good", 1);
  (void)l3;
  c = Complete("good", retry.job().id(), retry.fencing_token(), v1::JOB_STATE_OVER_BUDGET,
               v1::EXIT_REASON_OVER_BUDGET, 0, true);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->job().state(), v1::JOB_STATE_OVER_BUDGET);
  EXPECT_EQ(c->job().attempt(), 2);
}

TEST_F(SchedulerTest, DrainedByHandWorkerGetsNoLeaseFinishesItsJobAndLeasesAgainAfterUndrain) {
  auto sub = Submit({{"axes", {{"seed", {1, 2, 3}}}}});
  Register("w1", 2);
  auto running = Lease("w1", 2);
  ASSERT_FALSE(running.job().id().empty());

  v1::DrainWorkerRequest dr;
  dr.set_worker_id("w1");
  dr.set_reason("  replace GPU 1  ");
  dr.set_requested_by("alice@ops");
  auto d = sched_->DrainWorker(dr, "ipv4:10.0.0.7:41000");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->changed());
  EXPECT_EQ(DrainRecord(d->worker()), absl::StrCat("drained|replace GPU 1|alice@ops|", now_.load()));
  ASSERT_EQ(d->worker().running_job_ids_size(), 1);
  // The gauges change with the call, not at the next tick.
  std::string text = registry_.Render();
  EXPECT_NE(text.find("caddie_worker_drained{worker=\"w1\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("caddie_worker_drained_by_hand{worker=\"w1\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("caddie_workers{state=\"drained\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("caddie_workers{state=\"live\"} 0"), std::string::npos) << text;

  // No new lease; the queued jobs say why.
  auto none = Lease("w1", 1);
  EXPECT_TRUE(none.job().id().empty());
  EXPECT_EQ(none.pending_reason(), "worker w1 is drained: replace GPU 1");
  EXPECT_EQ(sched_->GetJob(sub.jobs(1).id())->pending_reason(), "no live worker (1 registered, 1 drained, 0 lost)");

  // The job it was running goes on to its end.
  ASSERT_TRUE(Report("w1", running.job(), running.fencing_token(), {{{"event", "start"}}}).ok());
  auto done = Complete("w1", running.job().id(), running.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                       v1::EXIT_REASON_COMPLETED, 1.5);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->job().state(), v1::JOB_STATE_SUCCEEDED);

  // Draining again is OK and keeps the first record.
  dr.set_reason("something else");
  d = sched_->DrainWorker(dr, "ipv4:10.0.0.8:1");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->changed());
  EXPECT_TRUE(absl::StartsWith(DrainRecord(d->worker()), "drained|replace GPU 1|alice@ops|"));

  v1::UndrainWorkerRequest ur;
  ur.set_worker_id("w1");
  auto u = sched_->UndrainWorker(ur, "ipv4:10.0.0.7:41001");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->changed());
  EXPECT_EQ(DrainRecord(u->worker()), "in service|||0");
  text = registry_.Render();
  EXPECT_NE(text.find("caddie_worker_drained{worker=\"w1\"} 0"), std::string::npos) << text;
  EXPECT_NE(text.find("caddie_worker_drained_by_hand{worker=\"w1\"} 0"), std::string::npos) << text;
  EXPECT_NE(text.find("caddie_workers{state=\"drained\"} 0"), std::string::npos) << text;
  EXPECT_NE(text.find("caddie_workers{state=\"live\"} 1"), std::string::npos) << text;
  auto again = Lease("w1", 2);
  EXPECT_EQ(again.job().id(), sub.jobs(1).id());

  // Undraining a worker in service is OK and says nothing changed.
  u = sched_->UndrainWorker(ur, "ipv4:10.0.0.7:41002");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_FALSE(u->changed());
}

TEST_F(SchedulerTest, DrainAndUndrainRejectBadRequestsWithSpecificCodes) {
  Register("w1", 1);
  v1::DrainWorkerRequest dr;
  dr.set_worker_id("w-nope");
  dr.set_reason("maintenance");
  auto d = sched_->DrainWorker(dr, "peer");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(d.status().message().find("unknown worker 'w-nope'"), std::string_view::npos) << d.status();
  v1::UndrainWorkerRequest ur;
  ur.set_worker_id("w-nope");
  auto u = sched_->UndrainWorker(ur, "peer");
  EXPECT_EQ(u.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(u.status().message().find("unknown worker 'w-nope'"), std::string_view::npos) << u.status();

  dr.set_worker_id("w1");
  for (const std::string reason : {"", "   \t"}) {
    dr.set_reason(reason);
    d = sched_->DrainWorker(dr, "peer");
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
    EXPECT_NE(d.status().message().find("needs a reason"), std::string_view::npos) << d.status();
  }
  dr.set_reason(std::string(kMaxDrainReasonBytes + 1, 'x'));
  d = sched_->DrainWorker(dr, "peer");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("the limit is 512 bytes"), std::string_view::npos) << d.status();
  dr.set_reason(std::string(kMaxDrainReasonBytes, 'x'));
  dr.set_requested_by(std::string(kMaxRequestedByBytes + 1, 'a'));
  d = sched_->DrainWorker(dr, "peer");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  dr.set_worker_id("");
  d = sched_->DrainWorker(dr, "peer");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  // Nothing was drained by any of them.
  auto ws = sched_->ListWorkers();
  ASSERT_TRUE(ws.ok()) << ws.status();
  for (const auto& w : *ws) EXPECT_FALSE(w.drained()) << w.id();
}

TEST_F(SchedulerTest, AutoDrainedWorkerCanBeUndrainedAndItsFailureCountRestarts) {
  auto sub = Submit({{"axes", {{"seed", {1, 2, 3, 4, 5}}}}}, 1, /*max_attempts=*/1);
  Register("w1", 1);
  auto crash = [&] {
    auto l = Lease("w1", 1);
    if (l.job().id().empty()) return false;
    auto c = Complete("w1", l.job().id(), l.fencing_token(), v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED, 0, true);
    return c.ok();
  };
  ASSERT_TRUE(crash());
  ASSERT_TRUE(crash());  // drain_after = 2
  auto ws = sched_->ListWorkers();
  ASSERT_EQ(ws->size(), 1u);
  EXPECT_TRUE((*ws)[0].drained());
  EXPECT_EQ((*ws)[0].drained_by(), "controller");
  const std::string text = registry_.Render();
  EXPECT_NE(text.find("caddie_worker_drained{worker=\"w1\"} 1"), std::string::npos) << text;
  // Not by hand: this is the drain CaddieWorkerDrained alerts on.
  EXPECT_NE(text.find("caddie_worker_drained_by_hand{worker=\"w1\"} 0"), std::string::npos) << text;
  EXPECT_FALSE(crash());  // drained: no lease

  v1::UndrainWorkerRequest ur;
  ur.set_worker_id("w1");
  auto u = sched_->UndrainWorker(ur, "peer");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->changed());
  EXPECT_NE(registry_.Render().find("caddie_worker_drained{worker=\"w1\"} 0"), std::string::npos);

  // One crash after the undrain is one in a row, not three: still in service.
  ASSERT_TRUE(crash());
  EXPECT_FALSE((*sched_->ListWorkers())[0].drained());
  // A second one in a row drains it again.
  ASSERT_TRUE(crash());
  EXPECT_TRUE((*sched_->ListWorkers())[0].drained());
  EXPECT_EQ(sched_->counters().workers_drained.load(), 2);
}

// Issue 15: Katib trials hang in Running when metrics stop. Here a leased job whose
// trainer goes silent past the limit is killed and failed with no_progress.
// A worker silent past the metrics TTL (default 1 h) leaves the per-worker
// series; the fleet totals still count it as lost; back, its series return.
TEST_F(SchedulerTest, WorkerGoneLongerThanMetricsTtlLeavesPerWorkerSeries) {
  Register("w-gone", 2);
  Register("w-live", 1);
  ASSERT_TRUE(sched_->Tick().ok());
  EXPECT_TRUE(absl::StrContains(registry_.Render(), "caddie_worker_heartbeat_age_seconds{worker=\"w-gone\"}"));
  // 30 minutes later w-gone is lost but still exported; w-live keeps heartbeating.
  now_ += 1800 * 1000;
  Register("w-live", 1);
  ASSERT_TRUE(sched_->Tick().ok());
  std::string text = registry_.Render();
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_heartbeat_age_seconds{worker=\"w-gone\"} 1800")) << text;
  // Its GPUs are lost, not free: the fleet's free GPUs are w-live's only.
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_gpus{worker=\"w-gone\",state=\"free\"} 0")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_gpus{worker=\"w-gone\",state=\"lost\"} 2")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_gpus{worker=\"w-live\",state=\"lost\"} 0")) << text;
  // Past the hour: every w-gone series is gone, w-live's stay, and the totals still count w-gone.
  now_ += 1801 * 1000;
  Register("w-live", 1);
  ASSERT_TRUE(sched_->Tick().ok());
  text = registry_.Render();
  EXPECT_FALSE(absl::StrContains(text, "w-gone")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_gpus{worker=\"w-live\",state=\"free\"}")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_workers{state=\"lost\"} 1")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_workers{state=\"live\"} 1")) << text;
  // It comes back: its series return.
  Register("w-gone", 2);
  ASSERT_TRUE(sched_->Tick().ok());
  text = registry_.Render();
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_heartbeat_age_seconds{worker=\"w-gone\"} 0")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_workers{state=\"lost\"} 0")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_gpus{worker=\"w-gone\",state=\"free\"} 2")) << text;
  EXPECT_TRUE(absl::StrContains(text, "caddie_worker_gpus{worker=\"w-gone\",state=\"lost\"} 0")) << text;
}

TEST_F(SchedulerTest, NoMetricsMeansFailure_SilentJobIsKilledWithNoProgress) {
  auto sub = Submit({{"axes", {{"seed", {1, 2}}}}});
  Register("w1", 2);
  auto quiet = Lease("w1", 2);
  auto chatty = Lease("w1", 1);
  ASSERT_TRUE(Report("w1", quiet.job(), quiet.fencing_token(), {{{"event", "start"}}}).ok());
  for (int i = 0; i < 4; ++i) {
    now_ += 2'000;
    ASSERT_TRUE(Report("w1", chatty.job(), chatty.fencing_token(), {{{"event", "step"}, {"step", i}}}, i + 1).ok());
    v1::HeartbeatRequest h;
    h.set_worker_id("w1");
    for (const auto* l : {&quiet, &chatty}) {
      auto* ref = h.add_leases();
      ref->set_job_id(l->job().id());
      ref->set_fencing_token(l->fencing_token());
    }
    ASSERT_TRUE(sched_->Heartbeat(h).ok());  // heartbeats alone do not count as progress
    ASSERT_TRUE(sched_->Tick().ok());
  }
  EXPECT_EQ(sched_->counters().no_progress_killed.load(), 1);
  v1::HeartbeatRequest h;
  h.set_worker_id("w1");
  for (const auto* l : {&quiet, &chatty}) {
    auto* ref = h.add_leases();
    ref->set_job_id(l->job().id());
    ref->set_fencing_token(l->fencing_token());
  }
  auto hb = sched_->Heartbeat(h);
  ASSERT_EQ(hb->cancel_job_ids_size(), 1);
  EXPECT_EQ(hb->cancel_job_ids(0), quiet.job().id());
  auto done = Complete("w1", quiet.job().id(), quiet.fencing_token(), v1::JOB_STATE_CANCELLED,
                       v1::EXIT_REASON_CANCELLED);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->job().state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(done->job().exit_reason(), v1::EXIT_REASON_NO_PROGRESS);
  EXPECT_NE(done->job().message().find("no_progress: no event from the trainer for 6 s"), std::string::npos)
      << done->job().message();
  EXPECT_EQ(sched_->GetJob(chatty.job().id())->state(), v1::JOB_STATE_RUNNING);
}

}  // namespace
}  // namespace caddie::controller
