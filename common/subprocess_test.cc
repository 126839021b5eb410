#include "common/subprocess.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

namespace caddie {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ExitStatus WaitFor(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return DecodeWaitStatus(st);
}

TEST(SpawnTest, EmptyArgvIsInvalid) {
  auto c = Spawn(SpawnOptions{});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpawnTest, MissingProgramIsNotFoundAndNamed) {
  SpawnOptions o;
  o.argv = {"/nonexistent/caddie-nothing"};
  auto c = Spawn(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/caddie-nothing"), std::string::npos);
}

TEST(SpawnTest, ArgvIsPassedWithoutShellAndOutputGoesToFiles) {
  // Logs are opened for append (a restarted run keeps its earlier lines), so
  // start from an empty directory: /tmp may hold an earlier run's files.
  const fs::path dir = fs::path(testing::TempDir()) /
                       ("spawn_files_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  SpawnOptions o;
  // A shell would expand $HOME and split on ';'; execve passes the bytes through.
  o.argv = {"/bin/echo", "a b", "$HOME;x"};
  o.env = {"PATH=/usr/bin:/bin"};
  o.stdout_path = (dir / "out.log").string();
  o.stderr_path = (dir / "err.log").string();
  auto c = Spawn(o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(WaitFor(c->pid).ok());
  EXPECT_EQ(ReadAll(dir / "out.log"), "a b $HOME;x\n");
}

TEST(SpawnTest, EnvironmentIsExactlyTheOneGiven) {
  SpawnOptions o;
  o.argv = {"env"};
  o.env = {"PATH=/usr/bin:/bin", "CADDIE_X=1"};
  SetEnv(&o.env, "CADDIE_X", "2");
  o.pipe_stdout = true;
  auto c = Spawn(o);
  ASSERT_TRUE(c.ok()) << c.status();
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = read(c->stdout_fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  close(c->stdout_fd);
  EXPECT_TRUE(WaitFor(c->pid).ok());
  EXPECT_EQ(out, "PATH=/usr/bin:/bin\nCADDIE_X=2\n");
}

TEST(SpawnTest, NewProcessGroupIsKilledAsOne) {
  SpawnOptions o;
  o.argv = {"/bin/sleep", "30"};
  o.process_group = 0;
  auto leader = Spawn(o);
  ASSERT_TRUE(leader.ok()) << leader.status();
  EXPECT_EQ(leader->pgid, leader->pid);
  EXPECT_EQ(getpgid(leader->pid), leader->pid);
  o.process_group = leader->pgid;
  auto member = Spawn(o);
  ASSERT_TRUE(member.ok()) << member.status();
  EXPECT_EQ(getpgid(member->pid), leader->pid);
  ASSERT_EQ(kill(-leader->pgid, SIGKILL), 0);
  const ExitStatus a = WaitFor(leader->pid), b = WaitFor(member->pid);
  EXPECT_TRUE(a.signaled);
  EXPECT_EQ(a.signal, SIGKILL);
  EXPECT_EQ(b.signal, SIGKILL);
  EXPECT_EQ(a.ToString().rfind("signal 9", 0), 0u) << a.ToString();
}

TEST(SpawnTest, TryReapSeesExitCode) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "exit 3"};  // the test's own choice of program, not a shell in caddie
  auto c = Spawn(o);
  ASSERT_TRUE(c.ok()) << c.status();
  std::optional<ExitStatus> s;
  for (int i = 0; i < 200 && !s; ++i) {
    s = TryReap(c->pid);
    if (!s) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(s.has_value());
  EXPECT_FALSE(s->signaled);
  EXPECT_EQ(s->code, 3);
  EXPECT_EQ(s->ToString(), "exit code 3");
}

TEST(RunAndCaptureTest, CapturesStdout) {
  auto out = RunAndCapture({"/bin/echo", "hello"}, std::chrono::seconds(5));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "hello\n");
}

TEST(RunAndCaptureTest, TimesOutAndKills) {
  const auto t0 = std::chrono::steady_clock::now();
  auto out = RunAndCapture({"/bin/sleep", "30"}, std::chrono::milliseconds(200));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(RunAndCaptureTest, NonZeroExitIsInternal) {
  auto out = RunAndCapture({"/bin/false"}, std::chrono::seconds(5));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(out.status().message().find("exit code 1"), std::string::npos);
}

TEST(PickFreePortTest, ReturnsAUsablePort) {
  auto p = PickFreePort();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_GT(*p, 0);
  EXPECT_LT(*p, 65536);
}

}  // namespace
}  // namespace caddie
