// LogTailer: follows a job attempt's rank log files (rank<R>.stderr.log, and
// rank<R>.stdout.log of ranks > 0 — rank 0's stdout is the event stream) as they
// grow, and hands out the bytes added since the last Poll as LogChunks, which
// the JobRunner sends in its ReportEvents batches (so they ride the spool).
//
// Each file is read from where the last Poll stopped, at most `poll_bytes` per
// Poll (`final_bytes` at the job's end): a file that grew more than that since
// the last Poll skips its oldest new bytes, so a chatty trainer costs the spool
// and the controller a bounded rate; the skip shows as a gap in the offsets.
//
// Not thread-safe: one owner (JobRunner::Run's thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "caddie/v1/types.pb.h"
#include "common/log_streams.h"

namespace caddie::worker {

struct LogTailerOptions {
  size_t chunk_bytes = size_t{64} << 10;   // largest LogChunk.data
  size_t poll_bytes = size_t{256} << 10;   // most bytes read per file per Poll
  size_t final_bytes = size_t{1} << 20;    // the same for the last Poll (final = true)
};

class LogTailer {
 public:
  LogTailer(LogTailerOptions options, int32_t attempt);
  ~LogTailer();
  LogTailer(const LogTailer&) = delete;
  LogTailer& operator=(const LogTailer&) = delete;

  // Follows `path` as `stream` ("stdout" | "stderr") of `rank`, from its start.
  // The file need not exist yet.
  void Add(int32_t rank, std::string stream, std::string path);

  // What the files gained since the last call, in Add order, each file's bytes
  // in offset order and cut into chunks of at most chunk_bytes. A file that
  // cannot be read yet yields nothing (and is tried again next time).
  std::vector<caddie::v1::LogChunk> Poll(bool final = false);

  // Bytes skipped so far because a file grew faster than poll_bytes per Poll.
  int64_t skipped_bytes() const { return skipped_; }

 private:
  struct File {
    int32_t rank = 0;
    std::string stream;
    std::string path;
    int fd = -1;
    int64_t offset = 0;  // next byte to read
    bool warned = false;  // a skip was logged
  };

  const LogTailerOptions options_;
  const int32_t attempt_;
  std::vector<File> files_;
  int64_t skipped_ = 0;
};

// `chunks` in order, grouped into runs of at most `max_bytes` of data each (a
// chunk larger than that is a run of its own; none is split or dropped).
std::vector<std::vector<caddie::v1::LogChunk>> GroupByBytes(std::vector<caddie::v1::LogChunk> chunks,
                                                             size_t max_bytes);

}  // namespace caddie::worker
