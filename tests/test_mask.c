/* Device mask build (pool, map, select, STA, CSR) against the float64 reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "internal.h"
#include "tune.h"

#define CTX_OR_SKIP(state) \
  nabla_context *ctx = *(state); \
  if (!ctx) skip()

/* Builds the mask of `algo_text` on the device and compares it with the reference: rows must be
 * identical except rows the reference flags as within 1e-6 of the threshold. Returns density. */
static double check_mask_params(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, const char *algo_text,
                                uint64_t seed, int video_like, const nabla_params *params) {
  nabla_algo algo;
  char err[256];
  assert_int_equal(nabla_algo_parse(algo_text, &algo, err, sizeof err), NABLA_OK);
  size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim;
  int nb = nabla_shape_blocks(&s);
  size_t rows = (size_t)s.batch * s.heads * nb, cells = rows * nb;
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *tmp = malloc(n * sizeof *tmp);
  uint8_t *ref = malloc(cells), *dev = malloc(cells), *near = malloc(rows);
  int32_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr), *col_idx = malloc(cells * sizeof *col_idx);
  int32_t *ref_ptr = malloc((rows + 1) * sizeof *ref_ptr), *ref_idx = malloc(cells * sizeof *ref_idx);
  if (video_like) {
    tu_fill_video_like(&s, tmp, &seed, 1.0);
    nabla_ref_reorder(&s, NABLA_RASTER_TO_TILE, tmp, q);
    tu_fill_video_like(&s, tmp, &seed, 1.0);
    nabla_ref_reorder(&s, NABLA_RASTER_TO_TILE, tmp, k);
  } else {
    tu_fill_normal(q, n, &seed, 3.0);
    tu_fill_normal(k, n, &seed, 3.0);
  }
  tu_quantize(q, n, dtype);
  tu_quantize(k, n, dtype);
  assert_int_equal(nabla_ref_mask(&s, &algo, q, k, ref, near, 1e-6), NABLA_OK);

  cl_mem dq = tu_buffer_from(ctx, q, n, dtype), dk = tu_buffer_from(ctx, k, n, dtype);
  nabla_mask *mask = NULL;
  nabla_status st = params ? nabla_mask_build_params(ctx, &algo, &s, dtype, dq, dk, params, &mask, 0, NULL, NULL)
                           : nabla_mask_build(ctx, &algo, &s, dtype, dq, dk, &mask, 0, NULL, NULL);
  if (st != NABLA_OK) fail_msg("nabla_mask_build(%s): %s", algo_text, nabla_last_error(ctx));
  assert_int_equal(nabla_mask_read_bitmap(ctx, mask, dev, cells), NABLA_OK);
  size_t differing = 0, near_rows = 0;
  for (size_t r = 0; r < rows; r++) {
    near_rows += near[r];
    if (memcmp(ref + r * nb, dev + r * nb, nb) == 0) continue;
    if (!near[r]) fail_msg("%s %s: row %zu differs from the reference and is not near the threshold",
                           algo_text, nabla_dtype_name(dtype), r);
    differing++;
  }
  /* Ambiguous rows must stay rare, or the comparison above would prove little. */
  if (near_rows * 20 > rows) fail_msg("%s: %zu of %zu rows flagged near the threshold", algo_text, near_rows, rows);
  (void)differing;
  /* CSR read-back equals the CSR of the device bitmap; stats agree with it. */
  int64_t kept = nabla_ref_csr(&s, dev, ref_ptr, ref_idx), dev_kept = -1;
  double density = -1;
  assert_int_equal(nabla_mask_stats(ctx, mask, &dev_kept, &density), NABLA_OK);
  assert_int_equal(dev_kept, kept);
  assert_int_equal(nabla_mask_read_csr(ctx, mask, row_ptr, rows + 1, col_idx, (size_t)kept), NABLA_OK);
  assert_memory_equal(row_ptr, ref_ptr, (rows + 1) * sizeof *row_ptr);
  assert_memory_equal(col_idx, ref_idx, (size_t)kept * sizeof *col_idx);
  assert_true(fabs(density - (double)kept / (double)cells) < 1e-12);
  /* Every row of a NABLA mask keeps at least one block (its arg-max). */
  if (algo.nabla)
    for (size_t r = 0; r < rows; r++) assert_true(row_ptr[r + 1] > row_ptr[r]);

  nabla_mask_release(mask);

  /* The same mask from the block means (fp32, computed here in float64): every row equal to the
   * reference's but those near the threshold. */
  size_t pn = rows * s.head_dim;
  double *qp = malloc(pn * sizeof *qp), *kp = malloc(pn * sizeof *kp);
  nabla_ref_pool(&s, q, qp);
  nabla_ref_pool(&s, k, kp);
  cl_mem mq = tu_buffer_from(ctx, qp, pn, NABLA_F32), mk = tu_buffer_from(ctx, kp, pn, NABLA_F32);
  if (nabla_mask_build_from_means(ctx, &algo, &s, mq, mk, &mask, 0, NULL, NULL) != NABLA_OK)
    fail_msg("nabla_mask_build_from_means(%s): %s", algo_text, nabla_last_error(ctx));
  assert_int_equal(nabla_mask_read_bitmap(ctx, mask, dev, cells), NABLA_OK);
  for (size_t r = 0; r < rows; r++)
    if (memcmp(ref + r * nb, dev + r * nb, nb) != 0 && !near[r])
      fail_msg("%s from means: row %zu differs from the reference and is not near the threshold", algo_text, r);
  nabla_mask_release(mask);
  clReleaseMemObject(mq);
  clReleaseMemObject(mk);
  free(qp), free(kp);

  clReleaseMemObject(dq);
  clReleaseMemObject(dk);
  free(q), free(k), free(tmp), free(ref), free(dev), free(near), free(row_ptr), free(col_idx);
  free(ref_ptr), free(ref_idx);
  return density;
}

/* check_mask_params with the tuned selection parameters. */
static double check_mask(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, const char *algo_text,
                         uint64_t seed, int video_like) {
  return check_mask_params(ctx, s, dtype, algo_text, seed, video_like, NULL);
}

static void test_thresholds_ragged_grid(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {1, 3, 720, 64, 3, 12, 20};
  const char *algos[] = {"nabla-0.2", "nabla-0.5", "nabla-0.9", "nabla-1.0"};
  double prev = 0;
  for (int i = 0; i < 4; i++) {
    double d = check_mask(ctx, s, NABLA_F32, algos[i], 5, 1);
    assert_true(d >= prev); /* more mass retained keeps more blocks */
    prev = d;
  }
  assert_true(prev == 1.0); /* thr = 1 keeps everything */
}

/* Long rows: more blocks than 16 per work-item of a 32-wide row, so the selection spreads a row
 * over 64+ work-items and the map over several 128-wide tiles with a ragged last tile; NABLA
 * with the window fused into the selection, on a ragged 12x44x76 grid (Nb = 720). */
static void test_long_rows(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {2, 1, 12 * 44 * 76, 24, 12, 44, 76};
  check_mask(ctx, s, NABLA_BF16, "nabla-0.8", 71, 1);
  check_mask(ctx, s, NABLA_F32, "nabla-0.5_sta-3-3-3", 72, 1);
}

/* Many rows: 2400 rows are 300 work-groups of the selection, more than the 256 work-items with
 * which each work-group of the CSR gather adds up the totals of the groups before it. Then a
 * video grid of another block layout in the same context, which keeps the last layout it
 * uploaded: it must not hand out the plain sequence's. */
static void test_many_rows(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {2, 4, 300 * 64, 16, 0, 0, 0};
  check_mask(ctx, s, NABLA_F16, "nabla-0.6", 73, 0);
  nabla_shape g = {1, 2, 3 * 12 * 20, 32, 3, 12, 20};
  check_mask(ctx, g, NABLA_F32, "nabla-0.5", 74, 1);
}

/* The selection's work-group sizes: one row per work-group (SEL_WG 32) and rows sharing a
 * work-group (64, 256): 126 rows of 63 blocks (spare rows in the last group of 8), and 720 rows
 * of 720 blocks with the window fused in (24 values per work-item). */
static void test_selection_groups(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {2, 1, 3 * 20 * 52, 16, 3, 20, 52}, g = {1, 1, 12 * 44 * 76, 8, 12, 44, 76};
  const int wgs[] = {32, 64, 256};
  for (int i = 0; i < 3; i++) {
    nabla_params p = {1, {"SEL_WG"}, {wgs[i]}, "test"};
    check_mask_params(ctx, s, NABLA_BF16, "nabla-0.6", 80 + i, 1, &p);
    check_mask_params(ctx, g, NABLA_F32, "nabla-0.5_sta-3-3-3", 90 + i, 1, &p);
  }
}

static void test_config_forms_and_dtypes(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {3, 1, 234, 32, 2, 9, 13}; /* batch 3, ragged 2x9x13 */
  const char *algos[] = {"nabla-0.7", "sta-3-3-3", "nabla-0.6_sta-3-1-1", "dense"};
  nabla_dtype dts[] = {NABLA_F32, NABLA_F16, NABLA_BF16};
  for (int a = 0; a < 4; a++)
    for (int d = 0; d < 3; d++) check_mask(ctx, s, dts[d], algos[a], 40 + a * 3 + d, 1);
}

static void test_head_dims_plain_sequence(void **state) {
  CTX_OR_SKIP(state);
  int dims[] = {32, 48, 64, 128};
  for (int i = 0; i < 4; i++) {
    nabla_shape s = {2, 2, 1000, dims[i], 0, 0, 0};
    check_mask(ctx, s, NABLA_F32, "nabla-0.5", 70 + i, 0);
  }
}

static void test_sta_densities_exact(void **state) {
  CTX_OR_SKIP(state);
  /* docs/algorithm.md §5: block grid 21x5x10 and 21x3x6. */
  struct { int t, h, w; const char *algo; double percent; } cases[] = {
      {21, 40, 80, "sta-11-3-3", 6.64}, {21, 40, 80, "sta-11-5-5", 15.24}, {21, 40, 80, "sta-3-3-3", 2.01},
      {21, 24, 48, "sta-11-3-3", 15.76}, {21, 24, 48, "sta-11-5-5", 30.39}, {21, 24, 48, "sta-3-3-3", 4.78},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    nabla_shape s = {1, 1, cases[i].t * cases[i].h * cases[i].w, 8, cases[i].t, cases[i].h, cases[i].w};
    nabla_algo algo;
    assert_int_equal(nabla_algo_parse(cases[i].algo, &algo, NULL, 0), NABLA_OK);
    nabla_mask *mask = NULL;
    /* Pure STA reads neither Q nor K. */
    assert_int_equal(nabla_mask_build(ctx, &algo, &s, NABLA_F32, NULL, NULL, &mask, 0, NULL, NULL), NABLA_OK);
    double density = 0;
    assert_int_equal(nabla_mask_stats(ctx, mask, NULL, &density), NABLA_OK);
    assert_true(fabs(round(density * 10000.0) / 100.0 - cases[i].percent) < 1e-9);
    nabla_mask_release(mask);
  }
}

static void test_near_threshold_rows(void **state) {
  CTX_OR_SKIP(state);
  /* Identical pooled keys make exact ties and exact-threshold rows: both may go either way,
   * the comparison accepts them only because the reference flags them. */
  nabla_shape s = {1, 2, 512, 16, 0, 0, 0};
  size_t n = (size_t)2 * 512 * 16;
  double *q = calloc(n, sizeof *q), *k = calloc(n, sizeof *k);
  uint64_t seed = 3;
  tu_fill_normal(q, n, &seed, 1.0);
  for (size_t i = 0; i < n; i++) k[i] = (double)((i / 16) % 2); /* two distinct key blocks patterns */
  nabla_algo algo = {1, 0.5, 0, 0, 0, 0};
  uint8_t *ref = malloc(2 * 8 * 8), *near = malloc(2 * 8), *dev = malloc(2 * 8 * 8);
  assert_int_equal(nabla_ref_mask(&s, &algo, q, k, ref, near, 1e-6), NABLA_OK);
  cl_mem dq = tu_buffer_from(ctx, q, n, NABLA_F32), dk = tu_buffer_from(ctx, k, n, NABLA_F32);
  nabla_mask *mask = NULL;
  assert_int_equal(nabla_mask_build(ctx, &algo, &s, NABLA_F32, dq, dk, &mask, 0, NULL, NULL), NABLA_OK);
  assert_int_equal(nabla_mask_read_bitmap(ctx, mask, dev, 128), NABLA_OK);
  for (int r = 0; r < 16; r++)
    if (memcmp(ref + r * 8, dev + r * 8, 8) != 0) assert_true(near[r]);
  nabla_mask_release(mask);
  clReleaseMemObject(dq);
  clReleaseMemObject(dk);
  free(q), free(k), free(ref), free(near), free(dev);
}

static void test_nan_rows_keep_everything(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {1, 1, 256, 16, 0, 0, 0};
  size_t n = 256 * 16;
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k);
  uint64_t seed = 9;
  tu_fill_normal(q, n, &seed, 2.0);
  tu_fill_normal(k, n, &seed, 2.0);
  q[64 * 16 + 3] = NAN; /* poisons the pooled query of block 1 */
  cl_mem dq = tu_buffer_from(ctx, q, n, NABLA_F32), dk = tu_buffer_from(ctx, k, n, NABLA_F32);
  nabla_algo algo = {1, 0.3, 0, 0, 0, 0};
  nabla_mask *mask = NULL;
  uint8_t bitmap[16];
  assert_int_equal(nabla_mask_build(ctx, &algo, &s, NABLA_F32, dq, dk, &mask, 0, NULL, NULL), NABLA_OK);
  assert_int_equal(nabla_mask_read_bitmap(ctx, mask, bitmap, 16), NABLA_OK);
  for (int j = 0; j < 4; j++) assert_int_equal(bitmap[4 + j], 1); /* row 1: all kept */
  /* ... and the attention output of that block is NaN rather than silently finite. */
  cl_mem dv = tu_buffer_from(ctx, k, n, NABLA_F32), dout = tu_buffer_from(ctx, k, n, NABLA_F32);
  assert_int_equal(nabla_attend(ctx, &s, NABLA_F32, mask, dq, dk, dv, dout, 0, NULL, NULL), NABLA_OK);
  double *out = malloc(n * sizeof *out);
  tu_buffer_read(ctx, dout, n, NABLA_F32, out);
  assert_true(isnan(out[64 * 16 + 3]));
  nabla_mask_release(mask);
  /* A NaN key block: every row then has one NaN logit among finite ones, and keeps all. */
  q[64 * 16 + 3] = 0.5;
  k[2 * 64 * 16 + 5] = NAN;
  clReleaseMemObject(dq), clReleaseMemObject(dk);
  dq = tu_buffer_from(ctx, q, n, NABLA_F32), dk = tu_buffer_from(ctx, k, n, NABLA_F32);
  assert_int_equal(nabla_mask_build(ctx, &algo, &s, NABLA_F32, dq, dk, &mask, 0, NULL, NULL), NABLA_OK);
  assert_int_equal(nabla_mask_read_bitmap(ctx, mask, bitmap, 16), NABLA_OK);
  for (int j = 0; j < 16; j++) assert_int_equal(bitmap[j], 1);
  nabla_mask_release(mask);
  clReleaseMemObject(dq), clReleaseMemObject(dk), clReleaseMemObject(dv), clReleaseMemObject(dout);
  free(q), free(k), free(out);
}

static void test_flex_layout(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {1, 2, 300, 8, 3, 10, 10};
  int nb = nabla_shape_blocks(&s);
  size_t rows = 2 * (size_t)nb, cells = rows * nb;
  uint8_t *bitmap = malloc(cells);
  uint64_t seed = 5;
  for (size_t i = 0; i < cells; i++) bitmap[i] = tu_rand_uniform(&seed) < 0.3;
  nabla_mask *mask = NULL;
  assert_int_equal(nabla_mask_from_bitmap(ctx, &s, bitmap, &mask), NABLA_OK);
  int32_t *num = malloc(rows * sizeof *num), *idx = malloc(cells * sizeof *idx);
  assert_int_equal(nabla_mask_read_flex(ctx, mask, num, rows, idx, cells), NABLA_OK);
  for (size_t r = 0; r < rows; r++) {
    int c = 0;
    for (int j = 0; j < nb; j++)
      if (bitmap[r * nb + j]) assert_int_equal(idx[r * nb + c++], j);
    assert_int_equal(num[r], c);
    for (; c < nb; c++) assert_int_equal(idx[r * nb + c], 0);
  }
  assert_int_equal(nabla_mask_read_flex(ctx, mask, num, rows - 1, idx, cells), NABLA_BUFFER_TOO_SMALL);
  bitmap[0] = 2;
  nabla_mask *bad = NULL;
  assert_int_equal(nabla_mask_from_bitmap(ctx, &s, bitmap, &bad), NABLA_INVALID_ARGUMENT);
  assert_null(bad);
  nabla_mask_release(mask);
  free(bitmap), free(num), free(idx);
}

/* thr = 1.0 keeps every block, so NABLA attention equals dense attention. */
static void test_thr_one_equals_dense(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {2, 2, 234, 32, 2, 9, 13};
  size_t n = (size_t)2 * 2 * 234 * 32;
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
  double *dense = malloc(n * sizeof *dense), *sparse = malloc(n * sizeof *sparse);
  uint64_t seed = 77;
  tu_fill_normal(q, n, &seed, 2.0);
  tu_fill_normal(k, n, &seed, 2.0);
  tu_fill_normal(v, n, &seed, 1.0);
  cl_mem dq = tu_buffer_from(ctx, q, n, NABLA_F32), dk = tu_buffer_from(ctx, k, n, NABLA_F32);
  cl_mem dv = tu_buffer_from(ctx, v, n, NABLA_F32), d1 = tu_buffer_from(ctx, v, n, NABLA_F32);
  cl_mem d2 = tu_buffer_from(ctx, v, n, NABLA_F32);
  nabla_algo one;
  assert_int_equal(nabla_algo_parse("nabla-1.0", &one, NULL, 0), NABLA_OK);
  assert_int_equal(nabla_attend(ctx, &s, NABLA_F32, NULL, dq, dk, dv, d1, 0, NULL, NULL), NABLA_OK);
  assert_int_equal(nabla_attention(ctx, &one, &s, NABLA_F32, dq, dk, dv, d2, 0, NULL, NULL), NABLA_OK);
  tu_buffer_read(ctx, d1, n, NABLA_F32, dense);
  tu_buffer_read(ctx, d2, n, NABLA_F32, sparse);
  assert_true(tu_max_abs_diff(dense, sparse, n) <= 1e-6);
  nabla_mask *mask = NULL;
  double density = 0;
  assert_int_equal(nabla_mask_build(ctx, &one, &s, NABLA_F32, dq, dk, &mask, 0, NULL, NULL), NABLA_OK);
  assert_int_equal(nabla_mask_stats(ctx, mask, NULL, &density), NABLA_OK);
  assert_true(density == 1.0);
  nabla_mask_release(mask);
  clReleaseMemObject(dq), clReleaseMemObject(dk), clReleaseMemObject(dv);
  clReleaseMemObject(d1), clReleaseMemObject(d2);
  free(q), free(k), free(v), free(dense), free(sparse);
}

/* Means buffers are checked as fp32 [B, H, Nb, D]: Q-sized bf16 thinking (2 bytes a value) or
 * a missing buffer is refused with the layout named, and nothing is returned. */
static void test_means_refused(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {2, 3, 4 * 16 * 16, 64, 4, 16, 16}; /* Nb = 16 */
  nabla_algo algo;
  char err[128];
  assert_int_equal(nabla_algo_parse("nabla-0.7", &algo, err, sizeof err), NABLA_OK);
  size_t need = 2 * 3 * 16 * 64 * sizeof(float);
  cl_int rc = CL_SUCCESS;
  cl_mem ok = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, need, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem small = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, need / 2, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  nabla_mask *m = (nabla_mask *)&s; /* must come back NULL */
  assert_int_equal(nabla_mask_build_from_means(ctx, &algo, &s, ok, small, &m, 0, NULL, NULL), NABLA_BUFFER_TOO_SMALL);
  assert_null(m);
  assert_non_null(strstr(nabla_last_error(ctx), "k_means"));
  assert_non_null(strstr(nabla_last_error(ctx), "[2,3,16,64] f32"));
  m = (nabla_mask *)&s;
  assert_int_equal(nabla_mask_build_from_means(ctx, &algo, &s, NULL, ok, &m, 0, NULL, NULL), NABLA_INVALID_ARGUMENT);
  assert_null(m);
  assert_non_null(strstr(nabla_last_error(ctx), "q_means"));
  /* Dense reads neither. */
  assert_int_equal(nabla_algo_parse("dense", &algo, err, sizeof err), NABLA_OK);
  assert_int_equal(nabla_mask_build_from_means(ctx, &algo, &s, NULL, NULL, &m, 0, NULL, NULL), NABLA_OK);
  nabla_mask_release(m);
  clReleaseMemObject(ok);
  clReleaseMemObject(small);
}

/* A row longer than 64 values per work-item of the selection is refused with a reason, before
 * any kernel runs: 2,112 blocks at SEL_WG=32 need 66 (68 after rounding). */
static void test_row_too_long_for_select(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {1, 1, 2112 * 64, 8, 0, 0, 0};
  nabla_params p = {1, {"SEL_WG"}, {32}, "test"};
  nabla_algo algo;
  assert_int_equal(nabla_algo_parse("nabla-0.7", &algo, NULL, 0), NABLA_OK);
  size_t bytes = (size_t)s.seq * s.head_dim * sizeof(float);
  cl_int rc = CL_SUCCESS;
  cl_mem q = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem k = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  nabla_mask *mask = NULL;
  assert_int_equal(nabla_mask_build_params(ctx, &algo, &s, NABLA_F32, q, k, &p, &mask, 0, NULL, NULL),
                   NABLA_UNSUPPORTED);
  assert_null(mask);
  assert_non_null(strstr(nabla_last_error(ctx), "tune SEL_WG to at least 64"));
  clReleaseMemObject(q), clReleaseMemObject(k);
}

/* Worst error of the device's reduced map against float64, in units of
 * scale (max_d |qp_i| sum_d |kp_j| + max_d |kp_j| sum_d |qp_i|). The fp16 hi + lo split of the
 * tensor-core map represents each value to 2^-22 of its row's largest; measured on PoCL, fp32
 * FMA and the emulated tensor-core map both stay below 5e-7 units, and the tensor-core map
 * without one of its two cross products above 1.9e-5. `big`: a few values 1e4 times the
 * rest (the per-row scale must keep the small ones). */
static double map_error(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, uint64_t seed, int big, int blas) {
  size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim;
  int nb = nabla_shape_blocks(&s), D = s.head_dim;
  size_t rows = (size_t)s.batch * s.heads * nb;
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k);
  double *qp = malloc(rows * D * sizeof *qp), *kp = malloc(rows * D * sizeof *kp);
  float *dev = malloc(rows * nb * sizeof *dev);
  tu_fill_normal(q, n, &seed, 2.0);
  tu_fill_normal(k, n, &seed, 2.0);
  if (big)
    for (size_t i = 0; i < n; i += 997) q[i] *= 1e4, k[(i * 7) % n] *= 1e4;
  tu_quantize(q, n, dtype);
  tu_quantize(k, n, dtype);
  nabla_ref_pool(&s, q, qp);
  nabla_ref_pool(&s, k, kp);
  cl_mem dq = tu_buffer_from(ctx, q, n, dtype), dk = tu_buffer_from(ctx, k, n, dtype);
  if (nabla_reduced_map_read(ctx, &s, dtype, dq, dk, blas, dev) != NABLA_OK) fail_msg("map: %s", nabla_last_error(ctx));
  const double scale = 1.0 / sqrt((double)D);
  double worst = 0;
  for (size_t z = 0; z < (size_t)s.batch * s.heads; z++)
    for (int i = 0; i < nb; i++)
      for (int j = 0; j < nb; j++) {
        const double *a = qp + (z * nb + i) * D, *b = kp + (z * nb + j) * D;
        double dot = 0, ma = 0, mb = 0, sa = 0, sb = 0;
        for (int d = 0; d < D; d++) {
          dot += a[d] * b[d];
          ma = fmax(ma, fabs(a[d])), mb = fmax(mb, fabs(b[d]));
          sa += fabs(a[d]), sb += fabs(b[d]);
        }
        double unit = scale * (ma * sb + mb * sa), err = fabs(dev[(z * nb + i) * nb + j] - dot * scale);
        if (unit > 0) worst = fmax(worst, err / unit);
        else if (err != 0) worst = INFINITY;
      }
  clReleaseMemObject(dq), clReleaseMemObject(dk);
  free(q), free(k), free(qp), free(kp), free(dev);
  return worst;
}

/* The reduced map of every map variant this device runs (the automatic one and the tensor-core
 * kernel emulated) within 2^-20 units of the float64 map (see map_error): ragged tiles (Nb = 720 on a
 * ragged 12x44x76 grid, Nb = 300 with a short last block; neither a multiple of 128), batch > 1,
 * the three dtypes, head dims 32, 64, 80 and 128, and rows of very different magnitudes. */
static void test_reduced_map_accuracy(void **state) {
  CTX_OR_SKIP(state);
  const nabla_shape shapes[] = {{1, 2, 12 * 44 * 76, 64, 12, 44, 76}, {1, 1, 300 * 64 - 17, 128, 0, 0, 0},
                                {3, 1, 100 * 64, 32, 0, 0, 0}, {1, 1, 70 * 64, 80, 0, 0, 0}};
  const nabla_dtype dtypes[] = {NABLA_F16, NABLA_BF16, NABLA_F32, NABLA_F16};
  /* The third: CLBlast's batched GEMM (the select space's MAP_BLAS=1), where it is installed. */
  const char *variants[] = {"auto", "nvidia-mma-emulated", "CLBlast"};
  for (int v = 0; v < 3; v++) {
    if (v == 2 && !nabla_blas_available(ctx)) {
      print_message("CLBlast map not checked: %s\n", ctx->blas.why);
      continue;
    }
    assert_int_equal(nabla_variant_force(ctx, v == 1 ? variants[1] : "auto"), NABLA_OK);
    for (int c = v == 2 ? 1 : 0; c < 4; c++) /* CLBlast: the ragged shapes with batch and odd D */
      for (int big = 0; big < 2; big++) {
        double e = map_error(ctx, shapes[c], dtypes[c], 90 + c * 2 + big, big, v == 2);
        if (!(e <= 0x1p-20)) fail_msg("%s map, shape %d, big %d: error %.3g units (> 2^-20)", variants[v], c, big, e);
      }
  }
  assert_int_equal(nabla_variant_force(ctx, "auto"), NABLA_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_thresholds_ragged_grid),
      cmocka_unit_test(test_config_forms_and_dtypes),
      cmocka_unit_test(test_head_dims_plain_sequence),
      cmocka_unit_test(test_sta_densities_exact),
      cmocka_unit_test(test_long_rows),
      cmocka_unit_test(test_many_rows),
      cmocka_unit_test(test_selection_groups),
      cmocka_unit_test(test_near_threshold_rows),
      cmocka_unit_test(test_nan_rows_keep_everything),
      cmocka_unit_test(test_flex_layout),
      cmocka_unit_test(test_thr_one_equals_dense),
      cmocka_unit_test(test_row_too_long_for_select),
      cmocka_unit_test(test_means_refused),
      cmocka_unit_test(test_reduced_map_accuracy),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
