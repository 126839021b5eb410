// libFuzzer target: the sweep-file parser (cli/sweep_file.h) and the sweep
// expansion it feeds (common/sweep.h). Any input must give a SweepCheck (with
// errors) or an InvalidArgument — never a crash, a hang or a huge allocation.
#include <cstddef>
#include <cstdint>
#include <string>

#include "cli/sweep_file.h"
#include "common/sweep.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  caddie::cli::SweepCheck c = caddie::cli::CheckSweepText(text, "fuzz.yaml");
  // An accepted file's JSON must expand again to the same job count.
  if (c.ok()) {
    auto e = caddie::ExpandSweepText(c.spec.sweep_json());
    if (!e.ok() || e->jobs.size() != c.jobs.size()) __builtin_trap();
  }
  (void)caddie::cli::FormatIssues(c, false);
  // The same bytes as sweep JSON.
  (void)caddie::ExpandSweepText(text);
  return 0;
}
