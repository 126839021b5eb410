// caddie-train: placeholder entry point (the trainer lands with issue 5).
#include <cstdio>
#include <cstring>

#include "caddie/version.h"

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--version")) {
      std::printf("caddie-train %s\n", CADDIE_VERSION);
      return 0;
    }
    if (!std::strcmp(argv[i], "--help")) {
      std::printf("usage: caddie-train --spec SPEC.json [--data DIR] [--run-dir DIR]\n");
      return 0;
    }
  }
  std::fprintf(stderr, "caddie-train: not implemented yet\n");
  return 2;
}
