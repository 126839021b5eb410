// Early stopping rules for a sweep: ASHA (asynchronous successive halving) and
// the median stopping rule, decided from the sweep's `val` events.
//
// ASHA: rungs at grace_steps·η^k (grace_steps 0 counts as 1). A job's value at
// rung k is its val_bpb at the first val event with step ≥ rung k. A running job
// is stopped at its highest reached rung when at least min_trials jobs (default
// η) have a value there and it is not among the best ⌊n/η⌋ (at least 1).
//
// Median: a running job whose latest val event is at step s ≥ grace_steps is
// stopped when its best val_bpb up to s is worse than the median of the other
// jobs' best val_bpb up to s, counting only jobs with a val event at or before s,
// when there are at least min_trials (default 3) of them.
//
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <vector>

#include "common/sweep.h"
#include "controller/store.h"

namespace caddie::controller {

struct StopDecision {
  std::string job_id;
  std::string reason;   // "early_stopped (asha): ..." — recorded as the job's message
};

// Jobs (in LEASED/RUNNING state) that should stop now. Lower val_bpb is better.
std::vector<StopDecision> DecideEarlyStops(const EarlyStoppingConfig& config, const std::vector<ValPoint>& points);

}  // namespace caddie::controller
