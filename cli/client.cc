#include "cli/client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/grpc_channel.h"
#include "common/grpc_status.h"

namespace caddie::cli {

std::string UnreachableAdvice(const Connection& conn) {
  return absl::StrCat(
      "cannot reach the caddie controller at ", conn.addr, " (address from ", conn.addr_source,
      ").\n  Start everything locally with `caddie up` (controller, worker and a demo sweep),\n"
      "  or run `caddie-controller --listen ", conn.addr,
      " --db caddie.db`,\n  or point --addr / CADDIE_ADDR / `addr:` in ~/.config/caddie/config.yaml "
      "at a running controller.\n  TLS: ",
      TransportAdvice(conn.addr, !conn.tls_ca_pem.empty(), conn.tls_ca_source,
                      "--tls-ca, CADDIE_TLS_CA or `tls_ca:` in the config file"),
      ".");
}

Client::Client(Connection conn, double timeout_s) : conn_(std::move(conn)), timeout_s_(timeout_s) {
  grpc::ChannelArguments args;
  // Fail fast on a dead address instead of retrying with backoff for the whole deadline.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(conn_.addr, ClientChannelCredentials(conn_.tls_ca_pem), args);
  stub_ = v1::UserService::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Client::NewContext(bool deadline) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (deadline) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(timeout_s_ * 1000)));
  }
  if (!conn_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + conn_.token);
  absl::MutexLock l(&mu_);
  if (cancelled_) ctx->TryCancel();
  active_.push_back(ctx.get());
  return ctx;
}

absl::Status Client::Translate(const grpc::Status& s) const {
  if (s.ok()) return absl::OkStatus();
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError(absl::StrCat(UnreachableAdvice(conn_), "\n  (", s.error_message(), ")"));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(absl::StrCat(
          "the caddie controller at ", conn_.addr, " (address from ", conn_.addr_source,
          ") did not answer within ", timeout_s_, " s; is it overloaded, or is this the right address?"));
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return FromGrpcStatus(grpc::Status(
          s.error_code(),
          absl::StrCat("the controller at ", conn_.addr, " rejected the request: ", s.error_message(),
                       conn_.token.empty()
                           ? " (no token was sent: set --token, CADDIE_TOKEN or `token:` in the config file)"
                           : absl::StrCat(" (token from ", conn_.token_source, ")"))));
    default:
      return FromGrpcStatus(s);
  }
}

template <typename Req, typename Resp, typename Fn>
absl::StatusOr<Resp> Client::Unary(const Req& req, Fn fn) {
  auto ctx = NewContext(true);
  Resp resp;
  grpc::Status s = fn(ctx.get(), req, &resp);
  {
    absl::MutexLock l(&mu_);
    std::erase(active_, ctx.get());
  }
  if (!s.ok()) return Translate(s);
  return resp;
}

#define CADDIE_UNARY(Method, Req, Resp, req)                                                   \
  Unary<Req, Resp>(req, [this](grpc::ClientContext* c, const Req& r, Resp* out) {              \
    return stub_->Method(c, r, out);                                                           \
  })

absl::StatusOr<v1::SubmitSweepResponse> Client::SubmitSweep(const v1::SubmitSweepRequest& req) {
  return CADDIE_UNARY(SubmitSweep, v1::SubmitSweepRequest, v1::SubmitSweepResponse, req);
}

absl::StatusOr<v1::Sweep> Client::GetSweep(const std::string& sweep_id) {
  v1::GetSweepRequest req;
  req.set_sweep_id(sweep_id);
  return CADDIE_UNARY(GetSweep, v1::GetSweepRequest, v1::Sweep, req);
}

absl::StatusOr<v1::ListSweepsResponse> Client::ListSweeps(int limit) {
  v1::ListSweepsRequest req;
  req.set_limit(limit);
  return CADDIE_UNARY(ListSweeps, v1::ListSweepsRequest, v1::ListSweepsResponse, req);
}

absl::StatusOr<v1::ListJobsResponse> Client::ListJobs(const v1::ListJobsRequest& req) {
  return CADDIE_UNARY(ListJobs, v1::ListJobsRequest, v1::ListJobsResponse, req);
}

absl::StatusOr<v1::Job> Client::GetJob(const std::string& job_id) {
  v1::GetJobRequest req;
  req.set_job_id(job_id);
  return CADDIE_UNARY(GetJob, v1::GetJobRequest, v1::Job, req);
}

absl::StatusOr<v1::Job> Client::CancelJob(const std::string& job_id, const std::string& reason) {
  v1::CancelJobRequest req;
  req.set_job_id(job_id);
  req.set_reason(reason);
  return CADDIE_UNARY(CancelJob, v1::CancelJobRequest, v1::Job, req);
}

absl::StatusOr<v1::Sweep> Client::CancelSweep(const std::string& sweep_id, const std::string& reason) {
  v1::CancelSweepRequest req;
  req.set_sweep_id(sweep_id);
  req.set_reason(reason);
  return CADDIE_UNARY(CancelSweep, v1::CancelSweepRequest, v1::Sweep, req);
}

absl::StatusOr<v1::LeaderboardResponse> Client::Leaderboard(const std::string& sweep_id, int limit) {
  v1::LeaderboardRequest req;
  req.set_sweep_id(sweep_id);
  req.set_limit(limit);
  return CADDIE_UNARY(Leaderboard, v1::LeaderboardRequest, v1::LeaderboardResponse, req);
}

absl::StatusOr<v1::ListWorkersResponse> Client::ListWorkers() {
  v1::ListWorkersRequest req;
  return CADDIE_UNARY(ListWorkers, v1::ListWorkersRequest, v1::ListWorkersResponse, req);
}

absl::StatusOr<v1::DrainWorkerResponse> Client::DrainWorker(const v1::DrainWorkerRequest& req) {
  return CADDIE_UNARY(DrainWorker, v1::DrainWorkerRequest, v1::DrainWorkerResponse, req);
}

absl::StatusOr<v1::UndrainWorkerResponse> Client::UndrainWorker(const v1::UndrainWorkerRequest& req) {
  return CADDIE_UNARY(UndrainWorker, v1::UndrainWorkerRequest, v1::UndrainWorkerResponse, req);
}

absl::StatusOr<v1::GetJobLogsResponse> Client::GetJobLogs(const v1::GetJobLogsRequest& req) {
  return CADDIE_UNARY(GetJobLogs, v1::GetJobLogsRequest, v1::GetJobLogsResponse, req);
}

#undef CADDIE_UNARY

absl::Status Client::WatchJob(const std::string& job_id, int64_t after_seq,
                              const std::function<bool(const v1::WatchJobResponse&)>& on_message) {
  auto ctx = NewContext(false);
  v1::WatchJobRequest req;
  req.set_job_id(job_id);
  req.set_after_seq(after_seq);
  auto reader = stub_->WatchJob(ctx.get(), req);
  v1::WatchJobResponse resp;
  bool stopped_early = false;
  while (reader->Read(&resp)) {
    if (!on_message(resp)) {
      stopped_early = true;
      ctx->TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  bool cancelled;
  {
    absl::MutexLock l(&mu_);
    std::erase(active_, ctx.get());
    cancelled = cancelled_;
  }
  if (stopped_early) return absl::OkStatus();
  if (cancelled) return absl::CancelledError("interrupted");
  return Translate(s);
}

absl::Status Client::WaitReady(double timeout_s) {
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  while (true) {
    if (channel_->WaitForConnected(std::min(deadline, std::chrono::system_clock::now() +
                                                          std::chrono::milliseconds(250)))) {
      return absl::OkStatus();
    }
    {
      absl::MutexLock l(&mu_);
      if (cancelled_) return absl::CancelledError("interrupted");
    }
    if (std::chrono::system_clock::now() >= deadline) {
      return absl::UnavailableError(UnreachableAdvice(conn_));
    }
  }
}

void Client::Cancel() {
  absl::MutexLock l(&mu_);
  cancelled_ = true;
  for (grpc::ClientContext* c : active_) c->TryCancel();
}

}  // namespace caddie::cli
