#!/usr/bin/env bash
# One device call: builds caddie-train on the GPU machine (scripts/device-build.sh), checks
# a tiny fp32 CUDA loss curve against the CPU one (bench/trainer/tiny_cpu_events.jsonl),
# runs the Parameter Golf baseline config (9x512, vocab 1024, 524,288 tokens/step, seq 1024)
# for a fixed number of steps (throughput, MFU, memory, a Kineto profile of 2 steps) and,
# optionally, for a fixed wall clock (val_bpb), on 1 GPU and, where there are 2, on 2.
#
# usage: bash scripts/device-bench.sh        (environment knobs below; output under $OUT)
#   BENCH_DATA=.device/sp1024   shards made here by caddie-dataprep (the device has no Abseil)
#   BENCH_STEPS=30              steps of the throughput runs (log every 5; rates over steps 16..)
#   BENCH_AB="base:all"         extra 1-GPU runs with CADDIE_PERF_OFF set, NAME:LIST ... ("all" =
#                               every optimisation off: the code as first landed)
#   BENCH_WALL=0                seconds of the wall-clock run (0 = none), val_bpb at its end
#   BENCH_PROFILE=1             Kineto trace of steps 12-13 of the 1-GPU run, summarised
#   BENCH_AB_PROFILE="n1 n2"    which BENCH_AB runs get a trace too (unset: all of them)
#   BENCH_KERNEL_CHECK=1        caddie-train --self-check-kernels (fused kernels vs float64)
#   BENCH_CHECK=1               the fp32 CUDA vs CPU loss-curve check
#   BENCH_GPUS=auto             1 or 2 (auto: 2 runs too when 2 GPUs are present)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/caddie-bench-out}
# Logs and traces go to $W; one tarball of them comes back in $OUT (the device returns few files).
W=/tmp/caddie-bench
rm -rf "$W"; mkdir -p "$W" "$OUT"
trap 'tar czf "$OUT/bench.tgz" -C "$W" . 2>/dev/null' EXIT
DATA=${BENCH_DATA:-.device/sp1024}
STEPS=${BENCH_STEPS:-30}
ALL_OFF=norm,resid,gqa,ns,sync,pin,kmix,kadd,krelu,kqk,knorm,qkv,kresnorm,kce
WALL=${BENCH_WALL:-0}
# NVLink multicast stays off (the machines' rule).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
t_build=$(date +%s)
BIN=$(bash scripts/device-build.sh build-gpu 2>"$W/build.log" | tail -1)
if [[ ! -x "$BIN" ]]; then tail -40 "$W/build.log"; echo "BUILD FAILED"; exit 1; fi
echo "build: $(( $(date +%s) - t_build )) s"
PY=/opt/torch/.venv/bin/python
[[ -x $PY ]] || PY=python3
export LD_LIBRARY_PATH="$($PY -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))'):$($PY -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"lib"))'):${LD_LIBRARY_PATH:-}"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
NGPU=$(nvidia-smi -L | wc -l)
echo "device: $NGPU x $GPU_NAME"

spec() {  # spec FILE key=json ...  (baseline config + overrides)
  local f=$1; shift
  $PY - "$f" "$@" <<'PYEOF'
import json, sys
s = {"device": "cuda", "iterations": 30, "warmup_steps": 5, "max_wallclock_seconds": 0, "val_every": 0,
     "log_every": 5, "compression": "zlib", "zstd_level": 3}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1); s[k] = json.loads(v)
json.dump(s, open(sys.argv[1], "w"))
PYEOF
}

run1() {  # run1 NAME SPEC [env...]: one rank
  local name=$1 sp=$2; shift 2
  env "$@" "$BIN" --spec "$sp" --data "$DATA" --run-dir /tmp/run_$name > "$W/$name.jsonl" 2> "$W/$name.err"
  local rc=$?
  [[ $rc -ne 0 ]] && { echo "$name: exit $rc"; tail -5 "$W/$name.err"; }
  return $rc
}

runN() {  # runN NAME SPEC WORLD: WORLD rank processes on one host
  local name=$1 sp=$2 world=$3 pids=() r
  for ((r = 0; r < world; r++)); do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=$world LOCAL_WORLD_SIZE=$world MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 \
      "$BIN" --spec "$sp" --data "$DATA" --run-dir /tmp/run_${name}_$r > "$W/$name.r$r.jsonl" 2> "$W/$name.r$r.err" &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  cp "$W/$name.r0.jsonl" "$W/$name.jsonl"
  [[ $rc -ne 0 ]] && { echo "$name: exit $rc"; tail -5 "$W/$name.r0.err" "$W/$name.r1.err"; }
  return $rc
}
mkdir -p /tmp/run_tiny /tmp/run_bench1 /tmp/run_bench2_0 /tmp/run_bench2_1 /tmp/run_wall1

if [[ ${BENCH_KERNEL_CHECK:-1} == 1 ]]; then
  "$BIN" --self-check-kernels 2>&1 | tee "$W/kernel_check.txt"
  echo "kernel self-check exit: ${PIPESTATUS[0]}"
fi

if [[ ${BENCH_CHECK:-1} == 1 ]]; then
  $PY - bench/trainer/tiny_spec.json "$W/tiny_spec.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1])); s["device"] = "cuda"; json.dump(s, open(sys.argv[2], "w"))
PYEOF
  run1 tiny "$W/tiny_spec.json" CADDIE_CUDA_FP32=1 && \
    $PY bench/trainer/compare_curves.py bench/trainer/tiny_cpu_events.jsonl "$W/tiny.jsonl" --rtol 2e-3 | tee "$W/check.txt"
fi

spec "$W/bench_spec.json" iterations=$STEPS
PROF_ENV=()
[[ ${BENCH_PROFILE:-1} == 1 ]] && PROF_ENV=(CADDIE_PROFILE=/tmp/trace.json CADDIE_PROFILE_STEP=12 CADDIE_PROFILE_STEPS=2)
t=$(date +%s); run1 bench1 "$W/bench_spec.json" "${PROF_ENV[@]}"; echo "bench1: $(( $(date +%s) - t )) s wall"
if [[ -f /tmp/trace.json ]]; then
  $PY bench/trainer/profile_summary.py /tmp/trace.json 2 | tee "$W/profile.txt"
  # (traces stay on the device: the tarball must stay under the 16 MB a returned file may have)
fi
for ab in ${BENCH_AB-base:all}; do
  n=${ab%%:*} off=${ab#*:}; [[ $off == all ]] && off=$ALL_OFF
  penv=()
  [[ ${BENCH_PROFILE:-1} == 1 && ( -z ${BENCH_AB_PROFILE+x} || " $BENCH_AB_PROFILE " == *" $n "* ) ]] && penv=(CADDIE_PROFILE=/tmp/trace_$n.json CADDIE_PROFILE_STEP=12 CADDIE_PROFILE_STEPS=2)
  t=$(date +%s); run1 "ab_$n" "$W/bench_spec.json" CADDIE_PERF_OFF=$off "${penv[@]}"; echo "ab_$n (off: $off): $(( $(date +%s) - t )) s wall"
  if [[ -f /tmp/trace_$n.json ]]; then
    $PY bench/trainer/profile_summary.py /tmp/trace_$n.json 2 > "$W/profile_$n.txt"; head -12 "$W/profile_$n.txt"
  fi
done
if [[ ${BENCH_GPUS:-auto} != 1 && $NGPU -ge 2 ]]; then
  t=$(date +%s); runN bench2 "$W/bench_spec.json" 2; echo "bench2: $(( $(date +%s) - t )) s wall"
fi
if [[ $WALL != 0 ]]; then
  spec "$W/wall_spec.json" iterations=100000 warmup_steps=20 max_wallclock_seconds=$WALL log_every=50
  t=$(date +%s); run1 wall1 "$W/wall_spec.json"; echo "wall1: $(( $(date +%s) - t )) s wall"
  grep '"step"' "$W/wall1.jsonl" | $PY -c '
import json,sys
for l in sys.stdin:
    e=json.loads(l)
    if e["step"] in (50,100,150,200,300,400,500,600): print("  wall1 step", e["step"], "train_loss %.4f" % e["train_loss"], "t %.1f s" % e["train_time_s"])'
fi
echo
args=(bench1="$W/bench1.jsonl")
for f in "$W"/ab_*.jsonl "$W"/bench2.jsonl "$W"/wall1.jsonl; do [[ -f $f ]] && args+=("$(basename "$f" .jsonl)=$f"); done
BENCH_GPU="$GPU_NAME" $PY bench/trainer/summarize.py "${args[@]}" | tee "$W/summary.md"
