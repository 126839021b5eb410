#include "worker/job_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/events.h"
#include "common/core/train_spec.h"
#include "common/subprocess.h"
#include "spdlog/spdlog.h"

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;
namespace ev = caddie::events;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using caddie::v1::ExitReason;
using caddie::v1::JobState;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Clock::duration ToDuration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void KillGroup(pid_t pgid, int sig) {
  if (pgid > 0) kill(-pgid, sig);
}

// Why the worker stopped the ranks, if it did.
enum class StopCause { kNone, kCancel, kAbandon, kTimeLimit, kEvalLimit, kNoProgress };

ExitReason ExitReasonFromTrainer(const std::string& s) {
  if (s == ev::kCompleted) return caddie::v1::EXIT_REASON_COMPLETED;
  if (s == ev::kTimeBudget) return caddie::v1::EXIT_REASON_TIME_BUDGET;
  if (s == ev::kTerminated) return caddie::v1::EXIT_REASON_TERMINATED;
  return caddie::v1::EXIT_REASON_UNSPECIFIED;
}

template <typename T>
T Num(const json& j, const char* key, T def) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return def;
  return it->get<T>();
}

}  // namespace

double EstimateTrainingSeconds(double since_start_s, std::optional<double> reported_train_s,
                               double since_report_s, double max_excluded_s) {
  const double floor_s = since_start_s - max_excluded_s;
  if (!reported_train_s) return since_start_s;
  return std::max(*reported_train_s + since_report_s, floor_s);
}

EffectiveBudget ResolveBudget(const caddie::v1::Budget& b) {
  EffectiveBudget e;
  if (b.train_seconds() > 0) e.train_seconds = b.train_seconds();
  if (b.eval_seconds() > 0) e.eval_seconds = b.eval_seconds();
  if (b.artifact_limit_bytes() > 0) e.artifact_limit_bytes = b.artifact_limit_bytes();
  if (b.grace_seconds() > 0) e.grace_seconds = b.grace_seconds();
  return e;
}

caddie::v1::Event ParseEventLine(const std::string& line, double now_unix) {
  caddie::v1::Event e;
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains(ev::kEvent) && j[ev::kEvent].is_string()) {
    e.set_type(j[ev::kEvent].get<std::string>());
    e.set_time_unix(Num<double>(j, ev::kTime, now_unix));
    e.set_step(Num<int64_t>(j, ev::kStepNum, 0));
    e.set_json(line);
    return e;
  }
  // Not an event: keep the line as a log event so nothing the trainer printed is lost.
  e.set_type("log");
  e.set_time_unix(now_unix);
  e.set_json(json{{ev::kEvent, "log"}, {ev::kTime, now_unix}, {ev::kMessage, line}}.dump(
      -1, ' ', false, json::error_handler_t::replace));
  return e;
}

std::vector<std::string> WithoutSecrets(std::vector<std::string> env,
                                        const std::vector<std::string>& withheld_values) {
  std::erase_if(env, [&](const std::string& kv) {
    const size_t eq = kv.find('=');
    const std::string_view name = std::string_view(kv).substr(0, eq);
    if (name.starts_with("CADDIE_") && name.find("TOKEN") != std::string_view::npos) return true;
    if (eq == std::string::npos) return false;
    const std::string_view value = std::string_view(kv).substr(eq + 1);
    return std::any_of(withheld_values.begin(), withheld_values.end(),
                       [&](const std::string& w) { return !w.empty() && value == w; });
  });
  return env;
}

std::string TailFile(const std::string& path, int n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = std::max<std::streamoff>(0, size - 64 * 1024);  // tails are short
  in.seekg(start);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::deque<std::string> lines;
  std::istringstream ss(text);
  for (std::string l; std::getline(ss, l);) {
    lines.push_back(l);
    if (static_cast<int>(lines.size()) > n) lines.pop_front();
  }
  return absl::StrJoin(lines, "\n");
}

// State the stdout reader thread shares with Run's monitor loop.
struct JobRunner::Shared {
  absl::Mutex mu;
  std::vector<caddie::v1::Event> pending ABSL_GUARDED_BY(mu);
  int64_t next_seq ABSL_GUARDED_BY(mu) = 1;
  Clock::time_point last_event ABSL_GUARDED_BY(mu);
  std::optional<Clock::time_point> start_at ABSL_GUARDED_BY(mu);
  std::optional<Clock::time_point> training_over_at ABSL_GUARDED_BY(mu);
  bool term_sent ABSL_GUARDED_BY(mu) = false;  // SIGTERM at the training limit went out
  // The trainer's own training clock (train_time_s) at its latest step or val event.
  std::optional<double> reported_train_s ABSL_GUARDED_BY(mu);
  Clock::time_point reported_at ABSL_GUARDED_BY(mu);
  std::optional<json> final_event ABSL_GUARDED_BY(mu);
  std::string error_message ABSL_GUARDED_BY(mu);
  bool eof ABSL_GUARDED_BY(mu) = false;
  std::atomic<bool> stop{false};
};

JobRunner::JobRunner(RunnerConfig config, JobAssignment assignment, EventBatchFn on_events)
    : JobRunner(std::move(config), std::move(assignment),
                [on_events = std::move(on_events)](std::vector<caddie::v1::Event> events,
                                                   std::vector<caddie::v1::LogChunk>) {
                  if (!events.empty()) on_events(std::move(events));
                }) {}

JobRunner::JobRunner(RunnerConfig config, JobAssignment assignment, ReportBatchFn on_batch)
    : config_(std::move(config)), assignment_(std::move(assignment)), on_batch_(std::move(on_batch)) {}

void JobRunner::Cancel(const std::string& reason, bool early_stopped) {
  absl::MutexLock l(&mu_);
  if (cancel_ || abandon_) return;
  cancel_ = true;
  early_stopped_ = early_stopped;
  cancel_reason_ = reason;
  KillGroup(pgid_.load(), SIGKILL);
}

void JobRunner::Abandon() {
  absl::MutexLock l(&mu_);
  abandon_ = true;
  KillGroup(pgid_.load(), SIGKILL);
}

JobOutcome JobRunner::Fail(ExitReason reason, std::string message, bool infra) const {
  JobOutcome o;
  o.state = caddie::v1::JOB_STATE_FAILED;
  o.exit_reason = reason;
  o.message = std::move(message);
  o.infra_failure = infra;
  return o;
}

JobOutcome JobRunner::Run() {
  const auto& job = assignment_.job;
  const EffectiveBudget budget = ResolveBudget(job.spec().budget());
  const double silence = config_.silence_seconds > 0
                             ? config_.silence_seconds
                             : std::max(budget.train_seconds, budget.eval_seconds) + budget.grace_seconds;
  const std::string& dir = assignment_.run_dir;
  const std::string tag = absl::StrCat(job.id(), "/a", job.attempt());

  // --- Run directory and spec ---
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Fail(caddie::v1::EXIT_REASON_INFRA_ERROR, absl::StrCat("cannot create run dir ", dir, ": ", ec.message()), true);
  json spec = json::parse(job.spec().spec_json().empty() ? "{}" : job.spec().spec_json(), nullptr, false);
  if (!spec.is_object()) {
    return Fail(caddie::v1::EXIT_REASON_CRASHED, "job spec_json is not a JSON object", false);
  }
  if (!spec.contains("max_wallclock_seconds")) spec["max_wallclock_seconds"] = budget.train_seconds;
  if (!spec.contains("data") && !config_.data_dir.empty()) spec["data"] = config_.data_dir;
  const TrainSpec defaults;
  const double trainer_budget = Num<double>(spec, "max_wallclock_seconds", defaults.max_wallclock_seconds);
  const int64_t iterations = Num<int64_t>(spec, "iterations", defaults.iterations);
  const std::string spec_path = (fs::path(dir) / "spec.json").string();
  {
    std::ofstream out(spec_path);
    out << spec.dump(2) << '\n';
    if (!out) return Fail(caddie::v1::EXIT_REASON_INFRA_ERROR, "cannot write " + spec_path, true);
  }

  // --- Launch the ranks: one process group, torchrun-style rendezvous env ---
  const int world = assignment_.gpu_indices.empty() ? 1 : static_cast<int>(assignment_.gpu_indices.size());
  auto port = PickFreePort();
  if (!port.ok()) return Fail(caddie::v1::EXIT_REASON_INFRA_ERROR, std::string(port.status().message()), true);
  // The trainer runs the job's code: it gets no caddie token (docs/contracts.md).
  std::vector<std::string> env = WithoutSecrets(CurrentEnvironment(), config_.withheld_values);
  // Every rank sees the job's GPUs and picks cuda:LOCAL_RANK among them (as under
  // torchrun); a CPU job sees none.
  SetEnv(&env, "CUDA_VISIBLE_DEVICES", absl::StrJoin(assignment_.gpu_indices, ","));
  SetEnv(&env, "WORLD_SIZE", std::to_string(world));
  SetEnv(&env, "LOCAL_WORLD_SIZE", std::to_string(world));
  SetEnv(&env, "MASTER_ADDR", "127.0.0.1");
  SetEnv(&env, "MASTER_PORT", std::to_string(*port));
  SetEnv(&env, "CADDIE_JOB_ID", job.id());
  SetEnv(&env, "CADDIE_ATTEMPT", std::to_string(job.attempt()));

  std::vector<pid_t> pids;
  int rank0_stdout = -1;
  const auto launched_at = Clock::now();
  for (int r = 0; r < world; ++r) {
    SpawnOptions o;
    o.argv = {config_.trainer, "--spec", spec_path, "--run-dir", dir};
    o.env = env;
    SetEnv(&o.env, "RANK", std::to_string(r));
    SetEnv(&o.env, "LOCAL_RANK", std::to_string(r));
    o.cwd = dir;
    o.pipe_stdout = r == 0;
    o.stdout_path = (fs::path(dir) / absl::StrCat("rank", r, ".stdout.log")).string();
    o.stderr_path = (fs::path(dir) / absl::StrCat("rank", r, ".stderr.log")).string();
    o.process_group = r == 0 ? 0 : pgid_.load();
    o.kill_with_parent = true;
    {
      // Under mu_ so a concurrent Cancel either sees the group or finds cancel_ set here.
      absl::MutexLock l(&mu_);
      if (cancel_ || abandon_) break;
      auto child = Spawn(o);
      if (!child.ok()) {
        KillGroup(pgid_.load(), SIGKILL);
        for (pid_t p : pids) {
          while (!TryReap(p)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (rank0_stdout >= 0) close(rank0_stdout);
        pgid_.store(-1);
        return Fail(caddie::v1::EXIT_REASON_INFRA_ERROR,
                    absl::StrCat("launching rank ", r, ": ", child.status().message()), true);
      }
      if (r == 0) {
        pgid_.store(child->pgid);
        rank0_stdout = child->stdout_fd;
      }
      pids.push_back(child->pid);
    }
  }
  spdlog::info("job {}: launched {} rank(s) of {} in {} (pgid {}, port {})", tag, pids.size(), config_.trainer,
               dir, pgid_.load(), *port);

  // --- Rank 0's stdout: a log file on disk and the event stream ---
  Shared sh;
  {
    absl::MutexLock l(&sh.mu);
    sh.last_event = launched_at;
  }
  std::thread reader;
  if (rank0_stdout >= 0) {
    reader = std::thread([&sh, fd = rank0_stdout, log_path = (fs::path(dir) / "rank0.stdout.log").string(),
                          trainer_budget, iterations] {
      std::ofstream log(log_path, std::ios::app | std::ios::binary);
      std::string buf;
      auto handle = [&](const std::string& line) {
        log << line << '\n';
        log.flush();
        caddie::v1::Event e = ParseEventLine(line, UnixNow());
        const auto now = Clock::now();
        json j = json::parse(e.json(), nullptr, false);
        absl::MutexLock l(&sh.mu);
        e.set_seq(sh.next_seq++);
        sh.last_event = now;
        if (e.type() == ev::kStart && !sh.start_at) sh.start_at = now;
        if ((e.type() == ev::kStep || e.type() == ev::kVal) && j.is_object() && j.contains(ev::kTrainTimeS)) {
          sh.reported_train_s = Num<double>(j, ev::kTrainTimeS, 0);
          sh.reported_at = now;
        }
        if (e.type() == ev::kVal && !sh.training_over_at) {
          const double t = Num<double>(j, ev::kTrainTimeS, 0);
          if ((trainer_budget > 0 && t >= trainer_budget) || e.step() >= iterations || sh.term_sent) {
            sh.training_over_at = now;
          }
        }
        if (e.type() == ev::kFinal) {
          sh.final_event = j;
          if (!sh.training_over_at) sh.training_over_at = now;
        }
        if (e.type() == ev::kError && j.is_object()) sh.error_message = j.value(ev::kMessage, "");
        sh.pending.push_back(std::move(e));
      };
      char chunk[8192];
      while (!sh.stop.load()) {
        pollfd p{fd, POLLIN, 0};
        const int r = poll(&p, 1, 100);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        const ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        buf.append(chunk, static_cast<size_t>(n));
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
          handle(buf.substr(0, nl));
          buf.erase(0, nl + 1);
        }
      }
      if (!buf.empty()) handle(buf);
      close(fd);
      absl::MutexLock l(&sh.mu);
      sh.eof = true;
    });
  }

  // --- Monitor: reap ranks, enforce limits, batch events ---
  struct RankState {
    pid_t pid;
    std::optional<ExitStatus> status;
  };
  std::vector<RankState> ranks;
  for (pid_t p : pids) ranks.push_back({p, std::nullopt});
  int first_failed_rank = -1;
  StopCause cause = StopCause::kNone;
  std::optional<Clock::time_point> time_term_at, eval_term_at;
  // Every rank's stderr, and the stdout of ranks > 0 (rank 0's is the events).
  LogTailer logs(config_.logs, job.attempt());
  for (int r = 0; r < world; ++r) {
    for (const char* stream : {log_streams::kStdout, log_streams::kStderr}) {
      if (!log_streams::SentAsChunks(r, stream)) continue;
      logs.Add(r, stream, (fs::path(dir) / absl::StrCat("rank", r, ".", stream, ".log")).string());
    }
  }
  auto last_flush = Clock::now();
  // `final`: the job's end — everything left goes, the log files' rest included.
  auto flush = [&](bool final) {
    const size_t batch_max = std::max<size_t>(config_.batch_max, 1);
    std::vector<caddie::v1::Event> events;
    {
      absl::MutexLock l(&sh.mu);
      if (!final && sh.pending.size() < batch_max && Clock::now() - last_flush < config_.batch_interval) return;
      events.swap(sh.pending);
    }
    std::vector<std::vector<caddie::v1::LogChunk>> chunks =
        GroupByBytes(logs.Poll(final), config_.batch_log_bytes);
    if (events.empty() && chunks.empty()) return;
    last_flush = Clock::now();
    for (auto& e : events) e.set_attempt(job.attempt());
    // At most batch_max events a batch (a fast trainer outruns the poll); the log chunk
    // groups ride along in order, past the events in batches of their own.
    const size_t batches = std::max((events.size() + batch_max - 1) / batch_max, chunks.size());
    for (size_t b = 0, next = 0; b < batches; ++b) {
      const size_t end = std::min(events.size(), next + batch_max);
      std::vector<caddie::v1::Event> batch(std::make_move_iterator(events.begin() + static_cast<std::ptrdiff_t>(next)),
                                           std::make_move_iterator(events.begin() + static_cast<std::ptrdiff_t>(end)));
      next = end;
      on_batch_(std::move(batch), b < chunks.size() ? std::move(chunks[b]) : std::vector<caddie::v1::LogChunk>{});
    }
  };
  while (true) {
    const auto now = Clock::now();
    // Our own kills first, so that a rank dying of our SIGKILL is not taken for a crash.
    if (cause == StopCause::kNone) {
      absl::MutexLock l(&mu_);
      if (abandon_) cause = StopCause::kAbandon;
      else if (cancel_) cause = StopCause::kCancel;
    }
    bool all_done = true;
    for (size_t r = 0; r < ranks.size(); ++r) {
      if (ranks[r].status) continue;
      ranks[r].status = TryReap(ranks[r].pid);
      if (!ranks[r].status) {
        all_done = false;
        continue;
      }
      if (!ranks[r].status->ok() && first_failed_rank < 0 && cause == StopCause::kNone && !time_term_at &&
          !eval_term_at) {
        // One rank died on its own: the others would hang in a collective; take them down.
        first_failed_rank = static_cast<int>(r);
        spdlog::warn("job {}: rank {} exited with {}; killing the other ranks", tag, r,
                     ranks[r].status->ToString());
        KillGroup(pgid_.load(), SIGKILL);
      }
    }
    if (cause == StopCause::kNone && first_failed_rank < 0 && !all_done) {
      Clock::time_point start, last_event, reported_at;
      std::optional<Clock::time_point> over;
      std::optional<double> reported_train_s;
      {
        absl::MutexLock l(&sh.mu);
        start = sh.start_at.value_or(launched_at);
        last_event = sh.last_event;
        over = sh.training_over_at;
        reported_train_s = sh.reported_train_s;
        reported_at = sh.reported_at;
      }
      const auto grace = ToDuration(budget.grace_seconds);
      const double training_clock_s = EstimateTrainingSeconds(
          Seconds(now - start), reported_train_s, reported_train_s ? Seconds(now - reported_at) : 0,
          budget.eval_seconds);
      // A trainer silent since its start (a slow warm-up, a step longer than the budget)
      // reaches the default silence limit (max(train, eval) + grace) together with the
      // SIGTERM's grace: that grace comes first, or it could not finish its step and report.
      const bool silent_too_long = now - last_event >= ToDuration(silence);
      const bool in_term_grace = (time_term_at && now < *time_term_at + grace) ||
                                 (eval_term_at && now < *eval_term_at + grace);
      if (!over && !time_term_at && training_clock_s >= budget.train_seconds) {
        spdlog::warn("job {}: training limit {} s reached (training clock {:.1f} s): SIGTERM", tag,
                     budget.train_seconds, training_clock_s);
        {
          absl::MutexLock l(&sh.mu);
          sh.term_sent = true;
        }
        time_term_at = now;
        KillGroup(pgid_.load(), SIGTERM);
      } else if (!over && time_term_at && now >= *time_term_at + grace) {
        // Silent all along, and still after the SIGTERM: no progress (as before), not a budget outcome.
        spdlog::warn("job {}: still training {} s after SIGTERM{}: SIGKILL", tag, budget.grace_seconds,
                     silent_too_long ? absl::StrCat(", no event for ", silence, " s") : "");
        cause = silent_too_long ? StopCause::kNoProgress : StopCause::kTimeLimit;
        KillGroup(pgid_.load(), SIGKILL);
      } else if (over && !eval_term_at && now >= *over + ToDuration(budget.eval_seconds)) {
        spdlog::warn("job {}: evaluation limit {} s reached: SIGTERM", tag, budget.eval_seconds);
        eval_term_at = now;
        KillGroup(pgid_.load(), SIGTERM);
      } else if (eval_term_at && now >= *eval_term_at + grace) {
        spdlog::warn("job {}: still evaluating {} s after SIGTERM: SIGKILL", tag, budget.grace_seconds);
        cause = StopCause::kEvalLimit;
        KillGroup(pgid_.load(), SIGKILL);
      } else if (silent_too_long && !in_term_grace) {
        spdlog::warn("job {}: no event for {} s: SIGKILL (no progress)", tag, silence);
        cause = StopCause::kNoProgress;
        KillGroup(pgid_.load(), SIGKILL);
      }
    }
    flush(false);
    if (all_done) break;
    std::this_thread::sleep_for(config_.poll);
  }

  // Every rank is reaped; anything else left in the group (a trainer's own
  // children) goes too, so the job leaves no orphan.
  KillGroup(pgid_.load(), SIGKILL);
  if (reader.joinable()) {
    {
      absl::MutexLock l(&sh.mu);
      sh.mu.AwaitWithTimeout(absl::Condition(&sh.eof), absl::Seconds(2));
    }
    sh.stop.store(true);
    reader.join();
  }
  {
    absl::MutexLock l(&mu_);
    pgid_.store(-1);
  }
  flush(true);

  // --- Outcome ---
  std::optional<json> final_event;
  std::string error_message;
  {
    absl::MutexLock l(&sh.mu);
    final_event = sh.final_event;
    error_message = sh.error_message;
  }
  JobOutcome out;
  if (final_event) {
    // Figures the trainer reported; the artifact size is re-measured below.
    const json& f = *final_event;
    auto* r = &out.result;
    r->set_steps(Num<int64_t>(f, ev::kSteps, 0));
    r->set_train_seconds(Num<double>(f, ev::kTrainTimeS, 0));
    r->set_val_bpb(Num<double>(f, ev::kValBpb, NAN));
    r->set_val_bpb_post_quant(Num<double>(f, ev::kValBpbPostQuant, NAN));
    r->set_artifact_bytes(Num<int64_t>(f, ev::kArtifactBytes, 0));
    r->set_limit_bytes(budget.artifact_limit_bytes);
    r->set_within_budget(f.value(ev::kWithinBudget, false));
    r->set_parameters(Num<int64_t>(f, ev::kParams, 0));
    r->set_tokens_per_second(Num<double>(f, ev::kTokensPerS, 0));
    r->set_final_json(f.dump());
  }
  if (cause == StopCause::kAbandon) {
    out.abandoned = true;
    out.message = "lease lost";
    return out;
  }
  if (cause == StopCause::kCancel) {
    absl::MutexLock l(&mu_);
    out.state = caddie::v1::JOB_STATE_CANCELLED;
    out.exit_reason = early_stopped_ ? caddie::v1::EXIT_REASON_EARLY_STOPPED : caddie::v1::EXIT_REASON_CANCELLED;
    out.message = cancel_reason_.empty() ? "cancelled" : cancel_reason_;
    return out;
  }
  auto rank_report = [&](int r) {
    std::string m = absl::StrCat("rank ", r, " exited with ", ranks[r].status->ToString());
    if (!error_message.empty()) absl::StrAppend(&m, "; trainer error: ", error_message);
    const std::string tail = TailFile((fs::path(dir) / absl::StrCat("rank", r, ".stderr.log")).string(), 20);
    if (!tail.empty()) absl::StrAppend(&m, "; last lines of rank", r, ".stderr.log:\n", tail);
    return m;
  };
  if (first_failed_rank >= 0) {
    const ExitStatus& s = *ranks[first_failed_rank].status;
    // Exit code 2 is the trainer's "bad spec or data": the job's own fault, not the node's.
    const bool bad_input = !s.signaled && s.code == 2;
    JobOutcome f = Fail(caddie::v1::EXIT_REASON_CRASHED, rank_report(first_failed_rank), !bad_input);
    f.result = out.result;
    return f;
  }
  if (cause == StopCause::kNoProgress) {
    return Fail(caddie::v1::EXIT_REASON_NO_PROGRESS,
                absl::StrCat("no event from the trainer for ", silence, " s (silence limit): killed"), true);
  }
  if (cause == StopCause::kTimeLimit) {
    JobOutcome f = Fail(caddie::v1::EXIT_REASON_TIME_LIMIT_KILLED,
                        absl::StrCat("training limit ", budget.train_seconds, " s: SIGTERM, then SIGKILL after ",
                                     budget.grace_seconds, " s grace"),
                        false);
    f.result = out.result;
    return f;
  }
  if (cause == StopCause::kEvalLimit) {
    JobOutcome f = Fail(caddie::v1::EXIT_REASON_EVAL_LIMIT_KILLED,
                        absl::StrCat("evaluation limit ", budget.eval_seconds, " s: SIGTERM, then SIGKILL after ",
                                     budget.grace_seconds, " s"),
                        false);
    f.result = out.result;
    return f;
  }
  for (size_t r = 0; r < ranks.size(); ++r) {
    if (!ranks[r].status->ok()) {
      // Died after our SIGTERM at a limit.
      JobOutcome f = Fail(eval_term_at ? caddie::v1::EXIT_REASON_EVAL_LIMIT_KILLED
                                       : caddie::v1::EXIT_REASON_TIME_LIMIT_KILLED,
                          absl::StrCat(eval_term_at ? "evaluation" : "training", " limit: SIGTERM; ",
                                       rank_report(static_cast<int>(r))),
                          false);
      f.result = out.result;
      return f;
    }
  }
  if (!final_event) {
    return Fail(caddie::v1::EXIT_REASON_CRASHED,
                "the trainer exited 0 without a final event" +
                    (error_message.empty() ? std::string() : "; trainer error: " + error_message),
                false);
  }
  // Success as far as the trainer is concerned: check the artifact on disk.
  const json& f = *final_event;
  std::string artifact = f.value(ev::kArtifactPath, "");
  if (!artifact.empty() && fs::path(artifact).is_relative()) artifact = (fs::path(dir) / artifact).string();
  const int64_t code_bytes = Num<int64_t>(f, ev::kCodeBytes, 0);
  if (artifact.empty() || !fs::is_regular_file(artifact, ec)) {
    JobOutcome fo = Fail(caddie::v1::EXIT_REASON_CRASHED,
                         "the final event names no artifact file on disk (artifact_path \"" +
                             f.value(ev::kArtifactPath, "") + "\")",
                         false);
    fo.result = out.result;
    return fo;
  }
  const int64_t file_bytes = static_cast<int64_t>(fs::file_size(artifact, ec));
  const int64_t total = file_bytes + code_bytes;
  const int64_t reported = out.result.artifact_bytes();
  out.result.set_artifact_bytes(total);
  out.result.set_within_budget(total <= budget.artifact_limit_bytes);
  if (total > budget.artifact_limit_bytes) {
    out.state = caddie::v1::JOB_STATE_OVER_BUDGET;
    out.exit_reason = caddie::v1::EXIT_REASON_OVER_BUDGET;
    out.message = absl::StrCat("artifact is ", total, " bytes (", artifact, ": ", file_bytes, " + code ", code_bytes,
                               "), over the limit of ", budget.artifact_limit_bytes, " bytes");
    if (reported != total) absl::StrAppend(&out.message, "; the trainer reported ", reported);
    return out;
  }
  out.state = caddie::v1::JOB_STATE_SUCCEEDED;
  out.exit_reason = ExitReasonFromTrainer(f.value(ev::kExitReason, ""));
  // The trainer's own budget and our SIGTERM can end the same step; its exit reason says which.
  if (time_term_at && out.exit_reason == caddie::v1::EXIT_REASON_TERMINATED) {
    out.message = "stopped by SIGTERM at the training limit";
  }
  if (reported != total) {
    absl::StrAppend(&out.message, out.message.empty() ? "" : "; ", "artifact measured on disk: ", total,
                    " bytes (trainer reported ", reported, ")");
  }
  return out;
}

}  // namespace caddie::worker
