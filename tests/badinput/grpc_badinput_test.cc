// Bad gRPC messages against a real caddie-controller process: oversized,
// undecodable, missing fields, out-of-range enum values, negative budgets, huge
// grids, traversal- and SQL-looking names. Each row must give its exact status
// code (and message), the controller must keep serving, and the stored data
// (sweeps, jobs, events, workers) must be exactly what it was before the row.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>

#include "tests/chaos/harness.h"

namespace caddie::reliability {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kUser[] = "user-token-badinput";
constexpr char kWorker[] = "worker-token-badinput";

// One row of sqlite3 output per table: the whole stored state as text.
std::string DbSnapshot(const fs::path& db) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return "cannot open";
  std::string out;
  for (const char* q : {"SELECT id, jobs_total, cancelled, hex(spec_pb) FROM sweeps ORDER BY seq",
                        "SELECT id, state, attempt, worker_id, fencing_token, exit_reason, message FROM jobs ORDER BY seq",
                        "SELECT job_id, attempt, seq, json FROM events ORDER BY job_id, attempt, seq",
                        "SELECT job_id, attempt FROM results ORDER BY job_id",
                        "SELECT id, drained, infra_failure_streak FROM workers ORDER BY id",
                        "PRAGMA integrity_check"}) {
    sqlite3_exec(
        h, q,
        [](void* o, int n, char** v, char**) {
          auto* s = static_cast<std::string*>(o);
          for (int i = 0; i < n; ++i) *s += std::string(v[i] ? v[i] : "NULL") + "|";
          *s += "\n";
          return 0;
        },
        &out, nullptr);
    out += "--\n";
  }
  sqlite3_close(h);
  return out;
}

class GrpcBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("grpc_badinput_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    ctl_ = std::make_unique<ControllerProcess>(CADDIE_CONTROLLER_BIN, dir_);
    ASSERT_TRUE(ctl_->Start({}, {{"CADDIE_USER_TOKEN", kUser}, {"CADDIE_WORKER_TOKEN", kWorker}}).ok());
    channel_ = Insecure(ctl_->address());
    user_ = v1::UserService::NewStub(channel_);
    worker_ = v1::WorkerService::NewStub(channel_);
    // A baseline: one sweep of two jobs, a worker, one leased job with an event.
    v1::SubmitSweepRequest sub;
    sub.mutable_spec()->set_name("baseline");
    sub.mutable_spec()->set_sweep_json(R"({"base": {"num_layers": 2}, "axes": {"seed": [1, 2]}})");
    v1::SubmitSweepResponse sresp;
    ASSERT_TRUE(user_->SubmitSweep(Ctx(kUser).get(), sub, &sresp).ok());
    sweep_id_ = sresp.sweep().id();
    v1::RegisterWorkerRequest reg;
    reg.mutable_worker()->set_id("w-baseline");
    reg.mutable_worker()->set_cpu_slots(1);
    v1::RegisterWorkerResponse rresp;
    ASSERT_TRUE(worker_->RegisterWorker(Ctx(kWorker).get(), reg, &rresp).ok());
    v1::LeaseJobRequest lease;
    lease.set_worker_id("w-baseline");
    lease.set_cpu_slots_free(1);
    v1::LeaseJobResponse lresp;
    ASSERT_TRUE(worker_->LeaseJob(Ctx(kWorker).get(), lease, &lresp).ok());
    ASSERT_FALSE(lresp.job().id().empty());
    job_id_ = lresp.job().id();
    token_ = lresp.fencing_token();
    v1::ReportEventsRequest ev;
    ev.set_worker_id("w-baseline");
    ev.mutable_lease()->set_job_id(job_id_);
    ev.mutable_lease()->set_fencing_token(token_);
    auto* e = ev.add_events();
    e->set_seq(1);
    e->set_type("start");
    e->set_json(R"({"event":"start","time":1})");
    v1::ReportEventsResponse eresp;
    ASSERT_TRUE(worker_->ReportEvents(Ctx(kWorker).get(), ev, &eresp).ok());
  }

  void TearDown() override {
    if (ctl_) ctl_->Terminate();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Runs `call`, expects `code` and `msg` in its message, and no change to the database.
  void ExpectRejected(const char* what, const std::function<grpc::Status()>& call, grpc::StatusCode code,
                      const std::string& msg) {
    SCOPED_TRACE(what);
    const std::string before = DbSnapshot(ctl_->db());
    const grpc::Status s = call();
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(msg));
    EXPECT_TRUE(ctl_->running()) << "controller died:\n" << ctl_->Log();
    EXPECT_EQ(DbSnapshot(ctl_->db()), before) << "stored data changed";
  }

  grpc::Status Submit(const v1::SweepSpec& spec) {
    v1::SubmitSweepRequest req;
    *req.mutable_spec() = spec;
    v1::SubmitSweepResponse resp;
    return user_->SubmitSweep(Ctx(kUser).get(), req, &resp);
  }
  static v1::SweepSpec Spec(const std::string& sweep_json) {
    v1::SweepSpec s;
    s.set_name("bad");
    s.set_sweep_json(sweep_json);
    return s;
  }
  grpc::Status Complete(v1::JobState state, int64_t token, const std::string& job) {
    v1::CompleteJobRequest req;
    req.set_worker_id("w-baseline");
    req.mutable_lease()->set_job_id(job);
    req.mutable_lease()->set_fencing_token(token);
    req.set_state(state);
    v1::CompleteJobResponse resp;
    return worker_->CompleteJob(Ctx(kWorker).get(), req, &resp);
  }

  fs::path dir_;
  std::unique_ptr<ControllerProcess> ctl_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::UserService::Stub> user_;
  std::unique_ptr<v1::WorkerService::Stub> worker_;
  std::string sweep_id_, job_id_;
  int64_t token_ = 0;
};

TEST_F(GrpcBadInput, SubmitSweepRows) {
  using C = grpc::StatusCode;
  ExpectRejected("oversized message", [&] { return Submit(Spec(std::string(65 << 20, ' ') + "{}")); },
                 C::RESOURCE_EXHAUSTED, "");
  // Under the gRPC message limit, over the sweep_json limit (4 MiB by default).
  ExpectRejected("5 MB of whitespace", [&] { return Submit(Spec(std::string(5'000'000, ' ') + "{}")); },
                 C::INVALID_ARGUMENT, "sweep_json is 5000002 bytes long; the limit is 4194304 bytes");
  ExpectRejected("missing spec", [&] { return Submit(v1::SweepSpec()); }, C::INVALID_ARGUMENT, "is not valid JSON");
  ExpectRejected("sweep_json not JSON", [&] { return Submit(Spec("{base:")); }, C::INVALID_ARGUMENT, "is not valid JSON");
  ExpectRejected("sweep_json an array", [&] { return Submit(Spec("[]")); }, C::INVALID_ARGUMENT,
                 "sweep JSON must be an object");
  ExpectRejected("huge grid", [&] {
    return Submit(Spec(R"({"axes": {"seed": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32],
                                    "loops": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32],
                                    "qat_bits": [0, 2, 3, 4, 5, 6, 7, 8]}})"));
  }, C::INVALID_ARGUMENT, "the grid has 8192 jobs, more than max_jobs = 1000");
  ExpectRejected("max_jobs above ceiling", [&] { return Submit(Spec(R"({"max_jobs": 1000000000})")); },
                 C::INVALID_ARGUMENT, "above the controller's ceiling of 100000");
  ExpectRejected("unknown trainer key", [&] { return Submit(Spec(R"({"base": {"num_layer": 3}})")); },
                 C::INVALID_ARGUMENT, "job 0 ({}): unknown spec key \"num_layer\"");
  ExpectRejected("spec key that would be a shell command", [&] {
    return Submit(Spec(R"j({"base": {"device": "$(touch /tmp/caddie-pwned)"}})j"));
  }, C::INVALID_ARGUMENT, "spec key \"device\" = \"$(touch /tmp/caddie-pwned)\" is not one of");
  ExpectRejected("fake key (test-only) is rejected", [&] { return Submit(Spec(R"({"base": {"fake": {}}})")); },
                 C::INVALID_ARGUMENT, "unknown spec key \"fake\"");
  for (auto [field, set] : std::vector<std::pair<const char*, std::function<void(v1::Budget*)>>>{
           {"train_seconds", [](v1::Budget* b) { b->set_train_seconds(-1); }},
           {"eval_seconds", [](v1::Budget* b) { b->set_eval_seconds(-0.5); }},
           {"artifact_limit_bytes", [](v1::Budget* b) { b->set_artifact_limit_bytes(-16000000); }},
           {"grace_seconds", [](v1::Budget* b) { b->set_grace_seconds(-30); }}}) {
    v1::SweepSpec s = Spec("{}");
    set(s.mutable_budget());
    ExpectRejected(field, [&] { return Submit(s); }, C::INVALID_ARGUMENT, "budget values must be >= 0");
  }
  v1::SweepSpec neg_gpus = Spec("{}");
  neg_gpus.set_gpus(-2);
  ExpectRejected("negative gpus", [&] { return Submit(neg_gpus); }, C::INVALID_ARGUMENT,
                 "gpus must be between 0 and 1024, got -2");
  v1::SweepSpec many_gpus = Spec("{}");
  many_gpus.set_gpus(1 << 30);
  ExpectRejected("absurd gpus", [&] { return Submit(many_gpus); }, C::INVALID_ARGUMENT, "gpus must be between");
  v1::SweepSpec neg_attempts = Spec("{}");
  neg_attempts.set_max_attempts(-1);
  ExpectRejected("negative max_attempts", [&] { return Submit(neg_attempts); }, C::INVALID_ARGUMENT,
                 "max_attempts must be >= 0, got -1");
}

TEST_F(GrpcBadInput, UndecodableBytesAreRejectedAndTheServerSurvives) {
  grpc::GenericStub generic(channel_);
  for (const char* method : {"/caddie.v1.UserService/SubmitSweep", "/caddie.v1.WorkerService/CompleteJob",
                             "/caddie.v1.WorkerService/ReportEvents"}) {
    const std::string garbage = "\x0a\xff\xff\xff\xff\x0f garbage that is not a protobuf";
    grpc::Slice slice(garbage);
    grpc::ByteBuffer req(&slice, 1);
    grpc::ByteBuffer resp;
    const bool worker = std::string(method).find("Worker") != std::string::npos;
    auto ctx = Ctx(worker ? kWorker : kUser);
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(ctx.get(), method, grpc::StubOptions(), &req, &resp, [&](grpc::Status s) {
      std::lock_guard<std::mutex> l(mu);
      status = s;
      done = true;
      cv.notify_all();
    });
    const std::string before = DbSnapshot(ctl_->db());
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return done; })) << method;
    // gRPC answers a request it cannot parse before the handler runs.
    EXPECT_TRUE(status.error_code() == grpc::StatusCode::INTERNAL ||
                status.error_code() == grpc::StatusCode::UNIMPLEMENTED)
        << method << ": " << status.error_code() << " " << status.error_message();
    EXPECT_TRUE(ctl_->running());
    EXPECT_EQ(DbSnapshot(ctl_->db()), before);
  }
  v1::GetSweepRequest g;
  g.set_sweep_id(sweep_id_);
  v1::Sweep sweep;
  EXPECT_TRUE(user_->GetSweep(Ctx(kUser).get(), g, &sweep).ok());
}

TEST_F(GrpcBadInput, WorkerRows) {
  using C = grpc::StatusCode;
  ExpectRejected("complete with a non-terminal state", [&] { return Complete(v1::JOB_STATE_QUEUED, token_, job_id_); },
                 C::INVALID_ARGUMENT, "completion state must be SUCCEEDED, FAILED, OVER_BUDGET or CANCELLED");
  ExpectRejected("complete with an enum value out of range",
                 [&] { return Complete(static_cast<v1::JobState>(99), token_, job_id_); }, C::INVALID_ARGUMENT,
                 "completion state must be");
  ExpectRejected("complete with a stale fencing token",
                 [&] { return Complete(v1::JOB_STATE_SUCCEEDED, token_ + 7, job_id_); }, C::FAILED_PRECONDITION, "");
  ExpectRejected("complete an unknown job", [&] { return Complete(v1::JOB_STATE_SUCCEEDED, 1, "../../etc/passwd"); },
                 C::NOT_FOUND, "../../etc/passwd");
  ExpectRejected("complete with no lease", [&] {
    v1::CompleteJobRequest req;
    req.set_worker_id("w-baseline");
    req.set_state(v1::JOB_STATE_SUCCEEDED);
    v1::CompleteJobResponse resp;
    return worker_->CompleteJob(Ctx(kWorker).get(), req, &resp);
  }, C::NOT_FOUND, "");
  ExpectRejected("events with a stale token", [&] {
    v1::ReportEventsRequest req;
    req.set_worker_id("w-baseline");
    req.mutable_lease()->set_job_id(job_id_);
    req.mutable_lease()->set_fencing_token(token_ - 1);
    req.add_events()->set_seq(2);
    v1::ReportEventsResponse resp;
    return worker_->ReportEvents(Ctx(kWorker).get(), req, &resp);
  }, C::FAILED_PRECONDITION, "");
  ExpectRejected("lease for an unknown worker", [&] {
    v1::LeaseJobRequest req;
    req.set_worker_id("x'; DELETE FROM jobs; --");
    req.set_cpu_slots_free(1);
    v1::LeaseJobResponse resp;
    return worker_->LeaseJob(Ctx(kWorker).get(), req, &resp);
  }, C::NOT_FOUND, "unknown worker 'x'; DELETE FROM jobs; --'");
  ExpectRejected("register with negative cpu slots", [&] {
    v1::RegisterWorkerRequest req;
    req.mutable_worker()->set_id("w-neg");
    req.mutable_worker()->set_cpu_slots(-4);
    v1::RegisterWorkerResponse resp;
    return worker_->RegisterWorker(Ctx(kWorker).get(), req, &resp);
  }, C::INVALID_ARGUMENT, "cpu_slots must be >= 0, got -4");
}

TEST_F(GrpcBadInput, UserLookupsOfHostileIdsAreNotFound) {
  using C = grpc::StatusCode;
  for (const std::string& id : std::vector<std::string>{"../../etc/passwd", "' OR '1'='1", "x\"; DROP TABLE jobs; --", std::string(1000, 'j')}) {
    ExpectRejected("GetJob", [&] {
      v1::GetJobRequest req;
      req.set_job_id(id);
      v1::Job job;
      return user_->GetJob(Ctx(kUser).get(), req, &job);
    }, C::NOT_FOUND, "");
    ExpectRejected("GetSweep", [&] {
      v1::GetSweepRequest req;
      req.set_sweep_id(id);
      v1::Sweep s;
      return user_->GetSweep(Ctx(kUser).get(), req, &s);
    }, C::NOT_FOUND, "");
    ExpectRejected("CancelJob", [&] {
      v1::CancelJobRequest req;
      req.set_job_id(id);
      v1::Job job;
      return user_->CancelJob(Ctx(kUser).get(), req, &job);
    }, C::NOT_FOUND, "");
  }
  // Lists with hostile filters answer (empty or not) without changing anything.
  const std::string before = DbSnapshot(ctl_->db());
  v1::ListJobsRequest lj;
  lj.set_sweep_id("' OR 1=1 --");
  lj.add_states(static_cast<v1::JobState>(42));
  lj.set_limit(-5);
  v1::ListJobsResponse ljr;
  const grpc::Status s = user_->ListJobs(Ctx(kUser).get(), lj, &ljr);
  EXPECT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(ljr.jobs_size(), 0);
  EXPECT_EQ(DbSnapshot(ctl_->db()), before);
}

// DrainWorker / UndrainWorker: each bad request gets its own code and a message
// naming what is wrong, and drains nothing.
TEST_F(GrpcBadInput, DrainAndUndrainRows) {
  using C = grpc::StatusCode;
  auto drain = [&](const std::string& id, const std::string& reason, const std::string& token = kUser) {
    v1::DrainWorkerRequest req;
    req.set_worker_id(id);
    req.set_reason(reason);
    v1::DrainWorkerResponse resp;
    return user_->DrainWorker(Ctx(token).get(), req, &resp);
  };
  auto undrain = [&](const std::string& id, const std::string& token = kUser) {
    v1::UndrainWorkerRequest req;
    req.set_worker_id(id);
    v1::UndrainWorkerResponse resp;
    return user_->UndrainWorker(Ctx(token).get(), req, &resp);
  };
  for (const std::string& id : std::vector<std::string>{"../../etc/passwd", "x'; UPDATE workers SET drained = 1; --"}) {
    ExpectRejected("drain an unknown worker", [&] { return drain(id, "maintenance"); }, C::NOT_FOUND,
                   "unknown worker '" + id + "'");
    ExpectRejected("undrain an unknown worker", [&] { return undrain(id); }, C::NOT_FOUND,
                   "unknown worker '" + id + "'");
  }
  ExpectRejected("drain, empty reason", [&] { return drain("w-baseline", ""); }, C::INVALID_ARGUMENT,
                 "draining worker 'w-baseline' needs a reason");
  ExpectRejected("drain, 513-byte reason", [&] { return drain("w-baseline", std::string(513, 'r')); },
                 C::INVALID_ARGUMENT, "drain reason is 513 bytes long; the limit is 512 bytes");
  ExpectRejected("drain, empty worker id", [&] { return drain("", "maintenance"); }, C::INVALID_ARGUMENT,
                 "worker_id is empty");
  ExpectRejected("drain, 5000-byte worker id", [&] { return drain(std::string(5000, 'w'), "maintenance"); },
                 C::INVALID_ARGUMENT, "worker_id is 5000 bytes long; the limit is 1024 bytes");
  ExpectRejected("drain with the worker token", [&] { return drain("w-baseline", "maintenance", kWorker); },
                 C::PERMISSION_DENIED, "a worker token may not call UserService methods");
  ExpectRejected("undrain with no token", [&] { return undrain("w-baseline", ""); }, C::UNAUTHENTICATED,
                 "missing 'authorization: Bearer <token>' metadata");
  // The good calls: drained, its leased job kept; undrained twice, the second a no-op.
  ASSERT_TRUE(drain("w-baseline", "maintenance").ok());
  const std::string drained = DbSnapshot(ctl_->db());
  EXPECT_THAT(drained, HasSubstr("w-baseline|1|0|"));
  EXPECT_THAT(drained, HasSubstr(job_id_ + "|3|1|w-baseline|"));  // still RUNNING there, attempt 1
  ASSERT_TRUE(undrain("w-baseline").ok());
  ASSERT_TRUE(undrain("w-baseline").ok());
  EXPECT_THAT(DbSnapshot(ctl_->db()), HasSubstr("w-baseline|0|0|"));
}

// Ids and tokens too long for gRPC's 8 KiB metadata limit once echoed: each gets
// its own code naming the field and the limit, not RESOURCE_EXHAUSTED.
TEST_F(GrpcBadInput, OverlongIdsAndTokensAreNamedWithTheirLimit) {
  using C = grpc::StatusCode;
  const std::string huge(100 * 1024, 'j');
  ExpectRejected("GetJob, 100 KB id", [&] {
    v1::GetJobRequest req;
    req.set_job_id(huge);
    v1::Job job;
    return user_->GetJob(Ctx(kUser).get(), req, &job);
  }, C::INVALID_ARGUMENT, "job_id is 102400 bytes long; the limit is 1024 bytes");
  ExpectRejected("GetSweep, 2 KB id", [&] {
    v1::GetSweepRequest req;
    req.set_sweep_id(std::string(2048, 's'));
    v1::Sweep s;
    return user_->GetSweep(Ctx(kUser).get(), req, &s);
  }, C::INVALID_ARGUMENT, "sweep_id is 2048 bytes long; the limit is 1024 bytes");
  ExpectRejected("CancelJob, 100 KB id", [&] {
    v1::CancelJobRequest req;
    req.set_job_id(huge);
    v1::Job job;
    return user_->CancelJob(Ctx(kUser).get(), req, &job);
  }, C::INVALID_ARGUMENT, "job_id is 102400 bytes long");
  ExpectRejected("WatchJob, 100 KB id", [&] {
    v1::WatchJobRequest req;
    req.set_job_id(huge);
    auto ctx = Ctx(kUser);
    auto reader = user_->WatchJob(ctx.get(), req);
    v1::WatchJobResponse msg;
    while (reader->Read(&msg)) {
    }
    return reader->Finish();
  }, C::INVALID_ARGUMENT, "job_id is 102400 bytes long");
  ExpectRejected("LeaseJob, 5000-byte worker id", [&] {
    v1::LeaseJobRequest req;
    req.set_worker_id(std::string(5000, 'w'));
    v1::LeaseJobResponse resp;
    return worker_->LeaseJob(Ctx(kWorker).get(), req, &resp);
  }, C::INVALID_ARGUMENT, "worker_id is 5000 bytes long; the limit is 1024 bytes");
  ExpectRejected("Heartbeat, 100 KB lease job id", [&] {
    v1::HeartbeatRequest req;
    req.set_worker_id("w-baseline");
    req.add_leases()->set_job_id(huge);
    v1::HeartbeatResponse resp;
    return worker_->Heartbeat(Ctx(kWorker).get(), req, &resp);
  }, C::INVALID_ARGUMENT, "leases.job_id is 102400 bytes long");
  ExpectRejected("CompleteJob, 100 KB lease job id", [&] { return Complete(v1::JOB_STATE_SUCCEEDED, 1, huge); },
                 C::INVALID_ARGUMENT, "lease.job_id is 102400 bytes long");
  // At the limit the id is looked up; the NOT_FOUND message quotes only its start.
  ExpectRejected("GetJob, id at the limit", [&] {
    v1::GetJobRequest req;
    req.set_job_id(std::string(1024, 'k'));
    v1::Job job;
    const grpc::Status s = user_->GetJob(Ctx(kUser).get(), req, &job);
    EXPECT_LT(s.error_message().size(), 300u) << s.error_message().size();
    return s;
  }, C::NOT_FOUND, "…(1024 bytes)");
  for (const size_t n : {size_t{8192}, size_t{40000}}) {
    ExpectRejected("8 KB and 40 KB bearer tokens", [&] {
      v1::ListSweepsResponse resp;
      return user_->ListSweeps(Ctx(std::string(n, 't')).get(), v1::ListSweepsRequest(), &resp);
    }, C::UNAUTHENTICATED, "bearer token is " + std::to_string(n) + " bytes long; the limit is 4096 bytes");
  }
}

// Names are data: a worker or sweep named like a traversal or an injection is
// stored and returned verbatim, and the tables stay intact.
TEST_F(GrpcBadInput, HostileNamesAreStoredVerbatim) {
  const std::string wid = "../../w'); DROP TABLE workers; --";
  v1::RegisterWorkerRequest reg;
  reg.mutable_worker()->set_id(wid);
  v1::RegisterWorkerResponse rresp;
  ASSERT_TRUE(worker_->RegisterWorker(Ctx(kWorker).get(), reg, &rresp).ok());
  EXPECT_EQ(rresp.worker_id(), wid);
  v1::SweepSpec spec = Spec(R"({"base": {"num_layers": 2}})");
  spec.set_name("../../sweep\"; DELETE FROM jobs; --");
  v1::SubmitSweepRequest sub;
  *sub.mutable_spec() = spec;
  v1::SubmitSweepResponse sresp;
  ASSERT_TRUE(user_->SubmitSweep(Ctx(kUser).get(), sub, &sresp).ok());
  v1::ListWorkersResponse lw;
  ASSERT_TRUE(user_->ListWorkers(Ctx(kUser).get(), v1::ListWorkersRequest(), &lw).ok());
  bool found = false;
  for (const auto& w : lw.workers()) found |= w.id() == wid;
  EXPECT_TRUE(found);
  v1::GetSweepRequest g;
  g.set_sweep_id(sresp.sweep().id());
  v1::Sweep got;
  ASSERT_TRUE(user_->GetSweep(Ctx(kUser).get(), g, &got).ok());
  EXPECT_EQ(got.spec().name(), spec.name());
  v1::ListJobsRequest all;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(user_->ListJobs(Ctx(kUser).get(), all, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 3);  // 2 baseline + 1
  EXPECT_THAT(DbSnapshot(ctl_->db()), HasSubstr("ok|"));
}

}  // namespace
}  // namespace caddie::reliability
