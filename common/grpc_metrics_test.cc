#include "common/grpc_metrics.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "caddie/v1/user_service.grpc.pb.h"

namespace caddie {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A service with one method that succeeds and one that fails.
class TestService final : public v1::UserService::Service {
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                           v1::ListWorkersResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* req, v1::Job*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + req->job_id());
  }
};

TEST(GrpcMetricsTest, RpcMethodName) {
  EXPECT_EQ(RpcMethodName("/caddie.v1.WorkerService/Lease"), "Lease");
  EXPECT_EQ(RpcMethodName("Lease"), "Lease");
}

TEST(GrpcMetricsTest, CountsServerAndClientCallsAndErrorsByMethod) {
  metrics::Registry server_registry, client_registry;
  TestService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
  f.push_back(MakeServerMetricsInterceptorFactory(&server_registry));
  builder.experimental().SetInterceptorCreators(std::move(f));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  auto channel = CreateChannelWithMetrics("127.0.0.1:" + std::to_string(port),
                                          grpc::InsecureChannelCredentials(), &client_registry);
  auto stub = v1::UserService::NewStub(channel);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    v1::ListWorkersResponse resp;
    ASSERT_TRUE(stub->ListWorkers(&ctx, {}, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    v1::GetJobRequest req;
    req.set_job_id("j-404");
    v1::Job job;
    EXPECT_EQ(stub->GetJob(&ctx, req, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  server->Shutdown();

  const std::string s = server_registry.Render();
  EXPECT_THAT(s, HasSubstr("caddie_grpc_server_calls_total{method=\"ListWorkers\"} 3\n"));
  EXPECT_THAT(s, HasSubstr("caddie_grpc_server_errors_total{method=\"ListWorkers\"} 0\n"));
  EXPECT_THAT(s, HasSubstr("caddie_grpc_server_calls_total{method=\"GetJob\"} 1\n"));
  EXPECT_THAT(s, HasSubstr("caddie_grpc_server_errors_total{method=\"GetJob\"} 1\n"));
  EXPECT_THAT(s, Not(HasSubstr("client")));

  const std::string c = client_registry.Render();
  EXPECT_THAT(c, HasSubstr("caddie_grpc_client_calls_total{method=\"ListWorkers\"} 3\n"));
  EXPECT_THAT(c, HasSubstr("caddie_grpc_client_errors_total{method=\"ListWorkers\"} 0\n"));
  EXPECT_THAT(c, HasSubstr("caddie_grpc_client_errors_total{method=\"GetJob\"} 1\n"));
}

TEST(GrpcMetricsTest, ClientCountsUnreachableServerAsError) {
  metrics::Registry registry;
  // Port 1 on loopback: nothing listens there.
  auto channel = CreateChannelWithMetrics("127.0.0.1:1", grpc::InsecureChannelCredentials(),
                                          &registry);
  auto stub = v1::UserService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::ListWorkersResponse resp;
  EXPECT_EQ(stub->ListWorkers(&ctx, {}, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(registry.Render(),
              HasSubstr("caddie_grpc_client_errors_total{method=\"ListWorkers\"} 1\n"));
}

}  // namespace
}  // namespace caddie
