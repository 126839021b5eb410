// Code bytes: the size of the trainer source files that define the model and
// its loading (listed once, in model/code_files.cmake), counted at build time.
// They are part of the artifact budget. Thread-safe: constant data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace caddie::model {

struct CodeFile {
  std::string path;  // relative to the repository root
  int64_t bytes = 0;
};

// Total bytes of CodeFiles(), as they were when this binary was built.
int64_t CodeBytes();

// The listed files and their sizes, in list order.
std::vector<CodeFile> CodeFiles();

}  // namespace caddie::model
