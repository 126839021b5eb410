#!/usr/bin/env bash
# Builds the controller's concurrency tests with AddressSanitizer + UBSan in
# build/asan and runs them: a use-after-free or data-structure corruption on the
# gRPC callback threads fails them deterministically, where a release build may
# only crash now and then (issue 13: the soak's heap corruption).
#   scripts/sanitize.sh            (BUILD_DIR=build/asan, JOBS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/asan}
TESTS=(controller_concurrency_test metrics_test grpc_status_test)
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
fi
cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target "${TESTS[@]}" >/dev/null
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
regex=$(IFS='|'; echo "^(${TESTS[*]})\$")
ctest --test-dir "$BUILD_DIR" -R "$regex" --output-on-failure --timeout 300
