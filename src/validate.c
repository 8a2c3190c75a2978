/* Argument checks shared by the operations: everything is checked before anything is enqueued. */
#include <math.h>
#include <stdio.h>

#include "internal.h"

nabla_status nabla_check_common(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                cl_uint num_wait, const cl_event *wait) {
  char why[256];
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  if (!shape) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "shape is NULL");
  if (nabla_shape_check(shape, why, sizeof why) != NABLA_OK)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "invalid shape: %s", why);
  if (nabla_dtype_size(dtype) == 0)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "unknown dtype %d", (int)dtype);
  if ((num_wait > 0) != (wait != NULL))
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "wait list: num_wait is %u but wait is %s",
                      num_wait, wait ? "not NULL" : "NULL");
  for (cl_uint i = 0; i < num_wait; i++)
    if (!wait[i]) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "wait[%u] is NULL", i);
  return NABLA_OK;
}

nabla_status nabla_check_buffer(nabla_context *ctx, const char *what, cl_mem buf, size_t need,
                                const char *layout) {
  if (!buf) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%s is NULL", what);
  size_t size = 0;
  cl_context owner = NULL;
  if (clGetMemObjectInfo(buf, CL_MEM_SIZE, sizeof size, &size, NULL) != CL_SUCCESS ||
      clGetMemObjectInfo(buf, CL_MEM_CONTEXT, sizeof owner, &owner, NULL) != CL_SUCCESS)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%s is not a valid cl_mem", what);
  if (owner != ctx->cl_ctx)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%s belongs to another cl_context", what);
  if (size < need)
    return nabla_fail(ctx, NABLA_BUFFER_TOO_SMALL, "%s holds %zu bytes but %s needs %zu", what, size,
                      layout, need);
  return NABLA_OK;
}

nabla_status nabla_check_tensor(nabla_context *ctx, const char *what, cl_mem buf,
                                const nabla_shape *shape, nabla_dtype dtype) {
  char layout[96];
  snprintf(layout, sizeof layout, "[%d,%d,%d,%d] %s", shape->batch, shape->heads, shape->seq,
           shape->head_dim, nabla_dtype_name(dtype));
  size_t need = (size_t)shape->batch * shape->heads * shape->seq * shape->head_dim * nabla_dtype_size(dtype);
  return nabla_check_buffer(ctx, what, buf, need, layout);
}
