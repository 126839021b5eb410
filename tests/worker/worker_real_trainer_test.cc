// One real caddie-train CPU run through a real caddie-worker process: the
// worker writes the spec (data from --data-dir, the time budget from the job),
// launches the trainer, streams its events and re-measures its artifact.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/worker/fake_controller.h"
#include "tests/worker/process.h"

namespace caddie {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

std::string Env(const char* name, const std::string& def = "") {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : def;
}

TEST(WorkerRealTrainerTest, CpuRunSucceedsWithMeasuredArtifact) {
  const fs::path bin = Env("CADDIE_BINARY_DIR", ".");
  // CADDIE_TRAIN_BIN: a caddie-train built elsewhere (LibTorch builds are slow).
  const std::string trainer = Env("CADDIE_TRAIN_BIN", (bin / "model/caddie-train").string());
  const std::string data = Env("CADDIE_TESTDATA", (bin / "testdata").string()) + "/sp1024";
  ASSERT_TRUE(fs::exists(trainer)) << trainer;
  ASSERT_TRUE(fs::exists(fs::path(data) / "byte_table.json")) << data;
  const fs::path dir = fs::path(::testing::TempDir()) / ("worker_real_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);

  testing_support::FakeController fake;
  fake.heartbeat_s = 1;
  caddie::v1::Job job;
  job.set_id("real-1");
  job.set_attempt(1);
  // A tiny model on the real corpus (as model/train_run_test.cc); no "data" and no
  // "max_wallclock_seconds": the worker fills both in.
  job.mutable_spec()->set_spec_json(json{{"num_layers", 2},       {"model_dim", 64},     {"num_heads", 4},
                                         {"num_kv_heads", 2},     {"seq_len", 64},       {"train_batch_tokens", 2048},
                                         {"grad_accum_steps", 1}, {"iterations", 12},    {"warmup_steps", 0},
                                         {"warmdown_iters", 0},   {"val_every", 0},      {"log_every", 1},
                                         {"val_batch_tokens", 16384}, {"val_max_tokens", 16384}}
                                        .dump());
  job.mutable_spec()->mutable_budget()->set_train_seconds(120);
  fake.queue.push_back(job);
  int port = 0;
  auto server = testing_support::Serve(&fake, &port);
  ASSERT_NE(server, nullptr);

  testing_support::Process worker;
  ASSERT_TRUE(worker
                  .Start({(bin / "worker/caddie-worker").string(), "--controller", "127.0.0.1:" + std::to_string(port),
                          "--work-dir", (dir / "work").string(), "--id", "cpu-w", "--trainer", trainer,
                          "--data-dir", data, "--gpus", "0", "--nvidia-smi", "/nonexistent/nvidia-smi",
                          "--http-listen", ""},
                         dir / "worker.log", {{"OMP_NUM_THREADS", "2"}})
                  .ok());
  ASSERT_TRUE(fake.WaitFor([&] { return fake.completions.count("real-1") > 0; }, 240s)) << worker.Log();
  absl::MutexLock l(&fake.mu);
  const auto& c = fake.completions["real-1"];
  const fs::path run = dir / "work" / "cpu-w" / "runs" / "real-1-a1";
  ASSERT_EQ(c.state(), caddie::v1::JOB_STATE_SUCCEEDED)
      << c.message() << "\n" << worker.Log();
  EXPECT_EQ(c.exit_reason(), caddie::v1::EXIT_REASON_COMPLETED);
  EXPECT_EQ(c.result().steps(), 12);
  EXPECT_TRUE(std::isfinite(c.result().val_bpb_post_quant()));
  EXPECT_GT(c.result().val_bpb_post_quant(), 0.5);
  // The worker's measurement: the artifact file on disk plus the code bytes.
  const json final_event = json::parse(c.result().final_json());
  ASSERT_TRUE(fs::exists(final_event["artifact_path"].get<std::string>()));
  EXPECT_EQ(c.result().artifact_bytes(),
            static_cast<int64_t>(fs::file_size(final_event["artifact_path"].get<std::string>())) +
                final_event["code_bytes"].get<int64_t>());
  EXPECT_TRUE(c.result().within_budget());
  // Events in order: start, 12 steps, val, final.
  const auto& events = fake.events["real-1"];
  ASSERT_EQ(events.size(), 15u);
  EXPECT_EQ(events.front().type(), "start");
  EXPECT_EQ(events[12].type(), "step");
  EXPECT_EQ(events[12].step(), 12);
  EXPECT_EQ(events[13].type(), "val");
  EXPECT_EQ(events.back().type(), "final");
  // The spec the trainer ran: data and budget filled in by the worker.
  std::ifstream in(run / "spec.json");
  const json spec = json::parse(in);
  EXPECT_EQ(spec["data"], data);
  EXPECT_EQ(spec["max_wallclock_seconds"], 120.0);
  server->Shutdown(std::chrono::system_clock::now() + 1s);
  std::error_code ec;
  if (!HasFailure()) fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace caddie
