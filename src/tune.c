/* Tunable spaces and the lookup of tuned parameters (cache -> device-type default -> reference). */
#include "tune.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskcache.h"
#include "registry.h"

/* ---- attention (cl/attention.cl) ------------------------------------------------------ */

/* Mirrors cl/attention.cl: 64x64 blocks, work-groups of ATT_WG, two staging buffers that each
 * hold either a Q·Kᵀ item (64 Q and 64 K rows of TD = min(TILE_D, HEAD_DIM) floats, padded by 4;
 * with 256 work-items K unpadded, as TD rows of 64 keys) or a P·V item (TILE_V rows of HEAD_DIM
 * floats of V and 64 rows of TILE_V + 4 floats of P), and a row reduction buffer of 64 x 20
 * floats (64 x 16 with 256 work-items). */
enum { ATT_BQ = 64, ATT_BK = 64 };

int nabla_attention_work_group(const nabla_context *ctx) {
  /* AMD GPUs: 256 work-items holding half the rows each. With 128, the kernel took 256 VGPRs and
   * 82-226 AGPRs on gfx90a/gfx940 (one wave per SIMD) and spilled on gfx1030; with 256 (and the
   * default tiles below, and the kernel's shape for 256) at most 128 VGPRs with clang-15 and 19:
   * four waves per SIMD, no spill (docs/variants.md, "AMD GPUs"). */
  return ctx->caps.vendor == NABLA_VENDOR_AMD && !ctx->caps.is_cpu && ctx->caps.max_wg >= 256 ? 256 : 128;
}

/* Bytes of __local memory the attention kernel declares with work-groups of wg. */
static size_t attention_local_bytes(int tile_d, int tile_v, int head_dim, int wg) {
  size_t td = (size_t)(tile_d < head_dim ? tile_d : head_dim);
  size_t qk = wg == 256 ? ATT_BQ * (td + 4) + td * ATT_BK : 2u * ATT_BQ * (td + 4);
  size_t pv = (size_t)tile_v * (size_t)head_dim + (size_t)ATT_BQ * (size_t)(tile_v + 4);
  return 4u * (2u * (qk > pv ? qk : pv) + (size_t)ATT_BQ * (wg == 256 ? 16u : 20u));
}

static int attention_fits(nabla_context *ctx, int head_dim, const nabla_params *p, char *why,
                          size_t len) {
  int tile_d = nabla_params_get(p, "TILE_D", 16), tile_v = nabla_params_get(p, "TILE_V", 16);
  if (tile_d <= 0 || tile_d % 8 || tile_v <= 0 || tile_v % 4 || ATT_BK % tile_v != 0) {
    snprintf(why, len, "TILE_D=%d must be a multiple of 8, TILE_V=%d a multiple of 4 dividing %d",
             tile_d, tile_v, ATT_BK);
    return 0;
  }
  const int wg = nabla_attention_work_group(ctx);
  size_t local = attention_local_bytes(tile_d, tile_v, head_dim, wg);
  if (local > ctx->caps.local_mem) {
    snprintf(why, len, "needs %zu bytes of local memory, the device has %llu", local,
             (unsigned long long)ctx->caps.local_mem);
    return 0;
  }
  if ((size_t)wg > ctx->caps.max_wg) {
    snprintf(why, len, "needs work-groups of %d, the device allows %zu", wg, ctx->caps.max_wg);
    return 0;
  }
  return 1;
}

/* The options attention.c builds the portable kernel with. */
static nabla_status attention_build(nabla_context *ctx, nabla_dtype dtype, int head_dim,
                                    const nabla_params *params, cl_kernel *kernel, size_t *wg) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  char options[512];
  nabla_attention_portable_options(ctx, dtype, head_dim, 0, params, options, sizeof options);
  TRY(st, nabla_program_get(ctx, "attention", options, &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "attention", kernel));
  *wg = (size_t)nabla_attention_work_group(ctx);
done:
  return st;
}

void nabla_attention_portable_options(const nabla_context *ctx, nabla_dtype dtype, int head_dim, int dense,
                                      const nabla_params *params, char *buf, size_t len) {
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d", nabla_dtype_define(dtype), head_dim, dense);
  nabla_params_options(params, buf, len);
  size_t used = strlen(buf);
  if (nabla_attention_work_group(ctx) != 128 && used < len)
    snprintf(buf + used, len - used, " -DATT_WG=%d", nabla_attention_work_group(ctx));
}

int nabla_select_values_max(const nabla_context *ctx) {
  /* AMD GPUs: at most 16 values per work-item. 36-48 (Wan 14B's rows with 32 work-items each)
   * took 198-232 VGPRs and spilled SGPRs on gfx90a/gfx940 and spilled VGPRs on gfx1100, and 20
   * spilled 10-18 SGPRs there once the row's reads were fenced from its writes
   * (docs/variants.md, "AMD GPUs"). Elsewhere 48: more work-items per row measured slower on
   * the H100 (1050 blocks: 128 per row took 1.8 ms against 0.9 ms for 32), since every one of
   * them joins each row reduction. */
  return ctx->caps.vendor == NABLA_VENDOR_AMD && !ctx->caps.is_cpu ? 16 : 48;
}

/* ---- select (cl/select.cl) ------------------------------------------------------------ */

static int select_fits(nabla_context *ctx, int head_dim, const nabla_params *p, char *why,
                       size_t len) {
  int wg = nabla_params_get(p, "SEL_WG", 256);
  if (wg < 32 || (wg & (wg - 1)) != 0) {
    snprintf(why, len, "SEL_WG=%d is not a power of two >= 32 (the work-items of one row)", wg);
    return 0;
  }
  if ((size_t)wg > ctx->caps.max_wg) {
    snprintf(why, len, "SEL_WG=%d exceeds the device's work-group limit %zu", wg, ctx->caps.max_wg);
    return 0;
  }
  /* cl/select.cl sel_scratch: per work-item a padded 16-bucket column (66 bytes), a share of
   * the bucket sums (4), two scalars (8), its decision bits (8) and up to 8 bytes of the
   * row's decision words (SEL_PT <= 64). */
  size_t local = 96u * (size_t)wg;
  if (local > ctx->caps.local_mem) {
    snprintf(why, len, "needs %zu bytes of local memory, the device has %llu", local,
             (unsigned long long)ctx->caps.local_mem);
    return 0;
  }
  return 1;
}

/* MAP_BLAS=1 only where CLBlast can be opened. */
static int blas_allowed(nabla_context *ctx, int value) { return value == 0 || nabla_blas_available(ctx); }

/* The selection kernel with its default rows-per-work-item split (mask.c adds SEL_TPR/SEL_PT
 * for the problem's row length; those do not change the work-group size). */
static nabla_status select_build(nabla_context *ctx, nabla_dtype dtype, int head_dim,
                                 const nabla_params *params, cl_kernel *kernel, size_t *wg) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  char options[512];
  snprintf(options, sizeof options, "%s", nabla_dtype_define(dtype));
  nabla_params_options(params, options, sizeof options);
  TRY(st, nabla_program_get(ctx, "select", options, &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "select_cdf", kernel));
  *wg = (size_t)nabla_params_get(params, "SEL_WG", 256);
done:
  return st;
}

/* ---- the spaces ------------------------------------------------------------------------ */

static const nabla_kernel_space kernel_spaces[] = {
    {"attention",
     {{"TILE_D", 16, 3, {8, 16, 32}, NULL, "head-dim columns of Q and K per staged item of Q·Kᵀ (double-buffered)"},
      {"TILE_V", 16, 4, {4, 8, 16, 32}, NULL, "keys of V (and columns of P) per staged item of P·V (double-buffered)"},
      /* automatic, then every variant but the test aids (variants/registry.h), each only where
       * its probe passed */
      {"VARIANT", NABLA_VARIANT_AUTO, NABLA_VARIANT_CANDIDATE_COUNT, {NABLA_VARIANT_CANDIDATES},
       nabla_variant_tunable_allowed,
       "attention kernel: " NABLA_VARIANT_CANDIDATE_HELP " (TILE_D/TILE_V shape the portable one)"}},
     attention_fits,
     attention_build,
     "TILE_D a multiple of 8, TILE_V a multiple of 4, 64 % TILE_V == 0; with TD = min(TILE_D, HEAD_DIM): "
     "4*(2*max(2*64*(TD+4), TILE_V*HEAD_DIM + 64*(TILE_V+4)) + 64*20) bytes (64*(2*TD+4) for the first term and "
     "64*16 for the last with 256 work-items) <= CL_DEVICE_LOCAL_MEM_SIZE; work-groups of 128 (256 on AMD GPUs): CL_KERNEL_WORK_GROUP_SIZE at "
     "least that; a VARIANT only where its probe passed"},
    {"select",
     {{"SEL_WG", 256, 4, {32, 64, 128, 256}, NULL, "work-items per work-group of the softmax + CDF selection (32 per row)"},
      {"MAP_BLAS", 0, 2, {0, 1}, blas_allowed, "reduced map: 0 the map kernel, 1 CLBlast's batched GEMM (where libclblast.so.1 is installed)"}},
     select_fits,
     select_build,
     "SEL_WG a power of two, 32 <= SEL_WG <= CL_DEVICE_MAX_WORK_GROUP_SIZE and <= "
     "CL_KERNEL_WORK_GROUP_SIZE; 96*SEL_WG bytes <= CL_DEVICE_LOCAL_MEM_SIZE; MAP_BLAS=1 where libclblast.so.1 opens"},
};

/* Built-in defaults per device class, used when nothing is tuned. Parameters not named keep
 * their reference value; a default that does not fit the device falls back to the reference. */
typedef struct {
  int vendor;   /* NABLA_VENDOR_* or -1 for any */
  int is_cpu;   /* -1 any */
  const char *kernel;
  const char *origin;
  const char *values;  /* "NAME=value ..." */
} builtin_default;

static const builtin_default builtin_defaults[] = {
    {-1, 1, "attention", "default-cpu", "TILE_D=16 TILE_V=16"},
    {-1, 1, "select", "default-cpu", "SEL_WG=64"},
    {NABLA_VENDOR_NVIDIA, 0, "attention", "default-gpu-nvidia", "TILE_D=32 TILE_V=16"},
    {NABLA_VENDOR_NVIDIA, 0, "select", "default-gpu-nvidia", "SEL_WG=256"},
    /* With the work-groups of 256 (nabla_attention_work_group): 14 KiB of local memory at head
     * dims 64 and 128, room for four work-groups per compute unit (docs/variants.md). */
    {NABLA_VENDOR_AMD, 0, "attention", "default-gpu-amd", "TILE_D=8 TILE_V=4"},
    {NABLA_VENDOR_AMD, 0, "select", "default-gpu-amd", "SEL_WG=256"},
    {NABLA_VENDOR_INTEL, 0, "attention", "default-gpu-intel", "TILE_D=16 TILE_V=16"},
    {NABLA_VENDOR_INTEL, 0, "select", "default-gpu-intel", "SEL_WG=128"},
    {-1, 0, "attention", "default-gpu", "TILE_D=16 TILE_V=16"},
    {-1, 0, "select", "default-gpu", "SEL_WG=256"},
};

typedef struct {
  char *key;
  nabla_params params;
} memo_entry;

#define MEMO_CAP 64

struct nabla_tuning {
  int count;
  memo_entry entries[MEMO_CAP];
};

const nabla_kernel_space *nabla_kernel_space_find(const char *kernel) {
  if (!kernel) return NULL;
  for (size_t i = 0; i < sizeof kernel_spaces / sizeof kernel_spaces[0]; i++)
    if (strcmp(kernel_spaces[i].kernel, kernel) == 0) return &kernel_spaces[i];
  return NULL;
}

const nabla_kernel_space *nabla_kernel_space_at(size_t i) {
  return i < sizeof kernel_spaces / sizeof kernel_spaces[0] ? &kernel_spaces[i] : NULL;
}

const char *nabla_shape_class(const nabla_shape *shape) {
  double work = (double)shape->batch * shape->heads * shape->seq;
  if (work <= 65536.0) return "small";
  if (work <= 4194304.0) return "medium";
  return "large";
}

void nabla_tuning_key(const nabla_context *ctx, const char *kernel, nabla_dtype dtype,
                      int head_dim, const char *shape_class, char *buf, size_t len) {
  snprintf(buf, len, "%s|%s|%s|d%d|%s", ctx->device_key, kernel, nabla_dtype_name(dtype), head_dim,
           shape_class);
}

void nabla_params_reference(const nabla_kernel_space *space, nabla_params *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < NABLA_MAX_PARAMS && space->params[i].name; i++) {
    out->names[i] = space->params[i].name;
    out->values[i] = space->params[i].reference;
    out->count = i + 1;
  }
  snprintf(out->origin, sizeof out->origin, "reference");
}

static int is_candidate(const nabla_tunable *t, int v) {
  for (int c = 0; c < t->count && c < NABLA_MAX_CANDIDATES; c++)
    if (t->candidates[c] == v) return 1;
  return 0;
}

int nabla_params_valid(nabla_context *ctx, const nabla_kernel_space *space, int head_dim,
                       const nabla_params *params, char *why, size_t len) {
  char scratch[8];
  if (!why) why = scratch, len = sizeof scratch;
  why[0] = '\0';
  int n = 0;
  while (n < NABLA_MAX_PARAMS && space->params[n].name) n++;
  if (params->count != n) {
    snprintf(why, len, "%d parameters, the space has %d", params->count, n);
    return 0;
  }
  for (int i = 0; i < n; i++) {
    const nabla_tunable *t = &space->params[i];
    if (!params->names[i] || strcmp(params->names[i], t->name) != 0) {
      snprintf(why, len, "parameter %d is not %s", i, t->name);
      return 0;
    }
    if (!is_candidate(t, params->values[i])) {
      snprintf(why, len, "%s=%d is not a candidate", t->name, params->values[i]);
      return 0;
    }
    if (t->allowed && !t->allowed(ctx, params->values[i])) {
      snprintf(why, len, "%s=%d is not available on this device", t->name, params->values[i]);
      return 0;
    }
  }
  return space->fits ? space->fits(ctx, head_dim, params, why, len) : 1;
}

/* Sets NAME=value pairs of `text` in `p` (names must exist in p). 0 on a malformed text. */
static int apply_values(const char *text, nabla_params *p) {
  const char *s = text;
  while (*s) {
    while (*s == ' ') s++;
    if (!*s) break;
    const char *eq = strchr(s, '=');
    if (!eq) return 0;
    char *end = NULL;
    long v = strtol(eq + 1, &end, 10);
    if (end == eq + 1) return 0;
    int found = 0;
    for (int i = 0; i < p->count; i++)
      if (strlen(p->names[i]) == (size_t)(eq - s) && strncmp(p->names[i], s, (size_t)(eq - s)) == 0) {
        p->values[i] = (int)v;
        found = 1;
      }
    if (!found) return 0;
    s = end;
  }
  return 1;
}

void nabla_params_builtin(nabla_context *ctx, const nabla_kernel_space *space, int head_dim,
                          nabla_params *out) {
  nabla_params_reference(space, out);
  for (size_t i = 0; i < sizeof builtin_defaults / sizeof builtin_defaults[0]; i++) {
    const builtin_default *d = &builtin_defaults[i];
    if (strcmp(d->kernel, space->kernel) != 0) continue;
    if (d->vendor >= 0 && d->vendor != ctx->caps.vendor) continue;
    if (d->is_cpu >= 0 && d->is_cpu != ctx->caps.is_cpu) continue;
    nabla_params p = *out;
    if (!apply_values(d->values, &p) || !nabla_params_valid(ctx, space, head_dim, &p, NULL, 0)) return;
    snprintf(p.origin, sizeof p.origin, "%s", d->origin);
    *out = p;
    return;
  }
}

/* An integer-valued JSON number within int range. */
static int json_int(const cJSON *item, int *out) {
  if (!cJSON_IsNumber(item)) return 0;
  double v = item->valuedouble;
  if (!(v >= -2147483648.0 && v <= 2147483647.0) || v != floor(v)) return 0;
  *out = (int)v;
  return 1;
}

static int json_string_is(const cJSON *obj, const char *name, const char *want) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(item) && item->valuestring && strcmp(item->valuestring, want) == 0;
}

int nabla_tuning_load(nabla_context *ctx, const nabla_kernel_space *space, nabla_dtype dtype,
                      int head_dim, const char *shape_class, nabla_params *out, double *ms,
                      int *full) {
  void *data = NULL;
  size_t len = 0;
  int ok = 0, value = 0;
  cJSON *root = NULL;
  char key[256];
  if (!ctx->cache_root[0]) return 0;
  nabla_tuning_key(ctx, space->kernel, dtype, head_dim, shape_class, key, sizeof key);
  if (nabla_diskcache_get(ctx->cache_root, NABLA_TUNING_NS, key, &data, &len) != NABLA_OK) return 0;
  root = cJSON_ParseWithLength(data, len);
  if (!cJSON_IsObject(root)) goto done;
  if (!json_int(cJSON_GetObjectItemCaseSensitive(root, "schema"), &value) || value != NABLA_TUNING_SCHEMA)
    goto done;
  if (!json_string_is(root, "kernel", space->kernel) || !json_string_is(root, "dtype", nabla_dtype_name(dtype)) ||
      !json_string_is(root, "shape_class", shape_class))
    goto done;
  if (!json_int(cJSON_GetObjectItemCaseSensitive(root, "head_dim"), &value) || value != head_dim) goto done;
  const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "params");
  if (!cJSON_IsObject(params)) goto done;
  nabla_params p;
  nabla_params_reference(space, &p);
  if (cJSON_GetArraySize(params) != p.count) goto done; /* unknown extra parameters: a miss */
  for (int i = 0; i < p.count; i++)
    if (!json_int(cJSON_GetObjectItemCaseSensitive(params, p.names[i]), &p.values[i])) goto done;
  if (!nabla_params_valid(ctx, space, head_dim, &p, NULL, 0)) goto done;
  snprintf(p.origin, sizeof p.origin, "tuned");
  *out = p;
  if (ms) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "ms");
    *ms = cJSON_IsNumber(m) ? m->valuedouble : -1.0;
  }
  if (full) *full = json_string_is(root, "mode", "full");
  ok = 1;
done:
  cJSON_Delete(root);
  free(data);
  return ok;
}

void nabla_params_lookup(nabla_context *ctx, const char *kernel, nabla_dtype dtype, int head_dim,
                         const char *shape_class, nabla_params *out) {
  const nabla_kernel_space *space = nabla_kernel_space_find(kernel);
  memset(out, 0, sizeof *out);
  if (!space) {
    snprintf(out->origin, sizeof out->origin, "fixed");
    return;
  }
  char key[256];
  nabla_tuning_key(ctx, kernel, dtype, head_dim, shape_class, key, sizeof key);
  struct nabla_tuning *memo = ctx->tuning;
  if (!memo) memo = ctx->tuning = calloc(1, sizeof *memo);
  for (int i = 0; memo && i < memo->count; i++)
    if (strcmp(memo->entries[i].key, key) == 0) {
      *out = memo->entries[i].params;
      return;
    }
  if (!nabla_tuning_load(ctx, space, dtype, head_dim, shape_class, out, NULL, NULL))
    nabla_params_builtin(ctx, space, head_dim, out);
  if (memo && memo->count < MEMO_CAP && (memo->entries[memo->count].key = strdup(key))) {
    memo->entries[memo->count].params = *out;
    memo->count++;
  }
}

void nabla_params_options(const nabla_params *params, char *buf, size_t len) {
  size_t off = strlen(buf);
  for (int i = 0; i < params->count && off < len; i++) {
    int n = snprintf(buf + off, len - off, " -D%s=%d", params->names[i], params->values[i]);
    if (n < 0) break;
    off += (size_t)n;
  }
}

void nabla_params_text(const nabla_params *params, char *buf, size_t len) {
  size_t off = 0;
  if (!len) return;
  buf[0] = '\0';
  for (int i = 0; i < params->count && off < len; i++) {
    int n = snprintf(buf + off, len - off, "%s%s=%d", i ? " " : "", params->names[i], params->values[i]);
    if (n < 0) break;
    off += (size_t)n;
  }
}

int nabla_params_get(const nabla_params *params, const char *name, int fallback) {
  for (int i = 0; i < params->count; i++)
    if (strcmp(params->names[i], name) == 0) return params->values[i];
  return fallback;
}

nabla_status nabla_params_build_check(nabla_context *ctx, const nabla_kernel_space *space,
                                      nabla_dtype dtype, int head_dim, const nabla_params *params) {
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  size_t wg = 0, need = 1;
  cl_ulong local = 0;
  TRY(st, space->build(ctx, dtype, head_dim, params, &kernel, &need));
  TRY_CL(st, ctx, clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg, NULL));
  TRY_CL(st, ctx, clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof local, &local, NULL));
  if (wg < need) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "CL_KERNEL_WORK_GROUP_SIZE %zu < %zu work-items", wg, need);
    goto done;
  }
  if (local > ctx->caps.local_mem) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "CL_KERNEL_LOCAL_MEM_SIZE %llu > the device's %llu bytes",
                    (unsigned long long)local, (unsigned long long)ctx->caps.local_mem);
    goto done;
  }
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

void nabla_tuning_free(struct nabla_tuning *tuning) {
  if (!tuning) return;
  for (int i = 0; i < tuning->count; i++) free(tuning->entries[i].key);
  free(tuning);
}

void nabla_tuning_forget(nabla_context *ctx) {
  nabla_tuning_free(ctx->tuning);
  ctx->tuning = NULL;
}

nabla_status nabla_config_describe(nabla_context *ctx, const char *stage, const nabla_shape *shape,
                                   nabla_dtype dtype, char *buf, size_t len) {
  if (!ctx || !stage || !shape || !buf || !len) return NABLA_INVALID_ARGUMENT;
  if (!nabla_kernel_space_find(stage))
    return nabla_fail(ctx, NABLA_NOT_FOUND, "no tunable stage named \"%s\"", stage);
  nabla_params params;
  nabla_params_lookup(ctx, stage, dtype, shape->head_dim, nabla_shape_class(shape), &params);
  nabla_params_text(&params, buf, len);
  size_t off = strlen(buf);
  if (off + 1 < len) snprintf(buf + off, len - off, " (%s)", params.origin);
  return NABLA_OK;
}
