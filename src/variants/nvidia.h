/* What the two NVIDIA tensor-core variants share (nvidia_mma.c defines it): the problems they
 * take, their knobs (knobs.c), work sizes, and the wgmma kernel's staging modes. */
#ifndef NABLA_VARIANTS_NVIDIA_H
#define NABLA_VARIANTS_NVIDIA_H

#include "variant.h"

/* The nvidia-mma probe's feature bit (nabla_variant_probe.features): ldmatrix and cp.async
 * passed too, which the mma kernel's staged path, the map kernel and nvidia-wgmma need. */
#define NABLA_MMA_FEATURE_SMEM 1u

/* Whether the mma (or, wgmma set, the wgmma) kernel handles this problem; else writes why. */
int nabla_mma_eligible(const nabla_shape *shape, nabla_dtype dtype, int wgmma, char *why, size_t len);

/* Whether a device is NVIDIA's (the automatic choice's test of both variants). */
int nabla_nvidia_automatic(const nabla_device_caps *caps);

/* Whether a variant id is the wgmma kernel, real or emulated. */
int nabla_variant_is_wgmma(int id);

/* Query blocks per work-group of the mma and wgmma kernels (1 or 2) for an attention variant:
 * the knob MMA_QPW when set, else 2 for mma.sync on dense attention, else 1. */
int nabla_attention_mma_qpw(const nabla_context *ctx, int variant, int dense);

/* The register cap options of a tensor-core kernel (" -DMMA_MAXRREG=n -cl-nv-maxrregcount=n",
 * the knob MMA_MAXRREG), or "" when uncapped or emulated. */
void nabla_mma_maxrreg_options(const nabla_context *ctx, int id, char *cap, size_t len);

/* The lazy-rescale threshold of the tensor-core kernels' online softmax (the knob
 * MMA_LAZY_RESCALE, else `fallback`), in log2 units. */
int nabla_mma_lazy_rescale(const nabla_context *ctx, int fallback);

/* Work-groups of MMA_QPW query blocks x 4 warps (one warpgroup each for wgmma) along
 * dimension 0, (b, h) along 1. */
nabla_status nabla_mma_work_sizes(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                                  size_t global[3], size_t local[3]);

/* Build options of the mma attention kernel (variant 1 or 2). */
void nabla_attention_mma_options(const nabla_context *ctx, int id, const nabla_shape *shape,
                                 nabla_dtype dtype, int dense, char *buf, size_t len);

/* How the wgmma kernel stages K and V blocks in local memory (its WG_BULK), fastest first:
 * tensor copies through tensor maps of K and V (the copy engine swizzles), bulk copies of tile
 * images packed beforehand (twice K's size of device memory, and a pass over K and V), or rows
 * copied by every work-item with cp.async. */
enum { NABLA_WG_ROWS = 0, NABLA_WG_IMAGES = 1, NABLA_WG_TENSOR = 2 };

/* The staging asked for: the knob WG_BULK (NABLA_WG_TENSOR by default). A staging that cannot
 * be had falls back to the next one down. */
int nabla_attention_wgmma_staging(const nabla_context *ctx);

/* Work-groups per query block of the wgmma kernel (its WG_SPLIT, 1 or 2): the knob WG_SPLIT,
 * else 2 where one (b, h)'s K and V exceed NABLA_WG_SPLIT_BYTES and the split's workspace (O's
 * size in fp32) fits one allocation; always 1 with MMA_QPW 2. */
#define NABLA_WG_SPLIT_BYTES ((size_t)40 << 20)
int nabla_attention_wgmma_split(const nabla_context *ctx, int id, const nabla_shape *shape, int dense);

/* Build options of the wgmma attention kernel (variant 4 or 5); MMA_QPW as for the mma kernel;
 * staging: NABLA_WG_ROWS, _IMAGES or _TENSOR. */
void nabla_attention_wgmma_options(const nabla_context *ctx, int id, const nabla_shape *shape, nabla_dtype dtype,
                                   int dense, int staging, char *buf, size_t len);

#endif
