#include "cli/data/data_command.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace caddie::cli {
namespace {

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

// Candidates in order; the last one is a bare name for execvp's PATH search.
std::vector<std::string> DataprepCandidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("CADDIE_DATAPREP"); env && *env) out.push_back(env);
  const std::string dir = SelfDir();
  if (!dir.empty()) {
    out.push_back(dir + "/caddie-dataprep");
    out.push_back(dir + "/data/caddie-dataprep");  // the build tree: cli/caddie, cli/data/caddie-dataprep
  }
#ifdef CADDIE_DATAPREP_BUILD_PATH
  out.push_back(CADDIE_DATAPREP_BUILD_PATH);
#endif
  out.push_back("caddie-dataprep");
  return out;
}

// Runs caddie-dataprep `args` and returns its exit code (128 + signal if killed).
int RunDataprep(const std::vector<std::string>& args) {
  std::string program;
  const auto candidates = DataprepCandidates();
  for (size_t i = 0; i + 1 < candidates.size(); ++i) {
    if (::access(candidates[i].c_str(), X_OK) == 0) {
      program = candidates[i];
      break;
    }
  }
  if (program.empty()) program = candidates.back();
  // argv[0] "caddie": the child's usage and messages then read `caddie data ...`.
  std::vector<std::string> argv = {"caddie", "data"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "caddie data: fork failed: %s\n", std::strerror(errno));
    return 1;
  }
  if (pid == 0) {
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execvp(program.c_str(), cargv.data());
    std::string tried;
    for (const auto& c : candidates) tried += (tried.empty() ? "" : ", ") + c;
    std::fprintf(stderr, "caddie data: cannot run caddie-dataprep (tried %s): %s\n", tried.c_str(),
                 std::strerror(errno));
    ::_exit(1);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

void RegisterDataCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "data",
      "Build the corpus, SentencePiece tokenizers, shards and byte tables (<out>/sp<V>/); "
      "`caddie data --help` lists the options");
  // Everything after `data` (--help included) belongs to caddie-dataprep.
  // (fallthrough off: the root app may turn it on for its global options, and
  // then these arguments would be handed back to the root and rejected there.)
  cmd->set_help_flag();
  cmd->fallthrough(false);
  cmd->prefix_command();
  cmd->allow_extras();
  cmd->callback([cmd] {
    const int code = RunDataprep(cmd->remaining());
    if (code != 0) throw CLI::RuntimeError(code);
  });
}

}  // namespace caddie::cli
