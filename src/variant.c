/* Kernel variants: registry, capability probes (cached on disk) and the attention choice. */
#include "variant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskcache.h"
#include "kernels.h"

_Static_assert(NABLA_VARIANT_COUNT == NABLA_VARIANT_SLOTS, "one probe slot per variant (internal.h)");

static const char *const variant_names[NABLA_VARIANT_COUNT] = {
    "portable", "nvidia-mma", "nvidia-mma-emulated", "cpu-rows", "nvidia-wgmma", "nvidia-wgmma-emulated"};

/* Register cap of the mma and wgmma attention kernels on NVIDIA (0: none); see docs/variants.md. */
#define MMA_MAXRREG_DEFAULT 0

/* Bump when the probes change meaning, so cached verdicts are not reused. */
#define PROBE_VERSION 3

const char *nabla_variant_name(int id) {
  if (id == NABLA_VARIANT_AUTO) return "auto";
  return id >= 0 && id < NABLA_VARIANT_COUNT ? variant_names[id] : NULL;
}

int nabla_variant_id(const char *name) {
  if (!name || !*name || strcmp(name, "auto") == 0) return NABLA_VARIANT_AUTO;
  for (int i = 0; i < NABLA_VARIANT_COUNT; i++)
    if (strcmp(name, variant_names[i]) == 0) return i;
  return -2;
}

/* ---- the nvidia-mma probes ------------------------------------------------------------- */

typedef enum { PROBE_PASS = 1, PROBE_FAIL = 0, PROBE_ERROR = -1 } probe_verdict;

/* Small integers: every product and sum is exact in fp32, and every position differs. */
static float mat_a(int pass, int r, int c) { return (float)((r * 3 + c * 5 + pass) % 7 - 3); }
static float mat_b(int pass, int r, int c) { return (float)((r * 2 + c * 7 + 2 * pass) % 5 - 2); }

static cl_mem probe_buffer(nabla_context *ctx, size_t bytes, const void *init) {
  cl_int rc = CL_SUCCESS;
  cl_mem m = clCreateBuffer(ctx->cl_ctx, init ? CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                            bytes, (void *)init, &rc);
  return rc == CL_SUCCESS ? m : NULL;
}

/* Builds `kernel` of the probe program `program` with `options`, binds `nbuf` buffers, runs one
 * work-group of `items` work-items and reads the buffers flagged in `readback` back into host[i]. */
static probe_verdict probe_launch(nabla_context *ctx, const char *program, const char *options,
                                  const char *kernel, size_t items, int nbuf, const size_t *bytes,
                                  void **host, const int *readback, char *why, size_t why_len) {
  probe_verdict v = PROBE_ERROR;
  cl_program prog = NULL;
  cl_kernel k = NULL;
  cl_mem bufs[8] = {0};
  nabla_status built = nabla_program_get(ctx, program, options, &prog);
  if (built != NABLA_OK) {
    snprintf(why, why_len, "probe kernel %s does not build: %.300s", kernel, ctx->error);
    /* A compiler that rejects the PTX will keep rejecting it; anything else may pass later. */
    return built == NABLA_BUILD ? PROBE_FAIL : PROBE_ERROR;
  }
  if (nabla_kernel_create(ctx, prog, kernel, &k) != NABLA_OK) {
    snprintf(why, why_len, "%.300s", ctx->error);
    return PROBE_FAIL;
  }
  nabla_kernel_arg args[8];
  for (int i = 0; i < nbuf; i++) {
    if (!(bufs[i] = probe_buffer(ctx, bytes[i], readback[i] ? NULL : host[i]))) {
      snprintf(why, why_len, "probe buffer allocation failed");
      goto done;
    }
    args[i] = NABLA_ARG(bufs[i]);
  }
  if (nabla_set_args(ctx, k, kernel, args, (size_t)nbuf) != NABLA_OK) {
    snprintf(why, why_len, "%.300s", ctx->error);
    goto done;
  }
  cl_int rc = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &items, &items, 0, NULL, NULL);
  for (int i = 0; i < nbuf && rc == CL_SUCCESS; i++)
    if (readback[i]) rc = clEnqueueReadBuffer(ctx->queue, bufs[i], CL_TRUE, 0, bytes[i], host[i], 0, NULL, NULL);
  if (rc == CL_SUCCESS) rc = clFinish(ctx->queue);
  if (rc != CL_SUCCESS) {
    /* A launch refused for the kernel's sake (e.g. invalid PTX only found at run time) would
     * repeat; an out-of-resources error might not. Both count as "not now". */
    snprintf(why, why_len, "probe kernel %s failed to run: %s", kernel, nabla_cl_error_name(rc));
    goto done;
  }
  v = PROBE_PASS;
done:
  for (int i = 0; i < nbuf; i++)
    if (bufs[i]) clReleaseMemObject(bufs[i]);
  if (k) clReleaseKernel(k);
  return v;
}

static probe_verdict probe_mma_core(nabla_context *ctx, char *why, size_t why_len) {
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
  probe_verdict v = probe_launch(ctx, "probe_mma", "-DPROBE_SMEM=0", "probe_mma", 32, 8, bytes, host,
                                 readback, why, why_len);
  if (v != PROBE_PASS) return v;
  for (int pass = 0; pass < 2; pass++) {
    const float *d = pass ? dbf : d16;
    for (int r = 0; r < 16; r++)
      for (int c = 0; c < 8; c++) {
        float want = 0.5f;
        for (int kk = 0; kk < 16; kk++) want += mat_a(pass, r, kk) * mat_b(pass, kk, c);
        if (d[r * 8 + c] != want) {
          snprintf(why, why_len, "mma.sync %s gave D[%d][%d] = %g, expected %g",
                   pass ? "bf16" : "f16", r, c, (double)d[r * 8 + c], (double)want);
          return PROBE_FAIL;
        }
      }
  }
  for (int l = 0; l < 32; l++) {
    float want = (float)(l ^ 1) + 100.0f * (float)(l ^ 2);
    if (shfl[l] != want) {
      snprintf(why, why_len, "shfl.sync.bfly gave %g on lane %d, expected %g", (double)shfl[l], l, (double)want);
      return PROBE_FAIL;
    }
    float lo = (float)l + 1.0f / 3.0f, hi = -(float)l * 0.14285714f;
    uint32_t w16 = (uint32_t)nabla_f32_to_f16(lo) | ((uint32_t)nabla_f32_to_f16(hi) << 16);
    uint32_t wbf = (uint32_t)nabla_f32_to_bf16(lo) | ((uint32_t)nabla_f32_to_bf16(hi) << 16);
    if (cvt[2 * l] != w16 || cvt[2 * l + 1] != wbf) {
      snprintf(why, why_len, "cvt.rn.f16x2/bf16x2 gave %08x/%08x on lane %d, expected %08x/%08x",
               cvt[2 * l], cvt[2 * l + 1], l, w16, wbf);
      return PROBE_FAIL;
    }
  }
  return PROBE_PASS;
}

static probe_verdict probe_mma_smem(nabla_context *ctx, char *why, size_t why_len) {
  uint16_t m[256];
  uint32_t out[260];
  for (int i = 0; i < 256; i++) m[i] = (uint16_t)(0x1000 + i * 7);
  memset(out, 0xff, sizeof out);
  size_t bytes[2] = {sizeof m, sizeof out};
  void *host[2] = {m, out};
  int readback[2] = {0, 1};
  probe_verdict v = probe_launch(ctx, "probe_mma", "-DPROBE_SMEM=1", "probe_smem", 32, 2, bytes, host,
                                 readback, why, why_len);
  if (v != PROBE_PASS) return v;
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
        return PROBE_FAIL;
      }
    }
  }
#undef M
  for (int i = 0; i < 4; i++)
    if (out[256 + i] != 0) {
      snprintf(why, why_len, "cp.async with src-size 0 did not zero-fill");
      return PROBE_FAIL;
    }
  return PROBE_PASS;
}

/* Key of a variant's probe verdict in the "probes" namespace: the device, and a hash of the
 * embedded kernel sources (the probes' among them), so a library with other probes asks again. */
static void probe_cache_key(const nabla_context *ctx, int id, char *buf, size_t len) {
  uint64_t h = PROBE_VERSION;
  for (size_t i = 0; i < nabla_kernel_source_count; i++)
    h = nabla_hash64(nabla_kernel_sources[i].text, nabla_kernel_sources[i].size, h);
  snprintf(buf, len, "%s|probe v%d|%s|src %016llx", variant_names[id], PROBE_VERSION, ctx->device_key,
           (unsigned long long)h);
}

/* The cached verdict text of variant id into text (NUL-terminated, cut to len - 1); 0 when there
 * is none or caching is off. */
static int probe_cache_get(nabla_context *ctx, int id, char *text, size_t len) {
  char key[128];
  void *data = NULL;
  size_t n = 0;
  if (!ctx->cache_root[0] || ctx->kernel_dir[0]) return 0; /* edited kernels: probe afresh */
  probe_cache_key(ctx, id, key, sizeof key);
  if (nabla_diskcache_get(ctx->cache_root, "probes", key, &data, &n) != NABLA_OK) return 0;
  if (n > len - 1) n = len - 1;
  memcpy(text, data, n);
  text[n] = '\0';
  free(data);
  return 1;
}

/* Stores the verdict text of variant id (best effort: a failure means no caching). */
static void probe_cache_put(nabla_context *ctx, int id, const char *text) {
  char key[128];
  if (!ctx->cache_root[0] || ctx->kernel_dir[0]) return; /* verdicts of edited kernels are not kept */
  probe_cache_key(ctx, id, key, sizeof key);
  nabla_diskcache_put(ctx->cache_root, "probes", key, text, strlen(text));
}

/* The reason after "why=" in a cached verdict (text from just past its flags), into pr->why. */
static void probe_cache_why(const char *text, nabla_variant_probe *pr) {
  const char *w = strstr(text, "why=");
  snprintf(pr->why, sizeof pr->why, "%s", w ? w + 4 : "");
}

static int probe_cache_read(nabla_context *ctx, nabla_variant_probe *pr) {
  char text[512];
  int mma = -1, smem = -1, used = 0;
  if (!probe_cache_get(ctx, NABLA_VARIANT_NVIDIA_MMA, text, sizeof text)) return 0;
  if (sscanf(text, "mma=%d smem=%d%n", &mma, &smem, &used) != 2 || (mma != 0 && mma != 1) ||
      (smem != 0 && smem != 1))
    return 0;
  pr->supported = mma;
  pr->smem_ptx = mma && smem;
  probe_cache_why(text + used, pr);
  return 1;
}

static void probe_cache_write(nabla_context *ctx, const nabla_variant_probe *pr) {
  char text[512];
  snprintf(text, sizeof text, "mma=%d smem=%d why=%s", pr->supported, pr->smem_ptx, pr->why);
  probe_cache_put(ctx, NABLA_VARIANT_NVIDIA_MMA, text);
}

static void probe_nvidia_mma(nabla_context *ctx, nabla_variant_probe *pr) {
  char saved[NABLA_ERR_LEN];
  memcpy(saved, ctx->error, sizeof saved);
  pr->probed = 1;
  pr->supported = pr->smem_ptx = 0;
  if (ctx->caps.vendor != NABLA_VENDOR_NVIDIA) {
    snprintf(pr->why, sizeof pr->why, "not an NVIDIA device");
    return;
  }
  if (probe_cache_read(ctx, pr)) return;
  char why[384] = "";
  probe_verdict v = probe_mma_core(ctx, why, sizeof why);
  if (v == PROBE_PASS) {
    pr->supported = 1;
    char why_smem[384] = "";
    probe_verdict s = probe_mma_smem(ctx, why_smem, sizeof why_smem);
    pr->smem_ptx = s == PROBE_PASS;
    if (s != PROBE_PASS) snprintf(pr->why, sizeof pr->why, "ldmatrix/cp.async path off: %.300s", why_smem);
    else pr->why[0] = '\0';
    if (s != PROBE_ERROR) probe_cache_write(ctx, pr);
  } else {
    snprintf(pr->why, sizeof pr->why, "%s", why);
    if (v == PROBE_FAIL) probe_cache_write(ctx, pr);
  }
  memcpy(ctx->error, saved, sizeof saved); /* a failed probe is no error of the caller's call */
}

/* ---- the nvidia-wgmma probe ------------------------------------------------------------ */

/* Small integers again (-4..4): exact in fp16/bf16 and in every fp32 sum. The multipliers are
 * prime to 9, so every row and every column differs from the rows and columns 1..8 away: a
 * misplaced row or 16-byte chunk (swizzle, descriptor strides) changes the products. */
static int wmat(int which, int r, int c) { return (r * (2 + 3 * which) + c * (4 + 3 * which) + which) % 9 - 4; }

static uint16_t to16(int fp16, float x) { return fp16 ? nabla_f32_to_f16(x) : nabla_f32_to_bf16(x); }

/* Runs cl/probe_wgmma.cl for one 16-bit type (emulated: with NABLA_NO_PTX) and checks its three
 * products (see that file) against the host, bit for bit. */
static probe_verdict probe_wgmma_dtype(nabla_context *ctx, nabla_dtype dtype, int emulated, char *why,
                                       size_t why_len) {
  const int fp16 = dtype == NABLA_F16, rows_kept = 61;
  uint16_t *a = malloc(64 * 128 * 2), *b = malloc(64 * 128 * 2), *p = malloc(64 * 64 * 2);
  float *d1 = malloc(64 * 64 * 4), *d2 = malloc(64 * 128 * 4), *d3 = malloc(64 * 64 * 4);
  probe_verdict v = PROBE_ERROR;
  if (!a || !b || !p || !d1 || !d2 || !d3) {
    snprintf(why, why_len, "out of memory");
    goto done;
  }
  for (int r = 0; r < 64; r++)
    for (int c = 0; c < 128; c++) {
      a[r * 128 + c] = to16(fp16, (float)wmat(0, r, c));
      b[r * 128 + c] = to16(fp16, (float)wmat(1, r, c));
      if (c < 64) p[r * 64 + c] = to16(fp16, (float)wmat(2, r, c));
    }
  char options[96];
  snprintf(options, sizeof options, "%s%s", nabla_dtype_define(dtype), emulated ? " -DNABLA_NO_PTX" : "");
  size_t bytes[6] = {64 * 128 * 2, 64 * 128 * 2, 64 * 64 * 2, 64 * 64 * 4, 64 * 128 * 4, 64 * 64 * 4};
  void *host[6] = {a, b, p, d1, d2, d3};
  int readback[6] = {0, 0, 0, 1, 1, 1};
  v = probe_launch(ctx, "probe_wgmma", options, "probe_wgmma", 128, 6, bytes, host, readback, why, why_len);
  if (v != PROBE_PASS) goto done;
  for (int m = 0; m < 64 && v == PROBE_PASS; m++)
    for (int n = 0; n < 128 && v == PROBE_PASS; n++) {
      float want1 = 0.0f, want2 = 0.5f;
      for (int k = 0; k < 128 && n < 64; k++)
        want1 += n < rows_kept ? (float)(wmat(0, m, k) * wmat(1, n, k)) : 0.0f;
      for (int k = 0; k < rows_kept; k++) want2 += (float)(wmat(2, m, k) * wmat(1, k, n));
      const char *what = NULL;
      float got = 0.0f, want = 0.0f;
      if (n < 64 && d1[m * 64 + n] != want1) what = "m64n64k16 (K-major B)", got = d1[m * 64 + n], want = want1;
      else if (d2[m * 128 + n] != want2) what = "m64n128k16 (MN-major B)", got = d2[m * 128 + n], want = want2;
      else if (n < 64 && d3[m * 64 + n] != want2) what = "m64n64k16 (MN-major B)", got = d3[m * 64 + n], want = want2;
      if (what) {
        snprintf(why, why_len, "wgmma %s %s gave D[%d][%d] = %g, expected %g", what, fp16 ? "f16" : "bf16",
                 m, n, (double)got, (double)want);
        v = PROBE_FAIL;
      }
    }
done:
  free(a), free(b), free(p), free(d1), free(d2), free(d3);
  return v;
}

static probe_verdict probe_wgmma_both(nabla_context *ctx, int emulated, char *why, size_t why_len) {
  probe_verdict v = probe_wgmma_dtype(ctx, NABLA_BF16, emulated, why, why_len);
  return v == PROBE_PASS ? probe_wgmma_dtype(ctx, NABLA_F16, emulated, why, why_len) : v;
}

/* The real wgmma: NVIDIA, the nvidia-mma probe with cp.async passed, then probe_wgmma (whose
 * build fails on a device whose PTX is not sm_90). Verdicts cached like nvidia-mma's. */
static void probe_nvidia_wgmma(nabla_context *ctx, nabla_variant_probe *pr) {
  char saved[NABLA_ERR_LEN], text[512], why[384] = "";
  int ok = -1, used = 0;
  memcpy(saved, ctx->error, sizeof saved);
  pr->probed = 1;
  pr->supported = 0;
  if (ctx->caps.vendor != NABLA_VENDOR_NVIDIA) {
    snprintf(pr->why, sizeof pr->why, "not an NVIDIA device");
  } else if (!nabla_variant_probe_run(ctx, NABLA_VARIANT_NVIDIA_MMA, why, sizeof why) ||
             !ctx->variants.probe[NABLA_VARIANT_NVIDIA_MMA].smem_ptx) {
    snprintf(pr->why, sizeof pr->why, "needs nvidia-mma with cp.async: %.300s", why[0] ? why : "cp.async probe failed");
  } else if (probe_cache_get(ctx, NABLA_VARIANT_NVIDIA_WGMMA, text, sizeof text) &&
             sscanf(text, "wgmma=%d%n", &ok, &used) == 1 && (ok == 0 || ok == 1)) {
    pr->supported = ok;
    probe_cache_why(text + used, pr);
  } else {
    probe_verdict v = probe_wgmma_both(ctx, 0, why, sizeof why);
    pr->supported = v == PROBE_PASS;
    snprintf(pr->why, sizeof pr->why, "%s", v == PROBE_PASS ? "" : why);
    if (v != PROBE_ERROR) {
      snprintf(text, sizeof text, "wgmma=%d why=%s", pr->supported, pr->why);
      probe_cache_put(ctx, NABLA_VARIANT_NVIDIA_WGMMA, text);
    }
  }
  memcpy(ctx->error, saved, sizeof saved); /* a failed probe is no error of the caller's call */
}

/* The emulation runs the same probe kernel with every wgmma emulated: it checks, on any device,
 * that the emulation agrees with the host's reading of the layouts (kept for the context). */
static void probe_wgmma_emulated(nabla_context *ctx, nabla_variant_probe *pr) {
  char saved[NABLA_ERR_LEN], why[384] = "";
  memcpy(saved, ctx->error, sizeof saved);
  pr->probed = 1;
  pr->supported = probe_wgmma_both(ctx, 1, why, sizeof why) == PROBE_PASS;
  snprintf(pr->why, sizeof pr->why, "%s", why);
  memcpy(ctx->error, saved, sizeof saved);
}

int nabla_variant_probe_run(nabla_context *ctx, int id, char *why, size_t why_len) {
  if (why && why_len) why[0] = '\0';
  if (id < 0 || id >= NABLA_VARIANT_COUNT) {
    if (why && why_len) snprintf(why, why_len, "unknown variant");
    return 0;
  }
  nabla_variant_probe *pr = &ctx->variants.probe[id];
  if (!pr->probed) {
    if (id == NABLA_VARIANT_NVIDIA_MMA) {
      probe_nvidia_mma(ctx, pr);
    } else if (id == NABLA_VARIANT_NVIDIA_WGMMA) {
      probe_nvidia_wgmma(ctx, pr);
    } else if (id == NABLA_VARIANT_WGMMA_EMULATED) {
      probe_wgmma_emulated(ctx, pr);
    } else { /* portable, the emulation and cpu-rows run wherever OpenCL C does */
      pr->probed = pr->supported = 1;
    }
  }
  if (!pr->supported && why && why_len) snprintf(why, why_len, "%s", pr->why);
  return pr->supported;
}

/* The slot of a stage's reason in broken_why. */
static int stage_slot(int stage) { return stage == NABLA_STAGE_MAP; }

int nabla_variant_usable(nabla_context *ctx, int id, int stage, char *why, size_t why_len) {
  if (!nabla_variant_probe_run(ctx, id, why, why_len)) return 0;
  const nabla_variant_probe *pr = &ctx->variants.probe[id];
  if (!(pr->broken & (unsigned)stage)) return 1;
  if (why && why_len) snprintf(why, why_len, "%s", pr->broken_why[stage_slot(stage)]);
  return 0;
}

void nabla_variant_mark_broken(nabla_context *ctx, int id, int stage, const char *why) {
  if (id < 0 || id >= NABLA_VARIANT_COUNT || id == NABLA_VARIANT_PORTABLE) return;
  if (stage != NABLA_STAGE_ATTENTION && stage != NABLA_STAGE_MAP) return;
  nabla_variant_probe *pr = &ctx->variants.probe[id];
  pr->broken |= (unsigned)stage;
  snprintf(pr->broken_why[stage_slot(stage)], sizeof pr->broken_why[0], "%s", why ? why : "failed");
}

/* ---- attention -------------------------------------------------------------------------- */

int nabla_variant_is_wgmma(int id) {
  return id == NABLA_VARIANT_NVIDIA_WGMMA || id == NABLA_VARIANT_WGMMA_EMULATED;
}

/* Whether the mma (or, wgmma set, the wgmma) kernel handles this problem; else writes why. */
static int mma_eligible(const nabla_shape *shape, nabla_dtype dtype, int wgmma, char *why, size_t len) {
  if (dtype != NABLA_F16 && dtype != NABLA_BF16) {
    snprintf(why, len, "needs f16 or bf16 storage, not %s", nabla_dtype_name(dtype));
    return 0;
  }
  if (wgmma && shape->head_dim != 64 && shape->head_dim != 128) {
    snprintf(why, len, "needs head_dim 64 or 128, not %d", shape->head_dim);
    return 0;
  }
  if (shape->head_dim % 16 != 0 || shape->head_dim > 128) {
    snprintf(why, len, "needs head_dim a multiple of 16 up to 128, not %d", shape->head_dim);
    return 0;
  }
  return 1;
}

/* The variant asked for, first match: forced on the context, NABLACL_VARIANT, the tuned VARIANT
 * (params may be NULL); else NABLA_VARIANT_AUTO. -2 for an unknown NABLACL_VARIANT. */
static int requested_variant(const nabla_context *ctx, const nabla_params *params, const char **source) {
  const char *env = getenv("NABLACL_VARIANT");
  *source = "automatic";
  if (ctx->variants.forced) {
    *source = "forced";
    return ctx->variants.forced - 1;
  }
  if (env && *env) {
    *source = "NABLACL_VARIANT";
    return nabla_variant_id(env);
  }
  int p = params ? nabla_params_get(params, "VARIANT", NABLA_VARIANT_AUTO) : NABLA_VARIANT_AUTO;
  if (p >= 0 && p < NABLA_VARIANT_COUNT) {
    *source = "tuned";
    return p;
  }
  return NABLA_VARIANT_AUTO;
}

int nabla_attention_variant_choose(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                   const nabla_params *params, char *note, size_t note_len) {
  note[0] = '\0';
  const char *source = "automatic";
  int want = requested_variant(ctx, params, &source);
  if (want == -2) {
    snprintf(note, note_len, "NABLACL_VARIANT=%.64s is no variant; using portable", getenv("NABLACL_VARIANT"));
    return NABLA_VARIANT_PORTABLE;
  }
  if (want == NABLA_VARIANT_PORTABLE) return NABLA_VARIANT_PORTABLE;
  if (want == NABLA_VARIANT_CPU_ROWS || (want == NABLA_VARIANT_AUTO && ctx->caps.is_cpu)) {
    char why[384] = "";
    if (nabla_variant_usable(ctx, NABLA_VARIANT_CPU_ROWS, NABLA_STAGE_ATTENTION, why, sizeof why))
      return NABLA_VARIANT_CPU_ROWS;
    snprintf(note, note_len, "cpu-rows (%s) unavailable: %s; using portable", source, why);
    return NABLA_VARIANT_PORTABLE;
  }
  char why[384] = "";
  if (want == NABLA_VARIANT_AUTO && ctx->caps.vendor == NABLA_VENDOR_NVIDIA &&
      mma_eligible(shape, dtype, 1, why, sizeof why) &&
      nabla_variant_usable(ctx, NABLA_VARIANT_NVIDIA_WGMMA, NABLA_STAGE_ATTENTION, why, sizeof why))
    return NABLA_VARIANT_NVIDIA_WGMMA;
  int id = want == NABLA_VARIANT_AUTO ? NABLA_VARIANT_NVIDIA_MMA : want;
  if (!mma_eligible(shape, dtype, nabla_variant_is_wgmma(id), why, sizeof why) ||
      !nabla_variant_usable(ctx, id, NABLA_STAGE_ATTENTION, why, sizeof why)) {
    /* Automatic choice on a device without the variant is no fallback worth a note. */
    if (want != NABLA_VARIANT_AUTO || ctx->caps.vendor == NABLA_VENDOR_NVIDIA)
      snprintf(note, note_len, "%s (%s) unavailable: %s; using portable", nabla_variant_name(id),
               source, why);
    return NABLA_VARIANT_PORTABLE;
  }
  return id;
}

int nabla_map_variant_choose(nabla_context *ctx, const nabla_shape *shape) {
  const char *source = NULL;
  int want = requested_variant(ctx, NULL, &source);
  if (shape->head_dim % 16 != 0 || shape->head_dim > 128) return NABLA_VARIANT_PORTABLE;
  if (want == NABLA_VARIANT_MMA_EMULATED || want == NABLA_VARIANT_WGMMA_EMULATED) return NABLA_VARIANT_MMA_EMULATED;
  if (want != NABLA_VARIANT_AUTO && want != NABLA_VARIANT_NVIDIA_MMA && want != NABLA_VARIANT_NVIDIA_WGMMA)
    return NABLA_VARIANT_PORTABLE;
  if (!nabla_variant_usable(ctx, NABLA_VARIANT_NVIDIA_MMA, NABLA_STAGE_MAP, NULL, 0)) return NABLA_VARIANT_PORTABLE;
  return ctx->variants.probe[NABLA_VARIANT_NVIDIA_MMA].smem_ptx ? NABLA_VARIANT_NVIDIA_MMA
                                                                : NABLA_VARIANT_PORTABLE;
}

/* The developer override `name` of a tensor-core kernel knob: its value when the variable holds
 * a whole decimal number in [lo, hi], else `fallback` (unset, empty, trailing text, out of
 * range). */
static int env_knob(const char *name, int lo, int hi, int fallback) {
  const char *env = getenv(name);
  char *end = NULL;
  long v = env ? strtol(env, &end, 10) : 0;
  return env && *env && !*end && v >= lo && v <= hi ? (int)v : fallback;
}

int nabla_attention_mma_qpw(int variant, const nabla_shape *shape, int dense, const nabla_params *params) {
  int qpw = env_knob("NABLACL_MMA_QPW", 1, 2, params ? nabla_params_get(params, "MMA_QPW", 0) : 0);
  /* mma.sync: two query blocks share K/V for dense attention. wgmma: one, even dense (H200,
   * Wan 14B shape: 249-253 ms against 314 ms with two, where 174 registers x 256 work-items
   * leave one work-group per multiprocessor instead of three). */
  if (qpw != 1 && qpw != 2) qpw = dense && !nabla_variant_is_wgmma(variant) ? 2 : 1;
  (void)shape;
  return qpw;
}

/* The register cap options of a tensor-core kernel (MMA_MAXRREG, NABLACL_MMA_MAXRREG over it), or
 * "" when uncapped or emulated: a cap (NVIDIA's cl_nv_compiler_options) lets more work-groups
 * share a multiprocessor at the price of a few spills. */
static void maxrreg_options(int id, const nabla_params *params, char *cap, size_t len) {
  /* NABLACL_MMA_MAXRREG: 0 = no cap */
  int maxrreg = env_knob("NABLACL_MMA_MAXRREG", 0, 255,
                         params ? nabla_params_get(params, "MMA_MAXRREG", MMA_MAXRREG_DEFAULT) : MMA_MAXRREG_DEFAULT);
  int real = id == NABLA_VARIANT_NVIDIA_MMA || id == NABLA_VARIANT_NVIDIA_WGMMA;
  cap[0] = '\0';
  if (real && maxrreg >= 64 && maxrreg <= 255)
    snprintf(cap, len, " -DMMA_MAXRREG=%d -cl-nv-maxrregcount=%d", maxrreg, maxrreg);
}

/* The lazy-rescale threshold of the tensor-core kernels' online softmax, in log2 units:
 * NABLACL_MMA_LAZY_RESCALE, 0..15 (probabilities reach 2^tau, and fp16 P must not overflow; 0
 * is the running maxima, where a row's reference follows every increase); unset or anything
 * else means `fallback`. The wgmma kernel's default is 12: on the H200 (docs/notes/2026-12-wgmma-staging.md) 8
 * made it 11 % faster than 0 on Gaussian inputs, and 12 another 4-6 % on the STA mask (10.98 /
 * 10.97 ms against 11.72 / 11.39), with the same error against FlexAttention; on bench's
 * video-like inputs neither lost. The mma kernel keeps 0, the only setting timed for it. */
static int lazy_rescale(int fallback) { return env_knob("NABLACL_MMA_LAZY_RESCALE", 0, 15, fallback); }

/* Tensor copies by default: they spare the tile images' pack (a pass over K and V, 0.8 ms for
 * the Wan 14B shape on the H200) and its 2 x K's size of device memory, and were 5-8 % faster on
 * the STA mask and level on random 10 % there; both bulk paths are about twice as fast as rows
 * staged by cp.async (docs/notes/2026-12-wgmma-staging.md). */
int nabla_attention_wgmma_staging(void) {
  return env_knob("NABLACL_WG_BULK", NABLA_WG_ROWS, NABLA_WG_TENSOR, NABLA_WG_TENSOR);
}

void nabla_attention_wgmma_options(int id, const nabla_shape *shape, nabla_dtype dtype, int dense,
                                   int staging, const nabla_params *params, char *buf, size_t len) {
  char cap[64];
  maxrreg_options(id, params, cap, sizeof cap);
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d -DMMA_QPW=%d -DWG_BULK=%d -DMMA_LAZY_RESCALE=%d%s%s",
           nabla_dtype_define(dtype), shape->head_dim, dense,
           nabla_attention_mma_qpw(id, shape, dense, params), staging, lazy_rescale(12),
           id == NABLA_VARIANT_WGMMA_EMULATED ? " -DNABLA_NO_PTX" : "", cap);
}

void nabla_attention_mma_options(nabla_context *ctx, int id, const nabla_shape *shape,
                                 nabla_dtype dtype, int dense, const nabla_params *params,
                                 char *buf, size_t len) {
  /* The emulation always can (it emulates ldmatrix and copies plainly). */
  int smem = id == NABLA_VARIANT_MMA_EMULATED || ctx->variants.probe[id].smem_ptx;
  if (env_knob("NABLACL_MMA_SMEM", 0, 1, 1) == 0) smem = 0; /* developer override: 0 turns it off */
  char cap[64];
  maxrreg_options(id, params, cap, sizeof cap);
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d -DMMA_QPW=%d -DMMA_SMEM_PTX=%d -DMMA_LAZY_RESCALE=%d%s%s",
           nabla_dtype_define(dtype), shape->head_dim, dense,
           nabla_attention_mma_qpw(id, shape, dense, params), smem, lazy_rescale(0),
           id == NABLA_VARIANT_MMA_EMULATED ? " -DNABLA_NO_PTX" : "", cap);
}

/* ---- public API ------------------------------------------------------------------------- */

int nabla_variant_supported(nabla_context *ctx, const char *variant) {
  if (!ctx || !variant) return 0;
  int id = nabla_variant_id(variant);
  char why[384];
  if (id < 0) {
    snprintf(ctx->variants.note, sizeof ctx->variants.note, "\"%.64s\" is no variant", variant);
    return 0;
  }
  int ok = nabla_variant_usable(ctx, id, NABLA_STAGE_ATTENTION, why, sizeof why);
  if (ok) ctx->variants.note[0] = '\0';
  else snprintf(ctx->variants.note, sizeof ctx->variants.note, "%s: %s", variant, why);
  return ok;
}

nabla_status nabla_variant_list(nabla_context *ctx, char *buf, size_t len) {
  if (!ctx || !buf || !len) return NABLA_INVALID_ARGUMENT;
  buf[0] = '\0';
  size_t off = 0;
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++) {
    if (id == NABLA_VARIANT_MMA_EMULATED || id == NABLA_VARIANT_WGMMA_EMULATED)
      continue; /* test aids, not device capabilities */
    if (!nabla_variant_usable(ctx, id, NABLA_STAGE_ATTENTION, NULL, 0)) continue;
    int n = snprintf(buf + off, len - off, "%s%s", off ? " " : "", variant_names[id]);
    if (n < 0 || (size_t)n >= len - off) return NABLA_BUFFER_TOO_SMALL;
    off += (size_t)n;
  }
  return NABLA_OK;
}

nabla_status nabla_variant_force(nabla_context *ctx, const char *variant) {
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  int id = nabla_variant_id(variant);
  if (id == -2)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT,
                      "unknown variant \"%.64s\" (auto, portable, nvidia-mma, nvidia-mma-emulated, cpu-rows, "
                      "nvidia-wgmma, nvidia-wgmma-emulated)",
                      variant);
  ctx->variants.forced = id == NABLA_VARIANT_AUTO ? 0 : id + 1;
  return NABLA_OK;
}

const char *nabla_variant_note(const nabla_context *ctx) { return ctx ? ctx->variants.note : ""; }

const char *nabla_variant_last(const nabla_context *ctx) { return ctx ? ctx->variants.last : ""; }
