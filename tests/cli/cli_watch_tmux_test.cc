// A terminal test of `caddie watch`: it runs inside a tmux pane (a real pty, so
// the CLI draws its live status line) against a real controller and worker, and
// successive capture-pane snapshots must show the progress bar and step count
// advancing, then the job's final result.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/subprocess.h"
#include "tests/cli/cli_harness.h"

namespace caddie::clitest {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

class Tmux {
 public:
  Tmux() : socket_(absl::StrCat("caddie-cli-test-", getpid())) {}
  ~Tmux() { (void)Run({"kill-server"}); }

  absl::StatusOr<std::string> Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"tmux", "-L", socket_, "-f", "/dev/null"});
    return RunAndCapture(args, std::chrono::seconds(10));
  }
  std::string Capture() {
    auto s = Run({"capture-pane", "-p", "-t", "watch"});
    return s.ok() ? *s : "";
  }

 private:
  std::string socket_;
};

TEST(CliWatchTmuxTest, WatchRedrawsProgressLiveInATerminal) {
  // 40 steps of 150 ms: about 6 s of training against a 10 s budget.
  LocalCluster c(R"({"steps": 40, "step_ms": 150, "val_bpb": 1.875})");
  ASSERT_TRUE(c.ok()) << c.error();
  absl::StatusOr<std::string> submitted = c.SubmitSweepFile(
      "w.yaml", "name: tmux-watch\nbase: {data: d, log_every: 1, val_every: 10}\nbudget: {train_seconds: 10}\n");
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string job = *submitted;

  Tmux tmux;
  const std::string cmd = absl::StrCat("env -u NO_COLOR TERM=xterm-256color ", CADDIE_CLI_BIN, " --addr ", c.addr(),
                                       " watch ", job, "; echo CADDIE_EXIT=$?; sleep 60");
  auto started = tmux.Run({"new-session", "-d", "-s", "watch", "-x", "180", "-y", "30", cmd});
  ASSERT_TRUE(started.ok()) << started.status();

  // Snapshots until the job ends: the percentages shown must rise through
  // several distinct values while the status line is redrawn in place.
  std::set<int> percents;
  std::vector<int> seq;
  std::string screen;
  static const std::regex pct_re("\\] +([0-9]+)%  ");
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until) {
    screen = tmux.Capture();
    std::smatch m;
    if (std::regex_search(screen, m, pct_re)) {
      const int p = std::stoi(m[1]);
      if (percents.insert(p).second) seq.push_back(p);
    }
    if (screen.find("CADDIE_EXIT=") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_THAT(screen, HasSubstr("CADDIE_EXIT=0")) << screen << c.WorkerLog();
  EXPECT_GE(percents.size(), 3u) << "the bar did not advance; snapshots saw: " << ::testing::PrintToString(seq);
  EXPECT_TRUE(std::is_sorted(seq.begin(), seq.end())) << ::testing::PrintToString(seq);
  EXPECT_THAT(screen, HasSubstr("is running"));
  EXPECT_THAT(screen, HasSubstr("val_bpb 1.8750"));
  EXPECT_THAT(screen, HasSubstr("is succeeded"));
  // The status line was redrawn in place: one line per val event and state
  // change, not one per step.
  int lines = 0;
  for (absl::string_view l : absl::StrSplit(screen, '\n')) lines += absl::StripAsciiWhitespace(l).empty() ? 0 : 1;
  EXPECT_LT(lines, 12) << screen;
}

}  // namespace
}  // namespace caddie::clitest
