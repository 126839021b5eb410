#include "cli/sweep_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

namespace caddie::cli {
namespace {

using ::testing::HasSubstr;

const char kGood[] = R"(name: depth-x-qat
base:
  data: data/sp1024
  num_layers: 4
  model_dim: 128
  num_heads: 4
  num_kv_heads: 2
axes:
  loops: [1, 2]
  qat_bits: [4, 8]
gpus: 1
priority: 5
max_attempts: 2
budget:
  train_seconds: 120
  artifact_limit_bytes: 16000000
early_stopping:
  type: asha
  grace_steps: 50
)";

// Finds the issue whose key is `key`; fails the test if there is none.
const SweepIssue& IssueFor(const SweepCheck& c, const std::string& key) {
  for (const auto& e : c.errors) {
    if (e.key == key) return e;
  }
  ADD_FAILURE() << "no error for key " << key << "; got:\n" << FormatIssues(c, false);
  static SweepIssue none;
  return none;
}

TEST(SweepFileTest, GoodFileBecomesContractJsonAndSchedulingFields) {
  SweepCheck c = CheckSweepText(kGood, "good.yaml");
  ASSERT_TRUE(c.ok()) << FormatIssues(c, false);
  EXPECT_EQ(c.spec.name(), "depth-x-qat");
  EXPECT_EQ(c.spec.gpus(), 1);
  EXPECT_EQ(c.spec.priority(), 5);
  EXPECT_EQ(c.spec.max_attempts(), 2);
  EXPECT_DOUBLE_EQ(c.spec.budget().train_seconds(), 120);
  EXPECT_EQ(c.spec.budget().artifact_limit_bytes(), 16000000);
  const auto j = nlohmann::json::parse(c.spec.sweep_json());
  EXPECT_EQ(j["mode"], "grid");
  EXPECT_EQ(j["base"]["num_layers"], 4);
  EXPECT_EQ(j["axes"]["loops"], nlohmann::json::parse("[1, 2]"));
  EXPECT_EQ(j["early_stopping"]["type"], "asha");
  EXPECT_EQ(j["early_stopping"]["metric"], "val_bpb");
  EXPECT_EQ(j["early_stopping"]["grace_steps"], 50);
  // Grid: axis order, last axis fastest.
  ASSERT_EQ(c.jobs.size(), 4u);
  EXPECT_EQ(c.jobs[0].params, nlohmann::json::parse(R"({"loops":1,"qat_bits":4})"));
  EXPECT_EQ(c.jobs[1].params, nlohmann::json::parse(R"({"loops":1,"qat_bits":8})"));
  EXPECT_EQ(c.jobs[3].params, nlohmann::json::parse(R"({"loops":2,"qat_bits":8})"));
  EXPECT_EQ(c.jobs[2].spec["model_dim"], 128);
  EXPECT_EQ(c.jobs[2].spec["loops"], 2);
}

TEST(SweepFileTest, NameDefaultsToFileStem) {
  SweepCheck c = CheckSweepText("base: {data: d}\naxes: {seed: [1, 2]}\n", "dir/my_sweep.yaml");
  ASSERT_TRUE(c.ok()) << FormatIssues(c, false);
  EXPECT_EQ(c.spec.name(), "my_sweep");
  EXPECT_EQ(c.spec.max_attempts(), 3);
}

TEST(SweepFileTest, SyntaxErrorNamesLineAndColumn) {
  SweepCheck c = CheckSweepText("base:\n  num_layers: 4\naxes:\n  loops: [1, 2\n  qat_bits: [4]\n", "s.yaml");
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_THAT(c.errors[0].message, HasSubstr("YAML syntax error"));
  EXPECT_EQ(c.errors[0].pos.line, 5);
  EXPECT_GT(c.errors[0].pos.column, 0);
  EXPECT_THAT(FormatIssues(c, false), HasSubstr("s.yaml:5:"));
}

TEST(SweepFileTest, EveryErrorAtOnceWithPositionsAndSuggestions) {
  const char* text =
      "base:\n"                 // 1
      "  num_layer: 4\n"        // 2: unknown trainer key
      "  vocab_size: 10\n"      // 3: impossible vocab
      "axes:\n"                 // 4
      "  qat_bits: [4, 1]\n"    // 5: bits 1
      "  loopz: [1, 2]\n"       // 6: unknown axis key
      "budgets:\n"              // 7: unknown top-level key
      "  train_seconds: 60\n"   // 8
      "gpus: 100\n"             // 9: out of range
      "mode: grdi\n";           // 10: bad mode
  SweepCheck c = CheckSweepText(text, "bad.yaml");
  EXPECT_FALSE(c.ok());
  EXPECT_TRUE(c.jobs.empty());
  const auto& layer = IssueFor(c, "base.num_layer");
  EXPECT_EQ(layer.pos.line, 2);
  EXPECT_THAT(layer.message, HasSubstr("did you mean \"num_layers\""));
  const auto& vocab = IssueFor(c, "base.vocab_size");
  EXPECT_EQ(vocab.pos.line, 3);
  EXPECT_EQ(vocab.pos.column, 15);
  EXPECT_THAT(vocab.message, HasSubstr("[256, 65536]"));
  const auto& loopz = IssueFor(c, "axes.loopz");
  EXPECT_EQ(loopz.pos.line, 6);
  EXPECT_EQ(loopz.pos.column, 3);
  EXPECT_THAT(loopz.message, HasSubstr("did you mean \"loops\""));
  const auto& budgets = IssueFor(c, "budgets");
  EXPECT_EQ(budgets.pos.line, 7);
  EXPECT_THAT(budgets.message, HasSubstr("did you mean \"budget\""));
  const auto& gpus = IssueFor(c, "gpus");
  EXPECT_EQ(gpus.pos.line, 9);
  EXPECT_THAT(gpus.message, HasSubstr("gpus = 100 is out of range: allowed [0, 64]"));
  const auto& mode = IssueFor(c, "mode");
  EXPECT_EQ(mode.pos.line, 10);
  EXPECT_THAT(mode.message, HasSubstr("grid | random"));
  // The formatted output has one line per error, compiler style.
  const std::string out = FormatIssues(c, false);
  EXPECT_THAT(out, HasSubstr("bad.yaml:6:3: error: axes.loopz: unknown trainer key \"loopz\""));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), static_cast<long>(c.errors.size() + c.warnings.size()));
}

TEST(SweepFileTest, CrossKeyErrorOfExpandedJobsPointsAtTheAxisValue) {
  const char* text =
      "base:\n"
      "  data: d\n"
      "axes:\n"
      "  loops: [1, 2]\n"
      "  qat_bits: [4, 1]\n";
  SweepCheck c = CheckSweepText(text, "x.yaml");
  ASSERT_EQ(c.errors.size(), 1u) << FormatIssues(c, false);
  const auto& e = c.errors[0];
  EXPECT_EQ(e.key, "axes.qat_bits[1]");
  EXPECT_EQ(e.pos.line, 5);
  EXPECT_EQ(e.pos.column, 17);
  EXPECT_THAT(e.message, HasSubstr("qat_bits = 1 is out of range: 0 (off) or 2..8"));
  EXPECT_THAT(e.message, HasSubstr("2 jobs, e.g. job 1 (loops=1, qat_bits=1)"));
}

TEST(SweepFileTest, VariantsAreCheckedKeyByKeyAndExpandUnderTheGrid) {
  const char* text =
      "base: {data: d, num_layers: 4}\n"
      "variants:\n"
      "  - {}\n"
      "  - {loops: 2}\n"
      "axes: {qat_bits: [4, 8]}\n";
  SweepCheck ok = CheckSweepText(text, "v.yaml");
  ASSERT_TRUE(ok.ok()) << FormatIssues(ok, false);
  ASSERT_EQ(ok.jobs.size(), 4u);
  EXPECT_EQ(ok.jobs[2].spec["loops"], 2);
  EXPECT_EQ(ok.sweep_json["variants"].size(), 2u);

  const char* bad =
      "base: {data: d, num_layers: 4}\n"
      "variants:\n"
      "  - {loopz: 2}\n"
      "  - {qat_bits: 4}\n"
      "  - {mixer_pattern: AAS}\n"
      "axes: {qat_bits: [4, 8]}\n";
  SweepCheck c = CheckSweepText(bad, "v.yaml");
  EXPECT_THAT(IssueFor(c, "variants[0].loopz").message, HasSubstr("loops"));
  EXPECT_THAT(IssueFor(c, "variants[1].qat_bits").message, HasSubstr("is also an axis"));
  EXPECT_EQ(IssueFor(c, "variants[1].qat_bits").pos.line, 4);
  EXPECT_THAT(IssueFor(c, "variants[2].mixer_pattern").message, HasSubstr("num_layers = 4"));

  // A pattern that does not fit the variant's shared blocks, a rope_fraction that rotates no
  // pair with the base's heads (head_dim 64 / 4 = 16) and a falling seq_len_schedule: each
  // reported at the variant that sets it, naming the keys.
  const char* misfit =
      "base: {data: d, num_layers: 4, model_dim: 64, num_heads: 4, num_kv_heads: 2, seq_len: 64}\n"
      "variants:\n"
      "  - {}\n"
      "  - {unique_blocks: 2, mixer_pattern: AASS}\n"
      "  - {rope_fraction: 0.05}\n"
      "  - {seq_len_schedule: \"64:0.5,32\"}\n";
  SweepCheck m = CheckSweepText(misfit, "m.yaml");
  ASSERT_EQ(m.errors.size(), 3u) << FormatIssues(m, false);
  EXPECT_THAT(IssueFor(m, "variants[1].mixer_pattern").message,
              HasSubstr("mixer_pattern \"AASS\" does not fit unique_blocks = 2: layer 2 is 'S' but runs block 0"));
  EXPECT_THAT(IssueFor(m, "variants[1].mixer_pattern").message, HasSubstr("in job 1"));
  EXPECT_THAT(IssueFor(m, "variants[2].rope_fraction").message,
              HasSubstr("rope_fraction = 0.05 rotates 0 of the head_dim = 16 dims"));
  EXPECT_THAT(IssueFor(m, "variants[3].seq_len_schedule").message,
              HasSubstr("stage 2 \"32\" is shorter than stage 1 \"64:0.5\""));
}

TEST(SweepFileTest, InvalidUtf8IsAnErrorWithItsPositionNotACrash) {
  // Found by fuzz_sweep_file: yaml-cpp passes the bytes through and writing the sweep JSON threw.
  SweepCheck c = CheckSweepText("base: {data: d}\nname: \"ab\x84" "c\"\naxes: {seed: [1]}\n", "u.yaml");
  ASSERT_EQ(c.errors.size(), 1u) << FormatIssues(c, false);
  EXPECT_EQ(c.errors[0].pos.line, 2);
  EXPECT_EQ(c.errors[0].pos.column, 10);
  EXPECT_THAT(c.errors[0].message, HasSubstr("not valid UTF-8: byte 0x84"));
  EXPECT_FALSE(c.ok());
  // Truncated, overlong and surrogate sequences too; on the first line, column counts from 1.
  for (const char* bad : {"\xC3", "\xC0\xAF", "\xED\xA0\x80", "\xF5\x80\x80\x80"}) {
    SweepCheck b = CheckSweepText(std::string("x") + bad, "u.yaml");
    ASSERT_EQ(b.errors.size(), 1u) << bad;
    EXPECT_EQ(b.errors[0].pos.line, 1);
    EXPECT_EQ(b.errors[0].pos.column, 2);
  }
  // yaml-cpp turns NUL + '_' into the single byte 0xA0 (not UTF-8): an error at that key.
  const std::string nul("base:\n  data: d\n  warmu\0_steps: 2\naxes: {seed: [1]}\n", 52);
  SweepCheck n = CheckSweepText(nul, "n.yaml");
  ASSERT_FALSE(n.errors.empty());
  EXPECT_EQ(n.errors[0].pos.line, 3) << FormatIssues(n, false);
  EXPECT_THAT(n.errors[0].message, HasSubstr("not valid UTF-8 after YAML decoding: \"warmu?steps\""));
  // Well-formed multi-byte text is fine.
  SweepCheck ok = CheckSweepText("name: \"d\xC3\xA9j\xC3\xA0 \xE2\x96\x81 \xF0\x9F\x98\x80\"\nbase: {data: d}\naxes: {seed: [1, 2]}\n", "u.yaml");
  EXPECT_TRUE(ok.ok()) << FormatIssues(ok, false);
}

TEST(SweepFileTest, ConsistencyUsesTheMergedSpec) {
  // mixer_pattern alone would not match the default 9 layers; with base's 4 it does.
  SweepCheck ok = CheckSweepText("base: {data: d, num_layers: 4}\naxes: {mixer_pattern: [AASS, SSSS]}\n", "a.yaml");
  EXPECT_TRUE(ok.ok()) << FormatIssues(ok, false);
  SweepCheck bad = CheckSweepText("base: {data: d, num_layers: 4}\naxes: {mixer_pattern: [AASS, AAS]}\n", "a.yaml");
  ASSERT_EQ(bad.errors.size(), 1u) << FormatIssues(bad, false);
  EXPECT_EQ(bad.errors[0].key, "axes.mixer_pattern[1]");
  EXPECT_THAT(bad.errors[0].message, HasSubstr("has 3 letters; num_layers = 4"));
}

TEST(SweepFileTest, BudgetAndEarlyStoppingChecks) {
  const char* text =
      "base: {data: d, max_wallclock_seconds: 900}\n"
      "budget: {train_seconds: 0, eval_secs: 5}\n"
      "early_stopping: {type: hyperband, reduction_factor: 1}\n";
  SweepCheck c = CheckSweepText(text, "b.yaml");
  EXPECT_THAT(IssueFor(c, "budget.train_seconds").message, HasSubstr("allowed [1, 86400]"));
  EXPECT_THAT(IssueFor(c, "budget.eval_secs").message, HasSubstr("did you mean \"eval_seconds\""));
  EXPECT_THAT(IssueFor(c, "early_stopping.type").message, HasSubstr("asha | median"));
  EXPECT_THAT(IssueFor(c, "early_stopping.reduction_factor").message, HasSubstr("allowed [2, 16]"));
  // With a valid budget, the spec's own clock past the budget is an error.
  SweepCheck d = CheckSweepText("base: {data: d, max_wallclock_seconds: 900}\nbudget: {train_seconds: 600}\n", "b.yaml");
  EXPECT_THAT(IssueFor(d, "base.max_wallclock_seconds").message,
              HasSubstr("exceeds budget.train_seconds = 600"));
}

TEST(SweepFileTest, TypesFollowYamlQuotingAndWrongTypesAreNamed) {
  SweepCheck c = CheckSweepText("base: {data: d, num_layers: \"4\", tie_embeddings: yes}\n", "t.yaml");
  EXPECT_THAT(IssueFor(c, "base.num_layers").message, HasSubstr("must be an integer, got \"4\""));
  EXPECT_THAT(IssueFor(c, "base.tie_embeddings").message, HasSubstr("must be true or false"));
  SweepCheck f = CheckSweepText("base: {data: d, matrix_lr: 4e-2, tie_embeddings: false}\n", "t.yaml");
  ASSERT_TRUE(f.ok()) << FormatIssues(f, false);
  EXPECT_DOUBLE_EQ(f.jobs.at(0).spec["matrix_lr"].get<double>(), 0.04);
}

TEST(SweepFileTest, RandomModeDistributions) {
  const char* text =
      "mode: random\nsamples: 5\nseed: 7\n"
      "base: {data: d}\n"
      "axes:\n"
      "  matrix_lr: {log_uniform: [0.01, 0.1]}\n"
      "  loops: [1, 2, 3]\n"
      "  num_kv_heads: {choice: [1, 2, 4]}\n";
  SweepCheck c = CheckSweepText(text, "r.yaml");
  ASSERT_TRUE(c.ok()) << FormatIssues(c, false);
  ASSERT_EQ(c.jobs.size(), 5u);
  EXPECT_EQ(c.sweep_json["samples"], 5);
  EXPECT_EQ(c.sweep_json["seed"], 7);
  for (const auto& j : c.jobs) {
    const double lr = j.params["matrix_lr"].get<double>();
    EXPECT_GE(lr, 0.01);
    EXPECT_LE(lr, 0.1);
  }
  SweepCheck bad = CheckSweepText(
      "mode: grid\nbase: {data: d}\naxes:\n  matrix_lr: {log_uniform: [0.01, 0.1]}\n", "r.yaml");
  EXPECT_THAT(IssueFor(bad, "axes.matrix_lr").message, HasSubstr("needs mode: random"));
  SweepCheck bad2 = CheckSweepText(
      "mode: random\nsamples: 2\naxes:\n  matrix_lr: {log_uniform: [0, 0.1]}\n  seed: {loguniform: [1, 2]}\n",
      "r.yaml");
  EXPECT_THAT(IssueFor(bad2, "axes.matrix_lr.log_uniform").message, HasSubstr("lo > 0"));
  EXPECT_THAT(IssueFor(bad2, "axes.seed").message, HasSubstr("did you mean \"log_uniform\""));
  SweepCheck bad3 = CheckSweepText("mode: random\naxes: {seed: [1, 2]}\n", "r.yaml");
  EXPECT_THAT(IssueFor(bad3, "mode").message, HasSubstr("needs samples"));
}

TEST(SweepFileTest, GridLargerThanMaxJobsIsRefused) {
  SweepCheck c = CheckSweepText("max_jobs: 3\nbase: {data: d}\naxes: {loops: [1, 2], seed: [1, 2]}\n", "g.yaml");
  ASSERT_EQ(c.errors.size(), 1u) << FormatIssues(c, false);
  EXPECT_THAT(c.errors[0].message, HasSubstr("4 jobs, more than max_jobs = 3"));
}

TEST(SweepFileTest, DuplicateKeysAndNonMappingDocuments) {
  SweepCheck c = CheckSweepText("base: {data: d}\ngpus: 1\ngpus: 2\n", "d.yaml");
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_EQ(c.errors[0].pos.line, 3);
  EXPECT_THAT(c.errors[0].message, HasSubstr("duplicate key \"gpus\" (first set on line 2)"));
  SweepCheck e = CheckSweepText("", "e.yaml");
  ASSERT_EQ(e.errors.size(), 1u);
  EXPECT_THAT(e.errors[0].message, HasSubstr("empty document"));
}

TEST(SweepFileTest, MissingFileIsOneErrorNamingIt) {
  SweepCheck c = CheckSweepFile("/nonexistent/sweep.yaml");
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_THAT(FormatIssues(c, false), HasSubstr("/nonexistent/sweep.yaml: error: cannot read the sweep file"));
}

TEST(SweepFileTest, ClosestKey) {
  EXPECT_EQ(ClosestKey("budgets", {"budget", "base", "axes"}), "budget");
  EXPECT_EQ(ClosestKey("qat_bit", {"qat_bits", "export_bits"}), "qat_bits");
  EXPECT_EQ(ClosestKey("zzzzzzzz", {"budget", "base"}), "");
}

// Every example shipped in examples/ is valid.
TEST(SweepFileTest, ShippedExamplesAreValid) {
  const char* src = std::getenv("CADDIE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  for (const char* name : {"depth_recurrence", "vocab_sizes", "qat_bits", "ssm_variants", "combined", "demo",
                           "full_size"}) {
    const std::string path = std::string(src) + "/examples/" + name + ".yaml";
    SweepCheck c = CheckSweepFile(path);
    EXPECT_TRUE(c.ok()) << FormatIssues(c, false);
    EXPECT_FALSE(c.jobs.empty()) << path;
  }
}

}  // namespace
}  // namespace caddie::cli
