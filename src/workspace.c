/* Device buffers the library allocates: one creation path with its limit check, the scratch
 * buffers reused across calls, and the last shape's block layout (see nabla_workspace in
 * internal.h). */
#include <stdlib.h>
#include <string.h>

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
  nabla_workspace_free(ctx, slot);
  nabla_status st = nabla_buffer_new(ctx, bytes, what, &ws->mem[slot]);
  if (st != NABLA_OK) {
    ws->mem[slot] = NULL;
    return st;
  }
  ws->bytes[slot] = bytes;
  *out = ws->mem[slot];
  return NABLA_OK;
}

void nabla_workspace_free(nabla_context *ctx, nabla_workspace_slot slot) {
  nabla_workspace *ws = &ctx->workspace;
  /* Commands already enqueued keep the buffer alive until they finish. */
  if (ws->mem[slot]) clReleaseMemObject(ws->mem[slot]);
  ws->mem[slot] = NULL;
  ws->bytes[slot] = 0;
}

void nabla_workspace_release(nabla_context *ctx) {
  for (int i = 0; i < NABLA_WS_COUNT; i++) nabla_workspace_free(ctx, (nabla_workspace_slot)i);
  if (ctx->workspace.starts) clReleaseMemObject(ctx->workspace.starts);
  ctx->workspace.starts = NULL;
}

nabla_status nabla_block_starts_buffer(nabla_context *ctx, const nabla_shape *shape, cl_mem *out) {
  nabla_workspace *ws = &ctx->workspace;
  const int key[4] = {shape->seq, shape->grid_t, shape->grid_h, shape->grid_w};
  if (ws->starts && memcmp(key, ws->starts_shape, sizeof key) == 0) {
    clRetainMemObject(ws->starts);
    *out = ws->starts;
    return NABLA_OK;
  }
  int nb = nabla_shape_blocks(shape);
  size_t n = (size_t)nb + 1;
  int32_t small[1025];
  int32_t *starts = n <= 1025 ? small : malloc(n * sizeof *starts);
  nabla_status st = NABLA_OK;
  cl_int rc = CL_SUCCESS;
  if (!starts) return nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
  TRY(st, nabla_shape_block_starts(shape, starts, n));
  cl_mem mem = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * sizeof *starts, starts, &rc);
  if (rc != CL_SUCCESS) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "clCreateBuffer(block_start) failed: %s", nabla_cl_error_name(rc));
    goto done;
  }
  if (ws->starts) clReleaseMemObject(ws->starts); /* enqueued commands and masks hold their own */
  ws->starts = mem;
  memcpy(ws->starts_shape, key, sizeof key);
  clRetainMemObject(mem);
  *out = mem;
done:
  if (starts != small) free(starts);
  return st;
}
