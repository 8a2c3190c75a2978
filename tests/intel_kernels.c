/*
 * intel_kernels OUTDIR: the kernels the library builds on an Intel GPU, written as the bundles it
 * compiles (cl/common.cl, the variant's preludes, the stage) with the options it passes, for the
 * Intel compile gate (tests/intel_gate.sh), which compiles them offline with ocloc.
 *
 * Stages no variant owns (and portable's and cpu-rows') are built on every device: each is
 * written at every storage type.
 * intel-dpas is written as nabla_intel_dpas_options gives it for each target (sub-group 8 for
 * dg2, 16 with the 256-register mode for pvc), f16/bf16, head_dim 64 and 128, sparse and dense,
 * and with its probe. Kernels of other vendors' variants are left out (their probes check the
 * vendor before anything is compiled). Prints one line per bundle:
 *   target<TAB>kernel<TAB>file<TAB>head_dim<TAB>sub_group<TAB>options
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels.h"
#include "variants/intel_dpas.h"
#include "variants/variant.h"

static const nabla_kernel_source *source_named(const char *name) {
  for (size_t i = 0; i < nabla_kernel_source_count; i++)
    if (strcmp(nabla_kernel_sources[i].name, name) == 0) return &nabla_kernel_sources[i];
  return NULL;
}

/* Writes common.cl, the preludes and the stage to path; 0 on success. */
static int write_bundle(const char *path, const char *stage) {
  const nabla_kernel_source_desc *desc = nabla_kernel_source_find(stage);
  const char *parts[6] = {"common"};
  int n = 1;
  for (int i = 0; desc && i < 3 && desc->prelude[i]; i++) parts[n++] = desc->prelude[i];
  parts[n++] = stage;
  FILE *f = fopen(path, "w");
  if (!f) return 1;
  int bad = 0;
  for (int i = 0; i < n; i++) {
    const nabla_kernel_source *src = source_named(parts[i]);
    if (!src || fprintf(f, "%s\n", src->text) < 0) bad = 1;
  }
  return fclose(f) != 0 || bad;
}

/* Whether variant id names `stage` as its attention or map program, a source or a prelude. */
static int variant_uses(int id, const char *stage, int prelude_only) {
  const nabla_variant_ops *ops = nabla_variant_ops_of(id);
  if (!prelude_only && ((ops->program && strcmp(ops->program, stage) == 0) ||
                        (ops->map.program && strcmp(ops->map.program, stage) == 0)))
    return 1;
  for (const nabla_kernel_source_desc *d = ops->sources; d && d->name; d++) {
    if (!prelude_only && strcmp(d->name, stage) == 0) return 1;
    for (int p = 0; p < 3 && d->prelude[p]; p++)
      if (strcmp(d->prelude[p], stage) == 0) return 1;
  }
  return 0;
}

/* Whether the stage is built on an Intel GPU: not a prelude, and either intel-dpas's or no other
 * vendor's (the variants an Intel GPU can run are portable, cpu-rows and intel-dpas; a kernel
 * with inline assembly, such as the NVIDIA probes, is for its vendor alone). */
static int intel_stage(const nabla_kernel_source *src) {
  if (strcmp(src->name, "common") == 0) return 0; /* every bundle's first part */
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++)
    if (variant_uses(id, src->name, 1)) return 0;
  if (variant_uses(NABLA_VARIANT_INTEL_DPAS, src->name, 0)) return 1;
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++)
    if (id != NABLA_VARIANT_PORTABLE && id != NABLA_VARIANT_CPU_ROWS && id != NABLA_VARIANT_INTEL_DPAS_EMULATED &&
        variant_uses(id, src->name, 0))
      return 0;
  return !strstr(src->text, "asm volatile") && !strstr(src->text, "__builtin_amdgcn");
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    int sg;
  } targets[] = {{"dg2-g10", 8}, {"pvc", 16}};
  if (argc != 2) {
    fprintf(stderr, "usage: intel_kernels OUTDIR\n");
    return 2;
  }
  char path[4096], options[512];
  int count = 0;
  for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
    const nabla_intel_dpas_config cfg = {targets[t].sg, targets[t].sg == 8 ? 4 : 8, 0, targets[t].sg == 16};
    for (size_t i = 0; i < nabla_kernel_source_count; i++) {
      const nabla_kernel_source *src = &nabla_kernel_sources[i];
      if (!intel_stage(src)) continue;
      const int dpas = strcmp(src->name, "attention_dpas") == 0, probe = strcmp(src->name, "probe_dpas") == 0;
      snprintf(path, sizeof path, "%s/%s.cl", argv[1], src->name);
      if (write_bundle(path, src->name)) {
        fprintf(stderr, "intel_kernels: cannot write %s\n", path);
        return 1;
      }
      for (int dt = NABLA_F32; dt <= NABLA_BF16; dt++) {
        if ((dpas || probe) && dt == NABLA_F32) continue;
        for (int d = 64; d <= 128; d += 64)
          for (int dense = 0; dense <= 1; dense++) {
            const nabla_shape shape = {.batch = 1, .heads = 1, .seq = 64, .head_dim = d};
            if (!dpas && (d != 64 || dense)) continue; /* other stages: their dtype alone */
            if (dpas && dense && (d != 128 || dt != NABLA_BF16)) continue;
            if (dpas || probe) nabla_intel_dpas_options(&cfg, probe ? NULL : &shape, (nabla_dtype)dt, dense, options,
                                                        sizeof options);
            else snprintf(options, sizeof options, "%s", nabla_dtype_define((nabla_dtype)dt));
            printf("%s\t%s\t%s\t%d\t%d\t%s\n", targets[t].name, src->name, path, d, targets[t].sg, options);
            count++;
          }
      }
    }
  }
  return count ? 0 : 1;
}
