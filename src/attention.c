/* Block-sparse (and dense) attention: checks, the launch of the chosen kernel variant through its
 * operations table (variants/variant.h), the fallback to portable, and the one-shot call. */
#include <math.h>
#include <stdio.h>

#include <string.h>

#include "internal.h"
#include "tune.h"
#include "variant.h"

/* The buffer a (sub-)buffer lies in, and its byte range there. */
static cl_mem mem_root(cl_mem m, size_t *offset, size_t *size) {
  cl_mem parent = NULL;
  *offset = 0, *size = 0;
  clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof *size, size, NULL);
  if (clGetMemObjectInfo(m, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) != CL_SUCCESS || !parent)
    return m;
  clGetMemObjectInfo(m, CL_MEM_OFFSET, sizeof *offset, offset, NULL);
  return parent; /* OpenCL 1.2: a sub-buffer's parent is never itself a sub-buffer */
}

/* Whether two buffers share bytes: the same object, or overlapping ranges of one parent. */
static int mem_overlap(cl_mem a, cl_mem b) {
  size_t ao, as, bo, bs;
  if (a == b) return 1;
  cl_mem ra = mem_root(a, &ao, &as), rb = mem_root(b, &bo, &bs);
  return ra == rb && ao < bo + bs && bo < ao + as;
}

/* Everything nabla_attend checks before it enqueues. */
static nabla_status check_attend(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                 const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                                 cl_uint num_wait, const cl_event *wait) {
  nabla_status st = NABLA_OK;
  TRY(st, nabla_check_common(ctx, shape, dtype, num_wait, wait));
  TRY(st, nabla_check_tensor(ctx, "q", q, shape, dtype));
  TRY(st, nabla_check_tensor(ctx, "k", k, shape, dtype));
  TRY(st, nabla_check_tensor(ctx, "v", v, shape, dtype));
  TRY(st, nabla_check_tensor(ctx, "o", o, shape, dtype));
  if (mem_overlap(o, q) || mem_overlap(o, k) || mem_overlap(o, v)) {
    st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "o must not alias q, k or v (not even through sub-buffers)");
    goto done;
  }
  if (mask) {
    const nabla_shape *ms = &mask->shape;
    if (mask->cl_ctx != ctx->cl_ctx) {
      st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "mask was built on another cl_context");
      goto done;
    }
    if (ms->batch != shape->batch || ms->heads != shape->heads || ms->seq != shape->seq ||
        ms->grid_t != shape->grid_t || ms->grid_h != shape->grid_h || ms->grid_w != shape->grid_w) {
      st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT,
                      "mask shape [%d,%d,%d] grid %dx%dx%d does not match the tensors' [%d,%d,%d] grid %dx%dx%d",
                      ms->batch, ms->heads, ms->seq, ms->grid_t, ms->grid_h, ms->grid_w, shape->batch,
                      shape->heads, shape->seq, shape->grid_t, shape->grid_h, shape->grid_w);
      goto done;
    }
  }
done:
  return st;
}

/* Builds the kernel of a variant (through its operations table, variants/variant.h) and enqueues
 * it. Fails before enqueueing the attention kernel or not at all (the variant's preparation may
 * have enqueued staging that writes only the workspace). */
static nabla_status enqueue_variant(nabla_context *ctx, int variant, const nabla_shape *shape,
                                    nabla_dtype dtype, const nabla_mask *mask, cl_mem q, cl_mem k,
                                    cl_mem v, cl_mem o, const nabla_params *params,
                                    cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  cl_mem starts = NULL;
  const nabla_variant_ops *ops = nabla_variant_ops_of(variant);
  nabla_variant_call call = {.id = variant, .shape = shape, .dtype = dtype, .dense = !mask, .params = params,
                             .q = q, .k = k, .v = v, .o = o, .num_wait = num_wait, .wait = wait,
                             .seq = shape->seq, .blocks = nabla_shape_blocks(shape),
                             .scale_log2 = (cl_float)(1.4426950408889634 / sqrt((double)shape->head_dim))};
  if (mask) {
    call.block_start = mask->block_start, call.row_ptr = mask->row_ptr, call.col_idx = mask->col_idx;
  } else {
    TRY(st, nabla_block_starts_buffer(ctx, shape, &starts));
    call.block_start = starts;
  }
  TRY(st, nabla_variant_prepare(ctx, &call, 1));
  TRY(st, nabla_kernel_create(ctx, call.program, "attention", &kernel));
  size_t global[3], local[3];
  TRY(st, ops->work_sizes(ctx, &call, kernel, global, local));
  nabla_kernel_arg args[12];
  const size_t nargs = nabla_variant_args(&call, args);
  TRY(st, nabla_set_args(ctx, kernel, "the attention kernel", args, nargs));
  cl_event *slot = nabla_profile_slot(ctx, mask ? "attention" : "attention-dense");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, local, call.num_wait, call.wait,
                                         NABLA_EVENT_OUT(slot, done_event)));
  nabla_profile_share(slot, done_event);
done:
  if (kernel) clReleaseKernel(kernel);
  if (starts) clReleaseMemObject(starts);
  return st;
}

/* Records that `variant` failed with st (the context's error says how) and that the portable
 * kernel stands in: a kernel that does not build is given up on for the context; anything else
 * (an allocation, a launch refused once) only for this call, so one transient failure does not
 * cost the tensor cores for good. The note says which; the error is cleared. */
static void fall_back(nabla_context *ctx, int variant, nabla_status st) {
  char why[384];
  snprintf(why, sizeof why, "%.370s", ctx->error);
  if (st == NABLA_BUILD) nabla_variant_mark_broken(ctx, variant, NABLA_STAGE_ATTENTION, why);
  snprintf(ctx->variants.note, sizeof ctx->variants.note, "%s %s, using portable: %.400s",
           nabla_variant_name(variant),
           st == NABLA_BUILD         ? "failed"
           : st == NABLA_UNSUPPORTED ? "is not eligible for this problem"
                                     : "failed on this call",
           why);
  nabla_clear_error(ctx);
}

/* nabla_attend_params after its checks passed: the choice of variant, its launch, and the
 * fallback to portable. */
static nabla_status attend_checked(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                   const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                                   const nabla_params *params, cl_uint num_wait, const cl_event *wait,
                                   cl_event *done_event) {
  nabla_status st = NABLA_OK;
  nabla_variant_state *vs = &ctx->variants;
  int variant = nabla_attention_variant_choose(ctx, shape, dtype, params, vs->note, sizeof vs->note);
  if (variant != NABLA_VARIANT_PORTABLE) {
    st = enqueue_variant(ctx, variant, shape, dtype, mask, q, k, v, o, params, num_wait, wait, done_event);
    if (st == NABLA_OK) {
      snprintf(vs->last, sizeof vs->last, "%s", nabla_variant_name(variant));
      return st;
    }
    /* The attention kernel was not enqueued (a tile pack or the tensor maps may have been; they
     * write only the workspace): fall back to the portable kernel. */
    fall_back(ctx, variant, st);
  }
  TRY(st, enqueue_variant(ctx, NABLA_VARIANT_PORTABLE, shape, dtype, mask, q, k, v, o, params, num_wait,
                          wait, done_event));
  snprintf(vs->last, sizeof vs->last, "%s", nabla_variant_name(NABLA_VARIANT_PORTABLE));
done:
  return st;
}

nabla_status nabla_attend(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                          const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                          cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_status st = check_attend(ctx, shape, dtype, mask, q, k, v, o, num_wait, wait);
  if (st != NABLA_OK) return st;
  nabla_params params;
  nabla_params_lookup(ctx, "attention", dtype, shape->head_dim, nabla_shape_class(shape), &params);
  return attend_checked(ctx, shape, dtype, mask, q, k, v, o, &params, num_wait, wait, done_event);
}

nabla_status nabla_attend_params(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                 const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                                 const nabla_params *params, cl_uint num_wait, const cl_event *wait,
                                 cl_event *done_event) {
  nabla_status st = check_attend(ctx, shape, dtype, mask, q, k, v, o, num_wait, wait);
  if (st != NABLA_OK) return st;
  return attend_checked(ctx, shape, dtype, mask, q, k, v, o, params, num_wait, wait, done_event);
}

nabla_status nabla_attention_variant(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                     char *buf, size_t len) {
  nabla_status st = NABLA_OK;
  TRY(st, nabla_check_common(ctx, shape, dtype, 0, NULL));
  if (!buf || !len) {
    st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "buf is NULL or len is 0");
    goto done;
  }
  nabla_params params;
  nabla_params_lookup(ctx, "attention", dtype, shape->head_dim, nabla_shape_class(shape), &params);
  nabla_variant_state *vs = &ctx->variants;
  int variant = nabla_attention_variant_choose(ctx, shape, dtype, &params, vs->note, sizeof vs->note);
  if (variant != NABLA_VARIANT_PORTABLE) {
    /* Build it now (cached), so a compiler failure is known before the first launch. */
    nabla_variant_call call = {.id = variant, .shape = shape, .dtype = dtype, .dense = 0, .params = &params};
    nabla_status built = nabla_variant_prepare(ctx, &call, 0);
    if (built != NABLA_OK) {
      fall_back(ctx, variant, built); /* as nabla_attend does */
      variant = NABLA_VARIANT_PORTABLE;
    }
  }
  if ((size_t)snprintf(buf, len, "%s", nabla_variant_name(variant)) >= len)
    st = nabla_fail(ctx, NABLA_BUFFER_TOO_SMALL, "variant name needs %zu bytes",
                    strlen(nabla_variant_name(variant)) + 1);
done:
  return st;
}

nabla_status nabla_attention(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                             nabla_dtype dtype, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                             cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  nabla_mask *mask = NULL;
  if (!algo) return ctx ? nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "algo is NULL") : NABLA_INVALID_ARGUMENT;
  if (!algo->nabla && !algo->sta) /* dense: no mask at all */
    return nabla_attend(ctx, shape, dtype, NULL, q, k, v, o, num_wait, wait, done_event);
  /* Everything attend will check, checked before the mask build enqueues anything. */
  TRY(st, check_attend(ctx, shape, dtype, NULL, q, k, v, o, num_wait, wait));
  TRY(st, nabla_mask_build(ctx, algo, shape, dtype, q, k, &mask, num_wait, wait, NULL));
  TRY(st, nabla_attend(ctx, shape, dtype, mask, q, k, v, o, 0, NULL, done_event));
done:
  nabla_mask_release(mask); /* buffers live on until the queued kernels finish */
  return st;
}
