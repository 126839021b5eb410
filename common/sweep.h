// Sweep expansion: turns a sweep JSON (docs/contracts.md, "Sweep JSON") into the
// list of jobs the controller runs. The one implementation shared by the
// controller (SubmitSweep) and the CLI (`caddie sweep validate` preview), so a
// preview is exactly what will run.
//
// Deterministic: grid jobs come in axis order (nlohmann::json objects iterate
// their keys sorted, so "axis order" = key order), last axis fastest; random
// jobs are drawn from std::mt19937_64(seed), axes in key order, one draw per
// axis per job. The same sweep JSON always yields the same jobs.
//
// Thread-safe: free functions, no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace caddie {

// Default and hard ceiling of `max_jobs` (a sweep may lower the cap, never
// raise it past kSweepMaxJobsCeiling).
inline constexpr int64_t kSweepDefaultMaxJobs = 1000;
inline constexpr int64_t kSweepMaxJobsCeiling = 100000;

// Early-stopping settings of a sweep (`early_stopping` key). type "" = off.
struct EarlyStoppingConfig {
  std::string type;            // "" | "asha" | "median"
  std::string metric = "val_bpb";
  int64_t grace_steps = 0;     // no decision before this step
  int64_t reduction_factor = 2;// ASHA η: keep the best 1/η at each rung
  int64_t min_trials = 0;      // median rule / ASHA: decide only with ≥ this many peers at a rung
                               // (0 = reduction_factor for ASHA, 3 for median)
};

// One job of an expanded sweep.
struct SweepJob {
  int index = 0;               // 0-based position in the sweep
  nlohmann::json params;       // the job's axis values (object, axis name → value)
  nlohmann::json spec;         // trainer spec: base, then params, then "{key}" substitution
};

struct ExpandedSweep {
  std::string mode;            // "grid" | "random"
  std::vector<SweepJob> jobs;
  EarlyStoppingConfig early_stopping;
};

// Parses the early_stopping object (absent / null = off). InvalidArgument naming
// the bad key or value (unknown type, reduction_factor < 2, negative grace_steps).
absl::StatusOr<EarlyStoppingConfig> ParseEarlyStopping(const nlohmann::json& sweep);

// Expands `sweep` (a JSON object with "base", "axes", "variants", "mode", "samples",
// "seed", "max_jobs", "early_stopping"). Grid mode with `variants` (a list of
// objects of trainer keys) runs the whole grid once per variant, variants
// slowest; a variant's keys join the job's params and may not also be axes. Returns InvalidArgument with a message naming the
// offending key/value when: not an object; base or axes not an object; unknown
// top-level key; unknown mode; a grid axis that is not a non-empty list; a random
// axis that is neither a non-empty list nor {choice|uniform|log_uniform|int_uniform: ...}
// with lo ≤ hi (log_uniform: lo > 0); samples < 1; the job count exceeds max_jobs
// ("the grid has N jobs, more than max_jobs = M ..."). Trainer-key validation of
// each job's spec is the caller's (ParseTrainSpec), so this stays independent of
// the trainer's key list.
absl::StatusOr<ExpandedSweep> ExpandSweep(const nlohmann::json& sweep);

// Same, from text. InvalidArgument when it is not JSON.
absl::StatusOr<ExpandedSweep> ExpandSweepText(const std::string& sweep_json);

}  // namespace caddie
