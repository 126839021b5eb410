// caddie-controller as a real process, SIGKILLed between transitions and
// restarted on the same SQLite file: nothing is lost, the queue survives, every
// lease is intact, every job runs exactly once (issues 8 and 15).
#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "tests/controller/harness.h"

namespace caddie {
namespace {

using caddie::testing::Client;
using caddie::testing::ControllerProcess;
using nlohmann::json;

constexpr char kUser[] = "u-token";
constexpr char kWorker[] = "w-token";
constexpr int kGraceSeconds = 2;  // --shutdown-grace

class ControllerRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = caddie::testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    proc_ = std::make_unique<ControllerProcess>(dir_ + "/caddie.db", dir_ + "/controller.log",
                                                std::vector<std::string>{"--shutdown-grace", std::to_string(kGraceSeconds)});
  }
  void TearDown() override {
    proc_.reset();
    if (!std::getenv("CADDIE_KEEP_TEST_DIR")) std::filesystem::remove_all(dir_);
  }
  // (Re)starts the process and points client_ at it.
  void Start() {
    addr_ = proc_->Start(kUser, kWorker);
    ASSERT_FALSE(addr_.empty());
    client_ = std::make_unique<Client>(addr_, kUser, kWorker);
  }
  void KillAndRestart() {
    auto st = proc_->Kill(SIGKILL);
    ASSERT_TRUE(st && st->signaled && st->signal == SIGKILL);
    Start();
  }
  std::string dir_;
  std::string addr_;  // of the last start
  std::unique_ptr<ControllerProcess> proc_;
  std::unique_ptr<Client> client_;
};

// Issue 15 "the whole queue survives a restart" + issue 8 "SIGKILL between two
// transitions loses nothing": 30 queued + 2 running, killed, restarted; all 32
// accounted for, both leases intact, and every job runs exactly once.
TEST_F(ControllerRestartTest, SigkillWith30QueuedAnd2RunningLosesNothingAndEachJobRunsOnce) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<int> seeds(32);
  for (int i = 0; i < 32; ++i) seeds[i] = i;
  auto sub = client_->Submit({{"axes", {{"seed", seeds}}}});
  ASSERT_EQ(sub.jobs_size(), 32);
  const std::string sweep = sub.sweep().id();
  ASSERT_EQ(client_->Register("w-1", 2), "w-1");
  v1::LeaseJobResponse a, b;
  ASSERT_TRUE(client_->Lease("w-1", 2, &a).ok());
  ASSERT_TRUE(client_->Lease("w-1", 1, &b).ok());
  ASSERT_FALSE(a.job().id().empty());
  ASSERT_FALSE(b.job().id().empty());
  v1::ReportEventsResponse r;
  ASSERT_TRUE(client_->Report("w-1", a.job().id(), a.fencing_token(),
                              {{{"event", "start"}}, {{"event", "step"}, {"step", 1}}}, 1, &r)
                  .ok());
  ASSERT_TRUE(client_->Report("w-1", b.job().id(), b.fencing_token(), {{{"event", "start"}}}, 1, &r).ok());

  ASSERT_NO_FATAL_FAILURE(KillAndRestart());

  auto jobs = client_->ListJobs(sweep);
  ASSERT_EQ(jobs.size(), 32u);
  int queued = 0, running = 0;
  for (const auto& j : jobs) {
    if (j.state() == v1::JOB_STATE_QUEUED) ++queued;
    if (j.state() == v1::JOB_STATE_RUNNING) {
      ++running;
      EXPECT_EQ(j.worker_id(), "w-1");
      EXPECT_EQ(j.fencing_token(), j.id() == a.job().id() ? a.fencing_token() : b.fencing_token());
    }
  }
  EXPECT_EQ(queued, 30);
  EXPECT_EQ(running, 2);
  // The worker kept running through the restart: its leases are intact.
  v1::HeartbeatResponse hb;
  ASSERT_TRUE(client_->Heartbeat("w-1", {{a.job().id(), a.fencing_token()}, {b.job().id(), b.fencing_token()}}, &hb)
                  .ok());
  EXPECT_EQ(hb.lost_job_ids_size(), 0);
  EXPECT_FALSE(hb.reregister());
  // Events before the kill were kept: the next seq continues.
  ASSERT_TRUE(client_->Report("w-1", a.job().id(), a.fencing_token(), {{{"event", "step"}, {"step", 2}}}, 3, &r).ok());
  EXPECT_EQ(r.acked_seq(), 3);

  v1::CompleteJobResponse c;
  ASSERT_TRUE(client_->Complete("w-1", a.job().id(), a.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.5, &c)
                  .ok());
  ASSERT_NO_FATAL_FAILURE(KillAndRestart());  // between two completions
  // The completion before the kill stuck; replaying it is idempotent.
  EXPECT_EQ(client_->GetJob(a.job().id()).state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(client_->Complete("w-1", a.job().id(), a.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.5, &c)
                  .ok());
  ASSERT_TRUE(client_->Complete("w-1", b.job().id(), b.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.4, &c)
                  .ok());

  // Drain the queue, killing the controller every 10 jobs.
  std::set<std::string> ran = {a.job().id(), b.job().id()};
  for (int n = 0; n < 30; ++n) {
    if (n % 10 == 5) {
      ASSERT_NO_FATAL_FAILURE(KillAndRestart());
    }
    v1::LeaseJobResponse l;
    ASSERT_TRUE(client_->Lease("w-1", 1, &l).ok());
    ASSERT_FALSE(l.job().id().empty()) << "job " << n;
    EXPECT_TRUE(ran.insert(l.job().id()).second) << l.job().id() << " leased twice";
    ASSERT_TRUE(client_->Complete("w-1", l.job().id(), l.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                  v1::EXIT_REASON_COMPLETED, 1.0 + n * 0.01, &c)
                    .ok());
  }
  v1::LeaseJobResponse none;
  ASSERT_TRUE(client_->Lease("w-1", 2, &none).ok());
  EXPECT_TRUE(none.job().id().empty());
  jobs = client_->ListJobs(sweep);
  ASSERT_EQ(jobs.size(), 32u);
  for (const auto& j : jobs) {
    EXPECT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.id();
    EXPECT_EQ(j.attempt(), 1) << j.id() << " ran more than once";
  }
  EXPECT_EQ(ran.size(), 32u);
}

// SIGTERM with a WatchJob stream open (an in-flight call that never ends by
// itself): the controller refuses new calls at once, gives in-flight ones the
// --shutdown-grace, then gRPC cuts off what is left — the stream ends
// UNAVAILABLE at the grace, the process exits 0 just after, and nothing listens
// on the port. The restarted controller has the lease and the events, and a new
// watch ends OK once the job completes.
TEST_F(ControllerRestartTest, SigtermEndsAnOpenWatchAtTheGraceExits0AndRestartResumes) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto sub = client_->Submit({{"base", json::object()}});
  client_->Register("w-1", 1);
  v1::LeaseJobResponse l;
  ASSERT_TRUE(client_->Lease("w-1", 1, &l).ok());
  v1::ReportEventsResponse r;
  ASSERT_TRUE(client_->Report("w-1", l.job().id(), l.fencing_token(), {{{"event", "start"}}}, 1, &r).ok());

  v1::WatchJobRequest wreq;
  wreq.set_job_id(l.job().id());
  auto wctx = client_->UserCtx();
  auto reader = client_->user()->WatchJob(wctx.get(), wreq);
  v1::WatchJobResponse first;
  ASSERT_TRUE(reader->Read(&first));  // the stream is open and serving
  EXPECT_EQ(first.job().state(), v1::JOB_STATE_RUNNING);
  ASSERT_EQ(first.events_size(), 1);
  grpc::Status watch_status;
  std::chrono::steady_clock::time_point watch_ended;
  std::atomic<bool> watch_done{false};
  std::thread watcher([&] {
    caddie::testing::ReadWatch(reader.get());
    watch_status = reader->Finish();
    watch_ended = std::chrono::steady_clock::now();
    watch_done = true;
  });
  // A call on a new connection: UNAVAILABLE once nothing takes it (refused at
  // once, not a deadline spent waiting for an answer).
  auto new_call = [&] {
    Client fresh(addr_, kUser, kWorker);
    auto ctx = Client::Ctx(kUser);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    v1::ListSweepsRequest req;
    v1::ListSweepsResponse resp;
    return fresh.user()->ListSweeps(ctx.get(), req, &resp).error_code();
  };

  const auto t0 = std::chrono::steady_clock::now();
  proc_->Signal(SIGTERM);
  // It stops accepting at once, while the open stream still has its grace.
  grpc::StatusCode during = grpc::StatusCode::OK;
  while (during != grpc::StatusCode::UNAVAILABLE && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1)) {
    during = new_call();
  }
  EXPECT_EQ(during, grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(proc_->Running());
  EXPECT_FALSE(watch_done.load());

  auto st = proc_->Wait(std::chrono::seconds(kGraceSeconds + 5));
  const auto exited = std::chrono::steady_clock::now();
  watcher.join();
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->ok()) << st->ToString();  // exit 0, not our SIGKILL after grace + 5 s
  EXPECT_LT(exited - t0, std::chrono::seconds(kGraceSeconds + 3));
  // The open stream kept its grace, then gRPC cut it off: UNAVAILABLE
  // ("Cancelling all calls"), on which `caddie watch` resumes (CANCELLED would
  // read there as the user's Ctrl-C).
  EXPECT_EQ(watch_status.error_code(), grpc::StatusCode::UNAVAILABLE) << watch_status.error_message();
  EXPECT_GE(watch_ended - t0, std::chrono::milliseconds(kGraceSeconds * 1000 - 200));
  EXPECT_LE(watch_ended, exited + std::chrono::milliseconds(500));
  // Gone: nothing listens on its address.
  EXPECT_EQ(new_call(), grpc::StatusCode::UNAVAILABLE);

  ASSERT_NO_FATAL_FAILURE(Start());
  auto job = client_->GetJob(l.job().id());
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.fencing_token(), l.fencing_token());
  v1::HeartbeatResponse hb;
  ASSERT_TRUE(client_->Heartbeat("w-1", {{l.job().id(), l.fencing_token()}}, &hb).ok());
  EXPECT_EQ(hb.lost_job_ids_size(), 0);
  EXPECT_FALSE(hb.reregister());
  // A watch on the restarted controller replays the stored event and ends OK
  // with the completion.
  auto wctx2 = client_->UserCtx();
  auto reader2 = client_->user()->WatchJob(wctx2.get(), wreq);
  v1::WatchJobResponse replay;
  ASSERT_TRUE(reader2->Read(&replay));
  ASSERT_EQ(replay.events_size(), 1);
  EXPECT_EQ(replay.events(0).type(), "start");
  v1::CompleteJobResponse c;
  ASSERT_TRUE(client_->Complete("w-1", l.job().id(), l.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                                v1::EXIT_REASON_COMPLETED, 1.2, &c)
                  .ok());
  const caddie::testing::WatchSeen rest = caddie::testing::ReadWatch(reader2.get());
  EXPECT_TRUE(reader2->Finish().ok());
  EXPECT_EQ(rest.last, v1::JOB_STATE_SUCCEEDED);
}

TEST_F(ControllerRestartTest, BadDatabasePathExitsWithCode2AndAMessage) {
  ControllerProcess bad("/nonexistent-dir/sub/caddie.db", dir_ + "/bad.log");
  ::testing::internal::CaptureStderr();
  SpawnOptions o;
  o.argv = {ControllerProcess::Binary(), "--db", "/nonexistent-dir/sub/caddie.db", "--listen", "127.0.0.1:0"};
  o.stdout_path = dir_ + "/bad.log";
  o.stderr_path = dir_ + "/bad.log";
  auto child = Spawn(o);
  ASSERT_TRUE(child.ok());
  int ws = 0;
  waitpid(child->pid, &ws, 0);
  ::testing::internal::GetCapturedStderr();
  auto es = DecodeWaitStatus(ws);
  EXPECT_EQ(es.code, 2) << es.ToString();
  std::ifstream f(dir_ + "/bad.log");
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_NE(ss.str().find("/nonexistent-dir/sub/caddie.db"), std::string::npos) << ss.str();
}

}  // namespace
}  // namespace caddie
