// The one place for caddie's Prometheus metric names, types, help texts and
// label names. The controller and the worker register these (and only these)
// with metrics::Registry::Add{Counter,Gauge,Histogram}(const MetricDef&);
// dashboards/ and deploy/prometheus/ query them, and tests/observability/
// checks every query against a live controller + worker through Prometheus.
// Renaming one here means updating dashboards/ and deploy/ in the same commit.
//
// Label values must come from bounded sets: job states (kJobStates), final
// states (kFinalStates), pending reasons (kPendingReasons), gRPC method names,
// worker ids (workers heard from within --metrics-worker-ttl) and job ids (running jobs only: remove a
// job's series when it leaves the running state — see per-job gauges below).
//
// Thread-safety: constants only.
#pragma once

#include <array>
#include <string_view>

#include "common/metrics.h"

namespace caddie::metric_names {

using metrics::MetricDef;
using metrics::MetricType;

// ---------------------------------------------------------------- controller

// Jobs by current state; set every state in kJobStates (0 included) so each
// series always exists.
inline constexpr MetricDef kJobs{"caddie_jobs", MetricType::kGauge,
                                 "Jobs by current state.", "state"};
// Label values of kJobs: the JobState enum, lower case, without the prefix.
inline constexpr std::array<std::string_view, 8> kJobStates = {
    "queued", "leased", "running", "succeeded", "failed", "over_budget", "cancelled",
    "preempted"};

// Jobs that reached a final state; pre-create every kFinalStates value at 0.
inline constexpr MetricDef kJobsFinished{"caddie_jobs_finished_total", MetricType::kCounter,
                                         "Jobs that reached a final state, by state.", "state"};
inline constexpr std::array<std::string_view, 4> kFinalStates = {"succeeded", "failed",
                                                                 "over_budget", "cancelled"};

// Queued jobs waiting for a lease (the scheduler's queue).
inline constexpr MetricDef kQueueDepth{"caddie_queue_depth", MetricType::kGauge,
                                       "Jobs queued and waiting for a lease.", ""};

// Queued jobs that cannot be placed now, by reason; set every kPendingReasons value.
inline constexpr MetricDef kPendingJobs{"caddie_pending_jobs", MetricType::kGauge,
                                        "Queued jobs that cannot be placed now, by reason.",
                                        "reason"};
inline constexpr std::array<std::string_view, 4> kPendingReasons = {
    "no_live_workers",         // no registered, undrained worker with a fresh heartbeat
    "insufficient_free_gpus",  // some worker is large enough but busy
    "no_worker_large_enough",  // the job asks for more GPUs than any worker has
    "retry_backoff",           // waiting before the next attempt
};

// Seconds from a job becoming queued to being leased by a worker.
inline constexpr MetricDef kLeaseLatency{
    "caddie_lease_latency_seconds", MetricType::kHistogram,
    "Seconds from a job being queued to its lease by a worker.", "", &metrics::kDefaultBucketsLong};

// Leases that expired (worker went silent), and late/duplicate reports refused
// because their fencing token belongs to a dead lease.
inline constexpr MetricDef kLeasesExpired{"caddie_leases_expired_total", MetricType::kCounter,
                                          "Leases that expired without a heartbeat.", ""};
inline constexpr MetricDef kStaleReportsRejected{
    "caddie_stale_reports_rejected_total", MetricType::kCounter,
    "Worker reports rejected because their fencing token is stale.", ""};

// gRPC server calls and errors (status != OK), by method name as in the proto
// ("SubmitSweep", "Lease", "Heartbeat", …). On every call do
//   calls.WithLabels({m}).Inc(); auto e = errors.WithLabels({m}); if (!ok) e.Inc();
// so the error series exists (at 0) for every method that was called.
inline constexpr MetricDef kGrpcServerCalls{"caddie_grpc_server_calls_total",
                                            MetricType::kCounter,
                                            "gRPC calls handled, by method.", "method"};
inline constexpr MetricDef kGrpcServerErrors{"caddie_grpc_server_errors_total",
                                             MetricType::kCounter,
                                             "gRPC calls answered with a non-OK status, by method.",
                                             "method"};

// Duration of each SQLite write transaction (BEGIN … COMMIT).
inline constexpr MetricDef kSqliteTransaction{
    "caddie_sqlite_transaction_seconds", MetricType::kHistogram,
    "Duration of SQLite write transactions.", "", &metrics::kLatencyBuckets};

// Workers by state: "live" (fresh heartbeat, not drained), "drained", "lost"
// (heartbeat older than the lease expiry). Set all three.
inline constexpr MetricDef kWorkers{"caddie_workers", MetricType::kGauge,
                                    "Registered workers by state.", "state"};
inline constexpr std::array<std::string_view, 3> kWorkerStates = {"live", "drained", "lost"};

// Per registered worker, as the controller sees it (removed once a worker has
// sent no heartbeat for --metrics-worker-ttl, default 1 h; caddie_workers
// still counts it as lost): seconds since its last heartbeat (set in a collect hook), and its
// GPUs with state "busy", "free", or "lost" (all of a worker past --worker-lost-after:
// none of them can be leased, and what they run is unknown).
inline constexpr MetricDef kWorkerHeartbeatAge{
    "caddie_worker_heartbeat_age_seconds", MetricType::kGauge,
    "Seconds since the worker's last heartbeat.", "worker"};
inline constexpr MetricDef kWorkerGpus{"caddie_worker_gpus", MetricType::kGauge,
                                       "GPUs of each worker: busy, free, or lost (the worker missed its heartbeats).", "worker,state"};
// Per registered worker: 1 while it is drained (no new work is leased to it;
// `caddie workers` shows why), else 0. The CaddieWorkerDrained alert reads it.
inline constexpr MetricDef kWorkerDrained{"caddie_worker_drained", MetricType::kGauge,
                                          "1 while the worker is drained, else 0.", "worker"};
// Per registered worker: 1 while an operator's drain (DrainWorker, `caddie
// workers drain`) holds it, else 0. A drain by hand is maintenance, not a bad
// node: CaddieWorkerDrained leaves these out.
inline constexpr MetricDef kWorkerDrainedByHand{
    "caddie_worker_drained_by_hand", MetricType::kGauge,
    "1 while the worker is drained by an operator (not by --drain-after), else 0.", "worker"};

// Per running job (labels sweep_id, job_id), from the trainer events the
// controller receives. Set on each step/val event; Remove({sweep_id, job_id})
// from all of them when the job leaves "running".
inline constexpr MetricDef kJobStep{"caddie_job_step", MetricType::kGauge,
                                    "Latest training step of a running job.", "sweep_id,job_id"};
inline constexpr MetricDef kJobTrainLoss{"caddie_job_train_loss", MetricType::kGauge,
                                         "Latest training loss of a running job.",
                                         "sweep_id,job_id"};
inline constexpr MetricDef kJobValBpb{"caddie_job_val_bpb", MetricType::kGauge,
                                      "Latest validation bits per byte of a running job.",
                                      "sweep_id,job_id"};
inline constexpr MetricDef kJobTokensPerSecond{"caddie_job_tokens_per_second",
                                               MetricType::kGauge,
                                               "Training throughput of a running job.",
                                               "sweep_id,job_id"};
inline constexpr MetricDef kJobGpuMemory{"caddie_job_gpu_memory_bytes", MetricType::kGauge,
                                         "Device memory in use by a running job (rank 0).",
                                         "sweep_id,job_id"};
inline constexpr MetricDef kJobElapsed{"caddie_job_elapsed_seconds", MetricType::kGauge,
                                       "Training seconds used by a running job.",
                                       "sweep_id,job_id"};
inline constexpr MetricDef kJobBudget{"caddie_job_budget_seconds", MetricType::kGauge,
                                      "Training time budget of a running job.",
                                      "sweep_id,job_id"};

// Leaderboard: the best (lowest post-quantisation val_bpb) within-budget
// results, at most kLeaderboardSize per sweep (drop the rest, and a sweep's
// entries when the sweep is deleted), labels sweep_id, job_id.
inline constexpr int kLeaderboardSize = 20;
inline constexpr MetricDef kLeaderboardValBpb{"caddie_leaderboard_val_bpb", MetricType::kGauge,
                                              "Post-quantisation val_bpb of the best results.",
                                              "sweep_id,job_id"};
inline constexpr MetricDef kLeaderboardArtifactBytes{
    "caddie_leaderboard_artifact_bytes", MetricType::kGauge,
    "Artifact bytes (model + code) of the best results.", "sweep_id,job_id"};

// Bytes of the trainer ranks' log files (stderr; stdout of ranks > 0) the
// controller stores, all jobs and attempts. Bounded by --log-bytes-total
// (plus what jobs not yet ended hold): past it the logs of the jobs that ended
// longest ago are dropped.
inline constexpr MetricDef kLogBytesStored{"caddie_log_bytes_stored", MetricType::kGauge,
                                           "Bytes of trainer ranks' log files stored by the controller.", ""};

// ---------------------------------------------------------------- worker

// This worker's GPUs, "busy" (held by a running job) or "free".
inline constexpr MetricDef kWorkerLocalGpus{"caddie_worker_local_gpus", MetricType::kGauge,
                                            "This worker's GPUs, busy or free.", "state"};
// Trainer jobs this worker is running now.
inline constexpr MetricDef kWorkerRunningJobs{"caddie_worker_running_jobs", MetricType::kGauge,
                                              "Jobs this worker is running.", ""};
// Results kept in the local spool until the controller acknowledges them.
inline constexpr MetricDef kWorkerSpooledResults{
    "caddie_worker_spooled_results", MetricType::kGauge,
    "Results in the local spool not yet acknowledged by the controller.", ""};
// Spool writes that failed (disk full, I/O error): the message was held in
// memory instead (sent all the same, written once the disk takes it).
inline constexpr MetricDef kWorkerSpoolWriteFailures{
    "caddie_worker_spool_write_failures_total", MetricType::kCounter,
    "Spool writes that failed (disk full, I/O error); the message was held in memory.", ""};
// Messages the spool holds in memory only, waiting for the disk to take them.
inline constexpr MetricDef kWorkerSpoolHeld{
    "caddie_worker_spool_held_messages", MetricType::kGauge,
    "Unacknowledged messages held in memory because the spool could not write them.", ""};
// Trainer runs that ended, by exit reason (ExitReason enum, lower case,
// without the prefix: completed, time_budget, terminated, time_limit_killed,
// eval_limit_killed, crashed).
inline constexpr MetricDef kWorkerTrainerExits{"caddie_worker_trainer_exits_total",
                                               MetricType::kCounter,
                                               "Trainer runs that ended, by exit reason.",
                                               "reason"};
// gRPC client calls to the controller and errors, by method (same pattern as
// the server pair above).
inline constexpr MetricDef kGrpcClientCalls{"caddie_grpc_client_calls_total",
                                            MetricType::kCounter,
                                            "gRPC calls made to the controller, by method.",
                                            "method"};
inline constexpr MetricDef kGrpcClientErrors{
    "caddie_grpc_client_errors_total", MetricType::kCounter,
    "gRPC calls to the controller that failed, by method.", "method"};

// Every metric each daemon exports, for tests and for registering in a loop.
inline constexpr const MetricDef* kControllerMetrics[] = {
    &kJobs,           &kJobsFinished,       &kQueueDepth,          &kPendingJobs,
    &kLeaseLatency,   &kLeasesExpired,      &kStaleReportsRejected, &kGrpcServerCalls,
    &kGrpcServerErrors, &kSqliteTransaction, &kWorkers,            &kWorkerHeartbeatAge,
    &kWorkerGpus,     &kWorkerDrained,      &kWorkerDrainedByHand, &kJobStep,            &kJobTrainLoss,        &kJobValBpb,
    &kJobTokensPerSecond, &kJobGpuMemory,   &kJobElapsed,          &kJobBudget,
    &kLeaderboardValBpb, &kLeaderboardArtifactBytes, &kLogBytesStored};
inline constexpr const MetricDef* kWorkerMetrics[] = {
    &kWorkerLocalGpus, &kWorkerRunningJobs, &kWorkerSpooledResults,
    &kWorkerSpoolWriteFailures, &kWorkerSpoolHeld, &kWorkerTrainerExits,
    &kGrpcClientCalls, &kGrpcClientErrors};

}  // namespace caddie::metric_names
