// Controller: one caddie-controller instance — the SQLite store, the scheduler,
// the gRPC server (UserService + WorkerService) and the /metrics + /healthz HTTP
// server. main.cc and the in-process tests both start it through Start().
//
// Shutdown(): stops accepting calls, waits for in-flight calls (each store
// transition is one transaction, so none is left half done) up to the deadline,
// stops the scheduler's tick and closes the database. Leases stay recorded; a
// restarted controller resumes from the database.
//
// Thread-safe: Shutdown and the accessors may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "controller/scheduler.h"
#include "controller/service.h"
#include "controller/sqlite_store.h"

namespace grpc {
class Server;
}

namespace caddie::controller {

struct ControllerOptions {
  std::string db_path;
  std::string listen = "127.0.0.1:7070";   // port 0 picks a free port
  std::string http_listen;                  // "" = no HTTP server
  Tokens tokens;                            // empty = that service is open
  std::string tls_cert_pem;                 // both set = TLS
  std::string tls_key_pem;
  bool sqlite_synchronous_normal = false;
  int64_t log_bytes_per_stream = int64_t{1} << 20;  // kept of each rank's stderr / stdout (<= 0 = no cap)
  int64_t log_bytes_total = int64_t{2} << 30;       // all log bytes kept (ended jobs' go, oldest first; <= 0 = no bound)
  SchedulerOptions scheduler;
};

class Controller {
 public:
  // Opens the database, starts the scheduler and both servers. InvalidArgument
  // for a bad database path or listen address (message names it).
  static absl::StatusOr<std::unique_ptr<Controller>> Start(ControllerOptions options);
  ~Controller();

  // "HOST:PORT" the gRPC server is bound to (the real port when 0 was asked).
  std::string address() const { return address_; }
  int port() const { return port_; }
  // "" when there is no HTTP server.
  std::string http_address() const;

  void Shutdown(absl::Duration deadline = absl::Seconds(5));
  // Blocks until Shutdown.
  void Wait();

  Scheduler* scheduler() { return scheduler_.get(); }
  metrics::Registry* registry() { return &registry_; }

 private:
  Controller() = default;

  metrics::Registry registry_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<UserServiceImpl> user_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpServer> http_;
  std::string address_;
  int port_ = 0;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace caddie::controller
