/*
 * Kernel variants: several implementations of one stage, chosen per device and problem.
 *
 * Variants of "attention" (ids are stable; they are also the values of the tunable VARIANT,
 * where -1 means automatic):
 *   0 portable             cl/attention.cl, every device, every dtype; always the fallback
 *   1 nvidia-mma           cl/attention_mma.cl, tensor cores through inline PTX mma.sync;
 *                          NVIDIA devices whose probe passes, fp16/bf16, head_dim % 16 == 0, <= 128
 *   2 nvidia-mma-emulated  the same kernel with every PTX instruction emulated in local memory;
 *                          any device, slow, only when forced (tests the kernel's logic on CPUs)
 *   3 cpu-rows             cl/attention_rows.cl, one work-item per query row, no barriers;
 *                          plain OpenCL C, every device and dtype; automatic on CPU devices
 *   4 nvidia-wgmma         cl/attention_wgmma.cl, Hopper's warpgroup MMA (wgmma, sm_90a, built
 *                          through the PTX rewrite of ptxpatch.h); NVIDIA sm_90 devices whose
 *                          probe passes, fp16/bf16, head_dim 64 or 128
 *   5 nvidia-wgmma-emulated the same kernel with wgmma emulated; any device, only when forced
 *   6 amd-mfma             cl/attention_amd.cl on CDNA's matrix cores (MFMA 16x16x16): AMD
 *                          gfx90a and gfx94x devices whose probe passes, fp16/bf16, head_dim %
 *                          16 == 0, <= 128
 *   7 amd-mfma-emulated    the same kernel with MFMA emulated (64-wide waves); only when forced
 *   8 amd-wmma             the same kernel on RDNA3's WMMA (gfx11, 32-wide waves), likewise
 *   9 amd-wmma-emulated    the same kernel with WMMA emulated; only when forced
 *
 * Probes: a variant that needs a device feature compiles and runs a tiny kernel once per device
 * (cl/probe_mma.cl) and compares its output with values computed here. The verdict is kept in
 * the context and in the disk cache (namespace "probes", keyed by the device key), so a device
 * is probed once per driver. The vendor is checked before anything is compiled, so no foreign
 * compiler ever sees PTX. Any failure (build, launch, wrong result) means "unsupported".
 *
 * Choice, first match: nabla_variant_force on the context; NABLACL_VARIANT in the environment;
 * the tuned VARIANT parameter; automatic = cpu-rows on CPU devices, nvidia-wgmma, then
 * nvidia-mma, then amd-mfma or amd-wmma, where supported and eligible, else portable. A requested variant that is unsupported, ineligible for the problem or broken
 * falls back to portable; the context's variant note says why.
 */
#ifndef NABLA_VARIANT_H
#define NABLA_VARIANT_H

#include "internal.h"
#include "tune.h"

enum {
  NABLA_VARIANT_AUTO = -1,
  NABLA_VARIANT_PORTABLE = 0,
  NABLA_VARIANT_NVIDIA_MMA = 1,
  NABLA_VARIANT_MMA_EMULATED = 2,
  NABLA_VARIANT_CPU_ROWS = 3,
  NABLA_VARIANT_NVIDIA_WGMMA = 4,
  NABLA_VARIANT_WGMMA_EMULATED = 5,
  NABLA_VARIANT_AMD_MFMA = 6,
  NABLA_VARIANT_AMD_MFMA_EMULATED = 7,
  NABLA_VARIANT_AMD_WMMA = 8,
  NABLA_VARIANT_AMD_WMMA_EMULATED = 9,
  NABLA_VARIANT_COUNT = 10
};

/* Name of a variant id ("portable", ...); "auto" for NABLA_VARIANT_AUTO, NULL if unknown. */
const char *nabla_variant_name(int id);
/* Id of a name (case-sensitive; "auto" and "" are NABLA_VARIANT_AUTO); -2 if unknown. */
int nabla_variant_id(const char *name);

/* Whether the device can run a variant at all (runs its probe once). On 0, `why` (may be NULL)
 * receives the reason. */
int nabla_variant_probe_run(nabla_context *ctx, int id, char *why, size_t why_len);

/* The pipeline stages a variant has a kernel for. A kernel of one stage that fails to build
 * leaves the variant to the other: the tensor-core map and attention are separate programs. */
enum { NABLA_STAGE_ATTENTION = 1, NABLA_STAGE_MAP = 2 };

/* Whether `stage` may use the variant on this context: its probe passed and that stage's kernel
 * has not failed here (nabla_variant_mark_broken). On 0, `why` (may be NULL) says why. */
int nabla_variant_usable(nabla_context *ctx, int id, int stage, char *why, size_t why_len);

/* The attention variant to launch for a problem; never fails. Writes the reason of a fallback
 * (or "") to note. */
int nabla_attention_variant_choose(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                   const nabla_params *params, char *note, size_t note_len);

/* The implementation of the reduced-map GEMM of the mask build: NABLA_VARIANT_NVIDIA_MMA (cl/map_mma.cl
 * on tensor cores, where the nvidia-mma probe passed, ldmatrix and cp.async included),
 * NABLA_VARIANT_MMA_EMULATED (the same kernel emulated; only when that variant is asked for), else
 * NABLA_VARIANT_PORTABLE (cl/map.cl). It follows a forced or NABLACL_VARIANT choice (any other
 * variant asked for means portable), not the tuned attention VARIANT. Needs head_dim a multiple
 * of 16 up to 128 (the A fragments of all of d stay in registers). */
int nabla_map_variant_choose(nabla_context *ctx, const nabla_shape *shape);

/* Marks a variant unusable for `stage` (one NABLA_STAGE_* value) on this context (its kernel did
 * not build), with the reason, which nabla_variant_usable gives for that stage alone. */
void nabla_variant_mark_broken(nabla_context *ctx, int id, int stage, const char *why);

/* Whether a variant id is the AMD matrix-core kernel (MFMA or WMMA, real or emulated). */
int nabla_variant_is_amd(int id);

/* Build options of the AMD matrix-core attention kernel (variant 6 to 9). */
void nabla_attention_amd_options(int id, const nabla_shape *shape, nabla_dtype dtype, int dense, char *buf,
                                 size_t len);

/* Whether a variant id is the wgmma kernel, real or emulated. */
int nabla_variant_is_wgmma(int id);

/* How the wgmma kernel stages K and V blocks in local memory (its WG_BULK), fastest first:
 * tensor copies through tensor maps of K and V (the copy engine swizzles), bulk copies of tile
 * images packed beforehand (twice K's size of device memory, and a pass over K and V), or rows
 * copied by every work-item with cp.async. */
enum { NABLA_WG_ROWS = 0, NABLA_WG_IMAGES = 1, NABLA_WG_TENSOR = 2 };

/* The staging asked for: NABLACL_WG_BULK (0, 1 or 2) when set to one of those, else
 * NABLA_WG_TENSOR. A staging that cannot be had falls back to the next one down. */
int nabla_attention_wgmma_staging(void);

/* Build options of the wgmma attention kernel (variant 4 or 5); MMA_QPW as for the mma kernel;
 * staging: NABLA_WG_ROWS, _IMAGES or _TENSOR. */
void nabla_attention_wgmma_options(int id, const nabla_shape *shape, nabla_dtype dtype, int dense,
                                   int staging, const nabla_params *params, char *buf, size_t len);

/* Build options of the mma attention kernel (variant 1 or 2), after nabla_dtype_define. */
void nabla_attention_mma_options(nabla_context *ctx, int id, const nabla_shape *shape,
                                 nabla_dtype dtype, int dense, const nabla_params *params,
                                 char *buf, size_t len);
/* Query blocks per work-group of the mma and wgmma kernels (1 or 2) for an attention variant:
 * the developer override NABLACL_MMA_QPW, else the MMA_QPW parameter when set, else a default
 * by variant and mask kind. */
int nabla_attention_mma_qpw(int variant, const nabla_shape *shape, int dense, const nabla_params *params);

#endif
