// Human and JSON renderings of the API's messages for the CLI: tables of sweeps,
// jobs, workers and the leaderboard, a job's detail, and the live view of
// `caddie watch`. Pure functions of their inputs (time passed in), so tests
// check exact output. Thread-safe: free functions; WatchView is not thread-safe
// (one per watch).
#pragma once

#include <optional>
#include <string>

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "caddie/v1/types.pb.h"
#include "caddie/v1/user_service.pb.h"
#include "cli/term.h"

namespace caddie::cli {

// "queued", "running", "succeeded", ... (lower case, as typed in --state).
std::string StateName(v1::JobState s);
// Parses a --state value ("running", "RUNNING", "job_state_running"); nullopt if unknown.
std::optional<v1::JobState> ParseState(const std::string& s);
// Comma-separated state names, for help and error messages.
std::string AllStateNames();
bool IsTerminal(v1::JobState s);
// "time_budget", "crashed", ... ("" for unspecified).
std::string ExitReasonName(v1::ExitReason r);
// The state name coloured by outcome.
std::string StyledState(v1::JobState s, const Style& st);

// The message as JSON with proto field names and every field present.
std::string ToJsonString(const google::protobuf::Message& m);
nlohmann::json ToJsonValue(const google::protobuf::Message& m);

// "loops=2 qat_bits=4" from a job's params_json ("-" when empty).
std::string ParamsSummary(const std::string& params_json);

// The training-time budget of a job, in seconds: Budget.train_seconds, else the
// spec's max_wallclock_seconds, else the 600 s default.
double TrainBudgetSeconds(const v1::Job& job);

std::string SweepsTable(const v1::ListSweepsResponse& r, int64_t now_ms, const Style& st);
std::string JobsTable(const v1::ListJobsResponse& r, int64_t now_ms, const Style& st);
std::string JobDetail(const v1::Job& job, int64_t now_ms, const Style& st);
std::string LeaderboardTable(const v1::LeaderboardResponse& r, const Style& st);
std::string WorkersTable(const v1::ListWorkersResponse& r, int64_t now_ms, const Style& st);
// What `caddie workers drain` / `undrain` did, and what happens next.
std::string DrainResult(const v1::DrainWorkerResponse& r, int64_t now_ms, const Style& st);
std::string UndrainResult(const v1::UndrainWorkerResponse& r, const Style& st);

// The live view of one job: fed WatchJob responses, it keeps the latest step,
// validation and final figures and renders a one-line status with a progress bar
// of training time against the budget.
class WatchView {
 public:
  explicit WatchView(std::string job_id) : job_id_(std::move(job_id)) {}

  // Applies one response. Returns lines to print permanently (job state changes,
  // val results, the final result, errors), each ending in '\n'.
  std::string Apply(const v1::WatchJobResponse& r, const Style& st);

  // The current one-line status (no newline). `budget_s` > 0 overrides the
  // budget read from the job (for callers that know it before the stream does).
  std::string StatusLine(const Style& st, double budget_s = 0) const;

  bool finished() const { return job_.has_value() && IsTerminal(job_->state()); }
  const std::optional<v1::Job>& job() const { return job_; }
  int64_t last_seq() const { return last_seq_; }
  double train_time_s() const { return train_time_s_; }

 private:
  std::string job_id_;
  std::optional<v1::Job> job_;
  int64_t last_seq_ = 0;
  int64_t step_ = -1;
  double train_loss_ = -1;
  double train_time_s_ = 0;
  double tokens_per_s_ = 0;
  double val_bpb_ = -1;
  int64_t val_step_ = -1;
  std::optional<nlohmann::json> final_;
};

}  // namespace caddie::cli
