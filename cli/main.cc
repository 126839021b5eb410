// caddie: the command-line tool of the caddie sweep service.
#include <CLI/CLI.hpp>

#include "caddie/version.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/interrupt.h"
#include "cli/up.h"
#ifdef CADDIE_HAVE_DATAPREP
#include "cli/data/data_command.h"
#endif

int main(int argc, char** argv) {
  // Before any thread starts, so every thread inherits the blocked signals.
  caddie::cli::InstallInterruptHandling();
  CLI::App app{"caddie: architecture sweeps for small language models under Parameter Golf budgets"};
  app.set_version_flag("--version", std::string("caddie ") + CADDIE_VERSION);
  app.footer(caddie::cli::ExitCodesHelp());
  app.require_subcommand(1);
  caddie::cli::GlobalOptions globals;
  caddie::cli::AddGlobalOptions(app, globals);
  caddie::cli::RegisterUpCommand(app, globals);
  caddie::cli::RegisterCommands(app, globals);
#ifdef CADDIE_HAVE_DATAPREP
  caddie::cli::RegisterDataCommand(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::Error& e) {
    const int code = app.exit(e);
    // CLI11's own parse errors (100..127) are bad input for us.
    return code >= 100 && code < 128 ? caddie::cli::kExitBadInput : code;
  }
  return 0;
}
