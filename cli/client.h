// Client: the CLI's connection to caddie-controller's UserService. Adds the
// bearer token (`authorization: Bearer <token>`) and a deadline to each call, and
// turns gRPC failures into absl::Status whose message says what the user can do:
// an unreachable controller names the address, where that address came from, and
// how to start one; a rejected token says where tokens are configured.
//
// Thread-safe: calls may run concurrently; Cancel() may be called from any thread.
#pragma once

#include <functional>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "caddie/v1/user_service.grpc.pb.h"
#include "cli/config.h"

namespace caddie::cli {

class Client {
 public:
  // `timeout_s` bounds each unary call (the watch stream has no deadline).
  explicit Client(Connection conn, double timeout_s = 10.0);

  const Connection& connection() const { return conn_; }

  absl::StatusOr<v1::SubmitSweepResponse> SubmitSweep(const v1::SubmitSweepRequest& req);
  absl::StatusOr<v1::Sweep> GetSweep(const std::string& sweep_id);
  absl::StatusOr<v1::ListSweepsResponse> ListSweeps(int limit);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& req);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  absl::StatusOr<v1::Job> CancelJob(const std::string& job_id, const std::string& reason);
  absl::StatusOr<v1::Sweep> CancelSweep(const std::string& sweep_id, const std::string& reason);
  absl::StatusOr<v1::LeaderboardResponse> Leaderboard(const std::string& sweep_id, int limit);
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers();
  absl::StatusOr<v1::DrainWorkerResponse> DrainWorker(const v1::DrainWorkerRequest& req);
  absl::StatusOr<v1::UndrainWorkerResponse> UndrainWorker(const v1::UndrainWorkerRequest& req);
  absl::StatusOr<v1::GetJobLogsResponse> GetJobLogs(const v1::GetJobLogsRequest& req);

  // Streams the job's events from after_seq. `on_message` is called for each
  // response; returning false ends the stream early (OK). Returns the stream's
  // final status: OK when the server ended it (the job finished), Cancelled after
  // Cancel().
  absl::Status WatchJob(const std::string& job_id, int64_t after_seq,
                        const std::function<bool(const v1::WatchJobResponse&)>& on_message);

  // Waits until the controller answers (or `timeout_s` passes); Unavailable with
  // the same advice as a failed call.
  absl::Status WaitReady(double timeout_s);

  // Cancels the calls in flight (from a signal-handling thread, for Ctrl-C).
  void Cancel();

 private:
  std::unique_ptr<grpc::ClientContext> NewContext(bool deadline);
  absl::Status Translate(const grpc::Status& s) const;
  template <typename Req, typename Resp, typename Fn>
  absl::StatusOr<Resp> Unary(const Req& req, Fn fn);

  const Connection conn_;
  const double timeout_s_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::UserService::Stub> stub_;

  absl::Mutex mu_;
  std::vector<grpc::ClientContext*> active_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// The advice printed when the controller cannot be reached.
std::string UnreachableAdvice(const Connection& conn);

}  // namespace caddie::cli
