// Text of a rank's log stream for GetJobLogs, from what the store holds
// (LogRead): the held chunks joined in offset order, cut to the lines or bytes
// asked for, made valid UTF-8, with what is missing counted or marked.
// Thread-safe: a free function, no state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "controller/store.h"

namespace caddie::controller {

struct LogText {
  std::string text;            // valid UTF-8 (bad bytes become U+FFFD)
  int64_t next_offset = 0;     // where the next call's from_offset picks up
  int64_t dropped_bytes = 0;   // asked-for bytes before `text` that are no longer held
};

// With `from_offset`: every held byte from there on; bytes before the first
// held one are dropped_bytes. Without: the last `tail_lines` lines (> 0) held;
// when those reach back to the first held byte, every byte before it is
// dropped_bytes. Either way, text that starts after dropped bytes starts at a
// line (the cut line's rest is dropped too); a gap between held chunks (bytes
// the worker never sent) is marked in the text by a line saying how many
// bytes are missing; and a UTF-8 sequence cut short by the end is held back
// for the next call (next_offset points at it).
LogText AssembleLog(const LogRead& held, std::optional<int64_t> from_offset, int tail_lines);

}  // namespace caddie::controller
