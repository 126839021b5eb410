// GPU inventory of a worker host: parsed from `nvidia-smi --query-gpu=index,name,
// memory.total --format=csv,noheader` where nvidia-smi exists, else declared on
// the command line (`--gpus N` / `--gpu-ids 0,1`), else none (a CPU-only worker).
//
// Thread-safe: free functions without shared state.
#pragma once

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "caddie/v1/types.pb.h"

namespace caddie::worker {

// Parses nvidia-smi's CSV ("0, NVIDIA H100 80GB HBM3, 81559 MiB" per line).
// InvalidArgument naming the line when a line has not three fields or a bad number.
absl::StatusOr<std::vector<caddie::v1::GpuInfo>> ParseNvidiaSmiCsv(absl::string_view csv);

// Runs `nvidia_smi` (a path or a name looked up in PATH). NotFound when it is not
// installed; other errors when it fails or prints something unparsable.
absl::StatusOr<std::vector<caddie::v1::GpuInfo>> QueryNvidiaSmi(const std::string& nvidia_smi);

// What the worker registers from nvidia-smi: its GPUs, or none. None also when
// nvidia-smi fails (non-zero exit, a signal, no answer in time) or prints
// something that does not parse: a broken driver must not stop a worker that can
// still run CPU jobs, nor register GPUs that do not exist. Such a failure is
// logged as a warning naming it and kept in `warning`; a missing nvidia-smi
// (NotFound) is the ordinary CPU-only host and leaves `warning` empty.
struct DetectedGpus {
  std::vector<caddie::v1::GpuInfo> gpus;
  std::string warning;
};
DetectedGpus DetectGpus(const std::string& nvidia_smi);

// Picks the worker's GPUs. `detected`: nvidia-smi's answer (NotFound = no GPUs
// detectable). `count` (-1 = unset) and `ids` (empty = unset) come from flags:
// with detected GPUs, `ids` selects those indices and `count` takes the first N;
// without, they declare GPUs named "declared". InvalidArgument when both are set,
// an id is not among the detected GPUs (naming it), or `count` exceeds them.
absl::StatusOr<std::vector<caddie::v1::GpuInfo>> ResolveGpus(
    const absl::StatusOr<std::vector<caddie::v1::GpuInfo>>& detected, int count, const std::vector<int>& ids);

// Parses "0,1,3" into indices. InvalidArgument naming a bad entry.
absl::StatusOr<std::vector<int>> ParseGpuIds(absl::string_view text);

}  // namespace caddie::worker
