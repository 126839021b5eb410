// caddie-train: the training engine's command line (docs/contracts.md).
//   caddie-train --spec SPEC.json [--data DIR] [--run-dir DIR]
//   caddie-train --code-bytes | --benchmark [--spec SPEC.json] [--steps N] | --help | --version
//   caddie-train --self-check-kernels   (GPU: fused kernels against the plain computation)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "caddie/version.h"
#include "common/core/train_spec.h"
#include "model/code_files.h"
#include "model/fused_cuda.h"
#include "model/trainer.h"

namespace {

constexpr char kUsage[] =
    "usage: caddie-train --spec SPEC.json [--data DIR] [--run-dir DIR]\n"
    "       caddie-train --benchmark [--spec SPEC.json] [--steps N]\n"
    "       caddie-train --code-bytes | --self-check-kernels | --help | --version\n"
    "Trains one Parameter Golf model; JSON-lines events on stdout (rank 0).\n"
    "Distributed: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT as torchrun sets them.\n"
    "Exit codes: 0 finished, 2 bad spec or data, 1 other error.\n";

int Usage(const std::string& msg) {
  std::fprintf(stderr, "caddie-train: %s\n%s", msg.c_str(), kUsage);
  return caddie::model::kExitBadInput;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spec_path, data, run_dir;
  bool benchmark = false;
  long long steps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    if (a == "--version") {
      std::printf("caddie-train %s\n", CADDIE_VERSION);
      return 0;
    } else if (a == "--help") {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--code-bytes") {
      std::printf("%lld\n", static_cast<long long>(caddie::model::CodeBytes()));
      return 0;
    } else if (a == "--self-check-kernels") {
      return caddie::model::SelfCheckFusedKernels() == 0 ? 0 : 1;
    } else if (a == "--benchmark") {
      benchmark = true;
    } else if (a == "--steps") {
      std::string v;
      if (!value(v) || (steps = std::atoll(v.c_str())) <= 0) return Usage("--steps needs a positive integer");
    } else if (a == "--spec") {
      if (!value(spec_path)) return Usage("--spec needs a file");
    } else if (a == "--data") {
      if (!value(data)) return Usage("--data needs a directory");
    } else if (a == "--run-dir") {
      if (!value(run_dir)) return Usage("--run-dir needs a directory");
    } else {
      return Usage("unknown argument \"" + a + "\"");
    }
  }

  std::string text = "{}";
  if (!spec_path.empty()) {
    std::ifstream in(spec_path);
    if (!in) return Usage("cannot read spec file " + spec_path);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  } else if (!benchmark) {
    return Usage("--spec is required");
  }
  auto spec = caddie::ParseTrainSpecText(text);
  if (!spec.ok()) {
    std::fprintf(stderr, "caddie-train: %s: %s\n", spec_path.c_str(), spec.status().message().c_str());
    std::printf("{\"event\":\"error\",\"message\":%s}\n",
                nlohmann::json(spec.status().message()).dump().c_str());
    return caddie::model::kExitBadInput;
  }
  if (!data.empty()) spec->data = data;
  if (!run_dir.empty()) spec->run_dir = run_dir;

  if (benchmark) return caddie::model::RunBenchmark(*spec, steps);

  auto env = caddie::model::RankEnvFromEnvironment();
  if (!env.ok()) {
    std::fprintf(stderr, "caddie-train: %s\n", env.status().message().c_str());
    return caddie::model::kExitBadInput;
  }
  caddie::model::InstallStopSignalHandlers();
  return caddie::model::RunTrainer(*spec, *env);
}
