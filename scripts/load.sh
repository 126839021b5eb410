#!/usr/bin/env bash
# Load and soak benchmarks of one caddie-controller (bench/load/load_main.cc):
#   scripts/load.sh            1000 simulated workers, 10,000 queued jobs, 60 s
#   scripts/load.sh --soak     the queue kept full and RSS sampled until the heartbeats
#                              equal 30 minutes of a 1000-worker fleet (one per 5 s each),
#                              running one-minute jobs, compressed 10x (a heartbeat per 0.5 s
#                              each, jobs of 6 s), at most 570 s
#   scripts/load.sh --soak-real  the same soak uncompressed: a heartbeat per 5 s each, one-minute
#                              jobs, 30 minutes of wall time (at most 1860 s)
# Extra flags go to caddie-load (--seconds, --workers, --jobs, --threads, ...).
# BUILD_DIR picks the build tree (default build/release, configured if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/release}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" --target caddie-load caddie-controller -j"${JOBS:-2}" >/dev/null
DIR=${LOAD_DIR:-$(mktemp -d /tmp/caddie-load.XXXXXX)}
args=(--controller "$BUILD_DIR/controller/caddie-controller" --dir "$DIR" --workers 1000 --jobs 10000)
if [ "${1:-}" = "--soak" ]; then
  shift
  args+=(--soak --heartbeat 0.5 --job-seconds 6 --fleet-minutes 30 --seconds 570 --sample 15)
elif [ "${1:-}" = "--soak-real" ]; then
  shift
  args+=(--soak --heartbeat 5 --job-seconds 60 --fleet-minutes 30 --seconds 1860 --sample 60)
else
  args+=(--seconds 60 --sample 10)
fi
status=0
"$BUILD_DIR/bench/load/caddie-load" "${args[@]}" "$@" || status=$?
rm -rf "$DIR"
exit $status
