#!/usr/bin/env python3
"""Reads caddie-train event streams from scripts/device-bench.sh and prints the figures:
tokens/s, ms/step, MFU, peak memory, val_bpb.  usage: summarize.py LABEL=EVENTS.jsonl ...
Throughput is taken from the step events after the first logged interval that follows
warm-up (the interval rates, median), so start-up and profiled steps stay out."""
import json, statistics, sys

PEAK = float(__import__('os').environ.get('BENCH_PEAK_TFLOPS', '773')) * 1e12
REF = {'H100': 1.505e6, 'H200': 1.72e6}

def flops_per_token(spec, params):
    # 6·N (every parameter is in one matmul per token; the tied head counts once) plus
    # causal attention: QKᵀ and AV, 2·T·C per layer forward on average, ×3 with backward.
    return 6 * params + 6 * spec['num_layers'] * spec['seq_len'] * spec['model_dim']

def load(path):
    ev = [json.loads(l) for l in open(path) if l.startswith('{')]
    start = next((e for e in ev if e.get('event') == 'start'), None)
    steps = [e for e in ev if e.get('event') == 'step']
    final = next((e for e in ev if e.get('event') == 'final'), None)
    return start, steps, final

gpu = __import__('os').environ.get('BENCH_GPU', '')
rows = []
for arg in sys.argv[1:]:
    label, path = arg.split('=', 1)
    try:
        start, steps, final = load(path)
    except OSError:
        continue
    if not start or not final:
        print(f"{label}: no final event (failed run?)"); continue
    spec, world = start['spec'], start.get('world_size', 1)
    # interval rates between log events ending at step >= 20 (log_every 5 or 10; the
    # profiled steps 12-13 and warm-up stay out), or past step 100 for wall-clock runs
    lo = 20 if spec.get('max_wallclock_seconds', 0) == 0 else 100
    ivals = [e['tokens_per_s'] for e in steps if e['step'] >= lo and e['step'] % spec['log_every'] == 0]
    tps = statistics.median(ivals) if ivals else final['tokens_per_s']
    spread = (min(ivals), max(ivals)) if ivals else (tps, tps)
    fpt = flops_per_token(spec, start['params'])
    mfu = tps * fpt / (PEAK * world)
    ms = spec['train_batch_tokens'] / tps * 1e3
    ref = next((v for k, v in REF.items() if k in gpu), None)
    rows.append((label, world, ms, tps, tps / world, mfu, final['peak_mem_bytes'] / 2**30, final['steps'],
                 final['train_time_s'], final['val_bpb'], ref))
    if label.startswith('wall'):
        ivals = ivals[:-1] or ivals  # the last interval ends at the budget, not at a log step
    print(f"{label}: tokens/s intervals {[round(x) for x in ivals]} (min {spread[0]:.0f}, max {spread[1]:.0f}); "
          f"flops/token {fpt/1e6:.1f} M; params {start['params']}")
print()
print("| run | GPUs | ms/step | tokens/s | tokens/s/GPU | MFU | peak mem/GPU | steps | train s | val_bpb | vs reference/GPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    ratio = f"{r[4]/r[10]:.2f}x" if r[10] else "-"
    print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]/1e6:.3f} M | {r[4]/1e6:.3f} M | {100*r[5]:.1f}% | {r[6]:.1f} GiB | {r[7]} | {r[8]:.1f} | {r[9]:.4f} | {ratio} |")
one = [r for r in rows if r[1] == 1 and r[0].startswith('bench')]
two = [r for r in rows if r[1] == 2]
if one and two:
    print(f"\n2-GPU scaling efficiency: {two[0][3] / (2 * one[0][3]) * 100:.1f}%")
