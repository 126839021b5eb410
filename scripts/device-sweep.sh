#!/usr/bin/env bash
# The issue-14 sweep (examples/full_size.yaml: baseline, depth recurrence 3x3, QAT 4-bit, SSM
# hybrid) through a real caddie-controller + caddie-worker + caddie CLI: starts the controller
# (SQLite under $W), one worker over this machine's GPUs, submits a copy of the sweep with the
# budget and GPUs per job below, follows it to the end (caddie watch per job, caddie jobs
# polled), then prints `caddie jobs`, `caddie leaderboard` and a per-job table, and leaves one
# tarball of every log (no model files) and the database in $OUT.
#
# usage: bash scripts/device-sweep.sh        (knobs below)
#   MODE=all             all: everything in this one call (the 1-GPU rehearsal, a CPU check).
#                        start: build, start the controller and worker detached (setsid), submit,
#                        return; follow: a later call on the same (warm) machine follows them for
#                        FOLLOW_S seconds, and once no job is left to run prints the results and
#                        stops them. A device call is at most 600 s and a machine is held at most
#                        30 min, so the real run (600 s jobs on 8 GPUs) is: a start call, follow
#                        calls back to back, and, since 4 x ~620 s do not fit in one machine's
#                        30 min, DRAIN_AFTER=2 on the first machine and DB_IN + SWEEP_ID on a
#                        second for the other two jobs:
#     MODE=start GPUS_PER_JOB=8 BUDGET_S=600 EVAL_S=600 bash scripts/device-sweep.sh
#     MODE=follow FOLLOW_S=560 DRAIN_AFTER=2 bash scripts/device-sweep.sh      (repeat until done)
#     (next machine, the first one's $OUT/caddie.db carried as .device/caddie.db)
#     MODE=start DB_IN=.device/caddie.db SWEEP_ID=s1 GPUS_PER_JOB=8 bash scripts/device-sweep.sh
#     MODE=follow FOLLOW_S=560 bash scripts/device-sweep.sh                    (repeat until done)
#   GPUS_PER_JOB=1       GPUs per job (0 = CPU jobs on one CPU slot, for a local check)
#   BUDGET_S=80          budget.train_seconds (the issue: 600); "auto": what TOTAL_S leaves after
#                        the build for JOBS_EXPECTED jobs (each + OVERHEAD_S), at most BUDGET_MAX
#   TOTAL_S=560 JOBS_EXPECTED=4 OVERHEAD_S=15 BUDGET_MAX=90   (for BUDGET_S=auto)
#   EVAL_S=120           budget.eval_seconds (the issue: 600)
#   GRACE_S=30           budget.grace_seconds
#   SWEEP_FILE=examples/full_size.yaml
#   DATA=.device/sp1024  data directory put into the sweep's base (made here by caddie-dataprep)
#   BASE_EXTRA=""        extra base keys, "key: value; key: value" (a tiny model for CPU checks)
#   BIN_DIR=.device/rehearse   caddie-controller, caddie-worker, caddie (built on a machine with
#                        gRPC; their own libraries beside them in lib/, found through their rpath)
#   TRAINER=""           caddie-train to run; empty: built here with scripts/device-build.sh
#   DEADLINE_S=0         seconds after this call's start at which unfinished jobs are
#                        cancelled, so that the summary still comes out (0: none)
#   FOLLOW_S=540         follow mode: return after this many seconds (the services go on)
#   DRAIN_AFTER=0        once this many of the sweep's jobs were leased, drain the worker: the
#                        rest stay queued for a later machine (0: never)
#   DB_IN="" SWEEP_ID="" start the controller on a copy of this database and follow that sweep
#                        (the worker, same id, is undrained) instead of submitting one
#   POLL_S=5             seconds between polls
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${MODE:-all}
OUT=${OUT:-/tmp/caddie-sweep-out}
W=${SWEEP_WORK:-/tmp/caddie-sweep}
GPUS_PER_JOB=${GPUS_PER_JOB:-1}
BUDGET_S=${BUDGET_S:-80}
EVAL_S=${EVAL_S:-120}
GRACE_S=${GRACE_S:-30}
SWEEP_FILE=${SWEEP_FILE:-examples/full_size.yaml}
DATA=${DATA:-.device/sp1024}
BASE_EXTRA=${BASE_EXTRA:-}
BIN_DIR=${BIN_DIR:-.device/rehearse}
TRAINER=${TRAINER:-}
DEADLINE_S=${DEADLINE_S:-0}
FOLLOW_S=${FOLLOW_S:-540}
DRAIN_AFTER=${DRAIN_AFTER:-0}
DB_IN=${DB_IN:-}
SWEEP_ID=${SWEEP_ID:-}
POLL_S=${POLL_S:-5}
WORKER_ID=rehearsal
case $MODE in all|start|follow) ;; *) echo "MODE must be all, start or follow"; exit 2 ;; esac
if [[ $MODE != follow ]]; then rm -rf "$W"; fi
mkdir -p "$W" "$OUT"
[[ $MODE == follow && ! -f $W/state.env ]] && { echo "no $W/state.env: run MODE=start first"; exit 1; }
exec > >(tee -a "$W/console.txt") 2>&1
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
PY=/opt/torch/.venv/bin/python
[[ -x $PY ]] || PY=python3
abspath() { [[ $1 == /* ]] && echo "$1" || echo "$ROOT/$1"; }
BIN_DIR=$(abspath "$BIN_DIR")
CADDIE=$BIN_DIR/caddie
export NO_COLOR=1
CPID= WPID= WATCHERS=()

stop_services() {
  [[ -n $WPID ]] && kill -TERM "$WPID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
  [[ -n $CPID ]] && kill -TERM "$CPID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
  CPID= WPID=
}
pack() {  # logs, specs, events (not the weights) as one tarball; the database beside it
  tar czf "$OUT/sweep.tgz" -C "$W" --exclude='*.pt' --exclude='*.caddie' --exclude='*.db*' . 2>/dev/null
  [[ -f $W/caddie.db ]] && cp "$W"/caddie.db* "$OUT/" 2>/dev/null
}
KEEP=0  # 1: leave the services running at exit (start / unfinished follow)
on_exit() {
  for p in "${WATCHERS[@]}"; do kill "$p" 2>/dev/null; done
  [[ $KEEP == 1 ]] || stop_services
  pack
}
trap on_exit EXIT

if [[ $MODE == follow ]]; then
  # shellcheck disable=SC1091
  source "$W/state.env"
  export CADDIE_ADDR=$ADDR
  kill -0 "$CPID" 2>/dev/null || { echo "the controller (pid $CPID) is gone"; exit 1; }
else
  for b in caddie-controller caddie-worker caddie; do
    [[ -x $BIN_DIR/$b ]] || { echo "no $BIN_DIR/$b"; exit 1; }
  done
  # The trainer: built here (CUDA) unless given.
  if [[ -z $TRAINER ]]; then
    t=$(date +%s)
    TRAINER=$(bash scripts/device-build.sh build-gpu 2>"$W/build.log" | tail -1)
    [[ -x $TRAINER ]] || { tail -40 "$W/build.log"; echo "BUILD FAILED"; exit 1; }
    echo "trainer build: $(( $(date +%s) - t )) s"
  fi
  TRAINER=$(abspath "$TRAINER")
  if [[ $PY == /opt/torch/* ]]; then  # the ranks find LibTorch and NCCL as in device-bench.sh
    export LD_LIBRARY_PATH="$($PY -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))'):$($PY -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"lib"))'):${LD_LIBRARY_PATH:-}"
  fi
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  if command -v nvidia-smi >/dev/null; then
    echo "device: $(nvidia-smi -L | wc -l) x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  fi

  if [[ $BUDGET_S == auto ]]; then
    left=$(( ${TOTAL_S:-560} - $(el) - ${JOBS_EXPECTED:-4} * ${OVERHEAD_S:-15} - 2 * GRACE_S - 20 ))
    BUDGET_S=$(( left / ${JOBS_EXPECTED:-4} ))
    (( BUDGET_S > ${BUDGET_MAX:-90} )) && BUDGET_S=${BUDGET_MAX:-90}
    (( BUDGET_S < 10 )) && BUDGET_S=10
    echo "budget: $BUDGET_S s per job (auto, $(el) s gone)"
  fi

  # Controller (SQLite in $W, or a copy of DB_IN) and worker; detached from this call in start mode.
  DET=()
  [[ $MODE == start ]] && DET=(setsid)
  if [[ -n $DB_IN ]]; then
    [[ -n $SWEEP_ID ]] || { echo "DB_IN needs SWEEP_ID"; exit 2; }
    cp "$(abspath "$DB_IN")" "$W/caddie.db" || exit 1
  fi
  "${DET[@]}" "$BIN_DIR/caddie-controller" --db "$W/caddie.db" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    > "$W/controller.out" 2>> "$W/controller.log" < /dev/null &
  CPID=$!
  ADDR=
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/^caddie-controller listening on //p' "$W/controller.out" | head -1)
    [[ -n $ADDR ]] && break
    kill -0 "$CPID" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $ADDR ]] || { cat "$W/controller.out" "$W/controller.log"; echo "CONTROLLER DID NOT START"; exit 1; }
  export CADDIE_ADDR=$ADDR
  echo "controller: $ADDR ($(el) s)"
  wargs=(--controller "$ADDR" --work-dir "$W/worker" --id "$WORKER_ID" --trainer "$TRAINER")
  [[ $GPUS_PER_JOB == 0 ]] && wargs+=(--cpu-slots 1)
  "${DET[@]}" "$BIN_DIR/caddie-worker" "${wargs[@]}" >> "$W/worker.log" 2>&1 < /dev/null &
  WPID=$!
  for _ in $(seq 100); do
    "$CADDIE" workers 2>/dev/null | grep -q "^$WORKER_ID " && break
    sleep 0.2
  done

  if [[ -n $SWEEP_ID ]]; then  # a later machine: the sweep is in the database already
    SWEEP=$SWEEP_ID
    "$CADDIE" workers undrain "$WORKER_ID"
  else
    # The sweep: examples/full_size.yaml with the data directory, GPUs and budget replaced.
    DATA_ABS=$(abspath "$DATA")
    [[ -f $DATA_ABS/byte_table.json ]] || { echo "no data in $DATA_ABS"; exit 1; }
    SW=$W/sweep.yaml
    sed -e "s|^  data: .*|  data: $DATA_ABS|" -e "s|^gpus: .*|gpus: $GPUS_PER_JOB|" \
        -e "s|^  train_seconds: .*|  train_seconds: $BUDGET_S|" -e "s|^  eval_seconds: .*|  eval_seconds: $EVAL_S|" \
        "$(abspath "$SWEEP_FILE")" > "$SW"
    echo "  grace_seconds: $GRACE_S" >> "$SW"   # the budget block is the file's last
    if [[ -n $BASE_EXTRA ]]; then
      IFS=';' read -ra kv <<< "$BASE_EXTRA"
      for ((i = ${#kv[@]} - 1; i >= 0; i--)); do
        line=$(echo "${kv[$i]}" | sed 's/^ *//; s/ *$//')
        [[ -n $line ]] && sed -i "/^base:/a\\  $line" "$SW"
      done
    fi
    grep -v '^#' "$SW"
    "$CADDIE" sweep validate "$SW" > "$W/validate.txt" 2>&1 || { cat "$W/validate.txt"; echo "SWEEP INVALID"; exit 1; }
    "$CADDIE" sweep submit "$SW" | tee "$W/submit.txt"
    SWEEP=$(sed -n 's/^submitted sweep \([^ ]*\) .*/\1/p' "$W/submit.txt")
    [[ -n $SWEEP ]] || { echo "SUBMIT FAILED"; exit 1; }
  fi
  "$CADDIE" workers
  JOBS=$("$CADDIE" jobs --sweep "$SWEEP" --json | $PY -c 'import json,sys; print(" ".join(j["id"] for j in json.load(sys.stdin).get("jobs", [])))')
  T_SUBMIT=$(date +%s)
  printf 'ADDR=%q\nSWEEP=%q\nJOBS=%q\nCPID=%q\nWPID=%q\nT_SUBMIT=%q\n' \
    "$ADDR" "$SWEEP" "$JOBS" "$CPID" "$WPID" "$T_SUBMIT" > "$W/state.env"
  if [[ $MODE == start ]]; then
    KEEP=1
    echo "started: controller pid $CPID, worker pid $WPID, sweep $SWEEP ($(el) s); next: MODE=follow"
    exit 0
  fi
fi

# Follow until no job is left to run (every one terminal, or the rest queued behind a drain),
# the deadline cancels what is left, or (follow mode) FOLLOW_S pass.
for j in $JOBS; do "$CADDIE" watch "$j" > "$W/watch_$j.txt" 2>&1 & WATCHERS+=($!); done
cancelled=0 drained=0 done=0
while :; do
  line=$("$CADDIE" jobs --sweep "$SWEEP" --json | $PY -c '
import json, sys
jobs = json.load(sys.stdin).get("jobs", [])
states = [j.get("state", "?").replace("JOB_STATE_", "") for j in jobs]
live = sum(s in ("LEASED", "RUNNING") for s in states)
queued = sum(s == "QUEUED" for s in states)
print(live, queued, len(jobs) - queued, " ".join("%s=%s" % (j["id"], s) for j, s in zip(jobs, states)))')
  read -r live queued leased rest <<< "$line"
  echo "[$(el) s] $rest"
  if [[ $DRAIN_AFTER != 0 && $drained == 0 && $leased -ge $DRAIN_AFTER && $queued -gt 0 ]]; then
    "$CADDIE" workers drain "$WORKER_ID" --reason "the rest of the sweep runs on the next machine"; drained=1
  fi
  if [[ $live == 0 && ( $queued == 0 || $drained == 1 ) ]]; then done=1; break; fi
  if [[ $DEADLINE_S != 0 && $cancelled == 0 && $(el) -ge $DEADLINE_S ]]; then
    echo "deadline: cancelling what is left"; "$CADDIE" sweep cancel "$SWEEP" --reason "rehearsal deadline"; cancelled=1
  fi
  if [[ $MODE == follow && $(el) -ge $FOLLOW_S ]]; then break; fi
  sleep "$POLL_S"
done
if [[ $done == 0 ]]; then
  KEEP=1
  echo "still running after $(el) s: call MODE=follow again"
  exit 0
fi
wait_watch=$(( $(date +%s) + 10 ))
while jobs -r | grep -q watch && [[ $(date +%s) -lt $wait_watch ]]; do sleep 0.5; done
[[ $queued -gt 0 ]] && echo "$queued job(s) left queued (drained) for the next machine: DB_IN=caddie.db SWEEP_ID=$SWEEP"
echo "sweep followed to the end, $(( $(date +%s) - T_SUBMIT )) s after the submit"

echo; echo "\$ caddie jobs --sweep $SWEEP"; "$CADDIE" jobs --sweep "$SWEEP" | tee "$W/jobs.txt"
echo; echo "\$ caddie leaderboard --sweep $SWEEP"; "$CADDIE" leaderboard --sweep "$SWEEP" | tee "$W/leaderboard.txt"
"$CADDIE" jobs --sweep "$SWEEP" --json > "$W/jobs.json"
for j in $JOBS; do "$CADDIE" logs "$j" --tail 100000 > "$W/logs_$j.jsonl" 2>&1; done
echo
$PY - "$W" $JOBS <<'PYEOF' | tee "$W/summary.md"
import json, statistics, sys
w, ids = sys.argv[1], sys.argv[2:]
jobs = {j["id"]: j for j in json.load(open(w + "/jobs.json")).get("jobs", [])}
print("| job | variant | state / exit | steps | ms/step | tokens/s | val_bpb | val_bpb post-quant | artifact bytes | peak GPU mem | budget verdict |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for i in ids:
    j = jobs.get(i, {})
    r = j.get("result", {})
    # ms/step: the training clock over the steps (warm-up excluded, as the trainer's clock);
    # without a result, the median of the logged step times.
    steps = [json.loads(l) for l in open(w + "/logs_%s.jsonl" % i) if l.startswith("{")]
    ms = [e["step_ms"] for e in steps if e.get("event") == "step" and "step_ms" in e]
    if r.get("steps") and r.get("train_seconds"):
        ms = [1000.0 * float(r["train_seconds"]) / int(r["steps"])]
    st = j.get("state", "?").replace("JOB_STATE_", "") + " / " + j.get("exit_reason", "-").replace("EXIT_REASON_", "")
    ab, lim = int(r.get("artifact_bytes", 0)), int(r.get("limit_bytes", 0) or 16000000)
    if not r:
        verdict = "no result"
    elif r.get("within_budget") and ab <= lim:
        verdict = "within (time and %d B)" % lim
    else:
        verdict = "OVER: artifact %d > %d B" % (ab, lim) if ab > lim else "over budget"
    fin = json.loads(r["final_json"]) if r.get("final_json") else {}
    mem = ("%.1f GiB" % (fin["peak_mem_bytes"] / 2**30)) if fin.get("peak_mem_bytes") else "-"
    f = lambda k, fmt: (fmt % r[k]) if k in r else "-"
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        i, j.get("params_json", "{}") or "{}", st, r.get("steps", "-"),
        ("%.1f" % statistics.median(ms)) if ms else "-", f("tokens_per_second", "%.0f"),
        f("val_bpb", "%.4f"), f("val_bpb_post_quant", "%.4f"), r.get("artifact_bytes", "-"), mem, verdict))
    if j.get("message"):
        print("|  | message: %s |" % j["message"].replace("\n", " ")[:600].replace("|", "/"))
PYEOF
echo "total: $(el) s"
