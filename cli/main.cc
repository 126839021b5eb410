// caddie: placeholder CLI entry point.
#include <CLI/CLI.hpp>

#include "caddie/version.h"

int main(int argc, char** argv) {
  CLI::App app{"caddie"};
  app.set_version_flag("--version", std::string("caddie ") + CADDIE_VERSION);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
