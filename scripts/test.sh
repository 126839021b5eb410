#!/usr/bin/env bash
# Runs every caddie test from a fresh clone: installs the Debian packages, builds
# with warnings as errors, prepares the test corpus, and runs CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset ci
cmake --build --preset ci
ctest --preset ci --timeout 1200 "$@"
