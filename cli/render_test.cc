#include "cli/render.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace caddie::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::Event Ev(int64_t seq, const std::string& type, const std::string& json) {
  v1::Event e;
  e.set_seq(seq);
  e.set_type(type);
  e.set_json(json);
  return e;
}

v1::Job RunningJob() {
  v1::Job j;
  j.set_id("j-1");
  j.set_state(v1::JOB_STATE_RUNNING);
  j.set_worker_id("w1");
  j.mutable_spec()->mutable_budget()->set_train_seconds(40);
  return j;
}

TEST(RenderTest, StateNamesRoundTrip) {
  EXPECT_EQ(StateName(v1::JOB_STATE_OVER_BUDGET), "over_budget");
  EXPECT_EQ(ParseState("RUNNING"), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(ParseState("job_state_queued"), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(ParseState("runing"), std::nullopt);
  EXPECT_THAT(AllStateNames(), HasSubstr("queued, leased, running"));
  EXPECT_EQ(ExitReasonName(v1::EXIT_REASON_TIME_BUDGET), "time_budget");
  EXPECT_TRUE(IsTerminal(v1::JOB_STATE_CANCELLED));
  EXPECT_FALSE(IsTerminal(v1::JOB_STATE_PREEMPTED));
}

TEST(RenderTest, TrainBudgetFromBudgetThenSpecThenDefault) {
  v1::Job j;
  EXPECT_DOUBLE_EQ(TrainBudgetSeconds(j), 600);
  j.mutable_spec()->set_spec_json(R"({"max_wallclock_seconds": 90})");
  EXPECT_DOUBLE_EQ(TrainBudgetSeconds(j), 90);
  j.mutable_spec()->mutable_budget()->set_train_seconds(30);
  EXPECT_DOUBLE_EQ(TrainBudgetSeconds(j), 30);
}

TEST(RenderTest, WatchViewTracksProgressLossAndValBpb) {
  const Style st(false);
  WatchView v("j-1");
  v1::WatchJobResponse r;
  *r.mutable_job() = RunningJob();
  *r.add_events() = Ev(1, "start", R"({"event":"start","params":1234567,"device":"cpu","world_size":1})");
  *r.add_events() = Ev(2, "step", R"({"event":"step","step":10,"train_loss":5.5,"train_time_s":10,"tokens_per_s":2048})");
  std::string lines = v.Apply(r, st);
  EXPECT_THAT(lines, HasSubstr("job j-1 is running on w1"));
  EXPECT_THAT(lines, HasSubstr("started: 1,234,567 parameters on cpu"));
  EXPECT_EQ(v.StatusLine(st), "[######------------------]  25%  10s / 40s  step 10  loss 5.5000  2,048 tok/s  running");

  v1::WatchJobResponse r2;
  *r2.add_events() = Ev(3, "val", R"({"event":"val","step":20,"val_loss":3.1,"val_bpb":1.8765,"train_time_s":20})");
  *r2.add_events() = Ev(4, "step", R"({"event":"step","step":30,"train_loss":4.25,"train_time_s":30})");
  lines = v.Apply(r2, st);
  EXPECT_THAT(lines, HasSubstr("step     20  val_loss 3.1000  val_bpb 1.8765"));
  EXPECT_THAT(v.StatusLine(st), HasSubstr(" 75%  30s / 40s  step 30  loss 4.2500  val_bpb 1.8765"));
  EXPECT_EQ(v.last_seq(), 4);
  EXPECT_FALSE(v.finished());

  v1::WatchJobResponse r3;
  *r3.add_events() = Ev(5, "final", R"({"event":"final","exit_reason":"time_budget","steps":41,"train_time_s":40,
      "val_bpb":1.80,"val_bpb_post_quant":1.8123,"artifact_bytes":612345,"within_budget":true})");
  v1::Job done = RunningJob();
  done.set_state(v1::JOB_STATE_SUCCEEDED);
  done.set_exit_reason(v1::EXIT_REASON_TIME_BUDGET);
  *r3.mutable_job() = done;
  lines = v.Apply(r3, st);
  EXPECT_THAT(lines, HasSubstr("job j-1 is succeeded (time_budget)"));
  EXPECT_THAT(lines, HasSubstr("final: val_bpb 1.8123 after quantisation (1.8000 before), artifact 612.3 kB within budget, 41 steps"));
  EXPECT_TRUE(v.finished());
}

TEST(RenderTest, JobDetailShowsPendingReasonAndResult) {
  const Style st(false);
  v1::Job j;
  j.set_id("j-9");
  j.set_sweep_id("s-1");
  j.set_state(v1::JOB_STATE_QUEUED);
  j.set_pending_reason("no worker has 8 free GPUs (largest: 1)");
  j.set_params_json(R"({"loops":2,"qat_bits":4})");
  std::string d = JobDetail(j, 0, st);
  EXPECT_THAT(d, HasSubstr("pending reason:  no worker has 8 free GPUs (largest: 1)"));
  EXPECT_THAT(d, HasSubstr("params:          loops=2 qat_bits=4"));
  EXPECT_THAT(d, Not(HasSubstr("result")));
  j.set_state(v1::JOB_STATE_SUCCEEDED);
  j.set_pending_reason("");
  j.mutable_result()->set_val_bpb_post_quant(1.2244);
  j.mutable_result()->set_val_bpb(1.2172);
  j.mutable_result()->set_artifact_bytes(15860000);
  j.mutable_result()->set_steps(13780);
  j.mutable_result()->set_within_budget(true);
  d = JobDetail(j, 0, st);
  EXPECT_THAT(d, HasSubstr("val_bpb:       1.2244 after quantisation (1.2172 before)"));
  EXPECT_THAT(d, HasSubstr("15.86 MB (15,860,000 of 16,000,000 bytes) within budget"));
}

TEST(RenderTest, TablesAndJson) {
  const Style st(false);
  v1::LeaderboardResponse lb;
  auto* e = lb.add_entries();
  e->set_rank(1);
  e->set_job_id("j-2");
  e->set_val_bpb_post_quant(1.5);
  e->set_val_bpb(1.49);
  e->set_artifact_bytes(2000000);
  e->set_spec_diff_json(R"({"loops":2,"data":"/x","matrix_lr":0.0312345})");
  const std::string t = LeaderboardTable(lb, st);
  EXPECT_THAT(t, HasSubstr("1.5000"));
  EXPECT_THAT(t, HasSubstr("2.00 MB"));
  EXPECT_THAT(t, HasSubstr("loops=2 matrix_lr=0.03123"));
  EXPECT_THAT(t, Not(HasSubstr("/x")));
  EXPECT_THAT(LeaderboardTable(v1::LeaderboardResponse(), st), HasSubstr("empty"));
  // With two entries, keys they share are folded away.
  auto* e2 = lb.add_entries();
  e2->set_rank(2);
  e2->set_job_id("j-3");
  e2->set_spec_diff_json(R"({"loops":1,"data":"/x","matrix_lr":0.0312345})");
  const std::string t2 = LeaderboardTable(lb, st);
  EXPECT_THAT(t2, HasSubstr("j-2  loops=2 (+1 shared)"));
  EXPECT_THAT(t2, HasSubstr("j-3  loops=1 (+1 shared)"));
  const auto j = ToJsonValue(lb);
  EXPECT_EQ(j["entries"][0]["job_id"], "j-2");
  EXPECT_EQ(j["entries"][0]["artifact_bytes"], "2000000");  // int64 is a string in proto JSON
  v1::ListJobsResponse jobs;
  *jobs.add_jobs() = RunningJob();
  EXPECT_THAT(JobsTable(jobs, 0, st), HasSubstr("j-1  running"));
}

TEST(RenderTest, DrainAndUndrainSayWhatChangedAndWhatComesNext) {
  const Style st(false);
  v1::DrainWorkerResponse d;
  d.set_changed(true);
  v1::Worker* w = d.mutable_worker();
  w->set_id("w-1");
  w->set_drained(true);
  w->set_drain_reason("replace GPU 1");
  w->set_drained_by("alice@ops");
  w->set_drained_unix_ms(1'000'000);
  w->add_running_job_ids("j-1");
  EXPECT_EQ(DrainResult(d, 1'300'000, st),
            "drained worker w-1: replace GPU 1\n"
            "  no new jobs go to it; its running job j-1 goes on to its end\n"
            "  return it to service with: caddie workers undrain w-1\n");
  d.set_changed(false);
  w->clear_running_job_ids();
  EXPECT_EQ(DrainResult(d, 1'300'000, st),
            "worker w-1 was already drained (by alice@ops, 5m00s ago): replace GPU 1; nothing changed\n"
            "  return it to service with: caddie workers undrain w-1\n");
  v1::ListWorkersResponse list;
  *list.add_workers() = *w;
  EXPECT_THAT(WorkersTable(list, 1'300'000, st), HasSubstr("drained: replace GPU 1 (by alice@ops, 5m00s ago)"));

  v1::UndrainWorkerResponse u;
  u.mutable_worker()->set_id("w-1");
  u.set_changed(true);
  EXPECT_EQ(UndrainResult(u, st),
            "worker w-1 is back in service: ready for new jobs (its count of failures in a row restarts at 0)\n");
  u.set_changed(false);
  EXPECT_EQ(UndrainResult(u, st),
            "worker w-1 was not drained; it is ready (its count of failures in a row restarts at 0)\n");
  EXPECT_THAT(UndrainResult(u, Style(true)), HasSubstr("\033["));  // coloured on a terminal
}

}  // namespace
}  // namespace caddie::cli
