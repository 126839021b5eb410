// `caddie data`: builds the corpus, tokenizer, shards and byte tables.
// Registered on the CLI's root app by cli/main.cc.
#pragma once

#include <CLI/CLI.hpp>

namespace caddie::cli {

// Adds the `data` subcommand to `app`. It runs the pipeline in a child process,
// the `caddie-dataprep` program: libsentencepiece carries its own protobuf-lite
// 3.14, which aborts in any process that also loads libprotobuf 3.21 (as the
// gRPC-linked `caddie` does). Arguments pass through unchanged; the child's exit
// code becomes the command's. caddie-dataprep is looked up in $CADDIE_DATAPREP,
// beside the running program, in its data/ subfolder, the build tree, then PATH.
void RegisterDataCommand(CLI::App& app);

// Adds the `data` subcommand that runs the pipeline in this process (options,
// progress, summary; exit 2 on bad input, 1 on other failures). For programs that
// do not load libprotobuf: caddie-dataprep. Defined in caddie_dataprep_core.
void RegisterDataCommandInProcess(CLI::App& app);

}  // namespace caddie::cli
