// The `caddie` subcommands that talk to a controller (sweep validate/submit/
// cancel, sweeps, jobs, job, watch, logs, cancel, leaderboard, workers, workers
// drain/undrain) and the global options they share. Each command's callback
// throws CLI::RuntimeError with an exit code of cli/exit_codes.h on failure,
// after printing why on stderr.
// Not thread-safe: registration and parsing happen on the main thread.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "cli/client.h"
#include "cli/term.h"

namespace caddie::cli {

// Options every command accepts (given before or after the subcommand).
struct GlobalOptions {
  std::string addr;
  std::string token;
  std::string tls_ca;
  std::string config;
  bool no_color = false;
  double timeout_s = 10.0;
};

// Adds --addr, --token, --tls-ca, --config, --no-color, --timeout to `app` and makes them
// reachable after any subcommand.
void AddGlobalOptions(CLI::App& app, GlobalOptions& g);

// Registers the controller-facing subcommands on `app`. `g` must outlive parsing.
void RegisterCommands(CLI::App& app, GlobalOptions& g);

// The connection the global options, environment and config file resolve to.
absl::StatusOr<Connection> ResolveFromGlobals(const GlobalOptions& g);

// Prints `status` on stderr as "caddie: <message>" and throws the matching
// CLI::RuntimeError; never returns.
[[noreturn]] void Fail(const absl::Status& status);

// Milliseconds since the unix epoch.
int64_t NowUnixMs();

}  // namespace caddie::cli
