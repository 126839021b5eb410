// The end-to-end observability check: a real Prometheus (the Debian package)
// started on loopback scrapes a live caddie-controller and caddie-worker while
// the worker runs a CPU job with caddie-fake-train; then
//  - `promtool check metrics` passes on each live /metrics scrape,
//  - every PromQL expression of every dashboard panel returns data through
//    Prometheus's HTTP API (a range query over the test's window, as Grafana
//    asks for a time range),
//  - every alert rule (deploy/prometheus/alerts.yml, loaded by this
//    Prometheus) evaluates with health "ok", every metric it reads returns
//    data, and CaddieControllerDown really fires (pending) once the controller
//    is killed;
//  - and, on the rules at test scale (short `for:` and windows), every alert
//    fires with its labels on the real event (a crashed job, a drained worker,
//    an unplaceable job, bad-token calls, a killed worker, a killed
//    controller) after staying silent on the healthy fleet.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <functional>
#include <map>
#include <regex>
#include <sstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "caddie/v1/user_service.grpc.pb.h"
#include "tests/observability/obs_test_util.h"

namespace caddie::obs_test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using ::testing::HasSubstr;

constexpr char kUserToken[] = "obs-test-user-token";
constexpr char kWorkerToken[] = "obs-test-worker-token";

fs::path BinaryDir() {
  const char* b = std::getenv("CADDIE_BINARY_DIR");
  return b != nullptr ? fs::path(b) : fs::path(CADDIE_BINARY_DIR_FALLBACK);
}

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A process started by the test, killed (whole group) at the end.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  ~Process() { Kill(SIGKILL); }

  absl::Status Start(std::vector<std::string> argv, const fs::path& log,
                     std::vector<std::pair<std::string, std::string>> extra_env = {}) {
    SpawnOptions o;
    o.argv = std::move(argv);
    o.env = CurrentEnvironment();
    for (const auto& [k, v] : extra_env) SetEnv(&o.env, k, v);
    o.stdout_path = log.string();
    o.stderr_path = log.string();
    o.process_group = 0;
    log_ = log;
    absl::StatusOr<Child> c = Spawn(o);
    if (!c.ok()) return c.status();
    pid_ = c->pid;
    return absl::OkStatus();
  }
  bool Running() {
    if (pid_ <= 0) return false;
    if (TryReap(pid_)) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(-pid_, sig);
    ::kill(pid_, sig);
    int ws;
    waitpid(pid_, &ws, 0);
    pid_ = -1;
  }
  std::string Log() const { return ReadFile(log_); }

 private:
  pid_t pid_ = -1;
  fs::path log_;
};

// GET http://127.0.0.1:port/path, "" on failure.
std::optional<httplib::Result> HttpGet(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2);
  c.set_read_timeout(10);
  auto r = c.Get(path.c_str());
  if (!r) return std::nullopt;
  return r;
}

bool WaitHttpOk(int port, const std::string& path, std::chrono::seconds timeout, Process* p) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (p != nullptr && !p->Running()) return false;
    auto r = HttpGet(port, path);
    if (r && (*r)->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Prometheus's HTTP query API.
class PromApi {
 public:
  explicit PromApi(int port) : client_("127.0.0.1", port) {
    client_.set_connection_timeout(2);
    client_.set_read_timeout(20);
  }
  // POST /api/v1/<endpoint> with form params; the parsed body (status, data…).
  json Call(const std::string& endpoint, const httplib::Params& params) {
    auto r = client_.Post(("/api/v1/" + endpoint).c_str(), params);
    if (!r) return json{{"status", "transport_error"}, {"error", httplib::to_string(r.error())}};
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded()) return json{{"status", "bad_json"}, {"error", r->body}};
    return j;
  }
  json Instant(const std::string& q) { return Call("query", {{"query", q}}); }
  json Range(const std::string& q, double start, double end) {
    return Call("query_range", {{"query", q},
                                {"start", std::to_string(start)},
                                {"end", std::to_string(end)},
                                {"step", "1"}});
  }
  json Get(const std::string& path) {
    auto r = client_.Get(path.c_str());
    if (!r) return json{{"status", "transport_error"}};
    return json::parse(r->body, nullptr, false);
  }

 private:
  httplib::Client client_;
};

// Data = at least one sample that is a number: a result that is all NaN (0/0,
// e.g. a utilisation over zero GPUs) is what Grafana shows as "NaN" — no data.
bool HasData(const json& j) {
  if (j.value("status", "") != "success" || !j.contains("data")) return false;
  for (const auto& r : j["data"]["result"]) {
    if (r.contains("value") && r["value"].size() == 2) {
      const std::string v = r["value"][1].get<std::string>();
      if (v != "NaN" && v != "+Inf" && v != "-Inf") return true;
    }
    if (r.contains("values"))
      for (const auto& p : r["values"])
        if (p.size() == 2 && p[1].get<std::string>() != "NaN") return true;
  }
  // A scalar result ("resultType": "scalar") is [t, "v"].
  const auto& res = j["data"]["result"];
  if (res.is_array() && res.size() == 2 && res[1].is_string()) return res[1].get<std::string>() != "NaN";
  return false;
}

// Grafana's variables, as they would be on an "All" selection, so the
// expressions go to Prometheus exactly as Grafana sends them.
std::string ExpandGrafanaVars(std::string expr) {
  return absl::StrReplaceAll(expr, {{"$__rate_interval", "10s"},
                                    {"$__interval", "1s"},
                                    {"$sweep", ".*"}});
}

struct Expr {
  std::string where;  // "caddie-sweep.json / val_bpb (running jobs)"
  std::string expr;
};

std::vector<Expr> DashboardExprs() {
  std::vector<Expr> out;
  for (const char* f : {"caddie-sweep.json", "caddie-fleet.json"}) {
    const json d = json::parse(ReadFile(SourceDir() / "dashboards" / f));
    for (const auto& p : d.at("panels")) {
      for (const auto& t : p.at("targets")) {
        out.push_back({std::string(f) + " / " + p.at("title").get<std::string>(),
                       ExpandGrafanaVars(t.at("expr").get<std::string>())});
      }
    }
  }
  return out;
}

std::vector<Expr> AlertExprs() {
  std::vector<Expr> out;
  const YAML::Node rules =
      YAML::LoadFile((SourceDir() / "deploy/prometheus/alerts.yml").string());
  for (const auto& g : rules["groups"]) {
    for (const auto& r : g["rules"]) {
      out.push_back({r["alert"].as<std::string>(), r["expr"].as<std::string>()});
    }
  }
  return out;
}

absl::StatusOr<int> FreePort() { return PickFreePort(); }

using Labels = std::map<std::string, std::string>;

// The alerts Prometheus holds now in `state` ("pending" or "firing"), each as
// its label set (alertname included).
std::vector<Labels> AlertsIn(PromApi& api, const std::string& state) {
  std::vector<Labels> out;
  const json alerts = api.Get("/api/v1/alerts");
  if (!alerts.is_object() || !alerts.contains("data")) return out;
  for (const auto& a : alerts["data"]["alerts"]) {
    if (a.value("state", "") != state) continue;
    Labels l;
    for (const auto& [k, v] : a["labels"].items()) l[k] = v.get<std::string>();
    out.push_back(std::move(l));
  }
  return out;
}

std::set<std::string> AlertNames(const std::vector<Labels>& alerts) {
  std::set<std::string> out;
  for (const auto& l : alerts) out.insert(l.at("alertname"));
  return out;
}

std::string Dump(const std::vector<Labels>& alerts) {
  json j = json::array();
  for (const auto& l : alerts) j.push_back(l);
  return j.dump();
}

// deploy/prometheus/alerts.yml at test scale, so that each alert can fire
// within seconds of its event: every `for:` becomes 1 s, every range window of
// N minutes N seconds (at least 10 s, so a rate spans several 1 s scrapes),
// and the heartbeat threshold 60 s becomes 5 s (heartbeats come every second
// here). The expressions are otherwise the shipped ones.
absl::StatusOr<std::string> TestScaleRules(const std::string& shipped) {
  std::string out;
  std::istringstream in(shipped);
  for (std::string line; std::getline(in, line);) {
    const size_t indent = line.find_first_not_of(' ');
    if (indent != std::string::npos && line.compare(indent, 4, "for:") == 0) {
      line = line.substr(0, indent) + "for: 1s";
    }
    out += line + "\n";
  }
  static const std::regex kWindow(R"(\[(\d+)m\])");
  std::string scaled;
  auto last = out.cbegin();
  for (auto it = std::sregex_iterator(out.begin(), out.end(), kWindow); it != std::sregex_iterator(); ++it) {
    scaled.append(last, (*it)[0].first);
    scaled += "[" + std::to_string(std::max(10, std::stoi((*it)[1].str()))) + "s]";
    last = (*it)[0].second;
  }
  scaled.append(last, out.cend());
  const std::string heartbeat = "caddie_worker_heartbeat_age_seconds > 60";
  const size_t at = scaled.find(heartbeat);
  if (at == std::string::npos || scaled.find(heartbeat, at + 1) != std::string::npos) {
    return absl::NotFoundError("alerts.yml does not have '" + heartbeat + "' exactly once");
  }
  scaled.replace(at, heartbeat.size(), "caddie_worker_heartbeat_age_seconds > 5");
  return scaled;
}

// Polls /api/v1/alerts until every alert of `want` fires with (at least) its
// labels; when one is first seen firing, its expression (`exprs`) must return
// data through /api/v1/query. `between` runs between polls. Returns the
// alerts that had not fired by `timeout` (empty: all did).
std::set<std::string> WaitFiring(PromApi& api, const std::map<std::string, Labels>& want,
                                 const std::map<std::string, std::string>& exprs, std::chrono::seconds timeout,
                                 const std::function<void()>& between = {}) {
  std::set<std::string> missing;
  for (const auto& [name, l] : want) missing.insert(name);
  const auto deadline = Clock::now() + timeout;
  while (!missing.empty() && Clock::now() < deadline) {
    for (const Labels& have : AlertsIn(api, "firing")) {
      const std::string name = have.at("alertname");
      if (!missing.count(name)) continue;
      bool match = true;
      for (const auto& [k, v] : want.at(name)) match = match && have.count(k) && have.at(k) == v;
      if (!match) continue;
      missing.erase(name);
      const json r = api.Instant(exprs.at(name));
      EXPECT_TRUE(HasData(r)) << name << " fires but its expression returns no data: " << exprs.at(name)
                              << "\n" << r.dump().substr(0, 500);
      std::printf("%s fires: %s\n", name.c_str(), json(have).dump().c_str());
    }
    if (!missing.empty()) {
      if (between) between();
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  return missing;
}

class LivePrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* b : {"controller/caddie-controller", "worker/caddie-worker",
                          "tests/fake_trainer/caddie-fake-train"}) {
      ASSERT_TRUE(fs::exists(BinaryDir() / b)) << "missing " << (BinaryDir() / b);
    }
    for (int* p : {&grpc_port_, &controller_http_, &worker_http_, &prom_port_}) {
      absl::StatusOr<int> port = FreePort();
      ASSERT_TRUE(port.ok()) << port.status();
      *p = *port;
    }
    WriteFile(dir_.path() / "user.token", kUserToken);
    WriteFile(dir_.path() / "worker.token", kWorkerToken);
  }

  void StartController(const std::vector<std::string>& extra_args = {}) {
    std::vector<std::string> argv = {(BinaryDir() / "controller/caddie-controller").string(),
                                     "--listen", "127.0.0.1:" + std::to_string(grpc_port_),
                                     "--http-listen", "127.0.0.1:" + std::to_string(controller_http_),
                                     "--db", (dir_.path() / "caddie.db").string(),
                                     "--user-token-file", (dir_.path() / "user.token").string(),
                                     "--worker-token-file", (dir_.path() / "worker.token").string(),
                                     // Short heartbeats so the fleet metrics move within the test.
                                     "--heartbeat-interval", "1"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    ASSERT_TRUE(controller_.Start(argv, dir_.path() / "controller.log").ok());
    ASSERT_TRUE(WaitHttpOk(controller_http_, "/healthz", std::chrono::seconds(30), &controller_))
        << controller_.Log();
  }

  // A worker with one declared GPU and one CPU slot running caddie-fake-train
  // with `plan` (by default a healthy 4 s run with a 4 s evaluation).
  void StartWorker(const json& plan = {{"steps", 40}, {"step_ms", 100}, {"eval_ms", 4000}, {"val_bpb", 2.25}},
                   const std::string& name = "obs-worker") {
    fs::create_directories(dir_.path() / "spool");
    ASSERT_TRUE(worker_
                    .Start({(BinaryDir() / "worker/caddie-worker").string(),
                            "--controller", "127.0.0.1:" + std::to_string(grpc_port_),
                            "--http-listen", "127.0.0.1:" + std::to_string(worker_http_),
                            "--spool-dir", (dir_.path() / "spool").string(),
                            "--trainer",
                            (BinaryDir() / "tests/fake_trainer/caddie-fake-train").string(),
                            "--token-file", (dir_.path() / "worker.token").string(),
                            "--name", name, "--gpus", "1", "--cpu-slots", "1"},
                           dir_.path() / "worker.log", {{"CADDIE_FAKE_TRAIN", plan.dump()}})
                    .ok());
    ASSERT_TRUE(WaitHttpOk(worker_http_, "/healthz", std::chrono::seconds(30), &worker_))
        << worker_.Log();
  }

  // Prometheus with the scrape jobs of deploy/prometheus.yml (loopback
  // targets, 1 s scrapes and evaluations) and `rules` as its rule file (by
  // default the shipped alerts.yml, unchanged).
  void StartPrometheus(const std::string& rules = ReadFile(SourceDir() / "deploy/prometheus/alerts.yml")) {
    const fs::path cfg_dir = dir_.path() / "prometheus";
    fs::create_directories(cfg_dir / "data");
    WriteFile(cfg_dir / "alerts.yml", rules);
    WriteFile(cfg_dir / "prometheus.yml",
              "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
              "rule_files: [alerts.yml]\n"
              "scrape_configs:\n"
              "  - job_name: caddie-controller\n    static_configs:\n"
              "      - targets: ['127.0.0.1:" + std::to_string(controller_http_) + "']\n"
              "  - job_name: caddie-worker\n    static_configs:\n"
              "      - targets: ['127.0.0.1:" + std::to_string(worker_http_) + "']\n");
    ASSERT_TRUE(prometheus_
                    .Start({"prometheus", "--config.file=" + (cfg_dir / "prometheus.yml").string(),
                            "--storage.tsdb.path=" + (cfg_dir / "data").string(),
                            "--web.listen-address=127.0.0.1:" + std::to_string(prom_port_),
                            "--web.enable-lifecycle", "--log.level=warn"},
                           dir_.path() / "prometheus.log")
                    .ok());
    ASSERT_TRUE(WaitHttpOk(prom_port_, "/-/ready", std::chrono::seconds(60), &prometheus_))
        << prometheus_.Log();
  }

  std::unique_ptr<caddie::v1::UserService::Stub> UserStub() {
    return caddie::v1::UserService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(grpc_port_), grpc::InsecureChannelCredentials()));
  }

  // Submits a one-job sweep (a CPU job by default); its id.
  std::string SubmitSweep(int gpus = 0, int max_attempts = 0) {
    auto stub = UserStub();
    caddie::v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name("obs-test");
    req.mutable_spec()->set_sweep_json(
        gpus == 0 ? R"({"base": {"model_dim": 64, "num_layers": 2, "device": "cpu"}, "axes": {"seed": [1]}, "mode": "grid"})"
                  : R"({"base": {"model_dim": 64, "num_layers": 2}, "axes": {"seed": [1]}, "mode": "grid"})");
    req.mutable_spec()->set_gpus(gpus);
    req.mutable_spec()->set_max_attempts(max_attempts);
    req.mutable_spec()->mutable_budget()->set_train_seconds(60);
    caddie::v1::SubmitSweepResponse resp;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kUserToken);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    const grpc::Status s = stub->SubmitSweep(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message() << "\n" << controller_.Log();
    EXPECT_EQ(resp.jobs_size(), 1);
    return resp.sweep().id();
  }

  // Polls `query` until it returns data.
  bool WaitForData(PromApi& api, const std::string& query, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (HasData(api.Instant(query))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return false;
  }

  std::string Logs() {
    return "--- controller\n" + controller_.Log() + "\n--- worker\n" + worker_.Log() +
           "\n--- prometheus\n" + prometheus_.Log();
  }

  TempDir dir_;
  int grpc_port_ = 0, controller_http_ = 0, worker_http_ = 0, prom_port_ = 0;
  Process controller_, worker_, prometheus_;
};

TEST_F(LivePrometheusTest, DashboardsAndAlertsHaveDataFromALiveControllerAndWorker) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  ASSERT_NO_FATAL_FAILURE(StartWorker());

  // The live exposition passes the real linter, with the right content type.
  for (int port : {controller_http_, worker_http_}) {
    auto r = HttpGet(port, "/metrics");
    ASSERT_TRUE(r) << "no /metrics on " << port;
    EXPECT_EQ((*r)->status, 200);
    EXPECT_THAT((*r)->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
    TempDir d;
    WriteFile(d.path() / "m.txt", (*r)->body);
    const CommandResult c = RunCommand(
        {"sh", "-c", "promtool check metrics < \"$0\"", (d.path() / "m.txt").string()});
    EXPECT_EQ(c.exit_code, 0) << c.output << "\n" << (*r)->body;
    EXPECT_EQ(c.output, "") << c.output;
  }

  ASSERT_NO_FATAL_FAILURE(StartPrometheus());
  const double t0 = UnixNow() - 1;
  PromApi api(prom_port_);
  ASSERT_TRUE(WaitForData(api, "up{job=\"caddie-controller\"} == 1", std::chrono::seconds(30)))
      << Logs();
  ASSERT_TRUE(WaitForData(api, "up{job=\"caddie-worker\"} == 1", std::chrono::seconds(30)))
      << Logs();

  const std::string sweep_id = SubmitSweep();
  ASSERT_FALSE(sweep_id.empty()) << Logs();
  // The running job's live gauges reach Prometheus (val_bpb is reported during
  // the fake trainer's 4 s evaluation), then the finished job's leaderboard entry.
  ASSERT_TRUE(WaitForData(api, "caddie_job_val_bpb{sweep_id=\"" + sweep_id + "\"}",
                          std::chrono::seconds(90)))
      << Logs();
  ASSERT_TRUE(WaitForData(api, "caddie_leaderboard_val_bpb{sweep_id=\"" + sweep_id + "\"}",
                          std::chrono::seconds(60)))
      << Logs();
  // Finished jobs leave the live per-job gauges (bounded cardinality).
  ASSERT_TRUE(WaitForData(api, "absent(caddie_job_step{sweep_id=\"" + sweep_id + "\"})",
                          std::chrono::seconds(15)))
      << Logs();
  // A few more scrapes so rate() windows span the whole run.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double t1 = UnixNow();

  // Every dashboard panel query returns data over the test's window.
  const std::vector<Expr> panels = DashboardExprs();
  ASSERT_GE(panels.size(), 30u);
  for (const Expr& e : panels) {
    const json r = api.Range(e.expr, t0, t1);
    EXPECT_TRUE(HasData(r)) << e.where << ": " << e.expr << "\n" << r.dump().substr(0, 500);
  }
  std::printf("checked %zu dashboard panel queries over %.0f s of live data\n", panels.size(), t1 - t0);
  // The sweep variable's values (label_values(sweep_id)) include our sweep.
  const json labels = api.Get("/api/v1/label/sweep_id/values");
  EXPECT_THAT(labels["data"].dump(), HasSubstr("\"" + sweep_id + "\""));

  // Every alert rule is loaded and evaluates cleanly on live data, and every
  // metric it reads has data.
  const json rules = api.Get("/api/v1/rules");
  std::set<std::string> healthy;
  for (const auto& g : rules["data"]["groups"]) {
    for (const auto& r : g["rules"]) {
      if (r.value("health", "") == "ok") healthy.insert(r.value("name", ""));
      else ADD_FAILURE() << r.dump();
    }
  }
  for (const Expr& a : AlertExprs()) {
    SCOPED_TRACE(a.where);
    EXPECT_TRUE(healthy.count(a.where)) << a.where << " not evaluated ok";
    EXPECT_EQ(api.Instant(a.expr).value("status", ""), "success") << a.expr;
    for (const std::string& sel : MetricSelectors(a.expr)) {
      const json r = api.Range(sel, t0, t1);
      EXPECT_TRUE(HasData(r)) << a.where << " reads " << sel << ", which has no data";
    }
  }

  std::printf("checked %zu alert rules (health, expression, every metric read)\n", AlertExprs().size());
  // The controller-down alert really fires: kill the controller, and the rule's
  // own expression returns data and the alert goes pending.
  controller_.Kill(SIGKILL);
  std::string down_expr;
  for (const Expr& a : AlertExprs()) {
    if (a.where == "CaddieControllerDown") down_expr = a.expr;
  }
  ASSERT_FALSE(down_expr.empty());
  EXPECT_TRUE(WaitForData(api, down_expr, std::chrono::seconds(15))) << down_expr;
  bool pending = false;
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  while (!pending && Clock::now() < deadline) {
    const json alerts = api.Get("/api/v1/alerts");
    for (const auto& a : alerts["data"]["alerts"]) {
      if (a["labels"].value("alertname", "") == "CaddieControllerDown" &&
          a.value("state", "") == "pending") {
        pending = true;
      }
    }
    if (!pending) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_TRUE(pending) << "CaddieControllerDown did not go pending";
}

// Every alert rule fires on the real event it is about, with the labels an
// operator reads, and stays silent on the healthy fleet before. The shipped
// rules at test scale (TestScaleRules); a controller that drains a worker
// after one infrastructure failure; one worker whose trainer always crashes.
TEST_F(LivePrometheusTest, EveryAlertFiresOnItsRealEvent) {
  const auto start = Clock::now();
  const absl::StatusOr<std::string> rules = TestScaleRules(ReadFile(SourceDir() / "deploy/prometheus/alerts.yml"));
  ASSERT_TRUE(rules.ok()) << rules.status();
  EXPECT_FALSE(std::regex_search(*rules, std::regex(R"(\[\d+m\])"))) << *rules;
  std::map<std::string, std::string> exprs;
  for (const auto& g : YAML::Load(*rules)["groups"]) {
    for (const auto& r : g["rules"]) {
      exprs[r["alert"].as<std::string>()] = r["expr"].as<std::string>();
      if (r["for"]) {
        EXPECT_EQ(r["for"].as<std::string>(), "1s");
      }
    }
  }
  ASSERT_EQ(exprs.size(), AlertExprs().size());

  ASSERT_NO_FATAL_FAILURE(StartController({"--drain-after", "1"}));
  // Every job on this worker crashes at step 1 (exit 3: an infrastructure failure).
  ASSERT_NO_FATAL_FAILURE(
      StartWorker({{"steps", 5}, {"step_ms", 50}, {"crash_at_step", 1}, {"crash_exit_code", 3}}, "obs-crash"));
  ASSERT_NO_FATAL_FAILURE(StartPrometheus(*rules));
  PromApi api(prom_port_);
  ASSERT_TRUE(WaitForData(api, "up{job=\"caddie-controller\"} == 1", std::chrono::seconds(30))) << Logs();
  ASSERT_TRUE(WaitForData(api, "up{job=\"caddie-worker\"} == 1", std::chrono::seconds(30))) << Logs();
  ASSERT_TRUE(WaitForData(api, "caddie_worker_heartbeat_age_seconds{worker=\"obs-crash\"}",
                          std::chrono::seconds(30)))
      << Logs();

  // Healthy: a few evaluations later every rule is loaded and ok, nothing is
  // pending or firing, and no alert expression returns data.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  int loaded = 0;
  const json loaded_rules = api.Get("/api/v1/rules");
  for (const auto& g : loaded_rules["data"]["groups"]) {
    for (const auto& r : g["rules"]) {
      ++loaded;
      EXPECT_EQ(r.value("health", ""), "ok") << r.dump();
    }
  }
  EXPECT_EQ(loaded, static_cast<int>(exprs.size()));
  EXPECT_EQ(Dump(AlertsIn(api, "pending")), "[]");
  EXPECT_EQ(Dump(AlertsIn(api, "firing")), "[]");
  for (const auto& [name, e] : exprs) {
    EXPECT_FALSE(HasData(api.Instant(e))) << name << " on a healthy fleet: " << e;
  }

  // The events: a job that crashes with no retries left (JobFailureRate; its
  // infrastructure failure drains the worker: WorkerDrained), a job asking for
  // more GPUs than any worker has (QueueStuck, once the crashed job's lease
  // leaves the window), and calls with a bad token (GrpcErrors).
  ASSERT_FALSE(SubmitSweep(/*gpus=*/0, /*max_attempts=*/1).empty()) << Logs();
  ASSERT_FALSE(SubmitSweep(/*gpus=*/8).empty()) << Logs();
  auto stub = UserStub();
  grpc::StatusCode bad_token_code = grpc::StatusCode::OK;
  auto bad_token_call = [&] {
    caddie::v1::ListWorkersRequest req;
    caddie::v1::ListWorkersResponse resp;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer not-the-user-token");
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    bad_token_code = stub->ListWorkers(&ctx, req, &resp).error_code();
  };
  const std::map<std::string, Labels> events = {
      {"CaddieJobFailureRate", {{"severity", "warning"}}},
      {"CaddieWorkerDrained", {{"worker", "obs-crash"}, {"job", "caddie-controller"}, {"severity", "warning"}}},
      {"CaddieQueueStuck", {{"job", "caddie-controller"}, {"severity", "warning"}}},
      {"CaddieGrpcErrors", {{"method", "ListWorkers"}, {"severity", "info"}}},
  };
  std::set<std::string> missing = WaitFiring(api, events, exprs, std::chrono::seconds(60), bad_token_call);
  EXPECT_TRUE(missing.empty()) << absl::StrJoin(missing, ", ") << " did not fire; firing: "
                               << Dump(AlertsIn(api, "firing")) << "\n" << Logs();
  EXPECT_EQ(bad_token_code, grpc::StatusCode::UNAUTHENTICATED);
  // The worker and the controller are still up and heartbeating: those stay silent.
  const std::set<std::string> firing = AlertNames(AlertsIn(api, "firing"));
  for (const char* quiet : {"CaddieWorkerDown", "CaddieWorkerHeartbeatLost", "CaddieControllerDown"}) {
    EXPECT_EQ(firing.count(quiet), 0u) << quiet;
  }

  // The worker dies: its scrape fails (WorkerDown) and its heartbeats stop (HeartbeatLost).
  worker_.Kill(SIGKILL);
  missing = WaitFiring(api,
                       {{"CaddieWorkerDown", {{"job", "caddie-worker"},
                                              {"instance", "127.0.0.1:" + std::to_string(worker_http_)},
                                              {"severity", "warning"}}},
                        {"CaddieWorkerHeartbeatLost", {{"worker", "obs-crash"}, {"severity", "warning"}}}},
                       exprs, std::chrono::seconds(30));
  EXPECT_TRUE(missing.empty()) << absl::StrJoin(missing, ", ") << " did not fire; firing: "
                               << Dump(AlertsIn(api, "firing")) << "\n" << Logs();

  // The controller dies.
  controller_.Kill(SIGKILL);
  missing = WaitFiring(api,
                       {{"CaddieControllerDown", {{"job", "caddie-controller"},
                                                  {"instance", "127.0.0.1:" + std::to_string(controller_http_)},
                                                  {"severity", "critical"}}}},
                       exprs, std::chrono::seconds(30));
  EXPECT_TRUE(missing.empty()) << "CaddieControllerDown did not fire; firing: " << Dump(AlertsIn(api, "firing"));
  std::printf("all %zu alerts fired on their events in %.0f s\n", exprs.size(),
              std::chrono::duration<double>(Clock::now() - start).count());
}

// Every command-line flag the deployment files pass to a daemon is one that
// binary accepts (its --help lists it), so a renamed flag cannot leave a
// systemd unit, compose file, Kubernetes manifest or Slurm script broken.
std::set<std::string> FlagsIn(const std::string& text) {
  static const std::regex kFlag(R"((^|[\s"',\[])(--[a-z][a-z0-9-]*))");  // ',' : CLI11 aliases
  std::set<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kFlag);
       it != std::sregex_iterator(); ++it) {
    out.insert((*it)[2].str());
  }
  return out;
}

TEST(DeployFlagsTest, DeployFilesUseOnlyFlagsTheBinariesAccept) {
  const fs::path deploy = SourceDir() / "deploy";
  std::map<std::string, std::set<std::string>> used;  // binary -> flags
  auto add = [&](const std::string& bin, const std::string& text, const std::string& where) {
    const auto flags = FlagsIn(text);
    EXPECT_FALSE(flags.empty()) << where;
    for (const auto& f : flags) used[bin].insert(f + "  (" + where + ")");
  };
  for (const char* bin : {"caddie-controller", "caddie-worker"}) {
    const std::string unit = ReadFile(deploy / "systemd" / (std::string(bin) + ".service"));
    const size_t at = unit.find("\nExecStart=");
    ASSERT_NE(at, std::string::npos);
    add(bin, unit.substr(at, unit.find('\n', at + 1) - at), std::string(bin) + ".service");
  }
  const YAML::Node compose = YAML::LoadFile((deploy / "docker-compose.yml").string());
  std::string cmd;
  for (const auto& a : compose["services"]["controller"]["command"]) cmd += " " + a.as<std::string>();
  add("caddie-controller", cmd, "docker-compose.yml");
  for (const auto& doc : YAML::LoadAllFromFile((deploy / "kubernetes/caddie.yaml").string())) {
    const std::string kind = doc["kind"].as<std::string>();
    if (kind != "StatefulSet" && kind != "DaemonSet") continue;
    const YAML::Node c = doc["spec"]["template"]["spec"]["containers"][0];
    std::string args;
    for (const auto& a : c["args"]) args += " " + a.as<std::string>();
    add(kind == "StatefulSet" ? "caddie-controller" : "caddie-worker", args, "caddie.yaml " + kind);
  }
  const std::string slurm = ReadFile(deploy / "slurm/caddie-workers.sbatch");
  const size_t exec = slurm.find("caddie-worker\"");
  ASSERT_NE(exec, std::string::npos);
  add("caddie-worker", slurm.substr(exec), "caddie-workers.sbatch");

  for (const auto& [bin, flags] : used) {
    const fs::path exe = BinaryDir() / (bin == "caddie-controller" ? "controller" : "worker") / bin;
    const CommandResult help = RunCommand({exe.string(), "--help"});
    ASSERT_EQ(help.exit_code, 0) << help.output;
    const std::set<std::string> accepted = FlagsIn(help.output);
    for (const std::string& f : flags) {
      const std::string flag = f.substr(0, f.find(' '));
      EXPECT_TRUE(accepted.count(flag)) << bin << " does not accept " << f;
    }
  }
  EXPECT_EQ(used.size(), 2u);
}

}  // namespace
}  // namespace caddie::obs_test
