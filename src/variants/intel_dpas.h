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

/* Build options of cl/attention_dpas.cl (shape NULL: of cl/probe_dpas.cl, which needs no shape). */
void nabla_intel_dpas_options(const nabla_intel_dpas_config *cfg, const nabla_shape *shape, nabla_dtype dtype,
                              int dense, char *buf, size_t len);

#endif
