#include "common/grpc_metrics.h"

#include <cstdio>
#include <cstdlib>

#include "common/metric_names.h"

namespace caddie {
namespace {

struct CallCounters {
  metrics::CounterFamily* calls;
  metrics::CounterFamily* errors;

  void Count(const std::string& method, bool ok) const {
    calls->WithLabels({method}).Inc();
    auto e = errors->WithLabels({method});  // exists at 0 from the first call
    if (!ok) e.Inc();
  }
};

CallCounters Register(metrics::Registry* registry, const metrics::MetricDef& calls,
                      const metrics::MetricDef& errors) {
  auto c = registry->AddCounter(calls);
  auto e = registry->AddCounter(errors);
  if (!c.ok() || !e.ok()) {
    // Only possible if the same name was registered with another shape: a
    // programming error in caddie, not bad input.
    std::fprintf(stderr, "grpc_metrics: %s\n",
                 std::string((c.ok() ? e.status() : c.status()).message()).c_str());
    std::abort();
  }
  return {*c, *e};
}

class ServerMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  ServerMetricsInterceptor(CallCounters counters, std::string method)
      : counters_(counters), method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      counters_.Count(method_, methods->GetSendStatus().ok());
    }
    methods->Proceed();
  }

 private:
  const CallCounters counters_;
  const std::string method_;
};

class ServerFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ServerFactory(CallCounters counters) : counters_(counters) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ServerMetricsInterceptor(counters_, RpcMethodName(info->method()));
  }

 private:
  const CallCounters counters_;
};

class ClientMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  ClientMetricsInterceptor(CallCounters counters, std::string method)
      : counters_(counters), method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS)) {
      const grpc::Status* status = methods->GetRecvStatus();
      counters_.Count(method_, status != nullptr && status->ok());
    }
    methods->Proceed();
  }

 private:
  const CallCounters counters_;
  const std::string method_;
};

class ClientFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ClientFactory(CallCounters counters) : counters_(counters) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new ClientMetricsInterceptor(counters_, RpcMethodName(info->method()));
  }

 private:
  const CallCounters counters_;
};

}  // namespace

std::string RpcMethodName(std::string_view full_method) {
  const size_t slash = full_method.rfind('/');
  return std::string(slash == std::string_view::npos ? full_method
                                                     : full_method.substr(slash + 1));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerMetricsInterceptorFactory(metrics::Registry* registry) {
  return std::make_unique<ServerFactory>(Register(registry, metric_names::kGrpcServerCalls,
                                                  metric_names::kGrpcServerErrors));
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeClientMetricsInterceptorFactory(metrics::Registry* registry) {
  return std::make_unique<ClientFactory>(Register(registry, metric_names::kGrpcClientCalls,
                                                  metric_names::kGrpcClientErrors));
}

std::shared_ptr<grpc::Channel> CreateChannelWithMetrics(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& creds,
    metrics::Registry* registry, const grpc::ChannelArguments& args) {
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> f;
  f.push_back(MakeClientMetricsInterceptorFactory(registry));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, creds, args,
                                                                 std::move(f));
}

}  // namespace caddie
