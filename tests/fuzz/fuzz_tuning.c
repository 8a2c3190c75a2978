/*
 * libFuzzer harness: the tuning cache's JSON (nabla_tuning_load, src/tune.c, and the listing in
 * src/cache.c). The first byte picks the lookup (kernel, dtype, head dim, shape class); the rest
 * is the entry's payload, stored under that lookup's key in a scratch cache of a context that
 * has no OpenCL objects: every variant probe is marked done (not supported), so validation
 * never reaches a device. A loaded entry must hold exactly the kernel's tunables, each a
 * candidate value (docs/cache-format.md, "Validation on read").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diskcache.h"
#include "internal.h"
#include "tune.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static nabla_context *fake_context(void) {
  nabla_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) abort();
  const char *tmp = getenv("TMPDIR");
  snprintf(ctx->cache_root, sizeof ctx->cache_root, "%s/fuzz_tuning.%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
  mkdir(ctx->cache_root, 0700);
  snprintf(ctx->device_key, sizeof ctx->device_key, "3284d71ab95b57ffe8135bbe2450f762");
  snprintf(ctx->device_desc, sizeof ctx->device_desc, "fuzz|platform|device|vendor|driver|version");
  ctx->caps.local_mem = 65536;
  ctx->caps.max_wg = 1024;
  ctx->caps.is_cpu = 1;
  for (int i = 0; i < NABLA_VARIANT_SLOTS; i++) {
    ctx->variants.probe[i].probed = 1;
    ctx->variants.probe[i].supported = i == 0 || i == 3; /* portable, cpu-rows */
  }
  return ctx;
}

static int list_visit(const nabla_cache_entry *e, void *user) {
  (void)user;
  if (!e->key || !e->params || !e->dtype || !e->shape_class || !e->date) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static nabla_context *ctx;
  if (!ctx) ctx = fake_context();
  if (size < 1) return 0;
  static const char *const kernels[] = {"attention", "select"};
  static const char *const classes[] = {"small", "medium", "large"};
  static const int dims[] = {64, 128, 32, 256};
  const char *kernel = kernels[data[0] & 1];
  const nabla_dtype dtype = (nabla_dtype)((data[0] >> 1) % 3);
  const int head_dim = dims[(data[0] >> 3) & 3];
  const char *cls = classes[(data[0] >> 5) % 3];
  const nabla_kernel_space *space = nabla_kernel_space_find(kernel);
  if (!space) abort();
  char key[256];
  nabla_tuning_key(ctx, kernel, dtype, head_dim, cls, key, sizeof key);
  if (nabla_diskcache_put(ctx->cache_root, NABLA_TUNING_NS, key, data + 1, size - 1) != NABLA_OK) return 0;
  nabla_params p;
  double ms = 0;
  int full = 0;
  if (nabla_tuning_load(ctx, space, dtype, head_dim, cls, &p, &ms, &full)) {
    if (!nabla_params_valid(ctx, space, head_dim, &p, NULL, 0)) abort();
  }
  nabla_cache_list(ctx->cache_root, list_visit, NULL);
  nabla_diskcache_clear(ctx->cache_root);
  return 0;
}
