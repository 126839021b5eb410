#!/usr/bin/env bash
# One device call: caddie-train's NCCL data-parallel path against one rank with twice the
# micro-batches (the CUDA twin of train_run_test's TwoGlooRanksMatchOneRankWithTwiceTheBatch).
# With 2+ GPUs each rank gets its own; with one GPU both ranks are put on cuda:0, which NCCL
# may refuse (it rejects two ranks of a communicator on one device) — the script then prints
# NCCL's own words, the evidence for why the 2-GPU check needs a 2-GPU machine.
#
# usage: bash scripts/device-nccl-check.sh   (NCCL_DATA=.device/h/sp1024, NCCL_ITERS=30)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device-lib.sh
device_workdir nccl
DATA=$(readlink -f "${NCCL_DATA:-.device/h/sp1024}")
ITERS=${NCCL_ITERS:-30}
GPUS=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
echo "device: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) x $GPUS; data $DATA; $ITERS steps"
device_build

spec() {  # spec FILE grad_accum
  $PY - "$1" "$2" "$DATA" "$ITERS" <<'PYEOF'
import json, sys
f, accum, data, iters = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
json.dump({"device": "cuda", "data": data, "num_layers": 4, "model_dim": 256, "num_heads": 4,
           "num_kv_heads": 2, "seq_len": 256, "train_batch_tokens": 32768, "grad_accum_steps": accum,
           "iterations": iters, "warmup_steps": 0, "warmdown_iters": 0, "val_every": 0,
           "log_every": 1, "val_batch_tokens": 65536, "val_max_tokens": 262144,
           "max_wallclock_seconds": 0}, open(f, "w"))
PYEOF
}
spec "$W/one.json" 2
spec "$W/two.json" 1

"$BIN" --spec "$W/one.json" --run-dir "$W/one" > "$W/one.jsonl" 2> "$W/one.err"
echo "one rank, 2 micro-batches: exit $?"

PORT=$($PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
for r in 0 1; do
  local_rank=$r; visible=0,1
  if (( GPUS < 2 )); then local_rank=0; visible=0; fi
  env RANK=$r WORLD_SIZE=2 LOCAL_RANK=$local_rank LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT \
    CUDA_VISIBLE_DEVICES=$visible NCCL_DEBUG=WARN timeout 300 \
    "$BIN" --spec "$W/two.json" --run-dir "$W/two" > "$W/two.rank$r.jsonl" 2> "$W/two.rank$r.err" &
done
codes=""
for j in $(jobs -p); do wait "$j"; codes="$codes $?"; done
echo "two NCCL ranks, 1 micro-batch each (GPUs: $GPUS): exit codes$codes"
for r in 0 1; do
  if grep -qi "nccl\|error" "$W/two.rank$r.err"; then
    echo "rank $r stderr (NCCL / errors):"; grep -i "nccl\|error" "$W/two.rank$r.err" | head -8
  fi
done

$PY - "$W/one.jsonl" "$W/two.rank0.jsonl" <<'PYEOF'
import json, sys
def load(p):
    ev = [json.loads(l) for l in open(p) if l.startswith("{")]
    return ([e["train_loss"] for e in ev if e["event"] == "step"],
            next((e for e in ev if e["event"] == "final"), None),
            next((e for e in ev if e["event"] == "start"), None))
(a, fa, sa), (b, fb, sb) = load(sys.argv[1]), load(sys.argv[2])
print(f"steps: one rank {len(a)}, two ranks {len(b)}; world_size {sb and sb.get('world_size')}")
if a and b and fa and fb:
    n = min(len(a), len(b))
    d = [abs(x - y) for x, y in zip(a[:n], b[:n])]
    print(f"train loss step 1 / {n}: one {a[0]:.5f} / {a[n-1]:.5f}, two {b[0]:.5f} / {b[n-1]:.5f}; "
          f"max |diff| {max(d):.2e} (step {d.index(max(d)) + 1})")
    print(f"val_bpb: one {fa['val_bpb']:.5f}, two {fb['val_bpb']:.5f}, |diff| {abs(fa['val_bpb'] - fb['val_bpb']):.2e}")
    print(f"tokens/s: one {fa['tokens_per_s']:.0f}, two {fb['tokens_per_s']:.0f}")
    print("VERDICT:", "MATCH" if max(d) < 2e-2 and abs(fa['val_bpb'] - fb['val_bpb']) < 1e-2 else "DIFFER")
else:
    print("VERDICT: the two-rank run did not finish")
PYEOF
