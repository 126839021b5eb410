// HttpServer: the small HTTP endpoint every caddie daemon exposes for
// operations — GET /metrics (a metrics::Registry in Prometheus text format
// 0.0.4) and GET /healthz — plus optional extra GET routes. A thin wrapper over
// cpp-httplib that serves on its own threads.
//
// Usage:
//   caddie::HttpServer http(&registry);
//   http.SetHealthCheck([&] { return store.Ping(); });   // optional
//   RETURN_IF_ERROR(http.Start("127.0.0.1:0"));           // port 0: pick a free one
//   LOG("metrics on {}", http.address());                 // e.g. "127.0.0.1:41234"
//   ...
//   http.Stop();                                          // from any thread
//
// Thread-safety: configure (SetHealthCheck, AddGet) before Start. Start, Stop,
// port and address are safe to call from any thread; Stop is idempotent and
// also runs in the destructor. Handlers run on the server's own threads, so the
// health check and extra routes must be thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"

namespace httplib {
class Server;
}

namespace caddie {

class HttpServer {
 public:
  // `registry` must outlive the server; null serves /metrics as an empty body.
  explicit HttpServer(const metrics::Registry* registry);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // /healthz answers 200 "ok\n" when `check` returns OK, else 503 with the
  // status message. Without a check, /healthz is always 200 "ok\n".
  void SetHealthCheck(std::function<absl::Status()> check);

  // Adds GET `path` answering 200 with `body()` and `content_type`.
  void AddGet(std::string path, std::string content_type, std::function<std::string()> body);

  // Binds `listen_address` ("host:port", "[v6host]:port"; port 0 picks a free
  // port) and serves in a background thread; returns once the socket is bound,
  // so a client may connect at once. InvalidArgument for a malformed address
  // or port (naming it), Unavailable when the bind fails, FailedPrecondition
  // when already started.
  absl::Status Start(std::string_view listen_address);

  // The bound port, or 0 before Start.
  int port() const;
  // "host:port" with the bound port (brackets around an IPv6 host), or "" before Start.
  std::string address() const;

  // Stops serving and joins the server thread. Idempotent.
  void Stop();

 private:
  // Constant after construction.
  const metrics::Registry* const registry_;
  const std::unique_ptr<httplib::Server> server_;

  mutable absl::Mutex mu_;
  std::function<absl::Status()> health_check_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  std::string host_ ABSL_GUARDED_BY(mu_);
  int port_ ABSL_GUARDED_BY(mu_) = 0;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
};

// Splits "host:port" / "[v6]:port" into host (without brackets) and port.
// InvalidArgument naming the address when malformed or the port is outside 0..65535.
absl::Status ParseHostPort(std::string_view address, std::string* host, int* port);

}  // namespace caddie
