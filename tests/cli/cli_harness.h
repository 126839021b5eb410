// Test harness for the CLI's integration tests: runs `caddie` as a subprocess and
// a local cluster of real processes (caddie-controller on a free loopback port
// with a temporary SQLite file, one caddie-worker running caddie-fake-train).
// Not thread-safe: one harness per test.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/subprocess.h"

namespace caddie::clitest {

struct RunResult {
  int code = -1;  // exit code; 128 + signal when killed
  std::string out;
  std::string err;
};

// A fresh temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs the caddie CLI with `args`; `env` entries are added to the environment
// (NO_COLOR is set, CADDIE_ADDR/CADDIE_TOKEN removed, HOME pointed at `home`).
RunResult RunCaddie(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
                    std::chrono::seconds timeout = std::chrono::seconds(60), const std::string& cwd = "");

// A controller and (optionally) a worker with the fake trainer.
class LocalCluster {
 public:
  // `fake_plan`: the CADDIE_FAKE_TRAIN JSON for the worker's trainer runs.
  // `user_token`: the bearer token the controller demands of users ("" = none).
  // `heartbeat_seconds`: the controller's --heartbeat-interval (0 = its default).
  // `controller_args` / `worker_args`: more flags for caddie-controller / caddie-worker.
  explicit LocalCluster(const std::string& fake_plan = R"({"steps": 20, "step_ms": 20})", bool with_worker = true,
                        const std::string& user_token = "", double heartbeat_seconds = 0,
                        const std::vector<std::string>& controller_args = {},
                        const std::vector<std::string>& worker_args = {});
  ~LocalCluster();

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const std::string& addr() const { return addr_; }
  const std::string& dir() const { return dir_.path(); }

  // Runs caddie with --addr pointing at this cluster.
  RunResult Caddie(std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(60),
                   const std::map<std::string, std::string>& env = {});

  // Writes `yaml` to dir()/`file_name`, runs `caddie sweep submit --json` on it and
  // returns the first job's id (the error, with the CLI's stderr, otherwise).
  absl::StatusOr<std::string> SubmitSweepFile(const std::string& file_name, const std::string& yaml);

  std::string ControllerLog() const;
  std::string WorkerLog() const;
  // SIGKILLs the worker's process group (it and its trainers) and reaps it.
  void KillWorker();

 private:
  TempDir dir_;
  std::string error_;
  std::string addr_;
  Child controller_, worker_;
};

// Processes other than this one whose command line mentions `needle` (a temp
// dir, a run dir): orphans if any, as "PID: cmdline".
std::vector<std::string> ProcessesMentioning(const std::string& needle);

// Writes `text` to `path`.
void WriteFile(const std::string& path, const std::string& text);
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace caddie::clitest
