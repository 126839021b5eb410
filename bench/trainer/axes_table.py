#!/usr/bin/env python3
"""Tiny-config CPU results per architecture axis of caddie-train, as a Markdown table.

Usage: bench/trainer/axes_table.py CADDIE_TRAIN DATA_DIR [STEPS] > docs/trainer-axes.md

Each row trains the same tiny base (2 layers x 64, 4/2 heads, seq 64, 2,048 tokens a
step, vocab 1024) with one axis changed (the vocab rows read DATA_DIR's sibling sp256 and
sp4096), for STEPS steps (default 100) on one CPU
thread, and reports the parameter count, artifact bytes (int8 + zstd + code), training
tokens/s and val_bpb before and after the artifact round trip (first 16,384 val tokens).
"""
import json
import os
import subprocess
import sys
import tempfile

BASE = {
    "num_layers": 2, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2, "seq_len": 64,
    "train_batch_tokens": 2048, "grad_accum_steps": 1, "warmup_steps": 0, "val_every": 0,
    "log_every": 0, "val_batch_tokens": 16384, "val_max_tokens": 16384,
    "max_wallclock_seconds": 0,
}

VARIANTS = [
    ("baseline (2x64)", {}),
    ("loops=2", {"loops": 2}),
    ("num_layers=4, unique_blocks=2", {"num_layers": 4, "unique_blocks": 2}),
    ("num_layers=3, loops=3, recur_layers=1-1", {"num_layers": 3, "loops": 3, "recur_layers": "1-1"}),
    ("... + loop_scalars", {"num_layers": 3, "loops": 3, "recur_layers": "1-1", "loop_scalars": True}),
    ("... + loop_embedding", {"num_layers": 3, "loops": 3, "recur_layers": "1-1", "loop_embedding": True}),
    ("... + loop_scalars + loop_embedding",
     {"num_layers": 3, "loops": 3, "recur_layers": "1-1", "loop_scalars": True, "loop_embedding": True}),
    ("mixer=ssm", {"mixer": "ssm"}),
    ("mixer_pattern=AS", {"mixer_pattern": "AS"}),
    ("embed_dim=32", {"embed_dim": 32}),
    ("pos_scheme=alibi", {"pos_scheme": "alibi"}),
    ("pos_scheme=none", {"pos_scheme": "none"}),
    ("rope_fraction=0.5", {"rope_fraction": 0.5}),
    ("num_kv_heads=1", {"num_kv_heads": 1}),
    ("mlp_mult=4", {"mlp_mult": 4}),
    ("seq_len_schedule=32:0.5,64", {"seq_len_schedule": "32:0.5,64"}),
    ("qat_bits=4, export_bits=4", {"qat_bits": 4, "export_bits": 4}),
    # Vocab: the sibling tokenizers of DATA_DIR (caddie data --vocab 256 / 4096 on the same
    # corpus); val_bpb stays comparable through each one's byte tables.
    ("vocab 256 (sp256)", {"data": "sp256", "vocab_size": 256}),
    ("vocab 4096 (sp4096)", {"data": "sp4096", "vocab_size": 4096}),
]


def main():
    trainer, data = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    print(f"Tiny-config CPU results per axis ({steps} steps, 2,048 tokens a step, sp1024 test data, "
          "1 CPU thread, shared 2-core machine).\n")
    print(f"Made by: `bench/trainer/axes_table.py {os.path.basename(trainer)} $CADDIE_TESTDATA/sp1024 {steps}`\n")
    print("| variant | params | artifact bytes | tokens/s | val_bpb | val_bpb after round trip |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, patch in VARIANTS:
            spec = dict(BASE, data=data, iterations=steps)
            spec.update(patch)
            if "data" in patch:  # a sibling shard directory of DATA_DIR
                spec["data"] = os.path.join(os.path.dirname(os.path.abspath(data)), patch["data"])
            path = os.path.join(tmp, "spec.json")
            with open(path, "w") as f:
                json.dump(spec, f)
            env = dict(os.environ, OMP_NUM_THREADS="1")
            out = subprocess.run([trainer, "--spec", path], capture_output=True, text=True, env=env)
            final = [json.loads(l) for l in out.stdout.splitlines() if '"final"' in l]
            if out.returncode != 0 or not final:
                print(f"| {name} | failed: {out.stderr.strip()[:80]} | | | | |")
                continue
            f = final[0]
            print(f"| {name} | {f['params']:,} | {f['artifact_bytes']:,} | {f['tokens_per_s']:,.0f} | "
                  f"{f['val_bpb']:.4f} | {f['val_bpb_post_quant']:.4f} |", flush=True)
    print("\nAt this size every tensor but the vocab-4096 embedding (262,144 elements) has at most "
          "65,536 elements, so export keeps them as fp16 (the reference's rule): export_bits and "
          "qat_bits change nothing here, and the round trip is near-exact. val_bpb is comparable "
          "across the vocab rows through each tokenizer's byte tables. Tokens/s varies with the "
          "load of the shared machine.")


if __name__ == "__main__":
    main()
