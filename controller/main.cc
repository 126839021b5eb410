// caddie-controller: the daemon users and workers talk to (see controller/server.h).
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "caddie/version.h"
#include "controller/server.h"

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

// A token from --X-token-file, else $ENV; "" = that service is open.
bool LoadToken(const std::string& file, const char* env, const char* what, std::string* out) {
  if (!file.empty()) {
    if (!ReadFile(file, out)) {
      std::cerr << "caddie-controller: cannot read " << what << " token file '" << file << "'\n";
      return false;
    }
    *out = std::string(absl::StripAsciiWhitespace(*out));
    if (out->empty()) {
      std::cerr << "caddie-controller: " << what << " token file '" << file << "' is empty\n";
      return false;
    }
    return true;
  }
  if (const char* v = std::getenv(env)) *out = std::string(absl::StripAsciiWhitespace(v));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"caddie-controller: schedules caddie sweeps onto workers"};
  app.set_version_flag("--version", std::string("caddie-controller ") + CADDIE_VERSION);
  caddie::controller::ControllerOptions o;
  std::string db = "caddie.db", listen = "127.0.0.1:7070", http_listen = "127.0.0.1:0";
  int port = -1;
  std::string user_token_file, worker_token_file, tls_cert, tls_key;
  bool fast_sync = false;
  double shutdown_grace = 5;
  app.add_option("--db", db, "SQLite database file (created if missing)");
  app.add_option("--listen", listen, "gRPC HOST:PORT (port 0 picks a free one)");
  app.add_option("--port", port, "Overrides the port of --listen (0 picks a free one)");
  app.add_option("--http-listen", http_listen, "/metrics and /healthz HOST:PORT (\"\" = off)");
  app.add_option("--user-token-file", user_token_file, "Bearer token for UserService (else $CADDIE_USER_TOKEN)");
  app.add_option("--worker-token-file", worker_token_file,
                 "Bearer token for WorkerService (else $CADDIE_WORKER_TOKEN)");
  app.add_option("--tls-cert", tls_cert, "PEM certificate (with --tls-key: serve TLS)");
  app.add_option("--tls-key", tls_key, "PEM private key");
  app.add_option("--lease-ttl", o.scheduler.lease_ttl_seconds, "Lease time-to-live, seconds")->check(CLI::PositiveNumber);
  app.add_option("--heartbeat-interval", o.scheduler.heartbeat_interval_seconds, "Seconds between worker heartbeats")
      ->check(CLI::PositiveNumber);
  app.add_option("--worker-lost-after", o.scheduler.worker_lost_seconds, "Seconds without heartbeat = lost worker");
  app.add_option("--metrics-worker-ttl", o.scheduler.metrics_worker_ttl_seconds,
                 "Seconds without heartbeat after which a worker leaves the per-worker metrics (0 = never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--drain-after", o.scheduler.drain_after,
                 "Consecutive infrastructure failures that drain a worker (0 = never)");
  app.add_option("--retry-avoid", o.scheduler.retry_avoid_seconds,
                 "Seconds a retried job avoids the worker it failed on");
  app.add_option("--silence-limit", o.scheduler.silence_limit_seconds,
                 "Seconds without a trainer event before a leased job is killed and failed with no_progress "
                 "(0 = per job: train + eval budget + 2 x grace + 60 s)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-sweep-bytes", o.scheduler.max_sweep_json_bytes,
                 "Largest SubmitSweep sweep_json accepted, bytes (the gRPC message limit follows it)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 30));
  // At most 16 MiB, so that a whole stream fits one GetJobLogs answer (the CLI takes 64 MiB).
  app.add_option("--log-bytes-per-stream", o.log_bytes_per_stream,
                 "Bytes kept of each rank's stderr (and stdout of ranks > 0), the newest; older ones are "
                 "dropped (1 .. 16777216)")
      ->check(CLI::Range(int64_t{1}, int64_t{16} << 20))
      ->capture_default_str();
  app.add_option("--log-bytes-total", o.log_bytes_total,
                 "Bytes of log files kept in all (every job, rank, stream and attempt); past it the logs of the "
                 "jobs that ended longest ago are dropped (never a running job's, never events or results). "
                 "At least --log-bytes-per-stream")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 50))
      ->capture_default_str();
  app.add_flag("--sqlite-synchronous-normal", fast_sync,
               "synchronous=NORMAL: faster commits, survives a crash but not a power loss");
  app.add_option("--shutdown-grace", shutdown_grace,
                 "Seconds SIGTERM waits for in-flight calls and open streams before cancelling them")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  if (o.log_bytes_total < o.log_bytes_per_stream) {
    std::cerr << "caddie-controller: --log-bytes-total " << o.log_bytes_total
              << " is less than --log-bytes-per-stream " << o.log_bytes_per_stream << ": one stream must fit\n";
    return 2;
  }

  if (port >= 0) {
    const size_t colon = listen.rfind(':');
    listen = (colon == std::string::npos ? listen : listen.substr(0, colon)) + ":" + std::to_string(port);
  }
  o.db_path = db;
  o.listen = listen;
  o.http_listen = http_listen;
  o.sqlite_synchronous_normal = fast_sync;
  if (!LoadToken(user_token_file, "CADDIE_USER_TOKEN", "user", &o.tokens.user) ||
      !LoadToken(worker_token_file, "CADDIE_WORKER_TOKEN", "worker", &o.tokens.worker)) {
    return 2;
  }
  if (tls_cert.empty() != tls_key.empty()) {
    std::cerr << "caddie-controller: --tls-cert and --tls-key go together\n";
    return 2;
  }
  if (!tls_cert.empty() && (!ReadFile(tls_cert, &o.tls_cert_pem) || !ReadFile(tls_key, &o.tls_key_pem))) {
    std::cerr << "caddie-controller: cannot read --tls-cert '" << tls_cert << "' or --tls-key '" << tls_key << "'\n";
    return 2;
  }
  if (o.tokens.user.empty() || o.tokens.worker.empty()) {
    spdlog::warn("no {} token configured: that service accepts any caller",
                 o.tokens.user.empty() && o.tokens.worker.empty() ? "user or worker"
                 : o.tokens.user.empty()                          ? "user"
                                                                  : "worker");
  }

  // SIGTERM/SIGINT are taken by a waiting thread, not an async handler.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto c = caddie::controller::Controller::Start(o);
  if (!c.ok()) {
    std::cerr << "caddie-controller: " << c.status().message() << "\n";
    return c.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  auto& controller = *c;
  std::printf("caddie-controller listening on %s\n", controller->address().c_str());
  if (!controller->http_address().empty()) std::printf("caddie-controller http on %s\n", controller->http_address().c_str());
  std::fflush(stdout);
  spdlog::info("caddie-controller {} serving on {} (db {}, tls {})", CADDIE_VERSION, controller->address(), db,
               o.tls_cert_pem.empty() ? "off" : "on");

  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    spdlog::info("signal {}: shutting down", sig);
    // gRPC waits for open client connections too, so with workers attached this
    // takes the whole grace; every store transition is atomic, so cutting calls
    // off after it loses nothing.
    controller->Shutdown(absl::Seconds(shutdown_grace));
  });
  controller->Wait();
  signals.join();
  controller.reset();
  spdlog::info("caddie-controller stopped");
  return 0;
}
