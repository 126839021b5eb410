#include "worker/gpu_inventory.h"

#include <gtest/gtest.h>

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
