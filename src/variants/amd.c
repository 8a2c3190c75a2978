/* The AMD matrix-core attention (cl/attention_amd.cl after cl/amd_matrix.cl): amd-mfma on CDNA
 * (gfx90a, gfx94x), amd-wmma on RDNA3 (gfx11), and their emulated twins, which run the same
 * kernel with the matrix instructions written in OpenCL C. One probe (cl/probe_amd.cl) checks
 * each builtin's fragment and accumulator layouts element by element on the device. */
#include <stdio.h>
#include <string.h>

#include "probe.h"
#include "variant.h"

/* 1 for the MFMA variants, 2 for WMMA (cl/amd_matrix.cl's AMD_MATRIX). */
static int amd_matrix(int id) { return id == NABLA_VARIANT_AMD_MFMA || id == NABLA_VARIANT_AMD_MFMA_EMULATED ? 1 : 2; }

static int amd_emulated(int id) { return id == NABLA_VARIANT_AMD_MFMA_EMULATED || id == NABLA_VARIANT_AMD_WMMA_EMULATED; }

/* Whether a gfx target has the instructions of cl/amd_matrix.cl: MFMA with the bf16_1k forms
 * (gfx90a, gfx94x; gfx908 has the older bf16 MFMA only) or WMMA (gfx11). */
static int amd_arch_has(const char *arch, int matrix) {
  if (matrix == 1) return strcmp(arch, "gfx90a") == 0 || strncmp(arch, "gfx94", 5) == 0;
  return strncmp(arch, "gfx11", 5) == 0;
}

static int amd_gpu(const nabla_device_caps *caps) { return caps->vendor == NABLA_VENDOR_AMD && !caps->is_cpu; }
static int mfma_automatic(const nabla_device_caps *caps) { return amd_gpu(caps) && amd_arch_has(caps->arch, 1); }
static int wmma_automatic(const nabla_device_caps *caps) { return amd_gpu(caps) && amd_arch_has(caps->arch, 2); }

/* Small integers (-4..4): exact in fp16, bf16 and every fp32 sum; every position differs. */
static int amat(int which, int r, int c) { return (r * (2 + 3 * which) + c * (4 + 3 * which) + which) % 9 - 4; }

static uint16_t to16(int fp16, float x) { return fp16 ? nabla_f32_to_f16(x) : nabla_f32_to_bf16(x); }

/* Runs cl/probe_amd.cl for one input type and checks D = A B + C element by element. */
static nabla_probe_verdict probe_amd_dtype(nabla_context *ctx, int id, nabla_dtype dtype, char *why, size_t why_len) {
  const int fp16 = dtype == NABLA_F16, matrix = amd_matrix(id);
  uint16_t a[256], b[256];
  float c[256], d[256];
  for (int r = 0; r < 16; r++)
    for (int k = 0; k < 16; k++) {
      a[r * 16 + k] = to16(fp16, (float)amat(0, r, k));
      b[r * 16 + k] = to16(fp16, (float)amat(1, r, k));
      c[r * 16 + k] = (float)(r * 16 + k); /* every accumulator distinct: a misplaced one shows */
    }
  memset(d, 0, sizeof d);
  char options[128];
  snprintf(options, sizeof options, "%s -DAMD_MATRIX=%d%s", nabla_dtype_define(dtype), matrix,
           amd_emulated(id) ? " -DAMD_EMULATE" : "");
  size_t bytes[4] = {sizeof a, sizeof b, sizeof c, sizeof d};
  void *host[4] = {a, b, c, d};
  int readback[4] = {0, 0, 0, 1};
  nabla_probe_verdict v = nabla_probe_launch(ctx, "probe_amd", options, "probe_amd", matrix == 1 ? 64 : 32, 4,
                                             bytes, host, readback, why, why_len);
  if (v != NABLA_PROBE_PASS) return v;
  for (int i = 0; i < 16; i++)
    for (int j = 0; j < 16; j++) {
      float want = c[i * 16 + j];
      for (int k = 0; k < 16; k++) want += (float)(amat(0, i, k) * amat(1, k, j));
      if (d[i * 16 + j] != want) {
        snprintf(why, why_len, "%s %s gave D[%d][%d] = %g, expected %g (accumulator layout of %s?)",
                 matrix == 1 ? "v_mfma_f32_16x16x16" : "v_wmma_f32_16x16x16", fp16 ? "f16" : "bf16", i, j,
                 (double)d[i * 16 + j], (double)want, ctx->caps.arch[0] ? ctx->caps.arch : "this device");
        return NABLA_PROBE_FAIL;
      }
    }
  return NABLA_PROBE_PASS;
}

/* The real matrix cores: an AMD GPU whose gfx target has the instructions, then the probe for
 * both input types; verdicts cached per device like the NVIDIA probes. The emulations run the
 * same probe on any device (checking the emulation against the host's reading of the layouts). */
static void probe_amd(nabla_context *ctx, int id, nabla_variant_probe *pr) {
  nabla_probe_saved saved;
  char text[512], why[384] = "";
  int ok = -1, used = 0;
  nabla_probe_save(ctx, &saved);
  pr->probed = 1;
  pr->supported = 0;
  if (!amd_emulated(id) && !amd_gpu(&ctx->caps)) {
    snprintf(pr->why, sizeof pr->why, "not an AMD GPU");
  } else if (!amd_emulated(id) && !amd_arch_has(ctx->caps.arch, amd_matrix(id))) {
    snprintf(pr->why, sizeof pr->why, "device \"%s\" has no %s (needs %s)", ctx->caps.arch[0] ? ctx->caps.arch : "?",
             amd_matrix(id) == 1 ? "MFMA with bf16_1k" : "WMMA", amd_matrix(id) == 1 ? "gfx90a or gfx94x" : "gfx11");
  } else if (!amd_emulated(id) && nabla_probe_cache_get(ctx, id, text, sizeof text) &&
             sscanf(text, "amd=%d%n", &ok, &used) == 1 && (ok == 0 || ok == 1)) {
    pr->supported = ok;
    nabla_probe_cache_why(text + used, pr);
  } else {
    nabla_probe_verdict v = probe_amd_dtype(ctx, id, NABLA_BF16, why, sizeof why);
    if (v == NABLA_PROBE_PASS) v = probe_amd_dtype(ctx, id, NABLA_F16, why, sizeof why);
    pr->supported = v == NABLA_PROBE_PASS;
    snprintf(pr->why, sizeof pr->why, "%s", v == NABLA_PROBE_PASS ? "" : why);
    if (v != NABLA_PROBE_ERROR && !amd_emulated(id)) {
      snprintf(text, sizeof text, "amd=%d why=%s", pr->supported, pr->why);
      nabla_probe_cache_put(ctx, id, text);
    }
  }
  nabla_probe_restore(ctx, &saved);
}

static void amd_options(nabla_context *ctx, const nabla_variant_call *call, char *buf, size_t len) {
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d -DAMD_MATRIX=%d%s", nabla_dtype_define(call->dtype),
           call->shape->head_dim, call->dense, amd_matrix(call->id), amd_emulated(call->id) ? " -DAMD_EMULATE" : "");
}

/* One work-group of 256 work-items per query block (dimension 1) and (b, h) (dimension 2): four
 * waves of 64 with MFMA, eight of 32 with WMMA (two per 16 query rows). */
static nabla_status amd_work_sizes(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                                   size_t global[3], size_t local[3]) {
  (void)ctx, (void)kernel;
  local[0] = global[0] = 256, local[1] = local[2] = 1;
  global[1] = (size_t)call->blocks, global[2] = (size_t)call->shape->batch * call->shape->heads;
  return NABLA_OK;
}

static const nabla_kernel_source_desc amd_sources[] = {
    {"attention_amd", {"amd_matrix", NULL}, NULL},
    {"probe_amd", {"amd_matrix", NULL}, NULL},
    {NULL, {NULL}, NULL},
};

#define AMD_OPS(automatic_fn, rank_value, srcs)                                                \
  {                                                                                            \
    .stages = NABLA_STAGE_ATTENTION, .rank = rank_value, .automatic = automatic_fn,            \
    .map_with = NABLA_VARIANT_PORTABLE, .eligible = nabla_variant_eligible_16x16, .probe = probe_amd,          \
    .program = "attention_amd", .options = amd_options, .work_sizes = amd_work_sizes,          \
    .sources = srcs,                                                                           \
  }

const nabla_variant_ops nabla_variant_amd_mfma = AMD_OPS(mfma_automatic, 10, amd_sources);
const nabla_variant_ops nabla_variant_amd_mfma_emulated = AMD_OPS(NULL, 0, NULL);
const nabla_variant_ops nabla_variant_amd_wmma = AMD_OPS(wmma_automatic, 10, NULL);
const nabla_variant_ops nabla_variant_amd_wmma_emulated = AMD_OPS(NULL, 0, NULL);
