#!/usr/bin/env python3
"""The Wan 2.1 NABLA self-attention call on one GPU, in one process, on the same inputs:

  * reference: the NABLA reference's mask build (`nablaT` of gen-ai-team/Wan2.1-NABLA as the
    model calls it: block means, logits, softmax, sort and cumulative sum in the inputs' bf16,
    OR the STA window, every kept block a full block of FlexAttention's BlockMask), then
    FlexAttention compiled as the model compiles it (mode="max-autotune-no-cudagraphs",
    dynamic=True);
  * nablacl.torch.attention, the drop-in for both: copies into and out of the staging memory
    OpenCL shares with CUDA and the waits on both sides included;
  * the mask alone: nablacl.torch.block_mask (FlexAttention BlockMask; also with the
    query-side indices the reference computes too, though only a backward pass reads them)
    against the reference's mask build.

Inputs are laid out as the model has them ([B, S, H, D] transposed to [B, H, S, D] views), in
tile order, with block structure (per-block directions of logit spread --spread) so that
`nabla-0.4_sta-11-3-3` keeps about 12 % of the blocks at the Wan 14B shape. The check runs
FlexAttention with nablacl's own mask and compares outputs (max abs <= 2e-2 in bf16).

Example (Wan2.1-14B, 1280x640, 81 frames):
  python3 bench/torch_dropin.py --grid 21,40,80 --heads 40 --dim 128 --json out.json
"""
import argparse
import json
import math
import sys
import time

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

import nablacl
import nablacl.torch as ntorch
from compare_torch import median_ms


def timed(fn, repeat, warmup_ms):
    """Median of `repeat` event-timed calls after `warmup_ms` of untimed calls (the GPU's clock
    settles at its power cap under sustained load within about a second): compare_torch's
    measurement, so both scripts time alike."""
    return median_ms(fn, warmup_ms=warmup_ms, repeat=repeat)


def sta_blocks(T, Hb, Wb, wt, wh, ww, device):
    """[Nb, Nb] bool: block (t, h, w) sees (t', h', w') within half the window per axis."""
    t = torch.arange(T, device=device).repeat_interleave(Hb * Wb)
    h = torch.arange(Hb, device=device).repeat_interleave(Wb).repeat(T)
    w = torch.arange(Wb, device=device).repeat(T * Hb)
    near = lambda a, win: (a[:, None] - a[None, :]).abs() <= win // 2  # noqa: E731
    return near(t, wt) & near(h, wh) & near(w, ww)


def reference_mask(q, k, T, Hb, Wb, thr, sta):
    """The NABLA reference's mask build, as the model calls it (bf16 inputs keep bf16 math
    through the cumulative sum), with the same operations and so the same cost."""
    B, H, S, D = q.shape
    nb = S // 64
    qm = q.reshape(B, H, nb, 64, D).mean(-2)
    km = k.reshape(B, H, nb, 64, D).mean(-2).transpose(-2, -1)
    probs = torch.softmax((qm @ km) / math.sqrt(D), dim=-1)
    ascending, order = probs.sort(-1)
    keep_sorted = (ascending.cumsum_(-1) >= 1 - thr).int()
    keep = keep_sorted.gather(-1, order.argsort(-1))
    keep = torch.logical_or(keep, sta_blocks(T, Hb, Wb, *sta, q.device)[None, None])
    count = keep.sum(-1).to(torch.int32)
    indices = keep.argsort(dim=-1, descending=True).to(torch.int32)
    return BlockMask.from_kv_blocks(torch.zeros_like(count), indices, count, indices, BLOCK_SIZE=64)


def structured(B, H, S, D, spread, dtype, gen):
    """[B, S, H, D] tokens: a per-block direction (logit spread `spread` between blocks) plus
    unit noise; returned as the model's [B, H, S, D] view."""
    nb = S // 64
    base = torch.randn(B, H, nb, D, device="cuda", generator=gen) * math.sqrt(spread)
    x = base.repeat_interleave(64, dim=2) + torch.randn(B, H, S, D, device="cuda", generator=gen)
    return x.to(dtype).transpose(1, 2).contiguous().transpose(1, 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="21,40,80")
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--thr", type=float, default=0.4)
    ap.add_argument("--sta", default="11,3,3", help="STA window in tiles (wT,wH,wW)")
    ap.add_argument("--spread", type=float, default=1.4, help="std of block logits")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup-ms", type=float, default=1000.0)
    ap.add_argument("--plain-compile", action="store_true",
                    help="also time FlexAttention under a plain torch.compile (BLOCK 64)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    grid = tuple(int(x) for x in args.grid.split(","))
    T, Ht, Wt = grid
    if Ht % 8 or Wt % 8:
        sys.exit("the reference needs whole 8x8 tiles: grid H and W multiples of 8")
    sta = tuple(int(x) for x in args.sta.split(","))
    B, H, D = args.batch, args.heads, args.dim
    S = T * Ht * Wt
    nb = S // 64
    algo = f"nabla-{args.thr:g}_sta-{sta[0]}-{sta[1]}-{sta[2]}"
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = structured(B, H, S, D, args.spread, torch.bfloat16, gen)
    k = structured(B, H, S, D, args.spread, torch.bfloat16, gen)
    v = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16, generator=gen).transpose(1, 2)
    fig = {"shape": [B, H, S, D], "grid": list(grid), "algo": algo, "dtype": "bf16",
           "device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "nablacl": nablacl.__version__, "repeat": args.repeat, "warmup_ms": args.warmup_ms}

    def log(msg):
        print(msg, flush=True)

    def record(key, value):
        """Keeps a figure and rewrites the JSON, so that a run cut short keeps what it had."""
        fig[key] = value
        log(f"{key}: {value}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(fig, f, indent=1)

    w, r = args.warmup_ms, args.repeat
    ref_mask = lambda: reference_mask(q, k, T, Ht // 8, Wt // 8, args.thr, sta)  # noqa: E731
    ours_call = lambda: ntorch.attention(q, k, v, grid, algo)  # noqa: E731

    # nablacl first (its figures do not wait for FlexAttention's autotuning).
    t0 = time.time()
    out_ours = ours_call()
    torch.cuda.synchronize()
    record("nablacl_first_call_s", round(time.time() - t0, 2))
    record("variant", ntorch.context().last_variant)
    num, _idx = ntorch.mask(q, k, grid, algo)
    record("density_nablacl", float(num.sum()) / (B * H * nb * nb))
    record("dropin_ms", timed(ours_call, r, w))
    record("mask_only_ms", timed(lambda: ntorch.block_mask(q, k, grid, algo), r, w))
    record("mask_only_with_q_blocks_ms", timed(
        lambda: ntorch.block_mask(q, k, grid, algo, compute_q_blocks=True), r, w))
    record("mask_kv_tensors_ms", timed(lambda: ntorch.mask(q, k, grid, algo), r, w))
    record("density_reference", float(ref_mask().full_kv_num_blocks.sum()) / (B * H * nb * nb))
    record("reference_mask_ms", timed(ref_mask, r, w))
    record("mask_only_ratio", fig["mask_only_ms"] / fig["reference_mask_ms"])

    # The reference's attention call, compiled as the model compiles it.
    flex = torch.compile(flex_attention, mode="max-autotune-no-cudagraphs", dynamic=True)
    ref_call = lambda: flex(q, k, v, block_mask=ref_mask())  # noqa: E731
    t0 = time.time()
    out_ref = ref_call()
    torch.cuda.synchronize()
    record("flex_compile_s", round(time.time() - t0, 1))
    # Correctness: FlexAttention with nablacl's own mask (with the query-side indices, as the
    # reference's BlockMask has them, so that FlexAttention is not compiled again).
    bm = ntorch.block_mask(q, k, grid, algo, compute_q_blocks=True)
    out_same = flex(q, k, v, block_mask=bm)
    record("max_abs_vs_flex_same_mask", float((out_ours.float() - out_same.float()).abs().max()))
    record("max_abs_vs_reference_output", float((out_ours.float() - out_ref.float()).abs().max()))
    record("reference_call_ms", timed(ref_call, r, w))
    record("dropin_ratio", fig["dropin_ms"] / fig["reference_call_ms"])
    record("flex_same_mask_ms", timed(lambda: flex(q, k, v, block_mask=bm), r, w))
    record("dropin_ms_again", timed(ours_call, r, w))
    if args.plain_compile:
        plain = torch.compile(flex_attention)
        opts = {"BLOCK_M": 64, "BLOCK_N": 64}
        record("flex_plain_same_mask_ms", timed(
            lambda: plain(q, k, v, block_mask=bm, kernel_options=opts), r, w))

if __name__ == "__main__":
    main()
