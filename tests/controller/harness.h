// Test helpers for caddie-controller integration tests: a gRPC client holding
// both stubs with bearer tokens, and a real caddie-controller process.
// Thread-safe: Client may be shared between threads (gRPC stubs are).
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "caddie/v1/user_service.grpc.pb.h"
#include "caddie/v1/worker_service.grpc.pb.h"
#include "common/subprocess.h"

namespace caddie::testing {

class Client {
 public:
  Client(const std::string& address, std::string user_token, std::string worker_token)
      : channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
        user_(v1::UserService::NewStub(channel_)),
        worker_(v1::WorkerService::NewStub(channel_)),
        user_token_(std::move(user_token)),
        worker_token_(std::move(worker_token)) {}

  std::unique_ptr<grpc::ClientContext> UserCtx() const { return Ctx(user_token_); }
  std::unique_ptr<grpc::ClientContext> WorkerCtx() const { return Ctx(worker_token_); }
  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
    auto c = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return c;
  }
  v1::UserService::Stub* user() { return user_.get(); }
  v1::WorkerService::Stub* worker() { return worker_.get(); }

  // dry_run: expanded and validated, nothing stored.
  v1::SubmitSweepResponse Submit(const nlohmann::json& sweep_json, int gpus = 1, int max_attempts = 3,
                                 bool dry_run = false) {
    v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name("test");
    req.mutable_spec()->set_sweep_json(sweep_json.dump());
    req.mutable_spec()->set_gpus(gpus);
    req.mutable_spec()->set_max_attempts(max_attempts);
    req.set_dry_run(dry_run);
    v1::SubmitSweepResponse resp;
    auto st = user_->SubmitSweep(UserCtx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  std::string Register(const std::string& id, int gpus, int cpu_slots = 0) {
    v1::RegisterWorkerRequest req;
    req.mutable_worker()->set_id(id);
    req.mutable_worker()->set_hostname("test-host");
    req.mutable_worker()->set_cpu_slots(cpu_slots);
    for (int i = 0; i < gpus; ++i) req.mutable_worker()->add_gpus()->set_index(i);
    v1::RegisterWorkerResponse resp;
    auto st = worker_->RegisterWorker(WorkerCtx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.worker_id();
  }
  grpc::Status Lease(const std::string& w, int gpus_free, v1::LeaseJobResponse* resp, int cpu_free = 0) {
    v1::LeaseJobRequest req;
    req.set_worker_id(w);
    req.set_gpus_free(gpus_free);
    req.set_cpu_slots_free(cpu_free);
    return worker_->LeaseJob(WorkerCtx().get(), req, resp);
  }
  grpc::Status Heartbeat(const std::string& w, const std::vector<std::pair<std::string, int64_t>>& leases,
                         v1::HeartbeatResponse* resp) {
    v1::HeartbeatRequest req;
    req.set_worker_id(w);
    for (const auto& [id, tok] : leases) {
      auto* l = req.add_leases();
      l->set_job_id(id);
      l->set_fencing_token(tok);
    }
    return worker_->Heartbeat(WorkerCtx().get(), req, resp);
  }
  grpc::Status Report(const std::string& w, const std::string& job_id, int64_t token,
                      const std::vector<nlohmann::json>& lines, int64_t first_seq,
                      v1::ReportEventsResponse* resp) {
    v1::ReportEventsRequest req;
    req.set_worker_id(w);
    req.mutable_lease()->set_job_id(job_id);
    req.mutable_lease()->set_fencing_token(token);
    int64_t seq = first_seq;
    for (const auto& l : lines) {
      auto* e = req.add_events();
      e->set_seq(seq++);
      e->set_type(l["event"].get<std::string>());
      e->set_step(l.value("step", 0));
      e->set_json(l.dump());
    }
    return worker_->ReportEvents(WorkerCtx().get(), req, resp);
  }
  // A finished run's result scoring `bpb` (post-quant), 15 MB of a 16 MB limit.
  static v1::Result RunResult(double bpb) {
    v1::Result r;
    r.set_val_bpb(bpb + 0.02);
    r.set_val_bpb_post_quant(bpb);
    r.set_artifact_bytes(15'000'000);
    r.set_limit_bytes(16'000'000);
    r.set_within_budget(true);
    r.set_steps(200);
    return r;
  }
  // bpb > 0: with RunResult(bpb); else no result.
  grpc::Status Complete(const std::string& w, const std::string& job_id, int64_t token, v1::JobState state,
                        v1::ExitReason reason, double bpb, v1::CompleteJobResponse* resp,
                        grpc::ClientContext* ctx = nullptr) {
    return CompleteWithResult(w, job_id, token, state, reason, bpb > 0 ? RunResult(bpb) : v1::Result(), resp, ctx);
  }
  // `result` is sent unless it is empty (all fields default).
  grpc::Status CompleteWithResult(const std::string& w, const std::string& job_id, int64_t token,
                                  v1::JobState state, v1::ExitReason reason, const v1::Result& result,
                                  v1::CompleteJobResponse* resp, grpc::ClientContext* ctx = nullptr) {
    v1::CompleteJobRequest req;
    req.set_worker_id(w);
    req.mutable_lease()->set_job_id(job_id);
    req.mutable_lease()->set_fencing_token(token);
    req.set_state(state);
    req.set_exit_reason(reason);
    if (result.ByteSizeLong() > 0) *req.mutable_result() = result;
    auto own = WorkerCtx();
    return worker_->CompleteJob(ctx ? ctx : own.get(), req, resp);
  }
  v1::Job GetJob(const std::string& id) {
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    auto st = user_->GetJob(UserCtx().get(), req, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }
  std::vector<v1::Job> ListJobs(const std::string& sweep_id) {
    v1::ListJobsRequest req;
    req.set_sweep_id(sweep_id);
    v1::ListJobsResponse resp;
    auto st = user_->ListJobs(UserCtx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {resp.jobs().begin(), resp.jobs().end()};
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::UserService::Stub> user_;
  std::unique_ptr<v1::WorkerService::Stub> worker_;
  std::string user_token_, worker_token_;
};

// What a WatchJob stream delivered: event types in order and the last job state.
struct WatchSeen {
  std::vector<std::string> types;
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
};
// Reads `reader` to its end; `on_message` (optional) runs after each message
// (e.g. to cancel the call). The caller then calls reader->Finish().
inline WatchSeen ReadWatch(grpc::ClientReaderInterface<v1::WatchJobResponse>* reader,
                           const std::function<void()>& on_message = nullptr) {
  WatchSeen seen;
  v1::WatchJobResponse msg;
  while (reader->Read(&msg)) {
    for (const auto& e : msg.events()) seen.types.push_back(e.type());
    if (msg.has_job()) seen.last = msg.job().state();
    if (on_message) on_message();
  }
  return seen;
}

// A caddie-controller process on loopback (port 0), stdout+stderr in a log file.
class ControllerProcess {
 public:
  ControllerProcess(std::string db, std::string log, std::vector<std::string> extra = {})
      : db_(std::move(db)), log_(std::move(log)), extra_(std::move(extra)) {}
  ~ControllerProcess() { Kill(SIGKILL); }

  static std::string Binary() {
    const char* b = std::getenv("CADDIE_BINARY_DIR");
    return std::string(b ? b : ".") + "/controller/caddie-controller";
  }

  // Starts and waits for the "listening on" line; returns "" on failure.
  std::string Start(const std::string& user_token, const std::string& worker_token) {
    // Each start appends to the log (earlier runs stay readable); the address is
    // read from this start's part only.
    const auto offset = std::filesystem::exists(log_) ? std::filesystem::file_size(log_) : 0;
    SpawnOptions o;
    o.argv = {Binary(), "--db", db_, "--listen", "127.0.0.1:0", "--http-listen", ""};
    for (const auto& e : extra_) o.argv.push_back(e);
    o.env = CurrentEnvironment();
    SetEnv(&o.env, "CADDIE_USER_TOKEN", user_token);
    SetEnv(&o.env, "CADDIE_WORKER_TOKEN", worker_token);
    o.stdout_path = log_;
    o.stderr_path = log_;
    o.kill_with_parent = true;
    auto c = Spawn(o);
    if (!c.ok()) {
      ADD_FAILURE() << c.status();
      return "";
    }
    pid_ = c->pid;
    static const std::regex re("caddie-controller listening on (127\\.0\\.0\\.1:[0-9]+)");
    for (int i = 0; i < 300; ++i) {
      std::ifstream f(log_);
      std::stringstream ss;
      ss << f.rdbuf();
      std::smatch m;
      const std::string all = ss.str();
      const std::string text = all.size() > offset ? all.substr(offset) : std::string();
      if (std::regex_search(text, m, re)) return m[1];
      if (TryReap(pid_)) {
        ADD_FAILURE() << "controller exited early:\n" << text;
        pid_ = -1;
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "controller did not print its address";
    return "";
  }

  // Sends `sig`; the process goes on until it exits (Wait reaps it).
  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Started and not exited yet (does not reap).
  bool Running() const {
    siginfo_t info{};
    return pid_ > 0 && waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == 0;
  }
  // Waits for the process to exit and reaps it; one still running `within`
  // from now gets SIGKILL (and so reads as killed by it). nullopt when none runs.
  std::optional<ExitStatus> Wait(std::chrono::milliseconds within = std::chrono::milliseconds::max()) {
    if (pid_ <= 0) return std::nullopt;
    if (within != std::chrono::milliseconds::max()) {
      const auto deadline = std::chrono::steady_clock::now() + within;
      while (Running() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (Running()) ::kill(pid_, SIGKILL);
    }
    int ws = 0;
    waitpid(pid_, &ws, 0);
    pid_ = -1;
    return DecodeWaitStatus(ws);
  }
  // Signal(sig), then Wait(within): the exit status.
  std::optional<ExitStatus> Kill(int sig, std::chrono::milliseconds within = std::chrono::milliseconds::max()) {
    Signal(sig);
    return Wait(within);
  }

 private:
  std::string db_, log_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
};

inline std::string TempDir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / absl::StrCat("caddie_ctl_", getpid(), "_", name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

}  // namespace caddie::testing
