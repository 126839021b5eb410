#include "worker/gpu_inventory.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace caddie::worker {
namespace {

TEST(GpuInventoryTest, ParsesNvidiaSmiCsv) {
  auto g = ParseNvidiaSmiCsv("0, NVIDIA H100 80GB HBM3, 81559 MiB\n1, NVIDIA H100 80GB HBM3, 81559 MiB\n");
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->size(), 2u);
  EXPECT_EQ((*g)[1].index(), 1);
  EXPECT_EQ((*g)[0].name(), "NVIDIA H100 80GB HBM3");
  EXPECT_EQ((*g)[0].memory_bytes(), 81559LL << 20);
}

TEST(GpuInventoryTest, BadLineIsNamed) {
  auto g = ParseNvidiaSmiCsv("0, H100\n");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("0, H100"), std::string::npos);
  EXPECT_EQ(ParseNvidiaSmiCsv("x, H100, 1 MiB").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GpuInventoryTest, MissingNvidiaSmiIsNotFound) {
  auto g = QueryNvidiaSmi("/nonexistent/nvidia-smi");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
}

// A fake `nvidia-smi` first on PATH (a script in a temp dir) and the worker's
// log captured, for DetectGpus.
class FakeNvidiaSmiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/caddie-nvsmi-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    const char* path = std::getenv("PATH");
    old_path_ = path != nullptr ? path : "";
    setenv("PATH", (dir_ + ":" + old_path_).c_str(), 1);
    old_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_)));
  }
  void TearDown() override {
    spdlog::set_default_logger(old_logger_);
    setenv("PATH", old_path_.c_str(), 1);
    std::filesystem::remove_all(dir_);
  }
  // Installs `body` as the script nvidia-smi.
  void FakeNvidiaSmi(const std::string& body) {
    const std::string p = dir_ + "/nvidia-smi";
    {
      std::ofstream out(p);
      out << "#!/bin/sh\n" << body << "\n";
    }
    ASSERT_EQ(chmod(p.c_str(), 0755), 0);
  }
  std::string dir_, old_path_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> old_logger_;
};

TEST_F(FakeNvidiaSmiTest, NonZeroExitMeansNoGpusWithAWarning) {
  FakeNvidiaSmi("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2\nexit 9");
  const DetectedGpus d = DetectGpus("nvidia-smi");
  EXPECT_TRUE(d.gpus.empty());
  EXPECT_NE(d.warning.find("failed: exit code 9"), std::string::npos) << d.warning;
  EXPECT_NE(d.warning.find("registering no GPUs"), std::string::npos) << d.warning;
  EXPECT_NE(log_.str().find("[warning]"), std::string::npos) << log_.str();
  EXPECT_NE(log_.str().find(d.warning), std::string::npos) << log_.str();
  // The worker then registers as CPU-only (no flags) rather than failing.
  auto resolved = ResolveGpus(d.gpus, -1, {});
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_TRUE(resolved->empty());
}

TEST_F(FakeNvidiaSmiTest, GarbageOutputMeansNoGpusWithAWarning) {
  FakeNvidiaSmi("echo 'Segmentation fault in libnvidia-ml'\necho '0, H200 with no memory column'");
  const DetectedGpus d = DetectGpus("nvidia-smi");
  EXPECT_TRUE(d.gpus.empty());
  // The warning names the line that did not parse.
  EXPECT_NE(d.warning.find("Segmentation fault in libnvidia-ml"), std::string::npos) << d.warning;
  EXPECT_NE(log_.str().find("[warning]"), std::string::npos) << log_.str();
  EXPECT_NE(log_.str().find("Segmentation fault in libnvidia-ml"), std::string::npos) << log_.str();
}

TEST_F(FakeNvidiaSmiTest, ValidCsvGivesItsGpusAndNoWarning) {
  // The query the worker asks is passed on; answer only that one.
  FakeNvidiaSmi(
      "[ \"$1\" = --query-gpu=index,name,memory.total ] && [ \"$2\" = --format=csv,noheader ] || exit 3\n"
      "echo '0, NVIDIA H200, 143771 MiB'\necho '1, NVIDIA H200, 143771 MiB'");
  const DetectedGpus d = DetectGpus("nvidia-smi");
  ASSERT_EQ(d.gpus.size(), 2u) << d.warning;
  EXPECT_EQ(d.gpus[0].index(), 0);
  EXPECT_EQ(d.gpus[1].index(), 1);
  EXPECT_EQ(d.gpus[1].name(), "NVIDIA H200");
  EXPECT_EQ(d.gpus[1].memory_bytes(), 143771LL << 20);
  EXPECT_TRUE(d.warning.empty()) << d.warning;
  EXPECT_EQ(log_.str().find("[warning]"), std::string::npos) << log_.str();
}

TEST_F(FakeNvidiaSmiTest, MissingNvidiaSmiIsCpuOnlyWithoutAWarning) {
  setenv("PATH", dir_.c_str(), 1);  // an empty dir: no nvidia-smi anywhere
  const DetectedGpus d = DetectGpus("nvidia-smi");
  EXPECT_TRUE(d.gpus.empty());
  EXPECT_TRUE(d.warning.empty()) << d.warning;
  EXPECT_EQ(log_.str().find("[warning]"), std::string::npos) << log_.str();
}

TEST(GpuInventoryTest, ResolveDeclaresGpusWithoutNvidiaSmi) {
  const absl::StatusOr<std::vector<caddie::v1::GpuInfo>> none = absl::NotFoundError("no nvidia-smi");
  auto two = ResolveGpus(none, 2, {});
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].index(), 1);
  auto ids = ResolveGpus(none, -1, {4, 6});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[1].index(), 6);
  auto cpu = ResolveGpus(none, -1, {});
  ASSERT_TRUE(cpu.ok());
  EXPECT_TRUE(cpu->empty());
  EXPECT_EQ(ResolveGpus(none, 1, {1}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GpuInventoryTest, ResolveSelectsAmongDetected) {
  auto detected = ParseNvidiaSmiCsv("0, A, 1 MiB\n1, B, 1 MiB\n2, C, 1 MiB\n3, D, 1 MiB\n");
  ASSERT_TRUE(detected.ok());
  auto all = ResolveGpus(detected, -1, {});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);
  auto upper = ResolveGpus(detected, -1, {2, 3});
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ((*upper)[0].name(), "C");
  auto missing = ResolveGpus(detected, -1, {7});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("GPU id 7"), std::string::npos);
  EXPECT_EQ(ResolveGpus(detected, 5, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GpuInventoryTest, ParseGpuIds) {
  auto ids = ParseGpuIds("0, 2,3");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int>{0, 2, 3}));
  auto bad = ParseGpuIds("0,x");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("\"x\""), std::string::npos);
  EXPECT_EQ(ParseGpuIds("1,1").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace caddie::worker
