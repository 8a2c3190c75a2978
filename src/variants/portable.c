/* The portable attention kernel (cl/attention.cl): every device, every dtype, and the fallback
 * of every other variant. Its tile sizes are the attention stage's tunables (tune.c). */
#include <stdio.h>

#include "variant.h"

static void portable_options(nabla_context *ctx, const nabla_variant_call *call, char *buf, size_t len) {
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d", nabla_dtype_define(call->dtype), call->shape->head_dim,
           call->dense);
  nabla_params_options(call->params, buf, len);
}

/* One work-group per query block (dimension 1) and (b, h) (dimension 2), of the size the
 * kernel's reqd_work_group_size gives (128 unless the source says otherwise). */
static nabla_status portable_work_sizes(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                                        size_t global[3], size_t local[3]) {
  nabla_status st = NABLA_OK;
  size_t wg[3] = {0, 0, 0};
  local[0] = global[0] = 128, local[1] = local[2] = 1;
  global[1] = (size_t)call->blocks, global[2] = (size_t)call->shape->batch * call->shape->heads;
  TRY_CL(st, ctx, clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_COMPILE_WORK_GROUP_SIZE, sizeof wg, wg,
                                           NULL));
  if (wg[0]) local[0] = global[0] = wg[0];
done:
  return st;
}

const nabla_variant_ops nabla_variant_portable = {
    .stages = NABLA_STAGE_ATTENTION,
    .map_with = NABLA_VARIANT_PORTABLE,
    .program = "attention",
    .options = portable_options,
    .work_sizes = portable_work_sizes,
};
