// The bad-input table: every malformed input a researcher (or a broken tool)
// can hand caddie outside the network — sweep YAML, sweep JSON, trainer specs,
// token shards — with the exact error each must give. One row per case; a row
// fails if the input is accepted, if the error does not name the problem, or if
// the reader crashes (the test process would die).
//
// The `caddie sweep validate` rows run the real CLI as a subprocess: a bad file
// must exit 2 (kExitBadInput) with the message on stderr, never crash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/sweep_file.h"
#include "common/core/shard_format.h"
#include "common/core/train_spec.h"
#include "common/subprocess.h"
#include "common/sweep.h"
#include "tests/chaos/harness.h"

namespace caddie {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// One row: a name for the test, the input, and text the error must contain.
struct Row {
  const char* name;
  std::string input;
  std::string want;
};

std::string AllIssues(const cli::SweepCheck& c) { return cli::FormatIssues(c, false); }

// A grid of `axes` axes with `values` values each (values^axes jobs).
std::string HugeGridYaml(int axes, int values) {
  std::string y = "name: huge\nbase:\n  num_layers: 2\naxes:\n";
  const char* keys[] = {"seed", "matrix_lr", "scalar_lr", "embed_lr", "head_lr", "beta1"};
  for (int a = 0; a < axes; ++a) {
    y += std::string("  ") + keys[a] + ": [";
    for (int v = 0; v < values; ++v) y += (v ? ", " : "") + std::to_string(a == 0 ? v + 1 : 0.001 * (v + 1));
    y += "]\n";
  }
  return y;
}

// ---------------------------------------------------------------- sweep YAML

const std::vector<Row>& SweepYamlRows() {
  static const std::vector<Row> rows = {
      {"SyntaxError", "name: x\naxes: [unclosed\n", "bad.yaml:3:1: error"},
      {"TabIndentation", "name: x\nbase:\n\tnum_layers: 2\n", "bad.yaml:3:"},
      {"NotAMapping", "- just\n- a list\n", "bad.yaml:1:1: error: a sweep file is a mapping"},
      {"UnknownTopKey", "nmae: x\n", "did you mean \"name\""},
      {"UnknownTrainerKey", "base:\n  num_layer: 4\n", "unknown spec key \"num_layer\""},
      {"AxesNotMapping", "axes: [1, 2]\n", "axes: must be a mapping"},
      {"EmptyGridAxis", "axes:\n  loops: []\n", "loops"},
      {"WrongTypeInBase", "base:\n  num_layers: deep\n", "spec key \"num_layers\" must be an integer, got \"deep\""},
      {"OutOfRangeInAxis", "axes:\n  qat_bits: [4, 99]\n", "qat_bits"},
      {"NegativeTrainBudget", "budget:\n  train_seconds: -5\n", "budget.train_seconds"},
      {"NegativeArtifactLimit", "budget:\n  artifact_limit_bytes: -1\n", "budget.artifact_limit_bytes"},
      {"NegativeGpus", "gpus: -1\n", "gpus"},
      {"NegativeMaxAttempts", "max_attempts: -2\n", "max_attempts"},
      {"HugeGrid", HugeGridYaml(4, 40), "more than max_jobs = 1000"},
      {"MaxJobsAboveCeiling", "max_jobs: 1000000\naxes:\n  loops: [1, 2]\n", "max_jobs"},
      {"EmptyName", "name: \"\"\n", "name: must be 1 to 128 characters"},
      {"HugeName", "name: " + std::string(4000, 'a') + "\n", "name: must be 1 to 128 characters"},
      {"UnknownMode", "mode: bayesian\n", "mode"},
      {"LogUniformNonPositive", "mode: random\nsamples: 2\naxes:\n  matrix_lr: {log_uniform: [0, 0.1]}\n",
       "log_uniform"},
      {"BadEarlyStopping", "early_stopping:\n  type: hyperband\n", "early_stopping.type"},
      {"BinaryGarbage", std::string("name: \x01\x02\xff\xfe\x00zz", 14), "bad.yaml"},
  };
  return rows;
}

class SweepYamlBadInput : public ::testing::TestWithParam<Row> {};

TEST_P(SweepYamlBadInput, RejectedWithTheExpectedError) {
  const Row& r = GetParam();
  cli::SweepCheck c = cli::CheckSweepText(r.input, "bad.yaml");
  EXPECT_FALSE(c.ok()) << "accepted: " << r.input;
  EXPECT_THAT(AllIssues(c), HasSubstr(r.want));
}

INSTANTIATE_TEST_SUITE_P(Table, SweepYamlBadInput, ::testing::ValuesIn(SweepYamlRows()),
                         [](const auto& info) { return std::string(info.param.name); });

// Names are data, never paths or SQL: a sweep named like a traversal or an
// injection is valid and keeps its exact text.
TEST(SweepYamlNames, TraversalAndSqlLookingNamesAreKeptVerbatim) {
  for (const std::string name : {"../../etc/passwd", "x'; DROP TABLE jobs; --", "a/b\\c", "\" OR 1=1 --"}) {
    nlohmann::json j = name;
    cli::SweepCheck c = cli::CheckSweepText("name: " + j.dump() + "\nbase:\n  num_layers: 2\n", "n.yaml");
    ASSERT_TRUE(c.ok()) << name << ": " << AllIssues(c);
    EXPECT_EQ(c.spec.name(), name);
  }
}

// ---------------------------------------------------------------- sweep JSON

const std::vector<Row>& SweepJsonRows() {
  static const std::vector<Row> rows = {
      {"NotJson", "{base: 1", "sweep_json is not valid JSON"},
      {"NotObject", "[1, 2]", "sweep JSON must be an object"},
      {"BaseNotObject", R"({"base": 3})", "sweep 'base' must be an object of trainer keys"},
      {"AxesNotObject", R"({"axes": "loops"})", "sweep 'axes' must be an object"},
      {"UnknownKey", R"({"bsae": {}})", "bsae"},
      {"UnknownMode", R"({"mode": "bayes"})", "sweep mode must be grid or random, got \"bayes\""},
      {"NegativeMaxJobs", R"({"max_jobs": -1})", "max_jobs must be a positive integer, got -1"},
      {"MaxJobsAboveCeiling", R"({"max_jobs": 100000000})",
       "max_jobs = 100000000 is above the controller's ceiling of 100000"},
      {"HugeGrid",
       R"({"axes": {"a": [1,2,3,4,5,6,7,8,9,10], "b": [1,2,3,4,5,6,7,8,9,10], "c": [1,2,3,4,5,6,7,8,9,10],
                     "d": [1,2,3,4,5,6,7,8,9,10], "e": [1,2,3,4,5,6,7,8,9,10], "f": [1,2,3,4,5,6,7,8,9,10],
                     "g": [1,2,3,4,5,6,7,8,9,10], "h": [1,2,3,4,5,6,7,8,9,10], "i": [1,2,3,4,5,6,7,8,9,10],
                     "j": [1,2,3,4,5,6,7,8,9,10], "k": [1,2,3,4,5,6,7,8,9,10], "l": [1,2,3,4,5,6,7,8,9,10],
                     "m": [1,2,3,4,5,6,7,8,9,10], "n": [1,2,3,4,5,6,7,8,9,10], "o": [1,2,3,4,5,6,7,8,9,10],
                     "p": [1,2,3,4,5,6,7,8,9,10], "q": [1,2,3,4,5,6,7,8,9,10], "r": [1,2,3,4,5,6,7,8,9,10],
                     "s": [1,2,3,4,5,6,7,8,9,10], "t": [1,2,3,4,5,6,7,8,9,10]}})",
       "more than max_jobs = 1000"},
      {"EmptyGridAxis", R"({"axes": {"loops": []}})", "grid axis 'loops' must be a non-empty list"},
      {"RandomSamplesZero", R"({"mode": "random", "samples": 0, "axes": {"loops": [1]}})", "samples"},
      {"SamplesInGrid", R"({"samples": 4})", "'samples' only applies to mode: random"},
      {"UniformLoAboveHi", R"({"mode": "random", "samples": 2, "axes": {"matrix_lr": {"uniform": [1, 0]}}})",
       "matrix_lr"},
      {"EarlyStoppingFactorOne", R"({"early_stopping": {"type": "asha", "reduction_factor": 1}})",
       "early_stopping.reduction_factor must be >= 2, got 1"},
      {"EarlyStoppingNegativeGrace", R"({"early_stopping": {"type": "median", "grace_steps": -5}})",
       "early_stopping.grace_steps must be >= 0, got -5"},
  };
  return rows;
}

class SweepJsonBadInput : public ::testing::TestWithParam<Row> {};

TEST_P(SweepJsonBadInput, RejectedWithTheExpectedError) {
  const Row& r = GetParam();
  auto e = ExpandSweepText(r.input);
  ASSERT_FALSE(e.ok()) << "accepted: " << r.input;
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(e.status().message()), HasSubstr(r.want));
}

INSTANTIATE_TEST_SUITE_P(Table, SweepJsonBadInput, ::testing::ValuesIn(SweepJsonRows()),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------- trainer specs

const std::vector<Row>& TrainSpecRows() {
  static const std::vector<Row> rows = {
      {"NotJson", "{\"num_layers\": ", "spec is not valid JSON"},
      {"NotObject", "[1]", "spec must be a JSON object, got array"},
      {"UnknownKey", R"({"num_layer": 4})", "unknown spec key \"num_layer\" (did you mean \"num_layers\""},
      {"FakeKeyRejected", R"({"fake": {"steps": 1}})", "unknown spec key \"fake\""},
      {"WrongType", R"({"num_layers": "9"})", "spec key \"num_layers\" must be an integer, got \"9\""},
      {"FloatForInt", R"({"num_layers": 2.5})", "spec key \"num_layers\" must be an integer, got 2.5"},
      {"NegativeLayers", R"({"num_layers": -3})", "spec key \"num_layers\" = -3 is out of range"},
      {"NegativeBudget", R"({"max_wallclock_seconds": -1})", "spec key \"max_wallclock_seconds\" = -1"},
      {"NegativeIterations", R"({"iterations": -100})", "spec key \"iterations\" = -100 is out of range"},
      {"HugeModelDim", R"({"model_dim": 99999999999})", "spec key \"model_dim\""},
      {"BadEnum", R"({"device": "tpu"})", "spec key \"device\" = \"tpu\" is not one of"},
      {"BadCompression", R"({"compression": "lz4"})", "spec key \"compression\" = \"lz4\" is not one of"},
      {"ShellInString", R"({"device": "cpu; rm -rf /"})", "spec key \"device\" = \"cpu; rm -rf /\" is not one of"},
      {"BoolAsString", R"({"tie_embeddings": "yes"})", "spec key \"tie_embeddings\" must be true or false"},
      {"HeadsDontDivide", R"({"model_dim": 512, "num_heads": 7})", "num_heads"},
      {"BadRecurLayers", R"({"recur_layers": "5-2"})", "spec key \"recur_layers\" = \"5-2\""},
      {"BadSeqLenSchedule", R"({"seq_len_schedule": "abc"})", "spec key \"seq_len_schedule\""},
      {"NanViaString", R"({"matrix_lr": "nan"})", "spec key \"matrix_lr\" must be a number, got \"nan\""},
  };
  return rows;
}

class TrainSpecBadInput : public ::testing::TestWithParam<Row> {};

TEST_P(TrainSpecBadInput, RejectedWithTheExpectedError) {
  const Row& r = GetParam();
  auto s = ParseTrainSpecText(r.input);
  ASSERT_FALSE(s.ok()) << "accepted: " << r.input;
  EXPECT_THAT(s.status().message(), HasSubstr(r.want));
}

INSTANTIATE_TEST_SUITE_P(Table, TrainSpecBadInput, ::testing::ValuesIn(TrainSpecRows()),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------- shards

std::string ShardHeader(int32_t magic, int32_t version, int32_t count) {
  std::string h(kShardHeaderBytes, '\0');
  std::memcpy(h.data(), &magic, 4);
  std::memcpy(h.data() + 4, &version, 4);
  std::memcpy(h.data() + 8, &count, 4);
  return h;
}

const std::vector<Row>& ShardRows() {
  static const std::vector<Row> rows = {
      {"Empty", "", "truncated header (0"},
      {"ShortHeader", std::string(100, '\0'), "truncated header (100"},
      {"WrongMagic", ShardHeader(12345, 1, 0), "wrong magic 12345"},
      {"WrongVersion", ShardHeader(kShardMagic, 7, 0), "unsupported version 7"},
      {"NegativeCount", ShardHeader(kShardMagic, 1, -5), "negative token count -5"},
      {"TruncatedBody", ShardHeader(kShardMagic, 1, 1000) + std::string(10, '\1'), "truncated body"},
      {"HugeCountClaim", ShardHeader(kShardMagic, 1, 0x7fffffff), "truncated body"},
      {"TrailingBytes", ShardHeader(kShardMagic, 1, 2) + std::string(4 + 6, '\1'), "token count 2 does not match the file size 1034"},
      {"TextFile", std::string("hello, this is not a shard at all\n") + std::string(2000, 'x'), "wrong magic"},
  };
  return rows;
}

class ShardBadInput : public ::testing::TestWithParam<Row> {};

TEST_P(ShardBadInput, RejectedByBothReaders) {
  const Row& r = GetParam();
  const fs::path p = fs::path(::testing::TempDir()) / (std::string("bad_") + r.name + "_val_000000.bin");
  std::ofstream(p, std::ios::binary).write(r.input.data(), static_cast<std::streamsize>(r.input.size()));
  auto tokens = ReadShard(p.string());
  ASSERT_FALSE(tokens.ok()) << r.name;
  EXPECT_THAT(tokens.status().message(), HasSubstr(r.want));
  EXPECT_THAT(tokens.status().message(), HasSubstr(p.string())) << "the error must name the file";
  auto count = ReadShardTokenCount(p.string());
  ASSERT_FALSE(count.ok()) << r.name;
  EXPECT_THAT(count.status().message(), HasSubstr(r.want));
  fs::remove(p);
}

INSTANTIATE_TEST_SUITE_P(Table, ShardBadInput, ::testing::ValuesIn(ShardRows()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ShardBadInputPaths, MissingFileAndDirectoryAreErrors) {
  auto missing = ReadShard("/nonexistent/../../train_000000.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/../../train_000000.bin"));
  auto dir = ReadShard(::testing::TempDir());
  ASSERT_FALSE(dir.ok());
  auto none = ListShards(::testing::TempDir() + "/definitely-missing", "train");
  ASSERT_FALSE(none.ok());
}

TEST(ByteTableBadInput, CorruptTablesAreErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", ""},
      {"{not json", ""},
      {R"({"vocab_size": 2, "base_bytes": [1], "has_leading_space": [0, 0], "is_boundary": [0, 0]})", ""},
      {R"({"vocab_size": -1, "base_bytes": [], "has_leading_space": [], "is_boundary": []})", ""},
      {"[]", ""},
  };
  int i = 0;
  for (const auto& [text, unused] : cases) {
    const fs::path p = fs::path(::testing::TempDir()) / ("byte_table_" + std::to_string(i++) + ".json");
    std::ofstream(p) << text;
    auto t = ReadByteTable(p.string());
    EXPECT_FALSE(t.ok()) << "accepted byte table: " << text;
    if (!t.ok()) {
      EXPECT_THAT(t.status().message(), HasSubstr(p.string())) << text;
    }
    fs::remove(p);
  }
}

// ---------------------------------------------------------------- the CLI as a process

struct CliRow {
  const char* name;
  std::string yaml;
  std::string want;
};

class CliValidateBadInput : public ::testing::TestWithParam<CliRow> {};

TEST_P(CliValidateBadInput, ExitsTwoWithTheMessage) {
  const CliRow& r = GetParam();
  const fs::path file = fs::path(::testing::TempDir()) / (std::string("cli_") + r.name + ".yaml");
  std::ofstream(file) << r.yaml;
  // validate must not need a controller: point it at a closed port.
  auto res = reliability::RunToExit({CADDIE_CLI_BIN, "sweep", "validate", file.string()}, ::testing::TempDir(),
                                    {{"CADDIE_CONTROLLER", "127.0.0.1:1"}});
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_FALSE(res->status.signaled) << "caddie crashed: " << res->status.ToString();
  EXPECT_EQ(res->status.code, 2) << res->output;
  EXPECT_THAT(res->output, HasSubstr(r.want));
  fs::remove(file);
}

INSTANTIATE_TEST_SUITE_P(
    Table, CliValidateBadInput,
    ::testing::Values(CliRow{"Syntax", "axes: {loops: [1, 2\n", "error"},
                      CliRow{"UnknownKey", "base:\n  num_layer: 3\n", "unknown spec key \"num_layer\""},
                      CliRow{"NegativeBudget", "budget:\n  train_seconds: -1\n", "budget.train_seconds"},
                      CliRow{"HugeGrid", HugeGridYaml(3, 20), "more than max_jobs = 1000"},
                      CliRow{"TraversalInData", "base:\n  data: ../../../../etc\n  fake: 1\n", "unknown spec key \"fake\""}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(CliValidateBadInputFile, MissingFileExitsTwoNamingIt) {
  auto res = reliability::RunToExit({CADDIE_CLI_BIN, "sweep", "validate", "../../no/such/sweep.yaml"},
                                    ::testing::TempDir());
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status.code, 2) << res->output;
  EXPECT_THAT(res->output, HasSubstr("../../no/such/sweep.yaml"));
}

}  // namespace
}  // namespace caddie
