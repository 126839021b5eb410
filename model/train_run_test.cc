// End-to-end tests of caddie-train as real processes on the real-corpus test data:
// learning, data parallel over gloo, determinism, warm-up restore, budgets, SIGTERM
// and bad specs. Needs CADDIE_BINARY_DIR (caddie-train) and CADDIE_TESTDATA.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/core/shard_format.h"
#include "common/core/train_spec.h"
#include "model/gpt.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::HasSubstr;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  EXPECT_NE(v, nullptr) << name << " is not set";
  return v ? v : "";
}

std::string TrainerPath() { return Env("CADDIE_BINARY_DIR") + "/model/caddie-train"; }
std::string Data() { return Env("CADDIE_TESTDATA") + "/sp1024"; }

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A tiny model on the real corpus: 2 layers x 64, 4/2 heads, 2,048 tokens a step.
json TinySpec() {
  return {{"data", Data()},         {"num_layers", 2},          {"model_dim", 64},
          {"num_heads", 4},         {"num_kv_heads", 2},        {"seq_len", 64},
          {"train_batch_tokens", 2048}, {"grad_accum_steps", 1}, {"iterations", 12},
          {"warmup_steps", 0},      {"warmdown_iters", 0},      {"val_every", 0},
          {"log_every", 1},         {"val_batch_tokens", 16384}, {"val_max_tokens", 16384},
          {"max_wallclock_seconds", 0}};
}

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "caddie-train-test-XXXXXX").string();
    path_ = ::mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct Proc {
  pid_t pid = -1;
  fs::path out, err;
};

// Starts caddie-train with `args`, extra environment `env`, stdout/stderr to files in `dir`.
Proc Start(const fs::path& dir, const std::string& tag, const std::vector<std::string>& args,
           const std::map<std::string, std::string>& env = {}) {
  Proc p{-1, dir / (tag + ".out"), dir / (tag + ".err")};
  p.pid = ::fork();
  if (p.pid == 0) {
    int out = ::open(p.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(p.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    ::setenv("OMP_NUM_THREADS", "1", 1);
    std::vector<std::string> all = {TrainerPath()};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return p;
}

int Wait(const Proc& p) {
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<json> Events(const fs::path& out) {
  std::vector<json> ev;
  std::istringstream in(ReadFile(out));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) ev.push_back(json::parse(line));
  }
  return ev;
}

struct RunResult {
  int code;
  std::vector<json> events;
  std::string err;
  fs::path run_dir;
  json Last(const std::string& type) const {
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      if ((*it)["event"] == type) return *it;
    }
    return json();
  }
  std::vector<double> Losses() const {
    std::vector<double> l;
    for (const auto& e : events) {
      if (e["event"] == "step") l.push_back(e["train_loss"].get<double>());
    }
    return l;
  }
};

// One run of `spec` with run directory tmp/tag: StartRun, then FinishRun (so that two runs
// can share the machine's two cores), or TrainOnce for both.
Proc StartRun(const TempDir& tmp, const std::string& tag, const json& spec) {
  const fs::path spec_path = tmp.path() / (tag + ".json");
  std::ofstream(spec_path) << spec.dump();
  return Start(tmp.path(), tag, {"--spec", spec_path.string(), "--run-dir", (tmp.path() / tag).string()});
}

RunResult FinishRun(const TempDir& tmp, const std::string& tag, const Proc& p) {
  int code = Wait(p);
  return RunResult{code, Events(p.out), ReadFile(p.err), tmp.path() / tag};
}

RunResult TrainOnce(const TempDir& tmp, const std::string& tag, const json& spec) {
  return FinishRun(tmp, tag, StartRun(tmp, tag, spec));
}

// The events of a run still going: complete lines only (the last may be half written).
std::vector<json> EventsSoFar(const fs::path& out) {
  std::vector<json> ev;
  std::istringstream in(ReadFile(out));
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) ev.push_back(std::move(j));
  }
  return ev;
}

std::vector<json> OfType(const std::vector<json>& events, const std::string& type) {
  std::vector<json> out;
  for (const auto& e : events) {
    if (e["event"] == type) out.push_back(e);
  }
  return out;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::map<std::string, torch::Tensor> LoadModel(const fs::path& run_dir, const std::vector<std::string>& names) {
  torch::serialize::InputArchive ar;
  ar.load_from((run_dir / "final_model.pt").string());
  std::map<std::string, torch::Tensor> out;
  for (const auto& n : names) ar.read(n, out[n]);
  return out;
}

const std::vector<std::string> kTinyNames = {
    "tok_emb.weight", "skip_weights", "blocks.0.attn.c_q.weight", "blocks.0.attn.q_gain",
    "blocks.1.mlp.fc.weight", "blocks.1.mlp.proj.weight", "blocks.1.resid_mix"};

// Uniform prediction: log2(V) bits per token, times tokens per byte of the val split.
double UniformBpb(int64_t max_tokens) {
  auto table = caddie::ReadByteTable(Data() + "/byte_table.json");
  auto shards = caddie::ListShards(Data(), "val");
  EXPECT_TRUE(table.ok() && shards.ok());
  std::vector<uint16_t> v;
  for (const auto& s : *shards) {
    auto t = caddie::ReadShard(s);
    v.insert(v.end(), t->begin(), t->end());
  }
  const int64_t n = std::min<int64_t>(max_tokens, static_cast<int64_t>(v.size()) - 1);
  double bytes = 0;
  for (int64_t i = 0; i < n; ++i) bytes += table->TokenBytes(v[i], v[i + 1]);
  return std::log2(1024.0) * n / bytes;
}

TEST(TrainRunTest, TwoHundredStepsLearnTheRealCorpus) {
  TempDir tmp;
  json spec = TinySpec();
  spec["iterations"] = 200;
  spec["log_every"] = 50;
  spec["val_every"] = 100;
  spec["warmdown_iters"] = 100;  // no wall-clock budget: lr decays linearly over steps 100..200
  RunResult r = TrainOnce(tmp, "learn", spec);
  ASSERT_EQ(r.code, 0) << r.err;
  const json start = r.events.front();
  EXPECT_EQ(start["event"], "start");
  EXPECT_EQ(start["world_size"], 1);
  EXPECT_EQ(start["device"], "cpu");
  EXPECT_EQ(start["spec"]["model_dim"], 64);
  const json fin = r.Last("final");
  ASSERT_FALSE(fin.is_null());
  EXPECT_EQ(fin["exit_reason"], "completed");
  EXPECT_EQ(fin["steps"], 200);
  const double uniform = UniformBpb(16384 - 16384 % 64);
  const double bpb = fin["val_bpb"].get<double>();
  EXPECT_LT(bpb, 0.75 * uniform) << "uniform " << uniform;
  // The artifact round trip (int8 + zstd) barely moves it; every final field is there.
  EXPECT_NEAR(fin["val_bpb_post_quant"].get<double>(), bpb, 0.02);
  EXPECT_GT(fin["artifact_bytes"].get<int64_t>(), fin["model_bytes"].get<int64_t>());
  EXPECT_EQ(fin["artifact_bytes"].get<int64_t>(),
            fin["model_bytes"].get<int64_t>() + fin["code_bytes"].get<int64_t>());
  EXPECT_EQ(fin["limit_bytes"], 16000000);
  EXPECT_EQ(fin["within_budget"], true);
  EXPECT_EQ(fin["params"], start["params"]);
  EXPECT_TRUE(fs::exists(fin["artifact_path"].get<std::string>()));
  for (const char* k : {"train_time_s", "val_loss", "quant_gap", "tokens_per_s", "peak_mem_bytes"}) {
    EXPECT_TRUE(fin.contains(k)) << k;
  }
  // val events at steps 0, 100, 200, falling.
  std::vector<double> vals;
  for (const auto& e : r.events) {
    if (e["event"] == "val") vals.push_back(e["val_bpb"].get<double>());
  }
  ASSERT_EQ(vals.size(), 3u);
  EXPECT_GT(vals[0], 0.9 * uniform);
  EXPECT_LT(vals[2], vals[1]);
  const json step = r.Last("step");
  for (const char* k : {"step", "train_loss", "lr_scale", "tokens_per_s", "step_ms", "train_time_s", "mem_bytes",
                        "lr_matrix", "lr_embed", "lr_scalar", "qat_bits"}) {
    EXPECT_TRUE(step.contains(k)) << k;
  }
  // The run directory has the log, the resolved spec, the model and the events.
  for (const char* f : {"train.log", "spec.json", "final_model.pt", "final_model.caddie", "events.jsonl"}) {
    EXPECT_TRUE(fs::exists(r.run_dir / f)) << f;
  }
}

// Two gloo ranks of `spec`; events from rank 0 (rank 1 must write none).
RunResult TrainTwoRanks(const TempDir& tmp, const std::string& tag, const json& spec,
                        const std::map<std::string, std::string>& env) {
  const fs::path spec_path = tmp.path() / (tag + ".json");
  std::ofstream(spec_path) << spec.dump();
  const std::string port = std::to_string(FreePort());
  std::vector<Proc> ranks;
  for (int r = 0; r < 2; ++r) {
    auto e = env;
    e.insert({{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", std::to_string(r)},
              {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}});
    ranks.push_back(Start(tmp.path(), tag + "-rank" + std::to_string(r),
                          {"--spec", spec_path.string(), "--run-dir", (tmp.path() / tag).string()}, e));
  }
  int code = 0;
  std::string err;
  for (auto& p : ranks) {
    if (int c = Wait(p); c != 0) code = c, err += ReadFile(p.err);
  }
  EXPECT_TRUE(Events(ranks[1].out).empty()) << "rank 1 wrote events";
  return RunResult{code, Events(ranks[0].out), err, tmp.path() / tag};
}

// 2 ranks x 1 micro-batch read the same token spans as 1 rank x 2 micro-batches
// (the reference's loader), so the averaged gradients and the weights must agree.
TEST(TrainRunTest, TwoGlooRanksMatchOneRankWithTwiceTheBatch) {
  TempDir tmp;
  json one = TinySpec();
  one["grad_accum_steps"] = 2;
  RunResult single = TrainOnce(tmp, "one", one);
  ASSERT_EQ(single.code, 0) << single.err;

  // Small buckets: the overlapped all-reduce launches several, in index order.
  RunResult dual = TrainTwoRanks(tmp, "two", TinySpec(), {{"CADDIE_GRAD_BUCKET_KB", "64"}});
  ASSERT_EQ(dual.code, 0) << dual.err;
  EXPECT_EQ(dual.Last("start")["world_size"], 2);

  auto a = single.Losses(), b = dual.Losses();
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4) << "step " << i + 1;
  EXPECT_NEAR(single.Last("final")["val_bpb"].get<double>(), dual.Last("final")["val_bpb"].get<double>(), 1e-4);
  auto wa = LoadModel(single.run_dir, kTinyNames), wb = LoadModel(dual.run_dir, kTinyNames);
  for (const auto& n : kTinyNames) {
    EXPECT_TRUE(torch::allclose(wa[n], wb[n], 1e-3, 1e-4))
        << n << " max diff " << (wa[n] - wb[n]).abs().max().item<float>();
  }
  // And training moved them (the comparison is not of two initial states).
  EXPECT_GT(wa["blocks.1.mlp.proj.weight"].abs().max().item<float>(), 1e-3);
}

// The all-reduce overlapped with backward (hooks on the last of 2 micro-batches, 8 KiB
// buckets, so ~20 of them) averages the same numbers as the one after backward: the
// weights are bit-identical. Looped blocks: each weight is used twice per forward.
TEST(TrainRunTest, OverlappedAllReduceEqualsAllReduceAfterBackward) {
  TempDir tmp;
  json spec = TinySpec();
  spec.update({{"grad_accum_steps", 2}, {"iterations", 6}, {"loops", 2}, {"loop_scalars", true},
               {"loop_embedding", true}});
  RunResult on = TrainTwoRanks(tmp, "on", spec, {{"CADDIE_GRAD_BUCKET_KB", "8"}});
  ASSERT_EQ(on.code, 0) << on.err;
  RunResult off = TrainTwoRanks(tmp, "off", spec, {{"CADDIE_PERF_OFF", "overlap"}});
  ASSERT_EQ(off.code, 0) << off.err;
  auto parsed = caddie::ParseTrainSpec(spec);
  ASSERT_TRUE(parsed.ok());
  caddie::model::Gpt shapes(*parsed);
  std::vector<std::string> names;
  for (const auto& kv : shapes->named_parameters()) names.push_back(kv.key());
  auto wa = LoadModel(on.run_dir, names), wb = LoadModel(off.run_dir, names);
  for (const auto& n : names) {
    EXPECT_TRUE(torch::equal(wa[n], wb[n])) << n << " max diff " << (wa[n] - wb[n]).abs().max().item<float>();
  }
  EXPECT_EQ(on.Losses(), off.Losses());
  // 6 steps: with overlap every bucket starts inside backward; without, none does.
  const std::string on_log = ReadFile(on.run_dir / "train.log"), off_log = ReadFile(off.run_dir / "train.log");
  const std::regex re("grad_allreduce buckets:(\\d+) overlap:(\\d) launched_in_backward:(\\d+) launched:(\\d+)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(on_log, m, re)) << on_log;
  EXPECT_GE(std::stoi(m[1]), 10);
  EXPECT_EQ(m[2], "1");
  EXPECT_EQ(std::stoi(m[3]), 6 * std::stoi(m[1]));
  EXPECT_EQ(std::stoi(m[4]), 6 * std::stoi(m[1]));
  ASSERT_TRUE(std::regex_search(off_log, m, re)) << off_log;
  EXPECT_EQ(m[2], "0");
  EXPECT_EQ(m[3], "0");
  EXPECT_GT(wa["blocks.1.mlp.proj.weight"].abs().max().item<float>(), 1e-3);
}

TEST(TrainRunTest, SameSeedSameCurveAndWarmupIsUndone) {
  TempDir tmp;
  RunResult a = TrainOnce(tmp, "a", TinySpec());
  RunResult b = TrainOnce(tmp, "b", TinySpec());
  json warm = TinySpec();
  warm["warmup_steps"] = 3;  // real steps, then weights, optimizers and loader are reset
  RunResult w = TrainOnce(tmp, "w", warm);
  json other = TinySpec();
  other["seed"] = 7;
  RunResult c = TrainOnce(tmp, "c", other);
  for (const RunResult* r : {&a, &b, &w, &c}) ASSERT_EQ(r->code, 0) << r->err;
  ASSERT_EQ(a.Losses().size(), 12u);
  EXPECT_EQ(a.Losses(), b.Losses());
  EXPECT_EQ(a.Losses(), w.Losses());
  EXPECT_NE(a.Losses(), c.Losses());
}

TEST(TrainRunTest, TimeBudgetStopsTraining) {
  TempDir tmp;
  json spec = TinySpec();
  spec["iterations"] = 1000000;
  spec["max_wallclock_seconds"] = 1.5;
  spec["log_every"] = 0;
  spec["warmdown_iters"] = 10;
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r = TrainOnce(tmp, "budget", spec);
  ASSERT_EQ(r.code, 0) << r.err;
  const json fin = r.Last("final");
  EXPECT_EQ(fin["exit_reason"], "time_budget");
  EXPECT_GE(fin["train_time_s"].get<double>(), 1.5);
  EXPECT_LT(fin["train_time_s"].get<double>(), 4.0);
  EXPECT_GT(fin["steps"].get<int64_t>(), 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
}

// Warm-up steps run before the clock starts: a warm-up several times longer than the budget
// still leaves the whole budget to training, and train_time_s is the budget, not more.
TEST(TrainRunTest, WarmupIsNotOnTheTrainingClock) {
  TempDir tmp;
  json spec = TinySpec();
  spec.update({{"iterations", 1000000}, {"warmup_steps", 20}, {"max_wallclock_seconds", 0.5}});
  RunResult r = TrainOnce(tmp, "warm", spec);
  ASSERT_EQ(r.code, 0) << r.err;
  const json start = r.Last("start"), fin = r.Last("final");
  const auto steps = OfType(r.events, "step");
  ASSERT_FALSE(steps.empty());
  ASSERT_EQ(steps.front()["step"], 1);
  // Between the start event and the end of step 1: the warm-up, then step 1.
  const double until_step1_s = steps.front()["time"].get<double>() - start["time"].get<double>();
  ASSERT_GT(until_step1_s, 2 * 0.5) << "the warm-up must outlast the budget for this test to mean anything";
  // Had warm-up counted, step 1 would already be past the budget and the run would stop there.
  EXPECT_LT(steps.front()["train_time_s"].get<double>(), 0.5);
  EXPECT_LT(steps.front()["step_ms"].get<double>(), 500.0);
  EXPECT_GE(fin["steps"].get<int64_t>(), 2);
  EXPECT_EQ(fin["exit_reason"], "time_budget");
  // train_time_s: the budget plus the step that crossed it (~0.1 s here; slack for a loaded
  // machine), well under the warm-up.
  const double train_s = fin["train_time_s"].get<double>();
  EXPECT_GE(train_s, 0.5);
  EXPECT_LT(train_s, 1.0);
  EXPECT_LT(train_s, until_step1_s);
  // Wall clock from start to final covers warm-up and the whole budget of training.
  EXPECT_GT(fin["time"].get<double>() - start["time"].get<double>(),
            until_step1_s + 0.5 - steps.front()["train_time_s"].get<double>());
}

// Step events: the learning rates in force (the spec's base rates times lr_scale, read back
// from the optimizers), QAT state, and step_ms / tokens_per_s over the interval since the
// previous step event.
TEST(TrainRunTest, StepEventsCarryLearningRatesAndIntervalTimes) {
  TempDir tmp;
  json tied = TinySpec();
  // No wall-clock budget: warmdown over steps 20..29, lr_scale = (30 - s) / 10 for step s
  // (0-based), reported in the event of step s + 1. Events at 1..10, 20 and 30.
  tied.update({{"iterations", 30}, {"warmdown_iters", 10}, {"log_every", 10}, {"matrix_lr", 0.03},
               {"tied_embed_lr", 0.07}, {"scalar_lr", 0.02}});
  json untied = tied;
  untied.update({{"tie_embeddings", false}, {"embed_lr", 0.5}, {"head_lr", 0.009}, {"iterations", 12},
                 {"warmdown_iters", 4}, {"log_every", 1}});
  Proc pt = StartRun(tmp, "tied", tied), pu = StartRun(tmp, "untied", untied);
  RunResult t = FinishRun(tmp, "tied", pt), u = FinishRun(tmp, "untied", pu);
  ASSERT_EQ(t.code, 0) << t.err;
  ASSERT_EQ(u.code, 0) << u.err;

  const auto steps = OfType(t.events, "step");
  std::vector<int64_t> at;
  for (const auto& e : steps) at.push_back(e["step"].get<int64_t>());
  EXPECT_EQ(at, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30}));
  int64_t prev_step = 0;
  double prev_s = 0;
  for (const auto& e : steps) {
    const int64_t k = e["step"].get<int64_t>();
    const double scale = e["lr_scale"].get<double>();
    const double expected = k - 1 >= 20 ? (30.0 - (k - 1)) / 10.0 : 1.0;
    EXPECT_NEAR(scale, expected, 1e-12) << "step " << k;
    EXPECT_NEAR(e["lr_matrix"].get<double>(), 0.03 * scale, 1e-12) << "step " << k;
    EXPECT_NEAR(e["lr_embed"].get<double>(), 0.07 * scale, 1e-12) << "step " << k;
    EXPECT_NEAR(e["lr_scalar"].get<double>(), 0.02 * scale, 1e-12) << "step " << k;
    EXPECT_FALSE(e.contains("lr_head")) << "tied embeddings have no head";
    EXPECT_EQ(e["qat_bits"], 0);
    // step_ms: the mean over the steps since the previous event, on the training clock.
    const double train_s = e["train_time_s"].get<double>();
    const double interval_ms = 1000.0 * (train_s - prev_s) / static_cast<double>(k - prev_step);
    EXPECT_NEAR(e["step_ms"].get<double>(), interval_ms, 1e-6 * interval_ms + 1e-6) << "step " << k;
    // tokens_per_s over the same interval: 2,048 tokens a step.
    EXPECT_NEAR(e["tokens_per_s"].get<double>() * e["step_ms"].get<double>() / 1000.0, 2048.0, 1e-6)
        << "step " << k;
    prev_step = k, prev_s = train_s;
  }
  // The last event (10 steps since the one before) is not the run's mean either: that one
  // is still there as 1000 * train_time_s / step.
  EXPECT_NE(steps.back()["step_ms"].get<double>(), 1000.0 * steps.back()["train_time_s"].get<double>() / 30.0);

  // Untied: embedding and head have their own rates; warmdown over steps 8..11.
  const auto usteps = OfType(u.events, "step");
  ASSERT_EQ(usteps.size(), 12u);
  for (const auto& e : usteps) {
    const int64_t k = e["step"].get<int64_t>();
    const double scale = e["lr_scale"].get<double>();
    EXPECT_NEAR(scale, k - 1 >= 8 ? (12.0 - (k - 1)) / 4.0 : 1.0, 1e-12) << "step " << k;
    EXPECT_NEAR(e["lr_matrix"].get<double>(), 0.03 * scale, 1e-12) << "step " << k;
    EXPECT_NEAR(e["lr_embed"].get<double>(), 0.5 * scale, 1e-12) << "step " << k;
    EXPECT_NEAR(e["lr_head"].get<double>(), 0.009 * scale, 1e-12) << "step " << k;
    EXPECT_NEAR(e["lr_scalar"].get<double>(), 0.02 * scale, 1e-12) << "step " << k;
  }
  EXPECT_NEAR(usteps.back()["lr_scale"].get<double>(), 0.25, 1e-12);
}

// QAT through caddie-train: the same run (seed, batches, steps, int4 export) with and
// without 4-bit QAT for its second half. QAT switches on at step 40 of 80 and the exported
// int4 model loses less val_bpb to quantisation. The model is small but wide enough
// (width 128, vocab 1024, MLP x5) that the embedding (131,072 values) and the MLP matrices
// (81,920) are quantised: tensors of <= 65,536 values stay fp16 and QAT would change nothing.
// Over seeds 1-5, 7, 42, 99, 1337 QAT's gap was smaller every time (2.8-0.5 hundredths
// against 5.6-2.8); at seed 1234 it was not: QAT on a run this short is a tendency, this
// seed's outcome is the deterministic test of it.
TEST(TrainRunTest, QatAtFourBitsShrinksTheQuantGapEndToEnd) {
  TempDir tmp;
  json plain = TinySpec();
  plain.update({{"model_dim", 128}, {"mlp_mult", 5}, {"seq_len", 64}, {"train_batch_tokens", 512},
                {"iterations", 80}, {"warmdown_iters", 48}, {"muon_momentum_warmup_steps", 0},
                {"matrix_lr", 0.06}, {"scalar_lr", 0.06}, {"tied_embed_lr", 0.06}, {"seed", 2},
                {"val_batch_tokens", 8192}, {"val_max_tokens", 8192}, {"export_bits", 4}});
  json qat = plain;
  qat.erase("export_bits");  // follows qat_bits
  qat.update({{"qat_bits", 4}, {"qat_start_frac", 0.5}});
  Proc pp = StartRun(tmp, "plain", plain), pq = StartRun(tmp, "qat", qat);
  RunResult p = FinishRun(tmp, "plain", pp), q = FinishRun(tmp, "qat", pq);
  ASSERT_EQ(p.code, 0) << p.err;
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_EQ(q.Last("start")["spec"]["export_bits"], 4);
  EXPECT_EQ(q.Last("start")["spec"]["qat_bits"], 4);

  // QAT really switched on, at step 40 (0-based; the event after it says step 41), and
  // not in the plain run.
  for (const auto& e : OfType(p.events, "step")) EXPECT_EQ(e["qat_bits"], 0) << e.dump();
  const auto qsteps = OfType(q.events, "step");
  ASSERT_EQ(qsteps.size(), 80u);
  for (const auto& e : qsteps) {
    EXPECT_EQ(e["qat_bits"], e["step"].get<int64_t>() > 40 ? 4 : 0) << e.dump();
  }
  EXPECT_THAT(ReadFile(q.run_dir / "train.log"), HasSubstr("qat:on bits:4 step:40\n"));
  EXPECT_THAT(ReadFile(p.run_dir / "train.log"), ::testing::Not(HasSubstr("qat:on")));
  // Until then the two runs are the same run.
  EXPECT_EQ(OfType(p.events, "step")[39]["train_loss"], qsteps[39]["train_loss"]);
  EXPECT_NE(OfType(p.events, "step")[40]["train_loss"], qsteps[40]["train_loss"]);

  const json pf = p.Last("final"), qf = q.Last("final");
  for (const json* f : {&pf, &qf}) {
    EXPECT_NEAR((*f)["quant_gap"].get<double>(),
                (*f)["val_bpb_post_quant"].get<double>() - (*f)["val_bpb"].get<double>(), 1e-12);
  }
  const double plain_gap = pf["quant_gap"].get<double>(), qat_gap = qf["quant_gap"].get<double>();
  std::printf("int4 export: quant_gap %.4f without QAT, %.4f with QAT from half-way\n", plain_gap, qat_gap);
  EXPECT_GT(plain_gap, 0.01) << "int4 must really hurt this model for the comparison to mean anything";
  EXPECT_LT(qat_gap, plain_gap);
  // Both artifacts are int4: about the same size (the same tensors, 4-bit codes).
  EXPECT_NEAR(static_cast<double>(qf["model_bytes"].get<int64_t>()),
              static_cast<double>(pf["model_bytes"].get<int64_t>()), 0.1 * pf["model_bytes"].get<double>());
}

TEST(TrainRunTest, SigtermFinishesStepEvaluatesExportsAndExitsZero) {
  TempDir tmp;
  json spec = TinySpec();
  spec["iterations"] = 1000000;
  const fs::path spec_path = tmp.path() / "term.json";
  std::ofstream(spec_path) << spec.dump();
  Proc p = Start(tmp.path(), "term", {"--spec", spec_path.string(), "--run-dir", (tmp.path() / "term").string()});
  // Wait for the third step event, then ask it to stop.
  size_t seen = 0;
  for (int i = 0; i < 600; ++i) {
    auto so_far = EventsSoFar(p.out);
    seen = so_far.size();
    if (OfType(so_far, "step").size() >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(seen, 4u) << "no third step event in 60 s: " << ReadFile(p.err);
  ::kill(p.pid, SIGTERM);
  ASSERT_EQ(Wait(p), 0) << ReadFile(p.err);
  auto ev = Events(p.out);
  ASSERT_FALSE(ev.empty());
  const json fin = ev.back();
  EXPECT_EQ(fin["event"], "final");
  EXPECT_EQ(fin["exit_reason"], "terminated");
  const int64_t steps = fin["steps"].get<int64_t>();
  EXPECT_LT(steps, 1000000);
  EXPECT_GE(steps, 3);
  EXPECT_TRUE(std::isfinite(fin["val_bpb_post_quant"].get<double>()));
  EXPECT_TRUE(fs::exists(tmp.path() / "term" / "final_model.caddie"));
  // The step it was in is reported (step events are due at every step here, and at the
  // stop), then it evaluates: a val event after the signal, at that step, then final.
  const std::vector<json> after(ev.begin() + static_cast<std::ptrdiff_t>(seen), ev.end());
  const auto step_events = OfType(ev, "step");
  ASSERT_FALSE(step_events.empty());
  EXPECT_EQ(step_events.back()["step"].get<int64_t>(), steps);
  const auto vals = OfType(after, "val");
  ASSERT_EQ(vals.size(), 1u) << "val events after SIGTERM";
  EXPECT_EQ(vals[0]["step"].get<int64_t>(), steps);
  EXPECT_TRUE(std::isfinite(vals[0]["val_bpb"].get<double>()));
  EXPECT_EQ(vals[0]["val_bpb"], fin["val_bpb"]);
  EXPECT_EQ(vals[0]["train_time_s"], fin["train_time_s"]);
}


// Architecture axes compose and run end to end: loops x factorised embedding x ALiBi x a
// sequence-length curriculum, through the same export path, reporting its parameters.
TEST(TrainRunTest, ArchitectureAxesComposeEndToEnd) {
  TempDir tmp;
  json spec = TinySpec();
  spec.update({{"loops", 2}, {"mixer_pattern", "AS"}, {"embed_dim", 32}, {"pos_scheme", "alibi"},
               {"seq_len_schedule", "32:0.5,64"}, {"loop_scalars", true}, {"loop_embedding", true}});
  RunResult r = TrainOnce(tmp, "axes", spec);
  ASSERT_EQ(r.code, 0) << r.err;
  // C = 64, H = 4, K = 2 (kv dim 32), MLP 2x. Attention block: 64*64*2 + 2*64*32 + 2*64*128
  // + 4 + 4*64 = 28,932. SSM block (D_in 128, N 16, W 4, dt rank 4): 64*256 + 128*4 + 128
  // + 128*36 + 4*128 + 128 + 128*16 + 128 + 128*64 = 32,640, plus MLP and scales 16,640.
  // Depth 4 (2 blocks looped twice) -> 2 skip vectors; embedding 1024*32 + projections 2*64*32;
  // loop gains and loop embeddings (2, 64) each.
  const int64_t expected = 28932 + (32640 + 16640) + 2 * 64 + 1024 * 32 + 2 * 64 * 32 + 2 * 2 * 64;
  EXPECT_EQ(r.Last("start")["params"], expected);
  const json fin = r.Last("final");
  EXPECT_EQ(fin["exit_reason"], "completed");
  EXPECT_EQ(fin["params"], expected);
  EXPECT_GT(fin["artifact_bytes"].get<int64_t>(), 0);
  EXPECT_TRUE(std::isfinite(fin["val_bpb_post_quant"].get<double>()));
  auto losses = r.Losses();
  ASSERT_EQ(losses.size(), 12u);
  EXPECT_LT(losses.back(), losses.front());
}

// The first step whose train loss differs between two runs (the shorter length when none).
size_t FirstDifference(const std::vector<double>& a, const std::vector<double>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

// seq_len_schedule, as the trainer applies it: 12 steps and no wall-clock budget, so the
// progress fraction is step / 12 and the boundaries 0.25, 0.5, 0.75 fall at steps 3, 6, 9.
// Oracle: two runs with the same seed train identically while their lengths agree, and the
// first step run at another length has another loss (the batch is the same tokens split into
// other rows). At init the loss is blind to the length (zero output projections), so step 0
// is never a boundary here.
TEST(TrainRunTest, SeqLenScheduleRunsShortSequencesFirstThenTheFinalStage) {
  TempDir tmp;
  const std::vector<std::pair<std::string, std::string>> schedules = {
      {"staged", "16:0.25,32:0.5,64"},
      {"all16", "16"},                       // the first stage only
      {"to32", "16:0.25,32"},                // the first two, the second to the end
      {"late64", "16:0.25,32:0.75,64"},      // 32 until 0.75, then 64
      {"plain", ""},                         // seq_len 64 throughout
  };
  std::map<std::string, std::vector<double>> losses;
  for (size_t i = 0; i < schedules.size(); i += 2) {
    std::vector<std::pair<std::string, Proc>> procs;  // two at a time: the machine's two cores
    for (size_t k = i; k < std::min(i + 2, schedules.size()); ++k) {
      json spec = TinySpec();
      spec["seq_len_schedule"] = schedules[k].second;
      procs.emplace_back(schedules[k].first, StartRun(tmp, schedules[k].first, spec));
    }
    for (const auto& [tag, p] : procs) {
      RunResult r = FinishRun(tmp, tag, p);
      ASSERT_EQ(r.code, 0) << tag << ": " << r.err;
      losses[tag] = r.Losses();
      ASSERT_EQ(losses[tag].size(), 12u) << tag;
    }
  }
  const auto& staged = losses["staged"];
  // Steps 0-2 at 16 (as a schedule of 16 alone), then not 16.
  EXPECT_EQ(FirstDifference(staged, losses["all16"]), 3u);
  // Steps 3-5 at 32 (as 16 then 32 to the end), then not 32.
  EXPECT_EQ(FirstDifference(staged, losses["to32"]), 6u);
  // A last stage runs to the end (to32 stays at 32 from step 6 on), and a stage ending at 0.75
  // ends at step 9.
  EXPECT_EQ(FirstDifference(losses["to32"], losses["late64"]), 9u);
  // The oracle tells lengths apart at once: 16 vs 64 from step 0 shows at step 1.
  EXPECT_EQ(FirstDifference(staged, losses["plain"]), 1u);
}

TEST(SeqLenScheduleTest, BadSchedulesAreRejectedNamingTheKey) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"16:0.5,32:0.5,64", "stage \"32:0.5\" needs LEN >= 2 and FRAC increasing within (0, 1]"},
      {"16:0.6,32:0.3,64", "stage \"32:0.3\" needs LEN >= 2 and FRAC increasing"},
      {"16:0,64", "stage \"16:0\" needs LEN >= 2 and FRAC increasing"},
      {"16:1.5,64", "stage \"16:1.5\" needs LEN >= 2 and FRAC increasing within (0, 1]"},
      {"1:0.5,64", "stage \"1:0.5\" needs LEN >= 2"},
      {"24:0.5,64", "seq_len_schedule length 24 must divide seq_len = 64"},
      {"128", "seq_len_schedule length 128 must divide seq_len = 64"},
      {"16:0.5,128", "seq_len_schedule length 128 must divide seq_len = 64"},
      {"abc", "bad stage \"abc\" (expected LEN:FRAC"},
      {"16:x,64", "bad stage \"16:x\""},
      {"16:0.5x,64", "bad stage \"16:0.5x\""},
      {"16;0.5,64", "bad stage \"16;0.5\""},
      {"16:0.5,,64", "bad stage \"\""},
      // A warm-up: lengths never fall; the error names the stage and the one before it.
      {"64:0.5,32", "stage 2 \"32\" is shorter than stage 1 \"64:0.5\" (a warm-up: LEN must not fall)"},
      {"16:0.25,32:0.5,64:0.75,16", "stage 4 \"16\" is shorter than stage 3 \"64:0.75\""},
  };
  for (const auto& [schedule, message] : bad) {
    auto r = caddie::ParseTrainSpec(json{{"seq_len", 64}, {"seq_len_schedule", schedule}});
    ASSERT_FALSE(r.ok()) << schedule;
    EXPECT_THAT(r.status().message(), HasSubstr("seq_len_schedule")) << schedule;
    EXPECT_THAT(r.status().message(), HasSubstr(message)) << schedule;
  }
  // Good ones: the last stage runs to the end whatever FRAC it was written with.
  auto ok = caddie::ParseSeqLenSchedule("16:0.25,32:0.5,64:0.9");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  ASSERT_EQ(ok->size(), 3u);
  EXPECT_EQ((*ok)[0].seq_len, 16);
  EXPECT_EQ((*ok)[0].until_frac, 0.25);
  EXPECT_EQ((*ok)[1].seq_len, 32);
  EXPECT_EQ((*ok)[1].until_frac, 0.5);
  EXPECT_EQ((*ok)[2].seq_len, 64);
  EXPECT_EQ((*ok)[2].until_frac, 1.0);
  EXPECT_TRUE(caddie::ParseTrainSpec(json{{"seq_len", 64}, {"seq_len_schedule", "16:0.25,32:0.5,64"}}).ok());
  // A length may stay (a stage boundary that changes nothing), only not fall.
  EXPECT_TRUE(caddie::ParseTrainSpec(json{{"seq_len", 64}, {"seq_len_schedule", "32:0.25,32:0.5,64"}}).ok());
}

struct BadCase {
  std::string name;
  json patch;
  std::string message;
};

TEST(TrainRunTest, BadSpecsExitTwoWithAClearMessage) {
  TempDir tmp;
  fs::create_directories(tmp.path() / "empty");
  const std::vector<BadCase> cases = {
      {"unknown", {{"num_layer", 3}}, "unknown spec key \"num_layer\" (did you mean \"num_layers\"?)"},
      {"zero_layers", {{"num_layers", 0}}, "spec key \"num_layers\" = 0 is out of range [1, 256]"},
      {"heads", {{"num_heads", 3}}, "num_heads = 3 must divide model_dim = 64"},
      {"no_shards", {{"data", (tmp.path() / "empty").string()}}, "no train shards"},
      {"vocab", {{"vocab_size", 256}}, "byte_table.json has vocab_size 1024 but spec vocab_size = 256"},
      {"batch", {{"train_batch_tokens", 2000}}, "train_batch_tokens = 2000 must be a multiple of"},
      {"mixer_letter", {{"mixer_pattern", "AX"}}, "mixer_pattern \"AX\" has unknown mixer letter 'X'"},
      {"loops", {{"loops", 0}}, "spec key \"loops\" = 0 is out of range [1, 64]"},
      {"embed_dim", {{"embed_dim", 128}}, "embed_dim = 128 must be <= model_dim = 64"},
      {"seq_len_schedule", {{"seq_len_schedule", "48:0.5,64"}}, "seq_len_schedule length 48 must divide seq_len = 64"},
      {"seq_len_falls", {{"seq_len_schedule", "64:0.5,32"}},
       "spec key \"seq_len_schedule\": stage 2 \"32\" is shorter than stage 1 \"64:0.5\""},
      // Before, the model's constructor found this one: exit 1, and no sweep validation.
      {"mixer_blocks", {{"num_layers", 4}, {"unique_blocks", 2}, {"mixer_pattern", "AASS"}},
       "mixer_pattern \"AASS\" does not fit unique_blocks = 2: layer 2 is 'S' but runs block 0"},
      // head_dim 64 / 4 = 16: 0.05 x 16 = 0.8 dims, rounded to 0 pairs.
      {"rope_zero_dims", {{"rope_fraction", 0.05}},
       "rope_fraction = 0.05 rotates 0 of the head_dim = 16 dims (model_dim / num_heads; rounded to whole "
       "pairs): use rope_fraction >= 0.125 (2 / head_dim, one pair) or 0 for no rotation"},
  };
  for (const auto& c : cases) {
    json spec = TinySpec();
    spec.update(c.patch);
    RunResult r = TrainOnce(tmp, c.name, spec);
    EXPECT_EQ(r.code, 2) << c.name << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.name;
    ASSERT_FALSE(r.events.empty()) << c.name;
    EXPECT_EQ(r.events.back()["event"], "error") << c.name;
    EXPECT_THAT(r.events.back()["message"].get<std::string>(), HasSubstr(c.message)) << c.name;
  }
  // Not a file, and a malformed rank environment.
  Proc p = Start(tmp.path(), "nofile", {"--spec", (tmp.path() / "missing.json").string()});
  EXPECT_EQ(Wait(p), 2);
  EXPECT_THAT(ReadFile(p.err), HasSubstr("cannot read spec file"));
  const fs::path ok = tmp.path() / "ok.json";
  std::ofstream(ok) << TinySpec().dump();
  Proc q = Start(tmp.path(), "env", {"--spec", ok.string()}, {{"WORLD_SIZE", "two"}});
  EXPECT_EQ(Wait(q), 2);
  EXPECT_THAT(ReadFile(q.err), HasSubstr("WORLD_SIZE=\"two\" must be an integer"));
}

}  // namespace
