// caddie-worker: placeholder entry point.
#include <CLI/CLI.hpp>

#include "caddie/version.h"

int main(int argc, char** argv) {
  CLI::App app{"caddie-worker"};
  app.set_version_flag("--version", std::string("caddie-worker ") + CADDIE_VERSION);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
