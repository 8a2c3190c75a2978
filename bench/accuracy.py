#!/usr/bin/env python3
"""Error of nablacl's attention against float64, next to FlexAttention's, on one GPU.

Generates video-like Q, K, V (compare_torch.video_inputs), lets nablacl build the mask once
(default settings), then runs `nablacl run` with that mask once per setting (each setting a set
of environment variables: a forced variant, a knob), gives FlexAttention the same mask, and
reports, per output, the max abs and relative RMS
error against float64 attention with that mask over N random heads x 8 query blocks. This is
how to find where an output's error comes from: the portable kernel keeps P in fp32, the
tensor-core kernels round P to the storage type, NABLACL_MMA_LAZY_RESCALE moves the softmax's
reference maximum.

Example (Wan2.1-14B shape; each setting one `nablacl run`):
  python3 bench/accuracy.py --nablacl build/tools/nablacl --grid 21,40,80 --heads 40 \\
      --settings "default;NABLACL_MMA_LAZY_RESCALE=0;NABLACL_VARIANT=portable"
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from compare_torch import block_sizes, f64_errors, load_npy, save_npy, video_inputs


def parse_setting(text):
    """'A=1,B=x' -> {'A': '1', 'B': 'x'}; 'default' -> {}."""
    if text.strip() in ("", "default"):
        return {}
    return dict(item.split("=", 1) for item in text.split(","))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nablacl", required=True)
    ap.add_argument("--grid", default="21,40,80")
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--algo", default="nabla-0.7")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
    ap.add_argument("--structure", type=float, default=0.75)
    ap.add_argument("--samples", type=int, default=3, help="random heads (x 8 query blocks each)")
    ap.add_argument("--settings", default="default", help="';'-separated environment settings")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    grid = tuple(int(x) for x in args.grid.split(","))
    D, H = args.dim, args.heads
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    dev = torch.device("cuda")
    q, k, v = video_inputs(1, H, grid, D, dtype, dev, torch.Generator(device=dev).manual_seed(0),
                           args.structure)
    sizes = block_sizes(q.shape[2], grid)
    work = tempfile.mkdtemp(prefix="nablacl-acc-")
    paths = {n: os.path.join(work, n + ".npy") for n in ("q", "k", "v")}
    for name, t in (("q", q), ("k", k), ("v", v)):
        save_npy(paths[name], t)

    def run(extra, env, out):
        cmd = [args.nablacl, "run", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--grid",
               args.grid, "--dtype", args.dtype, "--out", out, "--json", "--warmup-ms", "500", "--repeat", "5"]
        res = subprocess.run(cmd + extra, capture_output=True, text=True, env={**os.environ, **env})
        if res.returncode != 0:
            sys.exit(f"nablacl {extra} {env} failed ({res.returncode}): {res.stderr.strip()}")
        return json.loads(res.stdout)

    csr = os.path.join(work, "csr")
    run(["--algo", args.algo, "--csr-out", csr], {}, os.path.join(work, "o.npy"))
    num, idx = np.load(csr + "_kv_num_blocks.npy"), np.load(csr + "_kv_indices.npy")
    nb = len(sizes)
    keep = np.zeros((1, H, nb, nb), np.uint8)
    for h in range(H):
        for i in range(nb):
            keep[0, h, i, idx[0, h, i, : num[0, h, i]]] = 1
    np.save(os.path.join(work, "mask.npy"), keep)

    outs, notes = {}, {}
    for i, text in enumerate(args.settings.split(";")):
        out = os.path.join(work, f"o{i}.npy")
        info = run(["--algo", "dense", "--mask-in", os.path.join(work, "mask.npy")], parse_setting(text), out)
        name = f"nablacl {text} ({info.get('variant', '?')})"
        outs[name] = load_npy(out, dtype).to(dev)
        notes[name] = info.get("attn_ms")
    mask = (num, idx)

    num, idx = (torch.from_numpy(a).to(dev) for a in mask)
    block_mask = BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=64)
    flex = torch.compile(flex_attention)
    outs["FlexAttention (compile)"] = flex(q, k, v, block_mask=block_mask,
                                           kernel_options={"BLOCK_M": 64, "BLOCK_N": 64})
    density = float(num.sum()) / (H * len(sizes) ** 2)
    errs = f64_errors(q, k, v, outs, num.cpu(), idx.cpu(), sizes, args.samples, torch.Generator().manual_seed(2))
    print(f"grid {args.grid} H={H} D={D} {args.dtype} {args.algo}, video inputs (structure "
          f"{args.structure:g}), density {density:.4f}; {torch.cuda.get_device_name()} torch {torch.__version__}")
    print("\n| output | attention ms | max abs vs float64 | relative RMS |\n|---|---:|---:|---:|")
    for name, e in errs.items():
        ms = notes.get(name)
        print(f"| {name} | {'' if ms is None else f'{ms:.2f}'} | {e['max_abs']:.4f} | {e['rel_rms'] * 100:.3f} % |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"grid": grid, "heads": H, "dim": D, "density": density, "errors": errs, "ms": notes}, f, indent=1)


if __name__ == "__main__":
    main()
