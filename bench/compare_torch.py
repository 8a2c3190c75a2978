#!/usr/bin/env python3
"""Side-by-side timing of nablacl against PyTorch on one GPU, same inputs, same mask.

Generates Q, K, V (bf16 or f16, tile order) on the GPU, writes them as .npy, runs
`nablacl run` on them (which exports its mask through --csr-out, or takes a random mask
through --mask-in), and times on the same device in the same process:

  * torch.nn.functional.scaled_dot_product_attention (dense),
  * flex_attention with BlockMask.from_kv_blocks(...) (64-token blocks), compiled plainly
    (kernel_options BLOCK_M = BLOCK_N = 64) and with mode="max-autotune-no-cudagraphs",
  * nablacl (its own event-profiled median, from `nablacl run --json --repeat N`),
  * with --ref-mask THR, the reference's NABLA mask build in PyTorch (block means and logits in
    the storage type, softmax, full sort and cumulative sum in fp32, then the BlockMask) next to
    nablacl's mask build; when nablacl built nabla-THR itself (--algo), the two masks are
    compared row by row (they may differ only where a cumulative sum is within rounding of thr).

Checks that nablacl's output matches FlexAttention's (max abs <= 2e-2 in bf16) and prints a
Markdown table (also written to --table). TFLOP/s count computed blocks only:
4 * Sq * Sk_kept * D per head.

Example (Wan2.1-14B, 1280x640, 81 frames):
  python3 bench/compare_torch.py --nablacl build/tools/nablacl --grid 21,40,80 --heads 40 \
      --dim 128 --density 0.1
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention


def median_ms(fn, warmup=2, warmup_ms=0.0, idle_ms=0.0, repeat=5):
    """Median of `repeat` event-timed calls, after `idle_ms` of an idle GPU, then `warmup`
    untimed calls and more until `warmup_ms` has passed since the first ended. (A GPU's clock
    follows its power limiter, which reacts within about a second: on the H200 the first
    calls after an idle spell run at the full clock, sustained attention at the power cap.)"""
    torch.cuda.synchronize()
    time.sleep(idle_ms * 1e-3)
    fn()
    torch.cuda.synchronize()
    until, n = time.perf_counter() + warmup_ms * 1e-3, 1
    while n < warmup or time.perf_counter() < until:
        fn()
        torch.cuda.synchronize()
        n += 1
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def save_npy(path, t):
    """Saves a bf16/f16 CUDA tensor as .npy: f16 as '<f2', bf16 bits as '<u2'."""
    if t.dtype == torch.bfloat16:
        np.save(path, t.contiguous().view(torch.int16).cpu().numpy().view(np.uint16))
    else:
        np.save(path, t.contiguous().cpu().numpy())


def load_npy(path, dtype):
    a = np.load(path)
    t = torch.from_numpy(a.view(np.int16) if dtype == torch.bfloat16 else a)
    return t.view(dtype) if dtype == torch.bfloat16 else t


def reference_keep(q, k, thr):
    """The NABLA reference's keep matrix [B, H, nb, nb] (bool): block means of Q and K and
    their logits in the inputs' type, softmax and the inclusive cumulative sum of the sorted
    row in fp32, keep iff that sum >= 1 - thr. Full 64-token blocks only (the reference crops
    videos to whole tiles)."""
    B, H, S, D = q.shape
    nb = S // 64
    qa = q.view(B, H, nb, 64, D).mean(-2)
    ka = k.view(B, H, nb, 64, D).mean(-2)
    p = torch.softmax((qa @ ka.transpose(-1, -2)).float() / math.sqrt(D), dim=-1)
    vals, order = p.sort(dim=-1)
    keep_sorted = vals.cumsum(dim=-1) >= 1.0 - thr
    return torch.empty_like(keep_sorted).scatter_(-1, order, keep_sorted)


def reference_block_mask(q, k, thr):
    """reference_keep, then FlexAttention's BlockMask: what one reference mask build costs."""
    keep = reference_keep(q, k, thr)
    num = keep.sum(-1, dtype=torch.int32)
    idx = keep.to(torch.uint8).argsort(dim=-1, descending=True, stable=True).to(torch.int32)
    return BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=64)


def nabla_thr(algo):
    """thr of a pure nabla-THR algorithm string, else None."""
    if algo and algo.startswith("nabla-") and "_" not in algo:
        return float(algo[len("nabla-"):])
    return None


def block_sizes(S, grid):
    """Token count of every block in tile order (ragged edge tiles), as nablacl defines them."""
    if grid is None:
        return [min(64, S - i) for i in range(0, S, 64)]
    T, H, W = grid
    sizes = []
    for _t in range(T):
        for hb in range(0, H, 8):
            for wb in range(0, W, 8):
                sizes.append(min(8, H - hb) * min(8, W - wb))
    return sizes


def tile_order(grid):
    """Raster index (t, h, w) of every tile-order position, as nablacl's reorder defines it."""
    T, H, W = grid
    order = []
    for t in range(T):
        for hb in range(0, H, 8):
            for wb in range(0, W, 8):
                for gh in range(hb, min(hb + 8, H)):
                    order.extend((t * H + gh) * W + gw for gw in range(wb, min(wb + 8, W)))
    return torch.tensor(order)


def video_inputs(B, H, grid, D, dtype, dev, gen, amplitude):
    """Video-like Q, K, V in tile order: each head sees a few smooth space-time waves (random
    frequencies and phases) plus noise, and K shares Q's waves, so neighbouring tiles attend
    to each other as in a DiT's self-attention. `amplitude` sets the waves against unit noise:
    the larger, the peakier the pooled map and the fewer blocks NABLA keeps."""
    T, Ht, Wt = grid
    t, y, x = torch.meshgrid(torch.arange(T, device=dev), torch.arange(Ht, device=dev),
                             torch.arange(Wt, device=dev), indexing="ij")
    pos = torch.stack([t.flatten() / T, y.flatten() / Ht, x.flatten() / Wt], -1).float()  # [S, 3]
    waves = 16
    freq = torch.randn(B, H, waves, 3, device=dev, generator=gen) * 6.0
    phase = torch.rand(B, H, waves, device=dev, generator=gen) * 6.2832
    basis = torch.cos(torch.einsum("sc,bhwc->bhsw", pos, freq) + phase[:, :, None, :])  # [B,H,S,w]
    proj_q = torch.randn(B, H, waves, D, device=dev, generator=gen) / math.sqrt(waves)
    proj_k = proj_q + 0.3 * torch.randn(B, H, waves, D, device=dev, generator=gen) / math.sqrt(waves)
    S = T * Ht * Wt
    noise = lambda: torch.randn(B, H, S, D, device=dev, generator=gen)
    q = amplitude * basis @ proj_q + noise()
    k = amplitude * basis @ proj_k + noise()
    v = noise()
    order = tile_order(grid).to(dev)
    return tuple(x[:, :, order].to(dtype).contiguous() for x in (q, k, v))


def f64_errors(q, k, v, outs, num, idx, sizes, samples, gen):
    """Max abs and relative RMS error of each output in `outs` against float64 attention with
    the same block mask, over `samples` random (b, h) pairs x 8 random query blocks."""
    B, H, S, D = q.shape
    starts = np.concatenate([[0], np.cumsum(sizes)])
    nb = len(sizes)
    err = {name: [0.0, 0.0, 0.0] for name in outs}  # max abs, sum sq err, sum sq ref
    for _ in range(samples):
        b, h = int(torch.randint(B, (1,), generator=gen)), int(torch.randint(H, (1,), generator=gen))
        for i in torch.randint(nb, (8,), generator=gen).tolist():
            cols = idx[b, h, i, : int(num[b, h, i])].tolist()
            keys = torch.cat([torch.arange(starts[c], starts[c + 1]) for c in cols]).to(q.device)
            rows = slice(int(starts[i]), int(starts[i + 1]))
            qi = q[b, h, rows].double()
            p = torch.softmax(qi @ k[b, h, keys].double().T / math.sqrt(D), dim=-1)
            ref = p @ v[b, h, keys].double()
            for name, o in outs.items():
                d = o[b, h, rows].double() - ref
                e = err[name]
                e[0] = max(e[0], float(d.abs().max()))
                e[1] += float((d * d).sum())
                e[2] += float((ref * ref).sum())
    return {name: {"max_abs": e[0], "rel_rms": math.sqrt(e[1] / e[2])} for name, e in err.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nablacl", required=True, help="path to the nablacl binary")
    ap.add_argument("--grid", default="21,40,80")
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--density", type=float, help="random block mask of this density (diagonal kept)")
    g.add_argument("--algo", help="nablacl mask algorithm, e.g. nabla-0.7 or sta-11-3-3")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup-ms", type=float, default=1000.0,
                    help="warm every contender up for this long before timing it, so that all are "
                         "timed at the clocks of a GPU under sustained load (default 1000)")
    ap.add_argument("--idle-ms", type=float, default=0.0,
                    help="let the GPU idle this long before each contender (default 0); with "
                         "--warmup-ms 0, each is timed at the clocks of a burst after idling")
    ap.add_argument("--variant", default=None, help="NABLACL_VARIANT for the nablacl run")
    ap.add_argument("--skip-dense", action="store_true", help="skip SDPA")
    ap.add_argument("--ref-mask", type=float, default=None, metavar="THR",
                    help="also time the reference's nabla-THR mask build in PyTorch")
    ap.add_argument("--inputs", default="random", choices=["random", "video"],
                    help="Q, K, V: independent Gaussians, or video-like (smooth space-time waves + noise)")
    ap.add_argument("--structure", type=float, default=0.75,
                    help="--inputs video: amplitude of the space-time waves against unit noise")
    ap.add_argument("--f64", type=int, default=0, metavar="N",
                    help="also report each output's error against float64 attention with the same mask "
                         "over N random heads x 8 query blocks")
    ap.add_argument("--table", default=None, help="write the Markdown table here")
    ap.add_argument("--json", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    grid = tuple(int(x) for x in args.grid.split(","))
    B, H, D = args.batch, args.heads, args.dim
    S = grid[0] * grid[1] * grid[2]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    dev = torch.device("cuda")
    torch.manual_seed(0)
    # Tile-order inputs. Structure does not matter for timing once the mask is fixed; it does
    # for the mask NABLA builds and for accuracy (--inputs video).
    if args.inputs == "video":
        q, k, v = video_inputs(B, H, grid, D, dtype, dev, torch.Generator(device=dev).manual_seed(0),
                               args.structure)
    else:
        q = torch.randn(B, H, S, D, device=dev, dtype=dtype)
        k = torch.randn(B, H, S, D, device=dev, dtype=dtype)
        v = torch.randn(B, H, S, D, device=dev, dtype=dtype)
    sizes = block_sizes(S, grid)
    nb = len(sizes)

    work = tempfile.mkdtemp(prefix="nablacl-cmp-")
    paths = {n: os.path.join(work, n + ".npy") for n in ("q", "k", "v", "o", "mask")}
    for name, t in (("q", q), ("k", k), ("v", v)):
        save_npy(paths[name], t)
    cmd = [args.nablacl, "run", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"],
           "--grid", args.grid, "--out", paths["o"], "--csr-out", os.path.join(work, "csr"),
           "--warmup", "2", "--warmup-ms", str(int(args.warmup_ms)),  # the warm-ups PyTorch gets
           "--repeat", str(args.repeat), "--json"]
    if args.dtype == "bf16":
        cmd += ["--dtype", "bf16"]
    if args.density is not None:
        gen = np.random.default_rng(1)
        mask = gen.random((B, H, nb, nb)) < args.density
        mask[:, :, np.arange(nb), np.arange(nb)] = True
        np.save(paths["mask"], mask.astype(np.uint8))
        cmd += ["--mask-in", paths["mask"], "--algo", "dense"]
        mask_name = f"random {args.density:g}"
    else:
        cmd += ["--algo", args.algo or "nabla-0.7"]
        mask_name = args.algo or "nabla-0.7"
    env = dict(os.environ)
    if args.variant:
        env["NABLACL_VARIANT"] = args.variant
    torch.cuda.synchronize()
    time.sleep(args.idle_ms * 1e-3)
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"nablacl failed ({res.returncode}): {res.stderr.strip()}")
    ours = json.loads(res.stdout)
    print(f"nablacl run took {time.time() - t0:.1f} s wall", file=sys.stderr)

    num = torch.from_numpy(np.load(os.path.join(work, "csr_kv_num_blocks.npy"))).to(dev)
    idx = torch.from_numpy(np.load(os.path.join(work, "csr_kv_indices.npy"))).to(dev)
    block_mask = BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=64)
    sz = torch.tensor(sizes, dtype=torch.float64)
    numc, idxc = num.cpu(), idx.cpu()
    valid = torch.arange(nb)[None, None, None, :] < numc[..., None]
    kept_tokens = (sz[idxc.long()] * valid).sum(-1)  # [B, H, nb] key tokens per query block
    sparse_flops = float((4.0 * D * sz[None, None, :] * kept_tokens).sum())
    dense_flops = 4.0 * B * H * S * S * D
    density = float(numc.sum()) / (B * H * nb * nb)

    def timed(fn):
        return median_ms(fn, warmup_ms=args.warmup_ms, idle_ms=args.idle_ms, repeat=args.repeat)

    rows = []
    if not args.skip_dense:
        sdpa_ms = timed(lambda: F.scaled_dot_product_attention(q, k, v))
        rows.append(("PyTorch SDPA (dense)", sdpa_ms, dense_flops))
    flex_plain = torch.compile(flex_attention)
    opts = {"BLOCK_M": 64, "BLOCK_N": 64}
    out_flex = flex_plain(q, k, v, block_mask=block_mask, kernel_options=opts)
    plain_ms = timed(lambda: flex_plain(q, k, v, block_mask=block_mask, kernel_options=opts))
    rows.append(("FlexAttention (compile)", plain_ms, sparse_flops))
    flex_auto = torch.compile(flex_attention, mode="max-autotune-no-cudagraphs")
    out_auto = flex_auto(q, k, v, block_mask=block_mask)
    auto_ms = timed(lambda: flex_auto(q, k, v, block_mask=block_mask))
    rows.append(("FlexAttention (max-autotune)", auto_ms, sparse_flops))
    rows.append((f"nablacl ({ours.get('variant', 'portable')})", ours["attn_ms"], sparse_flops))

    ref_lines, ref_fig = [], {}
    if args.ref_mask is not None:
        if S % 64 or any(n != 64 for n in sizes):
            sys.exit("--ref-mask needs whole 64-token blocks (grid H and W multiples of 8)")
        ref_ms = timed(lambda: reference_block_mask(q, k, args.ref_mask))
        ref_fig = {"ref_mask_thr": args.ref_mask, "ref_mask_ms": ref_ms}
        ref_lines.append(f"reference nabla-{args.ref_mask:g} mask build in PyTorch (same inputs, "
                         f"same run): {ref_ms:.3f} ms")
        if nabla_thr(args.algo) == args.ref_mask:
            ref = reference_keep(q.float(), k.float(), args.ref_mask).cpu()
            # kv_indices past a row's count are padding: they add 0 wherever they point.
            ours_keep = torch.zeros(B, H, nb, nb, dtype=torch.int32).scatter_add_(
                -1, idxc.long(), valid.to(torch.int32)) > 0
            diff = (ref != ours_keep).sum(-1)
            same = float((diff == 0).float().mean())
            ref_fig.update({"mask_rows_identical": same, "mask_max_row_diff": int(diff.max())})
            ref_lines.append(f"masks: {same * 100:.3f} % of rows identical to the fp32 reference, "
                             f"at most {int(diff.max())} blocks apart in a row")

    out_ours = load_npy(paths["o"], dtype).to(dev)
    err = float((out_ours.float() - out_flex.float()).abs().max())
    err_auto = float((out_auto.float() - out_flex.float()).abs().max())
    f64 = {}
    if args.f64:
        f64 = f64_errors(q, k, v, {"nablacl": out_ours, "FlexAttention (compile)": out_flex,
                                   "FlexAttention (max-autotune)": out_auto},
                         numc, idxc, sizes, args.f64, torch.Generator().manual_seed(2))

    head = (f"B={B} H={H} S={S} D={D} grid {args.grid} {args.dtype}, mask {mask_name}, "
            f"density {density:.4f}; {torch.cuda.get_device_name()} torch {torch.__version__}; "
            f"each timed after {args.idle_ms:g} ms idle and {args.warmup_ms:g} ms of warm-up")
    lines = [head, "", "| implementation | ms | TFLOP/s (computed blocks) | vs FlexAttention max-autotune |",
             "|---|---:|---:|---:|"]
    for name, ms, flops in rows:
        lines.append(f"| {name} | {ms:.2f} | {flops / (ms * 1e-3) * 1e-12:.1f} | {ms / auto_ms:.2f}x |")
    built = "dense (mask given by --mask-in)" if args.density is not None else mask_name
    lines += ["", f"nablacl mask build of {built} (its own, same run): {ours.get('mask_ms', float('nan')):.3f} ms",
              f"max |nablacl - FlexAttention| = {err:.3e} (tolerance 2e-2); "
              f"max |flex autotune - flex compile| = {err_auto:.3e}"] + ref_lines
    if f64:
        lines += ["", f"error against float64 attention with the same mask ({args.f64} heads x 8 query blocks):",
                  "", "| output | max abs | relative RMS |", "|---|---:|---:|"]
        lines += [f"| {n} | {e['max_abs']:.4f} | {e['rel_rms'] * 100:.3f} % |" for n, e in f64.items()]
    text = "\n".join(lines)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": [B, H, S, D], "grid": grid, "density": density, "mask": mask_name,
                       "idle_ms": args.idle_ms, "warmup_ms": args.warmup_ms,
                       "rows": [{"name": n, "ms": m, "tflops": fl / (m * 1e-3) * 1e-12} for n, m, fl in rows],
                       "max_abs_vs_flex": err, "nablacl": ours, "f64": f64, **ref_fig}, f, indent=1)
    if not err <= 2e-2:
        sys.exit(f"outputs disagree: max abs {err:.3e} > 2e-2")


if __name__ == "__main__":
    main()
