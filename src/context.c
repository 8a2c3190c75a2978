/* The nabla context: owned or borrowed OpenCL objects, cache locations, last error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "diskcache.h"
#include "internal.h"
#include "knobs.h"
#include "variant.h"
#include "tune.h"

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t err_len, const char *fmt, ...) {
  if (!err || !err_len) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

/* Everything after the OpenCL objects exist: capabilities, key, cache and kernel dirs. */
static nabla_status finish_context(nabla_context *ctx, char *err, size_t err_len) {
  nabla_status st = nabla_device_caps_query(ctx);
  if (st != NABLA_OK) {
    set_err(err, err_len, "%s", ctx->error);
    return st;
  }
  char why[sizeof ctx->cache_note - 32];
  if (nabla_diskcache_root(ctx->cache_root, sizeof ctx->cache_root) &&
      nabla_diskcache_root_check(ctx->cache_root, why, sizeof why) != 0) {
    /* Not an error: the library runs without a cache, and says why once per context. */
    snprintf(ctx->cache_note, sizeof ctx->cache_note, "disk cache off: %s", why);
    ctx->cache_root[0] = '\0';
  }
  st = nabla_knobs_from_env(ctx, err, err_len);
  if (st != NABLA_OK) return st;
  const char *kdir = getenv("NABLACL_KERNEL_DIR");
  struct stat sb;
  if (kdir && *kdir) { /* a typo must not silently run the embedded kernels instead */
    if (stat(kdir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      set_err(err, err_len, "NABLACL_KERNEL_DIR=%s is not a directory", kdir);
      return NABLA_INVALID_ARGUMENT;
    }
    if (snprintf(ctx->kernel_dir, sizeof ctx->kernel_dir, "%s", kdir) >= (int)sizeof ctx->kernel_dir) {
      set_err(err, err_len, "NABLACL_KERNEL_DIR is longer than %zu bytes", sizeof ctx->kernel_dir - 1);
      return NABLA_INVALID_ARGUMENT;
    }
  }
  return NABLA_OK;
}

nabla_status nabla_context_create(nabla_context **out, const char *selector, char *err,
                                  size_t err_len) {
  nabla_status st = NABLA_OK;
  nabla_context *ctx = NULL;
  cl_platform_id plat = NULL;
  cl_device_id dev = NULL;
  cl_int rc = CL_SUCCESS;
  if (!out) {
    set_err(err, err_len, "nabla_context_create: out is NULL");
    return NABLA_INVALID_ARGUMENT;
  }
  *out = NULL;
  TRY(st, nabla_device_select(selector, &plat, &dev, err, err_len));
  ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    set_err(err, err_len, "out of memory");
    st = NABLA_OUT_OF_MEMORY;
    goto done;
  }
  ctx->device = dev;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)plat, 0};
  ctx->cl_ctx = clCreateContext(props, 1, &dev, NULL, NULL, &rc);
  if (rc != CL_SUCCESS) {
    set_err(err, err_len, "clCreateContext failed: %s", nabla_cl_error_name(rc));
    st = NABLA_OPENCL;
    goto done;
  }
  ctx->queue = clCreateCommandQueue(ctx->cl_ctx, dev, CL_QUEUE_PROFILING_ENABLE, &rc);
  if (rc != CL_SUCCESS) {
    set_err(err, err_len, "clCreateCommandQueue failed: %s", nabla_cl_error_name(rc));
    st = NABLA_OPENCL;
    goto done;
  }
  TRY(st, finish_context(ctx, err, err_len));
  *out = ctx;
  ctx = NULL;
done:
  nabla_context_destroy(ctx);
  return st;
}

nabla_status nabla_context_create_from_cl(nabla_context **out, cl_context cl_ctx,
                                          cl_device_id device, cl_command_queue queue, char *err,
                                          size_t err_len) {
  nabla_status st = NABLA_OK;
  nabla_context *ctx = NULL;
  if (out) *out = NULL;
  if (!out || !cl_ctx || !device || !queue) {
    set_err(err, err_len, "nabla_context_create_from_cl: out, cl_ctx, device and queue must not be NULL");
    return NABLA_INVALID_ARGUMENT;
  }
  *out = NULL;
  cl_context qctx = NULL;
  cl_device_id qdev = NULL;
  if (clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL) != CL_SUCCESS ||
      clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL) != CL_SUCCESS ||
      qctx != cl_ctx || qdev != device) {
    set_err(err, err_len, "nabla_context_create_from_cl: the queue does not belong to cl_ctx and device");
    return NABLA_INVALID_ARGUMENT;
  }
  cl_command_queue_properties props = 0;
  if (clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL) != CL_SUCCESS ||
      (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)) {
    set_err(err, err_len, "nabla_context_create_from_cl: the queue must be in-order (the library relies on queue order)");
    return NABLA_INVALID_ARGUMENT;
  }
  ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    set_err(err, err_len, "out of memory");
    return NABLA_OUT_OF_MEMORY;
  }
  ctx->cl_ctx = cl_ctx;
  ctx->device = device;
  ctx->queue = queue;
  clRetainContext(cl_ctx);
  clRetainCommandQueue(queue);
  TRY(st, finish_context(ctx, err, err_len));
  *out = ctx;
  ctx = NULL;
done:
  nabla_context_destroy(ctx);
  return st;
}

nabla_status nabla_context_trim(nabla_context *ctx, size_t *freed) {
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  size_t bytes = 0;
  for (int i = 0; i < NABLA_WS_COUNT; i++) bytes += ctx->workspace.bytes[i];
  nabla_workspace_release(ctx);
  if (freed) *freed = bytes;
  return NABLA_OK;
}

void nabla_context_destroy(nabla_context *ctx) {
  if (!ctx) return;
  if (ctx->queue) clFinish(ctx->queue);
  nabla_profile_release(ctx);
  nabla_workspace_release(ctx);
  nabla_variants_release(ctx);
  nabla_blas_release(ctx);
  nabla_programs_release(ctx);
  nabla_tuning_free(ctx->tuning);
  if (ctx->queue) clReleaseCommandQueue(ctx->queue);
  if (ctx->cl_ctx) clReleaseContext(ctx->cl_ctx);
  free(ctx);
}

cl_context nabla_context_cl_context(const nabla_context *ctx) { return ctx ? ctx->cl_ctx : NULL; }
cl_device_id nabla_context_device(const nabla_context *ctx) { return ctx ? ctx->device : NULL; }
cl_command_queue nabla_context_queue(const nabla_context *ctx) { return ctx ? ctx->queue : NULL; }

const char *nabla_context_cache_dir(const nabla_context *ctx) {
  return ctx && ctx->cache_root[0] ? ctx->cache_root : NULL;
}

const char *nabla_context_cache_note(const nabla_context *ctx) { return ctx ? ctx->cache_note : ""; }

const char *nabla_context_device_key(const nabla_context *ctx) { return ctx ? ctx->device_key : ""; }
