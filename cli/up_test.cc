#include "cli/up.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "cli/sweep_file.h"

namespace caddie::cli {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

TEST(UpTest, DemoSweepIsValidSmallAndUsesTheGivenDataDir) {
  SweepCheck c = CheckSweepText(DemoSweepYaml("/tmp/x y/data/sp1024"), "demo.yaml");
  ASSERT_TRUE(c.ok()) << FormatIssues(c, false);
  EXPECT_EQ(c.jobs.size(), 4u);  // 2 depth-recurrence settings x 2 QAT widths
  EXPECT_EQ(c.sweep_json["base"]["data"], "/tmp/x y/data/sp1024");
  EXPECT_EQ(c.sweep_json["base"]["vocab_size"], kDemoVocab);
  EXPECT_EQ(c.spec.gpus(), 0);
  EXPECT_LE(c.spec.budget().train_seconds(), 60);
  EXPECT_TRUE(c.sweep_json["axes"].contains("loops"));
  EXPECT_TRUE(c.sweep_json["axes"].contains("qat_bits"));
}

TEST(UpTest, ParseListeningPort) {
  EXPECT_EQ(ParseListeningPort("starting\ncaddie-controller listening on 127.0.0.1:43121\n"), 43121);
  EXPECT_EQ(ParseListeningPort("caddie-controller listening on 127.0.0.1:"), 0);
  EXPECT_EQ(ParseListeningPort(""), 0);
}

TEST(UpTest, FindCaddieBinaryLooksNextToItselfThenSiblingsAndNamesWhereItLooked) {
  const fs::path d = fs::temp_directory_path() / ("caddie_up_test_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d / "cli");
  fs::create_directories(d / "worker");
  auto make_exe = [](const fs::path& p) {
    std::ofstream(p) << "#!/bin/sh\n";
    chmod(p.c_str(), 0755);
  };
  make_exe(d / "worker/caddie-worker");
  make_exe(d / "cli/caddie-controller");
  auto w = FindCaddieBinary("caddie-worker", "", (d / "cli").string());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(*w, (d / "worker/caddie-worker").string());
  auto c = FindCaddieBinary("caddie-controller", "", (d / "cli").string());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, (d / "cli/caddie-controller").string());
  auto missing = FindCaddieBinary("caddie-nothing-such", (d / "cli").string(), "");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr((d / "cli/caddie-nothing-such").string()));
  EXPECT_THAT(missing.status().message(), HasSubstr("--bin-dir"));
  fs::remove_all(d);
}

TEST(UpTest, ProgressBlockShowsBarsForRunningAndResultsForFinished) {
  const Style st(false);
  std::vector<v1::Job> jobs(3);
  jobs[0].set_id("a");
  jobs[0].set_state(v1::JOB_STATE_SUCCEEDED);
  jobs[0].set_params_json(R"({"loops":1})");
  jobs[0].mutable_result()->set_val_bpb_post_quant(2.3456);
  jobs[0].mutable_result()->set_artifact_bytes(700000);
  jobs[0].mutable_result()->set_steps(120);
  jobs[1].set_id("b");
  jobs[1].set_state(v1::JOB_STATE_RUNNING);
  jobs[1].mutable_spec()->mutable_budget()->set_train_seconds(40);
  jobs[2].set_id("c");
  jobs[2].set_state(v1::JOB_STATE_QUEUED);
  std::map<std::string, WatchView> views;
  views.emplace("b", WatchView("b"));
  v1::WatchJobResponse r;
  *r.mutable_job() = jobs[1];
  auto* e = r.add_events();
  e->set_seq(1);
  e->set_type("step");
  e->set_json(R"({"event":"step","step":7,"train_loss":6.0,"train_time_s":20})");
  views.at("b").Apply(r, st);
  const std::string b = UpProgressBlock("demo", jobs, views, st);
  EXPECT_THAT(b, HasSubstr("sweep demo: 1/3 jobs done"));
  EXPECT_THAT(b, HasSubstr("val_bpb 2.3456  artifact 700.0 kB  120 steps"));
  EXPECT_THAT(b, HasSubstr("[############------------]  50%  20s / 40s  step 7  loss 6.0000"));
  EXPECT_THAT(b, HasSubstr("waiting for the worker"));
}

}  // namespace
}  // namespace caddie::cli
