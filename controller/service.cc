#include "controller/service.h"

#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace caddie::controller {

namespace {

enum class Role { kUser, kWorker };

// Every id a request carries, checked before it is used or echoed (a long id
// echoed in a status would exceed the client's metadata limit).
absl::Status CheckIds(std::initializer_list<std::pair<std::string_view, std::string_view>> ids) {
  for (const auto& [field, value] : ids) RETURN_IF_ERROR(ValidateIdLength(field, value));
  return absl::OkStatus();
}

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

grpc::Status CheckAuth(grpc::CallbackServerContext* ctx, const Tokens& tokens, Role role) {
  const std::string& expected = role == Role::kUser ? tokens.user : tokens.worker;
  const std::string& other = role == Role::kUser ? tokens.worker : tokens.user;
  if (expected.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata");
  }
  std::string value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, "Bearer ")) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'");
  }
  const std::string token = value.substr(7);
  if (token.size() > kMaxTokenBytes) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("bearer token is ", token.size(), " bytes long; the limit is ", kMaxTokenBytes,
                                     " bytes"));
  }
  if (ConstantTimeEquals(token, expected)) return grpc::Status::OK;
  if (!other.empty() && ConstantTimeEquals(token, other)) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        role == Role::kUser ? "a worker token may not call UserService methods"
                                            : "a user token may not call WorkerService methods");
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
}

grpc::Status ToGrpc(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  const std::string code = ErrorCodeOf(s);
  if (!code.empty()) {
    v1::ErrorDetail d;
    d.set_code(code);
    d.set_message(Truncated(std::string(s.message()), kMaxStatusMessageBytes));
    ctx->AddTrailingMetadata("caddie-error-bin", d.SerializeAsString());
  }
  return ToGrpcStatus(s);
}

// Runs `fn` for an authorised caller and finishes the call with its status.
grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, const Tokens& tokens, Role role,
                                const std::function<absl::Status()>& fn) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  grpc::Status auth = CheckAuth(ctx, tokens, role);
  if (!auth.ok()) {
    r->Finish(auth);
    return r;
  }
  r->Finish(ToGrpc(ctx, fn()));
  return r;
}

// A UserService call about one worker (req.worker_id()): checks the id, then
// answers with what `call` returns.
template <typename Req, typename Resp, typename Call>
grpc::ServerUnaryReactor* OnWorker(grpc::CallbackServerContext* ctx, const Tokens& tokens, const Req& req,
                                   Resp* resp, Call call) {
  return Unary(ctx, tokens, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"worker_id", req.worker_id()}}));
    absl::StatusOr<Resp> r = call();
    if (r.ok()) *resp = *std::move(r);
    return r.status();
  });
}

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_OVER_BUDGET ||
         s == v1::JOB_STATE_CANCELLED;
}

// One WatchJob stream: writes stored events after `after_seq`, then live ones as
// the scheduler reports them, and the job whenever its state changes; finishes
// once the job is terminal and every event is written. At most one write in
// flight; a poke during a write marks the state dirty and is handled on
// OnWriteDone. All members are guarded by state_->mu; `alive` turns false in
// OnDone so a late scheduler callback touches nothing.
class WatchReactor : public grpc::ServerWriteReactor<v1::WatchJobResponse> {
 public:
  WatchReactor(Scheduler* s, std::string job_id, int64_t after_seq)
      : s_(s), job_id_(std::move(job_id)), last_seq_(after_seq), state_(std::make_shared<Shared>()) {
    state_->self = this;
    std::shared_ptr<Shared> st = state_;
    handle_ = s_->Watch(job_id_, [st] {
      absl::MutexLock l(&st->mu);
      if (st->self != nullptr) st->self->PumpLocked();
    });
    absl::MutexLock l(&state_->mu);
    PumpLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&state_->mu);
    writing_ = false;
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "watch stream closed"));
      return;
    }
    PumpLocked();
  }
  void OnCancel() override {
    absl::MutexLock l(&state_->mu);
    FinishOnce(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    {
      absl::MutexLock l(&state_->mu);
      state_->self = nullptr;
    }
    s_->Unwatch(handle_);
    delete this;
  }

 private:
  struct Shared {
    absl::Mutex mu;
    WatchReactor* self = nullptr;
  };

  void FinishOnce(const grpc::Status& st) {
    if (finished_) return;
    finished_ = true;
    Finish(st);
  }

  void PumpLocked() {
    if (finished_ || writing_) return;
    auto job = s_->GetJob(job_id_);
    if (!job.ok()) {
      FinishOnce(ToGrpcStatus(job.status()));
      return;
    }
    // A new attempt restarts seq at 1.
    if (job->attempt() != attempt_) {
      if (attempt_ != 0) last_seq_ = 0;
      attempt_ = job->attempt();
    }
    auto events = s_->ListEvents(job_id_, last_seq_, 256);
    if (!events.ok()) {
      FinishOnce(ToGrpcStatus(events.status()));
      return;
    }
    const bool changed = !sent_job_ || job->state() != last_state_ || job->attempt() != last_attempt_;
    if (events->empty() && !changed) {
      if (Terminal(job->state())) FinishOnce(grpc::Status::OK);
      return;
    }
    resp_.Clear();
    for (auto& e : *events) {
      last_seq_ = e.seq();
      *resp_.add_events() = std::move(e);
    }
    if (changed) {
      sent_job_ = true;
      last_state_ = job->state();
      last_attempt_ = job->attempt();
      *resp_.mutable_job() = *job;
    }
    writing_ = true;
    StartWrite(&resp_);
  }

  Scheduler* const s_;
  const std::string job_id_;
  int64_t last_seq_;
  int32_t attempt_ = 0;
  std::shared_ptr<Shared> state_;
  int64_t handle_ = 0;
  bool writing_ = false;
  bool finished_ = false;
  bool sent_job_ = false;
  v1::JobState last_state_ = v1::JOB_STATE_UNSPECIFIED;
  int32_t last_attempt_ = 0;
  v1::WatchJobResponse resp_;
};

class FailedWriter : public grpc::ServerWriteReactor<v1::WatchJobResponse> {
 public:
  explicit FailedWriter(const grpc::Status& s) { Finish(s); }
  void OnDone() override { delete this; }
};

}  // namespace

// ---------------------------------------------------------------- UserService

grpc::ServerUnaryReactor* UserServiceImpl::SubmitSweep(grpc::CallbackServerContext* ctx,
                                                       const v1::SubmitSweepRequest* req,
                                                       v1::SubmitSweepResponse* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(*resp, s_->SubmitSweep(*req));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::GetSweep(grpc::CallbackServerContext* ctx, const v1::GetSweepRequest* req,
                                                    v1::Sweep* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"sweep_id", req->sweep_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->GetSweep(req->sweep_id()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::ListSweeps(grpc::CallbackServerContext* ctx,
                                                      const v1::ListSweepsRequest* req,
                                                      v1::ListSweepsResponse* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(auto sweeps, s_->ListSweeps(req->limit()));
    for (auto& s : sweeps) *resp->add_sweeps() = std::move(s);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                                    v1::ListJobsResponse* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"sweep_id", req->sweep_id()}}));
    ASSIGN_OR_RETURN(auto jobs, s_->ListJobs(*req));
    for (auto& j : jobs) *resp->add_jobs() = std::move(j);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                                  v1::Job* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"job_id", req->job_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->GetJob(req->job_id()));
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<v1::WatchJobResponse>* UserServiceImpl::WatchJob(grpc::CallbackServerContext* ctx,
                                                                          const v1::WatchJobRequest* req) {
  grpc::Status auth = CheckAuth(ctx, tokens_, Role::kUser);
  if (!auth.ok()) return new FailedWriter(auth);
  if (absl::Status ids = CheckIds({{"job_id", req->job_id()}}); !ids.ok()) return new FailedWriter(ToGrpcStatus(ids));
  auto job = s_->GetJob(req->job_id());
  if (!job.ok()) return new FailedWriter(ToGrpcStatus(job.status()));
  return new WatchReactor(s_, req->job_id(), req->after_seq());
}

grpc::ServerUnaryReactor* UserServiceImpl::CancelJob(grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* req,
                                                     v1::Job* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"job_id", req->job_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->CancelJob(req->job_id(), req->reason()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::CancelSweep(grpc::CallbackServerContext* ctx,
                                                       const v1::CancelSweepRequest* req, v1::Sweep* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"sweep_id", req->sweep_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->CancelSweep(req->sweep_id(), req->reason()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::Leaderboard(grpc::CallbackServerContext* ctx,
                                                       const v1::LeaderboardRequest* req,
                                                       v1::LeaderboardResponse* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"sweep_id", req->sweep_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->Leaderboard(*req));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::ListWorkers(grpc::CallbackServerContext* ctx,
                                                       const v1::ListWorkersRequest*,
                                                       v1::ListWorkersResponse* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(auto ws, s_->ListWorkers());
    for (auto& w : ws) *resp->add_workers() = std::move(w);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::GetJobLogs(grpc::CallbackServerContext* ctx,
                                                      const v1::GetJobLogsRequest* req,
                                                      v1::GetJobLogsResponse* resp) {
  return Unary(ctx, tokens_, Role::kUser, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"job_id", req->job_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->JobLogs(*req));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::DrainWorker(grpc::CallbackServerContext* ctx,
                                                       const v1::DrainWorkerRequest* req,
                                                       v1::DrainWorkerResponse* resp) {
  return OnWorker(ctx, tokens_, *req, resp, [&] { return s_->DrainWorker(*req, ctx->peer()); });
}

grpc::ServerUnaryReactor* UserServiceImpl::UndrainWorker(grpc::CallbackServerContext* ctx,
                                                         const v1::UndrainWorkerRequest* req,
                                                         v1::UndrainWorkerResponse* resp) {
  return OnWorker(ctx, tokens_, *req, resp, [&] { return s_->UndrainWorker(*req, ctx->peer()); });
}

// ---------------------------------------------------------------- WorkerService

grpc::ServerUnaryReactor* WorkerServiceImpl::RegisterWorker(grpc::CallbackServerContext* ctx,
                                                            const v1::RegisterWorkerRequest* req,
                                                            v1::RegisterWorkerResponse* resp) {
  return Unary(ctx, tokens_, Role::kWorker, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"worker.id", req->worker().id()}, {"worker.hostname", req->worker().hostname()}}));
    ASSIGN_OR_RETURN(*resp, s_->RegisterWorker(*req));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::LeaseJob(grpc::CallbackServerContext* ctx, const v1::LeaseJobRequest* req,
                                                      v1::LeaseJobResponse* resp) {
  return Unary(ctx, tokens_, Role::kWorker, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"worker_id", req->worker_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->LeaseJob(*req));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* ctx,
                                                       const v1::HeartbeatRequest* req, v1::HeartbeatResponse* resp) {
  return Unary(ctx, tokens_, Role::kWorker, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"worker_id", req->worker_id()}}));
    for (const auto& l : req->leases()) RETURN_IF_ERROR(CheckIds({{"leases.job_id", l.job_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->Heartbeat(*req));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ReportEvents(grpc::CallbackServerContext* ctx,
                                                          const v1::ReportEventsRequest* req,
                                                          v1::ReportEventsResponse* resp) {
  return Unary(ctx, tokens_, Role::kWorker, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"worker_id", req->worker_id()}, {"lease.job_id", req->lease().job_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->ReportEvents(*req));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CompleteJob(grpc::CallbackServerContext* ctx,
                                                         const v1::CompleteJobRequest* req,
                                                         v1::CompleteJobResponse* resp) {
  return Unary(ctx, tokens_, Role::kWorker, [&]() -> absl::Status {
    RETURN_IF_ERROR(CheckIds({{"worker_id", req->worker_id()}, {"lease.job_id", req->lease().job_id()}}));
    ASSIGN_OR_RETURN(*resp, s_->CompleteJob(*req));
    return absl::OkStatus();
  });
}

}  // namespace caddie::controller
