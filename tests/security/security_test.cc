// Access control and secrets, against real caddie-controller / caddie-worker
// processes on loopback:
//  - every gRPC method of both services (taken from the service descriptors, so
//    a new method is covered automatically) answers UNAUTHENTICATED to a missing,
//    malformed or wrong token and PERMISSION_DENIED to the other role's token;
//  - TLS with a certificate made here by `openssl`: a TLS client that trusts it
//    is served, a plaintext client and a client trusting another CA are not;
//    caddie-worker and the CLI take the CA with --tls-ca (the CLI also from
//    CADDIE_TLS_CA) and name the address and TLS when the handshake fails;
//  - tokens never appear in either daemon's log or /metrics, nor in the
//    trainer's environment (CADDIE_*TOKEN* and the worker's own token stripped);
//  - job specs cannot run commands: shell syntax in a spec reaches the trainer
//    as inert text (execve, no shell), and no daemon source calls a shell.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <regex>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <nlohmann/json.hpp>

#include "tests/chaos/harness.h"

namespace caddie::reliability {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kUser[] = "sec-user-4f1c9a7e2b";
constexpr char kWorker[] = "sec-worker-8d3e6b0a5c";

fs::path Scratch(const std::string& name) {
  fs::path d = fs::path(::testing::TempDir()) / (name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Calls `method` with an empty request through the generic stub; returns the status.
grpc::Status CallRaw(grpc::GenericStub& stub, const std::string& method, const std::string& auth_header) {
  grpc::ClientContext ctx;
  if (!auth_header.empty()) ctx.AddMetadata("authorization", auth_header);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty_request("");  // an empty protobuf: every field unset
  grpc::ByteBuffer req(&empty_request, 1), resp;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  // Server-streaming methods (WatchJob) are called the same way: the auth check
  // answers before any message.
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp, [&](grpc::Status s) {
    std::lock_guard<std::mutex> l(mu);
    status = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> l(mu);
  if (!cv.wait_for(l, std::chrono::seconds(15), [&] { return done; })) {
    ctx.TryCancel();
    cv.wait(l, [&] { return done; });
  }
  return status;
}

std::vector<std::string> Methods(const google::protobuf::ServiceDescriptor* s) {
  std::vector<std::string> out;
  if (s == nullptr) return out;
  for (int i = 0; i < s->method_count(); ++i) out.push_back("/" + s->full_name() + "/" + s->method(i)->name());
  return out;
}

TEST(Security, EveryMethodRejectsMissingWrongAndOtherRoleTokens) {
  const fs::path dir = Scratch("sec_auth");
  ControllerProcess ctl(CADDIE_CONTROLLER_BIN, dir);
  ASSERT_TRUE(ctl.Start({}, {{"CADDIE_USER_TOKEN", kUser}, {"CADDIE_WORKER_TOKEN", kWorker}}).ok()) << ctl.Log();
  grpc::GenericStub stub(Insecure(ctl.address()));
  const auto user_methods = Methods(v1::ListSweepsRequest::descriptor()->file()->FindServiceByName("UserService"));
  const auto worker_methods = Methods(v1::HeartbeatRequest::descriptor()->file()->FindServiceByName("WorkerService"));
  ASSERT_EQ(user_methods.size(), 13u);  // with DrainWorker and UndrainWorker
  ASSERT_EQ(worker_methods.size(), 5u);
  const std::string bearer_user = std::string("Bearer ") + kUser, bearer_worker = std::string("Bearer ") + kWorker;
  const std::vector<std::string> bad = {"",
                                        "Bearer",
                                        "Bearer ",
                                        "Basic dXNlcjpwYXNz",
                                        std::string("bearer ") + kUser,
                                        std::string("Bearer ") + kUser + "x",
                                        std::string("Bearer ") + std::string(kUser).substr(0, 10),
                                        "Bearer " + std::string(4000, 'A')};
  int checked = 0;
  for (const auto& m : user_methods) {
    for (const auto& h : bad) {
      const grpc::Status s = CallRaw(stub, m, h);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << m << " with '" << h.substr(0, 40) << "': "
                                                                   << s.error_message();
      ++checked;
    }
    const grpc::Status s = CallRaw(stub, m, bearer_worker);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << m << ": " << s.error_message();
    // The right token gets past the check (any answer but the two auth codes).
    const grpc::Status ok = CallRaw(stub, m, bearer_user);
    EXPECT_NE(ok.error_code(), grpc::StatusCode::UNAUTHENTICATED) << m;
    EXPECT_NE(ok.error_code(), grpc::StatusCode::PERMISSION_DENIED) << m;
  }
  for (const auto& m : worker_methods) {
    for (const auto& h : bad) {
      const grpc::Status s = CallRaw(stub, m, h);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << m << " with '" << h.substr(0, 40) << "': "
                                                                   << s.error_message();
      ++checked;
    }
    const grpc::Status s = CallRaw(stub, m, bearer_user);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << m << ": " << s.error_message();
    const grpc::Status ok = CallRaw(stub, m, bearer_worker);
    EXPECT_NE(ok.error_code(), grpc::StatusCode::UNAUTHENTICATED) << m;
    EXPECT_NE(ok.error_code(), grpc::StatusCode::PERMISSION_DENIED) << m;
  }
  EXPECT_EQ(checked, 18 * 8);
  // Nothing was created by the rejected calls.
  v1::ListSweepsResponse sweeps;
  auto user = v1::UserService::NewStub(Insecure(ctl.address()));
  ASSERT_TRUE(user->ListSweeps(Ctx(kUser).get(), v1::ListSweepsRequest(), &sweeps).ok());
  EXPECT_EQ(sweeps.sweeps_size(), 0);
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(user->ListWorkers(Ctx(kUser).get(), v1::ListWorkersRequest(), &workers).ok());
  for (const auto& w : workers.workers()) EXPECT_TRUE(w.id().rfind("w-", 0) == 0) << w.id();
  // The log never holds a token (the rejected ones included).
  const std::string log = ctl.Log();
  EXPECT_THAT(log, Not(HasSubstr(kUser)));
  EXPECT_THAT(log, Not(HasSubstr(kWorker)));
  EXPECT_THAT(log, Not(HasSubstr(std::string(kUser).substr(0, 10))));
  ctl.Terminate();
  fs::remove_all(dir);
}

// A self-signed certificate for 127.0.0.1 / localhost, made by openssl.
struct Cert {
  fs::path cert, key;
};
Cert MakeCert(const fs::path& dir, const std::string& name) {
  Cert c{dir / (name + ".pem"), dir / (name + ".key")};
  auto r = RunToExit({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                      "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout",
                      c.key.string(), "-out", c.cert.string()},
                     dir, {}, std::chrono::seconds(60));
  EXPECT_TRUE(r.ok() && r->status.ok()) << (r.ok() ? r->output : r.status().ToString());
  return c;
}

// A scratch directory with a server certificate (`good`), an unrelated one (`other`),
// and a controller that Start() runs serving TLS with `good` and both roles' tokens.
struct TlsController {
  explicit TlsController(const std::string& name)
      : dir(Scratch(name)), good(MakeCert(dir, "server")), other(MakeCert(dir, "other")),
        ctl(CADDIE_CONTROLLER_BIN, dir / "ctl") {}
  absl::Status Start() {
    return ctl.Start({"--tls-cert", good.cert.string(), "--tls-key", good.key.string()},
                     {{"CADDIE_USER_TOKEN", kUser}, {"CADDIE_WORKER_TOKEN", kWorker}});
  }
  fs::path dir;
  Cert good, other;
  ControllerProcess ctl;
};

TEST(Security, TlsServesTrustingClientsOnly) {
  TlsController tls_controller("sec_tls");
  ASSERT_TRUE(tls_controller.Start().ok()) << tls_controller.ctl.Log();
  auto& [dir, good, other, ctl] = tls_controller;
  EXPECT_THAT(ctl.Log(), HasSubstr("tls on"));
  auto tls = [&](const fs::path& root) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadAll(root);
    return v1::UserService::NewStub(grpc::CreateChannel(ctl.address(), grpc::SslCredentials(o)));
  };
  v1::ListSweepsResponse resp;
  const grpc::Status ok = tls(good.cert)->ListSweeps(Ctx(kUser).get(), v1::ListSweepsRequest(), &resp);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  // Over TLS the token check still applies.
  EXPECT_EQ(tls(good.cert)->ListSweeps(Ctx("").get(), v1::ListSweepsRequest(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(tls(other.cert)->ListSweeps(Ctx(kUser, 3).get(), v1::ListSweepsRequest(), &resp).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  auto plain = v1::UserService::NewStub(Insecure(ctl.address()));
  EXPECT_EQ(plain->ListSweeps(Ctx(kUser, 3).get(), v1::ListSweepsRequest(), &resp).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A worker cannot start without the cert either: a missing key file is a clear error.
  ControllerProcess bad(CADDIE_CONTROLLER_BIN, dir / "bad");
  const absl::Status s = bad.Start({"--tls-cert", good.cert.string(), "--tls-key", (dir / "nope.key").string()});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(bad.Log(), HasSubstr("cannot read --tls-cert"));
  EXPECT_THAT(ctl.Log(), Not(HasSubstr("PRIVATE KEY")));
  ctl.Terminate();
  fs::remove_all(dir);
}

// caddie-worker and the CLI with --tls-ca against a TLS-only controller: the
// right CA registers the worker and serves `caddie workers --json` (also from
// CADDIE_TLS_CA, and --tls-ca beats it); a wrong CA or none fails with an error
// naming the address and TLS, and such a worker never registers.
TEST(Security, TlsWorkerAndCliTrustTheGivenCaOnly) {
  TlsController tls_controller("sec_tls_clients");
  ASSERT_TRUE(tls_controller.Start().ok()) << tls_controller.ctl.Log();
  auto& [dir, good, other, ctl] = tls_controller;
  auto start_worker = [&](testing_support::Process& w, const std::string& id, const fs::path* ca) {
    std::vector<std::string> argv = {CADDIE_WORKER_BIN, "--controller", ctl.address(), "--work-dir",
                                     (dir / "w").string(), "--id", id, "--trainer", CADDIE_FAKE_TRAIN_BIN,
                                     "--cpu-slots", "1", "--http-listen", ""};
    if (ca != nullptr) argv.insert(argv.end(), {"--tls-ca", ca->string()});
    return w.Start(argv, dir / (id + ".log"), {{"CADDIE_WORKER_TOKEN", kWorker}});
  };
  testing_support::Process w_good, w_wrong, w_plain;
  ASSERT_TRUE(start_worker(w_good, "tls-good", &good.cert).ok());
  ASSERT_TRUE(start_worker(w_wrong, "tls-wrong", &other.cert).ok());
  ASSERT_TRUE(start_worker(w_plain, "tls-plain", nullptr).ok());

  // The CLI, with no config file and no CADDIE_* from the test's environment.
  const std::vector<std::pair<std::string, std::string>> clean = {
      {"HOME", dir.string()}, {"XDG_CONFIG_HOME", ""}, {"CADDIE_ADDR", ""}, {"CADDIE_TOKEN", ""},
      {"CADDIE_TLS_CA", ""}};
  auto cli = [&](std::vector<std::string> args, std::vector<std::pair<std::string, std::string>> env = {}) {
    std::vector<std::string> argv = {CADDIE_CLI_BIN, "--addr", ctl.address(), "--token", kUser, "--timeout", "5"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto e = clean;
    e.insert(e.end(), env.begin(), env.end());
    auto r = RunToExit(argv, dir / "cli", e, std::chrono::seconds(30));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : RunResult{ExitStatus{false, -1, 0}, ""};
  };

  RunResult listed;
  ASSERT_TRUE(WaitUntil(
      [&] {
        listed = cli({"workers", "--json", "--tls-ca", good.cert.string()});
        return listed.status.ok() && listed.output.find("tls-good") != std::string::npos;
      },
      std::chrono::seconds(30)))
      << listed.status.ToString() << "\n" << listed.output << "\n" << w_good.Log();
  const auto json = nlohmann::json::parse(listed.output, nullptr, false);
  ASSERT_TRUE(json.is_object()) << listed.output;
  std::vector<std::string> ids;
  for (const auto& w : json.value("workers", nlohmann::json::array())) ids.push_back(w.value("id", ""));
  EXPECT_THAT(ids, ::testing::ElementsAre("tls-good"));

  // The workers with a wrong CA or none keep failing, and say why.
  const std::string tls_wrong = "over TLS with the CA from --tls-ca";
  const std::string plaintext = "in plaintext (no TLS CA given)";
  const std::string reg_failed = "register with " + ctl.address() + " failed";
  ASSERT_TRUE(WaitUntil([&] { return w_wrong.Log().find(tls_wrong) != std::string::npos; }, std::chrono::seconds(20)))
      << w_wrong.Log();
  EXPECT_THAT(w_wrong.Log(), HasSubstr(reg_failed));
  ASSERT_TRUE(WaitUntil([&] { return w_plain.Log().find(plaintext) != std::string::npos; }, std::chrono::seconds(20)))
      << w_plain.Log();
  EXPECT_THAT(w_plain.Log(), HasSubstr(reg_failed));
  EXPECT_TRUE(w_wrong.running());
  EXPECT_TRUE(w_plain.running());

  // CADDIE_TLS_CA works; --tls-ca beats it.
  RunResult r = cli({"workers", "--json"}, {{"CADDIE_TLS_CA", good.cert.string()}});
  EXPECT_TRUE(r.status.ok()) << r.output;
  EXPECT_THAT(r.output, HasSubstr("tls-good"));
  r = cli({"workers", "--json", "--tls-ca", other.cert.string()}, {{"CADDIE_TLS_CA", good.cert.string()}});
  EXPECT_FALSE(r.status.ok()) << r.output;

  // Wrong CA, and no CA: an unreachable-controller error naming the address and TLS.
  const std::string unreachable = "cannot reach the caddie controller at " + ctl.address();
  r = cli({"workers", "--json", "--tls-ca", other.cert.string()});
  EXPECT_EQ(r.status.code, 3) << r.output;  // kExitUnreachable
  EXPECT_THAT(r.output, HasSubstr(unreachable));
  EXPECT_THAT(r.output, HasSubstr(tls_wrong));
  r = cli({"workers", "--json"});
  EXPECT_EQ(r.status.code, 3) << r.output;
  EXPECT_THAT(r.output, HasSubstr(unreachable));
  EXPECT_THAT(r.output, HasSubstr(plaintext));
  EXPECT_THAT(r.output, HasSubstr("--tls-ca, CADDIE_TLS_CA or `tls_ca:`"));
  // A CA file that is not there is bad input naming it, before any call.
  r = cli({"workers", "--json", "--tls-ca", (dir / "nope.pem").string()});
  EXPECT_EQ(r.status.code, 2) << r.output;  // kExitBadInput
  EXPECT_THAT(r.output, HasSubstr("nope.pem\" (from --tls-ca)"));
  testing_support::Process w_missing;
  const fs::path missing = dir / "nope.pem";
  ASSERT_TRUE(start_worker(w_missing, "tls-missing", &missing).ok());
  const auto st = w_missing.Wait(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code, 2);
  EXPECT_THAT(w_missing.Log(), HasSubstr("cannot read the TLS CA file"));

  // Still only the good worker is registered.
  r = cli({"workers", "--json", "--tls-ca", good.cert.string()});
  ASSERT_TRUE(r.status.ok()) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("tls-wrong")));
  EXPECT_THAT(r.output, Not(HasSubstr("tls-plain")));
  for (auto* w : {&w_good, &w_wrong, &w_plain}) {
    w->Signal(SIGTERM);
    w->Wait(std::chrono::seconds(10));
  }
  ctl.Terminate();
  fs::remove_all(dir);
}

std::string HttpGet(const std::string& addr, const std::string& path) {
  httplib::Client c("http://" + addr);
  c.set_connection_timeout(5);
  auto r = c.Get(path);
  return r ? r->body : std::string();
}

// A worker with the token runs a job whose spec holds shell syntax; afterwards
// no token is in any log or /metrics page or the trainer's environment, and the
// shell syntax ran nothing.
TEST(Security, TokensStayOutOfLogsAndMetricsAndSpecsRunNoCommands) {
  const fs::path dir = Scratch("sec_run");
  ControllerProcess ctl(CADDIE_CONTROLLER_BIN, dir / "ctl");
  std::ofstream(dir / "user.token") << kUser << "\n";
  std::ofstream(dir / "worker.token") << kWorker << "\n";
  ASSERT_TRUE(ctl.Start({"--user-token-file", (dir / "user.token").string(), "--worker-token-file",
                         (dir / "worker.token").string(), "--heartbeat-interval", "1"})
                  .ok())
      << ctl.Log();
  testing_support::Process worker;
  ASSERT_TRUE(worker
                  .Start({CADDIE_WORKER_BIN, "--controller", ctl.address(), "--token-file",
                          (dir / "worker.token").string(), "--work-dir", (dir / "w").string(), "--id", "sec-w",
                          "--trainer", CADDIE_FAKE_TRAIN_BIN, "--cpu-slots", "1", "--lease-interval", "0.2",
                          "--http-listen", "127.0.0.1:0"},
                         dir / "worker.log",
                         // Tokens in the worker's environment (its own came by --token-file) that
                         // the trainer must not inherit; the fake trainer dumps what it got.
                         {{"CADDIE_FAKE_TRAIN", R"({"steps": 3, "step_ms": 10, "dump_env": true})"},
                          {"CADDIE_TOKEN", kUser},
                          {"CADDIE_WORKER_TOKEN", kWorker},
                          {"SOME_COPY_OF_THE_WORKER_TOKEN", kWorker}})
                  .ok());
  const auto worker_http = WaitForLogMatch(worker, std::regex(R"(metrics on http://([0-9.]+:\d+)/metrics)"),
                                           std::chrono::seconds(20));
  ASSERT_TRUE(worker_http) << worker.Log();

  // Shell syntax everywhere a spec has free text.
  const fs::path pwned = dir / "PWNED";
  const std::string evil = "x; touch " + pwned.string() + " `touch " + pwned.string() + "` $(touch " +
                           pwned.string() + ") | touch " + pwned.string();
  v1::SubmitSweepRequest sub;
  sub.mutable_spec()->set_name("$(touch " + pwned.string() + ")");
  nlohmann::json sweep = {{"base", {{"data", evil}, {"iterations", 3}}}};
  sub.mutable_spec()->set_sweep_json(sweep.dump());
  v1::SubmitSweepResponse sresp;
  auto user = v1::UserService::NewStub(Insecure(ctl.address()));
  ASSERT_TRUE(user->SubmitSweep(Ctx(kUser).get(), sub, &sresp).ok());
  ASSERT_EQ(sresp.jobs_size(), 1);
  const std::string job_id = sresp.jobs(0).id();
  // A wrong token attempt, so a rejected token would show up in logs if logged.
  v1::ListSweepsResponse ls;
  EXPECT_EQ(user->ListSweeps(Ctx("wrong-secret-1234567").get(), v1::ListSweepsRequest(), &ls).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  v1::Job job;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < end) {
    v1::GetJobRequest g;
    g.set_job_id(job_id);
    if (user->GetJob(Ctx(kUser).get(), g, &job).ok() && job.state() >= v1::JOB_STATE_SUCCEEDED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.ShortDebugString() << "\n" << worker.Log();
  EXPECT_FALSE(fs::exists(pwned)) << "a spec string was run by a shell";
  // The trainer got the text as data: the run dir's spec.json holds it verbatim.
  bool saw_spec = false;
  bool saw_env = false;
  for (const auto& e : fs::recursive_directory_iterator(dir / "w")) {
    if (e.path().filename() == "fake_rank0.json") {
      const auto me = nlohmann::json::parse(ReadAll(e.path()), nullptr, false);
      ASSERT_TRUE(me.is_object());
      const auto env = me.value("env", nlohmann::json::object());
      for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "CADDIE_JOB_ID", "CADDIE_FAKE_TRAIN"}) {
        EXPECT_TRUE(env.contains(k)) << "trainer env lacks " << k;
      }
      for (const char* k : {"CADDIE_TOKEN", "CADDIE_WORKER_TOKEN", "SOME_COPY_OF_THE_WORKER_TOKEN"}) {
        EXPECT_FALSE(env.contains(k)) << "trainer env has " << k;
      }
      EXPECT_THAT(env.dump(), Not(HasSubstr(kUser)));
      EXPECT_THAT(env.dump(), Not(HasSubstr(kWorker)));
      saw_env = true;
    }
    if (e.path().filename() == "spec.json") {
      const auto spec = nlohmann::json::parse(ReadAll(e.path()), nullptr, false);
      ASSERT_TRUE(spec.is_object());
      EXPECT_EQ(spec.value("data", ""), evil);
      saw_spec = true;
    }
  }
  EXPECT_TRUE(saw_spec);
  EXPECT_TRUE(saw_env);

  const std::string everything = ctl.Log() + worker.Log() + HttpGet(ctl.http_address(), "/metrics") +
                                 HttpGet(*worker_http, "/metrics") + HttpGet(*worker_http, "/jobs");
  EXPECT_THAT(everything, HasSubstr("caddie_grpc_server_calls_total"));
  EXPECT_THAT(everything, HasSubstr("caddie_worker_running_jobs"));
  for (const std::string& secret : std::vector<std::string>{std::string(kUser), std::string(kWorker), std::string("wrong-secret-1234567")}) {
    EXPECT_THAT(everything, Not(HasSubstr(secret))) << "token in a log or /metrics";
  }
  worker.Signal(SIGTERM);
  worker.Wait(std::chrono::seconds(10));
  ctl.Terminate();
  fs::remove_all(dir);
}

// No daemon source hands a string to a shell: the only way to start a trainer is
// common/subprocess.h (fork + execve of an argv vector).
TEST(Security, NoShellInDaemonSources) {
  const char* src = std::getenv("CADDIE_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "run through ctest (CADDIE_SOURCE_DIR)";
  const fs::path root = src;
  const std::regex shell(R"((\bsystem\s*\(|\bpopen\s*\(|"/bin/sh"|"sh",\s*"-c"|\bexecl\s*\(|\bexeclp\s*\())");
  int files = 0;
  for (const char* sub : {"controller", "worker", "common"}) {
    for (const auto& e : fs::recursive_directory_iterator(root / sub)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || name.find("_test") != std::string::npos) continue;
      if (e.path().extension() != ".cc" && e.path().extension() != ".h") continue;
      ++files;
      const std::string text = ReadAll(e.path());
      std::smatch m;
      EXPECT_FALSE(std::regex_search(text, m, shell)) << e.path() << " calls a shell: " << m.str();
    }
  }
  EXPECT_GT(files, 20);
  EXPECT_THAT(ReadAll(root / "common/subprocess.cc"), HasSubstr("execv"));
}

}  // namespace
}  // namespace caddie::reliability
