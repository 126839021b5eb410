#include "controller/scheduler.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/train_spec.h"
#include "common/enum_label.h"
#include "common/grpc_status.h"
#include "common/log_streams.h"
#include "common/metric_names.h"
#include "common/status_macros.h"
#include "controller/early_stopping.h"
#include "controller/job_logs.h"

namespace caddie::controller {

using nlohmann::json;

namespace {

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string StateLabel(v1::JobState s) { return EnumLabel(v1::JobState_Name(s), "JOB_STATE_"); }

bool IsFinal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_OVER_BUDGET ||
         s == v1::JOB_STATE_CANCELLED;
}

SchedulerOptions WithDefaults(SchedulerOptions o) {
  if (!o.now_ms) o.now_ms = SystemNowMs;
  return o;
}

// Keys of a trainer spec that differ from the baseline, minus where-to-run keys.
std::string SpecDiff(const std::string& spec_json) {
  auto spec = ParseTrainSpecText(spec_json);
  if (!spec.ok()) return "{}";
  json all = ToJson(*spec);
  json diff = json::object();
  for (const auto& k : NonDefaultKeys(*spec)) {
    if (k == "data" || k == "run_dir" || k == "device") continue;
    diff[k] = all[k];
  }
  return diff.dump();
}

// Who asks for a drain or undrain: the name the caller gives, else its address.
std::string Requester(const std::string& requested_by, const std::string& peer) {
  return requested_by.empty() ? absl::StrCat("a user at ", peer) : requested_by;
}

}  // namespace

struct Scheduler::Metrics {
  explicit Metrics(metrics::Registry* r)
      : jobs(r->AddGauge(metric_names::kJobs).value()),
        finished(r->AddCounter(metric_names::kJobsFinished).value()),
        queue_depth(r->AddGauge(metric_names::kQueueDepth).value()),
        pending(r->AddGauge(metric_names::kPendingJobs).value()),
        lease_latency(r->AddHistogram(metric_names::kLeaseLatency).value()),
        leases_expired(r->AddCounter(metric_names::kLeasesExpired).value()),
        stale(r->AddCounter(metric_names::kStaleReportsRejected).value()),
        workers(r->AddGauge(metric_names::kWorkers).value()),
        heartbeat_age(r->AddGauge(metric_names::kWorkerHeartbeatAge).value()),
        worker_gpus(r->AddGauge(metric_names::kWorkerGpus).value()),
        worker_drained(r->AddGauge(metric_names::kWorkerDrained).value()),
        worker_drained_by_hand(r->AddGauge(metric_names::kWorkerDrainedByHand).value()),
        job_step(r->AddGauge(metric_names::kJobStep).value()),
        job_loss(r->AddGauge(metric_names::kJobTrainLoss).value()),
        job_val(r->AddGauge(metric_names::kJobValBpb).value()),
        job_tps(r->AddGauge(metric_names::kJobTokensPerSecond).value()),
        job_mem(r->AddGauge(metric_names::kJobGpuMemory).value()),
        job_elapsed(r->AddGauge(metric_names::kJobElapsed).value()),
        job_budget(r->AddGauge(metric_names::kJobBudget).value()),
        lb_val(r->AddGauge(metric_names::kLeaderboardValBpb).value()),
        lb_bytes(r->AddGauge(metric_names::kLeaderboardArtifactBytes).value()),
        log_bytes(r->AddGauge(metric_names::kLogBytesStored).value()) {
    for (auto s : metric_names::kJobStates) jobs->WithLabels({s}).Set(0);
    for (auto s : metric_names::kFinalStates) finished->WithLabels({s});
    for (auto s : metric_names::kPendingReasons) pending->WithLabels({s}).Set(0);
    for (auto s : metric_names::kWorkerStates) workers->WithLabels({s}).Set(0);
    queue_depth->WithLabels({}).Set(0);
    leases_expired->WithLabels({});
    stale->WithLabels({});
    lease_latency->WithLabels({});
    log_bytes->WithLabels({}).Set(0);
  }
  void RemoveJob(const std::string& sweep, const std::string& job) {
    const metrics::LabelValues l = {sweep, job};
    for (auto* f : {job_step, job_loss, job_val, job_tps, job_mem, job_elapsed, job_budget}) f->Remove(l);
  }
  metrics::GaugeFamily* jobs;
  metrics::CounterFamily* finished;
  metrics::GaugeFamily* queue_depth;
  metrics::GaugeFamily* pending;
  metrics::HistogramFamily* lease_latency;
  metrics::CounterFamily* leases_expired;
  metrics::CounterFamily* stale;
  metrics::GaugeFamily* workers;
  metrics::GaugeFamily* heartbeat_age;
  metrics::GaugeFamily* worker_gpus;
  metrics::GaugeFamily* worker_drained;
  metrics::GaugeFamily* worker_drained_by_hand;
  metrics::GaugeFamily *job_step, *job_loss, *job_val, *job_tps, *job_mem, *job_elapsed, *job_budget;
  metrics::GaugeFamily *lb_val, *lb_bytes;
  metrics::GaugeFamily* log_bytes;
};

Scheduler::Scheduler(Store* store, metrics::Registry* registry, SchedulerOptions options)
    : store_(store),
      registry_(registry),
      options_(WithDefaults(std::move(options))),
      metrics_(std::make_unique<Metrics>(registry)) {
  // Restart: leases recorded before the restart get a full TTL from now, so
  // workers that kept running reconnect before anything expires.
  absl::Status s = store_->ExtendAllLeases(NowMs() + TtlMs());
  if (!s.ok()) spdlog::error("extending leases after start: {}", s.ToString());
  auto ws = store_->ListWorkers();
  if (ws.ok()) {
    absl::MutexLock l(&mu_);
    for (const auto& r : *ws) {
      WorkerState w;
      w.gpus_total = r.worker.gpus_size();
      w.cpu_slots = r.worker.cpu_slots();
      w.gpus_free = r.gpus_free;
      w.cpu_slots_free = r.cpu_slots_free;
      w.last_seen_ms = r.last_heartbeat_ms;
      workers_[r.worker.id()] = w;
      RememberDrainLocked(r.worker);
    }
  }
  (void)RefreshPendingAndGauges();
  if (options_.tick_seconds > 0) {
    tick_thread_ = std::thread([this] {
      const auto period = absl::Seconds(options_.tick_seconds);
      while (!stop_.WaitForNotificationWithTimeout(period)) {
        absl::Status st = Tick();
        if (!st.ok()) spdlog::error("scheduler tick: {}", st.ToString());
      }
    });
  }
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (tick_thread_.joinable()) tick_thread_.join();
}

// ---------------------------------------------------------------- users

absl::StatusOr<v1::SubmitSweepResponse> Scheduler::SubmitSweep(const v1::SubmitSweepRequest& req) {
  const v1::SweepSpec& spec = req.spec();
  if (static_cast<int64_t>(spec.sweep_json().size()) > options_.max_sweep_json_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("sweep_json is ", spec.sweep_json().size(),
                                                   " bytes long; the limit is ", options_.max_sweep_json_bytes,
                                                   " bytes (caddie-controller --max-sweep-bytes)"));
  }
  if (spec.gpus() < 0 || spec.gpus() > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("gpus must be between 0 and 1024, got ", spec.gpus()));
  }
  if (spec.max_attempts() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_attempts must be >= 0, got ", spec.max_attempts()));
  }
  const auto& b = spec.budget();
  if (b.train_seconds() < 0 || b.eval_seconds() < 0 || b.artifact_limit_bytes() < 0 || b.grace_seconds() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("budget values must be >= 0, got ", b.ShortDebugString()));
  }
  ASSIGN_OR_RETURN(ExpandedSweep expanded, ExpandSweepText(spec.sweep_json()));
  std::vector<NewJob> jobs;
  jobs.reserve(expanded.jobs.size());
  for (const auto& j : expanded.jobs) {
    auto parsed = ParseTrainSpec(j.spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("job ", j.index, " (", j.params.dump(), "): ", parsed.status().message()));
    }
    NewJob nj;
    nj.spec.set_spec_json(j.spec.dump());
    nj.spec.set_gpus(spec.gpus());
    *nj.spec.mutable_budget() = spec.budget();
    nj.spec.set_priority(spec.priority());
    nj.spec.set_max_attempts(spec.max_attempts() > 0 ? spec.max_attempts() : 3);
    nj.params_json = j.params.dump();
    nj.index = j.index;
    if (options_.silence_limit_seconds > 0) {
      nj.silence_ms = static_cast<int64_t>(options_.silence_limit_seconds * 1000);
    } else {
      const double train = b.train_seconds() > 0 ? b.train_seconds() : 600;
      const double eval = b.eval_seconds() > 0 ? b.eval_seconds() : 600;
      const double grace = b.grace_seconds() > 0 ? b.grace_seconds() : 30;
      nj.silence_ms = static_cast<int64_t>((train + eval + 2 * grace + 60) * 1000);
    }
    jobs.push_back(std::move(nj));
  }
  v1::SubmitSweepResponse resp;
  if (req.dry_run()) {
    *resp.mutable_sweep()->mutable_spec() = spec;
    resp.mutable_sweep()->set_jobs_total(static_cast<int32_t>(jobs.size()));
    for (const auto& nj : jobs) {
      v1::Job* job = resp.add_jobs();
      *job->mutable_spec() = nj.spec;
      job->set_params_json(nj.params_json);
      job->set_index_in_sweep(nj.index);
      job->set_state(v1::JOB_STATE_QUEUED);
    }
    return resp;
  }
  ASSIGN_OR_RETURN(auto created, store_->CreateSweep(spec, jobs, NowMs()));
  {
    absl::MutexLock l(&mu_);
    early_stopping_[created.first.id()] = expanded.early_stopping;
  }
  spdlog::info("sweep {} '{}' submitted: {} jobs ({}{})", created.first.id(), spec.name(), created.second.size(),
               expanded.mode, expanded.early_stopping.type.empty() ? "" : ", " + expanded.early_stopping.type);
  *resp.mutable_sweep() = std::move(created.first);
  for (auto& j : created.second) *resp.add_jobs() = std::move(j);
  return resp;
}

absl::StatusOr<std::vector<v1::Job>> Scheduler::ListJobs(const v1::ListJobsRequest& req) {
  std::vector<v1::JobState> states;
  for (int s : req.states()) states.push_back(static_cast<v1::JobState>(s));
  ASSIGN_OR_RETURN(auto jobs, store_->ListJobs(req.sweep_id(), states, req.limit()));
  absl::MutexLock l(&mu_);
  for (auto& j : jobs) DecorateLocked(&j);
  return jobs;
}

absl::StatusOr<v1::Job> Scheduler::GetJob(const std::string& id) {
  ASSIGN_OR_RETURN(auto job, store_->GetJob(id));
  absl::MutexLock l(&mu_);
  DecorateLocked(&job);
  return job;
}

void Scheduler::DecorateLocked(v1::Job* job) {
  if (job->state() != v1::JOB_STATE_QUEUED) return;
  auto it = pending_by_gpus_.find(job->spec().gpus());
  job->set_pending_reason(it == pending_by_gpus_.end() ? "" : it->second);
}

absl::StatusOr<v1::Job> Scheduler::CancelJob(const std::string& id, const std::string& reason) {
  const std::string why = reason.empty() ? "cancelled by user" : reason;
  {
    // A job that has ended keeps its outcome: say so rather than answer as if cancelled.
    ASSIGN_OR_RETURN(auto before, store_->GetJob(id));
    if (IsFinal(before.state())) {
      const std::string state = StateLabel(before.state());
      const std::string reason = EnumLabel(v1::ExitReason_Name(before.exit_reason()), "EXIT_REASON_");
      const bool say_reason = before.exit_reason() != v1::EXIT_REASON_UNSPECIFIED && reason != state;
      return WithErrorCode(absl::FailedPreconditionError(absl::StrCat("job ", id, " has already ended (", state,
                                                                      say_reason ? ", " + reason : "",
                                                                      "); there is nothing to cancel")),
                           kJobFinished);
    }
  }
  ASSIGN_OR_RETURN(auto job, store_->CancelJob(id, why, v1::EXIT_REASON_CANCELLED, NowMs()));
  if (job.state() == v1::JOB_STATE_CANCELLED) OnJobFinished(job);
  Notify(id);
  spdlog::info("job {} cancel: {} (state {})", id, why, StateLabel(job.state()));
  return job;
}

absl::StatusOr<v1::Sweep> Scheduler::CancelSweep(const std::string& id, const std::string& reason) {
  ASSIGN_OR_RETURN(auto sweep, store_->CancelSweep(id, reason.empty() ? "sweep cancelled by user" : reason, NowMs()));
  ASSIGN_OR_RETURN(auto jobs, store_->ListJobs(id, {}, 0));
  for (const auto& j : jobs) Notify(j.id());
  return sweep;
}

absl::StatusOr<v1::LeaderboardResponse> Scheduler::Leaderboard(const v1::LeaderboardRequest& req) {
  ASSIGN_OR_RETURN(auto best, store_->BestJobs(req.sweep_id(), req.limit() > 0 ? req.limit() : 20));
  v1::LeaderboardResponse resp;
  int rank = 0;
  for (const auto& j : best) {
    auto* e = resp.add_entries();
    e->set_rank(++rank);
    e->set_job_id(j.id());
    e->set_sweep_id(j.sweep_id());
    e->set_val_bpb_post_quant(j.result().val_bpb_post_quant());
    e->set_val_bpb(j.result().val_bpb());
    e->set_artifact_bytes(j.result().artifact_bytes());
    e->set_parameters(j.result().parameters());
    e->set_steps(j.result().steps());
    e->set_spec_diff_json(SpecDiff(j.spec().spec_json()));
  }
  return resp;
}

absl::StatusOr<std::vector<v1::Worker>> Scheduler::ListWorkers() {
  ASSIGN_OR_RETURN(auto recs, store_->ListWorkers());
  std::vector<v1::Worker> out;
  absl::MutexLock l(&mu_);
  for (auto& r : recs) {
    auto it = workers_.find(r.worker.id());
    if (it != workers_.end()) {
      r.worker.set_gpus_free(it->second.gpus_free);
      r.worker.set_last_heartbeat_unix_ms(std::max(it->second.last_seen_ms, r.last_heartbeat_ms));
    }
    out.push_back(std::move(r.worker));
  }
  return out;
}

void Scheduler::RememberDrainLocked(const v1::Worker& w) {
  auto it = workers_.find(w.id());
  if (it == workers_.end()) {
    // Stored but not in memory yet (its RegisterWorker is between the two): as stored.
    WorkerState s;
    s.gpus_total = w.gpus_size();
    s.cpu_slots = w.cpu_slots();
    s.gpus_free = w.gpus_free();
    s.last_seen_ms = w.last_heartbeat_unix_ms();
    it = workers_.emplace(w.id(), s).first;
  }
  it->second.drained = w.drained();
  it->second.drained_by_hand = w.drained() && w.drained_by() != kDrainedByController;
  it->second.drain_reason = w.drain_reason();
}

void Scheduler::RefreshGaugesAfterDrain(const std::string& worker_id) {
  // The change is stored: a failed refresh only delays the gauges to the next tick.
  absl::Status s = RefreshPendingAndGauges();
  if (!s.ok()) spdlog::error("gauges after a drain change of worker {}: {}", worker_id, s.ToString());
}

absl::StatusOr<v1::DrainWorkerResponse> Scheduler::DrainWorker(const v1::DrainWorkerRequest& req,
                                                               const std::string& peer) {
  if (req.worker_id().empty()) return absl::InvalidArgumentError("worker_id is empty");
  const std::string reason(absl::StripAsciiWhitespace(req.reason()));
  if (reason.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("draining worker '", Truncated(req.worker_id()), "' needs a reason (what the drain is for)"));
  }
  if (reason.size() > kMaxDrainReasonBytes) {
    return absl::InvalidArgumentError(absl::StrCat("drain reason is ", reason.size(), " bytes long; the limit is ",
                                                   kMaxDrainReasonBytes, " bytes"));
  }
  if (req.requested_by().size() > kMaxRequestedByBytes) {
    return absl::InvalidArgumentError(absl::StrCat("requested_by is ", req.requested_by().size(),
                                                   " bytes long; the limit is ", kMaxRequestedByBytes, " bytes"));
  }
  const std::string by = Requester(req.requested_by(), peer);
  v1::DrainWorkerResponse resp;
  {
    absl::MutexLock d(&drain_mu_);
    ASSIGN_OR_RETURN(auto out, store_->DrainWorker(req.worker_id(), reason, by, NowMs()));
    absl::MutexLock l(&mu_);
    RememberDrainLocked(out.worker.worker);
    resp.set_changed(out.changed);
    *resp.mutable_worker() = std::move(out.worker.worker);
  }
  if (resp.changed()) {
    spdlog::warn("worker {} drained by {} from {}: {} ({} running jobs go on)", req.worker_id(), by, peer, reason,
                 resp.worker().running_job_ids_size());
  } else {
    spdlog::info("worker {}: drain by {} ignored, drained already by {}", req.worker_id(), by,
                 resp.worker().drained_by());
  }
  RefreshGaugesAfterDrain(req.worker_id());
  return resp;
}

absl::StatusOr<v1::UndrainWorkerResponse> Scheduler::UndrainWorker(const v1::UndrainWorkerRequest& req,
                                                                   const std::string& peer) {
  if (req.worker_id().empty()) return absl::InvalidArgumentError("worker_id is empty");
  if (req.requested_by().size() > kMaxRequestedByBytes) {
    return absl::InvalidArgumentError(absl::StrCat("requested_by is ", req.requested_by().size(),
                                                   " bytes long; the limit is ", kMaxRequestedByBytes, " bytes"));
  }
  v1::UndrainWorkerResponse resp;
  std::string was;
  {
    absl::MutexLock d(&drain_mu_);
    ASSIGN_OR_RETURN(auto out, store_->UndrainWorker(req.worker_id()));
    absl::MutexLock l(&mu_);
    auto it = workers_.find(req.worker_id());
    if (it != workers_.end()) was = it->second.drain_reason;
    RememberDrainLocked(out.worker.worker);
    resp.set_changed(out.changed);
    *resp.mutable_worker() = std::move(out.worker.worker);
  }
  const std::string by = Requester(req.requested_by(), peer);
  if (resp.changed()) {
    spdlog::info("worker {} returned to service by {} from {} (was drained: {})", req.worker_id(), by, peer, was);
  } else {
    spdlog::info("worker {}: undrain by {}: not drained; infra failure streak restarted", req.worker_id(), by);
  }
  RefreshGaugesAfterDrain(req.worker_id());
  return resp;
}

absl::StatusOr<v1::GetJobLogsResponse> Scheduler::JobLogs(const v1::GetJobLogsRequest& req) {
  ASSIGN_OR_RETURN(const v1::Job job, store_->GetJob(req.job_id()));
  const int32_t ranks = std::max(1, job.spec().gpus());
  if (!req.stream().empty() && !log_streams::Known(req.stream())) {
    return absl::InvalidArgumentError(absl::StrCat("stream \"", Truncated(req.stream()),
                                                   "\" is not one of \"stdout\", \"stderr\""));
  }
  if (req.rank() < 0 || req.rank() >= ranks) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", req.rank(), " is out of range: job ", job.id(), " has ",
                                                   ranks, " rank(s), 0..", ranks - 1));
  }
  if (req.tail_lines() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("tail_lines must be >= 0, got ", req.tail_lines()));
  }
  if (req.has_from_offset() && req.from_offset() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("from_offset must be >= 0, got ", req.from_offset()));
  }
  if (req.attempt() < 0 || req.attempt() > job.attempt()) {
    return absl::InvalidArgumentError(
        job.attempt() == 0
            ? absl::StrCat("attempt ", req.attempt(), " is out of range: job ", job.id(),
                           " has not started an attempt yet (0 = the latest)")
            : absl::StrCat("attempt ", req.attempt(), " is out of range: job ", job.id(), " has ", job.attempt(),
                           " attempt(s), 1..", job.attempt(), " (0 = the latest)"));
  }
  v1::GetJobLogsResponse resp;
  const std::string stream = req.stream().empty() ? log_streams::kStdout : req.stream();
  if (!log_streams::SentAsChunks(req.rank(), stream)) {
    // Rank 0's stdout: the events.
    if (req.has_from_offset()) {
      return absl::InvalidArgumentError(
          "from_offset applies to a rank's stderr or the stdout of a rank > 0; rank 0's stdout is the events "
          "(follow them with WatchJob)");
    }
    ASSIGN_OR_RETURN(auto events,
                     store_->TailEvents(job.id(), req.tail_lines() > 0 ? req.tail_lines() : 100, req.attempt()));
    std::string text;
    for (const auto& e : events) absl::StrAppend(&text, e.json(), "\n");
    resp.set_text(std::move(text));
    resp.set_attempt(req.attempt() != 0 ? req.attempt() : job.attempt());
    return resp;
  }
  ASSIGN_OR_RETURN(const LogRead held, store_->ReadLogs(job.id(), req.attempt(), req.rank(), stream,
                                                        req.has_from_offset() ? req.from_offset() : 0));
  LogText t = AssembleLog(held, req.has_from_offset() ? std::optional<int64_t>(req.from_offset()) : std::nullopt,
                          req.tail_lines());
  resp.set_text(std::move(t.text));
  resp.set_next_offset(t.next_offset);
  resp.set_dropped_bytes(t.dropped_bytes);
  resp.set_attempt(held.attempt);
  resp.set_dropped_by_retention(held.dropped_by_retention);
  return resp;
}

// ---------------------------------------------------------------- workers

absl::StatusOr<v1::RegisterWorkerResponse> Scheduler::RegisterWorker(const v1::RegisterWorkerRequest& req) {
  v1::Worker w = req.worker();
  if (w.id().empty()) {
    w.set_id(absl::StrFormat("w-%s-%x", w.hostname().empty() ? "anon" : w.hostname(),
                             static_cast<uint32_t>(NowMs() ^ reinterpret_cast<uintptr_t>(&w))));
  }
  if (w.cpu_slots() < 0) return absl::InvalidArgumentError(absl::StrCat("cpu_slots must be >= 0, got ", w.cpu_slots()));
  const int64_t now = NowMs();
  ASSIGN_OR_RETURN(auto rec, store_->RegisterWorker(w, now));
  {
    absl::MutexLock l(&mu_);
    auto& s = workers_[w.id()];
    s.gpus_total = w.gpus_size();
    s.cpu_slots = w.cpu_slots();
    s.gpus_free = w.gpus_free() > 0 ? w.gpus_free() : w.gpus_size();
    s.cpu_slots_free = w.cpu_slots();
    s.last_seen_ms = now;
  }
  spdlog::info("worker {} registered: {} GPUs, {} CPU slots, host {}", w.id(), w.gpus_size(), w.cpu_slots(),
               w.hostname());
  v1::RegisterWorkerResponse resp;
  resp.set_worker_id(w.id());
  resp.set_heartbeat_interval_seconds(options_.heartbeat_interval_seconds);
  resp.set_lease_ttl_seconds(options_.lease_ttl_seconds);
  return resp;
}

absl::StatusOr<v1::LeaseJobResponse> Scheduler::LeaseJob(const v1::LeaseJobRequest& req) {
  const int64_t now = NowMs();
  v1::LeaseJobResponse resp;
  {
    absl::MutexLock l(&mu_);
    auto it = workers_.find(req.worker_id());
    if (it == workers_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown worker '", Truncated(req.worker_id()), "'; register again"));
    }
    it->second.last_seen_ms = now;
    it->second.gpus_free = req.gpus_free();
    it->second.cpu_slots_free = req.cpu_slots_free();
    if (it->second.drained) {
      resp.set_pending_reason(absl::StrCat("worker ", req.worker_id(), " is drained: ", it->second.drain_reason));
      return resp;
    }
  }
  ASSIGN_OR_RETURN(auto leased, store_->LeaseNext(req.worker_id(), req.gpus_free(), req.cpu_slots_free(), now,
                                                  TtlMs()));
  if (!leased) {
    absl::MutexLock l(&mu_);
    if (queue_depth_ > 0) {
      resp.set_pending_reason(absl::StrCat(queue_depth_, " jobs queued; none fits ", req.gpus_free(),
                                           " free GPUs and ", req.cpu_slots_free(), " free CPU slots on ",
                                           req.worker_id()));
    }
    return resp;
  }
  counters_.leases_granted++;
  metrics_->lease_latency->WithLabels({}).Observe(static_cast<double>(now - leased->queued_ms) / 1000.0);
  {
    absl::MutexLock l(&mu_);
    auto& w = workers_[req.worker_id()];
    if (leased->job.spec().gpus() > 0) {
      w.gpus_free = std::max(0, w.gpus_free - leased->job.spec().gpus());
    } else {
      w.cpu_slots_free = std::max(0, w.cpu_slots_free - 1);
    }
  }
  const auto& job = leased->job;
  metrics_->job_budget->WithLabels({job.sweep_id(), job.id()})
      .Set(job.spec().budget().train_seconds() > 0 ? job.spec().budget().train_seconds() : 600);
  spdlog::info("job {} leased to {} (attempt {}, token {})", job.id(), req.worker_id(), job.attempt(),
               job.fencing_token());
  resp.set_fencing_token(job.fencing_token());
  *resp.mutable_job() = std::move(leased->job);
  Notify(resp.job().id());
  return resp;
}

absl::StatusOr<v1::HeartbeatResponse> Scheduler::Heartbeat(const v1::HeartbeatRequest& req) {
  const int64_t now = NowMs();
  std::vector<std::pair<std::string, int64_t>> leases;
  for (const auto& l : req.leases()) leases.emplace_back(l.job_id(), l.fencing_token());
  ASSIGN_OR_RETURN(auto out, store_->Heartbeat(req.worker_id(), leases, req.gpus_free(), now, TtlMs()));
  v1::HeartbeatResponse resp;
  if (!out.known_worker) {
    resp.set_reregister(true);
    for (const auto& l : req.leases()) resp.add_lost_job_ids(l.job_id());
    return resp;
  }
  {
    absl::MutexLock l(&mu_);
    auto& w = workers_[req.worker_id()];
    w.last_seen_ms = now;
    w.gpus_free = req.gpus_free();
  }
  for (auto& id : out.cancel_job_ids) resp.add_cancel_job_ids(id);
  for (auto& id : out.lost_job_ids) resp.add_lost_job_ids(id);
  return resp;
}

void Scheduler::CountStale(const absl::Status& s) {
  if (ErrorCodeOf(s) == kStaleFencingToken) {
    counters_.stale_reports_rejected++;
    metrics_->stale->WithLabels({}).Inc();
    spdlog::warn("rejected: {}", std::string(s.message()));
  }
}

absl::StatusOr<v1::ReportEventsResponse> Scheduler::ReportEvents(const v1::ReportEventsRequest& req) {
  std::vector<v1::Event> events(req.events().begin(), req.events().end());
  auto out = store_->AppendEvents(req.worker_id(), req.lease().job_id(), req.lease().fencing_token(), events, NowMs());
  if (!out.ok()) {
    CountStale(out.status());
    return out.status();
  }
  const std::string& job_id = req.lease().job_id();
  // After the events, which count (metrics, early stopping) even when the chunks are refused.
  absl::Status logs_status;
  if (req.logs_size() > 0) {
    std::vector<v1::LogChunk> logs(req.logs().begin(), req.logs().end());
    auto stored = store_->AppendLogs(req.worker_id(), job_id, req.lease().fencing_token(), logs);
    logs_status = stored.status();
    if (!stored.ok()) {
      CountStale(stored.status());
    } else {
      if (stored->dropped_bytes > 0) {
        spdlog::debug("job {}: {} oldest log bytes dropped (per-stream cap)", job_id, stored->dropped_bytes);
      }
      if (stored->retention_dropped_bytes > 0) {
        spdlog::info("{} log bytes of the jobs that ended longest ago dropped (--log-bytes-total)",
                     stored->retention_dropped_bytes);
      }
      metrics_->log_bytes->WithLabels({}).Set(static_cast<double>(store_->LogBytesHeld()));
    }
  }
  bool has_val = false;
  for (const auto& e : events) {
    if (e.type() != "step" && e.type() != "val") continue;
    auto j = json::parse(e.json(), nullptr, false);
    if (!j.is_object()) continue;
    const metrics::LabelValues l = {out->sweep_id, job_id};
    auto num = [&](const char* k) -> std::optional<double> {
      if (j.contains(k) && j[k].is_number()) return j[k].get<double>();
      return std::nullopt;
    };
    if (e.type() == "val") {
      has_val = true;
      if (auto v = num("val_bpb")) metrics_->job_val->WithLabels(l).Set(*v);
    } else {
      if (auto v = num("step")) metrics_->job_step->WithLabels(l).Set(*v);
      if (auto v = num("train_loss")) metrics_->job_loss->WithLabels(l).Set(*v);
      if (auto v = num("tokens_per_s")) metrics_->job_tps->WithLabels(l).Set(*v);
      if (auto v = num("mem_bytes")) metrics_->job_mem->WithLabels(l).Set(*v);
    }
    if (auto v = num("train_time_s")) metrics_->job_elapsed->WithLabels(l).Set(*v);
  }
  v1::ReportEventsResponse resp;
  resp.set_acked_seq(out->acked_seq);
  resp.set_cancel(out->cancel);
  resp.set_cancel_reason(out->cancel_reason);
  if (has_val && out->inserted > 0) {
    absl::Status s = ApplyEarlyStopping(out->sweep_id);
    if (!s.ok()) spdlog::error("early stopping for sweep {}: {}", out->sweep_id, s.ToString());
    absl::MutexLock l(&mu_);
    if (!resp.cancel() && stopped_early_.count(job_id)) {
      auto job = store_->GetJob(job_id);
      if (job.ok()) {
        resp.set_cancel(true);
        resp.set_cancel_reason(job->state() == v1::JOB_STATE_CANCELLED ? job->message() : "early_stopped");
      }
    }
  }
  if (resp.cancel() && resp.cancel_reason().empty()) resp.set_cancel_reason("cancelled");
  if (out->inserted > 0 || out->became_running) Notify(job_id);
  if (!logs_status.ok()) return logs_status;
  return resp;
}

absl::StatusOr<v1::CompleteJobResponse> Scheduler::CompleteJob(const v1::CompleteJobRequest& req) {
  Completion c;
  c.worker_id = req.worker_id();
  c.job_id = req.lease().job_id();
  c.fencing_token = req.lease().fencing_token();
  c.state = req.state();
  c.exit_reason = req.exit_reason();
  c.message = req.message();
  c.result = req.result();
  c.infra_failure = req.infra_failure();
  auto out = store_->CompleteJob(c, NowMs(), options_.drain_after,
                                 static_cast<int64_t>(options_.retry_avoid_seconds * 1000));
  if (!out.ok()) {
    CountStale(out.status());
    return out.status();
  }
  {
    absl::MutexLock l(&mu_);
    auto& w = workers_[req.worker_id()];
    const int gpus = out->job.spec().gpus();
    if (!out->replay) {
      if (gpus > 0) {
        w.gpus_free = std::min(w.gpus_total, w.gpus_free + gpus);
      } else {
        w.cpu_slots_free = std::min(w.cpu_slots, w.cpu_slots_free + 1);
      }
    }
  }
  if (out->worker_drained) {
    counters_.workers_drained++;
    {
      // The stored state, not "drained": an UndrainWorker may already have followed.
      absl::MutexLock d(&drain_mu_);
      auto ws = store_->ListWorkers();
      absl::MutexLock l(&mu_);
      if (ws.ok()) {
        for (const auto& r : *ws) {
          if (r.worker.id() != req.worker_id()) continue;
          RememberDrainLocked(r.worker);
          spdlog::warn("worker {} drained: {}", r.worker.id(), r.worker.drain_reason());
        }
      }
    }
    RefreshGaugesAfterDrain(req.worker_id());
  }
  if (!out->replay) {
    if (out->retried) {
      metrics_->RemoveJob(out->job.sweep_id(), out->job.id());
      spdlog::warn("job {} attempt {} failed on {} ({}); requeued", c.job_id, out->job.attempt(), c.worker_id,
                   v1::ExitReason_Name(c.exit_reason));
    } else {
      OnJobFinished(out->job);
      spdlog::info("job {} finished: {} / {}", c.job_id, StateLabel(out->job.state()),
                   v1::ExitReason_Name(out->job.exit_reason()));
    }
    Notify(c.job_id);
  }
  v1::CompleteJobResponse resp;
  *resp.mutable_job() = std::move(out->job);
  return resp;
}

void Scheduler::OnJobFinished(const v1::Job& job) {
  metrics_->RemoveJob(job.sweep_id(), job.id());
  if (IsFinal(job.state())) metrics_->finished->WithLabels({StateLabel(job.state())}).Inc();
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    // Query and replace as one step: two completions of a sweep interleaving
    // their remove + re-add would leave an older top list (or both) behind.
    absl::MutexLock l(&leaderboard_mu_);
    auto best = store_->BestJobs(job.sweep_id(), metric_names::kLeaderboardSize);
    if (best.ok()) {
      metrics_->lb_val->RemoveMatching("sweep_id", job.sweep_id());
      metrics_->lb_bytes->RemoveMatching("sweep_id", job.sweep_id());
      for (const auto& b : *best) {
        metrics_->lb_val->WithLabels({b.sweep_id(), b.id()}).Set(b.result().val_bpb_post_quant());
        metrics_->lb_bytes->WithLabels({b.sweep_id(), b.id()}).Set(static_cast<double>(b.result().artifact_bytes()));
      }
    }
  }
}

// ---------------------------------------------------------------- early stopping

absl::StatusOr<EarlyStoppingConfig> Scheduler::SweepEarlyStopping(const std::string& sweep_id) {
  {
    absl::MutexLock l(&mu_);
    auto it = early_stopping_.find(sweep_id);
    if (it != early_stopping_.end()) return it->second;
  }
  ASSIGN_OR_RETURN(auto sweep, store_->GetSweep(sweep_id));
  auto j = json::parse(sweep.spec().sweep_json(), nullptr, false);
  EarlyStoppingConfig c;
  if (j.is_object()) {
    auto parsed = ParseEarlyStopping(j);
    if (parsed.ok()) c = *parsed;
  }
  absl::MutexLock l(&mu_);
  early_stopping_[sweep_id] = c;
  return c;
}

absl::Status Scheduler::ApplyEarlyStopping(const std::string& sweep_id) {
  ASSIGN_OR_RETURN(auto config, SweepEarlyStopping(sweep_id));
  if (config.type.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto points, store_->SweepValPoints(sweep_id));
  for (const auto& d : DecideEarlyStops(config, points)) {
    {
      absl::MutexLock l(&mu_);
      if (!stopped_early_.insert(d.job_id).second) continue;
    }
    ASSIGN_OR_RETURN(auto job, store_->CancelJob(d.job_id, d.reason, v1::EXIT_REASON_EARLY_STOPPED, NowMs()));
    counters_.early_stopped++;
    spdlog::info("job {} {}", d.job_id, d.reason);
    Notify(d.job_id);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- housekeeping

absl::Status Scheduler::Tick() {
  ASSIGN_OR_RETURN(auto expired, store_->ExpireLeases(NowMs()));
  for (const auto& e : expired) {
    counters_.leases_expired++;
    metrics_->leases_expired->WithLabels({}).Inc();
    spdlog::warn("job {}: lease on {} expired; {}", e.job_id, e.worker_id, e.requeued ? "requeued" : "failed");
    auto job = store_->GetJob(e.job_id);
    if (job.ok()) {
      if (IsFinal(job->state())) {
        OnJobFinished(*job);
      } else {
        metrics_->RemoveJob(job->sweep_id(), job->id());
      }
    }
    Notify(e.job_id);
  }
  ASSIGN_OR_RETURN(auto silent, store_->FlagSilentJobs(NowMs(), 1290 * 1000));
  for (const auto& id : silent) {
    counters_.no_progress_killed++;
    spdlog::warn("job {}: no event within its silence limit; killing it (no_progress)", id);
    Notify(id);
  }
  // Over the bound on stored log bytes (e.g. lowered since the last start, or
  // held by jobs that have ended since): a bounded pass per tick.
  // A failure is logged, not returned: the gauges below are refreshed all the same.
  auto trimmed = store_->TrimLogs();
  if (!trimmed.ok()) {
    spdlog::error("dropping old logs past --log-bytes-total: {}", trimmed.status().ToString());
  } else if (trimmed->dropped_bytes > 0) {
    spdlog::info("{} log bytes of {} stream(s) of the jobs that ended longest ago dropped (--log-bytes-total)",
                 trimmed->dropped_bytes, trimmed->streams);
  }
  return RefreshPendingAndGauges();
}

absl::Status Scheduler::RefreshPendingAndGauges() {
  const int64_t now = NowMs();
  ASSIGN_OR_RETURN(auto counts, store_->CountJobsByState());
  for (auto s : metric_names::kJobStates) metrics_->jobs->WithLabels({s}).Set(0);
  for (const auto& [state, n] : counts) {
    if (state != v1::JOB_STATE_UNSPECIFIED) metrics_->jobs->WithLabels({StateLabel(state)}).Set(static_cast<double>(n));
  }
  const int64_t queued = counts.count(v1::JOB_STATE_QUEUED) ? counts[v1::JOB_STATE_QUEUED] : 0;
  metrics_->queue_depth->WithLabels({}).Set(static_cast<double>(queued));
  metrics_->log_bytes->WithLabels({}).Set(static_cast<double>(store_->LogBytesHeld()));

  std::map<std::string, WorkerState> workers;
  {
    absl::MutexLock l(&mu_);
    queue_depth_ = queued;
    workers = workers_;
  }
  const int64_t lost_ms = static_cast<int64_t>(options_.worker_lost_seconds * 1000);
  int live = 0, drained = 0, lost = 0;
  std::string big_id, free_id, cpu_id;
  int32_t biggest = -1, most_free = -1, cpu_free = -1;
  const int64_t ttl_ms = static_cast<int64_t>(options_.metrics_worker_ttl_seconds * 1000);
  for (const auto& [id, w] : workers) {
    if (ttl_ms > 0 && now - w.last_seen_ms > ttl_ms) {
      // Gone for good: its per-worker series leave /metrics (bounded
      // cardinality); the fleet totals below still count it as lost.
      metrics_->heartbeat_age->Remove({id});
      metrics_->worker_gpus->RemoveMatching("worker", id);
      metrics_->worker_drained->Remove({id});
      metrics_->worker_drained_by_hand->Remove({id});
      w.drained ? ++drained : ++lost;
      continue;
    }
    const double age = static_cast<double>(now - w.last_seen_ms) / 1000.0;
    metrics_->heartbeat_age->WithLabels({id}).Set(age);
    // A lost worker's GPUs are neither free (nothing can be leased there) nor known busy.
    const bool is_lost = !w.drained && now - w.last_seen_ms > lost_ms;
    metrics_->worker_gpus->WithLabels({id, "free"}).Set(is_lost ? 0 : w.gpus_free);
    metrics_->worker_gpus->WithLabels({id, "busy"}).Set(is_lost ? 0 : std::max(0, w.gpus_total - w.gpus_free));
    metrics_->worker_gpus->WithLabels({id, "lost"}).Set(is_lost ? w.gpus_total : 0);
    metrics_->worker_drained->WithLabels({id}).Set(w.drained ? 1 : 0);
    metrics_->worker_drained_by_hand->WithLabels({id}).Set(w.drained_by_hand ? 1 : 0);
    if (w.drained) {
      ++drained;
      continue;
    }
    if (is_lost) {
      ++lost;
      continue;
    }
    ++live;
    if (w.gpus_total > biggest) biggest = w.gpus_total, big_id = id;
    if (w.gpus_free > most_free) most_free = w.gpus_free, free_id = id;
    if (w.cpu_slots > 0 && w.cpu_slots_free > cpu_free) cpu_free = w.cpu_slots_free, cpu_id = id;
  }
  metrics_->workers->WithLabels({"live"}).Set(live);
  metrics_->workers->WithLabels({"drained"}).Set(drained);
  metrics_->workers->WithLabels({"lost"}).Set(lost);

  std::map<std::string, int64_t> by_category;
  for (auto r : metric_names::kPendingReasons) by_category[std::string(r)] = 0;
  if (queued > 0) {
    // One reason per gang size: every queued job of that size waits for the same thing.
    ASSIGN_OR_RETURN(auto sizes, store_->QueuedByGpus());
    std::map<int32_t, std::string> reasons;  // gpus → reason
    for (const auto& [g, n] : sizes) {
      std::string reason, category;
      if (live == 0) {
        category = "no_live_workers";
        reason = absl::StrCat("no live worker (", workers.size(), " registered, ", drained, " drained, ", lost,
                              " lost)");
      } else if (g > 0 && g > biggest) {
        category = "no_worker_large_enough";
        reason = absl::StrCat("needs ", g, " GPUs on one worker; largest: ", biggest, " on ", big_id);
      } else if (g > 0 && g > most_free) {
        category = "insufficient_free_gpus";
        reason = absl::StrCat("needs ", g, " GPUs on one worker; largest free: ", most_free, " on ", free_id);
      } else if (g == 0 && cpu_free < 0) {
        category = "no_worker_large_enough";
        reason = "needs a CPU slot; no live worker offers CPU slots";
      } else if (g == 0 && cpu_free == 0) {
        category = "insufficient_free_gpus";
        reason = "needs a CPU slot; all CPU slots are busy";
      }
      reasons[g] = reason;
      if (!category.empty()) by_category[category] += n;
    }
    absl::MutexLock l(&mu_);
    pending_by_gpus_ = std::move(reasons);
  }
  for (const auto& [cat, n] : by_category) metrics_->pending->WithLabels({cat}).Set(n);
  return absl::OkStatus();
}

// ---------------------------------------------------------------- watchers

int64_t Scheduler::Watch(const std::string& job_id, std::function<void()> fn) {
  absl::MutexLock l(&watch_mu_);
  const int64_t h = next_watch_++;
  watchers_[h] = {job_id, std::make_shared<std::function<void()>>(std::move(fn))};
  return h;
}

void Scheduler::Unwatch(int64_t handle) {
  absl::MutexLock l(&watch_mu_);
  watchers_.erase(handle);
}

void Scheduler::Notify(const std::string& job_id) {
  std::vector<std::shared_ptr<std::function<void()>>> fns;
  {
    absl::MutexLock l(&watch_mu_);
    for (const auto& [h, w] : watchers_) {
      if (w.first == job_id) fns.push_back(w.second);
    }
  }
  for (const auto& f : fns) (*f)();
}

}  // namespace caddie::controller
