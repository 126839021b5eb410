// Validates the deployment and dashboard files with their real consumers'
// parsers: promtool (Prometheus config, rules, rule unit tests), yaml-cpp
// (docker-compose, Kubernetes, Grafana provisioning) with structural
// assertions, systemd-analyze verify (systemd units), bash -n (Slurm), and
// cross-checks that names and ports agree between the files and with
// common/metric_names.h.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "common/metric_names.h"
#include "tests/observability/obs_test_util.h"

namespace caddie::obs_test {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

fs::path Deploy() { return SourceDir() / "deploy"; }
fs::path Dashboards() { return SourceDir() / "dashboards"; }

// ---------------------------------------------------------------- Prometheus

TEST(PrometheusConfigTest, PromtoolCheckConfigPasses) {
  const CommandResult r =
      RunCommand({"promtool", "check", "config", (Deploy() / "prometheus/prometheus.yml").string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("is valid prometheus config file syntax"));
  EXPECT_THAT(r.output, HasSubstr("SUCCESS: 1 rule files found"));
}

TEST(PrometheusConfigTest, ScrapesControllerAndWorkersUnderTheAlertedJobNames) {
  const YAML::Node cfg = YAML::LoadFile((Deploy() / "prometheus/prometheus.yml").string());
  std::map<std::string, YAML::Node> jobs;
  for (const YAML::Node& sc : cfg["scrape_configs"]) jobs[sc["job_name"].as<std::string>()] = sc;
  ASSERT_EQ(jobs.count("caddie-controller"), 1u);
  ASSERT_EQ(jobs.count("caddie-worker"), 1u);
  EXPECT_EQ(jobs["caddie-controller"]["static_configs"][0]["targets"][0].as<std::string>(),
            "controller:9464");
  EXPECT_TRUE(jobs["caddie-worker"]["file_sd_configs"].IsSequence());
  // The file_sd file shipped for workers parses as a (possibly empty) target list.
  const YAML::Node workers = YAML::LoadFile((Deploy() / "prometheus/workers.d/workers.yml").string());
  EXPECT_TRUE(workers.IsSequence());
  // Alert rules refer to these job names.
  const std::string rules = ReadFile(Deploy() / "prometheus/alerts.yml");
  EXPECT_THAT(rules, HasSubstr("up{job=\"caddie-controller\"}"));
  EXPECT_THAT(rules, HasSubstr("up{job=\"caddie-worker\"}"));
}

TEST(PrometheusConfigTest, PromtoolCheckRulesPasses) {
  const CommandResult r =
      RunCommand({"promtool", "check", "rules", (Deploy() / "prometheus/alerts.yml").string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("SUCCESS: 7 rules found"));
}

TEST(PrometheusConfigTest, AlertRulesCoverTheRequiredConditions) {
  const YAML::Node rules = YAML::LoadFile((Deploy() / "prometheus/alerts.yml").string());
  std::set<std::string> alerts;
  for (const auto& g : rules["groups"]) {
    for (const auto& r : g["rules"]) {
      const std::string name = r["alert"].as<std::string>();
      alerts.insert(name);
      EXPECT_TRUE(r["labels"]["severity"].IsDefined()) << name;
      EXPECT_TRUE(r["annotations"]["summary"].IsDefined()) << name;
    }
  }
  for (const char* want : {"CaddieControllerDown", "CaddieQueueStuck", "CaddieWorkerHeartbeatLost",
                           "CaddieJobFailureRate", "CaddieWorkerDrained"}) {
    EXPECT_THAT(alerts, Contains(want));
  }
}

// The firing logic (thresholds, `for`, joins) on synthetic series.
TEST(PrometheusConfigTest, PromtoolRuleUnitTestsPass) {
  const CommandResult r = RunCommand(
      {"promtool", "test", "rules",
       (SourceDir() / "tests/observability/alerts_test.yml").string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("SUCCESS"));
}

// The unit tests cover every rule both ways: each alert of alerts.yml has a
// case where it fires (with its labels) and one where it must stay silent, so
// a rule added without tests, or tested only on the happy path, fails here.
TEST(PrometheusConfigTest, RuleUnitTestsProveEveryAlertFiresAndStaysSilent) {
  const YAML::Node rules = YAML::LoadFile((Deploy() / "prometheus/alerts.yml").string());
  const YAML::Node tests =
      YAML::LoadFile((SourceDir() / "tests/observability/alerts_test.yml").string());
  std::map<std::string, int> fires, silent;
  for (const auto& t : tests["tests"]) {
    for (const auto& a : t["alert_rule_test"]) {
      const std::string name = a["alertname"].as<std::string>();
      const YAML::Node exp = a["exp_alerts"];
      if (exp.size() == 0) {
        ++silent[name];
        continue;
      }
      ++fires[name];
      for (const auto& e : exp) EXPECT_TRUE(e["exp_labels"]["severity"].IsDefined()) << name;
    }
  }
  int n = 0;
  for (const auto& g : rules["groups"]) {
    for (const auto& r : g["rules"]) {
      const std::string name = r["alert"].as<std::string>();
      ++n;
      EXPECT_GE(fires[name], 1) << name << " has no alerts_test.yml case where it fires";
      EXPECT_GE(silent[name], 1) << name << " has no alerts_test.yml case where it stays silent";
    }
  }
  EXPECT_EQ(n, 7);
}

// promtool is a real check: a rule with a PromQL syntax error fails.
TEST(PrometheusConfigTest, PromtoolRejectsABrokenRule) {
  TempDir dir;
  WriteFile(dir.path() / "bad.yml",
            "groups:\n- name: x\n  rules:\n  - alert: Bad\n    expr: sum(caddie_jobs\n");
  const CommandResult r = RunCommand({"promtool", "check", "rules", (dir.path() / "bad.yml").string()});
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("parse error"));
}

// Every metric a rule reads is one caddie exports.
TEST(PrometheusConfigTest, RulesReadOnlyKnownMetrics) {
  std::set<std::string> known = {"up"};
  for (const auto* d : metric_names::kControllerMetrics) known.insert(std::string(d->name));
  for (const auto* d : metric_names::kWorkerMetrics) known.insert(std::string(d->name));
  const YAML::Node rules = YAML::LoadFile((Deploy() / "prometheus/alerts.yml").string());
  for (const auto& g : rules["groups"]) {
    for (const auto& r : g["rules"]) {
      const std::string expr = r["expr"].as<std::string>();
      const auto sels = MetricSelectors(expr);
      EXPECT_FALSE(sels.empty()) << expr;
      for (std::string sel : sels) {
        std::string name = sel.substr(0, sel.find('{'));
        for (const char* suffix : {"_bucket", "_count", "_sum"}) {
          if (!known.count(name) && absl::EndsWith(name, suffix)) {
            name = name.substr(0, name.size() - std::string(suffix).size());
          }
        }
        EXPECT_TRUE(known.count(name)) << name << " in " << expr;
      }
    }
  }
}

// ---------------------------------------------------------------- dashboards

std::vector<std::pair<std::string, std::string>> DashboardExprs(const nlohmann::json& dash) {
  std::vector<std::pair<std::string, std::string>> out;  // (panel title, expr)
  for (const auto& p : dash.at("panels")) {
    for (const auto& t : p.value("targets", nlohmann::json::array())) {
      out.emplace_back(p.at("title").get<std::string>(), t.at("expr").get<std::string>());
    }
  }
  return out;
}

TEST(DashboardTest, DashboardsParseAndEveryPanelHasAQuery) {
  for (const char* f : {"caddie-sweep.json", "caddie-fleet.json"}) {
    SCOPED_TRACE(f);
    const nlohmann::json d = nlohmann::json::parse(ReadFile(Dashboards() / f));
    EXPECT_FALSE(d.at("uid").get<std::string>().empty());
    ASSERT_FALSE(d.at("panels").empty());
    std::set<int> ids;
    for (const auto& p : d.at("panels")) {
      EXPECT_TRUE(ids.insert(p.at("id").get<int>()).second) << "duplicate panel id";
      ASSERT_FALSE(p.value("targets", nlohmann::json::array()).empty()) << p.at("title");
      EXPECT_EQ(p.at("datasource").at("uid"), "${datasource}") << p.at("title");
      const auto& g = p.at("gridPos");
      EXPECT_LE(g.at("x").get<int>() + g.at("w").get<int>(), 24) << p.at("title");
    }
    bool has_ds_var = false;
    for (const auto& v : d.at("templating").at("list")) {
      if (v.at("name") == "datasource" && v.at("type") == "datasource") has_ds_var = true;
    }
    EXPECT_TRUE(has_ds_var);
  }
}

// Every metric caddie exports is shown somewhere, and every panel reads only
// metrics caddie exports (a typo would be a silent "No data").
TEST(DashboardTest, DashboardsCoverEveryMetricAndOnlyKnownOnes) {
  std::set<std::string> known = {"up"};
  for (const auto* d : metric_names::kControllerMetrics) known.insert(std::string(d->name));
  for (const auto* d : metric_names::kWorkerMetrics) known.insert(std::string(d->name));
  std::set<std::string> used;
  for (const char* f : {"caddie-sweep.json", "caddie-fleet.json"}) {
    const nlohmann::json d = nlohmann::json::parse(ReadFile(Dashboards() / f));
    for (const auto& [title, expr] : DashboardExprs(d)) {
      for (const std::string& sel : MetricSelectors(expr)) {
        std::string name = sel.substr(0, sel.find('{'));
        for (const char* suffix : {"_bucket", "_count", "_sum"}) {
          if (!known.count(name) && absl::EndsWith(name, suffix)) {
            name = name.substr(0, name.size() - std::string(suffix).size());
          }
        }
        EXPECT_TRUE(known.count(name)) << name << " in panel " << title;
        used.insert(name);
      }
    }
  }
  for (const std::string& name : known) EXPECT_TRUE(used.count(name)) << name << " is on no panel";
}

// Every panel query is valid PromQL, checked offline by Prometheus's own
// parser: each becomes a recording rule for `promtool check rules`.
TEST(DashboardTest, EveryPanelQueryParsesAsPromQL) {
  TempDir dir;
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "groups" << YAML::Value << YAML::BeginSeq << YAML::BeginMap
      << YAML::Key << "name" << YAML::Value << "dashboards" << YAML::Key << "rules" << YAML::Value
      << YAML::BeginSeq;
  int n = 0;
  for (const char* f : {"caddie-sweep.json", "caddie-fleet.json"}) {
    const nlohmann::json d = nlohmann::json::parse(ReadFile(Dashboards() / f));
    for (const auto& [title, expr] : DashboardExprs(d)) {
      // Grafana's variables as Grafana would expand them.
      const std::string q = absl::StrReplaceAll(
          expr, {{"$__rate_interval", "1m"}, {"$__interval", "15s"}, {"$sweep", ".*"}});
      EXPECT_EQ(q.find('$'), std::string::npos) << "unexpanded variable in " << title;
      out << YAML::BeginMap << YAML::Key << "record" << YAML::Value
          << "caddie:dashboard_query_" + std::to_string(n++) << YAML::Key << "expr"
          << YAML::Value << q << YAML::EndMap;
    }
  }
  out << YAML::EndSeq << YAML::EndMap << YAML::EndSeq << YAML::EndMap;
  WriteFile(dir.path() / "dash.yml", out.c_str());
  const CommandResult r =
      RunCommand({"promtool", "check", "rules", (dir.path() / "dash.yml").string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("SUCCESS: " + std::to_string(n) + " rules found"));
  EXPECT_GE(n, 30);
}

TEST(DashboardTest, ProvisioningFilesMatchComposeMounts) {
  const YAML::Node ds =
      YAML::LoadFile((Dashboards() / "provisioning/datasources/caddie.yml").string());
  ASSERT_EQ(ds["datasources"].size(), 1u);
  EXPECT_EQ(ds["datasources"][0]["type"].as<std::string>(), "prometheus");
  EXPECT_EQ(ds["datasources"][0]["uid"].as<std::string>(), "prometheus");
  EXPECT_EQ(ds["datasources"][0]["url"].as<std::string>(), "http://prometheus:9090");
  const YAML::Node prov =
      YAML::LoadFile((Dashboards() / "provisioning/dashboards/caddie.yml").string());
  const std::string path = prov["providers"][0]["options"]["path"].as<std::string>();
  EXPECT_EQ(prov["providers"][0]["type"].as<std::string>(), "file");

  const YAML::Node compose = YAML::LoadFile((Deploy() / "docker-compose.yml").string());
  std::vector<std::string> vols;
  for (const auto& v : compose["services"]["grafana"]["volumes"]) vols.push_back(v.as<std::string>());
  EXPECT_THAT(vols, Contains("../dashboards:" + path + ":ro"));
  EXPECT_THAT(vols, Contains("../dashboards/provisioning:/etc/grafana/provisioning:ro"));
  // The datasource default in the dashboards is the provisioned uid.
  const nlohmann::json d = nlohmann::json::parse(ReadFile(Dashboards() / "caddie-sweep.json"));
  EXPECT_EQ(d.at("templating").at("list").at(0).at("current").at("value"), "prometheus");
}

// ---------------------------------------------------------------- compose

TEST(ComposeTest, ControllerPrometheusGrafanaWired) {
  const YAML::Node c = YAML::LoadFile((Deploy() / "docker-compose.yml").string());
  const YAML::Node s = c["services"];
  ASSERT_TRUE(s.IsMap());
  for (const char* svc : {"controller", "prometheus", "grafana"}) {
    EXPECT_TRUE(s[svc].IsMap()) << svc;
    EXPECT_TRUE(s[svc]["image"].IsDefined()) << svc;
  }
  // The controller serves /metrics where prometheus.yml scrapes it.
  std::vector<std::string> cmd;
  for (const auto& a : s["controller"]["command"]) cmd.push_back(a.as<std::string>());
  EXPECT_THAT(cmd, Contains("--http-listen=0.0.0.0:9464"));
  std::vector<std::string> ports;
  for (const auto& p : s["controller"]["ports"]) ports.push_back(p.as<std::string>());
  EXPECT_THAT(ports, Contains("9464:9464"));
  EXPECT_THAT(ports, Contains("7070:7070"));
  EXPECT_EQ(s["controller"]["build"]["dockerfile"].as<std::string>(), "deploy/Dockerfile");
  EXPECT_TRUE(fs::exists(Deploy() / "Dockerfile"));
  // SQLite lives on a named volume at the --db directory.
  std::string db;
  for (const auto& a : cmd) {
    if (absl::StartsWith(a, "--db=")) db = a.substr(5);
  }
  ASSERT_FALSE(db.empty());
  bool db_on_volume = false;
  for (const auto& v : s["controller"]["volumes"]) {
    const std::string spec = v.as<std::string>();
    const std::string target = spec.substr(spec.find(':') + 1);
    if (absl::StartsWith(db, target + "/")) db_on_volume = true;
  }
  EXPECT_TRUE(db_on_volume) << db;
  // Prometheus reads deploy/prometheus (config + rules) and every named volume
  // and secret used is declared at the top level.
  std::vector<std::string> pvols;
  for (const auto& v : s["prometheus"]["volumes"]) pvols.push_back(v.as<std::string>());
  EXPECT_THAT(pvols, Contains("./prometheus:/etc/prometheus:ro"));
  for (const auto& svc : s) {
    for (const auto& v : svc.second["volumes"]) {
      const std::string src = v.as<std::string>().substr(0, v.as<std::string>().find(':'));
      if (src[0] != '.' && src[0] != '/') {
        EXPECT_TRUE(c["volumes"][src].IsDefined()) << "volume " << src << " undeclared";
      }
    }
    for (const auto& sec : svc.second["secrets"]) {
      EXPECT_TRUE(c["secrets"][sec.as<std::string>()].IsDefined()) << sec.as<std::string>();
    }
    for (const auto& dep : svc.second["depends_on"]) {
      EXPECT_TRUE(s[dep.as<std::string>()].IsDefined()) << dep.as<std::string>();
    }
  }
}

// ---------------------------------------------------------------- Kubernetes

std::vector<YAML::Node> K8sDocs() {
  return YAML::LoadAllFromFile((Deploy() / "kubernetes/caddie.yaml").string());
}

YAML::Node FindKind(const std::vector<YAML::Node>& docs, const std::string& kind) {
  for (const auto& d : docs) {
    if (d["kind"].as<std::string>() == kind) return d;
  }
  return YAML::Node();
}

TEST(KubernetesTest, EveryDocumentIsAnObjectWithApiVersionKindName) {
  const auto docs = K8sDocs();
  ASSERT_GE(docs.size(), 4u);
  for (const auto& d : docs) {
    EXPECT_TRUE(d["apiVersion"].IsScalar());
    EXPECT_TRUE(d["kind"].IsScalar());
    EXPECT_TRUE(d["metadata"]["name"].IsScalar());
  }
}

TEST(KubernetesTest, ControllerStatefulSetKeepsSqliteOnAClaim) {
  const auto docs = K8sDocs();
  const YAML::Node ss = FindKind(docs, "StatefulSet");
  ASSERT_TRUE(ss.IsDefined());
  EXPECT_EQ(ss["apiVersion"].as<std::string>(), "apps/v1");
  EXPECT_EQ(ss["spec"]["replicas"].as<int>(), 1);  // one SQLite writer
  const YAML::Node tmpl = ss["spec"]["template"];
  // Selector matches the pod labels; the Service selects the same pods.
  EXPECT_EQ(ss["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(),
            tmpl["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>());
  const YAML::Node svc = FindKind(docs, "Service");
  ASSERT_TRUE(svc.IsDefined());
  EXPECT_EQ(svc["spec"]["selector"]["app.kubernetes.io/name"].as<std::string>(),
            tmpl["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>());
  EXPECT_EQ(ss["spec"]["serviceName"].as<std::string>(), svc["metadata"]["name"].as<std::string>());

  const YAML::Node claim = ss["spec"]["volumeClaimTemplates"][0];
  ASSERT_TRUE(claim.IsDefined());
  const std::string claim_name = claim["metadata"]["name"].as<std::string>();
  EXPECT_EQ(claim["spec"]["accessModes"][0].as<std::string>(), "ReadWriteOnce");
  EXPECT_TRUE(claim["spec"]["resources"]["requests"]["storage"].IsScalar());

  const YAML::Node c = tmpl["spec"]["containers"][0];
  std::string db, http;
  for (const auto& a : c["args"]) {
    const std::string s = a.as<std::string>();
    if (absl::StartsWith(s, "--db=")) db = s.substr(5);
    if (absl::StartsWith(s, "--http-listen=")) http = s.substr(14);
  }
  bool db_on_claim = false;
  for (const auto& m : c["volumeMounts"]) {
    if (m["name"].as<std::string>() == claim_name &&
        absl::StartsWith(db, m["mountPath"].as<std::string>() + "/")) {
      db_on_claim = true;
    }
  }
  EXPECT_TRUE(db_on_claim) << "--db=" << db << " is not on the claim " << claim_name;
  // Probes hit /healthz on the named port that --http-listen binds; Prometheus
  // annotations point at the same port.
  std::map<std::string, int> ports;
  for (const auto& p : c["ports"]) ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
  EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  const std::string probe_port = c["readinessProbe"]["httpGet"]["port"].as<std::string>();
  ASSERT_EQ(ports.count(probe_port), 1u);
  EXPECT_EQ(http, "0.0.0.0:" + std::to_string(ports[probe_port]));
  EXPECT_EQ(tmpl["metadata"]["annotations"]["prometheus.io/port"].as<std::string>(),
            std::to_string(ports[probe_port]));
  // Every volume mount refers to a declared volume or claim.
  std::set<std::string> volumes = {claim_name};
  for (const auto& v : tmpl["spec"]["volumes"]) volumes.insert(v["name"].as<std::string>());
  for (const auto& m : c["volumeMounts"]) EXPECT_TRUE(volumes.count(m["name"].as<std::string>()));
}

TEST(KubernetesTest, WorkerDaemonSetRunsOnGpuNodesWithGpus) {
  const auto docs = K8sDocs();
  const YAML::Node ds = FindKind(docs, "DaemonSet");
  ASSERT_TRUE(ds.IsDefined());
  EXPECT_EQ(ds["apiVersion"].as<std::string>(), "apps/v1");
  const YAML::Node spec = ds["spec"]["template"]["spec"];
  EXPECT_EQ(spec["nodeSelector"]["nvidia.com/gpu.present"].as<std::string>(), "true");
  const YAML::Node c = spec["containers"][0];
  EXPECT_GE(c["resources"]["limits"]["nvidia.com/gpu"].as<int>(), 1);
  bool tolerates_gpu_taint = false;
  for (const auto& t : spec["tolerations"]) {
    if (t["key"].as<std::string>() == "nvidia.com/gpu") tolerates_gpu_taint = true;
  }
  EXPECT_TRUE(tolerates_gpu_taint);
  // The worker dials the controller's Service by its cluster DNS name and port.
  const YAML::Node svc = FindKind(docs, "Service");
  const std::string want = "--controller=" + svc["metadata"]["name"].as<std::string>() + "." +
                           svc["metadata"]["namespace"].as<std::string>() + ".svc:" +
                           std::to_string(svc["spec"]["ports"][0]["port"].as<int>());
  std::vector<std::string> args;
  for (const auto& a : c["args"]) args.push_back(a.as<std::string>());
  EXPECT_THAT(args, Contains(want));
  std::set<std::string> volumes;
  for (const auto& v : spec["volumes"]) volumes.insert(v["name"].as<std::string>());
  for (const auto& m : c["volumeMounts"]) EXPECT_TRUE(volumes.count(m["name"].as<std::string>()));
  EXPECT_EQ(ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(),
            ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>());
}

// ---------------------------------------------------------------- systemd

using IniSections = std::map<std::string, std::multimap<std::string, std::string>>;

// A unit-file parser (sections, key=value, comments, continuation lines).
IniSections ParseUnit(const std::string& text) {
  IniSections out;
  std::string section, pending;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!pending.empty()) line = pending + line, pending.clear();
    if (!line.empty() && line.back() == '\\') {
      pending = line.substr(0, line.size() - 1) + " ";
      continue;
    }
    const std::string t(absl::StripAsciiWhitespace(line));
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t.front() == '[' && t.back() == ']') {
      section = t.substr(1, t.size() - 2);
      out[section];
      continue;
    }
    const size_t eq = t.find('=');
    if (eq == std::string::npos || section.empty()) continue;
    out[section].emplace(std::string(absl::StripAsciiWhitespace(t.substr(0, eq))),
                         std::string(absl::StripAsciiWhitespace(t.substr(eq + 1))));
  }
  return out;
}

std::string One(const IniSections& u, const std::string& s, const std::string& k) {
  auto it = u.find(s);
  if (it == u.end()) return "";
  auto kv = it->second.find(k);
  return kv == it->second.end() ? "" : kv->second;
}

TEST(SystemdTest, UnitsHaveTheSectionsAndKeysADaemonNeeds) {
  for (const char* name : {"caddie-controller", "caddie-worker"}) {
    SCOPED_TRACE(name);
    const IniSections u = ParseUnit(ReadFile(Deploy() / "systemd" / (std::string(name) + ".service")));
    EXPECT_EQ(u.size(), 3u);
    EXPECT_FALSE(One(u, "Unit", "Description").empty());
    EXPECT_EQ(One(u, "Service", "Type"), "simple");
    EXPECT_THAT(One(u, "Service", "ExecStart"),
                AllOf(HasSubstr(std::string("/usr/local/bin/") + name + " "),
                      HasSubstr("--http-listen ")));
    EXPECT_EQ(One(u, "Service", "Restart"), "on-failure");
    EXPECT_EQ(One(u, "Service", "User"), "caddie");
    EXPECT_FALSE(One(u, "Service", "StateDirectory").empty());
    EXPECT_EQ(One(u, "Install", "WantedBy"), "multi-user.target");
  }
  const IniSections c = ParseUnit(ReadFile(Deploy() / "systemd/caddie-controller.service"));
  EXPECT_THAT(One(c, "Service", "ExecStart"), HasSubstr("--db /var/lib/caddie/"));
  EXPECT_EQ(One(c, "Service", "StateDirectory"), "caddie");
}

// systemd's own parser. `verify` insists the ExecStart binary exists, so the
// units are verified as copies whose binaries point at stand-in executables;
// everything else is the file as shipped.
TEST(SystemdTest, SystemdAnalyzeVerifyAcceptsTheUnits) {
  TempDir dir;
  const fs::path bin = dir.path() / "bin";
  fs::create_directories(bin);
  for (const char* name : {"caddie-controller", "caddie-worker"}) {
    SCOPED_TRACE(name);
    const fs::path exe = bin / name;
    WriteFile(exe, "#!/bin/sh\nexit 0\n");
    fs::permissions(exe, fs::perms::owner_all);
    std::string text = ReadFile(Deploy() / "systemd" / (std::string(name) + ".service"));
    const std::string from = std::string("/usr/local/bin/") + name;
    const size_t at = text.find("ExecStart=" + from);
    ASSERT_NE(at, std::string::npos);
    text.replace(at + 10, from.size(), exe.string());
    const fs::path unit = dir.path() / (std::string(name) + ".service");
    WriteFile(unit, text);
    const CommandResult r = RunCommand({"systemd-analyze", "verify", unit.string()});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, Not(HasSubstr("Unknown")));
    EXPECT_THAT(r.output, Not(HasSubstr("ignoring")));
  }
  // The check is real: a misspelt key is reported and a unit without
  // ExecStart is refused.
  const fs::path bad = dir.path() / "caddie-bad.service";
  WriteFile(bad, "[Unit]\nDescription=x\n[Service]\nExecStrat=/bin/true\n");
  const CommandResult r = RunCommand({"systemd-analyze", "verify", bad.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("Unknown key 'ExecStrat'"));
}

// ---------------------------------------------------------------- Slurm

TEST(SlurmTest, BatchScriptIsValidBashAndStartsOneWorkerPerNode) {
  const fs::path script = Deploy() / "slurm/caddie-workers.sbatch";
  const CommandResult r = RunCommand({"bash", "-n", script.string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string text = ReadFile(script);
  EXPECT_TRUE(absl::StartsWith(text, "#!/bin/bash\n"));
  EXPECT_THAT(text, HasSubstr("#SBATCH --ntasks-per-node=1\n"));
  EXPECT_THAT(text, HasSubstr("#SBATCH --gpus-per-node="));
  // srun starts exactly one task per allocated node, and that task is the worker.
  const size_t srun = text.find("\nsrun ");
  ASSERT_NE(srun, std::string::npos);
  const std::string tail = text.substr(srun);
  EXPECT_THAT(tail, HasSubstr("--ntasks=\"$SLURM_JOB_NUM_NODES\" --ntasks-per-node=1"));
  EXPECT_THAT(tail, HasSubstr("caddie-worker\""));
  EXPECT_THAT(tail, HasSubstr("--http-listen"));
  // Without a controller address it stops at once with a message.
  const CommandResult no_ctl = RunCommand({"env", "-u", "CADDIE_CONTROLLER", "bash", script.string()});
  EXPECT_NE(no_ctl.exit_code, 0);
  EXPECT_THAT(no_ctl.output, HasSubstr("set CADDIE_CONTROLLER"));
}

}  // namespace
}  // namespace caddie::obs_test
