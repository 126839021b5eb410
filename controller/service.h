// gRPC adapters: UserService and WorkerService on the callback API (no thread
// per call; WatchJob is one server-write reactor per stream). They only check
// the bearer token, translate protos to Scheduler calls and absl::Status to
// grpc::Status (with an ErrorDetail in trailing metadata "caddie-error-bin"
// when the error has a machine-readable code, e.g. stale_fencing_token).
//
// Auth: `authorization: Bearer <token>` metadata. A service whose token is empty
// accepts any caller (local development, `caddie up`). Missing or wrong token →
// UNAUTHENTICATED; the other role's valid token → PERMISSION_DENIED.
//
// Thread-safe: stateless apart from the Scheduler, which is thread-safe.
#pragma once

#include <string>

#include "caddie/v1/user_service.grpc.pb.h"
#include "caddie/v1/worker_service.grpc.pb.h"
#include "controller/scheduler.h"

namespace caddie::controller {

struct Tokens {
  std::string user;
  std::string worker;
};

class UserServiceImpl final : public v1::UserService::CallbackService {
 public:
  UserServiceImpl(Scheduler* scheduler, Tokens tokens) : s_(scheduler), tokens_(std::move(tokens)) {}

  grpc::ServerUnaryReactor* SubmitSweep(grpc::CallbackServerContext* ctx, const v1::SubmitSweepRequest* req,
                                        v1::SubmitSweepResponse* resp) override;
  grpc::ServerUnaryReactor* GetSweep(grpc::CallbackServerContext* ctx, const v1::GetSweepRequest* req,
                                     v1::Sweep* resp) override;
  grpc::ServerUnaryReactor* ListSweeps(grpc::CallbackServerContext* ctx, const v1::ListSweepsRequest* req,
                                       v1::ListSweepsResponse* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::Job* resp) override;
  grpc::ServerWriteReactor<v1::WatchJobResponse>* WatchJob(grpc::CallbackServerContext* ctx,
                                                           const v1::WatchJobRequest* req) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* req,
                                      v1::Job* resp) override;
  grpc::ServerUnaryReactor* CancelSweep(grpc::CallbackServerContext* ctx, const v1::CancelSweepRequest* req,
                                        v1::Sweep* resp) override;
  grpc::ServerUnaryReactor* Leaderboard(grpc::CallbackServerContext* ctx, const v1::LeaderboardRequest* req,
                                        v1::LeaderboardResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* GetJobLogs(grpc::CallbackServerContext* ctx, const v1::GetJobLogsRequest* req,
                                       v1::GetJobLogsResponse* resp) override;
  grpc::ServerUnaryReactor* DrainWorker(grpc::CallbackServerContext* ctx, const v1::DrainWorkerRequest* req,
                                        v1::DrainWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* UndrainWorker(grpc::CallbackServerContext* ctx, const v1::UndrainWorkerRequest* req,
                                          v1::UndrainWorkerResponse* resp) override;

 private:
  Scheduler* const s_;
  const Tokens tokens_;
};

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  WorkerServiceImpl(Scheduler* scheduler, Tokens tokens) : s_(scheduler), tokens_(std::move(tokens)) {}

  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* ctx, const v1::RegisterWorkerRequest* req,
                                           v1::RegisterWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* LeaseJob(grpc::CallbackServerContext* ctx, const v1::LeaseJobRequest* req,
                                     v1::LeaseJobResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* ReportEvents(grpc::CallbackServerContext* ctx, const v1::ReportEventsRequest* req,
                                         v1::ReportEventsResponse* resp) override;
  grpc::ServerUnaryReactor* CompleteJob(grpc::CallbackServerContext* ctx, const v1::CompleteJobRequest* req,
                                        v1::CompleteJobResponse* resp) override;

 private:
  Scheduler* const s_;
  const Tokens tokens_;
};

}  // namespace caddie::controller
