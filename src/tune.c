/* Tunable spaces and the lookup of tuned parameters (cache -> device-type default -> reference). */
#include "tune.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskcache.h"

static const nabla_kernel_space kernel_spaces[] = {
    {"attention", {{"TILE_D", 16, {8, 16, 32, 0}}, {"TILE_V", 16, {8, 16, 32, 0}}}},
    {"select", {{"SEL_WG", 256, {64, 128, 256, 0}}}},
};

/* Built-in defaults per device class, used when nothing is tuned. */
typedef struct {
  int vendor;   /* NABLA_VENDOR_* or -1 for any */
  int is_cpu;   /* -1 any */
  const char *kernel;
  const char *origin;
  int values[NABLA_MAX_PARAMS];
} builtin_default;

static const builtin_default builtin_defaults[] = {
    {-1, 1, "attention", "default-cpu", {16, 16}},
    {-1, 1, "select", "default-cpu", {64}},
    {NABLA_VENDOR_NVIDIA, 0, "attention", "default-gpu-nvidia", {16, 16}},
    {NABLA_VENDOR_NVIDIA, 0, "select", "default-gpu-nvidia", {256}},
};

typedef struct {
  char *key;
  nabla_params params;
} memo_entry;

struct nabla_tuning {
  int count;
  memo_entry entries[64];
};

const nabla_kernel_space *nabla_kernel_space_find(const char *kernel) {
  for (size_t i = 0; i < sizeof kernel_spaces / sizeof kernel_spaces[0]; i++)
    if (strcmp(kernel_spaces[i].kernel, kernel) == 0) return &kernel_spaces[i];
  return NULL;
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

static void reference_params(const nabla_kernel_space *space, nabla_params *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < NABLA_MAX_PARAMS && space->params[i].name; i++) {
    out->names[i] = space->params[i].name;
    out->values[i] = space->params[i].reference;
    out->count = i + 1;
  }
  snprintf(out->origin, sizeof out->origin, "reference");
}

static int is_candidate(const nabla_tunable *t, int v) {
  for (int c = 0; c < NABLA_MAX_CANDIDATES && t->candidates[c]; c++)
    if (t->candidates[c] == v) return 1;
  return 0;
}

/* Reads a tuned entry: {"params": {"NAME": value, ...}, ...}. Unknown or out-of-space values
 * make the entry invalid (a miss), so a stale or hostile file cannot inject build options. */
static int load_tuned(const nabla_context *ctx, const nabla_kernel_space *space, const char *key,
                      nabla_params *out) {
  void *data = NULL;
  size_t len = 0;
  int ok = 0;
  cJSON *root = NULL;
  if (!ctx->cache_root[0] || nabla_diskcache_get(ctx->cache_root, "tuning", key, &data, &len) != NABLA_OK)
    return 0;
  root = cJSON_ParseWithLength(data, len);
  cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "params");
  if (!cJSON_IsObject(params)) goto done;
  nabla_params p;
  reference_params(space, &p);
  for (int i = 0; i < p.count; i++) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(params, p.names[i]);
    if (!cJSON_IsNumber(v) || !is_candidate(&space->params[i], v->valueint)) goto done;
    p.values[i] = v->valueint;
  }
  snprintf(p.origin, sizeof p.origin, "tuned");
  *out = p;
  ok = 1;
done:
  cJSON_Delete(root);
  free(data);
  return ok;
}

static void builtin_params(const nabla_context *ctx, const nabla_kernel_space *space, nabla_params *out) {
  reference_params(space, out);
  for (size_t i = 0; i < sizeof builtin_defaults / sizeof builtin_defaults[0]; i++) {
    const builtin_default *d = &builtin_defaults[i];
    if (strcmp(d->kernel, space->kernel) != 0) continue;
    if (d->vendor >= 0 && d->vendor != ctx->caps.vendor) continue;
    if (d->is_cpu >= 0 && d->is_cpu != ctx->caps.is_cpu) continue;
    for (int p = 0; p < out->count; p++) out->values[p] = d->values[p];
    snprintf(out->origin, sizeof out->origin, "%s", d->origin);
    return;
  }
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
  if (!load_tuned(ctx, space, key, out)) builtin_params(ctx, space, out);
  if (memo && memo->count < 64 && (memo->entries[memo->count].key = strdup(key))) {
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

int nabla_params_get(const nabla_params *params, const char *name, int fallback) {
  for (int i = 0; i < params->count; i++)
    if (strcmp(params->names[i], name) == 0) return params->values[i];
  return fallback;
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
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < params.count && off < len; i++) {
    int n = snprintf(buf + off, len - off, "%s%s=%d", i ? " " : "", params.names[i], params.values[i]);
    if (n < 0) break;
    off += (size_t)n;
  }
  if (off < len) snprintf(buf + off, len - off, " (%s)", params.origin);
  return NABLA_OK;
}
