// Subprocess: starts programs with fork + execve — never through a shell — with
// an explicit argv, environment, working directory, output files and process
// group, and reports exec failures (ENOENT, EACCES) as a Status instead of a
// child that exits 127. Shared by caddie-worker (trainer ranks) and the CLI
// (`caddie up` spawns a controller and a worker).
//
// Thread-safety: the free functions are safe to call from any thread; the
// child only calls async-signal-safe functions between fork and exec.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace caddie {

struct SpawnOptions {
  // argv[0] is the program: a path containing '/' is executed as is; a bare
  // name is looked up in PATH of `env` (execvpe semantics, still no shell).
  std::vector<std::string> argv;
  // The child's whole environment, "KEY=VALUE" entries.
  std::vector<std::string> env;
  // Working directory ("" = inherit).
  std::string cwd;
  // Where stdout / stderr go: a file opened for append (created 0644), or ""
  // for /dev/null. Ignored for stdout when `pipe_stdout` is set.
  std::string stdout_path;
  std::string stderr_path;
  // stdout goes to a pipe whose read end is returned in Child::stdout_fd.
  bool pipe_stdout = false;
  // Process group: 0 makes the child the leader of a new group (pgid = pid);
  // > 0 joins that existing group; -1 stays in the parent's group.
  pid_t process_group = -1;
  // Linux: the child gets SIGKILL when the thread that spawned it exits, so a
  // crashed parent leaves no orphan. The spawning thread must outlive the child.
  bool kill_with_parent = false;
};

struct Child {
  pid_t pid = -1;
  pid_t pgid = -1;
  int stdout_fd = -1;  // read end when pipe_stdout; the caller closes it
};

// Starts the child. InvalidArgument for an empty argv; NotFound / PermissionDenied
// (naming the program) when exec fails; Internal when an output file cannot be
// opened (naming it) or fork fails.
absl::StatusOr<Child> Spawn(const SpawnOptions& options);

// The current process's environment as "KEY=VALUE" entries.
std::vector<std::string> CurrentEnvironment();

// Replaces or adds KEY in `env`.
void SetEnv(std::vector<std::string>* env, const std::string& key, const std::string& value);

// Exit status of a reaped child, decoded from waitpid's status.
struct ExitStatus {
  bool signaled = false;
  int code = 0;    // exit code when !signaled
  int signal = 0;  // terminating signal when signaled
  bool ok() const { return !signaled && code == 0; }
  // "exit code 3" / "signal 9 (Killed)".
  std::string ToString() const;
};
ExitStatus DecodeWaitStatus(int wait_status);

// Reaps `pid` if it has exited (non-blocking). nullopt while it is running.
std::optional<ExitStatus> TryReap(pid_t pid);

// Runs `argv` to completion with stdout captured (stderr to /dev/null), killing
// it after `timeout`. DeadlineExceeded on timeout; the Spawn errors; Internal
// when it exits non-zero (naming the status).
absl::StatusOr<std::string> RunAndCapture(const std::vector<std::string>& argv,
                                          std::chrono::milliseconds timeout);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
// closed). Unavailable when no socket can be bound.
absl::StatusOr<int> PickFreePort();

}  // namespace caddie
