// caddie: the command-line tool of the caddie sweep service.
#include <CLI/CLI.hpp>

#include "caddie/version.h"
#include "cli/exit_codes.h"
#ifdef CADDIE_HAVE_DATAPREP
#include "cli/data/data_command.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"caddie: architecture sweeps for small language models under Parameter Golf budgets"};
  app.set_version_flag("--version", std::string("caddie ") + CADDIE_VERSION);
  app.footer(caddie::cli::ExitCodesHelp());
#ifdef CADDIE_HAVE_DATAPREP
  caddie::cli::RegisterDataCommand(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code >= 100 && code < 128 ? caddie::cli::kExitBadInput : code;
  }
  return 0;
}
