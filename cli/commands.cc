#include "cli/commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/exit_codes.h"
#include "cli/interrupt.h"
#include "cli/render.h"
#include "cli/sweep_file.h"
#include "common/log_streams.h"

namespace caddie::cli {
namespace {

using nlohmann::json;

void Print(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

Style OutStyle(const GlobalOptions& g) { return Style(ShouldColor(STDOUT_FILENO, g.no_color)); }
Style ErrStyle(const GlobalOptions& g) { return Style(ShouldColor(STDERR_FILENO, g.no_color)); }

std::unique_ptr<Client> MakeClient(const GlobalOptions& g) {
  auto conn = ResolveFromGlobals(g);
  if (!conn.ok()) Fail(conn.status());
  return std::make_unique<Client>(*conn, g.timeout_s);
}

template <typename T>
T OrFail(absl::StatusOr<T> v) {
  if (!v.ok()) Fail(v.status());
  return *std::move(v);
}

// Ctrl-C during a streaming command cancels its calls, so it ends cleanly.
struct CancelOnInterrupt {
  explicit CancelOnInterrupt(Client* c) {
    OnInterrupt([c](int) { c->Cancel(); });
  }
  ~CancelOnInterrupt() { OnInterrupt(nullptr); }
};

// --- sweep validate / submit ---------------------------------------------

struct SweepArgs {
  std::string file;
  bool json = false;
  bool watch = false;
};

void PrintCheckHuman(const SweepCheck& c, const Style& out, const Style& err) {
  const std::string issues = FormatIssues(c, err.color());
  if (!issues.empty()) std::fputs(issues.c_str(), stderr);
  if (!c.ok()) {
    std::fprintf(stderr, "%s: %zu error%s; nothing was submitted\n", c.path.c_str(), c.errors.size(),
                 c.errors.size() == 1 ? "" : "s");
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : c.jobs) {
    std::string params;
    for (auto it = j.params.begin(); it != j.params.end(); ++it) {
      params += (params.empty() ? "" : " ") + it.key() + "=" +
                (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
    }
    rows.push_back({absl::StrCat(j.index), params.empty() ? "-" : params});
  }
  const auto& s = c.spec;
  const double train = s.budget().train_seconds() > 0 ? s.budget().train_seconds() : 600;
  Print(absl::StrCat(out.Bold("sweep " + s.name()), ": ", c.jobs.size(), " job", c.jobs.size() == 1 ? "" : "s",
                     " (", c.sweep_json.value("mode", "grid"), "), ",
                     s.gpus() == 0 ? std::string("CPU jobs") : absl::StrCat(s.gpus(), " GPU(s) per job"),
                     ", train budget ", FormatDuration(train), " per job (",
                     FormatDuration(train * static_cast<double>(c.jobs.size())), " of training in all), priority ",
                     s.priority(), ", up to ", s.max_attempts(), " attempts\n"));
  Print(FormatTable({"#", "PARAMS"}, rows, {0}, out));
}

json CheckJson(const SweepCheck& c) {
  json j = json::object();
  j["file"] = c.path;
  j["valid"] = c.ok();
  auto issues = [](const std::vector<SweepIssue>& v) {
    json a = json::array();
    for (const auto& i : v) {
      a.push_back({{"line", i.pos.line}, {"column", i.pos.column}, {"key", i.key}, {"message", i.message}});
    }
    return a;
  };
  j["errors"] = issues(c.errors);
  j["warnings"] = issues(c.warnings);
  if (c.ok()) {
    j["spec"] = ToJsonValue(c.spec);
    j["sweep"] = c.sweep_json;
    json jobs = json::array();
    for (const auto& job : c.jobs) jobs.push_back({{"index", job.index}, {"params", job.params}, {"spec", job.spec}});
    j["jobs"] = jobs;
  }
  return j;
}

void RunSweepValidate(const GlobalOptions& g, const SweepArgs& a) {
  SweepCheck c = CheckSweepFile(a.file);
  if (a.json) {
    Print(CheckJson(c).dump(2) + "\n");
  } else {
    PrintCheckHuman(c, OutStyle(g), ErrStyle(g));
  }
  if (!c.ok()) throw CLI::RuntimeError(kExitBadInput);
}

int WatchJob(const GlobalOptions& g, Client& client, const std::string& job_id, bool json_lines);

void RunSweepSubmit(const GlobalOptions& g, const SweepArgs& a) {
  SweepCheck c = CheckSweepFile(a.file);
  if (!c.ok()) {
    if (a.json) {
      Print(CheckJson(c).dump(2) + "\n");
    } else {
      PrintCheckHuman(c, OutStyle(g), ErrStyle(g));
    }
    throw CLI::RuntimeError(kExitBadInput);
  }
  if (!a.json) std::fputs(FormatIssues(c, ErrStyle(g).color()).c_str(), stderr);  // warnings
  auto client = MakeClient(g);
  v1::SubmitSweepRequest req;
  *req.mutable_spec() = c.spec;
  auto resp = OrFail(client->SubmitSweep(req));
  if (a.json) {
    Print(ToJsonString(resp) + "\n");
    return;
  }
  const Style st = OutStyle(g);
  v1::ListJobsResponse jobs;
  *jobs.mutable_jobs() = resp.jobs();
  Print(absl::StrCat("submitted sweep ", st.Bold(resp.sweep().id()), " (", resp.sweep().spec().name(), "): ",
                     resp.jobs_size(), " jobs\n"));
  Print(JobsTable(jobs, NowUnixMs(), st));
  Print(absl::StrCat("follow it with: caddie jobs --sweep ", resp.sweep().id(),
                     resp.jobs_size() > 0 ? absl::StrCat("  |  caddie watch ", resp.jobs(0).id()) : "", "\n"));
  if (a.watch && resp.jobs_size() > 0) {
    const int rc = WatchJob(g, *client, resp.jobs(0).id(), false);
    if (rc != 0) throw CLI::RuntimeError(rc);
  }
}

// --- read commands --------------------------------------------------------

struct ListArgs {
  std::string sweep;
  std::vector<std::string> states;
  int limit = 100;
  bool json = false;
  std::string id;
  bool follow = false;
  int tail = 0;
  std::string reason;
  int rank = 0;                  // logs
  std::string stream = log_streams::kStdout;  // logs
  int attempt = 0;               // logs: 0 = the current attempt
};

void RunSweeps(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  auto r = OrFail(client->ListSweeps(a.limit));
  Print(a.json ? ToJsonString(r) + "\n" : SweepsTable(r, NowUnixMs(), OutStyle(g)));
}

void RunSweepShow(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  auto s = OrFail(client->GetSweep(a.id));
  v1::ListJobsRequest req;
  req.set_sweep_id(a.id);
  req.set_limit(a.limit);
  auto jobs = OrFail(client->ListJobs(req));
  if (a.json) {
    json j = {{"sweep", ToJsonValue(s)}, {"jobs", ToJsonValue(jobs)["jobs"]}};
    Print(j.dump(2) + "\n");
    return;
  }
  v1::ListSweepsResponse one;
  *one.add_sweeps() = s;
  Print(SweepsTable(one, NowUnixMs(), OutStyle(g)) + "\n" + JobsTable(jobs, NowUnixMs(), OutStyle(g)));
}

void RunJobs(const GlobalOptions& g, const ListArgs& a) {
  v1::ListJobsRequest req;
  req.set_sweep_id(a.sweep);
  req.set_limit(a.limit);
  for (const std::string& s : a.states) {
    auto st = ParseState(s);
    if (!st) {
      Fail(absl::InvalidArgumentError(absl::StrCat("--state \"", s, "\" is not a job state; one of ", AllStateNames())));
    }
    req.add_states(*st);
  }
  auto client = MakeClient(g);
  auto r = OrFail(client->ListJobs(req));
  Print(a.json ? ToJsonString(r) + "\n" : JobsTable(r, NowUnixMs(), OutStyle(g)));
}

void RunJob(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  auto j = OrFail(client->GetJob(a.id));
  Print(a.json ? ToJsonString(j) + "\n" : JobDetail(j, NowUnixMs(), OutStyle(g)));
}

int ExitCodeForJob(const v1::Job& j) {
  return j.state() == v1::JOB_STATE_SUCCEEDED ? kExitOk : kExitJobFailed;
}

// Streams the job until it ends; on a terminal redraws one status line in place.
int WatchJob(const GlobalOptions& g, Client& client, const std::string& job_id, bool json_lines) {
  const Style st = OutStyle(g);
  const bool tty = isatty(STDOUT_FILENO) == 1;
  WatchView view(job_id);
  CancelOnInterrupt cancel(&client);
  bool status_shown = false;
  auto clear_status = [&] {
    if (status_shown) Print("\r\033[K");
    status_shown = false;
  };
  // The stream ends when the job does; a dropped connection is resumed from the
  // last event seen, a few times.
  int reconnects = 0;
  while (true) {
    absl::Status s = client.WatchJob(job_id, view.last_seq(), [&](const v1::WatchJobResponse& r) {
      if (json_lines) {
        if (r.has_job()) Print(json({{"job", ToJsonValue(r.job())}}).dump() + "\n");
        for (const auto& e : r.events()) {
          json ev = json::parse(e.json(), nullptr, false);
          Print(json({{"seq", e.seq()}, {"type", e.type()}, {"attempt", e.attempt()},
                      {"event", ev.is_discarded() ? json(e.json()) : ev}})
                    .dump() +
                "\n");
        }
        view.Apply(r, st);
        return true;
      }
      const std::string lines = view.Apply(r, st);
      if (tty) {
        clear_status();
        Print(lines);
        if (!view.finished()) {
          Print(view.StatusLine(st));
          status_shown = true;
        }
      } else {
        Print(lines);
        bool progressed = false;
        for (const auto& e : r.events()) progressed |= e.type() == "step";
        if (progressed) Print(view.StatusLine(st) + "\n");
      }
      return true;
    });
    if (s.code() == absl::StatusCode::kCancelled) {
      clear_status();
      if (!json_lines) Print("\n(stopped watching; the job keeps running)\n");
      return kExitInterrupted;
    }
    if (!s.ok()) {
      clear_status();
      if (s.code() == absl::StatusCode::kUnavailable && view.job().has_value() && reconnects < 5) {
        ++reconnects;
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      Fail(s);
    }
    if (view.finished()) break;
    // The server ended the stream without a terminal state: ask once more.
    auto j = client.GetJob(job_id);
    if (!j.ok()) Fail(j.status());
    if (IsTerminal(j->state())) {
      v1::WatchJobResponse r;
      *r.mutable_job() = *j;
      clear_status();
      if (!json_lines) Print(view.Apply(r, st));
      break;
    }
    if (++reconnects > 20) Fail(absl::UnavailableError("the watch stream keeps ending before the job does"));
  }
  clear_status();
  return view.job() ? ExitCodeForJob(*view.job()) : kExitFailure;
}

void RunWatch(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  const int rc = WatchJob(g, *client, a.id, a.json);
  if (rc != 0) throw CLI::RuntimeError(rc);
}

// One output line, as printed: the text, or with `as_json` (`caddie logs
// --json`) {"ts": unix seconds or null, "rank": R, "stream": S, "line": text}.
std::string OutputLine(const std::string& line, bool as_json, const json& ts, int rank, const std::string& stream) {
  if (!as_json) return line + "\n";
  return json{{"ts", ts}, {"rank", rank}, {"stream", stream}, {"line", line}}.dump(-1, ' ', false,
                                                                                 json::error_handler_t::replace) +
         "\n";
}

// One line of rank 0's stdout, the event stream: a `log` event is the raw line
// the trainer printed; other events are shown as the JSON objects the trainer
// wrote; ts is the event's time. Parses the event once.
std::string FormatLogLine(const std::string& event_json, bool as_json) {
  const json j = json::parse(event_json, nullptr, false);
  std::string line = event_json;
  if (j.is_object() && j.value("event", "") == "log" && j.contains("message") && j["message"].is_string()) {
    line = j["message"].get<std::string>();
  }
  json ts = nullptr;
  if (j.is_object() && j.contains("time") && j["time"].is_number()) ts = j["time"];
  return OutputLine(line, as_json, ts, 0, log_streams::kStdout);
}

// A rank's stderr, or the stdout of a rank > 0: the log file as the controller
// holds it (it keeps the newest --log-bytes-per-stream bytes of each, and drops
// the logs of the jobs that ended longest ago past --log-bytes-total). Lines
// carry no time of their own (ts null in --json). With -f, polls for new bytes
// from where the last answer ended until the job has ended and all is printed;
// following the current attempt, it finishes a crashed attempt's file before
// going on to the retry's. With --attempt N, -f ends when N does.
void RunStreamLogs(const GlobalOptions& g, const ListArgs& a, Client& client) {
  v1::GetJobLogsRequest req;
  req.set_job_id(a.id);
  req.set_rank(a.rank);
  req.set_stream(a.stream);
  req.set_tail_lines(a.tail);
  req.set_attempt(a.attempt);
  std::string partial;  // a line not finished yet (-f): printed once it is, or at the end
  auto print = [&](const v1::GetJobLogsResponse& r) {
    if (r.dropped_by_retention()) {
      std::fprintf(stderr, "%s\n",
                   ErrStyle(g)
                       .Dim(absl::StrCat("(rank ", a.rank, " ", a.stream, " of attempt ", r.attempt(), ", ",
                                         r.dropped_bytes(), " bytes, was dropped by the controller's retention "
                                         "bound, --log-bytes-total: past it the logs of the jobs that ended "
                                         "longest ago go first; the job's events and result are kept)"))
                       .c_str());
    } else if (r.dropped_bytes() > 0) {
      std::fprintf(stderr, "%s\n",
                   ErrStyle(g)
                       .Dim(absl::StrCat("(", r.dropped_bytes(), " earlier bytes of rank ", a.rank, " ", a.stream,
                                         " are no longer held by the controller: it keeps the newest "
                                         "--log-bytes-per-stream bytes of each stream)"))
                       .c_str());
    }
    partial += r.text();
    size_t start = 0;
    for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      Print(OutputLine(partial.substr(start, nl - start), a.json, nullptr, a.rank, a.stream));
    }
    partial.erase(0, start);
  };
  auto flush_partial = [&] {
    if (!partial.empty()) Print(OutputLine(partial, a.json, nullptr, a.rank, a.stream));
    partial.clear();
  };
  if (!a.follow) {
    print(OrFail(client.GetJobLogs(req)));
    flush_partial();
    return;
  }
  CancelOnInterrupt cancel(&client);
  auto check = [&](const absl::Status& s) {
    if (s.code() == absl::StatusCode::kCancelled || InterruptCount() > 0) throw CLI::RuntimeError(kExitInterrupted);
    if (!s.ok()) Fail(s);
  };
  if (a.tail > 0) {
    // The last lines first, then everything after them.
    auto r = client.GetJobLogs(req);
    check(r.status());
    print(*r);
    req.set_from_offset(r->next_offset());
  } else {
    req.set_from_offset(0);
  }
  int32_t attempt = 0;
  for (bool ended = false;;) {
    // Whether the job (or the attempt asked for) had ended is read before the
    // bytes: its worker sends a rank's last bytes before the attempt's outcome,
    // so that read is the last one needed.
    auto job = client.GetJob(a.id);
    check(job.status());
    ended = IsTerminal(job->state()) || (a.attempt != 0 && job->attempt() > a.attempt);
    auto r = client.GetJobLogs(req);
    check(r.status());
    if (attempt != 0 && r->attempt() != attempt) {
      // A retry: the earlier attempt has its outcome, so its file is complete.
      // Print the rest of it, then the retry's from offset 0.
      v1::GetJobLogsRequest rest = req;
      rest.set_attempt(attempt);
      auto last = client.GetJobLogs(rest);
      check(last.status());
      print(*last);
      flush_partial();
      std::fprintf(stderr, "%s\n",
                   ErrStyle(g).Dim(absl::StrCat("(attempt ", r->attempt(), " of the job: its output follows)")).c_str());
      req.set_from_offset(0);
      attempt = r->attempt();
      continue;
    }
    attempt = r->attempt();
    print(*r);
    req.set_from_offset(r->next_offset());
    if (ended) break;
    for (int i = 0; i < 10 && InterruptCount() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  flush_partial();
}

void RunLogs(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  if (log_streams::SentAsChunks(a.rank, a.stream)) {
    RunStreamLogs(g, a, *client);
    return;
  }
  if (a.follow && a.attempt != 0) {
    Fail(absl::InvalidArgumentError(
        "--attempt with -f applies to a rank's log files (--stream stderr, or stdout of a rank > 0); rank 0's "
        "events of an earlier attempt: leave out -f"));
  }
  if (!a.follow) {
    v1::GetJobLogsRequest req;
    req.set_job_id(a.id);
    req.set_tail_lines(a.tail);
    req.set_attempt(a.attempt);
    auto r = OrFail(client->GetJobLogs(req));
    for (absl::string_view line : absl::StrSplit(r.text(), '\n', absl::SkipEmpty())) {
      Print(FormatLogLine(std::string(line), a.json));
    }
    return;
  }
  // -f: the job's stored events, then live ones until it ends.
  CancelOnInterrupt cancel(client.get());
  absl::Status s = client->WatchJob(a.id, 0, [&](const v1::WatchJobResponse& r) {
    for (const auto& e : r.events()) Print(FormatLogLine(e.json(), a.json));
    return true;
  });
  if (s.code() == absl::StatusCode::kCancelled) throw CLI::RuntimeError(kExitInterrupted);
  if (!s.ok()) Fail(s);
}

void RunCancel(const GlobalOptions& g, const ListArgs& a, bool sweep) {
  auto client = MakeClient(g);
  const std::string reason = a.reason.empty() ? "cancelled with caddie cancel" : a.reason;
  if (sweep) {
    auto s = OrFail(client->CancelSweep(a.id, reason));
    Print(a.json ? ToJsonString(s) + "\n" : "cancelled sweep " + OutStyle(g).Bold(s.id()) + "\n");
    return;
  }
  // A job that has ended: FAILED_PRECONDITION from the controller, exit 7 (kExitConflict).
  auto j = OrFail(client->CancelJob(a.id, reason));
  std::string text = "job " + OutStyle(g).Bold(j.id()) + " is " + StyledState(j.state(), OutStyle(g));
  if (!IsTerminal(j.state())) text += "; cancel requested: its worker stops it at its next heartbeat";
  Print(a.json ? ToJsonString(j) + "\n" : text + "\n");
}

void RunLeaderboard(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  auto r = OrFail(client->Leaderboard(a.sweep, a.limit));
  Print(a.json ? ToJsonString(r) + "\n" : LeaderboardTable(r, OutStyle(g)));
}

void RunWorkers(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  auto r = OrFail(client->ListWorkers());
  Print(a.json ? ToJsonString(r) + "\n" : WorkersTable(r, NowUnixMs(), OutStyle(g)));
}

// "user@host" for DrainWorkerRequest.requested_by.
std::string WhoAmI() {
  const char* user = std::getenv("USER");
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return absl::StrCat(user != nullptr && *user != '\0' ? user : "unknown", "@", host[0] != '\0' ? host : "unknown");
}

void RunDrain(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  v1::DrainWorkerRequest req;
  req.set_worker_id(a.id);
  req.set_reason(a.reason);
  req.set_requested_by(WhoAmI());
  auto r = OrFail(client->DrainWorker(req));
  Print(a.json ? ToJsonString(r) + "\n" : DrainResult(r, NowUnixMs(), OutStyle(g)));
}

void RunUndrain(const GlobalOptions& g, const ListArgs& a) {
  auto client = MakeClient(g);
  v1::UndrainWorkerRequest req;
  req.set_worker_id(a.id);
  req.set_requested_by(WhoAmI());
  auto r = OrFail(client->UndrainWorker(req));
  Print(a.json ? ToJsonString(r) + "\n" : UndrainResult(r, OutStyle(g)));
}

void AddJson(CLI::App* cmd, bool& flag) {
  cmd->add_flag("--json", flag, "Print JSON (proto field names) instead of a table, for scripts");
}

}  // namespace

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

[[noreturn]] void Fail(const absl::Status& status) {
  const Style st(ShouldColor(STDERR_FILENO, false));
  std::fprintf(stderr, "%s %s\n", st.Red("caddie:").c_str(), std::string(status.message()).c_str());
  throw CLI::RuntimeError(ExitCodeFor(status));
}

absl::StatusOr<Connection> ResolveFromGlobals(const GlobalOptions& g) {
  ConfigInputs in = InputsFromEnvironment();
  in.flag_addr = g.addr;
  in.flag_token = g.token;
  in.flag_tls_ca = g.tls_ca;
  in.flag_config = g.config;
  return ResolveConnection(in);
}

void AddGlobalOptions(CLI::App& app, GlobalOptions& g) {
  app.fallthrough();
  app.add_option("--addr", g.addr, "Controller address HOST:PORT (else $CADDIE_ADDR, the config file, 127.0.0.1:7070)");
  app.add_option("--token", g.token, "Bearer token (else $CADDIE_TOKEN, the config file)");
  app.add_option("--tls-ca", g.tls_ca,
                 "PEM CA certificate: talk TLS to a controller whose certificate it signed "
                 "(else $CADDIE_TLS_CA, the config file; none = plaintext)");
  app.add_option("--config", g.config, "Config file (default ~/.config/caddie/config.yaml): addr, token, tls_ca");
  app.add_flag("--no-color", g.no_color, "No colours (also: NO_COLOR set, or output not a terminal)");
  app.add_option("--timeout", g.timeout_s, "Seconds to wait for each controller call")->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
}

void RegisterCommands(CLI::App& app, GlobalOptions& g) {
  auto sa = std::make_shared<SweepArgs>();
  auto la = std::make_shared<ListArgs>();

  CLI::App* sweep = app.add_subcommand("sweep", "Validate, submit, show or cancel a sweep");
  sweep->require_subcommand(1);
  CLI::App* validate = sweep->add_subcommand(
      "validate", "Dry run: check FILE and list every job; all errors at once, with line and column");
  validate->add_option("FILE", sa->file, "Sweep file (YAML; see examples/)")->required();
  AddJson(validate, sa->json);
  validate->callback([&g, sa] { RunSweepValidate(g, *sa); });

  CLI::App* submit = sweep->add_subcommand("submit", "Check FILE and submit it (nothing is submitted unless it is valid)");
  submit->add_option("FILE", sa->file, "Sweep file (YAML; see examples/)")->required();
  submit->add_flag("--watch", sa->watch, "Then watch the first job");
  AddJson(submit, sa->json);
  submit->callback([&g, sa] { RunSweepSubmit(g, *sa); });

  CLI::App* show = sweep->add_subcommand("show", "One sweep and its jobs");
  show->add_option("SWEEP", la->id, "Sweep id")->required();
  show->add_option("--limit", la->limit, "At most this many jobs")->capture_default_str();
  AddJson(show, la->json);
  show->callback([&g, la] { RunSweepShow(g, *la); });

  CLI::App* scancel = sweep->add_subcommand("cancel", "Cancel every unfinished job of a sweep");
  scancel->add_option("SWEEP", la->id, "Sweep id")->required();
  scancel->add_option("--reason", la->reason, "Recorded with the cancellation");
  AddJson(scancel, la->json);
  scancel->callback([&g, la] { RunCancel(g, *la, true); });

  CLI::App* sweeps = app.add_subcommand("sweeps", "List sweeps, newest first, with job counts by state");
  sweeps->add_option("--limit", la->limit, "At most this many")->capture_default_str();
  AddJson(sweeps, la->json);
  sweeps->callback([&g, la] { RunSweeps(g, *la); });

  CLI::App* jobs = app.add_subcommand("jobs", "List jobs (all sweeps, or one)");
  jobs->add_option("--sweep", la->sweep, "Only this sweep's jobs");
  jobs->add_option("--state", la->states, "Only jobs in these states (repeat or comma-separate): " + AllStateNames())
      ->delimiter(',');
  jobs->add_option("--limit", la->limit, "At most this many")->capture_default_str();
  AddJson(jobs, la->json);
  jobs->callback([&g, la] { RunJobs(g, *la); });

  CLI::App* job = app.add_subcommand("job", "One job: state, pending reason, budget, result");
  job->add_option("JOB", la->id, "Job id")->required();
  AddJson(job, la->json);
  job->callback([&g, la] { RunJob(g, *la); });

  CLI::App* watch = app.add_subcommand(
      "watch", "Follow a job live: training time against the budget, loss and val_bpb as they arrive. "
               "Exits 0 when the job succeeds, 6 when it ends otherwise");
  watch->add_option("JOB", la->id, "Job id")->required();
  watch->add_flag("--json", la->json, "Print each event as one JSON object per line");
  watch->callback([&g, la] { RunWatch(g, *la); });

  CLI::App* logs = app.add_subcommand(
      "logs", "A job's trainer output, current attempt unless --attempt: rank 0's stdout (its events and log "
              "lines) by default, or any rank's stderr / stdout, also after its worker is gone");
  logs->add_option("JOB", la->id, "Job id")->required();
  logs->add_flag("-f,--follow", la->follow, "Keep printing new lines until the job ends");
  logs->add_option("--tail", la->tail, "Only the last N lines (0 = the controller's default, 100)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  logs->add_option("--rank", la->rank, "Which rank's output (0 .. the job's GPUs - 1)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  logs->add_option("--stream", la->stream,
                   "stdout or stderr; rank 0's stdout is the events, the others are the rank's log files "
                   "(the controller keeps the newest bytes of each)")
      ->check(CLI::IsMember({log_streams::kStdout, log_streams::kStderr}))
      ->capture_default_str();
  logs->add_option("--attempt", la->attempt,
                   "Which attempt's output (1 .. the job's attempt; 0 = the current one), e.g. the crashed "
                   "attempt of a retried job")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  logs->add_flag("--json", la->json, "One JSON object per line: ts (unix seconds; null for log files), rank, stream, line");
  logs->callback([&g, la] { RunLogs(g, *la); });

  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a job (a running one is stopped by its worker)");
  cancel->add_option("JOB", la->id, "Job id")->required();
  cancel->add_option("--reason", la->reason, "Recorded with the cancellation");
  AddJson(cancel, la->json);
  cancel->callback([&g, la] { RunCancel(g, *la, false); });

  CLI::App* lb = app.add_subcommand("leaderboard", "Finished jobs within budget, best val_bpb (after quantisation) first");
  lb->add_option("--sweep", la->sweep, "Only this sweep");
  lb->add_option("--limit", la->limit, "At most this many")->capture_default_str();
  AddJson(lb, la->json);
  lb->callback([&g, la] { RunLeaderboard(g, *la); });

  CLI::App* workers = app.add_subcommand(
      "workers", "Registered workers: GPUs, free slots, running jobs, heartbeat, drain state; drain or undrain one");
  AddJson(workers, la->json);
  // `caddie workers` alone lists them; with drain/undrain only that runs.
  workers->callback([&g, la, workers] {
    if (workers->get_subcommands().empty()) RunWorkers(g, *la);
  });

  CLI::App* drain = workers->add_subcommand(
      "drain", "Take a worker out of service (maintenance): it gets no new jobs, the ones it runs go on to their end");
  drain->add_option("WORKER", la->id, "Worker id (as `caddie workers` lists it)")->required();
  drain->add_option("--reason", la->reason, "Why; shown in `caddie workers` and recorded with who and when")
      ->required();
  AddJson(drain, la->json);
  drain->callback([&g, la] { RunDrain(g, *la); });

  CLI::App* undrain = workers->add_subcommand(
      "undrain", "Return a drained worker to service (drained by hand or after failures in a row); "
                 "its count of failures in a row restarts. A worker in service is left as it is (exit 0)");
  undrain->add_option("WORKER", la->id, "Worker id (as `caddie workers` lists it)")->required();
  AddJson(undrain, la->json);
  undrain->callback([&g, la] { RunUndrain(g, *la); });
}

}  // namespace caddie::cli
