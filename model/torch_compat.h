// Version guards between LibTorch 1.13 (CPU, Debian) and 2.x (CUDA, GPU machine).
// The one place that knows which LibTorch calls exist where.
#pragma once

#include <torch/version.h>

#include <string>

#define CADDIE_TORCH_AT_LEAST_2 (TORCH_VERSION_MAJOR >= 2)

namespace caddie::model {

// "1.13.1" / "2.11.0" — the LibTorch this binary was built against.
std::string TorchVersionString();

}  // namespace caddie::model
