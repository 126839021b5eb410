// The chaos run: a sweep of short fake-trainer jobs on a real caddie-controller
// and N real caddie-workers (loopback only) while a driver SIGKILLs and restarts
// the controller, SIGKILLs and restarts workers, SIGKILLs trainer ranks and
// fills one worker's disk (a size-limited tmpfs when mount works, else a
// directory whose free space it cannot fill — then that action is skipped and
// reported). When every job is terminal (or the deadline passes) it stops the
// daemons and audits the database:
//  - every job ended in exactly one terminal state (and only SUCCEEDED /
//    OVER_BUDGET jobs have a result row, of their last attempt);
//  - no job ran to success twice (no two attempts of one job both stored a
//    `final` event and a success);
//  - no acknowledged event is missing: each stored attempt's event seqs are
//    contiguous from 1 (batches are sent strictly in order, so a hole is a lost
//    acknowledged batch), and a SUCCEEDED job's last attempt holds every line
//    its trainer wrote to stdout (its completion was acknowledged, so all its
//    events were);
//  - PRAGMA integrity_check says ok.
//
// Not thread-safe: one RunChaos at a time per directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace caddie::chaos {

struct ChaosOptions {
  std::string controller_bin, worker_bin, fake_train_bin;
  std::string dir;              // scratch directory (removed and recreated)
  int jobs = 50;
  int workers = 4;
  int cpu_slots = 2;            // per worker
  int steps = 8;                // fake-trainer steps per job
  int step_ms = 120;
  double action_interval_s = 2.0;
  double deadline_s = 170;      // whole run, start to audit
  uint64_t seed = 1;
  bool verbose = true;          // one line per chaos action on stderr
};

struct ChaosReport {
  // What the driver did.
  int controller_kills = 0, worker_kills = 0, rank_kills = 0, disk_fills = 0;
  int kills_survived() const { return controller_kills + worker_kills + rank_kills; }
  bool tmpfs = false;           // the disk-full worker had a real size-limited tmpfs
  double seconds = 0;
  bool all_terminal = false;    // reached before the deadline
  // What the audit found.
  int jobs = 0, succeeded = 0, failed = 0, other_terminal = 0, non_terminal = 0;
  int64_t events = 0, attempts = 0;
  int duplicates = 0;           // jobs recorded as succeeded twice (a result of another attempt)
  int reruns = 0;               // jobs whose earlier attempt reached `final` but whose completion
                                // was never accepted (worker killed first): run again, one success
  int lost = 0;                 // acknowledged events missing from the database
  std::string integrity = "";   // PRAGMA integrity_check
  std::vector<std::string> problems;  // one line per violation

  bool ok() const {
    return all_terminal && non_terminal == 0 && duplicates == 0 && lost == 0 && integrity == "ok" && problems.empty();
  }
  std::string Summary() const;
};

ChaosReport RunChaos(const ChaosOptions& options);

}  // namespace caddie::chaos
