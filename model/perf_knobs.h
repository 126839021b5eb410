// Environment knobs for measuring caddie-train on a GPU (scripts/device-bench.sh).
// They change how a run is computed or observed, never what it trains: a spec
// stays the one source of truth for the model and schedule.
//
//   CADDIE_CUDA_FP32=1       CUDA without bf16 autocast, Newton–Schulz in fp32: the
//                            correctness check against the CPU loss curve.
//   CADDIE_PROFILE=PATH      write a Kineto (Chrome trace) profile of a few steps to PATH.
//   CADDIE_PROFILE_STEP=N    first profiled step (default 5); CADDIE_PROFILE_STEPS=K (default 2).
//   CADDIE_PERF_OFF=a,b      switch optimisations off to measure what each gives:
//                            norm (fused RMSNorm), resid (bf16 residual stream), gqa (SDPA's
//                            own GQA instead of repeat_interleave), ns (batched Newton–Schulz),
//                            sync (per-step host sync), pin (pinned async batch copies),
//                            overlap (gradient all-reduce overlapped with backward), and the
//                            CUDA kernels of model/fused_cuda.h: kmix (residual mix), kadd
//                            (x + scale·y), krelu (relu²), kqk (q/k RmsNorm + RoPE + q_gain),
//                            knorm (RmsNorm; `norm` off turns it off too), qkv (one q/k/v
//                            projection; kqk off turns it off too), kresnorm (residual update +
//                            RmsNorm in one kernel), kce (soft cap + cross-entropy in one kernel);
//                            cudnn (SDPA without its cuDNN backend: flash attention instead).
//   CADDIE_GRAD_BUCKET_KB=N  gradient all-reduce bucket size (default 25600, DDP's 25 MiB).
//
// Reading the environment is thread-safe; values are read once per call site.
#pragma once

#include <cstdlib>
#include <string>

namespace caddie::model {

inline bool EnvFlag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}

inline long EnvLong(const char* name, long def) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return def;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (*end == '\0' && x >= 0) ? x : def;
}

inline bool CudaFp32Forced() { return EnvFlag("CADDIE_CUDA_FP32"); }

// True when `what` is listed in CADDIE_PERF_OFF (read once).
inline bool PerfOff(const char* what) {
  static const std::string list = [] {
    const char* v = std::getenv("CADDIE_PERF_OFF");
    return v == nullptr ? std::string() : std::string(v);
  }();
  const std::string w(what);
  for (size_t pos = 0; pos <= list.size();) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    if (list.compare(pos, end - pos, w) == 0) return true;
    pos = end + 1;
  }
  return false;
}

}  // namespace caddie::model
