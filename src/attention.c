/* Block-sparse (and dense) attention launch, kernel variant choice (cl/attention.cl,
 * cl/attention_mma.cl, cl/attention_wgmma.cl or cl/attention_rows.cl, see variant.h), and the
 * one-shot call. */
#include <math.h>
#include <stdio.h>

#include <string.h>

#include "internal.h"
#include "tensormap.h"
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

nabla_status nabla_attend(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                          const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                          cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_status st = check_attend(ctx, shape, dtype, mask, q, k, v, o, num_wait, wait);
  if (st != NABLA_OK) return st;
  nabla_params params;
  nabla_params_lookup(ctx, "attention", dtype, shape->head_dim, nabla_shape_class(shape), &params);
  return nabla_attend_params(ctx, shape, dtype, mask, q, k, v, o, &params, num_wait, wait, done_event);
}

/* Builds (or finds) the program of an attention variant for the problem; staging: the wgmma
 * kernel's (NABLA_WG_*), ignored by the others. */
static nabla_status variant_build(nabla_context *ctx, int variant, const nabla_shape *shape, int staging,
                                  nabla_dtype dtype, int dense, const nabla_params *params,
                                  cl_program *prog) {
  char options[320];
  if (nabla_variant_is_wgmma(variant)) {
    nabla_attention_wgmma_options(variant, shape, dtype, dense, staging, params, options, sizeof options);
    return nabla_program_get(ctx, "attention_wgmma", options, prog);
  }
  if (variant == NABLA_VARIANT_NVIDIA_MMA || variant == NABLA_VARIANT_MMA_EMULATED) {
    nabla_attention_mma_options(ctx, variant, shape, dtype, dense, params, options, sizeof options);
    return nabla_program_get(ctx, "attention_mma", options, prog);
  }
  snprintf(options, sizeof options, "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d", nabla_dtype_define(dtype),
           shape->head_dim, dense);
  if (variant == NABLA_VARIANT_CPU_ROWS) return nabla_program_get(ctx, "attention_rows", options, prog);
  nabla_params_options(params, options, sizeof options);
  return nabla_program_get(ctx, "attention", options, prog);
}

/* variant_build, and a kernel whose local memory does not fit the device makes the variant
 * ineligible for the problem (NABLA_UNSUPPORTED, with the figures), before anything is enqueued. */
static nabla_status variant_program(nabla_context *ctx, int variant, const nabla_shape *shape, int staging,
                                    nabla_dtype dtype, int dense, const nabla_params *params,
                                    cl_program *prog) {
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  TRY(st, variant_build(ctx, variant, shape, staging, dtype, dense, params, prog));
  TRY(st, nabla_kernel_create(ctx, *prog, "attention", &kernel));
  TRY(st, nabla_kernel_local_fits(ctx, kernel, nabla_variant_name(variant)));
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

/* The context's tile-image workspace for k and v: one 64-row tile of head_dim x 128 bytes per
 * block and (b, h), as the wgmma kernel's bulk copies read them. */
static nabla_status tile_images(nabla_context *ctx, const nabla_shape *shape, cl_mem img[2]) {
  nabla_status st = NABLA_OK;
  const size_t bytes = (size_t)shape->batch * shape->heads * (size_t)nabla_shape_blocks(shape) * 64 *
                       (size_t)shape->head_dim * 2;
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_KTILES, bytes, "K tile images", &img[0]));
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_VTILES, bytes, "V tile images", &img[1]));
done:
  if (st != NABLA_OK) { /* half of the images is of no use: give the memory back */
    nabla_workspace_free(ctx, NABLA_WS_KTILES);
    nabla_workspace_free(ctx, NABLA_WS_VTILES);
  }
  return st;
}

/* What the wgmma kernel reads K and V through: the caller's buffers, or the tile images that
 * replace them, and the tensor maps. The wait list goes to the first command enqueued (the queue
 * is in order, so every later one waits too). */
typedef struct {
  cl_mem k, v, maps, block_start;
  cl_uint num_wait;
  const cl_event *wait;
} wg_inputs;

/* NABLA_WG_IMAGES: enqueues pack_tiles (cl/attention_wgmma.cl) from in->k and in->v into the
 * context's tile images and points in->k and in->v at them. */
static nabla_status pack_tiles(nabla_context *ctx, cl_program prog, const nabla_shape *shape, wg_inputs *in) {
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  cl_mem img[2] = {NULL, NULL};
  cl_int S = shape->seq, Nb = nabla_shape_blocks(shape);
  size_t global[3] = {64 * (size_t)shape->head_dim / 8, (size_t)Nb, (size_t)shape->batch * shape->heads};
  size_t local[3] = {64, 1, 1};
  TRY(st, tile_images(ctx, shape, img));
  TRY(st, nabla_kernel_create(ctx, prog, "pack_tiles", &kernel));
  for (int i = 0; i < 2; i++) {
    cl_mem src = i ? in->v : in->k;
    TRY(st, NABLA_SET_ARGS(ctx, kernel, "pack_tiles", NABLA_ARG(src), NABLA_ARG(img[i]),
                           NABLA_ARG(in->block_start), NABLA_ARG(S), NABLA_ARG(Nb)));
    cl_event *slot = nabla_profile_slot(ctx, "attention-pack");
    TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, local, i ? 0 : in->num_wait,
                                           i ? NULL : in->wait, NABLA_EVENT_OUT(slot, NULL)));
  }
  in->k = img[0], in->v = img[1], in->num_wait = 0, in->wait = NULL;
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

/* The rows of K and V seen as [B H S][head_dim] matrices, the tensor maps' dimension 1. */
static uint64_t tensor_rows(const nabla_shape *shape) {
  return (uint64_t)shape->batch * shape->heads * (uint64_t)shape->seq;
}

/* NABLA_WG_TENSOR: the tensor map template for K and V seen as [B H S][head_dim] matrices
 * (tensormap.h), or, emulated, none (the emulation copies from k and v itself: the maps stay
 * zero). */
static nabla_status tensor_map(nabla_context *ctx, int variant, const nabla_shape *shape,
                               unsigned char map[NABLA_TMAP_BYTES]) {
  const uint64_t rows = tensor_rows(shape);
  memset(map, 0, NABLA_TMAP_BYTES);
  if (rows > 0x7FFFFFFFu) /* the copies' row coordinate is a signed 32-bit integer */
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "tensor copies address rows by 32-bit coordinates, not %llu rows",
                      (unsigned long long)rows);
  if (variant == NABLA_VARIANT_WGMMA_EMULATED) return NABLA_OK;
  return nabla_tensor_map_template(ctx, shape->head_dim, map);
}

/* NABLA_WG_TENSOR: fills the context's two maps with the template and enqueues tmap_bind, which
 * points them at in->k and in->v (OpenCL tells only the device where a buffer lives) and sets
 * their row count. */
static nabla_status bind_tensor_maps(nabla_context *ctx, int variant, cl_program prog, const nabla_shape *shape,
                                     wg_inputs *in) {
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  cl_mem maps = NULL;
  _Alignas(8) unsigned char map[NABLA_TMAP_BYTES];
  const size_t one = 1;
  TRY(st, tensor_map(ctx, variant, shape, map));
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_TMAPS, 2 * NABLA_TMAP_BYTES, "tensor maps", &maps));
  TRY(st, nabla_kernel_create(ctx, prog, "tmap_bind", &kernel));
  const cl_uint rows = (cl_uint)tensor_rows(shape); /* < 2^31: tensor_map checked */
  TRY(st, NABLA_SET_ARGS(ctx, kernel, "tmap_bind", NABLA_ARG(in->k), NABLA_ARG(in->v), NABLA_ARG(maps), NABLA_ARG(rows)));
  /* The pattern is copied at the call, so the map on the stack may go. */
  TRY_CL(st, ctx, clEnqueueFillBuffer(ctx->queue, maps, map, NABLA_TMAP_BYTES, 0, 2 * NABLA_TMAP_BYTES,
                                      in->num_wait, in->wait, NULL));
  in->num_wait = 0, in->wait = NULL;
  cl_event *slot = nabla_profile_slot(ctx, "attention-maps");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 1, NULL, &one, &one, 0, NULL, NABLA_EVENT_OUT(slot, NULL)));
  in->maps = maps;
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

/* The wgmma kernel's program with `staging`, and, when in is given, what that staging enqueues
 * first (the pack or the maps). */
static nabla_status wgmma_prepare(nabla_context *ctx, int variant, int staging, const nabla_shape *shape,
                                  nabla_dtype dtype, int dense, const nabla_params *params, wg_inputs *in,
                                  cl_program *prog) {
  nabla_status st = NABLA_OK;
  if (staging == NABLA_WG_TENSOR && !in) { /* a map that cannot be had is known before the build */
    unsigned char map[NABLA_TMAP_BYTES];
    TRY(st, tensor_map(ctx, variant, shape, map));
  }
  TRY(st, variant_program(ctx, variant, shape, staging, dtype, dense, params, prog));
  if (in && staging == NABLA_WG_IMAGES) TRY(st, pack_tiles(ctx, *prog, shape, in));
  if (in && staging == NABLA_WG_TENSOR) TRY(st, bind_tensor_maps(ctx, variant, *prog, shape, in));
done:
  return st;
}

/* The wgmma kernel's staging and program: the one asked for (nabla_attention_wgmma_staging), or
 * the next one down where it cannot be had, with the reason in the variant note and the error
 * cleared. Rows staged need nothing but the program; its failure is returned. A failed step
 * enqueues nothing, or only a pack or maps that write the workspace alone. */
static nabla_status wgmma_staging(nabla_context *ctx, int variant, const nabla_shape *shape, nabla_dtype dtype,
                                  int dense, const nabla_params *params, wg_inputs *in, int *staging,
                                  cl_program *prog) {
  static const char *const off[] = {"", "bulk copies off, rows staged", "tensor copies off, tile images"};
  nabla_variant_probe *vp = &ctx->variants.probe[variant];
  int mode = nabla_attention_wgmma_staging();
  for (; mode > NABLA_WG_ROWS; mode--) {
    wg_inputs attempt = in ? *in : (wg_inputs){0};
    nabla_status st = NABLA_OK;
    if (vp->staging_off & (1 << mode)) {
      snprintf(ctx->variants.note, sizeof ctx->variants.note, "%s: %s: its build failed before on this context",
               nabla_variant_name(variant), off[mode]);
      continue;
    }
    st = wgmma_prepare(ctx, variant, mode, shape, dtype, dense, params, in ? &attempt : NULL, prog);
    if (st == NABLA_OK) {
      if (in) *in = attempt;
      break;
    }
    if (st == NABLA_BUILD) vp->staging_off |= 1 << mode; /* a compiler failure does not pass */
    snprintf(ctx->variants.note, sizeof ctx->variants.note, "%s: %s: %.400s", nabla_variant_name(variant),
             off[mode], ctx->error);
    nabla_clear_error(ctx);
  }
  *staging = mode;
  return mode == NABLA_WG_ROWS ? variant_program(ctx, variant, shape, mode, dtype, dense, params, prog) : NABLA_OK;
}

/* Builds the kernel of a variant and enqueues it. Fails before enqueueing the attention kernel or
 * not at all (a tile pack or the tensor maps may be in the queue then; they write only the
 * workspace). */
static nabla_status enqueue_variant(nabla_context *ctx, int variant, const nabla_shape *shape,
                                    nabla_dtype dtype, const nabla_mask *mask, cl_mem q, cl_mem k,
                                    cl_mem v, cl_mem o, const nabla_params *params,
                                    cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  cl_kernel kernel = NULL;
  cl_mem starts = NULL;
  const int dense = mask ? 0 : 1;
  cl_int S = shape->seq, Nb = nabla_shape_blocks(shape);
  /* Portable: one work-group of 128 per query block (dimension 1) and (b, h) (dimension 2); the
   * size is read back from the kernel's reqd_work_group_size below, so the source decides. */
  size_t local[3] = {128, 1, 1};
  size_t global[3] = {128, (size_t)Nb, (size_t)shape->batch * shape->heads};
  cl_mem block_start = mask ? mask->block_start : NULL, row_ptr = NULL, col_idx = NULL;
  if (!mask) {
    TRY(st, nabla_block_starts_buffer(ctx, shape, &starts));
    block_start = starts;
  } else {
    row_ptr = mask->row_ptr;
    col_idx = mask->col_idx;
  }
  cl_mem maps = NULL;
  if (nabla_variant_is_wgmma(variant)) { /* K and V as they are staged; see wgmma_staging */
    wg_inputs in = {k, v, NULL, block_start, num_wait, wait};
    int staging = NABLA_WG_ROWS;
    TRY(st, wgmma_staging(ctx, variant, shape, dtype, dense, params, &in, &staging, &prog));
    k = in.k, v = in.v, maps = in.maps, num_wait = in.num_wait, wait = in.wait;
  } else {
    TRY(st, variant_program(ctx, variant, shape, NABLA_WG_ROWS, dtype, dense, params, &prog));
  }
  if (variant == NABLA_VARIANT_CPU_ROWS) {
    /* One work-item per query row: 64 per query block (dimension 1), (b, h) along 2. */
    local[0] = global[0] = 64, local[1] = 1, global[1] = (size_t)Nb;
  } else if (variant != NABLA_VARIANT_PORTABLE) {
    /* Work-groups of MMA_QPW query blocks x 4 warps (one warpgroup each for wgmma) along
     * dimension 0, (b, h) along 1. */
    int qpw = nabla_attention_mma_qpw(variant, shape, dense, params);
    local[0] = 128 * (size_t)qpw, local[1] = 1;
    global[0] = local[0] * (size_t)((Nb + qpw - 1) / qpw);
    global[1] = (size_t)shape->batch * shape->heads;
    global[2] = 1;
  }
  TRY(st, nabla_kernel_create(ctx, prog, "attention", &kernel));
  if (variant == NABLA_VARIANT_PORTABLE) {
    size_t wg[3] = {0, 0, 0};
    TRY_CL(st, ctx, clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_COMPILE_WORK_GROUP_SIZE,
                                             sizeof wg, wg, NULL));
    if (wg[0]) local[0] = global[0] = wg[0];
  }

  cl_float scale_log2 = (cl_float)(1.4426950408889634 / sqrt((double)shape->head_dim));
  const nabla_kernel_arg args[] = {NABLA_ARG(q), NABLA_ARG(k), NABLA_ARG(v), NABLA_ARG(o), NABLA_ARG(block_start),
                                   NABLA_ARG(row_ptr), NABLA_ARG(col_idx), NABLA_ARG(S), NABLA_ARG(Nb),
                                   NABLA_ARG(scale_log2), NABLA_ARG(maps)}; /* maps: nvidia-wgmma only */
  const size_t nargs = sizeof args / sizeof args[0] - !nabla_variant_is_wgmma(variant);
  TRY(st, nabla_set_args(ctx, kernel, "the attention kernel", args, nargs));
  cl_event *slot = nabla_profile_slot(ctx, mask ? "attention" : "attention-dense");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, local, num_wait, wait,
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

nabla_status nabla_attend_params(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                 const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                                 const nabla_params *params, cl_uint num_wait, const cl_event *wait,
                                 cl_event *done_event) {
  nabla_status st = NABLA_OK;
  TRY(st, check_attend(ctx, shape, dtype, mask, q, k, v, o, num_wait, wait));
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
    cl_program prog = NULL;
    int staging = NABLA_WG_ROWS;
    nabla_status built = nabla_variant_is_wgmma(variant)
                             ? wgmma_staging(ctx, variant, shape, dtype, 0, &params, NULL, &staging, &prog)
                             : variant_program(ctx, variant, shape, staging, dtype, 0, &params, &prog);
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
