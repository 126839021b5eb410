#!/usr/bin/env bash
# The README's run command: installs the Debian packages, builds the release
# preset, and runs `caddie up` — a local controller (SQLite under .caddie/), one
# worker, the corpus and tokenizer (built once), and the demo sweep, ending with
# its leaderboard. Extra arguments go to `caddie up` (e.g. --once, --port 0).
# Ctrl-C stops everything; running it again reuses the database and the data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Two build jobs at most by default: small machines run everything else too.
JOBS="${CADDIE_BUILD_JOBS:-2}"
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS" --target caddie caddie-controller caddie-worker caddie-train
exec build/release/cli/caddie up "$@"
