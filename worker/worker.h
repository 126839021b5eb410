// Worker: the caddie-worker agent. It registers this host's GPUs with the
// controller, heartbeats, leases jobs that fit its free GPUs / CPU slots, runs
// each in a JobRunner on its own thread, and delivers the runners' event
// batches and completions through the Spool — durably first, then sent in
// order, retried with backoff through controller outages, removed on ack.
//
// Threads: Run() drives registration, heartbeats and leasing; one sender
// thread drains the spool; one thread per running job. Work files live under
// <work_dir>/<worker id>/ (runs/, spool/, a lock file), so several workers on
// one host never share a directory; a second worker with the same id is refused.
//
// HTTP (--http-listen): /metrics, /healthz, and /jobs — the running jobs with
// the last lines of each rank's logs, for operators.
//
// Thread-safety: Shutdown() and the accessors may be called from any thread;
// Run() is called once.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "caddie/v1/worker_service.grpc.pb.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "worker/job_runner.h"
#include "worker/spool.h"

namespace caddie::worker {

struct WorkerOptions {
  std::string controller;        // host:port
  std::string token;             // bearer token ("" = none)
  std::string tls_ca_pem;        // CA the controller's TLS certificate is checked against ("" = plaintext)
  std::string work_dir;          // parent of <worker id>/
  std::string id;                // required: stable across restarts (the spool belongs to it)
  std::string hostname;
  std::vector<caddie::v1::GpuInfo> gpus;
  int cpu_slots = 1;             // concurrent CPU (gpus = 0) jobs
  std::map<std::string, std::string> labels;
  double heartbeat_interval_s = 0;  // 0 = what RegisterWorker answers
  double lease_interval_s = 0.5;    // how often to ask for work while capacity is free
  double rpc_timeout_s = 5;
  std::string http_listen;       // /metrics + /healthz ("" = off)
  // Unacknowledged messages the spool may hold in memory while the disk refuses
  // writes; past it, a run that adds more is stopped (FAILED, infra error).
  size_t spool_memory_limit_bytes = size_t{64} << 20;
  RunnerConfig runner;
};

class Worker {
 public:
  // Validates options, takes the lock on <work_dir>/<id>/, opens the spool.
  // InvalidArgument for a missing id/controller/trainer (naming the flag);
  // FailedPrecondition when another live worker holds the same id's directory.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(WorkerOptions options);
  ~Worker();

  // Serves until Shutdown(): registers (retrying), heartbeats, leases, sends.
  // On shutdown, running jobs are killed and reported as infrastructure failures
  // (retryable elsewhere), and the spool gets a few seconds to drain.
  absl::Status Run();
  void Shutdown();

  std::string id() const { return options_.id; }
  // The id the controller knows us by (normally id()).
  std::string worker_id() const;
  std::string http_address() const { return http_ ? http_->address() : ""; }
  const std::string& root_dir() const { return root_; }
  int running_jobs() const;
  size_t spooled() const { return spool_->size(); }

 private:
  struct RunningJob {
    std::unique_ptr<JobRunner> runner;
    std::thread thread;
    std::vector<int> gpus;
    bool done = false;
  };

  Worker(WorkerOptions options, std::string root, int lock_fd, std::unique_ptr<Spool> spool);
  std::unique_ptr<grpc::ClientContext> Context() const;
  absl::Status Register();
  void Heartbeat();
  void MaybeLease();
  void StartJob(const caddie::v1::Job& job, int64_t fencing_token, std::vector<int> gpus);
  // Spools one ReportEvents batch (events and/or log chunks) for the sender.
  void OnEvents(const caddie::v1::LeaseRef& lease, std::vector<caddie::v1::Event> events,
                std::vector<caddie::v1::LogChunk> logs);
  // Reports the outcome (via the spool) and frees the job's GPUs / CPU slot.
  void OnFinished(const caddie::v1::LeaseRef& lease, JobOutcome outcome, const std::vector<int>& gpus,
                  bool cpu_slot);
  // A spool write failed: count, log once per episode, and stop the job's run
  // when `may_stop` and the memory held is past the limit.
  void OnSpoolWriteError(const std::string& job_id, const absl::Status& error, bool may_stop);
  void CancelJob(const std::string& job_id, const std::string& reason, bool early_stopped);
  void AbandonJob(const std::string& job_id);
  void ReapFinished();
  void SenderLoop();
  // Sends one record. True when it is done with (acked, or rejected for good).
  bool Send(const SpoolRecord& record);
  void SetupMetrics();
  // GET /jobs: the running jobs with their run dirs and the tails of their logs.
  std::string JobsJson() const;
  void CountRpc(const char* method, const grpc::Status& s);

  // Constant after construction.
  const WorkerOptions options_;
  const std::string root_;  // <work_dir>/<id>
  const int lock_fd_;
  const std::unique_ptr<Spool> spool_;
  std::unique_ptr<caddie::v1::WorkerService::Stub> stub_;
  metrics::Registry registry_;
  std::unique_ptr<HttpServer> http_;
  metrics::CounterFamily* jobs_finished_ = nullptr;  // by exit reason
  metrics::CounterFamily* rpc_calls_ = nullptr;
  metrics::CounterFamily* rpc_errors_ = nullptr;
  metrics::CounterFamily* spool_write_failures_ = nullptr;
  std::atomic<bool> spool_failing_{false};  // the last spool write failed

  std::atomic<bool> stop_{false};
  std::atomic<bool> sender_stop_{false};  // set once no run can add to the spool
  std::atomic<bool> need_register_{true};
  std::atomic<double> heartbeat_interval_s_{5};

  mutable absl::Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, RunningJob> jobs_ ABSL_GUARDED_BY(mu_);  // by job id
  std::map<std::string, int64_t> fencing_ ABSL_GUARDED_BY(mu_);  // leases we hold, incl. unacked completions
  std::vector<int> free_gpus_ ABSL_GUARDED_BY(mu_);
  int free_cpu_slots_ ABSL_GUARDED_BY(mu_) = 0;
  // Runs stopped because the spool could not hold more: job id → the reason.
  std::map<std::string, std::string> spool_stopped_ ABSL_GUARDED_BY(mu_);

  absl::Mutex send_mu_;
  bool send_wake_ ABSL_GUARDED_BY(send_mu_) = false;
  std::thread sender_;
};

}  // namespace caddie::worker
