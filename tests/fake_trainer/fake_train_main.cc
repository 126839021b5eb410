// caddie-fake-train: the caddie-train command line and event stream
// (docs/contracts.md) without LibTorch, driven by a plan so tests can make it
// misbehave. The plan is the JSON object in the environment variable
// CADDIE_FAKE_TRAIN, overlaid by the spec's "fake" object (the real trainer
// rejects that key; a controller that validates specs needs the env form).
//
// Plan keys (defaults in brackets):
//   steps [spec iterations, else 5], step_ms [50]   training steps and the time each takes
//   crash_at_step [0 = never]        exit with crash_exit_code [1] at that step,
//   crash_rank [-1 = every rank]     ... on this rank only
//   crash_signal [0]                 ... or raise this signal instead of exiting
//   crash_attempt [0 = every one]    ... in this attempt only ($CADDIE_ATTEMPT; a retry then runs)
//   ignore_sigterm [false]           SIGTERM is ignored (the worker must SIGKILL)
//   silent [false]                   after `start`, emit nothing and hang
//   silent_after_step [-1]           ... after this step
//   eval_ms [0]                      time between the last step and `final`
//   artifact_bytes [1000]            size of the artifact file written (rank 0)
//   reported_artifact_bytes [-1]     artifact_bytes claimed in `final` (-1 = true size)
//   code_bytes [0]                   code_bytes reported in `final`
//   exit_code [0]                    exit status after `final`
//   val_bpb [2.5]
//   dump_env [false]                 also write the whole environment into fake_rank<R>.json ("env")
//   warmup_ms [0]                    time between `start` and the training clock's start
//   val_every [0], val_ms [0]        a val event every val_every steps after val_ms of
//                                    evaluation, left off the training clock (as the real trainer)
//   clock_scale [1]                  train_time_s reported = this x the true training time
//                                    (< 1: a trainer whose clock lags)
//   spawn_child [false]              fork a child that sleeps forever (its pid: "child_pid")
// The spec's max_wallclock_seconds is honoured like the real trainer's budget
// (exit reason time_budget); SIGTERM stops after the current step (terminated).
// Each rank writes fake_rank<R>.json (pid and rendezvous env; all of the env
// with dump_env) into the run dir.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/core/events.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
namespace ev = caddie::events;
using json = nlohmann::json;

std::atomic<bool> g_term{false};
void OnTerm(int) { g_term.store(true); }

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void Emit(bool master, json j) {
  if (!master) return;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

void SleepMs(double ms) {
  std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long long>(ms * 1000)));
}

std::string EnvOr(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : def;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "caddie-fake-train: %s\n", msg.c_str());
  std::printf("{\"event\":\"error\",\"message\":%s}\n", json(msg).dump().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spec_path, data, run_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--version") {
      std::printf("caddie-fake-train\n");
      return 0;
    }
    if ((a == "--spec" || a == "--data" || a == "--run-dir") && i + 1 < argc) {
      (a == "--spec" ? spec_path : a == "--data" ? data : run_dir) = argv[++i];
    } else {
      return Fail("unknown argument \"" + a + "\"");
    }
  }
  if (spec_path.empty()) return Fail("--spec is required");
  json spec;
  {
    std::ifstream in(spec_path);
    if (!in) return Fail("cannot read spec file " + spec_path);
    spec = json::parse(in, nullptr, false);
    if (!spec.is_object()) return Fail(spec_path + ": not a JSON object");
  }
  json plan = json::object();
  if (const char* env = std::getenv("CADDIE_FAKE_TRAIN"); env != nullptr && *env != '\0') {
    plan = json::parse(env, nullptr, false);
    if (!plan.is_object()) return Fail("CADDIE_FAKE_TRAIN is not a JSON object");
  }
  if (spec.contains("fake")) {
    if (!spec["fake"].is_object()) return Fail("spec key \"fake\" must be an object");
    plan.update(spec["fake"]);
  }
  if (run_dir.empty()) run_dir = spec.value("run_dir", std::string());
  const int rank = std::atoi(EnvOr("RANK", "0").c_str());
  const int world = std::atoi(EnvOr("WORLD_SIZE", "1").c_str());
  const bool master = rank == 0;

  const long long steps = plan.value("steps", spec.value("iterations", 5LL));
  const double step_ms = plan.value("step_ms", 50.0);
  const long long crash_at = plan.value("crash_at_step", 0LL);
  const int crash_rank = plan.value("crash_rank", -1);
  const int crash_signal = plan.value("crash_signal", 0);
  const int crash_exit = plan.value("crash_exit_code", 1);
  const int crash_attempt = plan.value("crash_attempt", 0);
  const bool crash_now = crash_attempt == 0 || crash_attempt == std::atoi(EnvOr("CADDIE_ATTEMPT", "0").c_str());
  const bool silent = plan.value("silent", false);
  const long long silent_after = silent ? 0 : plan.value("silent_after_step", -1LL);
  const double eval_ms = plan.value("eval_ms", 0.0);
  const long long artifact_bytes = plan.value("artifact_bytes", 1000LL);
  const long long reported_bytes = plan.value("reported_artifact_bytes", -1LL);
  const long long code_bytes = plan.value("code_bytes", 0LL);
  const int exit_code = plan.value("exit_code", 0);
  const double val_bpb = plan.value("val_bpb", 2.5);
  const double budget_s = spec.value("max_wallclock_seconds", 600.0);
  const double warmup_ms = plan.value("warmup_ms", 0.0);
  const long long val_every = plan.value("val_every", 0LL);
  const double val_ms = plan.value("val_ms", 0.0);
  const double clock_scale = plan.value("clock_scale", 1.0);

  if (plan.value("ignore_sigterm", false)) {
    signal(SIGTERM, SIG_IGN);
  } else {
    struct sigaction sa {};
    sa.sa_handler = OnTerm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
  }
  if (!run_dir.empty()) {
    fs::create_directories(run_dir);
    json me = {{"pid", static_cast<long long>(getpid())}, {"rank", rank}, {"world_size", world}};
    if (plan.value("spawn_child", false)) {
      const pid_t child = fork();
      if (child == 0) {
        while (true) pause();  // a trainer's helper process: only the group kill ends it
      }
      me["child_pid"] = static_cast<long long>(child);
    }
    for (const char* k : {"CUDA_VISIBLE_DEVICES", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                          "MASTER_ADDR", "MASTER_PORT"}) {
      if (const char* v = std::getenv(k); v != nullptr) me[k] = v;
    }
    me["argv_data"] = data;
    if (plan.value("dump_env", false)) {
      json env = json::object();
      for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        const std::string kv = *e;
        const size_t eq = kv.find('=');
        env[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
      }
      me["env"] = env;
    }
    std::ofstream(fs::path(run_dir) / ("fake_rank" + std::to_string(rank) + ".json")) << me.dump() << '\n';
  }

  Emit(master, {{ev::kEvent, ev::kStart}, {ev::kTime, Now()}, {ev::kParams, 1234}, {ev::kWorldSize, world},
                {ev::kDevice, "cpu"}, {ev::kSpec, spec}, {ev::kCodeBytes, code_bytes}});
  auto hang = [] {
    while (true) SleepMs(1000);
  };
  if (silent_after == 0) hang();

  SleepMs(warmup_ms);
  // The training clock: wall time since warm-up, less in-training evaluation, times clock_scale.
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed_s = [&] {
    return clock_scale * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::string exit_reason = ev::kCompleted;
  long long step = 0;
  while (step < steps) {
    SleepMs(step_ms);
    ++step;
    std::fprintf(stderr, "fake-train rank %d step %lld\n", rank, step);
    if (crash_now && crash_at > 0 && step == crash_at && (crash_rank < 0 || crash_rank == rank)) {
      std::fprintf(stderr, "fake-train rank %d: crashing at step %lld\n", rank, step);
      std::fflush(stderr);
      if (crash_signal > 0) raise(crash_signal);
      return crash_exit;
    }
    Emit(master, {{ev::kEvent, ev::kStep}, {ev::kTime, Now()}, {ev::kStepNum, step}, {ev::kTrainLoss, 5.0 / step},
                  {ev::kLrScale, 1.0}, {ev::kTokensPerS, 1000.0}, {ev::kStepMs, step_ms},
                  {ev::kTrainTimeS, elapsed_s()}, {ev::kMemBytes, 0}});
    if (silent_after > 0 && step == silent_after) hang();
    if (val_every > 0 && step % val_every == 0 && step < steps) {
      const auto val_t0 = std::chrono::steady_clock::now();
      SleepMs(val_ms);
      t0 += std::chrono::steady_clock::now() - val_t0;
      Emit(master, {{ev::kEvent, ev::kVal}, {ev::kTime, Now()}, {ev::kStepNum, step}, {ev::kValLoss, val_bpb * 0.7},
                    {ev::kValBpb, val_bpb}, {ev::kTrainTimeS, elapsed_s()}});
    }
    if (budget_s > 0 && elapsed_s() >= budget_s) {
      exit_reason = ev::kTimeBudget;
      break;
    }
    if (g_term.load()) {
      exit_reason = ev::kTerminated;
      break;
    }
  }
  const double train_s = elapsed_s();
  Emit(master, {{ev::kEvent, ev::kVal}, {ev::kTime, Now()}, {ev::kStepNum, step}, {ev::kValLoss, val_bpb * 0.7},
                {ev::kValBpb, val_bpb}, {ev::kTrainTimeS, train_s}});
  SleepMs(eval_ms);
  std::string artifact_path;
  if (master && !run_dir.empty()) {
    artifact_path = (fs::path(run_dir) / "final_model.caddie").string();
    std::ofstream out(artifact_path, std::ios::binary);
    const std::string block(1 << 16, 'x');
    for (long long left = artifact_bytes; left > 0; left -= static_cast<long long>(block.size())) {
      out.write(block.data(), static_cast<std::streamsize>(std::min<long long>(left, block.size())));
    }
  }
  const long long total = (reported_bytes >= 0 ? reported_bytes : artifact_bytes) + code_bytes;
  Emit(master, {{ev::kEvent, ev::kFinal}, {ev::kTime, Now()}, {ev::kExitReason, exit_reason}, {ev::kSteps, step},
                {ev::kTrainTimeS, train_s}, {ev::kValLoss, val_bpb * 0.7}, {ev::kValBpb, val_bpb},
                {ev::kValBpbPostQuant, val_bpb + 0.01}, {ev::kQuantGap, 0.01}, {ev::kArtifactPath, artifact_path},
                {ev::kArtifactBytes, total}, {ev::kModelBytes, total - code_bytes}, {ev::kCodeBytes, code_bytes},
                {ev::kLimitBytes, ev::kArtifactLimitBytes}, {ev::kWithinBudget, total <= ev::kArtifactLimitBytes},
                {ev::kParams, 1234}, {ev::kTokensPerS, 1000.0}, {ev::kPeakMemBytes, 0}});
  return exit_code;
}
