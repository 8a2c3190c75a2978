/* nvidia-mma (cl/attention_mma.cl, and the mask build's cl/map_mma.cl): NVIDIA tensor cores
 * through inline PTX mma.sync, where the probe (cl/probe_mma.cl) passes; fp16/bf16, head_dim a
 * multiple of 16 up to 128. Its emulated twin nvidia-mma-emulated runs the same kernels with
 * every PTX instruction emulated in local memory, on any device, only when forced: it tests the
 * kernels' logic on CPUs. Also what nvidia_wgmma.c shares (nvidia.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvidia.h"
#include "probe.h"

/* ---- the probes ---------------------------------------------------------------------------- */

/* Small integers: every product and sum is exact in fp32, and every position differs. */
static float mat_a(int pass, int r, int c) { return (float)((r * 3 + c * 5 + pass) % 7 - 3); }
static float mat_b(int pass, int r, int c) { return (float)((r * 2 + c * 7 + 2 * pass) % 5 - 2); }

static nabla_probe_verdict probe_mma_core(nabla_context *ctx, char *why, size_t why_len) {
  uint16_t a16[256], b16[128], abf[256], bbf[128];
  float d16[128], dbf[128], shfl[32];
  uint32_t cvt[64];
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++) {
      a16[r * 16 + c] = nabla_f32_to_f16(mat_a(0, r, c));
      abf[r * 16 + c] = nabla_f32_to_bf16(mat_a(1, r, c));
    }
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 8; c++) {
      b16[r * 8 + c] = nabla_f32_to_f16(mat_b(0, r, c));
      bbf[r * 8 + c] = nabla_f32_to_bf16(mat_b(1, r, c));
    }
  size_t bytes[8] = {sizeof a16, sizeof b16, sizeof abf, sizeof bbf, sizeof d16, sizeof dbf, sizeof shfl, sizeof cvt};
  void *host[8] = {a16, b16, abf, bbf, d16, dbf, shfl, cvt};
  int readback[8] = {0, 0, 0, 0, 1, 1, 1, 1};
  nabla_probe_verdict v = nabla_probe_launch(ctx, "probe_mma", "-DPROBE_SMEM=0", "probe_mma", 32, 8, bytes, host,
                                 readback, why, why_len);
  if (v != NABLA_PROBE_PASS) return v;
  for (int pass = 0; pass < 2; pass++) {
    const float *d = pass ? dbf : d16;
    for (int r = 0; r < 16; r++)
      for (int c = 0; c < 8; c++) {
        float want = 0.5f;
        for (int kk = 0; kk < 16; kk++) want += mat_a(pass, r, kk) * mat_b(pass, kk, c);
        if (d[r * 8 + c] != want) {
          snprintf(why, why_len, "mma.sync %s gave D[%d][%d] = %g, expected %g",
                   pass ? "bf16" : "f16", r, c, (double)d[r * 8 + c], (double)want);
          return NABLA_PROBE_FAIL;
        }
      }
  }
  for (int l = 0; l < 32; l++) {
    float want = (float)(l ^ 1) + 100.0f * (float)(l ^ 2);
    if (shfl[l] != want) {
      snprintf(why, why_len, "shfl.sync.bfly gave %g on lane %d, expected %g", (double)shfl[l], l, (double)want);
      return NABLA_PROBE_FAIL;
    }
    float lo = (float)l + 1.0f / 3.0f, hi = -(float)l * 0.14285714f;
    uint32_t w16 = (uint32_t)nabla_f32_to_f16(lo) | ((uint32_t)nabla_f32_to_f16(hi) << 16);
    uint32_t wbf = (uint32_t)nabla_f32_to_bf16(lo) | ((uint32_t)nabla_f32_to_bf16(hi) << 16);
    if (cvt[2 * l] != w16 || cvt[2 * l + 1] != wbf) {
      snprintf(why, why_len, "cvt.rn.f16x2/bf16x2 gave %08x/%08x on lane %d, expected %08x/%08x",
               cvt[2 * l], cvt[2 * l + 1], l, w16, wbf);
      return NABLA_PROBE_FAIL;
    }
  }
  return NABLA_PROBE_PASS;
}

static nabla_probe_verdict probe_mma_smem(nabla_context *ctx, char *why, size_t why_len) {
  uint16_t m[256];
  uint32_t out[260];
  for (int i = 0; i < 256; i++) m[i] = (uint16_t)(0x1000 + i * 7);
  memset(out, 0xff, sizeof out);
  size_t bytes[2] = {sizeof m, sizeof out};
  void *host[2] = {m, out};
  int readback[2] = {0, 1};
  nabla_probe_verdict v = nabla_probe_launch(ctx, "probe_mma", "-DPROBE_SMEM=1", "probe_smem", 32, 2, bytes, host,
                                 readback, why, why_len);
  if (v != NABLA_PROBE_PASS) return v;
#define M(r, c) ((uint32_t)m[(r) * 16 + (c)])
  for (int l = 0; l < 32; l++) {
    int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; i++) {
      int r0 = 8 * (i & 1), c0 = 8 * (i >> 1);
      uint32_t plain = M(r0 + g, c0 + 2 * t) | (M(r0 + g, c0 + 2 * t + 1) << 16);
      uint32_t trans = M(r0 + 2 * t, c0 + g) | (M(r0 + 2 * t + 1, c0 + g) << 16);
      if (out[l * 8 + i] != plain || out[l * 8 + 4 + i] != trans) {
        snprintf(why, why_len, "ldmatrix gave %08x/%08x (lane %d, matrix %d), expected %08x/%08x",
                 out[l * 8 + i], out[l * 8 + 4 + i], l, i, plain, trans);
        return NABLA_PROBE_FAIL;
      }
    }
  }
#undef M
  for (int i = 0; i < 4; i++)
    if (out[256 + i] != 0) {
      snprintf(why, why_len, "cp.async with src-size 0 did not zero-fill");
      return NABLA_PROBE_FAIL;
    }
  return NABLA_PROBE_PASS;
}

static int probe_cache_read(nabla_context *ctx, nabla_variant_probe *pr) {
  char text[512];
  int mma = -1, smem = -1, used = 0;
  if (!nabla_probe_cache_get(ctx, NABLA_VARIANT_NVIDIA_MMA, text, sizeof text)) return 0;
  if (sscanf(text, "mma=%d smem=%d%n", &mma, &smem, &used) != 2 || (mma != 0 && mma != 1) ||
      (smem != 0 && smem != 1))
    return 0;
  pr->supported = mma;
  pr->features = mma && smem ? NABLA_MMA_FEATURE_SMEM : 0;
  nabla_probe_cache_why(text + used, pr);
  return 1;
}

static void probe_cache_write(nabla_context *ctx, const nabla_variant_probe *pr) {
  char text[512];
  const int smem = (pr->features & NABLA_MMA_FEATURE_SMEM) != 0;
  snprintf(text, sizeof text, "mma=%d smem=%d why=%s", pr->supported, smem, pr->why);
  nabla_probe_cache_put(ctx, NABLA_VARIANT_NVIDIA_MMA, text);
}

static void probe_nvidia_mma(nabla_context *ctx, int id, nabla_variant_probe *pr) {
  nabla_probe_saved saved;
  nabla_probe_save(ctx, &saved);
  pr->probed = 1;
  pr->supported = 0, pr->features = 0;
  if (ctx->caps.vendor != NABLA_VENDOR_NVIDIA) {
    snprintf(pr->why, sizeof pr->why, "not an NVIDIA device");
    return;
  }
  if (probe_cache_read(ctx, pr)) return;
  char why[384] = "";
  nabla_probe_verdict v = probe_mma_core(ctx, why, sizeof why);
  if (v == NABLA_PROBE_PASS) {
    pr->supported = 1;
    char why_smem[384] = "";
    nabla_probe_verdict s = probe_mma_smem(ctx, why_smem, sizeof why_smem);
    pr->features = s == NABLA_PROBE_PASS ? NABLA_MMA_FEATURE_SMEM : 0;
    if (s != NABLA_PROBE_PASS) snprintf(pr->why, sizeof pr->why, "ldmatrix/cp.async path off: %.300s", why_smem);
    else pr->why[0] = '\0';
    if (s != NABLA_PROBE_ERROR) probe_cache_write(ctx, pr);
  } else {
    snprintf(pr->why, sizeof pr->why, "%s", why);
    if (v == NABLA_PROBE_FAIL) probe_cache_write(ctx, pr);
  }
  nabla_probe_restore(ctx, &saved);
}

/* ---- problems, knobs, options ----------------------------------------------------------- */

int nabla_variant_is_wgmma(int id) {
  return id == NABLA_VARIANT_NVIDIA_WGMMA || id == NABLA_VARIANT_WGMMA_EMULATED;
}

int nabla_nvidia_automatic(const nabla_device_caps *caps) { return caps->vendor == NABLA_VENDOR_NVIDIA; }

/* Whether the mma (or, wgmma set, the wgmma) kernel handles this problem; else writes why. */
int nabla_mma_eligible(const nabla_shape *shape, nabla_dtype dtype, int wgmma, char *why, size_t len) {
  if (!nabla_variant_eligible_16x16(shape, dtype, why, len)) return 0;
  if (wgmma && shape->head_dim != 64 && shape->head_dim != 128) {
    snprintf(why, len, "needs head_dim 64 or 128, not %d", shape->head_dim);
    return 0;
  }
  return 1;
}

int nabla_attention_mma_qpw(const nabla_context *ctx, int variant, int dense) {
  int qpw = ctx->knobs[NABLA_KNOB_MMA_QPW];
  /* mma.sync: two query blocks share K/V for dense attention. wgmma: one, even dense (H200,
   * Wan 14B shape: 249-253 ms against 314 ms with two, where 174 registers x 256 work-items
   * leave one work-group per multiprocessor instead of three). */
  if (qpw != 1 && qpw != 2) qpw = dense && !nabla_variant_is_wgmma(variant) ? 2 : 1;
  return qpw;
}

/* The register cap options of a tensor-core kernel (the knob MMA_MAXRREG; 0, the default, is no
 * cap), or "" when uncapped or emulated: a cap (NVIDIA's cl_nv_compiler_options) lets more
 * work-groups share a multiprocessor at the price of a few spills. */
void nabla_mma_maxrreg_options(const nabla_context *ctx, int id, char *cap, size_t len) {
  int maxrreg = ctx->knobs[NABLA_KNOB_MMA_MAXRREG];
  int real = id == NABLA_VARIANT_NVIDIA_MMA || id == NABLA_VARIANT_NVIDIA_WGMMA;
  cap[0] = '\0';
  if (real && maxrreg >= 64 && maxrreg <= 255)
    snprintf(cap, len, " -DMMA_MAXRREG=%d -cl-nv-maxrregcount=%d", maxrreg, maxrreg);
}

/* The lazy-rescale threshold of the tensor-core kernels' online softmax, in log2 units:
 * the knob MMA_LAZY_RESCALE, 0..15 (probabilities reach 2^tau, and fp16 P must not overflow; 0
 * is the running maxima, where a row's reference follows every increase); unset means
 * `fallback`. The wgmma kernel's default is 12: on the H200 (docs/notes/2026-12-wgmma-staging.md) 8
 * made it 11 % faster than 0 on Gaussian inputs, and 12 another 4-6 % on the STA mask (10.98 /
 * 10.97 ms against 11.72 / 11.39), with the same error against FlexAttention; on bench's
 * video-like inputs neither lost. The mma kernel keeps 0, the only setting timed for it. */
int nabla_mma_lazy_rescale(const nabla_context *ctx, int fallback) {
  const int v = ctx->knobs[NABLA_KNOB_MMA_LAZY_RESCALE];
  return v == NABLA_KNOB_UNSET ? fallback : v;
}

void nabla_attention_mma_options(const nabla_context *ctx, int id, const nabla_shape *shape,
                                 nabla_dtype dtype, int dense, char *buf, size_t len) {
  /* The emulation always can (it emulates ldmatrix and copies plainly). */
  int smem = id == NABLA_VARIANT_MMA_EMULATED || (ctx->variants.probe[id].features & NABLA_MMA_FEATURE_SMEM);
  if (ctx->knobs[NABLA_KNOB_MMA_SMEM] == 0) smem = 0; /* the knob's 0 turns it off */
  char cap[64];
  nabla_mma_maxrreg_options(ctx, id, cap, sizeof cap);
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d -DMMA_QPW=%d -DMMA_SMEM_PTX=%d -DMMA_LAZY_RESCALE=%d%s%s",
           nabla_dtype_define(dtype), shape->head_dim, dense,
           nabla_attention_mma_qpw(ctx, id, dense), smem, nabla_mma_lazy_rescale(ctx, 0),
           id == NABLA_VARIANT_MMA_EMULATED ? " -DNABLA_NO_PTX" : "", cap);
}


static int mma_eligible(const nabla_shape *shape, nabla_dtype dtype, char *why, size_t len) {
  return nabla_mma_eligible(shape, dtype, 0, why, len);
}

static void mma_options(nabla_context *ctx, const nabla_variant_call *call, char *buf, size_t len) {
  nabla_attention_mma_options(ctx, call->id, call->shape, call->dtype, call->dense, buf, len);
}

nabla_status nabla_mma_work_sizes(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                                  size_t global[3], size_t local[3]) {
  const int qpw = nabla_attention_mma_qpw(ctx, call->id, call->dense);
  local[0] = 128 * (size_t)qpw, local[1] = local[2] = 1;
  global[0] = local[0] * (size_t)((call->blocks + qpw - 1) / qpw);
  global[1] = (size_t)call->shape->batch * call->shape->heads;
  global[2] = 1;
  return NABLA_OK;
}

/* ---- the reduced map (cl/map_mma.cl) ------------------------------------------------------ */

/* The A fragments of all of head_dim stay in registers: a multiple of 16 up to 128. */
static int map_eligible(const nabla_shape *shape) { return shape->head_dim % 16 == 0 && shape->head_dim <= 128; }

/* The map kernel needs ldmatrix and cp.async, which the probe checks apart. */
static int map_ready(nabla_context *ctx, int id) {
  return (ctx->variants.probe[id].features & NABLA_MMA_FEATURE_SMEM) != 0;
}

static void map_options(int id, const nabla_shape *shape, char *buf, size_t len) {
  snprintf(buf, len, "-DMMA_IN=1 -DMMA_SMEM_PTX=1 -DMAP_D=%d%s", shape->head_dim,
           id == NABLA_VARIANT_MMA_EMULATED ? " -DNABLA_NO_PTX" : "");
}

/* ---- the operations tables ---------------------------------------------------------------- */

static const nabla_kernel_source_desc mma_sources[] = {
    {"attention_mma", {"mma", NULL}, NULL},
    {"map_mma", {"mma", NULL}, NULL},
    {NULL, {NULL}, NULL},
};

const nabla_variant_ops nabla_variant_nvidia_mma = {
    .stages = NABLA_STAGE_ATTENTION | NABLA_STAGE_MAP,
    .rank = 10,
    .automatic = nabla_nvidia_automatic,
    .map_with = NABLA_VARIANT_NVIDIA_MMA,
    .eligible = mma_eligible,
    .probe = probe_nvidia_mma,
    .program = "attention_mma",
    .options = mma_options,
    .work_sizes = nabla_mma_work_sizes,
    .sources = mma_sources,
    .map = {"map_mma", "reduced_map_mma", map_eligible, map_ready, map_options},
};

const nabla_variant_ops nabla_variant_nvidia_mma_emulated = {
    .stages = NABLA_STAGE_ATTENTION | NABLA_STAGE_MAP,
    .map_with = NABLA_VARIANT_MMA_EMULATED,
    .eligible = mma_eligible,
    .program = "attention_mma",
    .options = mma_options,
    .work_sizes = nabla_mma_work_sizes,
    .map = {"map_mma", "reduced_map_mma", map_eligible, NULL, map_options},
};
