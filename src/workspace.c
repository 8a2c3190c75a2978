/* Device buffers the library allocates: one creation path with its limit check, and the
 * scratch buffers reused across calls (see nabla_workspace in internal.h). */
#include "internal.h"

nabla_status nabla_buffer_new(nabla_context *ctx, size_t bytes, const char *what, cl_mem *out) {
  cl_int rc = CL_SUCCESS;
  if (bytes > ctx->caps.max_alloc)
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "%s needs %zu bytes, over the device's max allocation %llu",
                      what, bytes, (unsigned long long)ctx->caps.max_alloc);
  *out = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &rc);
  if (rc != CL_SUCCESS)
    return nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "clCreateBuffer(%s, %zu bytes) failed: %s", what,
                      bytes, nabla_cl_error_name(rc));
  return NABLA_OK;
}

nabla_status nabla_workspace_get(nabla_context *ctx, nabla_workspace_slot slot, size_t bytes,
                                 const char *what, cl_mem *out) {
  nabla_workspace *ws = &ctx->workspace;
  if (ws->mem[slot] && ws->bytes[slot] >= bytes) {
    *out = ws->mem[slot];
    return NABLA_OK;
  }
  /* Commands already enqueued keep the old buffer alive until they finish. */
  if (ws->mem[slot]) clReleaseMemObject(ws->mem[slot]);
  ws->mem[slot] = NULL;
  ws->bytes[slot] = 0;
  nabla_status st = nabla_buffer_new(ctx, bytes, what, &ws->mem[slot]);
  if (st != NABLA_OK) {
    ws->mem[slot] = NULL;
    return st;
  }
  ws->bytes[slot] = bytes;
  *out = ws->mem[slot];
  return NABLA_OK;
}

void nabla_workspace_release(nabla_context *ctx) {
  for (int i = 0; i < NABLA_WS_COUNT; i++) {
    if (ctx->workspace.mem[i]) clReleaseMemObject(ctx->workspace.mem[i]);
    ctx->workspace.mem[i] = NULL;
    ctx->workspace.bytes[i] = 0;
  }
}
