// Names of caddie-train's JSON-lines events and their fields (docs/contracts.md,
// "Trainer events"). The one home of these strings: the trainer writes them, the
// worker and controller read them. Thread-safe: constants only.
#pragma once

namespace caddie::events {

// Every event: {"event": <type>, "time": <unix seconds, float>, ...}.
inline constexpr char kEvent[] = "event";
inline constexpr char kTime[] = "time";

// Event types.
inline constexpr char kStart[] = "start";
inline constexpr char kStep[] = "step";
inline constexpr char kVal[] = "val";
inline constexpr char kFinal[] = "final";
inline constexpr char kError[] = "error";

// start
inline constexpr char kParams[] = "params";
inline constexpr char kWorldSize[] = "world_size";
inline constexpr char kDevice[] = "device";
inline constexpr char kSpec[] = "spec";
inline constexpr char kCodeBytes[] = "code_bytes";

// step
inline constexpr char kStepNum[] = "step";
inline constexpr char kTrainLoss[] = "train_loss";
inline constexpr char kLrScale[] = "lr_scale";
inline constexpr char kTokensPerS[] = "tokens_per_s";
inline constexpr char kStepMs[] = "step_ms";
inline constexpr char kTrainTimeS[] = "train_time_s";
inline constexpr char kMemBytes[] = "mem_bytes";

// val
inline constexpr char kValLoss[] = "val_loss";
inline constexpr char kValBpb[] = "val_bpb";

// final
inline constexpr char kExitReason[] = "exit_reason";
inline constexpr char kSteps[] = "steps";
inline constexpr char kValBpbPostQuant[] = "val_bpb_post_quant";
inline constexpr char kQuantGap[] = "quant_gap";
inline constexpr char kArtifactPath[] = "artifact_path";
inline constexpr char kArtifactBytes[] = "artifact_bytes";
inline constexpr char kModelBytes[] = "model_bytes";
inline constexpr char kLimitBytes[] = "limit_bytes";
inline constexpr char kWithinBudget[] = "within_budget";
inline constexpr char kPeakMemBytes[] = "peak_mem_bytes";

// error
inline constexpr char kMessage[] = "message";

// exit_reason values.
inline constexpr char kCompleted[] = "completed";
inline constexpr char kTimeBudget[] = "time_budget";
inline constexpr char kTerminated[] = "terminated";

// The artifact limit of Parameter Golf (decimal bytes, compressed model + code).
inline constexpr long long kArtifactLimitBytes = 16000000;

}  // namespace caddie::events
