#include "tests/cli/cli_harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "cli/up.h"

namespace caddie::clitest {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Waits for `pid` up to `timeout`; kills its group and reaps it past that.
int WaitWithTimeout(pid_t pid, std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    if (auto st = TryReap(pid)) return st->signaled ? 128 + st->signal : st->code;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  return 124;
}

void StopChild(const Child& c) {
  if (c.pid <= 0) return;
  kill(-c.pgid, SIGTERM);
  if (WaitWithTimeout(c.pid, std::chrono::seconds(10)) == 124) kill(-c.pgid, SIGKILL);
  kill(-c.pgid, SIGKILL);
}

}  // namespace

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "caddie_cli_test_XXXXXX").string();
  path_ = mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

void WriteFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

RunResult RunCaddie(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                    std::chrono::seconds timeout, const std::string& cwd) {
  TempDir out;
  SpawnOptions o;
  o.argv = {CADDIE_CLI_BIN};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  for (const std::string& kv : CurrentEnvironment()) {
    if (kv.rfind("CADDIE_ADDR=", 0) == 0 || kv.rfind("CADDIE_TOKEN=", 0) == 0) continue;
    o.env.push_back(kv);
  }
  SetEnv(&o.env, "NO_COLOR", "1");
  SetEnv(&o.env, "HOME", out.path());  // no user config file
  for (const auto& [k, v] : env) SetEnv(&o.env, k, v);
  o.cwd = cwd.empty() ? out.path() : cwd;
  o.stdout_path = out.path() + "/stdout";
  o.stderr_path = out.path() + "/stderr";
  o.process_group = 0;
  RunResult r;
  auto child = Spawn(o);
  if (!child.ok()) {
    r.err = std::string(child.status().message());
    return r;
  }
  r.code = WaitWithTimeout(child->pid, timeout);
  r.out = ReadFileOrEmpty(o.stdout_path);
  r.err = ReadFileOrEmpty(o.stderr_path);
  return r;
}

std::vector<std::string> ProcessesMentioning(const std::string& needle) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0])) || name == std::to_string(getpid())) continue;
    std::string cmd = ReadFileOrEmpty(e.path().string() + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(needle) != std::string::npos) found.push_back(name + ": " + cmd);
  }
  return found;
}

LocalCluster::LocalCluster(const std::string& fake_plan, bool with_worker, const std::string& user_token,
                           double heartbeat_seconds, const std::vector<std::string>& controller_args,
                           const std::vector<std::string>& worker_args) {
  SpawnOptions c;
  c.argv = {CADDIE_CONTROLLER_BIN, "--listen", "127.0.0.1:0", "--db", dir() + "/caddie.db", "--http-listen", "",
            "--sqlite-synchronous-normal"};
  if (heartbeat_seconds > 0) {
    c.argv.push_back("--heartbeat-interval");
    c.argv.push_back(absl::StrCat(heartbeat_seconds));
  }
  c.argv.insert(c.argv.end(), controller_args.begin(), controller_args.end());
  c.env = CurrentEnvironment();
  SetEnv(&c.env, "CADDIE_USER_TOKEN", user_token);
  SetEnv(&c.env, "CADDIE_WORKER_TOKEN", "");
  c.stdout_path = dir() + "/controller.log";
  c.stderr_path = dir() + "/controller.log";
  c.process_group = 0;
  c.kill_with_parent = true;
  auto child = Spawn(c);
  if (!child.ok()) {
    error_ = std::string(child.status().message());
    return;
  }
  controller_ = *child;
  const auto until = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < until) {
    const int port = cli::ParseListeningPort(ControllerLog());
    if (port > 0) {
      addr_ = absl::StrCat("127.0.0.1:", port);
      break;
    }
    if (TryReap(controller_.pid)) {
      error_ = "caddie-controller exited: " + ControllerLog();
      controller_ = Child();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (addr_.empty()) {
    error_ = "caddie-controller did not print its port: " + ControllerLog();
    return;
  }
  if (!with_worker) return;
  SpawnOptions w;
  w.argv = {CADDIE_WORKER_BIN, "--controller", addr_, "--work-dir", dir() + "/worker", "--trainer",
            CADDIE_FAKE_TRAIN_BIN, "--cpu-slots", "1", "--id", "test-worker", "--http", "",
            "--lease-interval", "0.2"};
  w.argv.insert(w.argv.end(), worker_args.begin(), worker_args.end());
  w.env = CurrentEnvironment();
  SetEnv(&w.env, "CADDIE_FAKE_TRAIN", fake_plan);
  SetEnv(&w.env, "CADDIE_WORKER_TOKEN", "");
  w.stdout_path = dir() + "/worker.log";
  w.stderr_path = dir() + "/worker.log";
  w.process_group = 0;
  w.kill_with_parent = true;
  auto wc = Spawn(w);
  if (!wc.ok()) {
    error_ = std::string(wc.status().message());
    return;
  }
  worker_ = *wc;
  // Registered once `caddie workers` lists it.
  const auto wuntil = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < wuntil) {
    RunResult r = Caddie({"workers", "--json"}, std::chrono::seconds(10), {{"CADDIE_TOKEN", user_token}});
    if (r.code == 0 && r.out.find("test-worker") != std::string::npos) return;
    if (TryReap(worker_.pid)) {
      error_ = "caddie-worker exited: " + WorkerLog();
      worker_ = Child();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  error_ = "caddie-worker did not register: " + WorkerLog();
}

void LocalCluster::KillWorker() {
  if (worker_.pid <= 0) return;
  kill(-worker_.pgid, SIGKILL);
  WaitWithTimeout(worker_.pid, std::chrono::seconds(10));
  worker_ = Child();
}

LocalCluster::~LocalCluster() {
  StopChild(worker_);
  StopChild(controller_);
}

RunResult LocalCluster::Caddie(std::vector<std::string> args, std::chrono::seconds timeout,
                               const std::map<std::string, std::string>& env) {
  args.insert(args.begin(), {"--addr", addr_});
  return RunCaddie(args, env, timeout);
}

absl::StatusOr<std::string> LocalCluster::SubmitSweepFile(const std::string& file_name, const std::string& yaml) {
  const std::string path = dir() + "/" + file_name;
  WriteFile(path, yaml);
  const RunResult r = Caddie({"sweep", "submit", path, "--json"});
  if (r.code != 0) return absl::InternalError(absl::StrCat("caddie sweep submit exited ", r.code, ": ", r.err));
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("jobs") || j["jobs"].empty() || !j["jobs"][0].contains("id")) {
    return absl::InternalError("caddie sweep submit --json printed no job id: " + r.out);
  }
  return j["jobs"][0]["id"].get<std::string>();
}

std::string LocalCluster::ControllerLog() const { return ReadFileOrEmpty(dir() + "/controller.log"); }
std::string LocalCluster::WorkerLog() const { return ReadFileOrEmpty(dir() + "/worker.log"); }

}  // namespace caddie::clitest
