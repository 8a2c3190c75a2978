/* intel-dpas (cl/attention_dpas.cl on cl/dpas.cl): Intel's matrix engines (XMX) through
 * cl_intel_subgroup_matrix_multiply_accumulate, on Intel GPUs whose probe (cl/probe_dpas.cl)
 * passes; fp16/bf16, head_dim a multiple of 16 up to 128. Sub-groups of 8 on Xe-HPG (dg2), of
 * 16 on Xe-HPC (pvc) and Xe2: the smallest of the two the device runs. Its twin
 * intel-dpas-emulated runs the same kernel with the instruction emulated, on any device, only
 * when forced: on real sub-groups where the device has them (Intel's CPU runtime), else with
 * the sub-group emulated through local memory (PoCL). docs/variants.md has the design. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "intel_dpas.h"
#include "probe.h"
#include "variant.h"

/* cl_intel_required_subgroup_size: the sub-group sizes a device runs (size_t[]). */
#define DPAS_SUB_GROUP_SIZES_INTEL 0x4108

/* Bump when the probe changes meaning, so cached verdicts are not reused. */
#define DPAS_PROBE_VERSION 1

static int device_has(cl_device_id dev, const char *ext) {
  size_t len = 0;
  int found = 0;
  if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &len) != CL_SUCCESS) return 0;
  char *all = malloc(len + 1);
  if (!all) return 0;
  if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, len, all, NULL) == CL_SUCCESS) {
    all[len] = '\0';
    const size_t el = strlen(ext);
    for (const char *p = strstr(all, ext); p && !found; p = strstr(p + 1, ext))
      found = (p == all || p[-1] == ' ') && (p[el] == ' ' || p[el] == '\0');
  }
  free(all);
  return found;
}

/* Whether the device runs sub-groups of `size` on request (cl_intel_required_subgroup_size). */
static int runs_subgroup(cl_device_id dev, size_t size) {
  size_t sizes[16], bytes = 0;
  if (!device_has(dev, "cl_intel_required_subgroup_size") ||
      clGetDeviceInfo(dev, DPAS_SUB_GROUP_SIZES_INTEL, sizeof sizes, sizes, &bytes) != CL_SUCCESS)
    return 0;
  for (size_t i = 0; i < bytes / sizeof sizes[0]; i++)
    if (sizes[i] == size) return 1;
  return 0;
}

void nabla_intel_dpas_options(const nabla_intel_dpas_config *cfg, const nabla_shape *shape, nabla_dtype dtype,
                              int dense, char *buf, size_t len) {
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d -DDPAS_SG=%d -DDPAS_M=%d -DDPAS_MODE=%d%s",
           nabla_dtype_define(dtype), shape ? shape->head_dim : 64, dense, cfg->sg, cfg->m, cfg->mode,
           cfg->large_grf ? " -cl-intel-256-GRF-per-thread" : "");
}

nabla_intel_dpas_config nabla_intel_dpas_config_for(nabla_context *ctx, int id) {
  nabla_intel_dpas_config cfg = {8, 4, 0, 0};
  if (id == NABLA_VARIANT_INTEL_DPAS) {
    cfg.sg = runs_subgroup(ctx->device, 8) ? 8 : 16;
    cfg.m = cfg.sg == 8 ? 4 : 8;
    cfg.large_grf = cfg.sg == 16;
    return cfg;
  }
  cfg.sg = ctx->knobs[NABLA_KNOB_INTEL_DPAS_SG16] == 1 ? 16 : 8;
  cfg.m = cfg.sg == 8 ? 4 : 8;
  cfg.mode = runs_subgroup(ctx->device, (size_t)cfg.sg) && device_has(ctx->device, "cl_intel_subgroups_short") ? 1 : 2;
  return cfg;
}

/* ---- the probe ---------------------------------------------------------------------------- */

/* Small integers, exact in fp16, bf16 and every fp32 sum; rows and columns all differ. */
static int pa(int r, int c) { return (r * 3 + c * 5) % 7 - 3; }
static int pbt(int r, int c) { return (r * 2 + c * 7) % 5 - 2; }
static int pp(int r, int c) { return (r * 5 + c * 3) % 4; }
static int pv(int r, int c) { return (r * 7 + c * 2) % 9 - 4; }

/* Runs cl/probe_dpas.cl for one dtype with cfg and checks both products element by element. */
static nabla_probe_verdict probe_dtype(nabla_context *ctx, const nabla_intel_dpas_config *cfg, nabla_dtype dtype,
                                       char *why, size_t why_len) {
  const int sg = cfg->sg, rows = cfg->m, fp16 = dtype == NABLA_F16;
  uint16_t a[8 * 16], bt[16 * 16], v[16 * 16];
  float p[8 * 16], d1[8 * 16], d2[8 * 16];
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++) {
      if (r < 8) a[r * 16 + c] = fp16 ? nabla_f32_to_f16((float)pa(r, c)) : nabla_f32_to_bf16((float)pa(r, c));
      if (r < 8) p[r * 16 + c] = (float)pp(r, c);
      if (r < sg) bt[r * 16 + c] = fp16 ? nabla_f32_to_f16((float)pbt(r, c)) : nabla_f32_to_bf16((float)pbt(r, c));
      if (c < sg) v[r * sg + c] = fp16 ? nabla_f32_to_f16((float)pv(r, c)) : nabla_f32_to_bf16((float)pv(r, c));
    }
  char options[256];
  nabla_intel_dpas_options(cfg, NULL, dtype, 0, options, sizeof options);
  size_t bytes[6] = {sizeof a, (size_t)sg * 16 * 2, sizeof p, (size_t)16 * sg * 2, (size_t)8 * sg * 4,
                     (size_t)8 * sg * 4};
  void *host[6] = {a, bt, p, v, d1, d2};
  int readback[6] = {0, 0, 0, 0, 1, 1};
  nabla_probe_verdict verdict = nabla_probe_launch(ctx, "probe_dpas", options, "probe_dpas", (size_t)sg, 6, bytes,
                                                   host, readback, why, why_len);
  if (verdict != NABLA_PROBE_PASS) return verdict;
  for (int i = 0; i < rows; i++)
    for (int n = 0; n < sg; n++) {
      float want1 = 0.0f, want2 = 0.5f;
      for (int k = 0; k < 16; k++) {
        want1 += (float)(pa(i, k) * pbt(n, k));
        want2 += (float)(pp(i, k) * pv(k, n));
      }
      if (d1[i * sg + n] != want1 || d2[i * sg + n] != want2) {
        snprintf(why, why_len, "the %s matrix instruction (sub-group %d) gave %s[%d][%d] = %g, expected %g",
                 fp16 ? "f16" : "bf16", sg, d1[i * sg + n] != want1 ? "Q.K" : "P.V", i, n,
                 (double)(d1[i * sg + n] != want1 ? d1[i * sg + n] : d2[i * sg + n]),
                 (double)(d1[i * sg + n] != want1 ? want1 : want2));
        return NABLA_PROBE_FAIL;
      }
    }
  return NABLA_PROBE_PASS;
}

static nabla_probe_verdict probe_both(nabla_context *ctx, const nabla_intel_dpas_config *cfg, char *why,
                                      size_t why_len) {
  nabla_probe_verdict v = probe_dtype(ctx, cfg, NABLA_BF16, why, why_len);
  return v == NABLA_PROBE_PASS ? probe_dtype(ctx, cfg, NABLA_F16, why, why_len) : v;
}

/* The hardware: an Intel GPU with the extensions, then the probe; the verdict is cached on disk
 * (FAIL too: a compiler that rejects the builtins keeps rejecting them), the reason kept. */
static void probe_intel_dpas(nabla_context *ctx, int id, nabla_variant_probe *pr) {
  static const char *const needed[] = {"cl_intel_subgroup_matrix_multiply_accumulate",
                                       "cl_intel_required_subgroup_size", "cl_intel_subgroups_short"};
  nabla_probe_saved saved;
  char text[512], why[384] = "";
  int ok = -1, used = 0;
  nabla_probe_save(ctx, &saved);
  pr->probed = 1;
  pr->supported = 0;
  if (ctx->caps.vendor != NABLA_VENDOR_INTEL) {
    snprintf(pr->why, sizeof pr->why, "not an Intel GPU");
    goto done;
  }
  for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
    if (!device_has(ctx->device, needed[i])) {
      snprintf(pr->why, sizeof pr->why, "the device lacks %s", needed[i]);
      goto done;
    }
  const nabla_intel_dpas_config cfg = nabla_intel_dpas_config_for(ctx, id);
  if (!runs_subgroup(ctx->device, (size_t)cfg.sg)) {
    snprintf(pr->why, sizeof pr->why, "the device runs neither sub-groups of 8 nor of 16");
    goto done;
  }
  if (nabla_probe_cache_get(ctx, id, text, sizeof text) &&
      sscanf(text, "dpas=%d v%*d%n", &ok, &used) == 1 && used > 0 && (ok == 0 || ok == 1)) {
    pr->supported = ok;
    nabla_probe_cache_why(text + used, pr);
    goto done;
  }
  nabla_probe_verdict v = probe_both(ctx, &cfg, why, sizeof why);
  pr->supported = v == NABLA_PROBE_PASS;
  snprintf(pr->why, sizeof pr->why, "%s", v == NABLA_PROBE_PASS ? "" : why);
  if (v != NABLA_PROBE_ERROR) {
    snprintf(text, sizeof text, "dpas=%d v%d why=%s", pr->supported, DPAS_PROBE_VERSION, pr->why);
    nabla_probe_cache_put(ctx, id, text);
  }
done:
  nabla_probe_restore(ctx, &saved);
}

/* The emulation runs the probe emulated: it checks on any device that the emulated instruction
 * and the loaders agree with the host's reading of the layouts (kept for the context). */
static void probe_intel_dpas_emulated(nabla_context *ctx, int id, nabla_variant_probe *pr) {
  nabla_probe_saved saved;
  char why[384] = "";
  nabla_probe_save(ctx, &saved);
  const nabla_intel_dpas_config cfg = nabla_intel_dpas_config_for(ctx, id);
  pr->probed = 1;
  pr->supported = probe_both(ctx, &cfg, why, sizeof why) == NABLA_PROBE_PASS;
  snprintf(pr->why, sizeof pr->why, "%s", why);
  nabla_probe_restore(ctx, &saved);
}

/* ---- problems, options, launch ------------------------------------------------------------ */

static int dpas_automatic(const nabla_device_caps *caps) { return caps->vendor == NABLA_VENDOR_INTEL; }

static void dpas_options(nabla_context *ctx, const nabla_variant_call *call, char *buf, size_t len) {
  const nabla_intel_dpas_config cfg = nabla_intel_dpas_config_for(ctx, call->id);
  nabla_intel_dpas_options(&cfg, call->shape, call->dtype, call->dense, buf, len);
}

/* One work-group per query block (dimension 1) and (b, h) (dimension 2), of the size the
 * kernel's reqd_work_group_size gives (64 / DPAS_M sub-groups of DPAS_SG: 128 either way). */
static nabla_status dpas_work_sizes(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                                    size_t global[3], size_t local[3]) {
  nabla_status st = NABLA_OK;
  size_t wg[3] = {0, 0, 0};
  TRY_CL(st, ctx, clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_COMPILE_WORK_GROUP_SIZE, sizeof wg, wg,
                                           NULL));
  local[0] = global[0] = wg[0] ? wg[0] : 128, local[1] = local[2] = 1;
  global[1] = (size_t)call->blocks, global[2] = (size_t)call->shape->batch * call->shape->heads;
done:
  return st;
}

static const nabla_kernel_source_desc dpas_sources[] = {
    {"attention_dpas", {"dpas", NULL}, NULL},
    {"probe_dpas", {"dpas", NULL}, NULL},
    {NULL, {NULL}, NULL},
};

const nabla_variant_ops nabla_variant_intel_dpas = {
    .stages = NABLA_STAGE_ATTENTION,
    .rank = 10,
    .automatic = dpas_automatic,
    .map_with = NABLA_VARIANT_PORTABLE,
    .eligible = nabla_variant_eligible_16x16,
    .probe = probe_intel_dpas,
    .program = "attention_dpas",
    .options = dpas_options,
    .work_sizes = dpas_work_sizes,
    .sources = dpas_sources,
};

const nabla_variant_ops nabla_variant_intel_dpas_emulated = {
    .stages = NABLA_STAGE_ATTENTION,
    .map_with = NABLA_VARIANT_PORTABLE,
    .eligible = nabla_variant_eligible_16x16,
    .probe = probe_intel_dpas_emulated,
    .program = "attention_dpas",
    .options = dpas_options,
    .work_sizes = dpas_work_sizes,
};
