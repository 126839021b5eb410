// libFuzzer target: the artifact reader (model/artifact.h). Any bytes must give
// tensors or an error; an artifact that imports must describe the same tensors.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/artifact.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto described = caddie::model::DescribeArtifact(bytes);
  auto imported = caddie::model::ImportArtifact(bytes);
  if (imported.ok()) {
    if (!described.ok() || described->size() != imported->size()) __builtin_trap();
    for (size_t i = 0; i < imported->size(); ++i) {
      if ((*described)[i].name != (*imported)[i].first) __builtin_trap();
    }
  }
  return 0;
}
