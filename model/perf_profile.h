// Kineto profile of a few training steps, as a Chrome trace (CADDIE_PROFILE=PATH,
// see model/perf_knobs.h). bench/trainer/profile_summary.py turns the trace into a
// table of where the step's GPU time goes.
//
// One per rank; not thread-safe (the profiler state is per process).
#pragma once

#include <cstdint>
#include <string>

namespace caddie::model {

class StepProfiler {
 public:
  // Reads CADDIE_PROFILE / CADDIE_PROFILE_STEP / CADDIE_PROFILE_STEPS; disabled when
  // CADDIE_PROFILE is unset or `enabled` is false (ranks other than 0).
  explicit StepProfiler(bool enabled);
  ~StepProfiler();
  // Called before training step `step` (0-based) and after it.
  void BeforeStep(int64_t step);
  void AfterStep(int64_t step);

 private:
  std::string path_;
  int64_t first_ = 5, count_ = 2;
  bool active_ = false;
};

}  // namespace caddie::model
