#!/usr/bin/env bash
# Fuzzes the sweep-file parser, the shard / byte-table readers and the artifact
# reader with libFuzzer (clang, ASan + UBSan) for a bounded time each:
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [target...]   (targets: sweep_file shard artifact)
# Builds only the fuzz targets in build/fuzz (clang). New crashers are written to
# build/fuzz/crashes/<target>/; copy one into tests/fuzz/corpus/<target>/ once
# fixed so fuzz_replay_<target> (CTest) keeps it fixed. Exit 1 on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(sweep_file shard artifact)
BUILD_DIR=${BUILD_DIR:-build/fuzz}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DCADDIE_FUZZ=ON -DCADDIE_BUILD_TESTS=OFF >/dev/null
fi
status=0
for t in "${TARGETS[@]}"; do
  cmake --build "$BUILD_DIR" --target "fuzz_$t" -j"${JOBS:-2}" >/dev/null
  work="$BUILD_DIR/corpus/$t"
  crashes="$BUILD_DIR/crashes/$t"
  mkdir -p "$work" "$crashes"
  echo "fuzz_$t: ${SECS}s"
  if ! "$BUILD_DIR/tests/fuzz/fuzz_$t" "$work" "tests/fuzz/corpus/$t" -max_total_time="$SECS" \
      -max_len=65536 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$crashes/" -print_final_stats=1 \
      2>"$BUILD_DIR/fuzz_$t.log"; then
    status=1
    echo "fuzz_$t: CRASH (see $BUILD_DIR/fuzz_$t.log and $crashes/)"
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" "$BUILD_DIR/fuzz_$t.log" || true
done
exit $status
