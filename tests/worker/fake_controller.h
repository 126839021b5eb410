// FakeController: an in-process caddie.v1.WorkerService for worker tests. It
// hands out queued jobs with fencing tokens, stores events deduplicated by seq
// (as the real controller must) and completions, and can answer UNAVAILABLE
// ("down") or be served again on the same port after a restart. Its state lives
// in the object, so a server restart keeps it, like the controller's database.
//
// Thread-safety: gRPC handlers and tests share `mu`; tests read fields under it.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "caddie/v1/worker_service.grpc.pb.h"

namespace caddie::testing_support {

class FakeController final : public caddie::v1::WorkerService::Service {
 public:
  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const caddie::v1::RegisterWorkerRequest* req,
                              caddie::v1::RegisterWorkerResponse* resp) override {
    absl::MutexLock l(&mu);
    if (down) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
    auto it = ctx->client_metadata().find("authorization");
    if (it != ctx->client_metadata().end()) auth = std::string(it->second.data(), it->second.size());
    registrations.push_back(req->worker());
    resp->set_worker_id(req->worker().id());
    resp->set_heartbeat_interval_seconds(heartbeat_s);
    resp->set_lease_ttl_seconds(30);
    return grpc::Status::OK;
  }
  grpc::Status LeaseJob(grpc::ServerContext*, const caddie::v1::LeaseJobRequest* req,
                        caddie::v1::LeaseJobResponse* resp) override {
    absl::MutexLock l(&mu);
    if (down) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
    if (queue.empty()) return grpc::Status::OK;
    const caddie::v1::Job& j = queue.front();
    if (j.spec().gpus() > req->gpus_free() || (j.spec().gpus() == 0 && req->cpu_slots_free() == 0)) {
      return grpc::Status::OK;
    }
    *resp->mutable_job() = j;
    resp->set_fencing_token(++token);
    tokens[j.id()] = token;
    queue.pop_front();
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const caddie::v1::HeartbeatRequest* req,
                         caddie::v1::HeartbeatResponse* resp) override {
    absl::MutexLock l(&mu);
    if (down) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
    ++heartbeats;
    last_heartbeat_leases = req->leases_size();
    for (const auto& id : cancel) resp->add_cancel_job_ids(id);
    if (reregister) {
      resp->set_reregister(true);
      reregister = false;
    }
    return grpc::Status::OK;
  }
  grpc::Status ReportEvents(grpc::ServerContext*, const caddie::v1::ReportEventsRequest* req,
                            caddie::v1::ReportEventsResponse* resp) override {
    absl::MutexLock l(&mu);
    if (down) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
    if (stale.count(req->lease().job_id())) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "stale_fencing_token");
    }
    auto& evs = events[req->lease().job_id()];
    for (const auto& e : req->events()) {
      if (e.seq() == static_cast<int64_t>(evs.size()) + 1) evs.push_back(e);
      else if (e.seq() > static_cast<int64_t>(evs.size()) + 1) gaps = true;
    }
    resp->set_acked_seq(static_cast<int64_t>(evs.size()));
    return grpc::Status::OK;
  }
  grpc::Status CompleteJob(grpc::ServerContext*, const caddie::v1::CompleteJobRequest* req,
                           caddie::v1::CompleteJobResponse*) override {
    absl::MutexLock l(&mu);
    if (down) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
    completions[req->lease().job_id()] = *req;
    return grpc::Status::OK;
  }

  // Waits until `pred` holds (checked under the lock) or `timeout` passes.
  bool WaitFor(std::function<bool()> pred, std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      {
        absl::MutexLock l(&mu);
        if (pred()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    absl::MutexLock l(&mu);
    return pred();
  }

  absl::Mutex mu;
  bool down = false;
  bool reregister = false;
  bool gaps = false;
  double heartbeat_s = 0.2;
  int64_t token = 100;
  int heartbeats = 0;
  int last_heartbeat_leases = 0;
  std::string auth;
  std::deque<caddie::v1::Job> queue;
  std::set<std::string> cancel, stale;
  std::map<std::string, int64_t> tokens;
  std::vector<caddie::v1::Worker> registrations;
  std::map<std::string, std::vector<caddie::v1::Event>> events;
  std::map<std::string, caddie::v1::CompleteJobRequest> completions;
};

// Serves `service` on 127.0.0.1:`port` (0 = pick one); null on failure.
inline std::unique_ptr<grpc::Server> Serve(grpc::Service* service, int* port) {
  grpc::ServerBuilder b;
  int bound = 0;
  b.AddListeningPort("127.0.0.1:" + std::to_string(*port), grpc::InsecureServerCredentials(), &bound);
  b.RegisterService(service);
  auto server = b.BuildAndStart();
  if (server != nullptr) *port = bound;
  return server;
}

}  // namespace caddie::testing_support
