#include "common/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <thread>

namespace caddie {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ParseHostPortTest, AcceptsHostPortAndBracketedV6) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:0", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(ParseHostPort("[::1]:9100", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 9100);
  ASSERT_TRUE(ParseHostPort("0.0.0.0:65535", &host, &port).ok());
  EXPECT_EQ(port, 65535);
}

TEST(ParseHostPortTest, RejectsMalformedAddressesNamingThem) {
  std::string host;
  int port;
  for (const char* bad : {"127.0.0.1", ":80", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536",
                          "127.0.0.1:-1", "::1:80", "[::1:80", "h:80x"}) {
    const absl::Status s = ParseHostPort(bad, &host, &port);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr(std::string("'") + bad + "'")) << bad;
  }
}

TEST(HttpServerTest, ServesMetricsAndHealthOnAPickedPort) {
  metrics::Registry registry;
  auto jobs = registry.AddGauge("caddie_test_jobs", "Jobs by state.", {"state"});
  ASSERT_TRUE(jobs.ok());
  (*jobs)->WithLabels({"running"}).Set(2);

  HttpServer server(&registry);
  EXPECT_EQ(server.port(), 0);
  EXPECT_EQ(server.address(), "");
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  ASSERT_GT(server.port(), 0);
  EXPECT_EQ(server.address(), "127.0.0.1:" + std::to_string(server.port()));

  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->get_header_value("Content-Type"), StartsWith("text/plain; version=0.0.4"));
  EXPECT_THAT(res->body, HasSubstr("caddie_test_jobs{state=\"running\"} 2\n"));

  // Updates show on the next scrape.
  (*jobs)->WithLabels({"running"}).Set(5);
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_THAT(res->body, HasSubstr("caddie_test_jobs{state=\"running\"} 5\n"));

  res = client.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");

  res = client.Get("/nope");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  server.Stop();
}

TEST(HttpServerTest, HealthCheckFailureIs503WithMessage) {
  HttpServer server(nullptr);
  std::atomic<bool> healthy{true};
  server.SetHealthCheck([&]() -> absl::Status {
    if (healthy) return absl::OkStatus();
    return absl::UnavailableError("database is locked");
  });
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  healthy = false;
  res = client.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "database is locked\n");
  // A null registry serves an empty exposition.
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "");
}

TEST(HttpServerTest, ExtraGetRoutes) {
  HttpServer server(nullptr);
  server.AddGet("/leaderboard", "application/json", [] { return std::string("[]"); });
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/leaderboard");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(res->body, "[]");
}

TEST(HttpServerTest, StartErrors) {
  HttpServer a(nullptr);
  EXPECT_EQ(a.Start("localhost").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(a.Start("127.0.0.1:0").ok());
  const absl::Status again = a.Start("127.0.0.1:0");
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.message()), HasSubstr(a.address()));

  // The port is taken: the bind fails with Unavailable naming the address.
  HttpServer b(nullptr);
  const std::string taken = a.address();
  const absl::Status s = b.Start(taken);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr(taken));
}

TEST(HttpServerTest, StopFromAnotherThreadEndsServingAndIsIdempotent) {
  metrics::Registry registry;
  HttpServer server(&registry);
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  const int port = server.port();
  std::thread stopper([&] { server.Stop(); });
  stopper.join();
  server.Stop();
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(1);
  auto res = client.Get("/healthz");
  EXPECT_FALSE(res);
}

TEST(HttpServerTest, StopBeforeStartIsHarmless) {
  HttpServer server(nullptr);
  server.Stop();
  EXPECT_EQ(server.port(), 0);
}

}  // namespace
}  // namespace caddie
