// `caddie data`: builds the corpus, tokenizer, shards and byte tables.
// Registered on the CLI's root app by cli/main.cc.
#pragma once

#include <CLI/CLI.hpp>

namespace caddie::cli {

// Adds the `data` subcommand (and its options) to `app`.
void RegisterDataCommand(CLI::App& app);

}  // namespace caddie::cli
