#include "worker/gpu_inventory.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/subprocess.h"
#include "spdlog/spdlog.h"

namespace caddie::worker {

absl::StatusOr<std::vector<caddie::v1::GpuInfo>> ParseNvidiaSmiCsv(absl::string_view csv) {
  std::vector<caddie::v1::GpuInfo> gpus;
  for (absl::string_view line : absl::StrSplit(csv, '\n', absl::SkipWhitespace())) {
    line = absl::StripAsciiWhitespace(line);
    std::vector<absl::string_view> f = absl::StrSplit(line, ',');
    if (f.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat("nvidia-smi line \"", line, "\": want 3 fields"));
    }
    caddie::v1::GpuInfo g;
    int index = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(f[0]), &index) || index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("nvidia-smi line \"", line, "\": bad index"));
    }
    g.set_index(index);
    g.set_name(std::string(absl::StripAsciiWhitespace(f[1])));
    // "81559 MiB" (or a bare number with --format=...,nounits).
    std::vector<absl::string_view> mem = absl::StrSplit(absl::StripAsciiWhitespace(f[2]), ' ', absl::SkipEmpty());
    int64_t amount = 0;
    if (mem.empty() || !absl::SimpleAtoi(mem[0], &amount) || amount < 0) {
      return absl::InvalidArgumentError(absl::StrCat("nvidia-smi line \"", line, "\": bad memory.total"));
    }
    int64_t unit = int64_t{1} << 20;  // nvidia-smi reports MiB
    if (mem.size() > 1 && mem[1] == "GiB") unit = int64_t{1} << 30;
    g.set_memory_bytes(amount * unit);
    gpus.push_back(std::move(g));
  }
  return gpus;
}

absl::StatusOr<std::vector<caddie::v1::GpuInfo>> QueryNvidiaSmi(const std::string& nvidia_smi) {
  auto out = RunAndCapture({nvidia_smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader"},
                           std::chrono::seconds(20));
  if (!out.ok()) return out.status();
  return ParseNvidiaSmiCsv(*out);
}

DetectedGpus DetectGpus(const std::string& nvidia_smi) {
  DetectedGpus d;
  auto q = QueryNvidiaSmi(nvidia_smi);
  if (q.ok()) {
    d.gpus = *std::move(q);
    return d;
  }
  if (q.status().code() == absl::StatusCode::kNotFound) return d;
  d.warning = absl::StrCat("nvidia-smi (", nvidia_smi, ") did not give a GPU list: ", q.status().message(),
                           "; registering no GPUs (pass --gpus or --gpu-ids to declare them)");
  spdlog::warn("{}", d.warning);
  return d;
}

absl::StatusOr<std::vector<int>> ParseGpuIds(absl::string_view text) {
  std::vector<int> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("GPU id \"", part, "\" is not a non-negative integer"));
    }
    if (std::find(ids.begin(), ids.end(), id) != ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat("GPU id ", id, " is listed twice"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::vector<caddie::v1::GpuInfo>> ResolveGpus(
    const absl::StatusOr<std::vector<caddie::v1::GpuInfo>>& detected, int count, const std::vector<int>& ids) {
  if (count >= 0 && !ids.empty()) return absl::InvalidArgumentError("give --gpus or --gpu-ids, not both");
  if (!detected.ok() && detected.status().code() != absl::StatusCode::kNotFound) return detected.status();
  std::vector<caddie::v1::GpuInfo> out;
  if (detected.ok() && !detected->empty()) {
    const auto& all = *detected;
    if (!ids.empty()) {
      for (int id : ids) {
        auto it = std::find_if(all.begin(), all.end(), [&](const auto& g) { return g.index() == id; });
        if (it == all.end()) {
          return absl::InvalidArgumentError(absl::StrCat("GPU id ", id, " is not among the ", all.size(),
                                                         " GPUs nvidia-smi reports"));
        }
        out.push_back(*it);
      }
      return out;
    }
    if (count > static_cast<int>(all.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("--gpus ", count, " exceeds the ", all.size(), " GPUs nvidia-smi reports"));
    }
    out.assign(all.begin(), count >= 0 ? all.begin() + count : all.end());
    return out;
  }
  std::vector<int> declared = ids;
  for (int i = 0; i < count; ++i) declared.push_back(i);
  for (int id : declared) {
    caddie::v1::GpuInfo g;
    g.set_index(id);
    g.set_name("declared");
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace caddie::worker
