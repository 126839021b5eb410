// JobRunner: runs one leased job attempt as N trainer rank processes and turns
// it into events and an outcome. It owns the run directory
// (<runs>/<job id>-a<attempt>/: spec.json, rank<R>.stdout.log, rank<R>.stderr.log,
// the trainer's own files), the rank processes (one process group, killed as a
// whole), and the budgets enforced from outside:
//
//   training limit   SIGTERM when the training clock reaches train_seconds,
//                    SIGKILL one grace later if it is still training:
//                    EXIT_REASON_TIME_LIMIT_KILLED. The training clock is the
//                    trainer's own (the train_time_s of its latest step/val
//                    event, plus the wall time since), which leaves out warm-up
//                    and evaluation as the reference does; before the first
//                    report it is the wall time since the `start` event (launch
//                    until it arrives), and it never runs more than eval_seconds
//                    behind that wall time, so a trainer whose clock lags cannot
//                    train on unbounded (EstimateTrainingSeconds).
//   evaluation limit once training is over (a `val` event at the budget, at
//                    `iterations`, or after our SIGTERM), eval_seconds for
//                    evaluation + export, then SIGTERM, SIGKILL after grace:
//                    EXIT_REASON_EVAL_LIMIT_KILLED.
//   silence limit    no event for silence_seconds (default max(train, eval) +
//                    grace): SIGKILL, EXIT_REASON_NO_PROGRESS (infra failure).
//   artifact bytes   the file the `final` event names, measured on disk, plus
//                    its code_bytes, against artifact_limit_bytes: OVER_BUDGET.
//
// A rank that exits non-zero or by a signal takes the others down (SIGKILL to
// the group) and the job fails with that rank's status and last stderr lines.
//
// Thread-safety: Run() is called once, on a thread that stays alive until it
// returns (ranks die with that thread). Cancel/Abandon/Snapshot may be called
// from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "caddie/v1/types.pb.h"
#include "worker/log_tailer.h"

namespace caddie::worker {

struct RunnerConfig {
  std::string trainer;             // caddie-train (or a stand-in): path to execute
  std::string data_dir;            // put into the spec as "data" when it has none ("" = leave it)
  double silence_seconds = 0;      // 0 = max(train, eval) + grace
  std::chrono::milliseconds poll{50};
  std::chrono::milliseconds batch_interval{200};  // events are batched at most this long
  size_t batch_max = 64;
  // Every rank's stderr and the stdout of ranks > 0 go out as LogChunks in the
  // same batches (flushed with them, the rest at the job's end, before the
  // outcome); at most batch_log_bytes of them per batch (more: more batches).
  LogTailerOptions logs;
  size_t batch_log_bytes = size_t{1} << 20;
  // Environment values never handed to a trainer (the worker's bearer token,
  // however it was given), besides the CADDIE_*TOKEN* variables always withheld.
  std::vector<std::string> withheld_values;
};

struct JobAssignment {
  caddie::v1::Job job;
  int64_t fencing_token = 0;
  std::vector<int> gpu_indices;  // empty: a CPU job (one rank)
  std::string run_dir;           // created by Run
};

struct JobOutcome {
  caddie::v1::JobState state = caddie::v1::JOB_STATE_FAILED;
  caddie::v1::ExitReason exit_reason = caddie::v1::EXIT_REASON_UNSPECIFIED;
  std::string message;
  caddie::v1::Result result;
  bool infra_failure = false;
  bool abandoned = false;  // the lease was lost: report nothing
};

// Budget with defaults applied (zero fields of caddie.v1.Budget mean "default").
struct EffectiveBudget {
  double train_seconds = 600;
  double eval_seconds = 600;
  int64_t artifact_limit_bytes = 16000000;
  double grace_seconds = 30;
};
EffectiveBudget ResolveBudget(const caddie::v1::Budget& b);

// One parsed stdout line: a trainer event, or a "log" event wrapping a line
// that is not a JSON object with an "event" field.
caddie::v1::Event ParseEventLine(const std::string& line, double now_unix);

// The worker's training clock in seconds (see "training limit" above): wall time
// since the `start` event before the trainer reports train_time_s; after, the
// reported value plus the wall time since the report, but at least
// `since_start_s - max_excluded_s` (the time the trainer may leave off its clock
// for warm-up and evaluation during training is bounded by the evaluation budget).
double EstimateTrainingSeconds(double since_start_s, std::optional<double> reported_train_s,
                               double since_report_s, double max_excluded_s);

// The last `n` lines of a text file ("" when unreadable).
std::string TailFile(const std::string& path, int n);

// `env` ("NAME=value" entries) without the secrets a trainer must not see:
// every variable whose name starts with CADDIE_ and contains TOKEN
// (CADDIE_TOKEN, CADDIE_WORKER_TOKEN, CADDIE_USER_TOKEN, ...), and every
// variable whose value is one of `withheld_values` (empty ones ignored).
std::vector<std::string> WithoutSecrets(std::vector<std::string> env,
                                        const std::vector<std::string>& withheld_values);

class JobRunner {
 public:
  using EventBatchFn = std::function<void(std::vector<caddie::v1::Event>)>;
  // One ReportEvents batch: events (possibly none) and log chunks (possibly none; never both empty).
  using ReportBatchFn = std::function<void(std::vector<caddie::v1::Event>, std::vector<caddie::v1::LogChunk>)>;

  // `on_events` receives the events in order (seq from 1), in batches, on Run's thread.
  JobRunner(RunnerConfig config, JobAssignment assignment, EventBatchFn on_events);
  // The same, with the log chunks too.
  JobRunner(RunnerConfig config, JobAssignment assignment, ReportBatchFn on_batch);
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // Launches the ranks and blocks until every rank has exited and the process
  // group is gone. Call once.
  JobOutcome Run();

  // Stops the job: SIGKILL to the group; the outcome is CANCELLED with `reason`
  // (EARLY_STOPPED when `early_stopped`). Safe before, during or after Run.
  void Cancel(const std::string& reason, bool early_stopped = false);
  // The lease is gone: kill the group and report nothing.
  void Abandon();

  const JobAssignment& assignment() const { return assignment_; }
  // Process group of the ranks (-1 before launch / after the end).
  pid_t pgid() const { return pgid_.load(); }

 private:
  struct Shared;  // state shared with the stdout reader thread
  JobOutcome Fail(caddie::v1::ExitReason reason, std::string message, bool infra) const;

  // Constant after construction.
  const RunnerConfig config_;
  const JobAssignment assignment_;
  const ReportBatchFn on_batch_;

  std::atomic<pid_t> pgid_{-1};
  absl::Mutex mu_;
  bool cancel_ ABSL_GUARDED_BY(mu_) = false;
  bool early_stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool abandon_ ABSL_GUARDED_BY(mu_) = false;
  std::string cancel_reason_ ABSL_GUARDED_BY(mu_);
};

}  // namespace caddie::worker
