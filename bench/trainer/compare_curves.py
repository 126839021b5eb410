#!/usr/bin/env python3
"""Compares two caddie-train event streams step by step (train_loss) and the final val.
usage: compare_curves.py A.jsonl B.jsonl [--rtol 1e-3]; exit 1 when any step differs by more."""
import json, sys

def load(path):
    steps, val = {}, None
    for line in open(path):
        line = line.strip()
        if not line.startswith('{'):
            continue
        e = json.loads(line)
        if e.get('event') == 'step':
            steps[e['step']] = e['train_loss']
        elif e.get('event') == 'val':
            val = e['val_loss']
    return steps, val

a, b = sys.argv[1], sys.argv[2]
rtol = float(sys.argv[sys.argv.index('--rtol') + 1]) if '--rtol' in sys.argv else 1e-3
sa, va = load(a)
sb, vb = load(b)
common = sorted(set(sa) & set(sb))
worst = max((abs(sa[s] - sb[s]) / abs(sa[s]), s) for s in common) if common else (float('inf'), -1)
print(f"curve compare: {len(common)} common steps; worst relative diff {worst[0]:.2e} at step {worst[1]}")
for s in [1, 10, 25, 50]:
    if s in sa and s in sb:
        print(f"  step {s:3d}: {sa[s]:.6f} vs {sb[s]:.6f}")
if va is not None and vb is not None:
    print(f"  final val_loss: {va:.6f} vs {vb:.6f} (rel {abs(va - vb) / abs(va):.2e})")
ok = len(common) >= 50 and worst[0] <= rtol
print("curve compare:", "PASS" if ok else "FAIL", f"(rtol {rtol})")
sys.exit(0 if ok else 1)
