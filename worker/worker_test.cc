// Worker against an in-process fake WorkerService on loopback, with
// caddie-fake-train as the trainer.
#include "worker/worker.h"

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/worker/fake_controller.h"

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

using caddie::testing_support::FakeController;

caddie::v1::Job MakeJob(const std::string& id, json fake, int gpus = 0) {
  caddie::v1::Job j;
  j.set_id(id);
  j.set_attempt(1);
  j.mutable_spec()->set_spec_json(json{{"fake", fake}}.dump());
  j.mutable_spec()->set_gpus(gpus);
  return j;
}

class WorkerTest : public testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&fake_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    work_dir_ = fs::path(testing::TempDir()) / ("worker_" + std::to_string(getpid())) /
                testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(work_dir_);
  }
  void TearDown() override {
    StopWorker();
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
    std::error_code ec;
    if (!HasFailure()) fs::remove_all(work_dir_, ec);
  }

  WorkerOptions Options() {
    WorkerOptions o;
    o.controller = "127.0.0.1:" + std::to_string(port_);
    o.token = "s3cret";
    o.work_dir = work_dir_.string();
    o.id = "w-test";
    o.hostname = "testhost";
    o.cpu_slots = 1;
    o.labels = {{"zone", "a"}};
    o.lease_interval_s = 0.05;
    o.http_listen = "127.0.0.1:0";
    o.runner.trainer = CADDIE_FAKE_TRAIN_PATH;
    return o;
  }
  void StartWorker(WorkerOptions o) {
    auto w = Worker::Create(std::move(o));
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = std::move(*w);
    thread_ = std::thread([this] { EXPECT_TRUE(worker_->Run().ok()); });
  }
  void StopWorker() {
    if (!worker_) return;
    worker_->Shutdown();
    thread_.join();
    worker_.reset();
  }
  std::vector<std::string> Types(const std::string& job) {
    absl::MutexLock l(&fake_.mu);
    std::vector<std::string> t;
    for (const auto& e : fake_.events[job]) t.push_back(e.type());
    return t;
  }

  FakeController fake_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  fs::path work_dir_;
  std::unique_ptr<Worker> worker_;
  std::thread thread_;
};

TEST_F(WorkerTest, RegistersLeasesRunsAndReportsInOrder) {
  fake_.queue.push_back(MakeJob("j1", {{"steps", 4}, {"step_ms", 20}}));
  StartWorker(Options());
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completions.count("j1") > 0; }, 10s));
  {
    absl::MutexLock l(&fake_.mu);
    ASSERT_FALSE(fake_.registrations.empty());
    const auto& reg = fake_.registrations[0];
    EXPECT_EQ(reg.id(), "w-test");
    EXPECT_EQ(reg.hostname(), "testhost");
    EXPECT_EQ(reg.cpu_slots(), 1);
    EXPECT_EQ(reg.labels().at("zone"), "a");
    EXPECT_FALSE(reg.version().empty());
    EXPECT_EQ(fake_.auth, "Bearer s3cret");
    const auto& c = fake_.completions["j1"];
    EXPECT_EQ(c.worker_id(), "w-test");
    EXPECT_EQ(c.lease().fencing_token(), fake_.tokens["j1"]);
    EXPECT_EQ(c.state(), caddie::v1::JOB_STATE_SUCCEEDED) << c.message();
    EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_COMPLETED);
    EXPECT_FALSE(c.infra_failure());
    EXPECT_EQ(c.result().steps(), 4);
    EXPECT_FALSE(fake_.gaps);
  }
  EXPECT_EQ(Types("j1"), (std::vector<std::string>{"start", "step", "step", "step", "step", "val", "final"}));
  // Acknowledged messages leave the spool; the run dir is under <work>/<id>/runs/.
  EXPECT_TRUE(fake_.WaitFor([&] { return worker_->spooled() == 0; }, 5s));
  EXPECT_TRUE(fs::exists(work_dir_ / "w-test" / "runs" / "j1-a1" / "rank0.stdout.log"));
  // /metrics and /healthz answer.
  const std::string addr = worker_->http_address();
  httplib::Client http("http://" + addr);
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find("caddie_worker_trainer_exits_total{reason=\"completed\"} 1"), std::string::npos)
      << m->body;
  EXPECT_NE(m->body.find("caddie_worker_running_jobs 0"), std::string::npos);
  auto h = http.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST_F(WorkerTest, JobsPageShowsRunningJobsWithLogTails) {
  fake_.queue.push_back(MakeJob("j1", {{"steps", 100000}, {"step_ms", 20}}));
  StartWorker(Options());
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["j1"].size() >= 5; }, 10s));
  httplib::Client http("http://" + worker_->http_address());
  auto r = http.Get("/jobs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  json jobs = json::parse(r->body);
  ASSERT_EQ(jobs.size(), 1u) << r->body;
  EXPECT_EQ(jobs[0]["job_id"], "j1");
  EXPECT_EQ(jobs[0]["attempt"], 1);
  EXPECT_GT(jobs[0]["pgid"].get<int>(), 0);
  EXPECT_NE(jobs[0]["log_tails"]["rank0.stderr.log"].get<std::string>().find("fake-train rank 0 step"),
            std::string::npos);
  EXPECT_NE(jobs[0]["log_tails"]["rank0.stdout.log"].get<std::string>().find("\"event\":\"step\""),
            std::string::npos);
}

TEST_F(WorkerTest, ControllerOutageLosesNothingAndReregisters) {
  fake_.queue.push_back(MakeJob("j1", {{"steps", 20}, {"step_ms", 50}}));
  StartWorker(Options());
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["j1"].size() >= 2; }, 10s));
  {
    absl::MutexLock l(&fake_.mu);
    fake_.down = true;  // the controller goes away mid-job...
  }
  std::this_thread::sleep_for(1500ms);  // ...the job finishes meanwhile
  EXPECT_GT(worker_->spooled(), 0u);
  {
    absl::MutexLock l(&fake_.mu);
    EXPECT_EQ(fake_.completions.count("j1"), 0u);
    fake_.down = false;  // ...and comes back, not knowing the worker
    fake_.reregister = true;
  }
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completions.count("j1") > 0; }, 10s));
  auto types = Types("j1");
  ASSERT_EQ(types.size(), 23u);  // start, 20 steps, val, final: every one, in order
  EXPECT_EQ(types.front(), "start");
  EXPECT_EQ(types.back(), "final");
  EXPECT_TRUE(fake_.WaitFor([&] { return fake_.registrations.size() >= 2; }, 5s));
  absl::MutexLock l(&fake_.mu);
  EXPECT_FALSE(fake_.gaps);
  EXPECT_EQ(fake_.completions["j1"].state(), caddie::v1::JOB_STATE_SUCCEEDED);
}

TEST_F(WorkerTest, SpoolIsReplayedByARestartedWorker) {
  fake_.down = true;
  WorkerOptions o = Options();
  {
    // A first worker process ran a job (the controller went down right after
    // the lease) and stopped with everything still spooled.
    auto w = Worker::Create(o);
    ASSERT_TRUE(w.ok()) << w.status();
    std::vector<caddie::v1::Event> seen;
    JobAssignment a;
    a.job = MakeJob("j9", {{"steps", 3}, {"step_ms", 10}});
    a.fencing_token = 5;
    a.run_dir = (work_dir_ / "run-j9").string();
    caddie::v1::LeaseRef lease;
    lease.set_job_id("j9");
    lease.set_fencing_token(5);
    auto spool = Spool::Open((work_dir_ / "w-test" / "spool").string());
    ASSERT_TRUE(spool.ok());
    JobRunner r(o.runner, a, [&](std::vector<caddie::v1::Event> evs) {
      caddie::v1::ReportEventsRequest req;
      *req.mutable_lease() = lease;
      for (auto& e : evs) *req.add_events() = e;
      ASSERT_TRUE((*spool)->Append(req).write_error.ok());
    });
    JobOutcome out = r.Run();
    caddie::v1::CompleteJobRequest done;
    *done.mutable_lease() = lease;
    done.set_state(out.state);
    ASSERT_TRUE((*spool)->Append(done).write_error.ok());
  }
  {
    absl::MutexLock l(&fake_.mu);
    fake_.down = false;
  }
  StartWorker(o);
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completions.count("j9") > 0; }, 10s));
  EXPECT_EQ(Types("j9"), (std::vector<std::string>{"start", "step", "step", "step", "val", "final"}));
  absl::MutexLock l(&fake_.mu);
  EXPECT_EQ(fake_.completions["j9"].state(), caddie::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(fake_.completions["j9"].worker_id(), "w-test");
}

TEST_F(WorkerTest, CancelFromHeartbeatStopsTheJobWithinTwoHeartbeats) {
  fake_.queue.push_back(MakeJob("j1", {{"steps", 100000}, {"step_ms", 20}, {"ignore_sigterm", true}}, 2));
  WorkerOptions o = Options();
  caddie::v1::GpuInfo g0, g1;
  g0.set_index(0);
  g1.set_index(1);
  o.gpus = {g0, g1};
  StartWorker(o);
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["j1"].size() >= 3; }, 10s));
  const auto t0 = std::chrono::steady_clock::now();
  {
    absl::MutexLock l(&fake_.mu);
    fake_.cancel.insert("j1");
  }
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completions.count("j1") > 0; }, 5s));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 2 * 0.2 + 0.5);  // two heartbeats of 0.2 s, plus delivery
  absl::MutexLock l(&fake_.mu);
  EXPECT_EQ(fake_.completions["j1"].state(), caddie::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(fake_.completions["j1"].exit_reason(), caddie::v1::EXIT_REASON_CANCELLED);
  for (int r = 0; r < 2; ++r) {
    std::ifstream in(work_dir_ / "w-test" / "runs" / "j1-a1" / ("fake_rank" + std::to_string(r) + ".json"));
    json me = json::parse(in);
    EXPECT_NE(kill(me["pid"].get<int>(), 0), 0) << "rank " << r << " survived the cancel";
  }
}

TEST_F(WorkerTest, StaleFencingTokenStopsTheRunWithoutCompletion) {
  fake_.queue.push_back(MakeJob("j1", {{"steps", 100000}, {"step_ms", 20}}));
  fake_.stale.insert("j1");
  StartWorker(Options());
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.tokens.count("j1") > 0; }, 10s));
  EXPECT_TRUE(fake_.WaitFor([&] { return worker_->running_jobs() == 0 && fake_.tokens.count("j1"); }, 5s));
  std::this_thread::sleep_for(300ms);
  absl::MutexLock l(&fake_.mu);
  EXPECT_EQ(fake_.completions.count("j1"), 0u);
  EXPECT_EQ(worker_->spooled(), 0u);
}

TEST_F(WorkerTest, ShutdownReportsRunningJobsAsInfraFailures) {
  fake_.queue.push_back(MakeJob("j1", {{"steps", 100000}, {"step_ms", 20}}));
  StartWorker(Options());
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.events["j1"].size() >= 2; }, 10s));
  StopWorker();
  absl::MutexLock l(&fake_.mu);
  ASSERT_EQ(fake_.completions.count("j1"), 1u);
  EXPECT_EQ(fake_.completions["j1"].state(), caddie::v1::JOB_STATE_FAILED);
  EXPECT_EQ(fake_.completions["j1"].exit_reason(), caddie::v1::EXIT_REASON_INFRA_ERROR);
  EXPECT_TRUE(fake_.completions["j1"].infra_failure());
}

TEST_F(WorkerTest, SecondWorkerWithTheSameIdIsRefused) {
  auto a = Worker::Create(Options());
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Worker::Create(Options());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(b.status().message().find("w-test"), std::string::npos);
  WorkerOptions other = Options();
  other.id = "w-other";
  EXPECT_TRUE(Worker::Create(other).ok());
}

TEST_F(WorkerTest, MissingOptionsAreNamed) {
  WorkerOptions o = Options();
  o.id = "";
  EXPECT_EQ(Worker::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options();
  o.controller = "";
  auto w = Worker::Create(o);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("--controller"), std::string::npos);
}

}  // namespace
}  // namespace caddie::worker
