#!/usr/bin/env python3
"""AMD compile gate: every program nablacl builds on an AMD GPU, compiled by clang's AMDGPU back end.

tests/kernel_dump (built with the library) records, for a simulated AMD device of each target,
the stage name, build options and complete source of every program the library builds, through
the library's own calls (so the options are its own: built-in defaults, the selection's split per
row length, the variant choice). This script compiles each with clang-15 and Debian's ROCm device
libraries, reads the kernel resource usage remarks and the disassembly, and writes one row per
kernel x options x target: SGPRs, VGPRs, AGPRs, spills, scratch, LDS, occupancy (waves per SIMD,
the compiler's figure: registers and LDS both limit it) and the count of matrix instructions.

It fails when a default configuration (what the library builds untuned) does not build, spills,
uses scratch or falls below 2 waves per SIMD, or when the portable attention falls below 4 waves
per SIMD on CDNA (gfx90a, gfx940, gfx942).

Debian 12's rocm-device-libs (5.2.3) lack the one target-specific bitcode file of gfx11 (and of
gfx942), oclc_isa_version_<n>.bc, which holds a single constant (__oclc_ISA_version); the script
writes that file next to links to the other libraries, so those targets compile with the same
libraries as the others.

  amd_gate.py --dump build/tests/kernel_dump --work build/amd-gate [--targets gfx90a,...]
              [--candidates] [--opt O3|O0] [--jobs 2] [--llvm 15|19]
Writes WORK/report.csv, WORK/report.json and WORK/report.md (the default configurations as one
Markdown section; reports/README.md says how the committed report is made of them).
"""
import argparse
import concurrent.futures
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time

DEVICE_LIBS = "/usr/lib/x86_64-linux-gnu/amdgcn/bitcode"
TARGETS = ["gfx90a", "gfx940", "gfx1030", "gfx1100"]
CDNA = {"gfx90a", "gfx940", "gfx942"}
MATRIX = re.compile(r"^\s*(v_mfma\w*|v_smfmac\w*|v_wmma\w*)")
FIELDS = {
    "SGPRs": "sgpr", "VGPRs": "vgpr", "AGPRs": "agpr", "ScratchSize [bytes/lane]": "scratch",
    "Occupancy [waves/SIMD]": "occupancy", "SGPRs Spill": "sgpr_spill", "VGPRs Spill": "vgpr_spill",
    "LDS Size [bytes/block]": "lds",
}
COLUMNS = ["target", "stage", "kernel", "options", "default", "what", "sgpr", "vgpr", "agpr",
           "sgpr_spill", "vgpr_spill", "scratch", "lds", "occupancy", "matrix", "matrix_ops", "error"]


LLVM = "15"  # the toolchain's version suffix (--llvm)


def tool(name):
    name = name.replace("-15", "-" + LLVM)
    path = shutil.which(name)
    if not path:
        sys.exit(f"amd_gate: {name} not found (apt-get install clang-15 lld-15 llvm-15 rocm-device-libs)")
    return path


def device_libs(work, target):
    """The device-library folder for a target: Debian's own, or for gfx11 links to it plus the
    generated ISA-version file."""
    if os.path.exists(f"{DEVICE_LIBS}/oclc_isa_version_{target[3:]}.bc"):
        return DEVICE_LIBS
    libs = os.path.join(work, f"bitcode-{target}")
    os.makedirs(libs, exist_ok=True)
    for name in os.listdir(DEVICE_LIBS):
        link = os.path.join(libs, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(DEVICE_LIBS, name), link)
    m = re.fullmatch(r"gfx(\d+)([0-9a-f])", target)
    version = int(m.group(1)) * 100 + int(m.group(2), 16) * 1 if m else 0
    base = "940" if target.startswith("gfx94") else "1030"
    text = subprocess.run([tool("llvm-dis-15"), f"{DEVICE_LIBS}/oclc_isa_version_{base}.bc", "-o", "-"],
                          check=True, capture_output=True, text=True).stdout
    text = re.sub(r"constant i32 \d+", f"constant i32 {version}", text)
    subprocess.run([tool("llvm-as-15"), "-o", os.path.join(libs, f"oclc_isa_version_{target[3:]}.bc")],
                   input=text, check=True, text=True)
    return libs


def parse_remarks(text):
    kernels, cur = {}, None
    for line in text.splitlines():
        m = re.search(r"remark: .*?Function Name: (\S+)", line)
        if m:
            cur = kernels.setdefault(m.group(1), {})
            continue
        m = re.search(r"remark: .*?\s{4}(.+?): (\d+) \[-Rpass-analysis", line)
        if m and cur is not None and m.group(1) in FIELDS:
            cur[FIELDS[m.group(1)]] = int(m.group(2))
    return kernels


def matrix_counts(objdump):
    counts, cur = {}, None
    for line in objdump.splitlines():
        m = re.match(r"^[0-9a-f]+ <(\S+)>:", line)
        if m:
            cur = counts.setdefault(m.group(1), {})
            continue
        m = MATRIX.match(line)
        if m and cur is not None:
            cur[m.group(1)] = cur.get(m.group(1), 0) + 1
    return counts


def compile_one(args, work, target, libs, entry):
    src = os.path.join(work, target, entry["id"] + ".cl")
    # Linked into a code object (ld.lld-15), as the runtime does: a helper left undefined (C99
    # `inline` without `static` at -O0) fails here, not only on the device.
    obj = src[:-3] + f".{args.opt}.co"
    cmd = [tool("clang-15"), "-x", "cl", "-cl-std=CL1.2", "-target", "amdgcn-amd-amdhsa", f"-mcpu={target}",
           "-Xclang", "-finclude-default-header", f"--rocm-device-lib-path={libs}", f"-{args.opt}",
           "-Rpass-analysis=kernel-resource-usage"] + entry["options"].split() + [src, "-o", obj]
    res = subprocess.run(cmd, capture_output=True, text=True)
    base = {"target": target, "stage": entry["stage"], "options": entry["options"],
            "default": entry["default"], "what": entry["what"]}
    if res.returncode != 0:
        err = " | ".join(l for l in res.stderr.splitlines() if "error" in l)[:400] or "clang failed"
        return [dict(base, kernel="", error=err)]
    dis = subprocess.run([tool("llvm-objdump-15"), "-d", "--no-show-raw-insn", obj], capture_output=True,
                         text=True, check=True).stdout
    mats = matrix_counts(dis)
    # Kernels are the symbols with a kernel descriptor (<name>.kd); at -O0 the remarks also cover
    # every function left uninlined.
    syms = subprocess.run([tool("llvm-objdump-15"), "-t", obj], capture_output=True, text=True, check=True).stdout
    kernels = {m.group(1) for m in re.finditer(r"\s(\S+)\.kd$", syms, re.M)}
    rows = []
    for kernel, res_usage in parse_remarks(res.stderr).items():
        if kernel not in kernels:
            continue
        ops = mats.get(kernel, {})
        rows.append(dict(base, kernel=kernel, **res_usage, matrix=sum(ops.values()),
                         matrix_ops=" ".join(f"{k}:{v}" for k, v in sorted(ops.items())), error=""))
    return rows


def check(row, opt):
    """Why a default configuration fails the gate, or None. Every program must build (at -O0 too:
    a helper without an out-of-line definition fails the link there). The resources are gated
    at -O3 only (unoptimized code spills by design); on gfx11 clang-15 caps every kernel at 128
    VGPRs, so there its check is that everything fits in 128."""
    if not row["default"]:
        return None
    if row["error"]:
        return f"does not compile: {row['error']}"
    if opt == "O0":
        return None
    if row.get("scratch", 0) or row.get("vgpr_spill", 0) or row.get("sgpr_spill", 0):
        return f"spills (VGPR {row.get('vgpr_spill')}, SGPR {row.get('sgpr_spill')}, scratch {row.get('scratch')} B/lane)"
    if row.get("occupancy", 0) < 2:
        return f"occupancy {row.get('occupancy')} waves/SIMD < 2"
    # 512 VGPRs + AGPRs per lane and SIMD: at most 128 per work-item (docs/variants.md, AMD GPUs).
    if row["stage"] == "attention" and row["target"] in CDNA and row.get("occupancy", 0) < 4:
        return f"portable attention at {row.get('occupancy')} waves/SIMD < 4"
    return None


def short_options(options):
    """The options that vary between a stage's builds, compactly."""
    out = []
    for o in options.split():
        o = o.replace("-DNABLA_", "").replace("-D", "")
        if o in ("DENSE=0",) or o.startswith("VARIANT="):
            continue
        out.append(o.replace("DTYPE=0", "f32").replace("DTYPE=1", "f16").replace("DTYPE=2", "bf16"))
    return " ".join(out)


def write_markdown(path, rows, opt):
    """The default configurations as a Markdown table, one row per target x kernel x options."""
    lines = [f"| target | kernel | options | VGPR | AGPR | SGPR | spill V/S | scratch | LDS | waves/SIMD | matrix ops |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["default"]:
            continue
        if r["error"]:
            lines.append(f"| {r['target']} | {r['stage']} | {short_options(r['options'])} | "
                         f"does not build: {r['error'][:80]} ||||||||")
            continue
        name = r["kernel"] if r["kernel"] == r["stage"] else f"{r['stage']}/{r['kernel']}"
        lines.append(f"| {r['target']} | {name} | {short_options(r['options'])} | {r.get('vgpr', '')} | "
                     f"{r.get('agpr', '-') if r.get('agpr') is not None else '-'} | {r.get('sgpr', '')} | "
                     f"{r.get('vgpr_spill', 0)}/{r.get('sgpr_spill', 0)} | {r.get('scratch', 0)} | {r.get('lds', '')} | "
                     f"{r.get('occupancy', '')} | {r['matrix_ops'] or '-'} |")
    gfx11 = (" clang-15 caps every gfx11 kernel at 128 VGPRs, so its gfx1100 figures describe that compiler."
             if LLVM == "15" else "")
    with open(path, "w") as f:
        # One section per compiler: reports/amd-compile-report.md is a title and the sections of
        # both runs of .ci/amd (reports/README.md).
        f.write(f"## clang-{LLVM}\n\n")
        f.write(f"Generated by `tools/amd_gate.py` (`.ci/amd`): every program nablacl builds by default on an AMD "
                f"GPU of each target, compiled and linked by clang-{LLVM} at -{opt} with Debian 12's ROCm device "
                "libraries. VGPR/AGPR/SGPR per lane, spills (VGPR/SGPR), scratch in bytes per lane, LDS in bytes "
                "per work-group, waves per SIMD as the compiler computes them (registers and LDS), matrix "
                f"instructions in the disassembly.{gfx11} Gated on every target: no spill or scratch, >= 2 waves "
                "per SIMD, >= 4 for the portable attention on CDNA (docs/variants.md, AMD GPUs).\n\n")
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dump", required=True, help="the kernel_dump executable")
    ap.add_argument("--work", required=True)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--candidates", action="store_true", help="also every tuner candidate of the portable attention")
    ap.add_argument("--opt", default="O3", choices=["O3", "O0"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--llvm", default="15", help="LLVM version of clang, ld.lld, llvm-objdump (Debian 12 has 15, 16, 19; "
                    "19 knows gfx942 and addresses gfx11's 256 VGPRs)")
    args = ap.parse_args()
    global LLVM
    LLVM = args.llvm
    start = time.time()
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for target in args.targets.split(","):
        out = os.path.join(args.work, target)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        cmd = [args.dump, "--target", target, "--out", out] + (["--candidates"] if args.candidates else [])
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"amd_gate: {' '.join(cmd)} failed")
        with open(os.path.join(out, "manifest.jsonl")) as f:
            entries = [json.loads(line) for line in f]
        # A recording that misses a stage would pass unseen: the pipeline's stages must all be there.
        want = {"attention", "select", "map", "pool", "csr"} | ({"attention_amd", "probe_amd"} if target != "gfx1030" else set())
        missing = want - {e["stage"] for e in entries}
        if missing:
            sys.exit(f"amd_gate: {target}: kernel_dump recorded no {', '.join(sorted(missing))} program")
        libs = device_libs(args.work, target)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for r in pool.map(lambda e: compile_one(args, args.work, target, libs, e), entries):
                rows.extend(r)
    failures = []
    for row in rows:
        why = check(row, args.opt)
        row["gate"] = why or ""
        if why:
            failures.append(f"{row['target']} {row['stage']}/{row['kernel']} [{row['options']}]: {why}")
    with open(os.path.join(args.work, "report.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS + ["gate"], restval="")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.work, "report.json"), "w") as f:
        json.dump({"compiler": f"clang-{LLVM}", "opt": args.opt, "rows": rows}, f, indent=1)
    write_markdown(os.path.join(args.work, "report.md"), rows, args.opt)
    print(f"amd_gate: {len(rows)} kernel builds on {args.targets} at -{args.opt}, "
          f"{sum(1 for r in rows if r['default'])} default; report in {args.work}/report.csv "
          f"({time.time() - start:.0f} s)")
    for line in failures:
        print("FAIL", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
