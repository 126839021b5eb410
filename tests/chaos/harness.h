// Shared by the reliability suite (tests/chaos, tests/badinput, tests/security,
// bench/load): run a program to its exit with its output, start a real
// caddie-controller process on a free loopback port and wait for its
// "listening on" line, and make authenticated gRPC stubs.
//
// Not thread-safe: one thread owns each object.
#pragma once

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "caddie/v1/user_service.grpc.pb.h"
#include "caddie/v1/worker_service.grpc.pb.h"
#include "common/subprocess.h"
#include "tests/worker/process.h"

namespace caddie::reliability {

inline std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunResult {
  ExitStatus status;
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv to its exit (SIGKILL after `timeout`: DeadlineExceeded) with
// stdout + stderr captured through a file in `scratch`.
inline absl::StatusOr<RunResult> RunToExit(const std::vector<std::string>& argv, const std::filesystem::path& scratch,
                                           std::vector<std::pair<std::string, std::string>> env = {},
                                           std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  static int n = 0;
  const auto log = scratch / ("run_" + std::to_string(getpid()) + "_" + std::to_string(n++) + ".log");
  std::filesystem::create_directories(scratch);
  std::filesystem::remove(log);
  SpawnOptions o;
  o.argv = argv;
  o.env = CurrentEnvironment();
  for (const auto& [k, v] : env) SetEnv(&o.env, k, v);
  o.stdout_path = log.string();
  o.stderr_path = log.string();
  auto child = Spawn(o);
  if (!child.ok()) return child.status();
  const auto end = std::chrono::steady_clock::now() + timeout;
  std::optional<ExitStatus> st;
  while (!(st = TryReap(child->pid)) && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!st) {
    kill(child->pid, SIGKILL);
    waitpid(child->pid, nullptr, 0);
    return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not exit within ", timeout.count(), " ms"));
  }
  RunResult r{*st, ReadAll(log)};
  std::filesystem::remove(log);
  return r;
}

// Polls `pred` every 20 ms until it holds or `timeout` passes; its last answer.
inline bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// GET http://HOST:PORT/metrics; "" when it does not answer 200.
inline std::string ScrapeMetrics(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return "";
  httplib::Client http(host_port.substr(0, colon), std::stoi(host_port.substr(colon + 1)));
  auto res = http.Get("/metrics");
  return res && res->status == 200 ? res->body : std::string();
}

// The value of one series (`name{labels}` as exposed) in Prometheus text; NaN when absent.
inline double SeriesValue(const std::string& text, const std::string& series) {
  const std::string key = series + " ";
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + key.size()));
  }
  return std::nan("");
}

// Waits until `log` contains a match of `re`; returns group 1 of the match.
inline std::optional<std::string> WaitForLogMatch(testing_support::Process& p, const std::regex& re,
                                                  std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    const std::string log = p.Log();
    std::smatch m;
    if (std::regex_search(log, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
    if (!p.running()) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

// A caddie-controller process. Start() picks a free port (port 0) and reads it
// from the "listening on" line; Restart() reuses the same port and database.
class ControllerProcess {
 public:
  ControllerProcess(std::string binary, std::filesystem::path dir) : binary_(std::move(binary)), dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
  }

  // extra: more flags (tokens, TLS, lease TTL ...).
  absl::Status Start(std::vector<std::string> extra, std::vector<std::pair<std::string, std::string>> env = {},
                     int port = 0) {
    extra_ = std::move(extra);
    env_ = std::move(env);
    return Launch(port);
  }
  absl::Status Restart() { return Launch(port_); }

  void Kill9() {
    if (proc_) {
      proc_->Signal(SIGKILL);
      proc_->Wait(std::chrono::seconds(10));
    }
  }
  void Terminate() {
    if (proc_) {
      proc_->Signal(SIGTERM);
      if (!proc_->Wait(std::chrono::seconds(10))) proc_->Kill();
    }
  }
  bool running() { return proc_ && proc_->running(); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int port() const { return port_; }
  pid_t pid() const { return proc_ ? proc_->pid() : -1; }
  std::string http_address() const { return http_; }
  std::filesystem::path db() const { return dir_ / "caddie.db"; }
  std::filesystem::path log_path() const { return dir_ / "controller.log"; }
  std::string Log() const { return ReadAll(log_path()); }

 private:
  absl::Status Launch(int port) {
    proc_ = std::make_unique<testing_support::Process>();
    std::vector<std::string> argv = {binary_, "--db", db().string(), "--listen", absl::StrCat("127.0.0.1:", port),
                                     "--http-listen", http_.empty() ? "127.0.0.1:0" : http_};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    // Each start appends to the same log; remember where this start's lines begin.
    const size_t before = std::filesystem::exists(log_path()) ? std::filesystem::file_size(log_path()) : 0;
    if (auto s = proc_->Start(argv, log_path(), env_); !s.ok()) return s;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    static const std::regex kListen(R"(caddie-controller listening on [0-9.]+:(\d+))");
    static const std::regex kHttp(R"(caddie-controller http on ([0-9.]+:\d+))");
    while (std::chrono::steady_clock::now() < end) {
      const std::string log = Log().substr(before);
      std::smatch m;
      if (std::regex_search(log, m, kListen)) {
        port_ = std::stoi(m[1].str());
        std::smatch h;
        if (std::regex_search(log, h, kHttp)) http_ = h[1].str();
        return absl::OkStatus();
      }
      if (!proc_->running()) return absl::InternalError("caddie-controller exited at start:\n" + log);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return absl::DeadlineExceededError("caddie-controller did not print its address:\n" + Log());
  }

  std::string binary_;
  std::filesystem::path dir_;
  std::vector<std::string> extra_;
  std::vector<std::pair<std::string, std::string>> env_;
  std::unique_ptr<testing_support::Process> proc_;
  int port_ = 0;
  std::string http_;
};

// A client context carrying `authorization: Bearer <token>` ("" = none) and a deadline.
inline std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token, double seconds = 10) {
  auto c = std::make_unique<grpc::ClientContext>();
  if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
  c->set_deadline(std::chrono::system_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return c;
}

inline std::shared_ptr<grpc::Channel> Insecure(const std::string& addr) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(128 << 20);
  return grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
}

}  // namespace caddie::reliability
