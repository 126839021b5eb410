// Names of a rank's output streams as the API carries them (LogChunk.stream,
// GetJobLogsRequest.stream): the one home of these strings for the worker, the
// controller and the CLI. Rank 0's stdout is the event stream (Event); every
// other stream of a rank travels as LogChunks (docs/contracts.md).
// Thread-safe: constants only.
#pragma once

#include <string_view>

namespace caddie::log_streams {

inline constexpr char kStdout[] = "stdout";
inline constexpr char kStderr[] = "stderr";

// True for the names above.
inline bool Known(std::string_view s) { return s == kStdout || s == kStderr; }

// True when (rank, stream) is a log file the worker sends as chunks (not the events).
inline bool SentAsChunks(int rank, std::string_view stream) {
  return stream == kStderr || (stream == kStdout && rank > 0);
}

}  // namespace caddie::log_streams
