// Helpers shared by the observability tests: running a command to completion
// with its combined output, temp directories, reading files, and the PromQL
// selector extraction used to check alert rules against live data.
// Thread-safety: functions only; each call is independent.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/subprocess.h"

namespace caddie::obs_test {

struct CommandResult {
  int exit_code = -1;  // -1: did not exit normally (signal, timeout, spawn error)
  std::string output;  // stdout and stderr together
};

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

// A fresh directory under TMPDIR (or /tmp), removed by the destructor.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/caddie_obs_XXXXXX";
    path_ = mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs argv (no shell) to completion, killing it after `timeout`.
inline CommandResult RunCommand(const std::vector<std::string>& argv,
                                std::chrono::seconds timeout = std::chrono::seconds(60)) {
  CommandResult r;
  TempDir dir;
  const std::string out = (dir.path() / "out.txt").string();
  SpawnOptions opts;
  opts.argv = argv;
  opts.env = CurrentEnvironment();
  opts.stdout_path = out;
  opts.stderr_path = out;
  absl::StatusOr<Child> child = Spawn(opts);
  if (!child.ok()) {
    r.output = std::string(child.status().message());
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::optional<ExitStatus> status;
  while (!(status = TryReap(child->pid))) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(child->pid, SIGKILL);
      int ws;
      waitpid(child->pid, &ws, 0);
      r.output = ReadFile(out) + "\n[timed out]";
      return r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.output = ReadFile(out);
  r.exit_code = status->signaled ? -1 : status->code;
  return r;
}

inline std::filesystem::path SourceDir() {
  const char* s = std::getenv("CADDIE_SOURCE_DIR");
  return s != nullptr ? std::filesystem::path(s) : std::filesystem::path(CADDIE_SOURCE_DIR_FALLBACK);
}

// The metric selectors a PromQL expression reads: each caddie_* metric name
// or `up`, with its {matchers} when written. Relies on caddie's naming (all
// metrics start with caddie_) so label names in by()/on() are never taken.
inline std::vector<std::string> MetricSelectors(const std::string& expr) {
  static const std::regex kSelector(R"((^|[^a-zA-Z0-9_:])((caddie_[a-zA-Z0-9_:]*|up)(\{[^}]*\})?))");
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), kSelector);
       it != std::sregex_iterator(); ++it) {
    const std::string sel = (*it)[2].str();
    // `up` followed by '(' would be a function; there is none such in PromQL,
    // but skip identifiers that continue as a call anyway.
    const size_t end = it->position(2) + it->length(2);
    if (end < expr.size() && expr[end] == '(') continue;
    if (seen.insert(sel).second) out.push_back(sel);
  }
  return out;
}

}  // namespace caddie::obs_test
