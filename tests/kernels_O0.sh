#!/usr/bin/env bash
# Builds every kernel module of the library without optimization, two ways:
#   1. kernel_modules: the library's own builds on the OpenCL device (PoCL in CI) with
#      -cl-opt-disable appended, each run and checked against the float64 reference;
#   2. clang at -O0 on each module it wrote (exact source + options), to LLVM IR for spir64,
#      failing on any call to a function that is neither defined in the module nor an OpenCL
#      builtin: what an unoptimized driver (AMD's at -O0, Intel's SPIR-V path) cannot link.
# Usage: tests/kernels_O0.sh KERNEL_MODULES_BINARY WORK_DIR [CLANG]
# WORK_DIR/modules keeps the modules (NN-<stage>.cl + NN-<stage>.opts) for other compilers.
set -euo pipefail
bin=$1 work=$2 clang=${3:-$(command -v clang-15 || command -v clang-14 || command -v clang)}
rm -rf "$work/modules"
mkdir -p "$work"
# clang's header leaves out cl_intel_subgroups' block reads for spir64; the intel-dpas modules
# (dumped where the device is Intel's) call them, so they are declared here as the extension does.
shim=$work/intel_subgroups.h
printf '%s\n' \
  'ushort __attribute__((overloadable)) intel_sub_group_block_read_us(const __global ushort *p);' \
  'uint __attribute__((overloadable)) intel_sub_group_block_read(const __global uint *p);' >"$shim"
"$bin" --dump "$work/modules"
if [ ! -x "$clang" ]; then # the build tree runs on a machine without the compiler it found
  echo "kernels_O0: the modules built and ran at -cl-opt-disable; $clang is not on this machine: skipped"
  exit 77
fi
bad=0 n=0
for src in "$work"/modules/*.cl; do
  ir=${src%.cl}.ll
  read -r opts <"${src%.cl}.opts" || opts=""
  # shellcheck disable=SC2086 # the options are a list of words
  if ! "$clang" -x cl -cl-std=CL1.2 -O0 -target spir64 -Xclang -finclude-default-header -include "$shim" $opts \
       -emit-llvm -S -o "$ir" "$src" 2>"$ir.log"; then
    echo "kernels_O0: $src does not compile at -O0:"; cat "$ir.log"; bad=1; continue
  fi
  # Builtins are mangled (_Z...) and intrinsics are llvm.*; anything else declared is a helper
  # that has no definition at -O0 (a C99 `inline` without `static`).
  missing=$(sed -n 's/^declare .* @\([A-Za-z_][A-Za-z0-9_.]*\)(.*/\1/p' "$ir" | grep -v '^_Z\|^llvm\.' || true)
  if [ -n "$missing" ]; then
    echo "kernels_O0: $src: no definition at -O0 for:" $missing; bad=1
  fi
  n=$((n + 1))
done
echo "kernels_O0: $n modules compiled by $clang at -O0"
exit $bad
