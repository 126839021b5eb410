#include "worker/worker.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "caddie/version.h"
#include "common/enum_label.h"
#include "common/grpc_channel.h"
#include "common/grpc_status.h"
#include "common/metric_names.h"
#include "spdlog/spdlog.h"

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;
namespace mn = caddie::metric_names;
using Clock = std::chrono::steady_clock;

constexpr char kShutdownReason[] = "worker shutting down";
constexpr int kJobsTailLines = 20;  // per log file in GET /jobs

// Codes after which resending the same message cannot succeed.
bool IsPermanentRejection(grpc::StatusCode c) {
  return c == grpc::StatusCode::FAILED_PRECONDITION || c == grpc::StatusCode::INVALID_ARGUMENT ||
         c == grpc::StatusCode::ALREADY_EXISTS || c == grpc::StatusCode::OUT_OF_RANGE ||
         c == grpc::StatusCode::PERMISSION_DENIED;
}

// A NOT_FOUND answer is retried (after re-registering) this many times before
// the record is given up: the controller may have restarted without its state.
constexpr int kMaxNotFoundRetries = 20;

}  // namespace

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerOptions options) {
  if (options.id.empty()) return absl::InvalidArgumentError("--id is required (a stable worker id)");
  if (options.id.find('/') != std::string::npos || options.id == "." || options.id == "..") {
    return absl::InvalidArgumentError(absl::StrCat("--id \"", options.id, "\" must not contain '/'"));
  }
  if (options.controller.empty()) return absl::InvalidArgumentError("--controller is required");
  if (options.work_dir.empty()) return absl::InvalidArgumentError("--work-dir is required");
  if (options.runner.trainer.empty()) return absl::InvalidArgumentError("--trainer is required");
  if (options.cpu_slots < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--cpu-slots ", options.cpu_slots, " must be >= 0"));
  }
  // However the token came (--token-file, the environment), no trainer sees it.
  if (!options.token.empty()) options.runner.withheld_values.push_back(options.token);
  const std::string root = (fs::path(options.work_dir) / options.id).string();
  std::error_code ec;
  fs::create_directories(fs::path(root) / "runs", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", root, ": ", ec.message()));
  const std::string lock_path = root + "/lock";
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return absl::InternalError(absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    close(lock_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("worker id \"", options.id, "\" is in use by another caddie-worker (", lock_path, " is locked)"));
  }
  auto spool = Spool::Open(root + "/spool");
  if (!spool.ok()) {
    close(lock_fd);
    return spool.status();
  }
  return std::unique_ptr<Worker>(new Worker(std::move(options), root, lock_fd, std::move(*spool)));
}

Worker::Worker(WorkerOptions options, std::string root, int lock_fd, std::unique_ptr<Spool> spool)
    : options_(std::move(options)), root_(std::move(root)), lock_fd_(lock_fd), spool_(std::move(spool)) {
  grpc::ChannelArguments args;
  // Reconnect quickly once the controller is back after an outage.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  stub_ = caddie::v1::WorkerService::NewStub(
      grpc::CreateCustomChannel(options_.controller, ClientChannelCredentials(options_.tls_ca_pem), args));
  for (const auto& g : options_.gpus) free_gpus_.push_back(g.index());
  free_cpu_slots_ = options_.cpu_slots;
  if (options_.heartbeat_interval_s > 0) heartbeat_interval_s_ = options_.heartbeat_interval_s;
  SetupMetrics();
}

Worker::~Worker() {
  Shutdown();
  sender_stop_ = true;
  if (sender_.joinable()) sender_.join();
  absl::MutexLock l(&mu_);
  for (auto& [id, j] : jobs_) {
    j.runner->Abandon();
    if (j.thread.joinable()) {
      mu_.Unlock();
      j.thread.join();
      mu_.Lock();
    }
  }
  close(lock_fd_);
}

void Worker::SetupMetrics() {
  auto gpus = registry_.AddGauge(mn::kWorkerLocalGpus);
  auto running = registry_.AddGauge(mn::kWorkerRunningJobs);
  auto spooled = registry_.AddGauge(mn::kWorkerSpooledResults);
  auto exits = registry_.AddCounter(mn::kWorkerTrainerExits);
  auto spool_failures = registry_.AddCounter(mn::kWorkerSpoolWriteFailures);
  auto held = registry_.AddGauge(mn::kWorkerSpoolHeld);
  auto calls = registry_.AddCounter(mn::kGrpcClientCalls);
  auto errors = registry_.AddCounter(mn::kGrpcClientErrors);
  // The definitions are constants of ours: a failure here is a programming error.
  if (!gpus.ok() || !running.ok() || !spooled.ok() || !exits.ok() || !calls.ok() || !errors.ok() ||
      !spool_failures.ok() || !held.ok()) {
    spdlog::critical("worker metrics do not register; check common/metric_names.h");
    std::abort();
  }
  jobs_finished_ = *exits;
  rpc_calls_ = *calls;
  rpc_errors_ = *errors;
  spool_write_failures_ = *spool_failures;
  spool_write_failures_->WithLabels({});
  registry_.AddCollectHook([this, gpus = *gpus, running = *running, spooled = *spooled, held = *held] {
    absl::MutexLock l(&mu_);
    const int free = static_cast<int>(free_gpus_.size());
    gpus->WithLabels({"free"}).Set(free);
    gpus->WithLabels({"busy"}).Set(static_cast<double>(options_.gpus.size()) - free);
    int n = 0;
    for (const auto& [id, j] : jobs_) n += j.done ? 0 : 1;
    running->WithLabels({}).Set(n);
    spooled->WithLabels({}).Set(static_cast<double>(spool_->size()));
    held->WithLabels({}).Set(static_cast<double>(spool_->held()));
  });
}

std::unique_ptr<grpc::ClientContext> Worker::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(options_.rpc_timeout_s * 1000)));
  if (!options_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.token);
  return ctx;
}

void Worker::CountRpc(const char* method, const grpc::Status& s) {
  rpc_calls_->WithLabels({method}).Inc();
  auto e = rpc_errors_->WithLabels({method});
  if (!s.ok()) e.Inc();
}

std::string Worker::worker_id() const {
  absl::MutexLock l(&mu_);
  return worker_id_;
}

int Worker::running_jobs() const {
  absl::MutexLock l(&mu_);
  int n = 0;
  for (const auto& [id, j] : jobs_) n += j.done ? 0 : 1;
  return n;
}

absl::Status Worker::Register() {
  caddie::v1::RegisterWorkerRequest req;
  auto* w = req.mutable_worker();
  w->set_id(options_.id);
  w->set_hostname(options_.hostname);
  for (const auto& g : options_.gpus) *w->add_gpus() = g;
  for (const auto& [k, v] : options_.labels) (*w->mutable_labels())[k] = v;
  w->set_version(CADDIE_VERSION);
  w->set_cpu_slots(options_.cpu_slots);
  {
    absl::MutexLock l(&mu_);
    w->set_gpus_free(static_cast<int>(free_gpus_.size()));
    for (const auto& [id, j] : jobs_) {
      if (!j.done) w->add_running_job_ids(id);
    }
  }
  caddie::v1::RegisterWorkerResponse resp;
  auto ctx = Context();
  grpc::Status s = stub_->RegisterWorker(ctx.get(), req, &resp);
  CountRpc("RegisterWorker", s);
  if (!s.ok()) return FromGrpcStatus(s);
  {
    absl::MutexLock l(&mu_);
    if (!resp.worker_id().empty() && resp.worker_id() != worker_id_) {
      spdlog::warn("controller calls this worker \"{}\" (asked for \"{}\")", resp.worker_id(), options_.id);
      worker_id_ = resp.worker_id();
    }
  }
  if (options_.heartbeat_interval_s <= 0 && resp.heartbeat_interval_seconds() > 0) {
    heartbeat_interval_s_ = resp.heartbeat_interval_seconds();
  }
  spdlog::info("registered with {} as {} ({} GPUs, {} CPU slots, heartbeat every {} s)", options_.controller,
               worker_id(), options_.gpus.size(), options_.cpu_slots, heartbeat_interval_s_.load());
  return absl::OkStatus();
}

void Worker::Heartbeat() {
  caddie::v1::HeartbeatRequest req;
  {
    absl::MutexLock l(&mu_);
    req.set_worker_id(worker_id_);
    for (const auto& [id, token] : fencing_) {
      auto* lease = req.add_leases();
      lease->set_job_id(id);
      lease->set_fencing_token(token);
    }
    req.set_gpus_free(static_cast<int>(free_gpus_.size()));
  }
  caddie::v1::HeartbeatResponse resp;
  auto ctx = Context();
  grpc::Status s = stub_->Heartbeat(ctx.get(), req, &resp);
  CountRpc("Heartbeat", s);
  if (!s.ok()) {
    spdlog::warn("heartbeat failed: {} ({})", s.error_message(), static_cast<int>(s.error_code()));
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) need_register_ = true;
    return;
  }
  for (const auto& id : resp.cancel_job_ids()) CancelJob(id, "cancelled by the controller", false);
  for (const auto& id : resp.lost_job_ids()) AbandonJob(id);
  if (resp.reregister()) {
    spdlog::warn("controller does not know this worker: registering again");
    need_register_ = true;
  }
}

void Worker::MaybeLease() {
  while (!stop_.load() && !need_register_.load()) {
    caddie::v1::LeaseJobRequest req;
    {
      absl::MutexLock l(&mu_);
      if (free_gpus_.empty() && free_cpu_slots_ <= 0) return;
      req.set_worker_id(worker_id_);
      req.set_gpus_free(static_cast<int>(free_gpus_.size()));
      req.set_cpu_slots_free(free_cpu_slots_);
    }
    caddie::v1::LeaseJobResponse resp;
    auto ctx = Context();
    grpc::Status s = stub_->LeaseJob(ctx.get(), req, &resp);
    CountRpc("LeaseJob", s);
    if (!s.ok()) {
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) need_register_ = true;
      spdlog::debug("lease failed: {}", s.error_message());
      return;
    }
    if (!resp.has_job() || resp.job().id().empty()) return;
    const caddie::v1::Job& job = resp.job();
    const int64_t token = resp.fencing_token() != 0 ? resp.fencing_token() : job.fencing_token();
    const int want = job.spec().gpus();
    std::vector<int> gpus;
    bool fits = false;
    {
      absl::MutexLock l(&mu_);
      if (want > 0 && want <= static_cast<int>(free_gpus_.size())) {
        gpus.assign(free_gpus_.begin(), free_gpus_.begin() + want);
        free_gpus_.erase(free_gpus_.begin(), free_gpus_.begin() + want);
        fits = true;
      } else if (want == 0 && free_cpu_slots_ > 0) {
        --free_cpu_slots_;
        fits = true;
      }
      fencing_[job.id()] = token;
    }
    if (!fits) {
      // The controller handed out more than we said was free: give it back as an
      // infrastructure failure so it is retried elsewhere.
      caddie::v1::LeaseRef lease;
      lease.set_job_id(job.id());
      lease.set_fencing_token(token);
      JobOutcome o;
      o.state = caddie::v1::JOB_STATE_FAILED;
      o.exit_reason = caddie::v1::EXIT_REASON_INFRA_ERROR;
      o.infra_failure = true;
      o.message = absl::StrCat("leased a job needing ", want, " GPUs but ", req.gpus_free(), " GPUs and ",
                               req.cpu_slots_free(), " CPU slots were free");
      OnFinished(lease, o, {}, want == 0);
      continue;
    }
    StartJob(job, token, std::move(gpus));
  }
}

void Worker::StartJob(const caddie::v1::Job& job, int64_t fencing_token, std::vector<int> gpus) {
  JobAssignment a;
  a.job = job;
  a.fencing_token = fencing_token;
  a.gpu_indices = gpus;
  a.run_dir = (fs::path(root_) / "runs" / absl::StrCat(job.id(), "-a", job.attempt())).string();
  caddie::v1::LeaseRef lease;
  lease.set_job_id(job.id());
  lease.set_fencing_token(fencing_token);
  spdlog::info("job {}: leased (attempt {}, token {}, {} GPU(s)), run dir {}", job.id(), job.attempt(),
               fencing_token, gpus.size(), a.run_dir);
  auto runner = std::make_unique<JobRunner>(
      options_.runner, std::move(a),
      [this, lease](std::vector<caddie::v1::Event> events, std::vector<caddie::v1::LogChunk> logs) {
        OnEvents(lease, std::move(events), std::move(logs));
      });
  JobRunner* r = runner.get();
  absl::MutexLock l(&mu_);
  RunningJob& rj = jobs_[job.id()];
  if (rj.thread.joinable()) {  // a finished earlier attempt of the same job
    mu_.Unlock();
    rj.thread.join();
    mu_.Lock();
  }
  rj.runner = std::move(runner);
  rj.gpus = gpus;
  rj.done = false;
  rj.thread = std::thread([this, r, lease, gpus, cpu = gpus.empty()] {
    JobOutcome o = r->Run();
    OnFinished(lease, o, gpus, cpu);
  });
}

void Worker::OnEvents(const caddie::v1::LeaseRef& lease, std::vector<caddie::v1::Event> events,
                      std::vector<caddie::v1::LogChunk> logs) {
  caddie::v1::ReportEventsRequest req;
  req.set_worker_id(worker_id());
  *req.mutable_lease() = lease;
  for (auto& e : events) *req.add_events() = std::move(e);
  for (auto& c : logs) *req.add_logs() = std::move(c);
  // Held in memory when the disk refuses it: the sender delivers it either way.
  const Spool::Appended a = spool_->Append(std::move(req));
  OnSpoolWriteError(lease.job_id(), a.write_error, /*may_stop=*/true);
  absl::MutexLock l(&send_mu_);
  send_wake_ = true;
}

void Worker::OnSpoolWriteError(const std::string& job_id, const absl::Status& error, bool may_stop) {
  if (error.ok()) {
    if (spool_failing_.exchange(false)) spdlog::info("spool: writing to disk again");
    return;
  }
  spool_write_failures_->WithLabels({}).Inc();
  const size_t held = spool_->held(), bytes = spool_->held_bytes();
  if (!spool_failing_.exchange(true)) {
    spdlog::error("{}; holding {} message(s) ({} bytes) in memory, sending them to the controller and "
                  "retrying the disk",
                  std::string(error.message()), held, bytes);
  }
  if (!may_stop || bytes <= options_.spool_memory_limit_bytes) return;
  // The disk is still refusing and the controller is not taking the backlog:
  // stop the run rather than hold without bound. What was held stays held.
  const std::string why =
      absl::StrCat("worker spool cannot write to disk (", error.message(), ") and holds ", bytes,
                   " bytes of unacknowledged results in memory (limit ", options_.spool_memory_limit_bytes,
                   "); run stopped");
  absl::MutexLock l(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.done || spool_stopped_.count(job_id)) return;
  spdlog::error("job {}: {}", job_id, why);
  spool_stopped_[job_id] = why;
  it->second.runner->Cancel(why);
}

void Worker::OnFinished(const caddie::v1::LeaseRef& lease, JobOutcome outcome, const std::vector<int>& gpus,
                        bool cpu_slot) {
  if (stop_.load() && outcome.state == caddie::v1::JOB_STATE_CANCELLED && outcome.message == kShutdownReason) {
    // Not the job's fault: let the controller retry it elsewhere.
    outcome.state = caddie::v1::JOB_STATE_FAILED;
    outcome.exit_reason = caddie::v1::EXIT_REASON_INFRA_ERROR;
    outcome.infra_failure = true;
  }
  {
    absl::MutexLock l(&mu_);
    auto it = spool_stopped_.find(lease.job_id());
    if (it != spool_stopped_.end()) {
      // Stopped by us for the spool (see OnSpoolWriteError): the node's fault, retryable.
      if (outcome.state == caddie::v1::JOB_STATE_CANCELLED && outcome.message == it->second) {
        outcome.state = caddie::v1::JOB_STATE_FAILED;
        outcome.exit_reason = caddie::v1::EXIT_REASON_INFRA_ERROR;
        outcome.infra_failure = true;
      }
      spool_stopped_.erase(it);
    }
  }
  jobs_finished_->WithLabels({EnumLabel(caddie::v1::ExitReason_Name(outcome.exit_reason), "EXIT_REASON_")}).Inc();
  spdlog::info("job {}: {} ({}){}{}", lease.job_id(), caddie::v1::JobState_Name(outcome.state),
               caddie::v1::ExitReason_Name(outcome.exit_reason), outcome.message.empty() ? "" : ": ",
               outcome.message);
  if (outcome.abandoned) {
    spool_->RemoveJob(lease.job_id());
  } else {
    caddie::v1::CompleteJobRequest req;
    req.set_worker_id(worker_id());
    *req.mutable_lease() = lease;
    req.set_state(outcome.state);
    req.set_exit_reason(outcome.exit_reason);
    req.set_message(outcome.message);
    *req.mutable_result() = outcome.result;
    req.set_infra_failure(outcome.infra_failure);
    const Spool::Appended a = spool_->Append(std::move(req));
    OnSpoolWriteError(lease.job_id(), a.write_error, /*may_stop=*/false);
  }
  {
    absl::MutexLock l(&mu_);
    free_gpus_.insert(free_gpus_.end(), gpus.begin(), gpus.end());
    std::sort(free_gpus_.begin(), free_gpus_.end());
    if (cpu_slot) ++free_cpu_slots_;
    if (outcome.abandoned) fencing_.erase(lease.job_id());
    auto it = jobs_.find(lease.job_id());
    if (it != jobs_.end()) it->second.done = true;
  }
  absl::MutexLock l(&send_mu_);
  send_wake_ = true;
}

void Worker::CancelJob(const std::string& job_id, const std::string& reason, bool early_stopped) {
  absl::MutexLock l(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.done) return;
  spdlog::info("job {}: cancel ({})", job_id, reason);
  it->second.runner->Cancel(reason, early_stopped);
}

void Worker::AbandonJob(const std::string& job_id) {
  spdlog::warn("job {}: lease lost; stopping it without reporting", job_id);
  {
    absl::MutexLock l(&mu_);
    auto it = jobs_.find(job_id);
    if (it != jobs_.end() && !it->second.done) it->second.runner->Abandon();
    fencing_.erase(job_id);
  }
  spool_->RemoveJob(job_id);
}

void Worker::ReapFinished() {
  std::vector<std::thread> done;
  {
    absl::MutexLock l(&mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (it->second.done) {
        done.push_back(std::move(it->second.thread));
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& t : done) {
    if (t.joinable()) t.join();
  }
}

bool Worker::Send(const SpoolRecord& record) {
  grpc::Status s;
  const std::string& job_id = record.job_id();
  const char* method = record.is_completion() ? "CompleteJob" : "ReportEvents";
  auto ctx = Context();
  if (record.is_completion()) {
    caddie::v1::CompleteJobRequest req = std::get<1>(record.message);
    req.set_worker_id(worker_id());
    caddie::v1::CompleteJobResponse resp;
    s = stub_->CompleteJob(ctx.get(), req, &resp);
  } else {
    caddie::v1::ReportEventsRequest req = std::get<0>(record.message);
    req.set_worker_id(worker_id());
    caddie::v1::ReportEventsResponse resp;
    s = stub_->ReportEvents(ctx.get(), req, &resp);
    if (s.ok() && resp.cancel()) {
      CancelJob(job_id, resp.cancel_reason().empty() ? "cancelled by the controller" : resp.cancel_reason(),
                absl::StrContains(absl::AsciiStrToLower(resp.cancel_reason()), "early"));
    }
  }
  CountRpc(method, s);
  if (s.ok()) {
    if (record.is_completion()) {
      absl::MutexLock l(&mu_);
      fencing_.erase(job_id);
    }
    return true;
  }
  if (IsPermanentRejection(s.error_code())) {
    spdlog::warn("job {}: controller rejected {} ({}): {}; dropping it", job_id, method,
                 static_cast<int>(s.error_code()), s.error_message());
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      // A stale fencing token: our lease is dead; the run must stop.
      AbandonJob(job_id);
    } else if (record.is_completion()) {
      absl::MutexLock l(&mu_);
      fencing_.erase(job_id);
    }
    return true;
  }
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) need_register_ = true;
  spdlog::debug("job {}: {} failed ({}): {}; will retry", job_id, method, static_cast<int>(s.error_code()),
                s.error_message());
  return false;
}

void Worker::SenderLoop() {
  int failures = 0;
  int not_found = 0;
  uint64_t last_id = 0;
  const auto drain_grace = std::chrono::seconds(5);
  std::optional<Clock::time_point> stop_at;
  auto next_flush = Clock::now();
  while (true) {
    // Messages held in memory (the disk refused them): try the disk again.
    if (spool_->held() > 0 && Clock::now() >= next_flush) {
      next_flush = Clock::now() + std::chrono::milliseconds(200);
      if (spool_->Flush().ok() && spool_failing_.exchange(false)) {
        spdlog::info("spool: writing to disk again; held messages written");
      }
    }
    if (sender_stop_.load() && !stop_at) stop_at = Clock::now();
    if (stop_at && (spool_->size() == 0 || Clock::now() - *stop_at > drain_grace)) return;
    std::optional<SpoolRecord> rec = spool_->Front();
    if (!rec) {
      absl::MutexLock l(&send_mu_);
      send_mu_.AwaitWithTimeout(absl::Condition(&send_wake_), absl::Milliseconds(200));
      send_wake_ = false;
      continue;
    }
    if (rec->id != last_id) {
      last_id = rec->id;
      not_found = 0;
    }
    if (Send(*rec)) {
      if (absl::Status st = spool_->Remove(rec->id); !st.ok()) spdlog::error("{}", st.ToString());
      failures = 0;
      continue;
    }
    if (need_register_.load() && ++not_found > kMaxNotFoundRetries) {
      spdlog::error("job {}: controller keeps answering NOT_FOUND; dropping spool record {}", rec->job_id(), rec->id);
      spool_->Remove(rec->id).IgnoreError();
      continue;
    }
    // Backoff: 100 ms doubling to 2 s, woken early by shutdown.
    const int64_t ms = std::min<int64_t>(2000, int64_t{100} << std::min(failures, 5));
    ++failures;
    absl::MutexLock l(&send_mu_);
    send_mu_.AwaitWithTimeout(absl::Condition(
                                  +[](std::atomic<bool>* s) { return s->load(); }, &sender_stop_),
                              absl::Milliseconds(ms));
  }
}

absl::Status Worker::Run() {
  if (!options_.http_listen.empty()) {
    http_ = std::make_unique<HttpServer>(&registry_);
    http_->AddGet("/jobs", "application/json", [this] { return JobsJson(); });
    if (absl::Status s = http_->Start(options_.http_listen); !s.ok()) return s;
    spdlog::info("caddie-worker metrics on http://{}/metrics", http_->address());
  }
  {
    absl::MutexLock l(&mu_);
    worker_id_ = options_.id;
  }
  if (spool_->size() > 0) spdlog::info("replaying {} spooled message(s)", spool_->size());
  sender_ = std::thread([this] { SenderLoop(); });
  int register_failures = 0;
  auto next_heartbeat = Clock::now();
  auto next_lease = Clock::now();
  while (!stop_.load()) {
    const auto now = Clock::now();
    if (need_register_.load()) {
      if (absl::Status s = Register(); !s.ok()) {
        if (register_failures++ % 10 == 0) {
          spdlog::warn("register with {} failed: {}{}", options_.controller, s.ToString(),
                       absl::IsUnavailable(s) ? "; " + TransportAdvice(options_.controller, !options_.tls_ca_pem.empty(),
                                                                       "--tls-ca", "--tls-ca")
                                              : "");
        }
        absl::MutexLock l(&send_mu_);
        send_mu_.AwaitWithTimeout(absl::Condition(
                                      +[](std::atomic<bool>* s) { return s->load(); }, &stop_),
                                  absl::Milliseconds(std::min(2000, 100 << std::min(register_failures, 5))));
        continue;
      }
      register_failures = 0;
      need_register_ = false;
      next_heartbeat = now;
    }
    if (now >= next_heartbeat) {
      Heartbeat();
      next_heartbeat = now + std::chrono::milliseconds(static_cast<int64_t>(heartbeat_interval_s_.load() * 1000));
    }
    ReapFinished();
    if (now >= next_lease) {
      MaybeLease();
      next_lease = now + std::chrono::milliseconds(static_cast<int64_t>(options_.lease_interval_s * 1000));
    }
    absl::MutexLock l(&send_mu_);
    send_mu_.AwaitWithTimeout(absl::Condition(
                                  +[](std::atomic<bool>* s) { return s->load(); }, &stop_),
                              absl::Milliseconds(50));
  }
  // Shutdown: stop every run, report it, let the sender drain for a moment.
  {
    absl::MutexLock l(&mu_);
    for (auto& [id, j] : jobs_) {
      if (!j.done) j.runner->Cancel(kShutdownReason);
    }
  }
  while (running_jobs() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ReapFinished();
  // Only now: the completions of the runs just stopped are in the spool.
  sender_stop_ = true;
  {
    absl::MutexLock l(&send_mu_);
    send_wake_ = true;
  }
  if (sender_.joinable()) sender_.join();
  if (http_) http_->Stop();
  if (spool_->held() > 0) {
    spdlog::error("{} message(s) the disk never took are lost with this process (spool: {})", spool_->held(),
                  spool_->dir());
  }
  spdlog::info("caddie-worker {} stopped ({} message(s) left in the spool)", options_.id, spool_->size());
  return absl::OkStatus();
}

std::string Worker::JobsJson() const {
  nlohmann::json out = nlohmann::json::array();
  absl::MutexLock l(&mu_);
  for (const auto& [id, j] : jobs_) {
    if (j.done) continue;
    const JobAssignment& a = j.runner->assignment();
    nlohmann::json tails = nlohmann::json::object();
    const int ranks = a.gpu_indices.empty() ? 1 : static_cast<int>(a.gpu_indices.size());
    tails["rank0.stdout.log"] = TailFile(a.run_dir + "/rank0.stdout.log", kJobsTailLines);
    for (int r = 0; r < ranks; ++r) {
      const std::string name = absl::StrCat("rank", r, ".stderr.log");
      tails[name] = TailFile(a.run_dir + "/" + name, kJobsTailLines);
    }
    out.push_back({{"job_id", id},
                   {"attempt", a.job.attempt()},
                   {"fencing_token", a.fencing_token},
                   {"gpus", a.gpu_indices},
                   {"run_dir", a.run_dir},
                   {"pgid", j.runner->pgid()},
                   {"log_tails", tails}});
  }
  return out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void Worker::Shutdown() {
  stop_ = true;
  absl::MutexLock l(&send_mu_);
  send_wake_ = true;
}

}  // namespace caddie::worker
