/*
 * Mask build: pool (Q and K in one launch) -> reduced map (batched GEMM: fp32 FMA, cl/map.cl, or
 * on NVIDIA tensor cores from a split fp16 hi + lo pooling, cl/map_mma.cl) ->
 * softmax + CDF select with the STA window ORed in and the row lengths counted -> CSR gather
 * (offsets from the selection's group totals, rows copied from its compacted lists). Pure STA
 * and dense masks fill the bitmap, OR the window, count, scan and fill.
 * Everything stays on the device; nothing is read back unless asked for. FlexAttention's
 * layout is expanded from the CSR on the device too (csr_flex), into the caller's buffers. Pooled Q/K and the
 * reduced map live in the context's workspace, reused by the next build.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tune.h"
#include "variant.h"

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

/* A mask for `shape` with its block layout; its bitmap and CSR come from mask_lists. */
static nabla_status mask_new(nabla_context *ctx, const nabla_shape *shape, nabla_mask **out) {
  nabla_status st = NABLA_OK;
  nabla_mask *m = calloc(1, sizeof *m);
  if (!m) return nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
  m->shape = *shape;
  m->nblocks = nabla_shape_blocks(shape);
  m->cl_ctx = ctx->cl_ctx;
  TRY(st, nabla_block_starts_buffer(ctx, shape, &m->block_start));
  *out = m;
  m = NULL;
done:
  nabla_mask_release(m);
  return st;
}

/* The mask's bitmap, row_ptr and col_idx (col_idx with room for every block). */
static nabla_status mask_lists(nabla_context *ctx, nabla_mask *m) {
  nabla_status st = NABLA_OK;
  size_t rows = (size_t)m->shape.batch * m->shape.heads * m->nblocks;
  TRY(st, nabla_buffer_new(ctx, rows * m->nblocks, "block bitmap", &m->bitmap));
  TRY(st, nabla_buffer_new(ctx, (rows + 1) * sizeof(cl_int), "row_ptr", &m->row_ptr));
  TRY(st, nabla_buffer_new(ctx, rows * m->nblocks * sizeof(cl_int), "col_idx", &m->col_idx));
done:
  return st;
}

/* Window radii of the algorithm's STA part in block units (all zero without STA). */
typedef struct {
  cl_int on, Hb, Wb, rt, rh, rw;
} sta_window;

static sta_window window_of(const nabla_shape *s, const nabla_algo *algo) {
  sta_window w = {0, 1, 1, 0, 0, 0};
  if (!algo->sta) return w;
  w.on = 1;
  w.Hb = (s->grid_h + NABLA_TILE - 1) / NABLA_TILE;
  w.Wb = (s->grid_w + NABLA_TILE - 1) / NABLA_TILE;
  w.rt = algo->sta_t / 2, w.rh = algo->sta_h / 2, w.rw = algo->sta_w / 2;
  return w;
}

/* Work-group shape of the pooling: NV work-items per token row (16 bytes each), TS token
 * slices, NV * TS <= 256 (POOL_WG in cl/pool.cl) and within the device's limit. */
static void pool_local_size(const nabla_context *ctx, int D, nabla_dtype dtype, size_t local[3]) {
  size_t nv = (size_t)D / (nabla_dtype_size(dtype) == 4 ? 4 : 8), limit = 256;
  if (limit > ctx->caps.max_wg) limit = ctx->caps.max_wg;
  size_t ts = limit / nv;
  if (ts > 64) ts = 64; /* a block has at most 64 tokens */
  local[0] = nv, local[1] = ts ? ts : 1, local[2] = 1;
}

/* What the NABLA selection hands to the CSR step: every row's kept columns, compacted at
 * cols[row * ld ..] (over the reduced map, ld its row stride), and per work-group of the
 * selection (group_rows rows each) the sum of its rows' lengths at groups[g + 1]. */
typedef struct {
  cl_mem cols, groups;
  cl_int ld, group_rows;
} selection;

/* The reduced-map kernel for this shape (variants/variant.h says which) and whether it needs the
 * split pooling. The tensor-core kernel is built here, before anything is enqueued: if its
 * build fails, the variant is marked broken for the map on the context (the attention stage keeps
 * it) and the portable kernel is used. */
static nabla_status map_kernel(nabla_context *ctx, const nabla_shape *s, cl_kernel *out, int *split) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  int variant = nabla_map_variant_choose(ctx, s);
  *split = 0;
  if (variant != NABLA_VARIANT_PORTABLE) {
    const nabla_variant_map_ops *map = &nabla_variant_ops_of(variant)->map;
    char options[160];
    map->options(variant, s, options, sizeof options);
    st = nabla_program_get(ctx, map->program, options, &prog);
    if (st == NABLA_OK) st = nabla_kernel_create(ctx, prog, map->kernel, out);
    if (st == NABLA_OK) {
      /* Local memory that does not fit makes the variant ineligible for the map (not an
       * error: the portable kernel serves, and the note says why). */
      st = nabla_kernel_local_fits(ctx, *out, "the tensor-core reduced map");
      if (st == NABLA_OK) {
        *split = 1;
        return NABLA_OK;
      }
      clReleaseKernel(*out);
      *out = NULL;
    }
    if (nabla_variant_test_aid(variant) && st != NABLA_UNSUPPORTED) return st; /* a test aid: no fallback */
    st = NABLA_OK;
    char why[384];
    snprintf(why, sizeof why, "map: %.360s", ctx->error);
    nabla_variant_mark_broken(ctx, variant, NABLA_STAGE_MAP, why); /* attention may still use it */
    nabla_clear_error(ctx);
  }
  TRY(st, nabla_program_get(ctx, "map", "", &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "reduced_map", out));
done:
  return st;
}

/* Floats between the rows of the reduced map: Nb rounded up to 32, so that every row starts on
 * a 128-byte line. Measured on the H100 (Wan 14B shape, tensor-core map): rows of 1050 floats
 * put each 32-byte piece that a warp stores across two sectors, and the map took 0.29 ms;
 * aligned rows, 0.21 ms. */
static size_t map_stride(cl_int Nb) { return ((size_t)Nb + 31) / 32 * 32; }

/* Enqueues the pooling of Q and K and the reduced map into the workspace; *logits receives the
 * map buffer (row-major [B H][Nb][map_stride(Nb)] fp32, scaled by 1 / sqrt(D)). blas: the map
 * through CLBlast's batched GEMM (blas.c) instead of a map kernel. means: q and k are already
 * the fp32 block means [B H][Nb][D] (the pooling pass only converts them for the map). */
static nabla_status enqueue_map(nabla_context *ctx, const nabla_shape *s, cl_mem block_start,
                                nabla_dtype dtype, int means, cl_mem q, cl_mem k, int blas,
                                cl_uint num_wait, const cl_event *wait, cl_mem *logits) {
  nabla_status st = NABLA_OK;
  cl_mem pooled = NULL;
  cl_kernel pool = NULL, map = NULL;
  cl_program prog = NULL;
  cl_int D = s->head_dim, Nb = nabla_shape_blocks(s), BH = s->batch * s->heads;
  cl_int S = means ? Nb : s->seq, ld = (cl_int)map_stride(Nb);
  size_t rows = (size_t)BH * (size_t)Nb;
  int split = 0; /* pooled rows as fp16 hi + lo and a scale each, for the tensor-core map */
  if (!blas) TRY(st, map_kernel(ctx, s, &map, &split));
  /* Either 2 rows x D floats, or per row D + D halves (the same bytes) and one float scale. */
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_POOLED, 2 * rows * (D + (size_t)split) * sizeof(float), "pooled Q and K", &pooled));
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_MAP, rows * (size_t)ld * sizeof(float), "reduced map", logits));

  size_t pool_local[3], pool_global[3];
  pool_local_size(ctx, D, dtype, pool_local);
  char pool_options[128];
  snprintf(pool_options, sizeof pool_options, "%s -DPOOL_SPLIT=%d -DPOOL_TS=%zu%s", nabla_dtype_define(dtype), split,
           pool_local[1], means ? " -DPOOL_UNIT=1" : "");
  TRY(st, nabla_program_get(ctx, "pool", pool_options, &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "pool", &pool));
  pool_global[0] = pool_local[0], pool_global[1] = (size_t)Nb * pool_local[1], pool_global[2] = 2 * (size_t)BH;
  TRY(st, NABLA_SET_ARGS(ctx, pool, "pool", NABLA_ARG(q), NABLA_ARG(k), NABLA_ARG(pooled),
                         NABLA_ARG(block_start), NABLA_ARG(S), NABLA_ARG(D), NABLA_ARG(Nb), NABLA_ARG(BH)));
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, pool, 3, NULL, pool_global, pool_local, num_wait, wait, nabla_profile_slot(ctx, "pool")));
  /* Start pooling now: the rest is host work the device need not wait for (measured on the
   * H100: host set-up was most of the gap between the stages' sum and the whole build). */
  TRY_CL(st, ctx, clFlush(ctx->queue));

  /* logits[bh] = qp[bh] · kp[bh]ᵀ / sqrt(D), row-major Nb x Nb per (b, h). */
  cl_float scale = 1.0f / sqrtf((float)D);
  if (blas) {
    TRY(st, nabla_blas_map(ctx, pooled, *logits, Nb, ld, D, BH, scale, nabla_profile_slot(ctx, "map")));
    goto done;
  }
  size_t tiles = ((size_t)Nb + 127) / 128;
  size_t map_global[3] = {16 * tiles, 16 * tiles, (size_t)BH}, map_local[3] = {16, 16, 1};
  if (split) { /* (column splits, 128-row strips, B H) work-groups of 256 */
    size_t col_tiles = ((size_t)Nb + 31) / 32, want = 8 * (size_t)ctx->caps.compute_units;
    size_t splits = (want + tiles * BH - 1) / (tiles * BH);
    if (splits > col_tiles) splits = col_tiles;
    map_global[0] = 256 * splits, map_global[1] = tiles, map_local[0] = 256, map_local[1] = 1;
    TRY(st, NABLA_SET_ARGS(ctx, map, "reduced_map_mma", NABLA_ARG(pooled), NABLA_ARG(*logits), NABLA_ARG(Nb),
                           NABLA_ARG(ld), NABLA_ARG(BH), NABLA_ARG(scale)));
  } else { /* 128 x 128 tiles, work-groups of 16 x 16 */
    TRY(st, NABLA_SET_ARGS(ctx, map, "reduced_map", NABLA_ARG(pooled), NABLA_ARG(*logits), NABLA_ARG(Nb),
                           NABLA_ARG(ld), NABLA_ARG(D), NABLA_ARG(BH), NABLA_ARG(scale)));
  }
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, map, 3, NULL, map_global, map_local, 0, NULL, nabla_profile_slot(ctx, "map")));

done:
  if (pool) clReleaseKernel(pool);
  if (map) clReleaseKernel(map);
  return st;
}

/* Enqueues the pooling and the reduced map (enqueue_map), then the selection (with the STA window)
 * into m->bitmap, the row lengths into m->row_ptr[1..] and each row's kept columns over its
 * reduced map and the work-groups' totals, both described in *out (for enqueue_csr). */
static nabla_status enqueue_nabla(nabla_context *ctx, nabla_mask *m, nabla_dtype dtype, int means,
                                  const nabla_algo *algo, cl_mem q, cl_mem k,
                                  const nabla_params *sel, cl_uint num_wait, const cl_event *wait,
                                  selection *out) {
  nabla_status st = NABLA_OK;
  const nabla_shape *s = &m->shape;
  cl_mem logits = NULL, groups = NULL;
  cl_kernel select = NULL;
  cl_program prog = NULL;
  cl_int Nb = m->nblocks;
  size_t rows = (size_t)s->batch * s->heads * (size_t)Nb;

  /* Work-items per row: enough that each holds at most nabla_select_values_max values (48, on
   * AMD GPUs 20), as far as the work-group allows. */
  size_t sel_wg = (size_t)nabla_params_get(sel, "SEL_WG", 256), tpr = 32;
  const size_t values_max = (size_t)nabla_select_values_max(ctx);
  while ((size_t)Nb > values_max * tpr && tpr < sel_wg) tpr *= 2;
  int per_thread = (int)(((size_t)Nb + tpr - 1) / tpr);
  per_thread = (per_thread + 3) / 4 * 4; /* fewer distinct programs */
  if (per_thread > 64) { /* cl/select.cl keeps a work-item's decisions in one 64-bit word */
    size_t fit = 32; /* the least SEL_WG (a power of two) whose rows hold Nb in 64 values each */
    while (fit * 64 < (size_t)Nb) fit *= 2;
    st = nabla_fail(ctx, NABLA_UNSUPPORTED,
                    "a row of %d blocks needs %d values per work-item of the selection (at most 64): "
                    "tune SEL_WG to at least %zu", Nb, per_thread, fit);
    goto done;
  }
  TRY(st, enqueue_map(ctx, s, m->block_start, dtype, means, q, k, nabla_params_get(sel, "MAP_BLAS", 0) == 1,
                      num_wait, wait, &logits));
  /* The mask's own buffers now, while the device pools: creating them is host work. */
  TRY(st, mask_lists(ctx, m));
  size_t rows_per_group = sel_wg / tpr, sel_groups = (rows + rows_per_group - 1) / rows_per_group;
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_GROUPS, (sel_groups + 1) * sizeof(cl_int), "selection group totals", &groups));

  char options[256];
  snprintf(options, sizeof options, "%s", nabla_dtype_define(dtype));
  nabla_params_options(sel, options, sizeof options);
  size_t used = strlen(options);
  snprintf(options + used, sizeof options - used, " -DSEL_TPR=%zu -DSEL_PT=%d%s", tpr, per_thread,
           ctx->caps.vendor == NABLA_VENDOR_NVIDIA ? " -DSEL_NV_BARRIER=1" : "");
  TRY(st, nabla_program_get(ctx, "select", options, &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "select_cdf", &select));
  sta_window w = window_of(s, algo);
  cl_float thr = (cl_float)algo->thr;
  cl_int nrows = (cl_int)rows, ld = (cl_int)map_stride(Nb);
  TRY(st, NABLA_SET_ARGS(ctx, select, "select_cdf", NABLA_ARG(logits), NABLA_ARG(m->bitmap),
                         NABLA_ARG(m->row_ptr), NABLA_ARG(groups), NABLA_ARG(Nb), NABLA_ARG(ld),
                         NABLA_ARG(nrows), NABLA_ARG(thr), NABLA_ARG(w.on), NABLA_ARG(w.Hb), NABLA_ARG(w.Wb),
                         NABLA_ARG(w.rt), NABLA_ARG(w.rh), NABLA_ARG(w.rw)));
  size_t sel_global = sel_groups * sel_wg;
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, select, 1, NULL, &sel_global, &sel_wg, 0, NULL, nabla_profile_slot(ctx, "select")));
  out->cols = logits;
  out->ld = ld;
  out->groups = groups;
  out->group_rows = (cl_int)rows_per_group;
done:
  if (select) clReleaseKernel(select);
  return st;
}

/* ORs the STA window into every row of m->bitmap (pure STA masks; NABLA+STA fuses it into
 * the selection). */
static nabla_status enqueue_sta(nabla_context *ctx, nabla_mask *m, const nabla_algo *algo) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  cl_kernel kernel = NULL;
  const nabla_shape *s = &m->shape;
  cl_int Nb = m->nblocks, BH = s->batch * s->heads;
  sta_window w = window_of(s, algo);
  TRY(st, nabla_program_get(ctx, "sta", "", &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "sta_or", &kernel));
  TRY(st, NABLA_SET_ARGS(ctx, kernel, "sta_or", NABLA_ARG(m->bitmap), NABLA_ARG(Nb), NABLA_ARG(BH),
                         NABLA_ARG(w.Hb), NABLA_ARG(w.Wb), NABLA_ARG(w.rt), NABLA_ARG(w.rh),
                         NABLA_ARG(w.rw)));
  size_t global[2] = {(size_t)Nb, (size_t)Nb};
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 2, NULL, global, NULL, 0, NULL, nabla_profile_slot(ctx, "sta")));
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

/* CSR of m->bitmap. Without a selection (sel == NULL): row lengths, their prefix sum, the
 * column indices from the bitmap. After the NABLA selection, which wrote the row lengths and
 * the compacted columns: one gather whose work-groups add up the selection's work-group totals
 * before their own (one per group_rows rows, far fewer than rows) and the lengths inside it,
 * and copy the columns. */
/* cl/csr.cl's work-groups (CSR_WG, CSR_TPR there): CSR_WG work-items, CSR_ROWS rows each. */
#define CSR_WG 256
#define CSR_ROWS (CSR_WG / 32)

static nabla_status enqueue_csr(nabla_context *ctx, nabla_mask *m, const selection *sel, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  cl_kernel count = NULL, scan = NULL, fill = NULL;
  const nabla_shape *s = &m->shape;
  cl_int Nb = m->nblocks, R = s->batch * s->heads * m->nblocks;
  size_t wg = CSR_WG, scan_wg = CSR_WG;
  size_t global = ((size_t)R + CSR_ROWS - 1) / CSR_ROWS * wg;
  TRY(st, nabla_program_get(ctx, "csr", "", &prog));
  if (sel) {
    cl_int G = (R + sel->group_rows - 1) / sel->group_rows;
    TRY(st, nabla_kernel_create(ctx, prog, "csr_gather", &fill));
    TRY(st, NABLA_SET_ARGS(ctx, fill, "csr_gather", NABLA_ARG(sel->cols), NABLA_ARG(sel->groups),
                           NABLA_ARG(m->row_ptr), NABLA_ARG(m->col_idx), NABLA_ARG(sel->ld), NABLA_ARG(R),
                           NABLA_ARG(sel->group_rows)));
    global = (size_t)G * wg;
  } else {
    TRY(st, nabla_kernel_create(ctx, prog, "csr_scan", &scan));
    TRY(st, nabla_kernel_create(ctx, prog, "csr_fill", &fill));
    TRY(st, nabla_kernel_create(ctx, prog, "csr_count", &count));
    TRY(st, NABLA_SET_ARGS(ctx, scan, "csr_scan", NABLA_ARG(m->row_ptr), NABLA_ARG(R)));
    TRY(st, NABLA_SET_ARGS(ctx, fill, "csr_fill", NABLA_ARG(m->bitmap), NABLA_ARG(m->row_ptr),
                           NABLA_ARG(m->col_idx), NABLA_ARG(Nb), NABLA_ARG(R)));
    TRY(st, NABLA_SET_ARGS(ctx, count, "csr_count", NABLA_ARG(m->bitmap), NABLA_ARG(m->row_ptr), NABLA_ARG(Nb),
                           NABLA_ARG(R)));
    TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, count, 1, NULL, &global, &wg, 0, NULL, nabla_profile_slot(ctx, "csr")));
    TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, scan, 1, NULL, &scan_wg, &scan_wg, 0, NULL, nabla_profile_slot(ctx, "csr")));
  }
  cl_event *slot = nabla_profile_slot(ctx, "csr");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, fill, 1, NULL, &global, &wg, 0, NULL, NABLA_EVENT_OUT(slot, done_event)));
  nabla_profile_share(slot, done_event);
done:
  if (count) clReleaseKernel(count);
  if (scan) clReleaseKernel(scan);
  if (fill) clReleaseKernel(fill);
  return st;
}

/* The mask build behind nabla_mask_build_params and mask_build_tuned (means: q and k
 * are fp32 block means [B, H, Nb, D], checked as such). */
static nabla_status mask_build(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                               nabla_dtype dtype, int means, cl_mem q, cl_mem k, const nabla_params *sel,
                               nabla_mask **out, cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_status st = NABLA_OK;
  nabla_mask *m = NULL;
  if (out) *out = NULL; /* on every failure, checks included */
  TRY(st, nabla_check_common(ctx, shape, dtype, num_wait, wait));
  if (!out) {
    st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "out is NULL");
    goto done;
  }
  TRY(st, check_algo(ctx, algo, shape));
  if (algo->nabla) {
    nabla_shape pooled = {shape->batch, shape->heads, nabla_shape_blocks(shape), shape->head_dim, 0, 0, 0};
    TRY(st, nabla_check_tensor(ctx, means ? "q_means" : "q", q, means ? &pooled : shape, dtype));
    TRY(st, nabla_check_tensor(ctx, means ? "k_means" : "k", k, means ? &pooled : shape, dtype));
  }
  TRY(st, mask_new(ctx, shape, &m));
  selection chosen = {NULL, NULL, 0, 0}; /* NABLA only */
  if (algo->nabla) {
    TRY(st, enqueue_nabla(ctx, m, dtype, means, algo, q, k, sel, num_wait, wait, &chosen));
  } else {
    TRY(st, mask_lists(ctx, m));
    cl_uchar value = algo->sta ? 0 : 1; /* pure STA starts empty; dense keeps everything */
    size_t bytes = (size_t)shape->batch * shape->heads * m->nblocks * m->nblocks;
    TRY_CL(st, ctx, clEnqueueFillBuffer(ctx->queue, m->bitmap, &value, 1, 0, bytes, num_wait, wait, nabla_profile_slot(ctx, "fill")));
  }
  if (algo->sta && !algo->nabla) TRY(st, enqueue_sta(ctx, m, algo));
  TRY(st, enqueue_csr(ctx, m, algo->nabla ? &chosen : NULL, done_event));
  *out = m;
  m = NULL;
done:
  nabla_mask_release(m);
  return st;
}

nabla_status nabla_mask_build_params(nabla_context *ctx, const nabla_algo *algo,
                                     const nabla_shape *shape, nabla_dtype dtype, cl_mem q,
                                     cl_mem k, const nabla_params *sel, nabla_mask **out,
                                     cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  return mask_build(ctx, algo, shape, dtype, 0, q, k, sel, out, num_wait, wait, done_event);
}

/* mask_build with the selection's tuned parameters for (dtype, head dim, shape class). */
static nabla_status mask_build_tuned(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                                     nabla_dtype dtype, int means, cl_mem q, cl_mem k, nabla_mask **out,
                                     cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  nabla_params sel;
  if (out) *out = NULL; /* on every failure, checks included */
  if (!ctx || !shape) return ctx ? nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "shape is NULL") : NABLA_INVALID_ARGUMENT;
  nabla_params_lookup(ctx, "select", dtype, shape->head_dim, nabla_shape_class(shape), &sel);
  return mask_build(ctx, algo, shape, dtype, means, q, k, &sel, out, num_wait, wait, done_event);
}

nabla_status nabla_mask_build(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                              nabla_dtype dtype, cl_mem q, cl_mem k, nabla_mask **out,
                              cl_uint num_wait, const cl_event *wait, cl_event *done_event) {
  return mask_build_tuned(ctx, algo, shape, dtype, 0, q, k, out, num_wait, wait, done_event);
}

nabla_status nabla_mask_build_from_means(nabla_context *ctx, const nabla_algo *algo,
                                         const nabla_shape *shape, cl_mem q_means, cl_mem k_means,
                                         nabla_mask **out, cl_uint num_wait, const cl_event *wait,
                                         cl_event *done_event) {
  return mask_build_tuned(ctx, algo, shape, NABLA_F32, 1, q_means, k_means, out, num_wait, wait, done_event);
}

nabla_status nabla_mask_from_bitmap(nabla_context *ctx, const nabla_shape *shape,
                                    const uint8_t *bitmap, nabla_mask **out) {
  nabla_status st = NABLA_OK;
  nabla_mask *m = NULL;
  cl_event done_event = NULL;
  if (out) *out = NULL; /* on every failure, checks included */
  TRY(st, nabla_check_common(ctx, shape, NABLA_F32, 0, NULL));
  if (!bitmap || !out) {
    st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%s is NULL", bitmap ? "out" : "bitmap");
    goto done;
  }
  TRY(st, mask_new(ctx, shape, &m));
  TRY(st, mask_lists(ctx, m));
  size_t bytes = (size_t)shape->batch * shape->heads * m->nblocks * m->nblocks;
  for (size_t i = 0; i < bytes; i++)
    if (bitmap[i] > 1) {
      st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "bitmap[%zu] = %u: entries must be 0 or 1", i, bitmap[i]);
      goto done;
    }
  TRY_CL(st, ctx, clEnqueueWriteBuffer(ctx->queue, m->bitmap, CL_TRUE, 0, bytes, bitmap, 0, NULL, NULL));
  TRY(st, enqueue_csr(ctx, m, NULL, &done_event));
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

/* The memory object `buf` lives in (itself, or a sub-buffer's parent) and its offset there. */
static void mem_base(cl_mem buf, cl_mem *base, size_t *offset) {
  cl_mem parent = NULL;
  *base = buf;
  *offset = 0;
  if (clGetMemObjectInfo(buf, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) == CL_SUCCESS && parent &&
      clGetMemObjectInfo(buf, CL_MEM_OFFSET, sizeof *offset, offset, NULL) == CL_SUCCESS)
    *base = parent;
  else
    *offset = 0;
}

/* kv_num_blocks and kv_indices (already valid and large enough): writable, apart from each
 * other and from the mask's own buffers, which the kernel reads. */
static nabla_status check_flex_outputs(nabla_context *ctx, const nabla_mask *m, cl_mem num, size_t num_bytes,
                                       cl_mem idx, size_t idx_bytes) {
  const char *names[2] = {"kv_num_blocks", "kv_indices"};
  cl_mem bufs[2] = {num, idx}, base[2];
  size_t off[2], bytes[2] = {num_bytes, idx_bytes};
  for (int i = 0; i < 2; i++) {
    cl_mem_flags flags = 0;
    if (clGetMemObjectInfo(bufs[i], CL_MEM_FLAGS, sizeof flags, &flags, NULL) == CL_SUCCESS &&
        (flags & CL_MEM_READ_ONLY))
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%s was created CL_MEM_READ_ONLY; the kernel writes it", names[i]);
    mem_base(bufs[i], &base[i], &off[i]);
    if (base[i] == m->row_ptr || base[i] == m->col_idx || base[i] == m->bitmap || base[i] == m->block_start)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%s is one of the mask's own buffers", names[i]);
  }
  if (base[0] == base[1] && off[0] < off[1] + bytes[1] && off[1] < off[0] + bytes[0])
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT,
                      "kv_num_blocks and kv_indices overlap (bytes %zu..%zu and %zu..%zu of one buffer)", off[0],
                      off[0] + bytes[0], off[1], off[1] + bytes[1]);
  return NABLA_OK;
}

nabla_status nabla_mask_write_flex(nabla_context *ctx, const nabla_mask *mask, cl_mem kv_num_blocks,
                                   cl_mem kv_indices, cl_uint num_wait, const cl_event *wait,
                                   cl_event *done_event) {
  nabla_status st = NABLA_OK;
  cl_program prog = NULL;
  cl_kernel kernel = NULL;
  char layout[96];
  TRY(st, check_mask(ctx, mask));
  TRY(st, nabla_check_common(ctx, &mask->shape, NABLA_F32, num_wait, wait)); /* the wait list */
  const nabla_shape *s = &mask->shape;
  cl_int Nb = mask->nblocks, R = (cl_int)mask_rows(mask);
  size_t num_bytes = (size_t)R * sizeof(cl_int), idx_bytes = num_bytes * (size_t)Nb;
  snprintf(layout, sizeof layout, "[%d,%d,%d] int32", s->batch, s->heads, Nb);
  TRY(st, nabla_check_buffer(ctx, "kv_num_blocks", kv_num_blocks, num_bytes, layout));
  snprintf(layout, sizeof layout, "[%d,%d,%d,%d] int32", s->batch, s->heads, Nb, Nb);
  TRY(st, nabla_check_buffer(ctx, "kv_indices", kv_indices, idx_bytes, layout));
  TRY(st, check_flex_outputs(ctx, mask, kv_num_blocks, num_bytes, kv_indices, idx_bytes));
  size_t wg = CSR_WG, global = ((size_t)R + CSR_ROWS - 1) / CSR_ROWS * wg;
  TRY(st, nabla_program_get(ctx, "csr", "", &prog));
  TRY(st, nabla_kernel_create(ctx, prog, "csr_flex", &kernel));
  TRY(st, NABLA_SET_ARGS(ctx, kernel, "csr_flex", NABLA_ARG(mask->row_ptr), NABLA_ARG(mask->col_idx),
                         NABLA_ARG(kv_num_blocks), NABLA_ARG(kv_indices), NABLA_ARG(Nb), NABLA_ARG(R)));
  cl_event *slot = nabla_profile_slot(ctx, "flex");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 1, NULL, &global, &wg, num_wait, wait,
                                         NABLA_EVENT_OUT(slot, done_event)));
  nabla_profile_share(slot, done_event);
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

nabla_status nabla_mask_read_flex(nabla_context *ctx, const nabla_mask *mask,
                                  int32_t *kv_num_blocks, size_t num_cap, int32_t *kv_indices,
                                  size_t idx_cap) {
  nabla_status st = NABLA_OK;
  cl_mem num = NULL, idx = NULL;
  TRY(st, check_mask(ctx, mask));
  size_t rows = mask_rows(mask), nb = (size_t)mask->nblocks;
  if (!kv_num_blocks || !kv_indices || num_cap < rows || idx_cap < rows * nb) {
    st = nabla_fail(ctx, (!kv_num_blocks || !kv_indices) ? NABLA_INVALID_ARGUMENT : NABLA_BUFFER_TOO_SMALL,
                    "kv_num_blocks needs %zu entries and kv_indices %zu", rows, rows * nb);
    goto done;
  }
  /* Expanded on the device (nabla_mask_write_flex), then read: one conversion for both. */
  TRY(st, nabla_buffer_new(ctx, rows * sizeof(cl_int), "kv_num_blocks", &num));
  TRY(st, nabla_buffer_new(ctx, rows * nb * sizeof(cl_int), "kv_indices", &idx));
  TRY(st, nabla_mask_write_flex(ctx, mask, num, idx, 0, NULL, NULL));
  TRY_CL(st, ctx, clEnqueueReadBuffer(ctx->queue, num, CL_TRUE, 0, rows * sizeof(cl_int), kv_num_blocks, 0, NULL, NULL));
  TRY_CL(st, ctx, clEnqueueReadBuffer(ctx->queue, idx, CL_TRUE, 0, rows * nb * sizeof(cl_int), kv_indices, 0, NULL, NULL));
done:
  if (num) clReleaseMemObject(num);
  if (idx) clReleaseMemObject(idx);
  return st;
}

nabla_status nabla_reduced_map_read(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                    cl_mem q, cl_mem k, int blas, float *logits) {
  nabla_status st = NABLA_OK;
  cl_mem starts = NULL, map = NULL;
  TRY(st, nabla_check_common(ctx, shape, dtype, 0, NULL));
  TRY(st, nabla_check_tensor(ctx, "q", q, shape, dtype));
  TRY(st, nabla_check_tensor(ctx, "k", k, shape, dtype));
  cl_int Nb = nabla_shape_blocks(shape);
  size_t nb = (size_t)Nb, rows = (size_t)shape->batch * shape->heads * nb;
  TRY(st, nabla_block_starts_buffer(ctx, shape, &starts));
  TRY(st, enqueue_map(ctx, shape, starts, dtype, 0, q, k, blas, 0, NULL, &map));
  const size_t origin[3] = {0, 0, 0}, region[3] = {nb * sizeof(float), rows, 1};
  TRY_CL(st, ctx, clEnqueueReadBufferRect(ctx->queue, map, CL_TRUE, origin, origin, region,
                                          map_stride(Nb) * sizeof(float), 0, nb * sizeof(float), 0,
                                          logits, 0, NULL, NULL));
done:
  if (starts) clReleaseMemObject(starts);
  return st;
}
