// Process: a child process for integration tests — started through
// caddie::Spawn in its own process group with output in a log file, waited on,
// signalled, and killed (with its group) when the object goes away.
//
// Not thread-safe: one test thread owns each Process.
#pragma once

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/subprocess.h"

namespace caddie::testing_support {

class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() { Kill(); }

  absl::Status Start(const std::vector<std::string>& argv, const std::filesystem::path& log,
                     const std::vector<std::pair<std::string, std::string>>& env = {}) {
    SpawnOptions o;
    o.argv = argv;
    o.env = CurrentEnvironment();
    for (const auto& [k, v] : env) SetEnv(&o.env, k, v);
    o.stdout_path = log.string();
    o.stderr_path = log.string();
    o.process_group = 0;
    auto c = Spawn(o);
    if (!c.ok()) return c.status();
    pid_ = c->pid;
    log_ = log;
    status_.reset();
    return absl::OkStatus();
  }

  pid_t pid() const { return pid_; }
  bool running() {
    if (pid_ <= 0 || status_) return false;
    status_ = TryReap(pid_);
    return !status_;
  }
  // Signals the process only (not its group).
  void Signal(int sig) {
    if (running()) kill(pid_, sig);
  }
  // Waits up to `timeout` for the exit; nullopt if still running.
  std::optional<ExitStatus> Wait(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (running() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }
  // SIGKILL to the process group, then reap.
  void Kill() {
    if (pid_ <= 0) return;
    if (running()) {
      kill(-pid_, SIGKILL);
      Wait(std::chrono::seconds(10));
    }
  }
  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  pid_t pid_ = -1;
  std::filesystem::path log_;
  std::optional<ExitStatus> status_;
};

// True once `pid` no longer exists (reaped or never ours), polling up to `timeout`.
inline bool ProcessGone(pid_t pid, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  do {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    // A zombie still answers kill(0): check its state.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string all;
    std::getline(stat, all);
    const size_t close = all.rfind(')');
    if (close != std::string::npos && close + 2 < all.size() && all[close + 2] == 'Z') return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < end);
  return false;
}

}  // namespace caddie::testing_support
