#include "model/perf_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "model/perf_knobs.h"

namespace caddie::model {

namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

StepProfiler::StepProfiler(bool enabled) {
  if (!enabled) return;
  if (const char* p = std::getenv("CADDIE_PROFILE"); p != nullptr) path_ = p;
  first_ = EnvLong("CADDIE_PROFILE_STEP", 5);
  count_ = std::max(1L, EnvLong("CADDIE_PROFILE_STEPS", 2));
}

StepProfiler::~StepProfiler() {
  if (active_) (void)prof::disableProfiler();
}

void StepProfiler::BeforeStep(int64_t step) {
  if (path_.empty() || active_ || step != first_) return;
  std::set<impl::ActivityType> acts{impl::ActivityType::CPU};
  if (torch::cuda::is_available()) acts.insert(impl::ActivityType::CUDA);
  impl::ProfilerConfig cfg(impl::ProfilerState::KINETO);
  if (torch::cuda::is_available()) torch::cuda::synchronize();
  prof::prepareProfiler(cfg, acts);
  prof::enableProfiler(cfg, acts);
  active_ = true;
}

void StepProfiler::AfterStep(int64_t step) {
  if (!active_ || step != first_ + count_ - 1) return;
  if (torch::cuda::is_available()) torch::cuda::synchronize();
  auto result = prof::disableProfiler();
  active_ = false;
  if (result) {
    result->save(path_);
    std::fprintf(stderr, "caddie-train: profile of steps %ld..%ld written to %s\n", static_cast<long>(first_),
                 static_cast<long>(step), path_.c_str());
  }
  path_.clear();
}

}  // namespace caddie::model
