#!/usr/bin/env bash
# The Intel compile gate: compiles every kernel the library builds on an Intel GPU (the bundles and
# options tests/intel_kernels.c writes from the library's own tables) with Intel's offline
# compiler for Xe-HPG (dg2-g10, Arc A770) and Xe-HPC (pvc, Data Center GPU Max), and reports
# per build: SIMD width and registers (IGC's numGRF), spills (ocloc's warning, IGC's spill and
# private-memory bytes per work-item thread, of its final compile) and, for the intel-dpas kernel, the dpas instructions in its disassembly (iga64)
# against the design. Fails when a build fails or the dpas count differs from the design.
#   intel_gate.sh INTEL_KERNELS_TOOL OUTDIR
# Writes OUTDIR/intel-kernels.csv.
set -euo pipefail
tool=$1
out=$2
rm -rf "$out" && mkdir -p "$out/src"
start=$SECONDS
"$tool" "$out/src" > "$out/list.tsv"
csv=$out/intel-kernels.csv
echo "target,kernel,dtype,head_dim,dense,options,built,simd,grf,ocloc_spill_warning,spill_bytes,private_bytes,dpas_static,dpas_per_block_per_subgroup,dpas_design" > "$csv"
fail=0
n=0
while IFS=$'\t' read -r target kernel file d sg options; do
  n=$((n + 1))
  dir=$out/$n
  mkdir -p "$dir/igc"
  built=yes
  if ! IGC_ShaderDumpEnable=1 IGC_DumpToCustomDir="$dir/igc" timeout 300 \
      ocloc compile -file "$file" -device "$target" -options "$options" -out_dir "$dir" > "$dir/log" 2>&1; then
    built=no
  fi
  if [ "$built" = no ] || ! ls "$dir"/*.bin > /dev/null 2>&1; then
    built=no
    fail=1
    echo "FAILED: $target $kernel $options"
    sed 's/^/    /' "$dir/log" | head -20
  fi
  warn=$(grep -o "spilled around [0-9]*" "$dir/log" | grep -o "[0-9]*" | head -1 || true)
  # IGC's final compile: its retry (files named *_1_simd*) where it made one after spilling.
  final=$(ls "$dir"/igc/*_1_simd*_entry_*.asm 2>/dev/null | head -1 || true)
  [ -n "$final" ] || final=$(ls "$dir"/igc/*_simd*_entry_*.asm 2>/dev/null | head -1 || true)
  simd="" grf="" spill="" priv=""
  if [ -n "$final" ]; then
    simd=$(grep -o "_simd[0-9]*_" <<< "$(basename "$final")" | grep -o "[0-9]*")
    grf=$(grep -o "numGRF=[0-9]*" "$final" | grep -o "[0-9]*" | head -1 || true)
    spill=$(grep -o "^//.spill size [0-9]*" "$final" | grep -o "[0-9]*$" | head -1 || true)
    priv=$(grep -o "^//.private memory size [0-9]*" "$final" | grep -o "[0-9]*$" | head -1 || true)
  fi
  dstatic="" per_block="" design=""
  if [ "$built" = yes ] && [ "$kernel" = attention_dpas ]; then
    platform=xehpg
    [ "$target" = pvc ] && platform=xehpc
    ocloc disasm -file "$dir"/*.bin -device "$target" -dump "$dir/dis" > /dev/null 2>&1 || true
    iga64 -d -p=$platform "$dir/dis/attention_KernelHeap.dat" > "$dir/attention.asm" 2> /dev/null || true
    dstatic=$(grep -c "dpas\." "$dir/attention.asm" || true)
    # The design per 64 x 64 block pair and sub-group (cl/attention_dpas.cl): 64/SG x D/16 for
    # Q·Kᵀ, 4 x D/SG for P·V. The key loop runs 64/KCH chunks (KCH: 16 on SG 8, 32 on 16), so the
    # binary holds one chunk's share unless the compiler unrolled the chunks.
    design=$(( (64 / sg) * (d / 16) + 4 * (d / sg) ))
    kch=$(( sg == 8 ? 16 : 32 ))
    if [ "$dstatic" -eq "$design" ]; then per_block=$dstatic
    elif [ "$dstatic" -eq $(( design * kch / 64 )) ]; then per_block=$(( dstatic * 64 / kch ))
    else
      per_block="?"
      fail=1
      echo "FAILED: $target $kernel D=$d: $dstatic dpas in the binary, the design has $design per block ($(( design * kch / 64 )) per chunk of $kch keys)"
    fi
  fi
  dtype=$(grep -o "NABLA_DTYPE=[0-9]" <<< "$options" | cut -d= -f2)
  dtype=$(case $dtype in 0) echo f32 ;; 1) echo f16 ;; *) echo bf16 ;; esac)
  dense=$(grep -o "NABLA_DENSE=[0-9]" <<< "$options" | cut -d= -f2 || true)
  echo "$target,$kernel,$dtype,$d,${dense:-},\"$options\",$built,$simd,$grf,${warn:-0},${spill:-0},${priv:-0},$dstatic,$per_block,$design" >> "$csv"
done < "$out/list.tsv"
# The table without the options column (the CSV has them).
sed 's/,"[^"]*"//; s/^\(target,kernel,dtype,head_dim,dense\),options/\1/' "$csv" | column -s, -t
echo "intel gate: $n builds, $((SECONDS - start)) s, report $csv"
exit $fail
