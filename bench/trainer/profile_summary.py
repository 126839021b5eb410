#!/usr/bin/env python3
"""Summarises a Kineto Chrome trace (CADDIE_PROFILE) into where the GPU time goes.
usage: profile_summary.py TRACE.json [steps]"""
import collections, json, sys

trace = json.load(open(sys.argv[1]))
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
ev = [e for e in trace.get('traceEvents', []) if e.get('ph') == 'X']
gpu = [e for e in ev if e.get('cat') in ('kernel', 'gpu_memcpy', 'gpu_memset')]
if not gpu:
    print('profile: no GPU events'); sys.exit(0)

def bucket(n):
    l = n.lower()
    if 'nccl' in l: return 'nccl'
    if 'caddie::model::cuda' in l: return 'fused (caddie kernels)'
    if 'flash' in l or 'fmha' in l or 'attention' in l or 'cudnn' in l: return 'attention (flash)'
    if any(k in l for k in ('gemm', 'nvjet', 'xmma', 'cutlass', 'sm90', 'splitk')): return 'matmul'
    if 'memcpy' in l or 'memset' in l: return 'memcpy/memset'
    if 'softmax' in l or 'nll' in l or 'cross_entropy' in l: return 'softmax / cross-entropy'
    if 'reduce' in l or 'norm' in l: return 'reductions / norms'
    if 'elementwise' in l or 'vectorized' in l or 'unrolled' in l or 'pointwise' in l: return 'elementwise'
    if 'cat' in l: return 'cat / copy'
    return 'other'

by_name, by_bucket, count = collections.Counter(), collections.Counter(), collections.Counter()
for e in gpu:
    by_name[e['name']] += e['dur']
    by_bucket[bucket(e['name'])] += e['dur']
    count[e['name']] += 1
busy = sum(by_name.values())
t0 = min(e['ts'] for e in gpu)
t1 = max(e['ts'] + e['dur'] for e in gpu)
# Union of kernel intervals (streams may overlap) vs the span: the idle share.
iv = sorted((e['ts'], e['ts'] + e['dur']) for e in gpu)
union, cs, ce = 0.0, iv[0][0], iv[0][1]
for s, e in iv[1:]:
    if s > ce:
        union += ce - cs; cs, ce = s, e
    else:
        ce = max(ce, e)
union += ce - cs
span = t1 - t0
print(f"profile: {steps} step(s), GPU span {span/1e3/steps:.1f} ms/step, kernels busy {union/1e3/steps:.1f} ms/step "
      f"({100*union/span:.1f}% of span), {len(gpu)//steps} GPU ops/step")
print("by kind (ms/step, % of kernel time):")
for b, d in by_bucket.most_common():
    print(f"  {b:28s} {d/1e3/steps:8.2f}  {100*d/busy:5.1f}%")
print("top kernels (ms/step, calls/step, name):")
for n, d in by_name.most_common(22):
    print(f"  {d/1e3/steps:8.2f} {count[n]//steps:5d}  {n[:110]}")
