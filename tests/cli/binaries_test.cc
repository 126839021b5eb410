// Every caddie program answers --help and --version as a user expects: exit 0,
// usage on stdout naming the program and its options, and "<name> <version>"
// with the version CMake's project() declares (CADDIE_PROJECT_VERSION, passed in
// by tests/cli/CMakeLists.txt; the programs take theirs from caddie/version.h).
// The programs are the built targets ($<TARGET_FILE:...>), run as subprocesses.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/subprocess.h"

namespace caddie {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct Program {
  std::string name;
  std::string path;
  std::vector<std::string> options;  // what its usage must list
};

std::vector<Program> Programs() {
  return {
      {"caddie", CADDIE_CLI_BIN,
       {"--addr", "--token", "--config", "up", "sweep", "jobs", "watch", "logs", "cancel",
        "leaderboard", "workers", "data"}},
      {"caddie-controller", CADDIE_CONTROLLER_BIN, {"--db", "--listen", "--http-listen", "--lease-ttl"}},
      {"caddie-worker", CADDIE_WORKER_BIN, {"--controller", "--token-file", "--trainer", "--gpus"}},
      {"caddie-train", CADDIE_TRAIN_BIN, {"--spec", "--data", "--run-dir", "--benchmark", "--code-bytes"}},
  };
}

struct Result {
  int code = -1;
  std::string out, err;
};

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `argv` (no shell) with stdout and stderr captured; kills it after 30 s.
Result RunProgram(const std::vector<std::string>& argv) {
  static int seq = 0;
  const fs::path dir = fs::temp_directory_path() /
                       ("caddie_binaries_test_" + std::to_string(::getpid()) + "_" + std::to_string(seq++));
  fs::create_directories(dir);
  SpawnOptions o;
  o.argv = argv;
  o.env = CurrentEnvironment();
  o.stdout_path = (dir / "out").string();
  o.stderr_path = (dir / "err").string();
  Result r;
  auto child = Spawn(o);
  EXPECT_TRUE(child.ok()) << child.status();
  if (!child.ok()) return r;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::optional<ExitStatus> st;
  while (!(st = TryReap(child->pid))) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child->pid, SIGKILL);
      while (!(st = TryReap(child->pid))) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      ADD_FAILURE() << argv[0] << " did not exit within 30 s";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.code = st->signaled ? 128 + st->signal : st->code;
  r.out = Slurp(dir / "out");
  r.err = Slurp(dir / "err");
  fs::remove_all(dir);
  return r;
}

TEST(Binaries, ProjectVersionIsKnown) {
  // A version like 0.1.0: what CMake's project(VERSION ...) gave the build.
  EXPECT_THAT(std::string(CADDIE_PROJECT_VERSION), ::testing::MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+.*"));
}

TEST(Binaries, VersionPrintsNameAndProjectVersion) {
  for (const Program& p : Programs()) {
    SCOPED_TRACE(p.path);
    ASSERT_TRUE(fs::exists(p.path));
    const Result r = RunProgram({p.path, "--version"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, p.name + " " + CADDIE_PROJECT_VERSION + "\n");
    EXPECT_EQ(r.err, "");
  }
}

TEST(Binaries, HelpExitsZeroAndDescribesTheProgram) {
  for (const Program& p : Programs()) {
    SCOPED_TRACE(p.path);
    for (const char* flag : {"--help", "-h"}) {
      if (p.name == "caddie-train" && std::string(flag) == "-h") continue;  // it has --help only
      const Result r = RunProgram({p.path, flag});
      EXPECT_EQ(r.code, 0) << flag << ": " << r.err;
      // The first line names the program: "caddie-worker: ..." or "usage: caddie-train ...".
      const std::string first = r.out.substr(0, r.out.find('\n'));
      EXPECT_THAT(first, ::testing::AnyOf(StartsWith(p.name + ": "), StartsWith("usage: " + p.name + " ")))
          << flag;
      for (const std::string& opt : p.options) EXPECT_THAT(r.out, HasSubstr(opt)) << flag << " lists " << opt;
      EXPECT_THAT(r.out, HasSubstr("--help"));
      EXPECT_THAT(r.out, HasSubstr("--version"));
      EXPECT_THAT(r.out, Not(HasSubstr(std::string(CADDIE_PROJECT_VERSION) + "\n")))
          << "help is not the version";
    }
  }
}

// The other side: an option the program does not have fails, and says so on
// stderr instead of printing help or version on stdout.
TEST(Binaries, UnknownOptionFails) {
  for (const Program& p : Programs()) {
    SCOPED_TRACE(p.path);
    const Result r = RunProgram({p.path, "--no-such-option-xyz"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err, "");
    EXPECT_THAT(r.out, Not(HasSubstr(p.name + " " + CADDIE_PROJECT_VERSION)));
  }
}

}  // namespace
}  // namespace caddie
