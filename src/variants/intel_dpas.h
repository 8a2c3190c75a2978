/* The build configuration of the intel-dpas kernels (intel_dpas.c), shared with the Intel compile
 * gate (tests/intel_kernels.c), which compiles them offline with the library's own options. */
#ifndef NABLA_VARIANTS_INTEL_DPAS_H
#define NABLA_VARIANTS_INTEL_DPAS_H

#include "internal.h"

typedef struct {
  int sg;        /* sub-group size, DPAS_SG: 8 (dg2) or 16 (pvc, Xe2) */
  int m;         /* rows of a matrix tile, DPAS_M: 4 at sub-group 8, else 8 (cl/dpas.cl) */
  int mode;      /* DPAS_MODE: 0 hardware, 1 emulated on sub-groups, 2 emulated in local memory */
  int large_grf; /* the 256-register mode (-cl-intel-256-GRF-per-thread) */
} nabla_intel_dpas_config;

/* The build for variant id (NABLA_VARIANT_INTEL_DPAS or _EMULATED) on the context's device: the
 * hardware at the device's sub-group size (8 when it runs 8: dg2, with 4-row tiles; else 16,
 * 8-row tiles) and the 256-register mode at 16 (pvc and Xe2 have it; D = 128 spills without it,
 * docs/variants.md); or the emulation at sub-group 16 where the knob INTEL_DPAS_SG16 is 1, else
 * 8, on real sub-groups where the device runs that size and has block reads, else in local
 * memory. */
nabla_intel_dpas_config nabla_intel_dpas_config_for(nabla_context *ctx, int id);

/* Build options of cl/attention_dpas.cl (shape NULL: of cl/probe_dpas.cl, which needs no shape). */
void nabla_intel_dpas_options(const nabla_intel_dpas_config *cfg, const nabla_shape *shape, nabla_dtype dtype,
                              int dense, char *buf, size_t len);

#endif
