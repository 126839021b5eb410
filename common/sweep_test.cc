#include "common/sweep.h"

#include <set>

#include <gtest/gtest.h>

namespace caddie {
namespace {

using nlohmann::json;

TEST(SweepTest, Grid3x3x2ExpandsTo18JobsLastAxisFastest) {
  json s = {{"base", {{"iterations", 10}}},
            {"axes", {{"a_layers", {4, 6, 8}}, {"b_dim", {128, 256, 384}}, {"c_qat", {0, 4}}}}};
  auto e = ExpandSweep(s);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->jobs.size(), 18u);
  EXPECT_EQ(e->mode, "grid");
  EXPECT_EQ(e->jobs[0].params, (json{{"a_layers", 4}, {"b_dim", 128}, {"c_qat", 0}}));
  EXPECT_EQ(e->jobs[1].params, (json{{"a_layers", 4}, {"b_dim", 128}, {"c_qat", 4}}));
  EXPECT_EQ(e->jobs[2].params, (json{{"a_layers", 4}, {"b_dim", 256}, {"c_qat", 0}}));
  EXPECT_EQ(e->jobs[17].params, (json{{"a_layers", 8}, {"b_dim", 384}, {"c_qat", 4}}));
  std::set<std::string> distinct;
  for (const auto& j : e->jobs) {
    distinct.insert(j.params.dump());
    EXPECT_EQ(j.spec["iterations"], 10);
    EXPECT_EQ(j.spec["a_layers"], j.params["a_layers"]);
  }
  EXPECT_EQ(distinct.size(), 18u);
  EXPECT_EQ(e->jobs[5].index, 5);
}

TEST(SweepTest, VariantsRunTheGridOncePerVariantVariantsSlowest) {
  json s = {{"base", {{"num_layers", 9}}},
            {"variants", {json::object(), {{"unique_blocks", 3}, {"loops", 3}}, {{"mixer_pattern", "AASAAS"}}}},
            {"axes", {{"qat_bits", {4, 8}}}}};
  auto e = ExpandSweep(s);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->jobs.size(), 6u);
  EXPECT_EQ(e->jobs[0].params, (json{{"qat_bits", 4}}));
  EXPECT_EQ(e->jobs[1].params, (json{{"qat_bits", 8}}));
  EXPECT_EQ(e->jobs[2].params, (json{{"unique_blocks", 3}, {"loops", 3}, {"qat_bits", 4}}));
  EXPECT_EQ(e->jobs[5].params, (json{{"mixer_pattern", "AASAAS"}, {"qat_bits", 8}}));
  EXPECT_EQ(e->jobs[3].spec["loops"], 3);
  EXPECT_EQ(e->jobs[3].spec["num_layers"], 9);
  EXPECT_FALSE(e->jobs[4].spec.contains("loops"));
  // Without axes each variant is one job; the cap counts variants too.
  json only = {{"variants", {{{"loops", 1}}, {{"loops", 2}}, {{"loops", 3}}}}};
  auto o = ExpandSweep(only);
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_EQ(o->jobs.size(), 3u);
  EXPECT_EQ(o->jobs[2].spec["loops"], 3);
  only["max_jobs"] = 2;
  EXPECT_EQ(ExpandSweep(only).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SweepTest, GridOverCapIsInvalidArgumentNamingTheCount) {
  json s = {{"axes", {{"x", {1, 2, 3}}, {"y", {1, 2, 3}}}}, {"max_jobs", 8}};
  auto e = ExpandSweep(s);
  ASSERT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(e.status().message()).find("the grid has 9 jobs, more than max_jobs = 8"), std::string::npos)
      << e.status();
}

TEST(SweepTest, RandomIsReproducibleFromSeedAndWithinRanges) {
  json s = {{"mode", "random"},
            {"samples", 20},
            {"seed", 7},
            {"axes",
             {{"lr", {{"log_uniform", {0.001, 0.1}}}},
              {"frac", {{"uniform", {0.0, 0.5}}}},
              {"layers", {{"int_uniform", {2, 12}}}},
              {"mixer", {{"choice", {"attention", "ssm"}}}},
              {"bits", {4, 6, 8}}}}};
  auto a = ExpandSweep(s);
  auto b = ExpandSweep(s);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->jobs.size(), 20u);
  std::set<std::string> distinct;
  for (size_t i = 0; i < a->jobs.size(); ++i) {
    EXPECT_EQ(a->jobs[i].params, b->jobs[i].params);
    const json& p = a->jobs[i].params;
    EXPECT_GE(p["lr"].get<double>(), 0.001);
    EXPECT_LE(p["lr"].get<double>(), 0.1);
    EXPECT_GE(p["frac"].get<double>(), 0.0);
    EXPECT_LE(p["frac"].get<double>(), 0.5);
    EXPECT_TRUE(p["layers"].is_number_integer());
    EXPECT_GE(p["layers"].get<int>(), 2);
    EXPECT_LE(p["layers"].get<int>(), 12);
    EXPECT_TRUE(p["mixer"] == "attention" || p["mixer"] == "ssm");
    distinct.insert(p.dump());
  }
  EXPECT_GT(distinct.size(), 15u);
  s["seed"] = 8;
  auto c = ExpandSweep(s);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->jobs[0].params, a->jobs[0].params);
}

TEST(SweepTest, SubstitutesKeysInStringValues) {
  json s = {{"base", {{"data", "data/sp{vocab_size}"}}}, {"axes", {{"vocab_size", {256, 1024}}}}};
  auto e = ExpandSweep(s);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->jobs[0].spec["data"], "data/sp256");
  EXPECT_EQ(e->jobs[1].spec["data"], "data/sp1024");
}

TEST(SweepTest, BadInputsNameTheProblem) {
  struct Case {
    json sweep;
    std::string needle;
  };
  std::vector<Case> cases = {
      {json::array(), "must be an object"},
      {{{"bogus", 1}}, "unknown sweep key 'bogus'"},
      {{{"mode", "bayes"}}, "mode must be grid or random"},
      {{{"axes", {{"x", json::array()}}}}, "grid axis 'x'"},
      {{{"mode", "random"}, {"axes", {{"x", {{"log_uniform", {0, 1}}}}}}}, "log_uniform needs lo > 0"},
      {{{"mode", "random"}, {"axes", {{"x", {{"gauss", {0, 1}}}}}}}, "unknown distribution 'gauss'"},
      {{{"mode", "random"}, {"samples", 5}, {"max_jobs", 4}}, "samples = 5 is more than max_jobs = 4"},
      {{{"early_stopping", {{"type", "hyperband"}}}}, "early_stopping.type"},
      {{{"early_stopping", {{"type", "asha"}, {"reduction_factor", 1}}}}, "reduction_factor must be >= 2"},
      {{{"variants", json::array()}}, "'variants' must be a non-empty list"},
      {{{"variants", {1}}}, "variants[0] must be an object"},
      {{{"variants", {{{"loops", 2}}}}, {"axes", {{"loops", {1, 2}}}}}, "variants[0] sets 'loops', which is also an axis"},
      {{{"mode", "random"}, {"samples", 2}, {"variants", {{{"loops", 2}}}}}, "'variants' only applies to mode: grid"},
  };
  for (const auto& c : cases) {
    auto e = ExpandSweep(c.sweep);
    ASSERT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << c.sweep.dump();
    EXPECT_NE(std::string(e.status().message()).find(c.needle), std::string::npos)
        << c.sweep.dump() << " -> " << e.status();
  }
  EXPECT_EQ(ExpandSweepText("{not json").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SweepTest, ParsesEarlyStopping) {
  json s = {{"early_stopping", {{"type", "asha"}, {"grace_steps", 100}, {"reduction_factor", 3}}}};
  auto e = ExpandSweep(s);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->early_stopping.type, "asha");
  EXPECT_EQ(e->early_stopping.grace_steps, 100);
  EXPECT_EQ(e->early_stopping.reduction_factor, 3);
  ASSERT_EQ(e->jobs.size(), 1u);  // no axes: one job, the base
}

}  // namespace
}  // namespace caddie
