// Store: the controller's durable record of sweeps, jobs, events, results and
// workers. Every state transition is one transaction whose WHERE clause checks
// the current state and (for worker reports) the fencing token, so a transition
// either happens exactly once or reports why not; nothing is half applied.
//
// Records are caddie.v1 protobuf messages used as plain value types (no gRPC
// here); the scheduler owns the policy (what to lease, when to retry), the store
// only the atomic transitions and queries.
//
// Error codes: NotFound (unknown id), FailedPrecondition (transition not allowed
// from the current state; a stale fencing token also carries the payload
// kErrorCodePayload = "stale_fencing_token"), InvalidArgument (bad input),
// Internal (SQLite error, message names the statement).
//
// Implementations must be safe for concurrent use from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "caddie/v1/types.pb.h"

namespace caddie::controller {

// Status payload key carrying a machine-readable error code (ErrorDetail.code).
inline constexpr char kErrorCodePayload[] = "caddie-error-code";
inline constexpr char kStaleFencingToken[] = "stale_fencing_token";
// CancelJob of a job that has already ended (FAILED_PRECONDITION).
inline constexpr char kJobFinished[] = "job_finished";

// Worker.drained_by of a drain after --drain-after infra failures in a row.
inline constexpr char kDrainedByController[] = "controller";

// Returns the machine-readable code attached to `s` ("" when none).
std::string ErrorCodeOf(const absl::Status& s);
absl::Status WithErrorCode(absl::Status s, const std::string& code);

// A job to create: spec, axis values and index in its sweep.
struct NewJob {
  v1::JobSpec spec;
  std::string params_json;
  int index = 0;
  int64_t silence_ms = 0;          // no event for this long while leased → no_progress (0 = store default)
};

// A worker row: its registration plus the scheduler's bookkeeping.
struct WorkerRecord {
  v1::Worker worker;              // id, hostname, gpus, labels, version, cpu_slots, drained, drain_reason,
                                  // drained_by, drained_unix_ms, running_job_ids
  int32_t gpus_free = 0;          // as last reported
  int32_t cpu_slots_free = 0;
  int64_t last_heartbeat_ms = 0;
  int32_t infra_failure_streak = 0;
};

// A worker after DrainWorker / UndrainWorker.
struct DrainOutcome {
  WorkerRecord worker;
  bool changed = false;            // false: it was already in the state asked for
};

struct HeartbeatOutcome {
  bool known_worker = true;
  std::vector<std::string> cancel_job_ids;
  std::vector<std::string> cancel_reasons;   // parallel to cancel_job_ids
  std::vector<std::string> lost_job_ids;
  std::vector<std::string> extended_job_ids;
};

struct AppendOutcome {
  int64_t acked_seq = 0;
  bool cancel = false;
  std::string cancel_reason;
  bool became_running = false;
  std::string sweep_id;
  int64_t inserted = 0;            // events actually stored (replays are ignored)
};

struct LogAppendOutcome {
  int64_t inserted_bytes = 0;      // bytes stored (replayed or overlapping bytes are not)
  int64_t dropped_bytes = 0;       // oldest bytes dropped to keep each stream within its cap
  int64_t retention_dropped_bytes = 0;  // bytes of ended jobs' logs dropped by the total bound
};

// What the store holds of one stream of one rank's log in one attempt.
struct LogRead {
  int32_t attempt = 0;             // the attempt read (0: the job has not been leased yet)
  std::vector<v1::LogChunk> chunks;  // those ending after the asked offset, in offset order
  int64_t held_from = 0;           // first offset held (= end_offset when none is)
  int64_t end_offset = 0;          // one past the last byte received (0: none yet)
  bool dropped_by_retention = false;  // every byte went to the bound on all log bytes (TrimLogs)
};

// What one TrimLogs pass dropped.
struct LogTrimOutcome {
  int64_t dropped_bytes = 0;
  int32_t streams = 0;             // streams emptied
  int64_t held_bytes = 0;          // log bytes held after the pass
};

// Completion request as the store sees it.
struct Completion {
  std::string worker_id;
  std::string job_id;
  int64_t fencing_token = 0;
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  v1::ExitReason exit_reason = v1::EXIT_REASON_UNSPECIFIED;
  std::string message;
  v1::Result result;
  bool infra_failure = false;
};

struct CompleteOutcome {
  v1::Job job;
  bool replay = false;             // the same lease had already completed: nothing changed
  bool retried = false;            // infra failure: requeued with attempt+1
  bool worker_drained = false;     // this completion drained the worker
};

// A job handed to a worker, and when it entered the queue (lease latency).
struct LeasedJob {
  v1::Job job;
  int64_t queued_ms = 0;
};

// A job whose lease expired, and what became of it.
struct ExpiredLease {
  std::string job_id;
  std::string worker_id;
  bool requeued = false;           // else failed with LEASE_EXPIRED
};

// One `val` event of a sweep's job (early stopping input).
struct ValPoint {
  std::string job_id;
  int64_t step = 0;
  double val_bpb = 0;
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
};

class Store {
 public:
  virtual ~Store() = default;

  // --- sweeps and jobs ---
  // Creates the sweep and all its jobs (QUEUED) in one transaction; assigns ids.
  virtual absl::StatusOr<std::pair<v1::Sweep, std::vector<v1::Job>>> CreateSweep(
      const v1::SweepSpec& spec, const std::vector<NewJob>& jobs, int64_t now_ms) = 0;
  virtual absl::StatusOr<v1::Sweep> GetSweep(const std::string& sweep_id) = 0;
  virtual absl::StatusOr<std::vector<v1::Sweep>> ListSweeps(int limit) = 0;
  virtual absl::StatusOr<v1::Job> GetJob(const std::string& job_id) = 0;
  // Jobs of a sweep ("" = all), filtered by state (empty = all), creation order.
  virtual absl::StatusOr<std::vector<v1::Job>> ListJobs(const std::string& sweep_id,
                                                         const std::vector<v1::JobState>& states,
                                                         int limit) = 0;
  // Counts of jobs per state.
  virtual absl::StatusOr<std::map<v1::JobState, int64_t>> CountJobsByState() = 0;

  // --- scheduling transitions ---
  // Atomically picks the first QUEUED job (priority desc, then FIFO) that fits
  // (gpus ≤ gpus_free for GPU jobs; a free cpu slot for gpus = 0 jobs), not
  // avoiding this worker, and leases it: state LEASED, attempt+1, fencing token+1,
  // lease expiry = now + ttl. nullopt when nothing fits or the worker is drained.
  virtual absl::StatusOr<std::optional<LeasedJob>> LeaseNext(const std::string& worker_id, int32_t gpus_free,
                                                           int32_t cpu_slots_free, int64_t now_ms,
                                                           int64_t ttl_ms) = 0;
  // Extends the worker's valid leases to now+ttl; reports cancels and lost leases.
  virtual absl::StatusOr<HeartbeatOutcome> Heartbeat(const std::string& worker_id,
                                                      const std::vector<std::pair<std::string, int64_t>>& leases,
                                                      int32_t gpus_free, int64_t now_ms, int64_t ttl_ms) = 0;
  // Stores events of one lease (idempotent on (job, attempt, seq)); LEASED → RUNNING.
  virtual absl::StatusOr<AppendOutcome> AppendEvents(const std::string& worker_id, const std::string& job_id,
                                                      int64_t fencing_token, const std::vector<v1::Event>& events,
                                                      int64_t now_ms) = 0;
  // Stores log chunks of one lease, in one transaction, with the fencing checks
  // of AppendEvents (a replay after the lease completed is OK and stores
  // nothing). Idempotent on (job, attempt, rank, stream, offset): bytes at
  // offsets already received are ignored, so a replayed or overlapping chunk
  // adds nothing. Each stream keeps at most the implementation's cap of bytes,
  // dropping its oldest; then, in the same transaction, TrimLogs' bounded pass
  // runs when all stored log bytes are over the implementation's total bound.
  // InvalidArgument (naming the value) for a stream other
  // than stdout/stderr, rank 0's stdout (the events), a rank outside the job's
  // ranks, a negative offset or an attempt (non-zero) other than the lease's.
  virtual absl::StatusOr<LogAppendOutcome> AppendLogs(const std::string& worker_id, const std::string& job_id,
                                                      int64_t fencing_token,
                                                      const std::vector<v1::LogChunk>& chunks) = 0;
  // The held bytes of `stream` of `rank` in `attempt` of the job (0 = its
  // current attempt) that end after `from_offset`. Nothing received yet (or
  // no such attempt): no chunks, offsets 0. NotFound for an unknown job.
  virtual absl::StatusOr<LogRead> ReadLogs(const std::string& job_id, int32_t attempt, int32_t rank,
                                           const std::string& stream, int64_t from_offset) = 0;
  // The bound on all stored log bytes: while they are over the implementation's
  // total, drops whole streams (every attempt, every rank) of the jobs that
  // ended longest ago first, never of a job still queued, leased or running,
  // never events or results; a dropped stream keeps its end offset and reads
  // as dropped_by_retention. Bounded work per call (a few streams): later calls
  // go on. Under the bound it reads no table.
  virtual absl::StatusOr<LogTrimOutcome> TrimLogs() = 0;
  // Log bytes held now, all jobs and attempts (a counter kept in each transaction).
  virtual int64_t LogBytesHeld() = 0;
  // Ends a lease. Infra failures with attempts left requeue (avoiding this worker
  // for avoid_ms); budget outcomes never do. Counts the worker's infra failure
  // streak; drains it at drain_after (0 = never).
  virtual absl::StatusOr<CompleteOutcome> CompleteJob(const Completion& c, int64_t now_ms, int32_t drain_after,
                                                       int64_t avoid_ms) = 0;
  // Leases with expiry < now: requeued with attempt+1, or FAILED/LEASE_EXPIRED
  // when attempts are exhausted.
  virtual absl::StatusOr<std::vector<ExpiredLease>> ExpireLeases(int64_t now_ms) = 0;
  // Pushes every live lease's expiry to at least `min_expiry_ms` (after a restart,
  // so workers have a TTL to reconnect).
  virtual absl::Status ExtendAllLeases(int64_t min_expiry_ms) = 0;
  // No-progress backstop: LEASED/RUNNING jobs with no event (or lease) for longer
  // than their silence limit get a kill request (cancel with exit reason
  // NO_PROGRESS; the completion then records FAILED / NO_PROGRESS, not retried).
  // Returns the newly flagged job ids.
  virtual absl::StatusOr<std::vector<std::string>> FlagSilentJobs(int64_t now_ms, int64_t default_silence_ms) = 0;
  // QUEUED → CANCELLED now; LEASED/RUNNING: cancel requested (delivered to the
  // worker); terminal: unchanged. `exit_reason` is recorded (CANCELLED or EARLY_STOPPED).
  virtual absl::StatusOr<v1::Job> CancelJob(const std::string& job_id, const std::string& reason,
                                            v1::ExitReason exit_reason, int64_t now_ms) = 0;
  virtual absl::StatusOr<v1::Sweep> CancelSweep(const std::string& sweep_id, const std::string& reason,
                                                int64_t now_ms) = 0;
  // Number of QUEUED jobs per gang size (gpus).
  virtual absl::StatusOr<std::map<int32_t, int64_t>> QueuedByGpus() = 0;

  // --- events and results ---
  virtual absl::StatusOr<std::vector<v1::Event>> ListEvents(const std::string& job_id, int64_t after_seq,
                                                            int limit) = 0;
  // The last `n` events of `attempt` of the job (0 = its latest), oldest first.
  virtual absl::StatusOr<std::vector<v1::Event>> TailEvents(const std::string& job_id, int n, int32_t attempt) = 0;
  virtual absl::StatusOr<std::vector<ValPoint>> SweepValPoints(const std::string& sweep_id) = 0;
  // SUCCEEDED jobs with a within-budget result, best val_bpb_post_quant first.
  virtual absl::StatusOr<std::vector<v1::Job>> BestJobs(const std::string& sweep_id, int limit) = 0;

  // --- workers ---
  // Inserts or refreshes a worker (drain state and streak survive re-registration).
  virtual absl::StatusOr<WorkerRecord> RegisterWorker(const v1::Worker& worker, int64_t now_ms) = 0;
  virtual absl::StatusOr<std::vector<WorkerRecord>> ListWorkers() = 0;
  virtual absl::Status SetWorkerFree(const std::string& worker_id, int32_t gpus_free, int32_t cpu_slots_free,
                                     int64_t now_ms) = 0;
  // Drains the worker by hand, in one transaction: LeaseJob gives it nothing
  // more, its leased jobs go on. Records reason, by and now_ms unless it is
  // drained already (then nothing changes: changed = false). Returns the worker
  // as stored. NotFound for an unknown worker; InvalidArgument for an empty reason.
  virtual absl::StatusOr<DrainOutcome> DrainWorker(const std::string& worker_id, const std::string& reason,
                                                   const std::string& by, int64_t now_ms) = 0;
  // Returns the worker to service and restarts its infra failure streak, in one
  // transaction; changed = false when it was not drained. NotFound for an unknown worker.
  virtual absl::StatusOr<DrainOutcome> UndrainWorker(const std::string& worker_id) = 0;
};

}  // namespace caddie::controller
