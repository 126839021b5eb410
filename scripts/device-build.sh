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
cmake --build "$BUILD" --target caddie-train -j "$(nproc)" >&2
echo "$BUILD/model/caddie-train"
