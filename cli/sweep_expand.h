// Expands a checked sweep JSON into its jobs for `caddie sweep validate`'s
// listing. Delegates to common/sweep.h (the controller's own expansion) when it
// is present, so the preview is exactly what the controller will run.
// Thread-safe: a free function.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "cli/sweep_file.h"

namespace caddie::cli {

// Jobs in the controller's order (grid: axis order, last axis fastest; random:
// drawn from the seed). InvalidArgument when the sweep expands to more than
// max_jobs jobs or cannot be expanded.
absl::StatusOr<std::vector<SweepJobPreview>> ExpandSweepPreview(const nlohmann::json& sweep);

}  // namespace caddie::cli
