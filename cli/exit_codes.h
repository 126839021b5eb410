// Exit codes of the `caddie` CLI: the one home of their numbers and of the text
// that documents them in --help. Scripts rely on these; never renumber.
// Thread-safe: constants only.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace caddie::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;       // unexpected error (controller-side internal error, I/O)
inline constexpr int kExitBadInput = 2;      // bad flags, invalid sweep file, value out of range
inline constexpr int kExitUnreachable = 3;   // the controller could not be reached (or timed out)
inline constexpr int kExitNotFound = 4;      // no such job / sweep / worker
inline constexpr int kExitAuth = 5;          // token missing or rejected
inline constexpr int kExitJobFailed = 6;     // `watch`/`up`: the job or sweep ended unsuccessfully
inline constexpr int kExitConflict = 7;      // the request conflicts with the state (cancel a finished job)
inline constexpr int kExitInterrupted = 130; // Ctrl-C (128 + SIGINT)

// The exit-code table for the end of --help.
std::string ExitCodesHelp();

// Maps a failed call's status to the exit code above (OK → 0).
int ExitCodeFor(const absl::Status& status);

}  // namespace caddie::cli
