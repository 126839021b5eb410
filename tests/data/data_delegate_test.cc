// `caddie data` as the caddie CLI links it: the subcommand runs caddie-dataprep in
// a child process. This binary links libprotobuf like the gRPC-based CLI, the
// situation in which libsentencepiece cannot run in-process.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <google/protobuf/stubs/common.h>

#include "cli/data/data_command.h"

namespace caddie::cli {
namespace {

namespace fs = std::filesystem;

// Parses `args` after the program name; returns the exit code the CLI would use.
int RunCli(std::vector<std::string> args) {
  CLI::App app{"caddie"};
  // As cli/main.cc sets up the root: global options fall through from subcommands.
  app.fallthrough();
  std::string addr;
  app.add_option("--addr", addr, "controller");
  RegisterDataCommand(app);
  args.insert(args.begin(), "caddie");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    return e.get_exit_code();
  }
  return 0;
}

class DataDelegateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Calls into libprotobuf, so it is really loaded in this process.
    GOOGLE_PROTOBUF_VERIFY_VERSION;
    const std::string bin = std::string(std::getenv("CADDIE_BINARY_DIR")) + "/cli/data/caddie-dataprep";
    ASSERT_TRUE(fs::exists(bin)) << bin;
    ::setenv("CADDIE_DATAPREP", bin.c_str(), 1);
    dir_ = fs::temp_directory_path() / ("caddie_delegate_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(DataDelegateTest, BadVocabGivesTheChildsExitCode) {
  EXPECT_EQ(RunCli({"data", "--vocab", "70000", "--out", (dir_ / "out").string()}), 2);
  EXPECT_FALSE(fs::exists(dir_ / "out" / "sp70000"));
}

TEST_F(DataDelegateTest, BuildsFromAUserCorpusInTheChild) {
  {
    std::ofstream f(dir_ / "docs.jsonl");
    for (int i = 0; i < 60; ++i) {
      f << R"({"text": "Document )" << i
        << R"( tells of ships, whales and the sea; the captain counts 12 barrels and 7 sails."})" << "\n";
    }
  }
  const int code = RunCli({"data", "--vocab", "300", "--corpus", (dir_ / "docs.jsonl").string(),
                           "--out", (dir_ / "out").string(), "--cache-dir", (dir_ / "cache").string(),
                           "--val-fraction", "0.2", "--quiet"});
  EXPECT_EQ(code, 0);
  EXPECT_TRUE(fs::exists(dir_ / "out" / "sp300" / "byte_table.json"));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "sp300" / "val_000000.bin"));
}

TEST_F(DataDelegateTest, HelpAndGlobalOptionsPassThrough) {
  EXPECT_EQ(RunCli({"data", "--help"}), 0);
  // A global option before `data` is the root's; everything after goes to the child.
  EXPECT_EQ(RunCli({"--addr", "127.0.0.1:1", "data", "--vocab", "100"}), 2);
}

}  // namespace
}  // namespace caddie::cli
