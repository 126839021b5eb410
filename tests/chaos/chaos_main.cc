// caddie-chaos: runs the chaos run of tests/chaos/chaos.h and prints its counts.
// Exit 0 when the audit passes, 1 when it finds a problem, 2 for bad flags.
// scripts/chaos.sh runs the full variant; chaos_test (CTest) a shorter one.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "tests/chaos/chaos.h"

int main(int argc, char** argv) {
  caddie::chaos::ChaosOptions o;
  CLI::App app{"caddie-chaos: kill the controller, workers and trainer ranks while a sweep runs, then audit"};
  app.add_option("--controller", o.controller_bin, "caddie-controller binary")->required();
  app.add_option("--worker", o.worker_bin, "caddie-worker binary")->required();
  app.add_option("--fake-train", o.fake_train_bin, "caddie-fake-train binary")->required();
  app.add_option("--dir", o.dir, "scratch directory (removed first)")->required();
  app.add_option("--jobs", o.jobs, "jobs in the sweep")->check(CLI::Range(1, 100000));
  app.add_option("--workers", o.workers, "workers (the last one gets the size-limited disk)")->check(CLI::Range(1, 64));
  app.add_option("--cpu-slots", o.cpu_slots, "concurrent jobs per worker")->check(CLI::Range(1, 64));
  app.add_option("--steps", o.steps, "fake-trainer steps per job")->check(CLI::Range(1, 100000));
  app.add_option("--step-ms", o.step_ms, "milliseconds per fake step")->check(CLI::Range(1, 100000));
  app.add_option("--interval", o.action_interval_s, "seconds between chaos actions")->check(CLI::PositiveNumber);
  app.add_option("--deadline", o.deadline_s, "seconds for the whole run")->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "random seed of the chaos schedule");
  CLI11_PARSE(app, argc, argv);
  const auto r = caddie::chaos::RunChaos(o);
  std::printf("%s", r.Summary().c_str());
  return r.ok() ? 0 : 1;
}
