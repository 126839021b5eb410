// caddie-worker: runs on each GPU host; leases jobs from caddie-controller and
// runs caddie-train ranks under the Parameter Golf budgets (worker/worker.h).
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "caddie/version.h"
#include "common/grpc_channel.h"
#include "spdlog/spdlog.h"
#include "worker/gpu_inventory.h"
#include "worker/worker.h"

namespace {

namespace fs = std::filesystem;

std::string SelfDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

std::string Hostname() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"caddie-worker: leases caddie jobs and runs caddie-train under the Parameter Golf budgets"};
  app.set_version_flag("--version", std::string("caddie-worker ") + CADDIE_VERSION);
  caddie::worker::WorkerOptions o;
  std::string token_file, tls_ca, gpu_ids_text, nvidia_smi = "nvidia-smi", log_level = "info";
  int gpus = -1, cpu_slots = -1;
  std::vector<std::string> labels;
  app.add_option("--controller", o.controller, "controller address host:port")->required();
  app.add_option("--token-file", token_file, "file with the bearer token (else $CADDIE_WORKER_TOKEN)");
  app.add_option("--tls-ca", tls_ca, "PEM CA certificate: talk TLS to a controller whose certificate it signed "
                 "(default: plaintext)");
  app.add_option("--work-dir,--spool-dir", o.work_dir, "state directory: run dirs and spool live in DIR/ID/")
      ->default_val("caddie-worker-data");
  app.add_option("--id,--name", o.id, "worker id, stable across restarts (default: HOST-gpuLIST or HOST-cpu)");
  app.add_option("--trainer", o.runner.trainer, "trainer binary (default: caddie-train beside this binary)");
  app.add_option("--data-dir", o.runner.data_dir, "data directory put into specs that name none");
  app.add_option("--gpus", gpus, "use the first N GPUs (declare N GPUs when nvidia-smi is absent)");
  app.add_option("--gpu-ids", gpu_ids_text, "use these GPU indices, e.g. 0,1,2,3");
  app.add_option("--cpu-slots", cpu_slots, "concurrent CPU-only jobs (default: 1 without GPUs, else 0)");
  app.add_option("--label", labels, "KEY=VALUE label (repeatable)");
  app.add_option("--heartbeat-interval,--heartbeat-seconds", o.heartbeat_interval_s, "seconds (default: the controller's)");
  app.add_option("--lease-interval", o.lease_interval_s, "seconds between lease requests while idle")
      ->default_val(0.5);
  app.add_option("--silence-limit", o.runner.silence_seconds,
                 "kill a trainer silent this many seconds (default: max(train, eval budget) + grace)");
  app.add_option("--spool-memory-limit", o.spool_memory_limit_bytes,
                 "bytes of unacknowledged results held in memory while the spool's disk refuses writes; "
                 "past it a run that adds more is stopped (infra error)")
      ->default_val(o.spool_memory_limit_bytes);
  app.add_option("--http-listen,--http", o.http_listen, "/metrics and /healthz address (\"\" = off)")->default_val("127.0.0.1:0");
  app.add_option("--nvidia-smi", nvidia_smi, "nvidia-smi to query for GPUs");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->default_val("info");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) {
      std::fprintf(stderr, "caddie-worker: cannot read --token-file %s\n", token_file.c_str());
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    o.token = std::string(absl::StripAsciiWhitespace(ss.str()));
  } else if (const char* t = std::getenv("CADDIE_WORKER_TOKEN"); t != nullptr) {
    o.token = t;
  }
  if (!tls_ca.empty()) {
    auto pem = caddie::ReadTlsCa(tls_ca, "--tls-ca");
    if (!pem.ok()) {
      std::fprintf(stderr, "caddie-worker: %s\n", std::string(pem.status().message()).c_str());
      return 2;
    }
    o.tls_ca_pem = *std::move(pem);
  }
  for (const auto& l : labels) {
    const size_t eq = l.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "caddie-worker: --label \"%s\" must be KEY=VALUE\n", l.c_str());
      return 2;
    }
    o.labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  std::vector<int> ids;
  if (!gpu_ids_text.empty()) {
    auto parsed = caddie::worker::ParseGpuIds(gpu_ids_text);
    if (!parsed.ok()) {
      std::fprintf(stderr, "caddie-worker: --gpu-ids: %s\n", std::string(parsed.status().message()).c_str());
      return 2;
    }
    ids = *parsed;
  }
  auto resolved = caddie::worker::ResolveGpus(caddie::worker::DetectGpus(nvidia_smi).gpus, gpus, ids);
  if (!resolved.ok()) {
    std::fprintf(stderr, "caddie-worker: %s\n", std::string(resolved.status().message()).c_str());
    return 2;
  }
  o.gpus = *resolved;
  o.cpu_slots = cpu_slots >= 0 ? cpu_slots : (o.gpus.empty() ? 1 : 0);
  o.hostname = Hostname();
  if (o.id.empty()) {
    std::vector<int> idx;
    for (const auto& g : o.gpus) idx.push_back(g.index());
    o.id = o.hostname + (idx.empty() ? "-cpu" : "-gpu" + absl::StrJoin(idx, "_"));
  }
  if (o.runner.trainer.empty()) o.runner.trainer = SelfDir() + "/caddie-train";

  // SIGTERM / SIGINT: stop cleanly (running jobs killed and reported). Blocked in
  // every thread and taken by a sigwait thread; children get their mask reset.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto worker = caddie::worker::Worker::Create(o);
  if (!worker.ok()) {
    std::fprintf(stderr, "caddie-worker: %s\n", worker.status().ToString().c_str());
    return 2;
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("caddie-worker: signal {}: shutting down", sig);
    (*worker)->Shutdown();
  });
  signals.detach();
  spdlog::info("caddie-worker {} {} starting: controller {}, {} GPU(s), {} CPU slot(s), work dir {}",
               CADDIE_VERSION, o.id, o.controller, o.gpus.size(), o.cpu_slots, (*worker)->root_dir());
  absl::Status s = (*worker)->Run();
  if (!s.ok()) {
    std::fprintf(stderr, "caddie-worker: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
