// `caddie up`: the embedded default. Starts a local caddie-controller (SQLite
// file under the data directory) and one caddie-worker as child processes,
// builds the corpus and tokenizer when missing, submits the demo sweep
// (examples/demo.yaml) unless it already exists, shows its progress and prints
// the leaderboard. Ctrl-C stops the worker (and its trainers), then the
// controller; nothing is left running. A second run reuses the database, the
// data and a finished sweep.
// Not thread-safe: one `up` per process; children are spawned from the main thread.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "caddie/v1/types.pb.h"
#include "cli/commands.h"
#include "cli/render.h"

namespace caddie::cli {

// The demo sweep's vocab_size; `up` builds this tokenizer.
inline constexpr int kDemoVocab = 1024;

void RegisterUpCommand(CLI::App& app, GlobalOptions& g);

// Finds the program `name` for `up`: in `bin_dir` when given, else next to the
// running `caddie` binary, in the build tree's folders (./data, ../controller,
// ../worker, ../model), then on PATH. NotFound names every place it looked.
absl::StatusOr<std::string> FindCaddieBinary(const std::string& name, const std::string& bin_dir,
                                             const std::string& self_dir);

// The demo sweep's YAML with `data` pointing at `data_dir` (an absolute path).
std::string DemoSweepYaml(const std::string& data_dir);

// The port of "caddie-controller listening on HOST:PORT" in `log`; 0 if absent.
int ParseListeningPort(const std::string& log);

// The progress block `up` redraws: one line per job with its state, params and,
// for running jobs, a bar of training time against the budget; finished jobs show
// val_bpb and artifact size.
std::string UpProgressBlock(const std::string& title, const std::vector<v1::Job>& jobs,
                            const std::map<std::string, WatchView>& views, const Style& st);

}  // namespace caddie::cli
