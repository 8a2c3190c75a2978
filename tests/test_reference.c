/* Self-consistency of the float64 reference (host only): the oracle must itself be right. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static nabla_shape video(int b, int h, int d, int gt, int gh, int gw) {
  nabla_shape s = {b, h, gt * gh * gw, d, gt, gh, gw};
  return s;
}

static nabla_shape plain(int b, int h, int d, int seq) {
  nabla_shape s = {b, h, seq, d, 0, 0, 0};
  return s;
}

static size_t elems(const nabla_shape *s) {
  return (size_t)s->batch * s->heads * s->seq * s->head_dim;
}

static size_t rows_of(const nabla_shape *s) {
  return (size_t)s->batch * s->heads * (size_t)nabla_shape_blocks(s);
}

static double *normal_tensor(const nabla_shape *s, uint64_t *seed, double scale) {
  double *x = malloc(elems(s) * sizeof *x);
  assert_non_null(x);
  tu_fill_normal(x, elems(s), seed, scale);
  return x;
}

static int32_t *block_starts(const nabla_shape *s) {
  int nb = nabla_shape_blocks(s);
  int32_t *bs = malloc(sizeof(int32_t) * (size_t)(nb + 1));
  assert_non_null(bs);
  assert_int_equal(nabla_shape_block_starts(s, bs, (size_t)nb + 1), NABLA_OK);
  return bs;
}

/* CSR of a bitmap, malloc'd. */
static void make_csr(const nabla_shape *s, const uint8_t *bitmap, int32_t **row_ptr,
                     int32_t **col_idx) {
  size_t rows = rows_of(s), nb = (size_t)nabla_shape_blocks(s);
  *row_ptr = malloc((rows + 1) * sizeof(int32_t));
  *col_idx = malloc((rows * nb + 1) * sizeof(int32_t));
  assert_non_null(*row_ptr);
  assert_non_null(*col_idx);
  int64_t kept = nabla_ref_csr(s, bitmap, *row_ptr, *col_idx);
  assert_true(kept >= 0);
}

/*
 * Independent attention: per query token, list the allowed key tokens from block_starts and the
 * bitmap, then a textbook softmax over a score buffer.
 */
static void naive_attention(const nabla_shape *s, const double *q, const double *k,
                            const double *v, const uint8_t *bitmap, double *out) {
  int nb = nabla_shape_blocks(s), S = s->seq, D = s->head_dim;
  int32_t *bs = block_starts(s);
  double *score = malloc(sizeof(double) * (size_t)S);
  int *key = malloc(sizeof(int) * (size_t)S);
  assert_non_null(score);
  assert_non_null(key);
  for (int bh = 0; bh < s->batch * s->heads; bh++)
    for (int i = 0; i < nb; i++)
      for (int t = bs[i]; t < bs[i + 1]; t++) {
        const double *qr = q + ((size_t)bh * S + t) * D;
        double *o = out + ((size_t)bh * S + t) * D;
        int n = 0;
        for (int j = 0; j < nb; j++)
          if (!bitmap || bitmap[((size_t)bh * nb + i) * nb + j])
            for (int u = bs[j]; u < bs[j + 1]; u++) key[n++] = u;
        for (int d = 0; d < D; d++) o[d] = 0;
        if (n == 0) continue;
        double mx = -INFINITY, sum = 0;
        for (int a = 0; a < n; a++) {
          double dot = 0;
          for (int d = 0; d < D; d++) dot += qr[d] * k[((size_t)bh * S + key[a]) * D + d];
          score[a] = dot / sqrt((double)D);
          if (score[a] > mx) mx = score[a];
        }
        for (int a = 0; a < n; a++) sum += (score[a] = exp(score[a] - mx));
        for (int a = 0; a < n; a++)
          for (int d = 0; d < D; d++)
            o[d] += score[a] / sum * v[((size_t)bh * S + key[a]) * D + d];
      }
  free(bs);
  free(score);
  free(key);
}

/* ---- attention -------------------------------------------------------------------------- */

static void check_all_kept_equals_dense(nabla_shape s, uint64_t seed) {
  double *q = normal_tensor(&s, &seed, 1.0), *k = normal_tensor(&s, &seed, 1.0);
  double *v = normal_tensor(&s, &seed, 1.0);
  double *dense = malloc(elems(&s) * sizeof *dense), *sparse = malloc(elems(&s) * sizeof *sparse);
  double *naive = malloc(elems(&s) * sizeof *naive);
  size_t nb = (size_t)nabla_shape_blocks(&s);
  uint8_t *bitmap = malloc(rows_of(&s) * nb);
  assert_non_null(bitmap);
  memset(bitmap, 1, rows_of(&s) * nb);
  int32_t *row_ptr, *col_idx;
  make_csr(&s, bitmap, &row_ptr, &col_idx);
  nabla_ref_attention_dense(&s, q, k, v, dense);
  nabla_ref_attention_sparse(&s, q, k, v, row_ptr, col_idx, sparse);
  naive_attention(&s, q, k, v, NULL, naive);
  assert_true(tu_max_abs_diff(dense, sparse, elems(&s)) <= 1e-12);
  assert_true(tu_max_abs_diff(dense, naive, elems(&s)) <= 1e-12);
  free(q), free(k), free(v), free(dense), free(sparse), free(naive), free(bitmap);
  free(row_ptr), free(col_idx);
}

static void test_all_kept_equals_dense(void **state) {
  (void)state;
  check_all_kept_equals_dense(plain(2, 2, 16, 130), 1);
  check_all_kept_equals_dense(plain(1, 1, 8, 64), 2);
  check_all_kept_equals_dense(plain(1, 1, 8, 5), 3);
  check_all_kept_equals_dense(video(1, 2, 8, 3, 12, 20), 4);
  check_all_kept_equals_dense(video(2, 1, 16, 2, 9, 13), 5);
  check_all_kept_equals_dense(video(1, 1, 8, 1, 7, 5), 6);
}

static void test_sparse_vs_naive(void **state) {
  (void)state;
  /* Random masks on ragged shapes, including rows with no kept block (zeros). */
  nabla_shape shapes[] = {video(2, 2, 8, 2, 9, 13), plain(1, 3, 16, 200), video(1, 2, 16, 3, 12, 20)};
  uint64_t seed = 77;
  for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
    nabla_shape s = shapes[c];
    size_t n = elems(&s), nb = (size_t)nabla_shape_blocks(&s), rows = rows_of(&s);
    double *q = normal_tensor(&s, &seed, 1.5), *k = normal_tensor(&s, &seed, 1.5);
    double *v = normal_tensor(&s, &seed, 1.0);
    double *got = malloc(n * sizeof *got), *want = malloc(n * sizeof *want);
    uint8_t *bitmap = malloc(rows * nb);
    for (size_t r = 0; r < rows * nb; r++) bitmap[r] = tu_rand_uniform(&seed) < 0.4;
    memset(bitmap, 0, nb);  /* row 0 empty */
    int32_t *row_ptr, *col_idx;
    make_csr(&s, bitmap, &row_ptr, &col_idx);
    nabla_ref_attention_sparse(&s, q, k, v, row_ptr, col_idx, got);
    naive_attention(&s, q, k, v, bitmap, want);
    assert_true(tu_max_abs_diff(got, want, n) <= 1e-12);
    int32_t *bs = block_starts(&s);
    for (size_t e = 0; e < (size_t)bs[1] * s.head_dim; e++) assert_true(got[e] == 0.0);
    free(bs);
    free(q), free(k), free(v), free(got), free(want), free(bitmap), free(row_ptr), free(col_idx);
  }
}

static void test_sparse_diagonal_block(void **state) {
  (void)state;
  /* Diagonal-only mask: block 2 of a 130-token sequence (tokens 128, 129) is dense attention
   * over a 2-token sequence. */
  nabla_shape s = plain(1, 1, 8, 130), sub = plain(1, 1, 8, 2);
  uint64_t seed = 9;
  double *q = normal_tensor(&s, &seed, 1.0), *k = normal_tensor(&s, &seed, 1.0);
  double *v = normal_tensor(&s, &seed, 1.0), *out = malloc(elems(&s) * sizeof *out);
  uint8_t bitmap[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  int32_t row_ptr[4], col_idx[9];
  assert_int_equal(nabla_ref_csr(&s, bitmap, row_ptr, col_idx), 3);
  nabla_ref_attention_sparse(&s, q, k, v, row_ptr, col_idx, out);
  double want[16];
  nabla_ref_attention_dense(&sub, q + 128 * 8, k + 128 * 8, v + 128 * 8, want);
  assert_true(tu_max_abs_diff(out + 128 * 8, want, 16) <= 1e-14);
  /* A one-token block attends to itself only: output = its own V row. */
  nabla_shape one = plain(1, 1, 8, 129);
  uint8_t diag1[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  assert_int_equal(nabla_ref_csr(&one, diag1, row_ptr, col_idx), 3);
  nabla_ref_attention_sparse(&one, q, k, v, row_ptr, col_idx, out);
  assert_true(tu_max_abs_diff(out + 128 * 8, v + 128 * 8, 8) <= 1e-15);
  /* A malformed CSR row gives NaN, never an out-of-bounds read. */
  col_idx[2] = 7;
  nabla_ref_attention_sparse(&one, q, k, v, row_ptr, col_idx, out);
  assert_true(isnan(out[128 * 8]));
  free(q), free(k), free(v), free(out);
}

/* ---- reorder ---------------------------------------------------------------------------- */

static void test_reorder(void **state) {
  (void)state;
  nabla_shape shapes[] = {video(1, 2, 8, 3, 12, 20), video(2, 1, 8, 2, 9, 13),
                          video(1, 1, 16, 1, 7, 5), video(1, 2, 8, 2, 16, 16),
                          video(1, 1, 8, 1, 1, 1), plain(2, 1, 8, 130)};
  for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
    nabla_shape s = shapes[c];
    size_t n = elems(&s), D = (size_t)s.head_dim, S = (size_t)s.seq;
    double *raster = malloc(n * sizeof *raster), *tile = malloc(n * sizeof *tile);
    double *back = malloc(n * sizeof *back);
    for (size_t e = 0; e < n; e++) raster[e] = (double)e;  /* = (bh*S + token)*D + d */
    nabla_ref_reorder(&s, NABLA_RASTER_TO_TILE, raster, tile);
    nabla_ref_reorder(&s, NABLA_TILE_TO_RASTER, tile, back);
    assert_memory_equal(raster, back, n * sizeof *raster);
    int32_t *bs = block_starts(&s);
    for (size_t bh = 0; bh < (size_t)s.batch * s.heads; bh++) {
      if (!s.grid_t) {
        assert_memory_equal(raster, tile, n * sizeof *raster);
        break;
      }
      int Hb = (s.grid_h + 7) / 8, Wb = (s.grid_w + 7) / 8;
      for (int t = 0; t < s.grid_t; t++)
        for (int h = 0; h < s.grid_h; h++)
          for (int w = 0; w < s.grid_w; w++) {
            int hb = h / 8, wb = w / 8, gh = h % 8, gw = w % 8;
            int tw = s.grid_w - 8 * wb < 8 ? s.grid_w - 8 * wb : 8;
            int block = (t * Hb + hb) * Wb + wb;
            size_t f = (size_t)bs[block] + (size_t)gh * tw + gw;
            size_t r = ((size_t)t * s.grid_h + h) * s.grid_w + w;
            if (s.grid_h % 8 == 0 && s.grid_w % 8 == 0) assert_int_equal(f, block * 64 + 8 * gh + gw);
            for (size_t d = 0; d < D; d++)
              assert_true(tile[(bh * S + f) * D + d] == raster[(bh * S + r) * D + d]);
          }
    }
    free(bs), free(raster), free(tile), free(back);
  }
}

/* ---- pooling and map ------------------------------------------------------------------- */

static void test_pool_ragged(void **state) {
  (void)state;
  /* 1x9x10: blocks of 64, 16, 8 and 2 tokens starting at 0, 64, 80, 88. x = token index. */
  nabla_shape s = video(1, 1, 8, 1, 9, 10);
  double x[90 * 8], pooled[4 * 8];
  for (int t = 0; t < 90; t++)
    for (int d = 0; d < 8; d++) x[t * 8 + d] = t + (d == 3 ? 1000.0 : 0.0);
  nabla_ref_pool(&s, x, pooled);
  const double want[4] = {31.5, 71.5, 83.5, 88.5};
  for (int i = 0; i < 4; i++) {
    assert_true(pooled[i * 8] == want[i]);
    assert_true(pooled[i * 8 + 3] == want[i] + 1000.0);
  }
  /* plain 130: the third block holds tokens 128 and 129 */
  nabla_shape p = plain(1, 1, 8, 130);
  double y[130 * 8], py[3 * 8];
  for (int t = 0; t < 130; t++)
    for (int d = 0; d < 8; d++) y[t * 8 + d] = t;
  nabla_ref_pool(&p, y, py);
  assert_true(py[0] == 31.5);
  assert_true(py[8] == 95.5);
  assert_true(py[16] == 128.5);
}

static void test_map_softmax(void **state) {
  (void)state;
  /* Two blocks, D = 8: q̄0 = (1,0..), k̄0 = (2,0..), k̄1 = (0,..): logits 2/sqrt(8) and 0. */
  nabla_shape s = plain(1, 1, 8, 128);
  double qp[16] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 1}, kp[16] = {2};
  double probs[4];
  nabla_ref_map_softmax(&s, qp, kp, probs);
  double a = 2 / sqrt(8.0);
  assert_true(fabs(probs[0] - exp(a) / (exp(a) + 1)) <= 1e-15);
  assert_true(fabs(probs[1] - 1 / (exp(a) + 1)) <= 1e-15);
  assert_true(fabs(probs[2] - 0.5) <= 1e-15);
  assert_true(fabs(probs[3] - 0.5) <= 1e-15);

  /* Huge logits (q, k ~ 1e3): max subtraction keeps every probability finite. */
  nabla_shape big = plain(1, 2, 64, 64 * 40);
  uint64_t seed = 5;
  double *q = normal_tensor(&big, &seed, 1e3), *k = normal_tensor(&big, &seed, 1e3);
  size_t rows = rows_of(&big), nb = 40;
  double *qpool = malloc(rows * 64 * sizeof(double)), *kpool = malloc(rows * 64 * sizeof(double));
  double *pr = malloc(rows * nb * sizeof(double));
  nabla_ref_pool(&big, q, qpool);
  nabla_ref_pool(&big, k, kpool);
  nabla_ref_map_softmax(&big, qpool, kpool, pr);
  for (size_t r = 0; r < rows; r++) {
    double sum = 0;
    for (size_t j = 0; j < nb; j++) {
      assert_true(isfinite(pr[r * nb + j]) && pr[r * nb + j] >= 0);
      sum += pr[r * nb + j];
    }
    assert_true(fabs(sum - 1) <= 1e-12);
  }
  uint8_t *bm = malloc(rows * nb), near[80];
  nabla_algo algo = {1, 0.7, 0, 0, 0, 0};
  assert_int_equal(nabla_ref_mask(&big, &algo, q, k, bm, near, 1e-6), NABLA_OK);
  for (size_t r = 0; r < rows; r++) {
    int kept = 0;
    for (size_t j = 0; j < nb; j++) kept += bm[r * nb + j];
    assert_true(kept >= 1);
  }
  free(q), free(k), free(qpool), free(kpool), free(pr), free(bm);
}

/* ---- selection -------------------------------------------------------------------------- */

/* Selection of explicit rows (one row per block of a plain shape with rows == nb). */
static void select_rows(int nb, const double *probs, double thr, uint8_t *bitmap, uint8_t *near,
                        double eps) {
  nabla_shape s = plain(1, 1, 8, 64 * nb);
  nabla_ref_select(&s, probs, thr, bitmap, near, eps);
}

static void expect_row(const uint8_t *got, const char *want, int nb) {
  for (int j = 0; j < nb; j++)
    if (got[j] != (uint8_t)(want[j] == '1')) fail_msg("block %d: got %d, want %s", j, got[j], want);
}

static void test_select_hand(void **state) {
  (void)state;
  /* above = 0, 0.5, 0.8, 0.95 */
  double p[16] = {0.5, 0.3, 0.15, 0.05, 0.05, 0.15, 0.3, 0.5, 0.3, 0.05, 0.5, 0.15, 0.15, 0.5, 0.05, 0.3};
  uint8_t b[16], near[4];
  select_rows(4, p, 0.7, b, near, 1e-9);
  expect_row(b, "1100", 4);
  expect_row(b + 4, "0011", 4);
  expect_row(b + 8, "1010", 4);
  expect_row(b + 12, "0101", 4);
  for (int r = 0; r < 4; r++) assert_int_equal(near[r], 0);
  select_rows(4, p, 0.4, b, near, 1e-9);
  expect_row(b, "1000", 4);
  expect_row(b + 8, "0010", 4);
  select_rows(4, p, 0.5, b, near, 1e-9);  /* above(0.3) = 0.5 <= 0.5: kept, and near */
  expect_row(b, "1100", 4);
  expect_row(b + 4, "0011", 4);
  assert_int_equal(near[0], 1);
  select_rows(4, p, 0.8, b, NULL, 0);  /* exactly at the third block's mass above */
  expect_row(b, "1110", 4);
  select_rows(4, p, 0.96, b, NULL, 0);
  expect_row(b, "1111", 4);
  select_rows(4, p, 1e-9, b, NULL, 0);  /* the arg-max always stays */
  expect_row(b, "1000", 4);
  expect_row(b + 4, "0001", 4);
  select_rows(4, p, 1.0, b, near, 1e-3);
  for (int e = 0; e < 16; e++) assert_int_equal(b[e], 1);
  for (int r = 0; r < 4; r++) assert_int_equal(near[r], 0);
}

static void test_select_ties_and_near(void **state) {
  (void)state;
  double p[16] = {0.25, 0.25, 0.25, 0.25,    /* all tied at the top */
                  0.4, 0.3, 0.3, 0.0,        /* tied pair straddles 0.5 one by one */
                  0.4, 0.2, 0.2, 0.2,        /* tie well inside the kept set */
                  0.4, 0.3, 0.2999999, 1e-7}; /* near-tie across the cut at 0.65 */
  uint8_t b[16], near[4];
  select_rows(4, p, 0.5, b, near, 1e-6);
  expect_row(b, "1111", 4);  /* exact rule keeps every tied block */
  expect_row(b + 4, "1110", 4);
  assert_int_equal(near[0], 1);
  assert_int_equal(near[1], 1);
  select_rows(4, p, 0.9, b, near, 1e-6);
  expect_row(b + 8, "1111", 4);
  assert_int_equal(near[2], 0);
  select_rows(4, p, 0.65, b, near, 1e-6);
  expect_row(b + 12, "1100", 4);
  assert_int_equal(near[3], 1);
  select_rows(4, p, 0.65, b, near, 0);
  assert_int_equal(near[3], 0);

  /* Mass-above exactly at thr, and mass-above + own mass at thr. */
  double q[8] = {0.5, 0.3, 0.2, 0.0, 0.5, 0.3, 0.2, 0.0};
  uint8_t qb[8], qn[2];
  select_rows(2, q, 0.8, qb, qn, 1e-9);  /* above(0.2) = 0.8 */
  assert_int_equal(qn[0], 1);
  select_rows(2, q, 0.65, qb, qn, 1e-6);
  assert_int_equal(qn[0], 0);
  select_rows(2, q, 0.65, qb, qn, 0.2);  /* above(0.3) + 0.3 = 0.8 within 0.2 of 0.65 */
  assert_int_equal(qn[0], 1);
}

/* The rule written the obvious way: keep j iff the mass of strictly larger blocks is <= thr. */
static void brute_select(const double *row, int nb, double thr, uint8_t *keep) {
  for (int j = 0; j < nb; j++) {
    double above = 0;
    for (int k = 0; k < nb; k++)
      if (row[k] > row[j]) above += row[k];
    keep[j] = above <= thr;
  }
}

static void test_select_random(void **state) {
  (void)state;
  /* nb = 20 exercises the quadratic path, nb = 100 the sorted one. */
  const int sizes[] = {20, 100};
  uint64_t seed = 1234;
  for (int c = 0; c < 2; c++) {
    int nb = sizes[c];
    nabla_shape s = plain(2, 3, 8, 64 * nb);
    size_t rows = rows_of(&s);
    double *probs = malloc(rows * nb * sizeof(double));
    uint8_t *lo = malloc(rows * nb), *hi = malloc(rows * nb), *want = malloc((size_t)nb);
    uint8_t *near = malloc(rows);
    for (size_t r = 0; r < rows; r++) {
      double sum = 0, temp = 0.3 + 3 * tu_rand_uniform(&seed);
      for (int j = 0; j < nb; j++) sum += (probs[r * nb + j] = exp(temp * tu_rand_normal(&seed)));
      for (int j = 0; j < nb; j++) probs[r * nb + j] /= sum;
      if (r % 7 == 3) probs[r * nb + 5] = probs[r * nb + 9];  /* some exact ties */
    }
    nabla_ref_select(&s, probs, 0.4, lo, near, 0);
    nabla_ref_select(&s, probs, 0.7, hi, NULL, 0);
    int strictly_more = 0;
    for (size_t r = 0; r < rows; r++) {
      const double *row = probs + r * nb;
      int argmax = 0, n_lo = 0, n_hi = 0;
      for (int j = 1; j < nb; j++)
        if (row[j] > row[argmax]) argmax = j;
      assert_int_equal(lo[r * nb + argmax], 1);
      brute_select(row, nb, 0.4, want);
      assert_memory_equal(lo + r * nb, want, (size_t)nb);
      brute_select(row, nb, 0.7, want);
      assert_memory_equal(hi + r * nb, want, (size_t)nb);
      for (int j = 0; j < nb; j++) {
        if (lo[r * nb + j]) assert_int_equal(hi[r * nb + j], 1);  /* 0.4 ⊆ 0.7 */
        n_lo += lo[r * nb + j];
        n_hi += hi[r * nb + j];
      }
      strictly_more += n_hi > n_lo;
    }
    assert_true(strictly_more > (int)rows / 2);
    free(probs), free(lo), free(hi), free(want), free(near);
  }
}

static void test_select_paths_agree(void **state) {
  (void)state;
  /* The hand rows padded with zeros to 100 blocks go through the sorted path: same answers. */
  double small[16] = {0.25, 0.25, 0.25, 0.25, 0.4, 0.3, 0.3, 0.0,
                      0.4,  0.2,  0.2,  0.2,  0.4, 0.3, 0.2999999, 1e-7};
  const double thrs[] = {0.5, 0.65, 0.9, 0.3, 0.75};
  const double epss[] = {0, 1e-6, 0.06};
  int nb = 100;
  double *big = calloc((size_t)nb * nb, sizeof(double));
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < 4; j++) big[r * nb + j] = small[r * 4 + j];
  uint8_t sb[16], sn[4], *bb = malloc((size_t)nb * nb), bn[100];
  for (size_t a = 0; a < 5; a++)
    for (size_t e = 0; e < 3; e++) {
      select_rows(4, small, thrs[a], sb, sn, epss[e]);
      select_rows(nb, big, thrs[a], bb, bn, epss[e]);
      for (int r = 0; r < 4; r++) {
        assert_memory_equal(sb + 4 * r, bb + r * nb, 4);
        assert_int_equal(sn[r], bn[r]);
        for (int j = 4; j < nb; j++) assert_int_equal(bb[r * nb + j], 0);
      }
    }
  free(big), free(bb);
}

/* ---- STA ------------------------------------------------------------------------------- */

static double sta_density(int T, int Ht, int Wt, int wt, int wh, int ww) {
  nabla_shape s = video(1, 1, 8, T, Ht, Wt);
  size_t nb = (size_t)nabla_shape_blocks(&s);
  uint8_t *bm = calloc(nb * nb, 1);
  assert_non_null(bm);
  nabla_ref_sta(&s, wt, wh, ww, bm);
  size_t kept = 0;
  for (size_t e = 0; e < nb * nb; e++) kept += bm[e];
  free(bm);
  return (double)kept / (double)(nb * nb);
}

static void expect_percent(double density, double want) {
  double got = round(density * 10000) / 100;
  if (fabs(got - want) > 1e-9) fail_msg("density %.4f %%, want %.2f %%", density * 100, want);
}

static void test_sta_densities(void **state) {
  (void)state;
  /* docs/algorithm.md §5: blocks 21x5x10 (tokens 21x40x80) and 21x3x6 (21x24x48) */
  expect_percent(sta_density(21, 40, 80, 11, 3, 3), 6.64);
  expect_percent(sta_density(21, 40, 80, 11, 5, 5), 15.24);
  expect_percent(sta_density(21, 40, 80, 3, 3, 3), 2.01);
  expect_percent(sta_density(21, 24, 48, 11, 3, 3), 15.76);
  expect_percent(sta_density(21, 24, 48, 11, 5, 5), 30.39);
  expect_percent(sta_density(21, 24, 48, 3, 3, 3), 4.78);
  /* Windows of 1 are the diagonal; even windows round down (4 -> radius 2 like 5). */
  assert_true(sta_density(2, 16, 16, 1, 1, 1) == 1.0 / 8);
  assert_true(sta_density(3, 40, 40, 4, 4, 4) == sta_density(3, 40, 40, 5, 5, 5));
  assert_true(sta_density(3, 20, 28, INT_MAX, INT_MAX, INT_MAX) == 1.0);
}

static void test_sta_shape(void **state) {
  (void)state;
  /* Ragged grid, two heads: symmetric, contains the diagonal, head-independent, ORs. */
  nabla_shape s = video(1, 2, 8, 4, 20, 28);
  int nb = nabla_shape_blocks(&s), Hb = 3, Wb = 4;
  assert_int_equal(nb, 4 * Hb * Wb);
  uint8_t *bm = calloc((size_t)2 * nb * nb, 1);
  bm[5] = 1;  /* outside the window (other tile row): the OR must keep it */
  nabla_ref_sta(&s, 3, 1, 3, bm);
  for (int i = 0; i < nb; i++)
    for (int j = 0; j < nb; j++) {
      int ti = i / (Hb * Wb), hi = i / Wb % Hb, wi = i % Wb;
      int tj = j / (Hb * Wb), hj = j / Wb % Hb, wj = j % Wb;
      int want = abs(ti - tj) <= 1 && hi == hj && abs(wi - wj) <= 1;
      if (i == 0 && j == 5) want = 1;
      assert_int_equal(bm[i * nb + j], want);
      if (!(i == 0 && j == 5)) assert_int_equal(bm[(size_t)nb * nb + i * nb + j], want);
    }
  /* Plain sequences are left alone. */
  nabla_shape p = plain(1, 1, 8, 256);
  uint8_t pb[16] = {0};
  nabla_ref_sta(&p, 3, 3, 3, pb);
  for (int e = 0; e < 16; e++) assert_int_equal(pb[e], 0);
  free(bm);
}

/* ---- full mask -------------------------------------------------------------------------- */

static void test_mask_modes(void **state) {
  (void)state;
  nabla_shape s = video(1, 2, 16, 3, 16, 24);
  size_t nb = (size_t)nabla_shape_blocks(&s), rows = rows_of(&s), n = rows * nb;
  uint64_t seed = 31;
  double *q = malloc(elems(&s) * sizeof(double)), *k = malloc(elems(&s) * sizeof(double));
  tu_fill_video_like(&s, q, &seed, 1.0);
  tu_fill_video_like(&s, k, &seed, 1.0);
  uint8_t *dense = malloc(n), *lo = malloc(n), *hi = malloc(n), *sta = calloc(n, 1);
  uint8_t *both = malloc(n), *pure = malloc(n), *one = malloc(n), *near = malloc(rows);

  nabla_algo a_dense = {0, 0, 0, 0, 0, 0};
  memset(near, 7, rows);
  assert_int_equal(nabla_ref_mask(&s, &a_dense, NULL, NULL, dense, near, 1e-6), NABLA_OK);
  for (size_t e = 0; e < n; e++) assert_int_equal(dense[e], 1);
  for (size_t r = 0; r < rows; r++) assert_int_equal(near[r], 0);

  nabla_algo a_lo = {1, 0.4, 0, 0, 0, 0}, a_hi = {1, 0.7, 0, 0, 0, 0}, a_one = {1, 1.0, 0, 0, 0, 0};
  assert_int_equal(nabla_ref_mask(&s, &a_lo, q, k, lo, NULL, 0), NABLA_OK);
  assert_int_equal(nabla_ref_mask(&s, &a_hi, q, k, hi, NULL, 0), NABLA_OK);
  assert_int_equal(nabla_ref_mask(&s, &a_one, q, k, one, near, 1e-6), NABLA_OK);
  size_t k_lo = 0, k_hi = 0;
  for (size_t e = 0; e < n; e++) {
    assert_int_equal(one[e], 1);
    if (lo[e]) assert_int_equal(hi[e], 1);
    k_lo += lo[e];
    k_hi += hi[e];
  }
  for (size_t r = 0; r < rows; r++) assert_int_equal(near[r], 0);
  assert_true(k_lo < k_hi && k_hi < n);  /* video-like data gives non-trivial masks */

  /* every row keeps the arg-max of its reduced map */
  double *qp = malloc(rows * 16 * sizeof(double)), *kp = malloc(rows * 16 * sizeof(double));
  double *probs = malloc(n * sizeof(double));
  nabla_ref_pool(&s, q, qp);
  nabla_ref_pool(&s, k, kp);
  nabla_ref_map_softmax(&s, qp, kp, probs);
  for (size_t r = 0; r < rows; r++) {
    size_t am = 0;
    for (size_t j = 1; j < nb; j++)
      if (probs[r * nb + j] > probs[r * nb + am]) am = j;
    assert_int_equal(lo[r * nb + am], 1);
  }

  nabla_algo a_sta = {0, 0, 1, 3, 3, 3}, a_both = {1, 0.4, 1, 3, 3, 3};
  nabla_ref_sta(&s, 3, 3, 3, sta);
  memset(pure, 9, n);
  assert_int_equal(nabla_ref_mask(&s, &a_sta, NULL, NULL, pure, NULL, 0), NABLA_OK);
  assert_memory_equal(pure, sta, n);
  assert_int_equal(nabla_ref_mask(&s, &a_both, q, k, both, NULL, 0), NABLA_OK);
  for (size_t e = 0; e < n; e++) assert_int_equal(both[e], lo[e] | sta[e]);

  /* invalid requests */
  nabla_shape p = plain(1, 1, 8, 256), bad = s;
  bad.head_dim = 12;
  nabla_algo a_zero = {1, 0.0, 0, 0, 0, 0}, a_big = {1, 1.5, 0, 0, 0, 0}, a_nan = {1, NAN, 0, 0, 0, 0};
  nabla_algo a_w0 = {0, 0, 1, 3, 0, 3};
  assert_int_equal(nabla_ref_mask(&p, &a_sta, q, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&s, &a_zero, q, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&s, &a_big, q, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&s, &a_nan, q, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&s, &a_w0, q, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&bad, &a_lo, q, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&s, NULL, q, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&s, &a_lo, NULL, k, lo, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_ref_mask(&s, &a_lo, q, k, NULL, NULL, 0), NABLA_INVALID_ARGUMENT);

  free(q), free(k), free(dense), free(lo), free(hi), free(sta), free(both), free(pure);
  free(one), free(near), free(qp), free(kp), free(probs);
}

static void test_diagonal_not_forced(void **state) {
  (void)state;
  /* Block 0's queries point away from block 0's keys and towards block 1's. */
  nabla_shape s = plain(1, 1, 8, 128);
  double q[128 * 8] = {0}, k[128 * 8] = {0};
  for (int t = 0; t < 128; t++) {
    q[t * 8] = 10;
    k[t * 8] = t < 64 ? -10 : 10;
  }
  uint8_t bm[4];
  nabla_algo a = {1, 0.5, 0, 0, 0, 0};
  assert_int_equal(nabla_ref_mask(&s, &a, q, k, bm, NULL, 0), NABLA_OK);
  assert_int_equal(bm[0], 0);  /* diagonal dropped */
  assert_int_equal(bm[1], 1);
  assert_int_equal(bm[2], 0);
  assert_int_equal(bm[3], 1);
}

static void test_batch3(void **state) {
  (void)state;
  /* B = 3, H = 2 equals six independent single-head problems. */
  nabla_shape s = video(3, 2, 8, 2, 12, 20), one = video(1, 1, 8, 2, 12, 20);
  size_t per = elems(&one), nb = (size_t)nabla_shape_blocks(&s), rows = rows_of(&s);
  uint64_t seed = 99;
  double *q = malloc(elems(&s) * sizeof(double)), *k = malloc(elems(&s) * sizeof(double));
  double *v = normal_tensor(&s, &seed, 1.0), *out = malloc(elems(&s) * sizeof(double));
  tu_fill_video_like(&s, q, &seed, 1.0);
  tu_fill_video_like(&s, k, &seed, 1.0);
  uint8_t *bm = malloc(rows * nb), *near = malloc(rows), *bm1 = malloc(nb * nb), *near1 = malloc(nb);
  nabla_algo a = {1, 0.6, 1, 1, 1, 1};
  assert_int_equal(nabla_ref_mask(&s, &a, q, k, bm, near, 1e-6), NABLA_OK);
  int32_t *row_ptr, *col_idx, *rp1, *ci1;
  make_csr(&s, bm, &row_ptr, &col_idx);
  nabla_ref_attention_sparse(&s, q, k, v, row_ptr, col_idx, out);
  double *out1 = malloc(per * sizeof(double));
  for (size_t bh = 0; bh < 6; bh++) {
    assert_int_equal(nabla_ref_mask(&one, &a, q + bh * per, k + bh * per, bm1, near1, 1e-6), NABLA_OK);
    assert_memory_equal(bm + bh * nb * nb, bm1, nb * nb);
    assert_memory_equal(near + bh * nb, near1, nb);
    make_csr(&one, bm1, &rp1, &ci1);
    nabla_ref_attention_sparse(&one, q + bh * per, k + bh * per, v + bh * per, rp1, ci1, out1);
    assert_memory_equal(out + bh * per, out1, per * sizeof(double));
    free(rp1), free(ci1);
  }
  free(q), free(k), free(v), free(out), free(out1), free(bm), free(near), free(bm1), free(near1);
  free(row_ptr), free(col_idx);
}

static void test_csr(void **state) {
  (void)state;
  nabla_shape s = plain(1, 2, 8, 192);  /* 3 blocks, 6 rows */
  const uint8_t bm[18] = {1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1};
  int32_t row_ptr[7], col_idx[18];
  assert_int_equal(nabla_ref_csr(&s, bm, row_ptr, col_idx), 7);
  const int32_t want_ptr[7] = {0, 2, 2, 5, 6, 6, 7}, want_idx[7] = {0, 2, 0, 1, 2, 1, 2};
  assert_memory_equal(row_ptr, want_ptr, sizeof want_ptr);
  assert_memory_equal(col_idx, want_idx, sizeof want_idx);
  assert_int_equal(nabla_ref_csr(&s, bm, row_ptr, NULL), 7);  /* counting only */
  assert_int_equal(nabla_ref_csr(&s, NULL, row_ptr, col_idx), -1);
  nabla_shape bad = s;
  bad.head_dim = 12;
  row_ptr[0] = 42;
  assert_int_equal(nabla_ref_csr(&bad, bm, row_ptr, col_idx), -1);
  assert_int_equal(row_ptr[0], 42);  /* nothing written for an invalid shape */
}

/* Non-finite input reaches the output (docs/algorithm.md): a reduced-map row with a NaN or ±Inf
 * logit is all NaN and keeps every block (a -Inf logit alone included, which a plain softmax
 * would give probability 0), and a NaN query row attends to NaN, not to an "empty row" 0. */
static void test_non_finite(void **state) {
  (void)state;
  nabla_shape s = plain(1, 1, 8, 4 * 64);
  double qp[4 * 8] = {0}, kp[4 * 8] = {0}, probs[16];
  uint8_t bitmap[16];
  for (int i = 0; i < 4; i++) qp[i * 8] = 1.0 + i, kp[i * 8] = 0.5 * i;
  qp[2 * 8 + 1] = 1.0;       /* query block 2 meets ... */
  kp[3 * 8 + 1] = -INFINITY; /* ... key block 3 at -Inf; the other rows meet 0 x -Inf = NaN */
  nabla_ref_map_softmax(&s, qp, kp, probs);
  for (int j = 0; j < 16; j++) assert_true(isnan(probs[j]));
  nabla_ref_select(&s, probs, 0.3, bitmap, NULL, 1e-6);
  for (int j = 0; j < 16; j++) assert_int_equal(bitmap[j], 1);
  kp[3 * 8 + 1] = 0.0; /* all finite again: ordinary probabilities, a row sums to 1 */
  nabla_ref_map_softmax(&s, qp, kp, probs);
  assert_true(fabs(probs[0] + probs[1] + probs[2] + probs[3] - 1.0) <= 1e-15);

  uint64_t seed = 3;
  double *q = normal_tensor(&s, &seed, 1.0), *k = normal_tensor(&s, &seed, 1.0);
  double *v = normal_tensor(&s, &seed, 1.0), *out = normal_tensor(&s, &seed, 1.0);
  q[70 * 8 + 2] = NAN; /* query token 70 */
  nabla_ref_attention_dense(&s, q, k, v, out);
  for (int d = 0; d < 8; d++) assert_true(isnan(out[70 * 8 + d]));
  for (int d = 0; d < 8; d++) assert_true(isfinite(out[71 * 8 + d]));
  free(q), free(k), free(v), free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_all_kept_equals_dense),
      cmocka_unit_test(test_sparse_vs_naive),
      cmocka_unit_test(test_sparse_diagonal_block),
      cmocka_unit_test(test_reorder),
      cmocka_unit_test(test_pool_ragged),
      cmocka_unit_test(test_map_softmax),
      cmocka_unit_test(test_select_hand),
      cmocka_unit_test(test_select_ties_and_near),
      cmocka_unit_test(test_select_random),
      cmocka_unit_test(test_select_paths_agree),
      cmocka_unit_test(test_sta_densities),
      cmocka_unit_test(test_sta_shape),
      cmocka_unit_test(test_mask_modes),
      cmocka_unit_test(test_diagonal_not_forced),
      cmocka_unit_test(test_batch3),
      cmocka_unit_test(test_csr),
      cmocka_unit_test(test_non_finite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
