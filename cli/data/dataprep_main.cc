// caddie-dataprep: `caddie data` as a standalone program, for the test fixture and
// for machines that build only the data tools. `caddie-dataprep data --vocab 1024`
// is the same as `caddie data --vocab 1024`.
#include <CLI/CLI.hpp>

#include "caddie/version.h"
#include "cli/data/data_command.h"

int main(int argc, char** argv) {
  CLI::App app{"caddie-dataprep: corpus, tokenizers and shards for caddie"};
  app.set_version_flag("--version", std::string("caddie-dataprep ") + CADDIE_VERSION);
  caddie::cli::RegisterDataCommandInProcess(app);
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
