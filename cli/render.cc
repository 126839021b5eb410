#include "cli/render.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/core/events.h"
#include "common/enum_label.h"

namespace caddie::cli {
namespace {

using nlohmann::json;

std::string Fixed(double v, int digits) { return absl::StrFormat("%.*f", digits, v); }

json ParseOr(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? json() : j;
}

std::string Shorten(const std::string& s, size_t max) {
  return s.size() <= max ? s : s.substr(0, max - 1) + "…";
}

}  // namespace

std::string StateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_STATE_QUEUED: return "queued";
    case v1::JOB_STATE_LEASED: return "leased";
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_SUCCEEDED: return "succeeded";
    case v1::JOB_STATE_FAILED: return "failed";
    case v1::JOB_STATE_OVER_BUDGET: return "over_budget";
    case v1::JOB_STATE_CANCELLED: return "cancelled";
    case v1::JOB_STATE_PREEMPTED: return "preempted";
    default: return "unknown";
  }
}

std::optional<v1::JobState> ParseState(const std::string& text) {
  std::string s = absl::AsciiStrToLower(text);
  if (s.rfind("job_state_", 0) == 0) s = s.substr(10);
  for (int i = v1::JobState_MIN; i <= v1::JobState_MAX; ++i) {
    if (!v1::JobState_IsValid(i) || i == v1::JOB_STATE_UNSPECIFIED) continue;
    if (StateName(static_cast<v1::JobState>(i)) == s) return static_cast<v1::JobState>(i);
  }
  return std::nullopt;
}

std::string AllStateNames() {
  std::string out;
  for (int i = v1::JobState_MIN; i <= v1::JobState_MAX; ++i) {
    if (!v1::JobState_IsValid(i) || i == v1::JOB_STATE_UNSPECIFIED) continue;
    absl::StrAppend(&out, out.empty() ? "" : ", ", StateName(static_cast<v1::JobState>(i)));
  }
  return out;
}

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_OVER_BUDGET ||
         s == v1::JOB_STATE_CANCELLED;
}

std::string ExitReasonName(v1::ExitReason r) {
  if (r == v1::EXIT_REASON_UNSPECIFIED) return "";
  return EnumLabel(v1::ExitReason_Name(r), "EXIT_REASON_");
}

std::string StyledState(v1::JobState s, const Style& st) {
  const std::string n = StateName(s);
  switch (s) {
    case v1::JOB_STATE_SUCCEEDED: return st.Green(n);
    case v1::JOB_STATE_FAILED:
    case v1::JOB_STATE_OVER_BUDGET: return st.Red(n);
    case v1::JOB_STATE_RUNNING:
    case v1::JOB_STATE_LEASED: return st.Cyan(n);
    case v1::JOB_STATE_CANCELLED:
    case v1::JOB_STATE_PREEMPTED: return st.Yellow(n);
    default: return st.Dim(n);
  }
}

std::string ToJsonString(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

json ToJsonValue(const google::protobuf::Message& m) { return ParseOr(ToJsonString(m)); }

std::string ParamsSummary(const std::string& params_json) {
  const json p = ParseOr(params_json);
  if (!p.is_object() || p.empty()) return "-";
  std::string out;
  for (auto it = p.begin(); it != p.end(); ++it) {
    std::string v = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    if (it.value().is_number_float()) v = absl::StrFormat("%.4g", it.value().get<double>());
    absl::StrAppend(&out, out.empty() ? "" : " ", it.key(), "=", v);
  }
  return out;
}

double TrainBudgetSeconds(const v1::Job& job) {
  if (job.spec().budget().train_seconds() > 0) return job.spec().budget().train_seconds();
  const json spec = ParseOr(job.spec().spec_json());
  if (spec.is_object() && spec.contains("max_wallclock_seconds") && spec["max_wallclock_seconds"].is_number() &&
      spec["max_wallclock_seconds"].get<double>() > 0) {
    return spec["max_wallclock_seconds"].get<double>();
  }
  return 600.0;
}

std::string SweepsTable(const v1::ListSweepsResponse& r, int64_t now_ms, const Style& st) {
  if (r.sweeps().empty()) return "no sweeps yet: submit one with `caddie sweep submit FILE.yaml`\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : r.sweeps()) {
    auto count = [&](const char* k) {
      auto it = s.jobs_by_state().find(k);
      return it == s.jobs_by_state().end() ? 0 : it->second;
    };
    int done = 0;
    for (const auto& [k, v] : s.jobs_by_state()) {
      auto state = ParseState(k);
      if (state && IsTerminal(*state)) done += v;
    }
    std::string states;
    for (const char* k : {"queued", "running", "succeeded", "failed", "over_budget", "cancelled"}) {
      if (int n = count(k); n > 0) absl::StrAppend(&states, states.empty() ? "" : " ", n, " ", k);
    }
    rows.push_back({st.Bold(s.id()), s.spec().name(), absl::StrCat(done, "/", s.jobs_total()),
                    s.cancelled() ? st.Yellow("cancelled") : states, FormatAge(s.created_unix_ms(), now_ms)});
  }
  return FormatTable({"SWEEP", "NAME", "DONE", "JOBS", "CREATED"}, rows, {2}, st);
}

std::string JobsTable(const v1::ListJobsResponse& r, int64_t now_ms, const Style& st) {
  if (r.jobs().empty()) return "no jobs match\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : r.jobs()) {
    std::string bpb = "-", bytes = "-";
    if (j.has_result() && j.result().val_bpb_post_quant() > 0) bpb = Fixed(j.result().val_bpb_post_quant(), 4);
    if (j.has_result() && j.result().artifact_bytes() > 0) bytes = FormatBytes(j.result().artifact_bytes());
    std::string note = ExitReasonName(j.exit_reason());
    if (j.state() == v1::JOB_STATE_QUEUED && !j.pending_reason().empty()) note = j.pending_reason();
    rows.push_back({st.Bold(j.id()), StyledState(j.state(), st), ParamsSummary(j.params_json()), bpb, bytes,
                    j.worker_id().empty() ? "-" : j.worker_id(), FormatAge(j.created_unix_ms(), now_ms),
                    Shorten(note, 60)});
  }
  return FormatTable({"JOB", "STATE", "PARAMS", "VAL_BPB", "ARTIFACT", "WORKER", "CREATED", "NOTE"}, rows,
                     {3, 4}, st);
}

std::string JobDetail(const v1::Job& j, int64_t now_ms, const Style& st) {
  std::string out;
  auto row = [&](const std::string& k, const std::string& v) {
    out += absl::StrFormat("%-16s %s\n", k + ":", v);
  };
  out += st.Bold("job " + j.id()) + "\n";
  row("sweep", absl::StrCat(j.sweep_id(), " (job #", j.index_in_sweep(), ")"));
  row("state", StyledState(j.state(), st) +
                   (j.exit_reason() != v1::EXIT_REASON_UNSPECIFIED ? " (" + ExitReasonName(j.exit_reason()) + ")" : ""));
  if (j.state() == v1::JOB_STATE_QUEUED || !j.pending_reason().empty()) {
    row("pending reason", j.pending_reason().empty() ? "waiting for a worker" : st.Yellow(j.pending_reason()));
  }
  if (!j.message().empty()) row("message", j.message());
  row("params", ParamsSummary(j.params_json()));
  row("attempt", absl::StrCat(j.attempt(), " of ", j.spec().max_attempts() > 0 ? j.spec().max_attempts() : 3));
  row("gpus", j.spec().gpus() == 0 ? "0 (CPU job)" : absl::StrCat(j.spec().gpus()));
  row("priority", absl::StrCat(j.spec().priority()));
  row("budget", absl::StrCat("train ", FormatDuration(TrainBudgetSeconds(j)), ", artifact ≤ ",
                             FormatBytes(j.spec().budget().artifact_limit_bytes() > 0
                                             ? j.spec().budget().artifact_limit_bytes()
                                             : events::kArtifactLimitBytes)));
  if (!j.worker_id().empty()) row("worker", j.worker_id());
  row("created", FormatAge(j.created_unix_ms(), now_ms));
  if (j.started_unix_ms() > 0) row("started", FormatAge(j.started_unix_ms(), now_ms));
  if (j.finished_unix_ms() > 0) {
    row("finished", FormatAge(j.finished_unix_ms(), now_ms));
    if (j.started_unix_ms() > 0) {
      row("ran for", FormatDuration(static_cast<double>(j.finished_unix_ms() - j.started_unix_ms()) / 1000.0));
    }
  }
  if (j.has_result() && (j.result().steps() > 0 || j.result().artifact_bytes() > 0)) {
    const auto& r = j.result();
    out += st.Bold("result") + "\n";
    row("  val_bpb", absl::StrCat(Fixed(r.val_bpb_post_quant(), 4), " after quantisation (",
                                  Fixed(r.val_bpb(), 4), " before)"));
    row("  artifact", absl::StrCat(FormatBytes(r.artifact_bytes()), " (", FormatInt(r.artifact_bytes()),
                                   " of ", FormatInt(r.limit_bytes() > 0 ? r.limit_bytes() : events::kArtifactLimitBytes),
                                   " bytes) ", r.within_budget() ? st.Green("within budget") : st.Red("OVER budget")));
    row("  steps", absl::StrCat(FormatInt(r.steps()), " in ", FormatDuration(r.train_seconds())));
    row("  parameters", FormatInt(r.parameters()));
    if (r.tokens_per_second() > 0) row("  tokens/s", FormatInt(static_cast<int64_t>(r.tokens_per_second())));
  }
  return out;
}

std::string LeaderboardTable(const v1::LeaderboardResponse& r, const Style& st) {
  if (r.entries().empty()) return "the leaderboard is empty: no job has finished within budget yet\n";
  // Keys every entry sets to the same value (the sweep's base) are left out of the
  // SPEC column, so it shows what distinguishes the entries.
  std::vector<json> diffs;
  for (const auto& e : r.entries()) {
    json d = ParseOr(e.spec_diff_json());
    if (!d.is_object()) d = json::object();
    for (const char* k : {"data", "run_dir", "device"}) d.erase(k);
    diffs.push_back(std::move(d));
  }
  std::set<std::string> shared;
  if (diffs.size() > 1) {
    for (auto it = diffs[0].begin(); it != diffs[0].end(); ++it) {
      bool all = true;
      for (const json& d : diffs) all = all && d.contains(it.key()) && d[it.key()] == it.value();
      if (all) shared.insert(it.key());
    }
  }
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < r.entries_size(); ++i) {
    const auto& e = r.entries(i);
    std::string diff;
    for (auto it = diffs[i].begin(); it != diffs[i].end(); ++it) {
      if (shared.count(it.key())) continue;
      std::string v = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
      if (it.value().is_number_float()) v = absl::StrFormat("%.4g", it.value().get<double>());
      absl::StrAppend(&diff, diff.empty() ? "" : " ", it.key(), "=", v);
    }
    if (diffs[i].empty()) diff = "baseline";
    if (!shared.empty()) absl::StrAppend(&diff, diff.empty() ? "" : " ", st.Dim(absl::StrCat("(+", shared.size(), " shared)")));
    rows.push_back({absl::StrCat(e.rank()), st.Bold(Fixed(e.val_bpb_post_quant(), 4)), Fixed(e.val_bpb(), 4),
                    FormatBytes(e.artifact_bytes()), FormatInt(e.parameters()), FormatInt(e.steps()), e.job_id(),
                    Shorten(diff, 80)});
  }
  return FormatTable({"#", "VAL_BPB", "PRE_QUANT", "ARTIFACT", "PARAMS", "STEPS", "JOB", "SPEC (vs baseline)"},
                     rows, {0, 1, 2, 3, 4, 5}, st);
}

namespace {

// " (by alice@host, 5m ago)" for a drained worker whose drain was recorded.
std::string DrainedBy(const v1::Worker& w, int64_t now_ms) {
  if (w.drained_by().empty()) return "";
  return absl::StrCat(" (by ", w.drained_by(),
                      w.drained_unix_ms() > 0 ? ", " + FormatAge(w.drained_unix_ms(), now_ms) : std::string(), ")");
}

// What becomes of a drained worker's running jobs, in words.
std::string RunningJobsGoOn(const v1::Worker& w) {
  const int n = w.running_job_ids_size();
  if (n == 0) return "it runs no job now";
  if (n == 1) return absl::StrCat("its running job ", w.running_job_ids(0), " goes on to its end");
  return absl::StrCat("its ", n, " running jobs (", absl::StrJoin(w.running_job_ids(), ", "), ") go on to their end");
}

}  // namespace

std::string DrainResult(const v1::DrainWorkerResponse& r, int64_t now_ms, const Style& st) {
  const v1::Worker& w = r.worker();
  std::string out;
  if (r.changed()) {
    out = absl::StrCat(st.Yellow("drained"), " worker ", st.Bold(w.id()), ": ", w.drain_reason(), "\n",
                       "  no new jobs go to it; ", RunningJobsGoOn(w), "\n");
  } else {
    out = absl::StrCat("worker ", st.Bold(w.id()), " was already ", st.Yellow("drained"), DrainedBy(w, now_ms), ": ",
                       w.drain_reason(), "; nothing changed\n");
  }
  return out + absl::StrCat("  return it to service with: caddie workers undrain ", w.id(), "\n");
}

std::string UndrainResult(const v1::UndrainWorkerResponse& r, const Style& st) {
  const v1::Worker& w = r.worker();
  if (!r.changed()) {
    return absl::StrCat("worker ", st.Bold(w.id()), " was not drained; it is ", st.Green("ready"),
                        " (its count of failures in a row restarts at 0)\n");
  }
  return absl::StrCat("worker ", st.Bold(w.id()), " is back in service: ", st.Green("ready"),
                      " for new jobs (its count of failures in a row restarts at 0)\n");
}

std::string WorkersTable(const v1::ListWorkersResponse& r, int64_t now_ms, const Style& st) {
  if (r.workers().empty()) return "no workers registered: start one with `caddie-worker --controller ADDR` (or `caddie up`)\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : r.workers()) {
    std::string gpus = "none";
    if (w.gpus_size() > 0) gpus = absl::StrCat(w.gpus_free(), "/", w.gpus_size(), " free (", w.gpus(0).name(), ")");
    std::string status = w.drained() ? st.Yellow("drained" + (w.drain_reason().empty() ? "" : ": " + w.drain_reason()) +
                                                 DrainedBy(w, now_ms))
                                     : st.Green("ready");
    std::string running = w.running_job_ids().empty() ? "-" : absl::StrCat(w.running_job_ids_size(), " (", w.running_job_ids(0),
                                                                           w.running_job_ids_size() > 1 ? ", …)" : ")");
    rows.push_back({st.Bold(w.id()), w.hostname(), gpus, absl::StrCat(w.cpu_slots()), running, status,
                    FormatAge(w.last_heartbeat_unix_ms(), now_ms), w.version()});
  }
  return FormatTable({"WORKER", "HOST", "GPUS", "CPU_SLOTS", "RUNNING", "STATUS", "HEARTBEAT", "VERSION"}, rows, {3}, st);
}

std::string WatchView::Apply(const v1::WatchJobResponse& r, const Style& st) {
  std::string out;
  if (r.has_job()) {
    const bool changed = !job_ || job_->state() != r.job().state();
    job_ = r.job();
    if (changed) {
      std::string line = "job " + job_id_ + " is " + StyledState(job_->state(), st);
      if (job_->state() == v1::JOB_STATE_QUEUED && !job_->pending_reason().empty()) {
        line += ": " + job_->pending_reason();
      }
      if (!job_->worker_id().empty() && !IsTerminal(job_->state())) line += " on " + job_->worker_id();
      if (IsTerminal(job_->state()) && job_->exit_reason() != v1::EXIT_REASON_UNSPECIFIED) {
        line += " (" + ExitReasonName(job_->exit_reason()) + ")";
      }
      if (IsTerminal(job_->state()) && !job_->message().empty() && job_->state() != v1::JOB_STATE_SUCCEEDED) {
        line += ": " + job_->message();
      }
      out += line + "\n";
    }
  }
  for (const v1::Event& e : r.events()) {
    last_seq_ = std::max(last_seq_, e.seq());
    const json j = ParseOr(e.json());
    if (!j.is_object()) continue;
    if (e.type() == events::kStep) {
      step_ = j.value(events::kStepNum, step_);
      train_loss_ = j.value(events::kTrainLoss, train_loss_);
      train_time_s_ = j.value(events::kTrainTimeS, train_time_s_);
      tokens_per_s_ = j.value(events::kTokensPerS, tokens_per_s_);
    } else if (e.type() == events::kVal) {
      val_bpb_ = j.value(events::kValBpb, val_bpb_);
      val_step_ = j.value(events::kStepNum, val_step_);
      train_time_s_ = std::max(train_time_s_, j.value(events::kTrainTimeS, 0.0));
      out += absl::StrFormat("  step %6d  val_loss %.4f  val_bpb %s  (%s of training)\n", val_step_,
                             j.value(events::kValLoss, 0.0), st.Bold(Fixed(val_bpb_, 4)), FormatDuration(train_time_s_));
    } else if (e.type() == events::kStart) {
      out += absl::StrFormat("  started: %s parameters on %s (world size %d)\n",
                             FormatInt(j.value(events::kParams, int64_t{0})), j.value(events::kDevice, std::string("?")),
                             j.value(events::kWorldSize, 1));
    } else if (e.type() == events::kFinal) {
      final_ = j;
      train_time_s_ = j.value(events::kTrainTimeS, train_time_s_);
      const int64_t bytes = j.value(events::kArtifactBytes, int64_t{0});
      const bool within = j.value(events::kWithinBudget, false);
      out += absl::StrFormat("  final: val_bpb %s after quantisation (%s before), artifact %s %s, %s steps, %s\n",
                             st.Bold(Fixed(j.value(events::kValBpbPostQuant, 0.0), 4)),
                             Fixed(j.value(events::kValBpb, 0.0), 4), FormatBytes(bytes),
                             within ? st.Green("within budget") : st.Red("OVER budget"),
                             FormatInt(j.value(events::kSteps, int64_t{0})), j.value(events::kExitReason, std::string("")));
    } else if (e.type() == events::kError) {
      out += "  " + st.Red("error: ") + j.value(events::kMessage, std::string("?")) + "\n";
    }
  }
  return out;
}

std::string WatchView::StatusLine(const Style& st, double budget_s) const {
  const double budget = budget_s > 0 ? budget_s : job_ ? TrainBudgetSeconds(*job_) : 600.0;
  std::string line = ProgressBar(budget > 0 ? train_time_s_ / budget : 0, 24, st);
  line += absl::StrFormat("  %s / %s", FormatDuration(train_time_s_), FormatDuration(budget));
  if (step_ >= 0) line += absl::StrFormat("  step %d", step_);
  if (train_loss_ >= 0) line += "  loss " + Fixed(train_loss_, 4);
  if (val_bpb_ >= 0) line += "  val_bpb " + st.Bold(Fixed(val_bpb_, 4));
  if (tokens_per_s_ > 0) line += "  " + FormatInt(static_cast<int64_t>(tokens_per_s_)) + " tok/s";
  if (job_) line += "  " + StyledState(job_->state(), st);
  return line;
}

}  // namespace caddie::cli
