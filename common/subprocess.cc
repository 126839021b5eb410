#include "common/subprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace caddie {
namespace {

// Opens `path` for append (or /dev/null) with O_CLOEXEC; -1 and errno on failure.
int OpenOutput(const std::string& path) {
  if (path.empty()) return open("/dev/null", O_WRONLY | O_CLOEXEC);
  return open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

// Writes errno to `fd` and exits; only async-signal-safe calls.
[[noreturn]] void ChildFail(int fd, int err) {
  ssize_t unused = write(fd, &err, sizeof(err));
  (void)unused;
  _exit(127);
}

}  // namespace

absl::StatusOr<Child> Spawn(const SpawnOptions& options) {
  if (options.argv.empty() || options.argv[0].empty()) {
    return absl::InvalidArgumentError("spawn: empty argv");
  }
  // Everything the child needs is built before fork: it may only call
  // async-signal-safe functions afterwards (other threads may hold malloc's lock).
  std::vector<char*> argv, envp;
  for (const auto& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : options.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const bool has_slash = options.argv[0].find('/') != std::string::npos;

  const int out_fd = options.pipe_stdout ? -1 : OpenOutput(options.stdout_path);
  if (!options.pipe_stdout && out_fd < 0) {
    return absl::InternalError(absl::StrCat("spawn ", options.argv[0], ": cannot open stdout file ",
                                            options.stdout_path, ": ", std::strerror(errno)));
  }
  const int err_fd = OpenOutput(options.stderr_path);
  if (err_fd < 0) {
    const int e = errno;
    if (out_fd >= 0) close(out_fd);
    return absl::InternalError(absl::StrCat("spawn ", options.argv[0], ": cannot open stderr file ",
                                            options.stderr_path, ": ", std::strerror(e)));
  }
  int out_pipe[2] = {-1, -1};
  int exec_pipe[2] = {-1, -1};
  auto close_all = [&] {
    for (int fd : {out_fd, err_fd, out_pipe[0], out_pipe[1], exec_pipe[0], exec_pipe[1]}) {
      if (fd >= 0) close(fd);
    }
  };
  if ((options.pipe_stdout && pipe2(out_pipe, O_CLOEXEC) != 0) || pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int e = errno;
    close_all();
    return absl::InternalError(absl::StrCat("spawn ", options.argv[0], ": pipe: ", std::strerror(e)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int e = errno;
    close_all();
    return absl::InternalError(absl::StrCat("spawn ", options.argv[0], ": fork: ", std::strerror(e)));
  }
  if (pid == 0) {
    // Child.
    const int report = exec_pipe[1];
    if (options.kill_with_parent) {
      if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) ChildFail(report, errno);
      if (getppid() != parent) _exit(127);  // the parent died before prctl
    }
    if (options.process_group >= 0 && setpgid(0, options.process_group) != 0) ChildFail(report, errno);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) signal(sig, SIG_DFL);
    const int stdout_src = options.pipe_stdout ? out_pipe[1] : out_fd;
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(stdout_src, STDOUT_FILENO) < 0 ||
        dup2(err_fd, STDERR_FILENO) < 0) {
      ChildFail(report, errno);
    }
    // Close every other descriptor (some may lack O_CLOEXEC); keep the report pipe,
    // which closes itself on a successful exec.
    if (report > 3) syscall(SYS_close_range, 3u, static_cast<unsigned>(report - 1), 0u);
    syscall(SYS_close_range, static_cast<unsigned>(report + 1), UINT_MAX, 0u);
    if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) ChildFail(report, errno);
    if (has_slash) {
      execve(argv[0], argv.data(), envp.data());
    } else {
      execvpe(argv[0], argv.data(), envp.data());
    }
    ChildFail(report, errno);
  }
  // Parent. setpgid here too, so the group exists before we return (no race with kill).
  if (options.process_group >= 0) setpgid(pid, options.process_group == 0 ? pid : options.process_group);
  close(exec_pipe[1]);
  exec_pipe[1] = -1;
  if (out_pipe[1] >= 0) {
    close(out_pipe[1]);
    out_pipe[1] = -1;
  }
  if (out_fd >= 0) close(out_fd);
  close(err_fd);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(exec_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (n == sizeof(child_errno)) {
    int st = 0;
    waitpid(pid, &st, 0);
    if (out_pipe[0] >= 0) close(out_pipe[0]);
    const std::string msg = absl::StrCat("cannot execute ", options.argv[0], ": ", std::strerror(child_errno));
    if (child_errno == ENOENT) return absl::NotFoundError(msg);
    if (child_errno == EACCES || child_errno == EPERM) return absl::PermissionDeniedError(msg);
    return absl::InternalError(msg);
  }
  Child child;
  child.pid = pid;
  child.pgid = options.process_group == 0 ? pid : (options.process_group > 0 ? options.process_group : -1);
  child.stdout_fd = out_pipe[0];
  return child;
}

std::vector<std::string> CurrentEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  return env;
}

void SetEnv(std::vector<std::string>* env, const std::string& key, const std::string& value) {
  const std::string prefix = key + "=";
  for (auto& e : *env) {
    if (e.compare(0, prefix.size(), prefix) == 0) {
      e = prefix + value;
      return;
    }
  }
  env->push_back(prefix + value);
}

std::string ExitStatus::ToString() const {
  if (signaled) {
    const char* name = strsignal(signal);
    return absl::StrCat("signal ", signal, " (", name != nullptr ? name : "?", ")");
  }
  return absl::StrCat("exit code ", code);
}

ExitStatus DecodeWaitStatus(int wait_status) {
  ExitStatus s;
  if (WIFSIGNALED(wait_status)) {
    s.signaled = true;
    s.signal = WTERMSIG(wait_status);
  } else if (WIFEXITED(wait_status)) {
    s.code = WEXITSTATUS(wait_status);
  }
  return s;
}

std::optional<ExitStatus> TryReap(pid_t pid) {
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid) return DecodeWaitStatus(st);
  if (r < 0 && errno == ECHILD) return ExitStatus{.signaled = false, .code = -1, .signal = 0};
  return std::nullopt;
}

absl::StatusOr<std::string> RunAndCapture(const std::vector<std::string>& argv,
                                          std::chrono::milliseconds timeout) {
  SpawnOptions o;
  o.argv = argv;
  o.env = CurrentEnvironment();
  o.pipe_stdout = true;
  o.process_group = 0;
  auto child = Spawn(o);
  if (!child.ok()) return child.status();
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool eof = false;
  while (!eof) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{child->stdout_fd, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    char buf[4096];
    const ssize_t n = read(child->stdout_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof = true;
    } else {
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(child->stdout_fd);
  if (!eof) {
    kill(-child->pgid, SIGKILL);
    int st;
    waitpid(child->pid, &st, 0);
    return absl::DeadlineExceededError(
        absl::StrCat(argv[0], " did not finish within ", timeout.count(), " ms"));
  }
  int st = 0;
  while (waitpid(child->pid, &st, 0) < 0 && errno == EINTR) {
  }
  const ExitStatus es = DecodeWaitStatus(st);
  if (!es.ok()) return absl::InternalError(absl::StrCat(argv[0], " failed: ", es.ToString()));
  return out;
}

absl::StatusOr<int> PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("bind 127.0.0.1:0: ", std::strerror(e)));
  }
  close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

}  // namespace caddie
