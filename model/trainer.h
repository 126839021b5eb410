// The caddie-train run: data loading, distributed setup, the training loop with
// its wall-clock budget, evaluation, export and the JSON-lines events.
// Torch-free header so train_main.cc compiles quickly.
//
// RunTrainer is called once per process (one rank); not thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "common/core/train_spec.h"

namespace caddie::model {

// Where this rank sits, as torchrun's environment says.
struct RankEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
// (absent = one rank). A malformed value is an error naming the variable.
LiteStatusOr<RankEnv> RankEnvFromEnvironment();

// Exit codes of caddie-train (docs/contracts.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitOther = 1;
inline constexpr int kExitBadInput = 2;

// Trains `spec` as this rank; writes events to stdout (rank 0) and the run
// directory. Returns the process exit code: 0 after a finished run (any exit
// reason), 2 for a bad spec or bad data (message on stderr and an error event),
// 1 for anything else.
int RunTrainer(const TrainSpec& spec, const RankEnv& env);

// Installs the SIGTERM/SIGINT handler that asks RunTrainer to stop after the
// current step (exit reason "terminated").
void InstallStopSignalHandlers();

// Benchmark: `steps` training steps of `spec` on random tokens (no data needed),
// one rank. Prints one JSON line {"benchmark": ..., "tokens_per_s": ...} and
// returns the exit code.
int RunBenchmark(const TrainSpec& spec, int64_t steps);

}  // namespace caddie::model
