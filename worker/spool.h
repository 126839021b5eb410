// Spool: the worker's on-disk queue of messages the controller has not yet
// acknowledged — event batches (ReportEventsRequest) and completions
// (CompleteJobRequest). A message is made durable (written to a temporary file,
// fsync'd, renamed, directory fsync'd) before it is first sent, and removed
// only after the controller acknowledged it, so a controller outage or restart
// loses nothing the worker saw; a worker restart replays what is left, in order.
//
// One file per record, named by a 20-digit sequence number and its kind
// ("00000000000000000042.events"), so order survives restarts and a torn write
// leaves only a "*.tmp" file, which Open deletes.
//
// A full disk (or any write error) loses nothing the worker accepted: the
// record is held in memory, in order, still sent by the sender, and written by
// Flush() once the disk takes it. Records after a held one are held too, so the
// files on disk are always the oldest records (a restart replays a prefix).
// Only held records die with the process. The worker bounds how much it holds.
//
// Thread-safe: all methods may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "caddie/v1/worker_service.pb.h"

namespace caddie::worker {

using SpoolMessage = std::variant<caddie::v1::ReportEventsRequest, caddie::v1::CompleteJobRequest>;

struct SpoolRecord {
  uint64_t id = 0;  // increasing; the replay order
  SpoolMessage message;
  bool durable = true;  // false: held in memory only, not yet written
  size_t bytes = 0;     // serialized size

  const std::string& job_id() const;
  bool is_completion() const { return message.index() == 1; }
};

class Spool {
 public:
  // Opens (creating) the spool in `dir` and loads what a previous process left.
  // Internal when the directory cannot be created or read (naming it). A record
  // that does not parse is renamed to "*.bad" and skipped, so it cannot block replay.
  static absl::StatusOr<std::unique_ptr<Spool>> Open(std::string dir);

  struct Appended {
    uint64_t id = 0;
    absl::Status write_error;  // OK: on disk. Else why the record is held in memory.
  };
  // Appends a record, durably when the disk takes it. Never drops it: on a write
  // error (Internal, naming the file) it is held in memory until Flush() writes it.
  Appended Append(SpoolMessage message);
  // Writes held records, oldest first. OK once none is held; else the first error.
  absl::Status Flush();
  // Records (and their bytes) held in memory because the disk did not take them.
  size_t held() const;
  size_t held_bytes() const;

  // The oldest record, if any.
  std::optional<SpoolRecord> Front() const;
  // All records in order.
  std::vector<SpoolRecord> List() const;
  size_t size() const;

  // Removes an acknowledged record. Removing an unknown id is OK (idempotent).
  absl::Status Remove(uint64_t id);
  // Removes every record of `job_id` (its lease was lost: nothing more may be sent).
  // Returns how many were removed.
  int RemoveJob(const std::string& job_id);

  const std::string& dir() const { return dir_; }

 private:
  explicit Spool(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(const SpoolRecord& r) const;
  // Writes one record's file (tmp, fsync, rename, directory fsync).
  absl::Status WriteLocked(const SpoolRecord& r, const std::string& bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetLocked(std::vector<SpoolRecord>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;  // constant after construction

  mutable absl::Mutex mu_;
  std::vector<SpoolRecord> records_ ABSL_GUARDED_BY(mu_);  // ordered by id
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  size_t held_ ABSL_GUARDED_BY(mu_) = 0;
  size_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace caddie::worker
