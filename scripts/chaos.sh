#!/usr/bin/env bash
# The full chaos run (tests/chaos/chaos.h): ≥ 50 fake-trainer jobs on 4 workers
# while the controller, workers and trainer ranks are SIGKILLed and one worker's
# disk (a 16 MiB tmpfs, when mount is allowed) fills; then the database audit.
# Loopback only, bounded (< 5 min). Exit 0 = nothing lost, nothing duplicated.
#   scripts/chaos.sh [--jobs N] [--seed S] [--interval SECONDS] ...   (caddie-chaos --help)
# BUILD_DIR picks the build tree (default build/release, configured if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/release}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" --target caddie-chaos caddie-controller caddie-worker caddie-fake-train -j"${JOBS:-2}" >/dev/null
DIR=${CHAOS_DIR:-$(mktemp -d /tmp/caddie-chaos.XXXXXX)}
exec "$BUILD_DIR/tests/chaos/caddie-chaos" \
  --controller "$BUILD_DIR/controller/caddie-controller" \
  --worker "$BUILD_DIR/worker/caddie-worker" \
  --fake-train "$BUILD_DIR/tests/fake_trainer/caddie-fake-train" \
  --dir "$DIR" --jobs 80 --workers 4 --steps 10 --step-ms 300 --interval 1.0 --deadline 280 --seed 1 "$@"
