// Environment knobs for measuring caddie-train on a GPU (scripts/device-bench.sh).
// They change how a run is computed or observed, never what it trains: a spec
// stays the one source of truth for the model and schedule.
//
//   CADDIE_CUDA_FP32=1       CUDA without bf16 autocast, Newton–Schulz in fp32: the
//                            correctness check against the CPU loss curve.
//   CADDIE_PROFILE=PATH      write a Kineto (Chrome trace) profile of a few steps to PATH.
//   CADDIE_PROFILE_STEP=N    first profiled step (default 5); CADDIE_PROFILE_STEPS=K (default 2).
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

}  // namespace caddie::model
