#!/usr/bin/env bash
# Runs every caddie test from a fresh clone: installs the Debian packages, builds
# with warnings as errors, prepares the test corpus, runs CTest, then the
# controller concurrency tests under ASan + UBSan (scripts/sanitize.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset ci
cmake --build --preset ci
ctest --preset ci --timeout 1200 "$@"
# The concurrency regression tests again under ASan + UBSan (build/asan).
bash scripts/sanitize.sh
