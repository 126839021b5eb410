#!/usr/bin/env bash
# Builds caddie-train on the GPU machine against the LibTorch of its torch 2.x
# (CUDA, NCCL). Only model/ and common/core/ are built there (no gRPC/Abseil/SQLite).
# Usage: bash scripts/device-build.sh [build-dir]   (prints the binary path last)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-gpu}
export PATH=/opt/torch/.venv/bin:$PATH
PREFIX=$(python -c 'import torch;print(torch.utils.cmake_prefix_path)')
NCCL_INC=$(python -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"include"))')
NCCL_LIB=$(python -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"lib"))')
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCADDIE_TRAINER_ONLY=ON -DCADDIE_BUILD_TESTS=OFF -DCADDIE_WITH_NCCL=ON \
  -DCADDIE_WITH_CUDA_KERNELS=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
  -DCADDIE_NCCL_INCLUDE_DIR="$NCCL_INC" -DCADDIE_NCCL_LIBRARY_DIR="$NCCL_LIB" >&2
# A warm machine keeps $BUILD from an earlier call, possibly another checkout's: sources that
# arrive with older mtimes than its objects would not be rebuilt. Rebuild whenever the
# sources' contents differ from the last build's.
SUM=$(find model common CMakeLists.txt -type f \( -name '*.cc' -o -name '*.cu' -o -name '*.h' -o -name '*.txt' -o -name '*.cmake' \) -print0 |
      sort -z | xargs -0 md5sum | md5sum | cut -d' ' -f1)
if [[ "$(cat "$BUILD/.caddie-src-sum" 2>/dev/null)" != "$SUM" ]]; then
  find model common -type f \( -name '*.cc' -o -name '*.cu' -o -name '*.h' \) -exec touch {} +
fi
cmake --build "$BUILD" --target caddie-train -j "$(nproc)" >&2
echo "$SUM" > "$BUILD/.caddie-src-sum"
echo "$BUILD/model/caddie-train"
