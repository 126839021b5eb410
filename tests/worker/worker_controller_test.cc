// Issue 9's "must show" list end to end with real processes only: a
// caddie-controller (its own SQLite file), a caddie-worker, and
// caddie-fake-train ranks. The fake trainer's plan comes from the worker's
// environment (CADDIE_FAKE_TRAIN), since the controller accepts only real
// trainer spec keys.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "caddie/v1/user_service.grpc.pb.h"
#include "common/subprocess.h"
#include "tests/chaos/harness.h"
#include "tests/worker/process.h"

namespace caddie {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using testing_support::Process;
using testing_support::ProcessGone;
using Clock = std::chrono::steady_clock;

constexpr char kUserToken[] = "user-tok";
constexpr char kWorkerToken[] = "worker-tok";

fs::path BinaryDir() {
  const char* d = std::getenv("CADDIE_BINARY_DIR");
  return d != nullptr ? fs::path(d) : fs::current_path();
}

bool Terminal(caddie::v1::JobState s) {
  return s == caddie::v1::JOB_STATE_SUCCEEDED || s == caddie::v1::JOB_STATE_FAILED ||
         s == caddie::v1::JOB_STATE_OVER_BUDGET || s == caddie::v1::JOB_STATE_CANCELLED;
}

class WorkerControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("worker_controller_" + std::to_string(getpid())) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "user.token") << kUserToken << "\n";
    std::ofstream(dir_ / "worker.token") << kWorkerToken << "\n";
    auto port = PickFreePort();
    ASSERT_TRUE(port.ok());
    port_ = *port;
    addr_ = "127.0.0.1:" + std::to_string(port_);
    StartController();
    stub_ = caddie::v1::UserService::NewStub(grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    worker_.Kill();
    controller_.Kill();
    if (HasFailure()) {
      std::fprintf(stderr, "--- controller log\n%s\n--- worker log\n%s\n", controller_.Log().c_str(),
                   worker_.Log().c_str());
    } else {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  // The same port and database every time, so a restart is the same controller.
  void StartController() {
    ASSERT_TRUE(controller_
                    .Start({(BinaryDir() / "controller/caddie-controller").string(), "--listen", addr_,
                            "--db", (dir_ / "caddie.db").string(), "--http-listen", "127.0.0.1:0",
                            "--user-token-file", (dir_ / "user.token").string(), "--worker-token-file",
                            (dir_ / "worker.token").string(), "--heartbeat-interval", "0.5",
                            "--lease-ttl", "10"},
                           dir_ / ("controller" + std::to_string(++controller_starts_) + ".log"))
                    .ok());
    const auto until = Clock::now() + 20s;
    while (Clock::now() < until && controller_.Log().find("listening on") == std::string::npos) {
      ASSERT_TRUE(controller_.running()) << controller_.Log();
      std::this_thread::sleep_for(50ms);
    }
    ASSERT_NE(controller_.Log().find("listening on"), std::string::npos) << controller_.Log();
  }

  void StartWorker(int gpus, const json& plan, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {(BinaryDir() / "worker/caddie-worker").string(), "--controller", addr_,
                                     "--token-file", (dir_ / "worker.token").string(), "--work-dir",
                                     (dir_ / "work").string(), "--id", "w1", "--trainer",
                                     (BinaryDir() / "tests/fake_trainer/caddie-fake-train").string(), "--gpus",
                                     std::to_string(gpus), "--nvidia-smi", "/nonexistent/nvidia-smi",
                                     "--lease-interval", "0.1", "--http-listen", "127.0.0.1:0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSERT_TRUE(worker_.Start(argv, dir_ / "worker.log", {{"CADDIE_FAKE_TRAIN", plan.dump()}}).ok());
  }

  std::unique_ptr<grpc::ClientContext> Ctx() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("authorization", std::string("Bearer ") + kUserToken);
    c->set_deadline(std::chrono::system_clock::now() + 10s);
    return c;
  }

  // Submits a one-job sweep; returns the job id.
  std::string Submit(int gpus, caddie::v1::Budget budget = {}, int max_attempts = 1, json base_extra = json::object()) {
    caddie::v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name("worker-test");
    json base = {{"model_dim", 64}, {"num_layers", 2}};
    base.update(base_extra);
    req.mutable_spec()->set_sweep_json(json{{"base", base}, {"axes", {{"seed", {1}}}}, {"mode", "grid"}}.dump());
    req.mutable_spec()->set_gpus(gpus);
    *req.mutable_spec()->mutable_budget() = budget;
    req.mutable_spec()->set_max_attempts(max_attempts);
    caddie::v1::SubmitSweepResponse resp;
    auto ctx = Ctx();
    grpc::Status s = stub_->SubmitSweep(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.jobs_size(), 1);
    return resp.jobs_size() > 0 ? resp.jobs(0).id() : "";
  }

  std::optional<caddie::v1::Job> GetJob(const std::string& id) {
    caddie::v1::GetJobRequest req;
    req.set_job_id(id);
    caddie::v1::Job job;
    auto ctx = Ctx();
    if (!stub_->GetJob(ctx.get(), req, &job).ok()) return std::nullopt;
    return job;
  }

  // Polls until `pred(job)` or the timeout; the last job seen.
  caddie::v1::Job WaitJob(const std::string& id, std::function<bool(const caddie::v1::Job&)> pred,
                          std::chrono::milliseconds timeout) {
    caddie::v1::Job last;
    const auto until = Clock::now() + timeout;
    while (Clock::now() < until) {
      if (auto j = GetJob(id)) {
        last = *j;
        if (pred(last)) return last;
      }
      std::this_thread::sleep_for(50ms);
    }
    return last;
  }
  caddie::v1::Job WaitDone(const std::string& id, std::chrono::milliseconds timeout = 30s) {
    return WaitJob(id, [](const caddie::v1::Job& j) { return Terminal(j.state()); }, timeout);
  }

  // Every stored event of the job (WatchJob ends when the job has ended).
  std::vector<caddie::v1::Event> Events(const std::string& id) {
    caddie::v1::WatchJobRequest req;
    req.set_job_id(id);
    auto ctx = Ctx();
    auto reader = stub_->WatchJob(ctx.get(), req);
    std::vector<caddie::v1::Event> out;
    caddie::v1::WatchJobResponse r;
    while (reader->Read(&r)) {
      for (const auto& e : r.events()) out.push_back(e);
      if (r.has_job() && Terminal(r.job().state())) break;
    }
    ctx->TryCancel();
    return out;
  }

  fs::path RunDir(const caddie::v1::Job& job) {
    return dir_ / "work" / "w1" / "runs" / (job.id() + "-a" + std::to_string(job.attempt()));
  }
  pid_t RankPid(const caddie::v1::Job& job, int rank) {
    std::ifstream in(RunDir(job) / ("fake_rank" + std::to_string(rank) + ".json"));
    json j = json::parse(in, nullptr, false);
    return j.is_object() ? j["pid"].get<pid_t>() : -1;
  }

  // The controller goes down and the worker's disk refuses spool writes: the
  // spool directory becomes a file, so every create fails (for root too).
  // Returns the running job. FreeSpoolDisk() puts the directory back.
  caddie::v1::Job RunningJobWithControllerDownAndSpoolRefused(const std::string& id) {
    const auto running = WaitJob(id, [](const caddie::v1::Job& j) { return j.state() == caddie::v1::JOB_STATE_RUNNING; }, 20s);
    EXPECT_EQ(running.state(), caddie::v1::JOB_STATE_RUNNING);
    controller_.Kill();
    fs::rename(Spool(), Spool().string() + ".away");
    std::ofstream(Spool()) << "no room";
    return running;
  }
  void FreeSpoolDisk() {
    fs::remove(Spool());
    fs::rename(Spool().string() + ".away", Spool());
  }
  fs::path Spool() const { return dir_ / "work" / "w1" / "spool"; }
  // The job's stored events are every line its trainer printed, seqs 1..n.
  void ExpectEveryPrintedEvent(const caddie::v1::Job& job) {
    const auto events = Events(job.id());
    const std::string out = reliability::ReadAll(RunDir(job) / "rank0.stdout.log");
    EXPECT_EQ(events.size(), static_cast<size_t>(std::count(out.begin(), out.end(), '\n')));
    for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1)) << i;
  }

  // The controller's copy of a rank's stderr (GetJobLogs from offset 0) is the
  // file the rank wrote, byte for byte: nothing lost, nothing stored twice.
  void ExpectStderrAsWritten(const caddie::v1::Job& job, int rank) {
    caddie::v1::GetJobLogsRequest req;
    req.set_job_id(job.id());
    req.set_rank(rank);
    req.set_stream("stderr");
    req.set_from_offset(0);
    caddie::v1::GetJobLogsResponse resp;
    auto ctx = Ctx();
    const grpc::Status s = stub_->GetJobLogs(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const std::string written = reliability::ReadAll(RunDir(job) / ("rank" + std::to_string(rank) + ".stderr.log"));
    EXPECT_FALSE(written.empty());
    EXPECT_EQ(resp.text(), written) << "rank " << rank;
    EXPECT_EQ(resp.next_offset(), static_cast<int64_t>(written.size()));
    EXPECT_EQ(resp.dropped_bytes(), 0);
  }

  fs::path dir_;
  int port_ = 0;
  std::string addr_;
  int controller_starts_ = 0;
  Process controller_, worker_;
  std::unique_ptr<caddie::v1::UserService::Stub> stub_;
};

void ExpectContiguous(const std::vector<caddie::v1::Event>& events) {
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1)) << i;
}

TEST_F(WorkerControllerTest, JobRunsToSuccessAndEventsArriveInOrder) {
  StartWorker(0, {{"steps", 8}, {"step_ms", 30}});
  const std::string id = Submit(0);
  const auto job = WaitDone(id);
  ASSERT_EQ(job.state(), caddie::v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.exit_reason(), caddie::v1::EXIT_REASON_COMPLETED);
  EXPECT_EQ(job.result().steps(), 8);
  const auto events = Events(id);
  ASSERT_EQ(events.size(), 11u);  // start, 8 × step, val, final
  ExpectContiguous(events);
  EXPECT_EQ(events.front().type(), "start");
  for (int s = 1; s <= 8; ++s) EXPECT_EQ(events[s].step(), s);
  EXPECT_EQ(events.back().type(), "final");
}

TEST_F(WorkerControllerTest, TrainerIgnoringSigtermIsKilledAtLimitPlusGraceAndRecordsTheTimeLimit) {
  StartWorker(0, {{"steps", 1000000}, {"step_ms", 20}, {"ignore_sigterm", true}});
  caddie::v1::Budget b;
  b.set_train_seconds(1);
  b.set_grace_seconds(1);
  // The trainer's own budget is far away: only the worker's limit can stop it.
  const std::string id = Submit(0, b, 1, {{"max_wallclock_seconds", 1000}});
  const auto running = WaitJob(id, [](const caddie::v1::Job& j) { return j.state() == caddie::v1::JOB_STATE_RUNNING; }, 20s);
  ASSERT_EQ(running.state(), caddie::v1::JOB_STATE_RUNNING);
  const auto t0 = Clock::now();
  const auto job = WaitDone(id);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(job.state(), caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_reason(), caddie::v1::EXIT_REASON_TIME_LIMIT_KILLED) << job.message();
  // SIGTERM at the 1 s limit, SIGKILL after the 1 s grace (RUNNING is seen a little after start).
  EXPECT_GE(took, 1.0);
  EXPECT_LT(took, 5.0);
  EXPECT_TRUE(ProcessGone(RankPid(job, 0), 1s));
}

TEST_F(WorkerControllerTest, ArtifactOf16000001BytesEndsOverBudget) {
  StartWorker(0, {{"steps", 2}, {"artifact_bytes", 16000001}});
  const std::string id = Submit(0);
  const auto job = WaitDone(id);
  EXPECT_EQ(job.state(), caddie::v1::JOB_STATE_OVER_BUDGET) << job.message();
  EXPECT_EQ(job.exit_reason(), caddie::v1::EXIT_REASON_OVER_BUDGET);
  EXPECT_EQ(job.result().artifact_bytes(), 16000001);
  EXPECT_FALSE(job.result().within_budget());
}

TEST_F(WorkerControllerTest, KillingTheControllerMidJobAndRestartingItLosesNoEvent) {
  StartWorker(0, {{"steps", 40}, {"step_ms", 100}});
  const std::string id = Submit(0);
  const auto running = WaitJob(id, [](const caddie::v1::Job& j) { return j.state() == caddie::v1::JOB_STATE_RUNNING; }, 20s);
  ASSERT_EQ(running.state(), caddie::v1::JOB_STATE_RUNNING);
  std::this_thread::sleep_for(500ms);
  controller_.Kill();  // SIGKILL, mid-job
  std::this_thread::sleep_for(1500ms);
  StartController();
  const auto job = WaitDone(id, 40s);
  ASSERT_EQ(job.state(), caddie::v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.attempt(), 1);  // the same run, not a retry
  const auto events = Events(id);
  ASSERT_EQ(events.size(), 43u);  // start, 40 × step, val, final: every one
  ExpectContiguous(events);
  EXPECT_EQ(events.back().type(), "final");
  // The batches the controller took before it died are replayed too: stored once.
  ExpectStderrAsWritten(job, 0);
}

// Nothing the worker accepted is lost when its disk refuses spool writes. The
// "disk full" here is the spool directory turned into a file (every create
// fails, for root too), while the controller is down so nothing can be sent
// either: batches and the completion are held in memory, surfaced in /metrics
// and the log, written once the disk frees — durably: the worker is then
// SIGKILLed and its restart replays them — and the job ends with every event.
TEST_F(WorkerControllerTest, SpoolWritesRefusedByAFullDiskLoseNoEventOnceTheDiskFrees) {
  const json plan = {{"steps", 30}, {"step_ms", 50}};
  StartWorker(0, plan);
  const std::string id = Submit(0);
  ASSERT_EQ(RunningJobWithControllerDownAndSpoolRefused(id).state(), caddie::v1::JOB_STATE_RUNNING);
  std::string metrics_addr;
  ASSERT_TRUE(reliability::WaitUntil(
      [&] {
        static const std::regex kAddr(R"(worker metrics on http://([0-9.]+:[0-9]+)/metrics)");
        std::smatch m;
        const std::string log = worker_.Log();
        if (std::regex_search(log, m, kAddr)) metrics_addr = m[1];
        return !metrics_addr.empty();
      },
      5s));
  auto metric = [&](const char* series) { return reliability::SeriesValue(reliability::ScrapeMetrics(metrics_addr), series); };
  // The run finishes meanwhile; its completion is held with the last batches.
  ASSERT_TRUE(reliability::WaitUntil(
      [&] { return worker_.Log().find("job " + id + ": JOB_STATE_SUCCEEDED") != std::string::npos; }, 20s))
      << worker_.Log();
  // At least the last batch and the completion.
  EXPECT_TRUE(reliability::WaitUntil([&] { return metric("caddie_worker_spool_held_messages") >= 2; }, 5s));
  EXPECT_GE(metric("caddie_worker_spool_write_failures_total"), 2);
  EXPECT_NE(worker_.Log().find("Not a directory; holding "), std::string::npos) << worker_.Log();

  FreeSpoolDisk();
  ASSERT_TRUE(reliability::WaitUntil([&] { return metric("caddie_worker_spool_held_messages") == 0; }, 10s));
  EXPECT_NE(worker_.Log().find("spool: writing to disk again"), std::string::npos) << worker_.Log();
  worker_.Kill();  // only what reached the disk survives this
  StartController();
  StartWorker(0, plan);
  const auto job = WaitDone(id, 30s);
  ASSERT_EQ(job.state(), caddie::v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.attempt(), 1);
  // Every line the trainer printed: start, 30 steps, val, final — no gap.
  ExpectEveryPrintedEvent(job);
  const auto events = Events(id);
  ASSERT_EQ(events.size(), 33u);
  EXPECT_EQ(events.back().type(), "final");
  ExpectStderrAsWritten(job, 0);
}

// When the disk keeps refusing and nothing is acknowledged, holding is bounded
// (--spool-memory-limit): the run is stopped and fails as an infrastructure
// error naming the spool — and what was held still arrives once the disk frees.
TEST_F(WorkerControllerTest, SpoolPastItsMemoryLimitStopsTheRunWithTheReason) {
  StartWorker(0, {{"steps", 1000000}, {"step_ms", 50}}, {"--spool-memory-limit", "1"});
  const std::string id = Submit(0);
  const auto running = RunningJobWithControllerDownAndSpoolRefused(id);
  ASSERT_EQ(running.state(), caddie::v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(reliability::WaitUntil(
      [&] { return worker_.Log().find("job " + id + ": JOB_STATE_FAILED (EXIT_REASON_INFRA_ERROR)") != std::string::npos; },
      20s))
      << worker_.Log();
  EXPECT_TRUE(testing_support::ProcessGone(RankPid(running, 0), 2s));
  FreeSpoolDisk();
  StartController();
  const auto job = WaitDone(id, 30s);
  EXPECT_EQ(job.state(), caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_reason(), caddie::v1::EXIT_REASON_INFRA_ERROR);
  EXPECT_NE(job.message().find("worker spool cannot write to disk (spool: create "), std::string::npos) << job.message();
  EXPECT_NE(job.message().find("(limit 1); run stopped"), std::string::npos) << job.message();
  // Every event the run printed before it was stopped arrived, in order.
  ExpectEveryPrintedEvent(job);
}

TEST_F(WorkerControllerTest, KillingOneOfTwoRanksFailsTheJobAndLeavesNoOrphan) {
  StartWorker(2, {{"steps", 1000000}, {"step_ms", 20}});
  const std::string id = Submit(2);
  const auto running = WaitJob(id, [](const caddie::v1::Job& j) { return j.state() == caddie::v1::JOB_STATE_RUNNING; }, 20s);
  ASSERT_EQ(running.state(), caddie::v1::JOB_STATE_RUNNING);
  pid_t r0 = -1, r1 = -1;
  const auto until = Clock::now() + 10s;
  while ((r0 <= 0 || r1 <= 0) && Clock::now() < until) {
    r0 = RankPid(running, 0);
    r1 = RankPid(running, 1);
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GT(r0, 0);
  ASSERT_GT(r1, 0);
  ASSERT_EQ(kill(r1, SIGKILL), 0);
  const auto job = WaitDone(id);
  EXPECT_EQ(job.state(), caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_reason(), caddie::v1::EXIT_REASON_CRASHED);
  EXPECT_NE(job.message().find("rank 1 exited with signal 9"), std::string::npos) << job.message();
  EXPECT_TRUE(ProcessGone(r0, 2s));
  EXPECT_TRUE(ProcessGone(r1, 2s));
  // Both ranks' stderr up to their end, sent before the failure was reported.
  ExpectStderrAsWritten(job, 0);
  ExpectStderrAsWritten(job, 1);
}

TEST_F(WorkerControllerTest, CancelStopsARunningJobWithinTwoHeartbeats) {
  StartWorker(0, {{"steps", 1000000}, {"step_ms", 20}, {"ignore_sigterm", true}}, {"--heartbeat-interval", "0.5"});
  const std::string id = Submit(0);
  const auto running = WaitJob(id, [](const caddie::v1::Job& j) { return j.state() == caddie::v1::JOB_STATE_RUNNING; }, 20s);
  ASSERT_EQ(running.state(), caddie::v1::JOB_STATE_RUNNING);
  const auto t0 = Clock::now();
  caddie::v1::CancelJobRequest req;
  req.set_job_id(id);
  req.set_reason("test");
  caddie::v1::Job resp;
  auto ctx = Ctx();
  ASSERT_TRUE(stub_->CancelJob(ctx.get(), req, &resp).ok());
  // Cancelled on the worker: its trainer is gone within two heartbeats (2 × 0.5 s).
  ASSERT_TRUE(ProcessGone(RankPid(running, 0), 1000ms));
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(took, 1.0);
  const auto job = WaitDone(id, 10s);
  EXPECT_EQ(job.state(), caddie::v1::JOB_STATE_CANCELLED);
}

}  // namespace
}  // namespace caddie
