/* Raster <-> tile token order on the device (cl/reorder.cl). */
#include <stdio.h>

#include "internal.h"

nabla_status nabla_reorder(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                           nabla_reorder_dir dir, cl_mem src, cl_mem dst, cl_uint num_wait,
                           const cl_event *wait, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  cl_mem starts = NULL;
  cl_kernel kernel = NULL;
  cl_program prog = NULL;
  TRY(st, nabla_check_common(ctx, shape, dtype, num_wait, wait));
  if (dir != NABLA_RASTER_TO_TILE && dir != NABLA_TILE_TO_RASTER)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "unknown reorder direction %d", (int)dir);
  TRY(st, nabla_check_tensor(ctx, "src", src, shape, dtype));
  TRY(st, nabla_check_tensor(ctx, "dst", dst, shape, dtype));
  if (src == dst) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "src and dst must be distinct buffers");

  size_t bytes = (size_t)shape->batch * shape->heads * shape->seq * shape->head_dim * nabla_dtype_size(dtype);
  if (shape->grid_t == 0) { /* plain sequence: order is the identity */
    TRY_CL(st, ctx, clEnqueueCopyBuffer(ctx->queue, src, dst, 0, 0, bytes, num_wait, wait, done_event));
    goto done;
  }
  const char *options = nabla_dtype_size(dtype) == 4 ? "-DELEM=uint" : "-DELEM=ushort";
  TRY(st, nabla_program_get(ctx, "reorder", options, &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "reorder", &kernel));
  TRY(st, nabla_block_starts_buffer(ctx, shape, &starts));
  cl_int S = shape->seq, D = shape->head_dim, Ht = shape->grid_h, Wt = shape->grid_w;
  cl_int Hb = (Ht + 7) / 8, Wb = (Wt + 7) / 8, to_tile = dir == NABLA_RASTER_TO_TILE;
  TRY(st, NABLA_SET_ARGS(ctx, kernel, "reorder", NABLA_ARG(src), NABLA_ARG(dst), NABLA_ARG(starts), NABLA_ARG(S),
                         NABLA_ARG(D), NABLA_ARG(Ht), NABLA_ARG(Wt), NABLA_ARG(Hb), NABLA_ARG(Wb), NABLA_ARG(to_tile)));
  size_t global[3] = {(size_t)D, (size_t)S, (size_t)shape->batch * shape->heads};
  cl_event *slot = nabla_profile_slot(ctx, "reorder");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, NULL, num_wait, wait,
                                         NABLA_EVENT_OUT(slot, done_event)));
  nabla_profile_share(slot, done_event);
done:
  if (kernel) clReleaseKernel(kernel);
  if (starts) clReleaseMemObject(starts); /* the runtime keeps it alive until the kernel ran */
  return st;
}
