# Sourced by the one-call device scripts (device-nccl-check.sh, device-floor-study.sh):
#   device_workdir TAG   fresh /tmp/caddie-TAG as $W, $OUT made, $W tarred into $OUT/TAG.tgz at exit
#   device_build         caddie-train built (scripts/device-build.sh) as $BIN, LibTorch/NCCL on
#                        LD_LIBRARY_PATH; prints the build time, exits on failure
# Sets PY (the device's torch venv python) and NVLS off (KINDS.md: no NVLink multicast).
PY=/opt/torch/.venv/bin/python
[[ -x $PY ]] || PY=python3
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

device_workdir() {
  OUT=${OUT:-/tmp/caddie-$1-out}
  W=/tmp/caddie-$1
  rm -rf "$W"; mkdir -p "$W" "$OUT"
  trap "tar czf '$OUT/$1.tgz' -C '$W' . 2>/dev/null" EXIT
}

device_build() {
  local t
  t=$(date +%s)
  BIN=$(bash scripts/device-build.sh build-gpu 2>"$W/build.log" | tail -1)
  if [[ ! -x "$BIN" ]]; then tail -40 "$W/build.log"; echo "BUILD FAILED"; exit 1; fi
  echo "build: $(( $(date +%s) - t )) s"
  LD_LIBRARY_PATH="$($PY -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))'):$($PY -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"lib"))'):${LD_LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH
}
