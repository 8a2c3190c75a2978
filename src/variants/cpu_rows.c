/* cpu-rows (cl/attention_rows.cl): one work-item per query row and no barriers, plain OpenCL C
 * for every device and dtype; the automatic choice on CPU devices, where work-group barriers
 * cost more than the redundant loads they save. */
#include <stdio.h>

#include "variant.h"

static int cpu_rows_automatic(const nabla_device_caps *caps) { return caps->is_cpu; }

static void cpu_rows_options(nabla_context *ctx, const nabla_variant_call *call, char *buf, size_t len) {
  snprintf(buf, len, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d", nabla_dtype_define(call->dtype), call->shape->head_dim,
           call->dense);
}

/* One work-item per query row: 64 per query block (dimension 1), (b, h) along 2. */
static nabla_status cpu_rows_work_sizes(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                                        size_t global[3], size_t local[3]) {
  local[0] = global[0] = 64, local[1] = local[2] = 1;
  global[1] = (size_t)call->blocks, global[2] = (size_t)call->shape->batch * call->shape->heads;
  return NABLA_OK;
}

const nabla_variant_ops nabla_variant_cpu_rows = {
    .stages = NABLA_STAGE_ATTENTION,
    .rank = 30,
    .automatic = cpu_rows_automatic,
    .map_with = NABLA_VARIANT_PORTABLE,
    .program = "attention_rows",
    .options = cpu_rows_options,
    .work_sizes = cpu_rows_work_sizes,
};
