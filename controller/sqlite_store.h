// SqliteStore: the Store on one SQLite file (WAL mode, versioned migrations).
//
// One connection, used under one mutex, for reads and writes. Why: SQLite admits
// one writer at a time whatever we do, every scheduler operation is a short
// write transaction, and the scheduler's transitions must be serialised anyway
// (exact sweep sizes under concurrent leases). A pool would only add
// SQLITE_BUSY retries between our own connections; a single connection with
// prepared statements cached per SQL text keeps each transaction in the tens of
// microseconds. Other processes (sqlite3 CLI, backups) may still read the file
// concurrently thanks to WAL; the busy timeout covers their locks.
//
// Durability: synchronous=FULL by default (a committed transition survives power
// loss); `synchronous_normal` trades that for speed (still crash-safe for a
// killed process).
//
// Thread-safe: every public method takes mu_.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "controller/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace caddie::controller {

class SqliteStore final : public Store {
 public:
  struct Options {
    bool synchronous_normal = false;
    int busy_timeout_ms = 5000;
    // Bytes kept of each rank's log stream (AppendLogs drops the oldest past it); <= 0: no cap.
    int64_t log_bytes_per_stream = int64_t{1} << 20;
    // Bound on all stored log bytes (TrimLogs drops ended jobs' logs, oldest
    // ended first, past it); <= 0: no bound.
    int64_t log_bytes_total = int64_t{2} << 30;
    // Called with each write transaction's duration in seconds (metrics).
    std::function<void(double)> on_transaction;
  };

  // Opens (creating if needed) the database at `path`, puts it in WAL mode and
  // applies migrations. InvalidArgument/Internal naming the path when it cannot
  // be opened, or when SQLite does not switch it to WAL (e.g. ":memory:").
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path, Options options);
  ~SqliteStore() override;

  // Schema version after migrations.
  int schema_version() const { return schema_version_; }
  // Open checks the counter of held log bytes against the sum over every
  // stream; when they differed (the file was edited by hand, or restored in
  // part) it set the counters right and this is the value it found. nullopt: it was right.
  std::optional<int64_t> repaired_log_bytes_counter() const { return repaired_log_bytes_counter_; }

  absl::StatusOr<std::pair<v1::Sweep, std::vector<v1::Job>>> CreateSweep(const v1::SweepSpec& spec,
                                                                         const std::vector<NewJob>& jobs,
                                                                         int64_t now_ms) override;
  absl::StatusOr<v1::Sweep> GetSweep(const std::string& sweep_id) override;
  absl::StatusOr<std::vector<v1::Sweep>> ListSweeps(int limit) override;
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id) override;
  absl::StatusOr<std::vector<v1::Job>> ListJobs(const std::string& sweep_id,
                                                const std::vector<v1::JobState>& states, int limit) override;
  absl::StatusOr<std::map<v1::JobState, int64_t>> CountJobsByState() override;
  absl::StatusOr<std::optional<LeasedJob>> LeaseNext(const std::string& worker_id, int32_t gpus_free,
                                                   int32_t cpu_slots_free, int64_t now_ms, int64_t ttl_ms) override;
  absl::StatusOr<HeartbeatOutcome> Heartbeat(const std::string& worker_id,
                                             const std::vector<std::pair<std::string, int64_t>>& leases,
                                             int32_t gpus_free, int64_t now_ms, int64_t ttl_ms) override;
  absl::StatusOr<AppendOutcome> AppendEvents(const std::string& worker_id, const std::string& job_id,
                                             int64_t fencing_token, const std::vector<v1::Event>& events,
                                             int64_t now_ms) override;
  absl::StatusOr<LogAppendOutcome> AppendLogs(const std::string& worker_id, const std::string& job_id,
                                              int64_t fencing_token, const std::vector<v1::LogChunk>& chunks) override;
  absl::StatusOr<LogRead> ReadLogs(const std::string& job_id, int32_t attempt, int32_t rank,
                                   const std::string& stream, int64_t from_offset) override;
  absl::StatusOr<LogTrimOutcome> TrimLogs() override;
  int64_t LogBytesHeld() override;
  absl::StatusOr<CompleteOutcome> CompleteJob(const Completion& c, int64_t now_ms, int32_t drain_after,
                                              int64_t avoid_ms) override;
  absl::StatusOr<std::vector<ExpiredLease>> ExpireLeases(int64_t now_ms) override;
  absl::Status ExtendAllLeases(int64_t min_expiry_ms) override;
  absl::StatusOr<std::vector<std::string>> FlagSilentJobs(int64_t now_ms, int64_t default_silence_ms) override;
  absl::StatusOr<v1::Job> CancelJob(const std::string& job_id, const std::string& reason,
                                    v1::ExitReason exit_reason, int64_t now_ms) override;
  absl::StatusOr<v1::Sweep> CancelSweep(const std::string& sweep_id, const std::string& reason,
                                        int64_t now_ms) override;
  absl::StatusOr<std::map<int32_t, int64_t>> QueuedByGpus() override;
  absl::StatusOr<std::vector<v1::Event>> ListEvents(const std::string& job_id, int64_t after_seq,
                                                    int limit) override;
  absl::StatusOr<std::vector<v1::Event>> TailEvents(const std::string& job_id, int n, int32_t attempt) override;
  absl::StatusOr<std::vector<ValPoint>> SweepValPoints(const std::string& sweep_id) override;
  absl::StatusOr<std::vector<v1::Job>> BestJobs(const std::string& sweep_id, int limit) override;
  absl::StatusOr<WorkerRecord> RegisterWorker(const v1::Worker& worker, int64_t now_ms) override;
  absl::StatusOr<std::vector<WorkerRecord>> ListWorkers() override;
  absl::Status SetWorkerFree(const std::string& worker_id, int32_t gpus_free, int32_t cpu_slots_free,
                             int64_t now_ms) override;
  absl::StatusOr<DrainOutcome> DrainWorker(const std::string& worker_id, const std::string& reason,
                                           const std::string& by, int64_t now_ms) override;
  absl::StatusOr<DrainOutcome> UndrainWorker(const std::string& worker_id) override;

 private:
  class Stmt;
  class Tx;
  SqliteStore(sqlite3* db, Options options);
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PRAGMA journal_mode=WAL, checked: InvalidArgument naming `path` unless
  // SQLite answers "wal".
  absl::Status EnableWal(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<sqlite3_stmt*> Prepare(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Job> GetJobLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Sweep> GetSweepLocked(const std::string& sweep_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every worker ("" = all) or the one with this id, with its running jobs.
  absl::StatusOr<std::vector<WorkerRecord>> QueryWorkersLocked(const std::string& only_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // NotFound naming an unknown worker.
  absl::StatusOr<WorkerRecord> GetWorkerLocked(const std::string& worker_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<v1::Job>> QueryJobs(const std::string& sql,
                                                 const std::function<void(sqlite3_stmt*)>& bind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job's lease as a report of (worker_id, fencing_token) finds it, for
  // AppendEvents / AppendLogs. Stale (FailedPrecondition + code) unless the
  // token is the job's current one, the job is leased or running, and leased to
  // this worker — or the same lease has completed (`replay_after_completion`).
  struct ReportedLease {
    int state = 0;
    int32_t attempt = 0;
    int32_t gpus = 0;
    bool replay_after_completion = false;
    bool cancel = false;
    std::string cancel_reason;
    std::string sweep_id;
  };
  absl::StatusOr<ReportedLease> CheckReportLocked(const std::string& worker_id, const std::string& job_id,
                                                  int64_t fencing_token) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the oldest bytes of one stream until at most `cap` are held; returns
  // how many went (the caller counts them in AddHeldLogBytesLocked).
  absl::StatusOr<int64_t> CapLogStreamLocked(const std::string& job_id, int32_t attempt, int32_t rank,
                                             const std::string& stream, int64_t cap)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // REQUIRES: a transaction. Adds `delta` to the job's held log bytes and to
  // the total counter row, and to *held_delta, which the caller adds to
  // log_bytes_held_ once the transaction commits.
  absl::Status AddHeldLogBytesLocked(const std::string& job_id, int64_t delta, int64_t* held_delta)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // REQUIRES: a transaction. TrimLogs' bounded pass; *held_delta as above.
  absl::StatusOr<LogTrimOutcome> TrimLogsLocked(int64_t* held_delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // At Open: loads log_bytes_held_ from the counter row after checking it (and
  // each job's) against the streams' sum, setting them right when they differ.
  absl::Status CheckLogBytesCounterLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CancelJobLocked(const std::string& job_id, const std::string& reason, v1::ExitReason exit_reason,
                               int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  int schema_version_ = 0;
  std::optional<int64_t> repaired_log_bytes_counter_;  // set by Open only

  absl::Mutex mu_;
  sqlite3* const db_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, sqlite3_stmt*> stmts_ ABSL_GUARDED_BY(mu_);
  // The log_totals row as last committed (TrimLogs reads it, not the table).
  int64_t log_bytes_held_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace caddie::controller
