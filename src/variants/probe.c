/* Shared probe machinery: a probe kernel's launch, the verdict cache and error keeping. */
#include "probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskcache.h"
#include "kernels.h"
#include "registry.h"

/* Bump when the probes change meaning, so cached verdicts are not reused. */
#define PROBE_VERSION 3

static cl_mem probe_buffer(nabla_context *ctx, size_t bytes, const void *init) {
  cl_int rc = CL_SUCCESS;
  cl_mem m = clCreateBuffer(ctx->cl_ctx, init ? CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                            bytes, (void *)init, &rc);
  return rc == CL_SUCCESS ? m : NULL;
}

nabla_probe_verdict nabla_probe_launch(nabla_context *ctx, const char *program, const char *options,
                                       const char *kernel, size_t items, int nbuf, const size_t *bytes,
                                       void **host, const int *readback, char *why, size_t why_len) {
  nabla_probe_verdict v = NABLA_PROBE_ERROR;
  cl_program prog = NULL;
  cl_kernel k = NULL;
  cl_mem bufs[8] = {0};
  if (nbuf > 8) {
    snprintf(why, why_len, "probe kernel %s: too many buffers", kernel);
    return NABLA_PROBE_ERROR;
  }
  nabla_status built = nabla_program_get(ctx, program, options, &prog);
  if (built != NABLA_OK) {
    snprintf(why, why_len, "probe kernel %s does not build: %.300s", kernel, ctx->error);
    /* A compiler that rejects the code will keep rejecting it; anything else may pass later. */
    return built == NABLA_BUILD ? NABLA_PROBE_FAIL : NABLA_PROBE_ERROR;
  }
  if (nabla_kernel_create(ctx, prog, kernel, &k) != NABLA_OK) {
    snprintf(why, why_len, "%.300s", ctx->error);
    return NABLA_PROBE_FAIL;
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
    /* A launch refused for the kernel's sake (e.g. invalid assembly only found at run time)
     * would repeat; an out-of-resources error might not. Both count as "not now". */
    snprintf(why, why_len, "probe kernel %s failed to run: %s", kernel, nabla_cl_error_name(rc));
    goto done;
  }
  v = NABLA_PROBE_PASS;
done:
  for (int i = 0; i < nbuf; i++)
    if (bufs[i]) clReleaseMemObject(bufs[i]);
  if (k) clReleaseKernel(k);
  return v;
}

/* Key of a variant's probe verdict in the "probes" namespace: the variant, the device, and a
 * hash of the embedded kernel sources (the probes' among them). */
static void probe_cache_key(const nabla_context *ctx, int id, char *buf, size_t len) {
  uint64_t h = PROBE_VERSION;
  for (size_t i = 0; i < nabla_kernel_source_count; i++)
    h = nabla_hash64(nabla_kernel_sources[i].text, nabla_kernel_sources[i].size, h);
  snprintf(buf, len, "%s|probe v%d|%s|src %016llx", nabla_variant_name(id), PROBE_VERSION, ctx->device_key,
           (unsigned long long)h);
}

int nabla_probe_cache_get(nabla_context *ctx, int id, char *text, size_t len) {
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

void nabla_probe_cache_put(nabla_context *ctx, int id, const char *text) {
  char key[128];
  if (!ctx->cache_root[0] || ctx->kernel_dir[0]) return; /* verdicts of edited kernels are not kept */
  probe_cache_key(ctx, id, key, sizeof key);
  nabla_diskcache_put(ctx->cache_root, "probes", key, text, strlen(text));
}

void nabla_probe_cache_why(const char *text, nabla_variant_probe *pr) {
  const char *w = strstr(text, "why=");
  snprintf(pr->why, sizeof pr->why, "%s", w ? w + 4 : "");
}

void nabla_probe_save(const nabla_context *ctx, nabla_probe_saved *saved) {
  memcpy(saved->error, ctx->error, sizeof saved->error);
}

void nabla_probe_restore(nabla_context *ctx, const nabla_probe_saved *saved) {
  memcpy(ctx->error, saved->error, sizeof saved->error);
}
