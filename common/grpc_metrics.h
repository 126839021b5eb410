// gRPC interceptors that count calls and errors by method into a
// metrics::Registry, so a server or client gets caddie_grpc_{server,client}_
// {calls,errors}_total (common/metric_names.h) with one line of setup:
//
//   grpc::ServerBuilder builder;
//   std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
//   f.push_back(caddie::MakeServerMetricsInterceptorFactory(&registry));
//   builder.experimental().SetInterceptorCreators(std::move(f));
//
//   auto channel = caddie::CreateChannelWithMetrics(target, creds, &registry);
//
// The method label is the bare RPC name ("Lease", "SubmitSweep"). A call
// counts once, when its status is sent (server) or received (client); status
// != OK also counts as an error. Every method called has an error series,
// at 0 until its first error.
//
// Thread-safety: the factories and interceptors are safe to use from gRPC's
// threads; the registry must outlive them.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/metrics.h"

namespace caddie {

// Registers the server call/error families in `registry` and returns the
// factory for ServerBuilder::experimental().SetInterceptorCreators.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerMetricsInterceptorFactory(metrics::Registry* registry);

// The same for clients (caddie_grpc_client_*).
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeClientMetricsInterceptorFactory(metrics::Registry* registry);

// A channel to `target` whose calls are counted in `registry`.
std::shared_ptr<grpc::Channel> CreateChannelWithMetrics(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& creds,
    metrics::Registry* registry, const grpc::ChannelArguments& args = grpc::ChannelArguments());

// "/caddie.v1.WorkerService/Lease" -> "Lease"; anything without a '/' as is.
std::string RpcMethodName(std::string_view full_method);

}  // namespace caddie
