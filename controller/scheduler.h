// Scheduler: the controller's policy layer between the gRPC service and the
// Store. Owns sweep submission (expansion + spec validation), lease placement
// (priority then FIFO, gang allocation on one worker, CPU slots for gpus = 0),
// lease expiry, fencing-token rejections (counted), cancellation, early stopping,
// bad-node drain, pending reasons, the leaderboard and the controller's metrics.
//
// Knows nothing of gRPC: requests and replies are caddie.v1 messages used as
// values; errors are absl::Status with the Store's codes.
//
// Thread-safe: every method may be called from any thread. Transitions are
// atomic in the Store (which serialises them), so e.g. 200 concurrent leases
// against a 50-job sweep start exactly 50 jobs. The scheduler's own state (sweep
// config cache, watchers, counters) sits under mu_ / watch_mu_.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "caddie/v1/user_service.pb.h"
#include "caddie/v1/worker_service.pb.h"
#include "common/metrics.h"
#include "common/sweep.h"
#include "controller/store.h"

namespace caddie::controller {

// Longest drain reason and requester name DrainWorker accepts (they show in
// `caddie workers` and in logs).
inline constexpr size_t kMaxDrainReasonBytes = 512;
inline constexpr size_t kMaxRequestedByBytes = 256;

struct SchedulerOptions {
  double lease_ttl_seconds = 30;
  double heartbeat_interval_seconds = 5;
  // A worker with no heartbeat for this long is "lost" (not offered work in pending reasons).
  double worker_lost_seconds = 60;
  // A worker with no heartbeat for this long leaves the per-worker series
  // (heartbeat age, GPUs, drained) until it comes back; it still counts as
  // "lost" in caddie_workers. 0 = never.
  double metrics_worker_ttl_seconds = 3600;
  // Consecutive infrastructure failures that drain a worker (0 = never).
  int32_t drain_after = 3;
  // A job retried after an infra failure avoids the failing worker this long.
  double retry_avoid_seconds = 60;
  // Controller-side no-progress backstop: a leased job with no event for this long
  // is killed and failed with no_progress. 0 = per job, train + eval budget + 2×grace
  // + 60 s (beyond the worker's own silence limit, which normally fires first).
  double silence_limit_seconds = 0;
  // Largest SubmitSweep sweep_json, bytes: a sweep is a few KB of JSON; this
  // stops a multi-MB payload from being stored (and re-read on every lookup).
  int64_t max_sweep_json_bytes = 4 << 20;
  // Period of the background tick (lease expiry, pending reasons, gauges). 0 = no thread (tests call Tick()).
  double tick_seconds = 0.25;
  // Clock in unix milliseconds; defaults to the system clock. Tests inject their own.
  std::function<int64_t()> now_ms;
};

// Counters also exported as Prometheus metrics (kept here for tests and logs).
struct SchedulerCounters {
  std::atomic<int64_t> stale_reports_rejected{0};
  std::atomic<int64_t> leases_expired{0};
  std::atomic<int64_t> leases_granted{0};
  std::atomic<int64_t> early_stopped{0};
  std::atomic<int64_t> workers_drained{0};
  std::atomic<int64_t> no_progress_killed{0};
};

class Scheduler {
 public:
  // `store` and `registry` must outlive the scheduler. Starts the tick thread
  // when options.tick_seconds > 0; after a restart it first gives every live
  // lease a full TTL so workers can reconnect before anything expires.
  Scheduler(Store* store, metrics::Registry* registry, SchedulerOptions options);
  ~Scheduler();  // stops the tick thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Stops the tick thread (idempotent). Call before the store goes away.
  void Stop();

  // --- users ---
  // Expands and validates (every job spec through ParseTrainSpec; the message
  // names the job index and the key), then stores the sweep unless dry_run.
  absl::StatusOr<v1::SubmitSweepResponse> SubmitSweep(const v1::SubmitSweepRequest& req);
  absl::StatusOr<v1::Sweep> GetSweep(const std::string& id) { return store_->GetSweep(id); }
  absl::StatusOr<std::vector<v1::Sweep>> ListSweeps(int limit) { return store_->ListSweeps(limit); }
  // Queued jobs carry their pending reason (why they cannot be placed now).
  absl::StatusOr<v1::Job> GetJob(const std::string& id);
  absl::StatusOr<std::vector<v1::Job>> ListJobs(const v1::ListJobsRequest& req);
  absl::StatusOr<v1::Job> CancelJob(const std::string& id, const std::string& reason);
  absl::StatusOr<v1::Sweep> CancelSweep(const std::string& id, const std::string& reason);
  absl::StatusOr<v1::LeaderboardResponse> Leaderboard(const v1::LeaderboardRequest& req);
  absl::StatusOr<std::vector<v1::Worker>> ListWorkers();
  // Drains a worker by hand: no new leases from now on, its running jobs go on;
  // the drain metrics change at once. `peer` (the caller's address) is recorded
  // with req.requested_by as who drained it. Draining a drained worker changes
  // nothing (changed = false). InvalidArgument for an empty or over-long reason
  // or requested_by; NotFound naming an unknown worker.
  absl::StatusOr<v1::DrainWorkerResponse> DrainWorker(const v1::DrainWorkerRequest& req, const std::string& peer);
  // Returns a worker to service (whether drained by hand or by --drain-after)
  // and restarts its infra failure streak; changed = false when it was not
  // drained. NotFound naming an unknown worker.
  absl::StatusOr<v1::UndrainWorkerResponse> UndrainWorker(const v1::UndrainWorkerRequest& req,
                                                          const std::string& peer);
  absl::StatusOr<std::vector<v1::Event>> ListEvents(const std::string& job_id, int64_t after_seq, int limit) {
    return store_->ListEvents(job_id, after_seq, limit);
  }
  // One output of one attempt of the job (GetJobLogsRequest; attempt 0 = the
  // current one): by default (rank 0, stream "" or "stdout") its last
  // `tail_lines` events as text, one JSON line each (rank 0's stdout); a rank's
  // stderr, or stdout of a rank > 0, as AssembleLog (job_logs.h) cuts what the
  // store holds, with dropped_by_retention set when the bound on all log bytes
  // dropped that stream. NotFound for an unknown job; InvalidArgument naming the
  // value for an unknown stream, a rank outside the job's ranks, an attempt
  // outside 0 .. the job's attempt, a negative tail_lines or from_offset, or a
  // from_offset asked of the events. A rank with no output yet: empty text.
  absl::StatusOr<v1::GetJobLogsResponse> JobLogs(const v1::GetJobLogsRequest& req);

  // --- workers ---
  absl::StatusOr<v1::RegisterWorkerResponse> RegisterWorker(const v1::RegisterWorkerRequest& req);
  // NotFound when the worker is unknown (it registers again).
  absl::StatusOr<v1::LeaseJobResponse> LeaseJob(const v1::LeaseJobRequest& req);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req);
  // FailedPrecondition + code stale_fencing_token for a replaced lease (counted).
  // Stores the batch's events, then its log chunks (Store::AppendLogs); chunks
  // the store refuses (InvalidArgument) fail the call, the events still count.
  absl::StatusOr<v1::ReportEventsResponse> ReportEvents(const v1::ReportEventsRequest& req);
  absl::StatusOr<v1::CompleteJobResponse> CompleteJob(const v1::CompleteJobRequest& req);

  // --- housekeeping ---
  // Expires leases, refreshes pending reasons and gauges. Called by the tick thread.
  absl::Status Tick();

  // Calls `fn` (from any thread, no scheduler lock held) whenever the job gets
  // events or changes state. Returns a handle for Unwatch. `fn` may still be
  // running (or start once more) while Unwatch returns: the caller guards its own
  // state (the WatchJob reactor does, with an `alive` flag under its mutex).
  int64_t Watch(const std::string& job_id, std::function<void()> fn);
  void Unwatch(int64_t handle);

  const SchedulerCounters& counters() const { return counters_; }
  const SchedulerOptions& options() const { return options_; }
  int64_t NowMs() const { return options_.now_ms(); }

 private:
  struct Metrics;
  absl::StatusOr<EarlyStoppingConfig> SweepEarlyStopping(const std::string& sweep_id);
  absl::Status ApplyEarlyStopping(const std::string& sweep_id);
  void Notify(const std::string& job_id);
  void CountStale(const absl::Status& s);
  void OnJobFinished(const v1::Job& job);
  void DecorateLocked(v1::Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies the stored drain state of `w` into workers_.
  void RememberDrainLocked(const v1::Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RefreshPendingAndGauges();
  // RefreshPendingAndGauges after a drain or undrain; a failure is logged.
  void RefreshGaugesAfterDrain(const std::string& worker_id);
  int64_t TtlMs() const { return static_cast<int64_t>(options_.lease_ttl_seconds * 1000); }

  // Constant after construction.
  Store* const store_;
  metrics::Registry* const registry_;
  const SchedulerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  SchedulerCounters counters_;

  // Serialises changes of drain state (DrainWorker, UndrainWorker, an automatic
  // drain) across the store write and the copy into workers_, so the copy never
  // goes back to an older state. Taken before mu_ and the store's lock.
  absl::Mutex drain_mu_;

  absl::Mutex mu_;
  std::map<std::string, EarlyStoppingConfig> early_stopping_ ABSL_GUARDED_BY(mu_);

  // What the scheduler remembers of each worker between store writes (placement
  // and pending reasons read it; the store keeps the durable copy).
  struct WorkerState {
    int32_t gpus_total = 0;
    int32_t cpu_slots = 0;
    int32_t gpus_free = 0;
    int32_t cpu_slots_free = 0;
    int64_t last_seen_ms = 0;
    bool drained = false;
    bool drained_by_hand = false;  // drained, and not by --drain-after
    std::string drain_reason;
  };
  std::map<std::string, WorkerState> workers_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> stopped_early_ ABSL_GUARDED_BY(mu_);
  int64_t queue_depth_ ABSL_GUARDED_BY(mu_) = 0;
  // Pending reason per gang size, refreshed each tick. Derived state: kept in
  // memory and put on queued jobs as they are read, never written per row.
  std::map<int32_t, std::string> pending_by_gpus_ ABSL_GUARDED_BY(mu_);

  // Serialises leaderboard gauge refreshes (store query + replace); taken
  // before the store's lock, never with mu_ held.
  absl::Mutex leaderboard_mu_;

  absl::Mutex watch_mu_;
  int64_t next_watch_ ABSL_GUARDED_BY(watch_mu_) = 1;
  std::map<int64_t, std::pair<std::string, std::shared_ptr<std::function<void()>>>> watchers_
      ABSL_GUARDED_BY(watch_mu_);

  absl::Notification stop_;
  std::thread tick_thread_;
};

}  // namespace caddie::controller
