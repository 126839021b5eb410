#include "controller/server.h"

#include <algorithm>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_metrics.h"
#include "common/metric_names.h"
#include "common/status_macros.h"

namespace caddie::controller {

absl::StatusOr<std::unique_ptr<Controller>> Controller::Start(ControllerOptions options) {
  std::unique_ptr<Controller> c(new Controller());
  const size_t colon = options.listen.rfind(':');
  int want_port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &want_port) ||
      want_port < 0 || want_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--listen must be HOST:PORT, got '", options.listen, "'"));
  }
  auto* txn = c->registry_.AddHistogram(metric_names::kSqliteTransaction).value();
  SqliteStore::Options so;
  so.synchronous_normal = options.sqlite_synchronous_normal;
  so.log_bytes_per_stream = options.log_bytes_per_stream;
  so.log_bytes_total = options.log_bytes_total;
  so.on_transaction = [txn](double s) { txn->WithLabels({}).Observe(s); };
  ASSIGN_OR_RETURN(c->store_, SqliteStore::Open(options.db_path, std::move(so)));
  if (auto wrong = c->store_->repaired_log_bytes_counter()) {
    spdlog::warn("database {}: the counter of stored log bytes said {}, the streams hold {}; set right",
                 options.db_path, *wrong, c->store_->LogBytesHeld());
  }
  c->scheduler_ = std::make_unique<Scheduler>(c->store_.get(), &c->registry_, options.scheduler);
  c->user_service_ = std::make_unique<UserServiceImpl>(c->scheduler_.get(), options.tokens);
  c->worker_service_ = std::make_unique<WorkerServiceImpl>(c->scheduler_.get(), options.tokens);

  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (!options.tls_cert_pem.empty() && !options.tls_key_pem.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }
  builder.AddListeningPort(options.listen, creds, &c->port_);
  builder.RegisterService(c->user_service_.get());
  builder.RegisterService(c->worker_service_.get());
  // Requests are small (events come in batches of ≤ 64); the largest is a
  // SubmitSweep at its sweep_json limit, which the scheduler rejects with a
  // clear message, so leave room above it for the rest of the request.
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(std::max<int64_t>(16 << 20, options.scheduler.max_sweep_json_bytes + (1 << 20)), INT32_MAX)));
  // gRPC's default 8 KiB header limit would answer an oversized bearer token with
  // RESOURCE_EXHAUSTED; let it through to the auth check, which names the limit.
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 64 << 10);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
  f.push_back(MakeServerMetricsInterceptorFactory(&c->registry_));
  builder.experimental().SetInterceptorCreators(std::move(f));
  c->server_ = builder.BuildAndStart();
  if (!c->server_ || c->port_ == 0) {
    c->scheduler_->Stop();
    return absl::InvalidArgumentError(absl::StrCat("cannot listen on '", options.listen, "'"));
  }
  c->address_ = absl::StrCat(options.listen.substr(0, colon), ":", c->port_);
  if (!options.http_listen.empty()) {
    c->http_ = std::make_unique<HttpServer>(&c->registry_);
    SqliteStore* store = c->store_.get();
    c->http_->SetHealthCheck([store]() { return store->CountJobsByState().status(); });
    absl::Status s = c->http_->Start(options.http_listen);
    if (!s.ok()) {
      c->Shutdown(absl::ZeroDuration());
      return s;
    }
  }
  return c;
}

Controller::~Controller() { Shutdown(absl::Seconds(1)); }

std::string Controller::http_address() const { return http_ ? http_->address() : std::string(); }

void Controller::Shutdown(absl::Duration deadline) {
  {
    absl::MutexLock l(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (http_) http_->Stop();
  if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
  if (scheduler_) scheduler_->Stop();
}

void Controller::Wait() {
  if (server_) server_->Wait();
}

}  // namespace caddie::controller
