/*
 * Mask build: pool -> reduced map (CLBlast batched GEMM) -> softmax + CDF select -> STA OR ->
 * CSR. Everything stays on the device; nothing is read back unless asked for.
 */
#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tune.h"

/* Sets kernel arguments from (size, pointer) pairs; returns the OR of the return codes. */
static cl_int set_args(cl_kernel kernel, int count, ...) {
  va_list ap;
  cl_int rc = CL_SUCCESS;
  va_start(ap, count);
  for (int i = 0; i < count; i++) {
    size_t size = va_arg(ap, size_t);
    const void *ptr = va_arg(ap, const void *);
    rc |= clSetKernelArg(kernel, (cl_uint)i, size, ptr);
  }
  va_end(ap);
  return rc;
}
#define ARG(x) sizeof(x), (const void *)&(x)

static nabla_status check_algo(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape) {
  if (!algo) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "algo is NULL");
  if (algo->nabla && !(algo->thr > 0.0 && algo->thr <= 1.0))
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "thr %g outside (0, 1]", algo->thr);
  if (algo->sta) {
    if (algo->sta_t < 1 || algo->sta_h < 1 || algo->sta_w < 1)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "STA window %dx%dx%d: every size must be >= 1",
                        algo->sta_t, algo->sta_h, algo->sta_w);
    if (shape->grid_t == 0)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "STA needs a video grid; the shape is a plain sequence");
  }
  return NABLA_OK;
}

void nabla_mask_release(nabla_mask *mask) {
  if (!mask) return;
  if (mask->block_start) clReleaseMemObject(mask->block_start);
  if (mask->bitmap) clReleaseMemObject(mask->bitmap);
  if (mask->row_ptr) clReleaseMemObject(mask->row_ptr);
  if (mask->col_idx) clReleaseMemObject(mask->col_idx);
  free(mask);
}

static nabla_status buffer(nabla_context *ctx, size_t bytes, const char *what, cl_mem *out) {
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

static nabla_status mask_alloc(nabla_context *ctx, const nabla_shape *shape, nabla_mask **out) {
  nabla_status st = NABLA_OK;
  nabla_mask *m = calloc(1, sizeof *m);
  if (!m) return nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
  m->shape = *shape;
  m->nblocks = nabla_shape_blocks(shape);
  m->cl_ctx = ctx->cl_ctx;
  size_t rows = (size_t)shape->batch * shape->heads * m->nblocks;
  TRY(st, nabla_block_starts_buffer(ctx, shape, &m->block_start));
  TRY(st, buffer(ctx, rows * m->nblocks, "block bitmap", &m->bitmap));
  TRY(st, buffer(ctx, (rows + 1) * sizeof(cl_int), "row_ptr", &m->row_ptr));
  TRY(st, buffer(ctx, rows * m->nblocks * sizeof(cl_int), "col_idx", &m->col_idx));
  *out = m;
  m = NULL;
done:
  nabla_mask_release(m);
  return st;
}

/* Enqueues pool(q), pool(k), the reduced map and the selection into m->bitmap. */
static nabla_status enqueue_nabla(nabla_context *ctx, nabla_mask *m, nabla_dtype dtype,
                                  const nabla_algo *algo, cl_mem q, cl_mem k,
                                  const nabla_params *sel, cl_uint num_wait, const cl_event *wait) {
  nabla_status st = NABLA_OK;
  const nabla_shape *s = &m->shape;
  cl_mem qp = NULL, kp = NULL, logits = NULL;
  cl_kernel pool = NULL, select = NULL;
  cl_program prog = NULL;
  cl_event gemm_event = NULL;
  cl_int S = s->seq, D = s->head_dim, Nb = m->nblocks;
  size_t BH = (size_t)s->batch * s->heads, rows = BH * (size_t)Nb;

  /* Work-items per row: enough that each holds at most ~48 values in registers. */
  size_t sel_wg = (size_t)nabla_params_get(sel, "SEL_WG", 256), tpr = 32;
  while ((size_t)Nb > 48 * tpr && tpr < sel_wg) tpr *= 2;
  int per_thread = (int)(((size_t)Nb + tpr - 1) / tpr);
  per_thread = (per_thread + 3) / 4 * 4; /* fewer distinct programs */
  TRY(st, buffer(ctx, rows * D * sizeof(float), "pooled Q", &qp));
  TRY(st, buffer(ctx, rows * D * sizeof(float), "pooled K", &kp));
  TRY(st, buffer(ctx, rows * Nb * sizeof(float), "reduced map", &logits));

  TRY(st, nabla_program_get(ctx, "pool", nabla_dtype_define(dtype), &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "pool", &pool));
  size_t pool_global[3] = {(size_t)D / (nabla_dtype_size(dtype) == 4 ? 4 : 8), (size_t)Nb, BH};
  TRY_CL(st, ctx, set_args(pool, 6, ARG(q), ARG(qp), ARG(m->block_start), ARG(S), ARG(D), ARG(Nb)));
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, pool, 3, NULL, pool_global, NULL, num_wait, wait, nabla_profile_slot(ctx, "pool")));
  TRY_CL(st, ctx, set_args(pool, 2, ARG(k), ARG(kp)));
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, pool, 3, NULL, pool_global, NULL, 0, NULL, nabla_profile_slot(ctx, "pool")));

  /* logits[bh] = qp[bh] · kp[bh]ᵀ / sqrt(D), row-major Nb x Nb per (b, h). */
  CLBlastStatusCode bs = CLBlastSgemmStridedBatched(
      CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, (size_t)Nb, (size_t)Nb,
      (size_t)D, 1.0f / sqrtf((float)D), qp, 0, (size_t)D, (size_t)Nb * D, kp, 0, (size_t)D,
      (size_t)Nb * D, 0.0f, logits, 0, (size_t)Nb, (size_t)Nb * Nb, BH, &ctx->queue, &gemm_event);
  cl_event *gemm_slot = nabla_profile_slot(ctx, "map");
  nabla_profile_share(gemm_slot, &gemm_event);
  if (bs != CLBlastSuccess) {
    st = nabla_fail(ctx, NABLA_OPENCL, "CLBlastSgemmStridedBatched failed with CLBlast status %d", (int)bs);
    goto done;
  }

  char options[256];
  snprintf(options, sizeof options, "%s", nabla_dtype_define(dtype));
  nabla_params_options(sel, options, sizeof options);
  size_t used = strlen(options);
  snprintf(options + used, sizeof options - used, " -DSEL_TPR=%zu -DSEL_PT=%d", tpr, per_thread);
  TRY(st, nabla_program_get(ctx, "select", options, &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "select_cdf", &select));
  cl_float thr = (cl_float)algo->thr;
  cl_int nrows = (cl_int)rows;
  TRY_CL(st, ctx, set_args(select, 5, ARG(logits), ARG(m->bitmap), ARG(Nb), ARG(nrows), ARG(thr)));
  size_t rows_per_group = sel_wg / tpr;
  size_t sel_global = (rows + rows_per_group - 1) / rows_per_group * sel_wg;
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, select, 1, NULL, &sel_global, &sel_wg, 0, NULL, nabla_profile_slot(ctx, "select")));
done:
  if (gemm_event) clReleaseEvent(gemm_event);
  if (pool) clReleaseKernel(pool);
  if (select) clReleaseKernel(select);
  if (qp) clReleaseMemObject(qp);
  if (kp) clReleaseMemObject(kp);
  if (logits) clReleaseMemObject(logits);
  return st;
}

static nabla_status enqueue_sta(nabla_context *ctx, nabla_mask *m, const nabla_algo *algo) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  cl_kernel kernel = NULL;
  const nabla_shape *s = &m->shape;
  cl_int Nb = m->nblocks, BH = s->batch * s->heads;
  cl_int Hb = (s->grid_h + 7) / 8, Wb = (s->grid_w + 7) / 8;
  cl_int rt = algo->sta_t / 2, rh = algo->sta_h / 2, rw = algo->sta_w / 2;
  TRY(st, nabla_program_get(ctx, "sta", "", &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "sta_or", &kernel));
  TRY_CL(st, ctx, set_args(kernel, 8, ARG(m->bitmap), ARG(Nb), ARG(BH), ARG(Hb), ARG(Wb), ARG(rt), ARG(rh), ARG(rw)));
  size_t global[2] = {(size_t)Nb, (size_t)Nb};
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 2, NULL, global, NULL, 0, NULL, nabla_profile_slot(ctx, "sta")));
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

static nabla_status enqueue_csr(nabla_context *ctx, nabla_mask *m, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  cl_kernel count = NULL, scan = NULL, fill = NULL;
  const nabla_shape *s = &m->shape;
  cl_int Nb = m->nblocks, R = s->batch * s->heads * m->nblocks;
  TRY(st, nabla_program_get(ctx, "csr", "", &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "csr_count", &count));
  TRY(st, nabla_kernel_create(ctx, prog, "csr_scan", &scan));
  TRY(st, nabla_kernel_create(ctx, prog, "csr_fill", &fill));
  TRY_CL(st, ctx, set_args(count, 4, ARG(m->bitmap), ARG(m->row_ptr), ARG(Nb), ARG(R)));
  TRY_CL(st, ctx, set_args(scan, 2, ARG(m->row_ptr), ARG(R)));
  TRY_CL(st, ctx, set_args(fill, 5, ARG(m->bitmap), ARG(m->row_ptr), ARG(m->col_idx), ARG(Nb), ARG(R)));
  size_t wg = 256, rows_per_group = 256 / 32, scan_wg = 256;
  size_t rows = ((size_t)R + rows_per_group - 1) / rows_per_group * wg;
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, count, 1, NULL, &rows, &wg, 0, NULL, nabla_profile_slot(ctx, "csr")));
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, scan, 1, NULL, &scan_wg, &scan_wg, 0, NULL, nabla_profile_slot(ctx, "csr")));
  cl_event *slot = nabla_profile_slot(ctx, "csr");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, fill, 1, NULL, &rows, &wg, 0, NULL, NABLA_EVENT_OUT(slot, done_event)));
  nabla_profile_share(slot, done_event);
done:
  if (count) clReleaseKernel(count);
  if (scan) clReleaseKernel(scan);
  if (fill) clReleaseKernel(fill);
  return st;
}

nabla_status nabla_mask_build(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                              nabla_dtype dtype, cl_mem q, cl_mem k, nabla_mask **out,
                              cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_params sel;
  if (!ctx || !shape) return ctx ? nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "shape is NULL") : NABLA_INVALID_ARGUMENT;
  nabla_params_lookup(ctx, "select", dtype, shape->head_dim, nabla_shape_class(shape), &sel);
  return nabla_mask_build_params(ctx, algo, shape, dtype, q, k, &sel, out, num_wait, wait, done_event);
}

nabla_status nabla_mask_build_params(nabla_context *ctx, const nabla_algo *algo,
                                     const nabla_shape *shape, nabla_dtype dtype, cl_mem q,
                                     cl_mem k, const nabla_params *sel, nabla_mask **out,
                                     cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  nabla_mask *m = NULL;
  TRY(st, nabla_check_common(ctx, shape, dtype, num_wait, wait));
  if (!out) {
    st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "out is NULL");
    goto done;
  }
  *out = NULL;
  TRY(st, check_algo(ctx, algo, shape));
  if (algo->nabla) {
    TRY(st, nabla_check_tensor(ctx, "q", q, shape, dtype));
    TRY(st, nabla_check_tensor(ctx, "k", k, shape, dtype));
  }
  TRY(st, mask_alloc(ctx, shape, &m));
  if (algo->nabla) {
    TRY(st, enqueue_nabla(ctx, m, dtype, algo, q, k, sel, num_wait, wait));
  } else {
    cl_uchar value = algo->sta ? 0 : 1; /* pure STA starts empty; dense keeps everything */
    size_t bytes = (size_t)shape->batch * shape->heads * m->nblocks * m->nblocks;
    TRY_CL(st, ctx, clEnqueueFillBuffer(ctx->queue, m->bitmap, &value, 1, 0, bytes, num_wait, wait, nabla_profile_slot(ctx, "fill")));
  }
  if (algo->sta) TRY(st, enqueue_sta(ctx, m, algo));
  TRY(st, enqueue_csr(ctx, m, done_event));
  *out = m;
  m = NULL;
done:
  nabla_mask_release(m);
  return st;
}

nabla_status nabla_mask_from_bitmap(nabla_context *ctx, const nabla_shape *shape,
                                    const uint8_t *bitmap, nabla_mask **out) {
  nabla_status st = NABLA_OK;
  nabla_mask *m = NULL;
  cl_event done_event = NULL;
  TRY(st, nabla_check_common(ctx, shape, NABLA_F32, 0, NULL));
  if (!bitmap || !out) {
    st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%s is NULL", bitmap ? "out" : "bitmap");
    goto done;
  }
  *out = NULL;
  TRY(st, mask_alloc(ctx, shape, &m));
  size_t bytes = (size_t)shape->batch * shape->heads * m->nblocks * m->nblocks;
  for (size_t i = 0; i < bytes; i++)
    if (bitmap[i] > 1) {
      st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "bitmap[%zu] = %u: entries must be 0 or 1", i, bitmap[i]);
      goto done;
    }
  TRY_CL(st, ctx, clEnqueueWriteBuffer(ctx->queue, m->bitmap, CL_TRUE, 0, bytes, bitmap, 0, NULL, NULL));
  TRY(st, enqueue_csr(ctx, m, &done_event));
  TRY_CL(st, ctx, clWaitForEvents(1, &done_event));
  *out = m;
  m = NULL;
done:
  if (done_event) clReleaseEvent(done_event);
  nabla_mask_release(m);
  return st;
}

nabla_status nabla_mask_buffers(const nabla_mask *mask, cl_mem *row_ptr, cl_mem *col_idx) {
  if (!mask) return NABLA_INVALID_ARGUMENT;
  if (row_ptr) *row_ptr = mask->row_ptr;
  if (col_idx) *col_idx = mask->col_idx;
  return NABLA_OK;
}

static nabla_status check_mask(nabla_context *ctx, const nabla_mask *mask) {
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  if (!mask) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "mask is NULL");
  if (mask->cl_ctx != ctx->cl_ctx)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "mask was built on another cl_context");
  return NABLA_OK;
}

static size_t mask_rows(const nabla_mask *m) {
  return (size_t)m->shape.batch * m->shape.heads * m->nblocks;
}

nabla_status nabla_mask_stats(nabla_context *ctx, const nabla_mask *mask, int64_t *kept,
                              double *density) {
  nabla_status st = NABLA_OK;
  cl_int nnz = 0;
  TRY(st, check_mask(ctx, mask));
  size_t rows = mask_rows(mask);
  TRY_CL(st, ctx, clEnqueueReadBuffer(ctx->queue, mask->row_ptr, CL_TRUE, rows * sizeof(cl_int),
                                      sizeof nnz, &nnz, 0, NULL, NULL));
  if (kept) *kept = nnz;
  if (density) *density = rows ? (double)nnz / ((double)rows * mask->nblocks) : 0.0;
done:
  return st;
}

nabla_status nabla_mask_read_csr(nabla_context *ctx, const nabla_mask *mask, int32_t *row_ptr,
                                 size_t row_ptr_cap, int32_t *col_idx, size_t col_idx_cap) {
  nabla_status st = NABLA_OK;
  int64_t kept = 0;
  TRY(st, check_mask(ctx, mask));
  size_t rows = mask_rows(mask);
  TRY(st, nabla_mask_stats(ctx, mask, &kept, NULL)); /* sizes first: nothing is written on failure */
  if (!row_ptr || row_ptr_cap < rows + 1) {
    st = nabla_fail(ctx, row_ptr ? NABLA_BUFFER_TOO_SMALL : NABLA_INVALID_ARGUMENT,
                    "row_ptr needs %zu entries (has %zu)", rows + 1, row_ptr ? row_ptr_cap : 0);
    goto done;
  }
  if (kept && (!col_idx || col_idx_cap < (size_t)kept)) {
    st = nabla_fail(ctx, col_idx ? NABLA_BUFFER_TOO_SMALL : NABLA_INVALID_ARGUMENT,
                    "col_idx needs %lld entries (has %zu)", (long long)kept, col_idx ? col_idx_cap : 0);
    goto done;
  }
  TRY_CL(st, ctx, clEnqueueReadBuffer(ctx->queue, mask->row_ptr, CL_TRUE, 0, (rows + 1) * sizeof(cl_int),
                                      row_ptr, 0, NULL, NULL));
  if (kept)
    TRY_CL(st, ctx, clEnqueueReadBuffer(ctx->queue, mask->col_idx, CL_TRUE, 0, (size_t)kept * sizeof(cl_int),
                                        col_idx, 0, NULL, NULL));
done:
  return st;
}

nabla_status nabla_mask_read_bitmap(nabla_context *ctx, const nabla_mask *mask, uint8_t *bitmap,
                                    size_t cap) {
  nabla_status st = NABLA_OK;
  TRY(st, check_mask(ctx, mask));
  size_t bytes = mask_rows(mask) * mask->nblocks;
  if (!bitmap || cap < bytes) {
    st = nabla_fail(ctx, bitmap ? NABLA_BUFFER_TOO_SMALL : NABLA_INVALID_ARGUMENT,
                    "bitmap needs %zu bytes (has %zu)", bytes, bitmap ? cap : 0);
    goto done;
  }
  TRY_CL(st, ctx, clEnqueueReadBuffer(ctx->queue, mask->bitmap, CL_TRUE, 0, bytes, bitmap, 0, NULL, NULL));
done:
  return st;
}

nabla_status nabla_mask_read_flex(nabla_context *ctx, const nabla_mask *mask,
                                  int32_t *kv_num_blocks, size_t num_cap, int32_t *kv_indices,
                                  size_t idx_cap) {
  nabla_status st = NABLA_OK;
  int32_t *row_ptr = NULL, *col_idx = NULL;
  TRY(st, check_mask(ctx, mask));
  size_t rows = mask_rows(mask), nb = (size_t)mask->nblocks;
  if (!kv_num_blocks || !kv_indices || num_cap < rows || idx_cap < rows * nb) {
    st = nabla_fail(ctx, (!kv_num_blocks || !kv_indices) ? NABLA_INVALID_ARGUMENT : NABLA_BUFFER_TOO_SMALL,
                    "kv_num_blocks needs %zu entries and kv_indices %zu", rows, rows * nb);
    goto done;
  }
  row_ptr = malloc((rows + 1) * sizeof *row_ptr);
  col_idx = malloc((rows * nb + 1) * sizeof *col_idx);
  if (!row_ptr || !col_idx) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  TRY(st, nabla_mask_read_csr(ctx, mask, row_ptr, rows + 1, col_idx, rows * nb));
  memset(kv_indices, 0, rows * nb * sizeof *kv_indices);
  for (size_t r = 0; r < rows; r++) {
    int32_t n = row_ptr[r + 1] - row_ptr[r];
    kv_num_blocks[r] = n;
    memcpy(kv_indices + r * nb, col_idx + row_ptr[r], (size_t)n * sizeof *col_idx);
  }
done:
  free(row_ptr);
  free(col_idx);
  return st;
}
