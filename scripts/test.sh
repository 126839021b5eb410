#!/usr/bin/env bash
# Runs every caddie test from a fresh clone: installs the Debian packages, builds
# with warnings as errors, prepares the test corpus, runs CTest, then the
# controller concurrency tests under ASan + UBSan (scripts/sanitize.sh).
# Arguments go to the main ctest (e.g. -R data_). The last line printed, pass or
# fail, sums up both runs:
#   caddie tests: main 85/85 passed; sanitizer 3/3 passed
# Any failure (install, build, a test) still stops the script and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

logs=$(mktemp -d)
main_result="not run"
sanitizer_result="not run"

# "P/N passed" from a ctest log's "NN% tests passed, F tests failed out of N".
ctest_result() {
  local line failed total
  line=$(grep -E '[0-9]+ tests? failed out of [0-9]+' "$1" | tail -n1 || true)
  if [ -z "$line" ]; then
    if grep -q 'No tests were found' "$1"; then echo "no tests found"; else echo "no result"; fi
    return
  fi
  failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
  if [ "$failed" -eq 0 ]; then
    echo "$total/$total passed"
  else
    echo "$((total - failed))/$total passed, $failed FAILED"
  fi
}

summary() {
  local rc=$?
  if [ -f "$logs/main.log" ]; then main_result=$(ctest_result "$logs/main.log"); fi
  if [ -f "$logs/sanitizer.log" ]; then sanitizer_result=$(ctest_result "$logs/sanitizer.log"); fi
  rm -rf "$logs"
  local verdict=""
  if [ "$rc" -ne 0 ]; then verdict=" -- FAILED (exit $rc)"; fi
  echo "caddie tests: main $main_result; sanitizer $sanitizer_result$verdict"
  exit "$rc"
}
trap summary EXIT

bash scripts/install-deps.sh
cmake --preset ci
cmake --build --preset ci
# pipefail: a failing ctest fails the pipeline, and set -e stops here.
ctest --preset ci --timeout 1200 "$@" 2>&1 | tee "$logs/main.log"
# The concurrency regression tests again under ASan + UBSan (build/asan).
bash scripts/sanitize.sh 2>&1 | tee "$logs/sanitizer.log"
