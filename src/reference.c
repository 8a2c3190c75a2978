/*
 * Plain-C float64 reference of every stage (docs/algorithm.md): the oracle of the tests and of
 * `nablacl run --check`. Written for clarity, not speed; the only allocations are in
 * nabla_ref_mask (which returns a status) and an optional sort buffer in nabla_ref_select (with
 * an allocation-free fallback), so the void functions cannot fail. Functions given an invalid
 * shape or NULL pointers return without writing anything.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nablacl.h"

static int shape_ok(const nabla_shape *s) { return nabla_shape_check(s, NULL, 0) == NABLA_OK; }

static int is_video(const nabla_shape *s) { return s->grid_t > 0; }
static int tiles_h(const nabla_shape *s) { return (s->grid_h + NABLA_TILE - 1) / NABLA_TILE; }
static int tiles_w(const nabla_shape *s) { return (s->grid_w + NABLA_TILE - 1) / NABLA_TILE; }
static int min_int(int a, int b) { return a < b ? a : b; }

/* Tile-order token range of block `i`. Closed form of nabla_shape_block_starts: every tile row
 * above holds 8*Wt tokens and every tile to the left in this row is a full 8 wide. */
static void block_range(const nabla_shape *s, int i, size_t *start, size_t *count) {
  if (!is_video(s)) {
    *start = (size_t)i * NABLA_BLOCK;
    *count = (size_t)min_int(NABLA_BLOCK, s->seq - i * NABLA_BLOCK);
    return;
  }
  int hb_n = tiles_h(s), wb_n = tiles_w(s);
  int t = i / (hb_n * wb_n), hb = i / wb_n % hb_n, wb = i % wb_n;
  int th = min_int(NABLA_TILE, s->grid_h - NABLA_TILE * hb);
  int tw = min_int(NABLA_TILE, s->grid_w - NABLA_TILE * wb);
  *start = (size_t)t * s->grid_h * s->grid_w + (size_t)NABLA_TILE * hb * s->grid_w +
           (size_t)th * NABLA_TILE * wb;
  *count = (size_t)th * tw;
}

void nabla_ref_reorder(const nabla_shape *s, nabla_reorder_dir dir, const double *src,
                       double *dst) {
  if (!src || !dst || !shape_ok(s)) return;
  if (dir != NABLA_RASTER_TO_TILE && dir != NABLA_TILE_TO_RASTER) return;
  size_t D = (size_t)s->head_dim, S = (size_t)s->seq, bh_n = (size_t)s->batch * s->heads;
  if (!is_video(s)) {
    memmove(dst, src, bh_n * S * D * sizeof *dst);
    return;
  }
  int hb_n = tiles_h(s), wb_n = tiles_w(s), Ht = s->grid_h, Wt = s->grid_w;
  for (size_t bh = 0; bh < bh_n; bh++) {
    const double *in = src + bh * S * D;
    double *out = dst + bh * S * D;
    int block = 0;
    for (int t = 0; t < s->grid_t; t++)
      for (int hb = 0; hb < hb_n; hb++)
        for (int wb = 0; wb < wb_n; wb++, block++) {
          size_t start, count;
          block_range(s, block, &start, &count);
          int th = min_int(NABLA_TILE, Ht - NABLA_TILE * hb);
          int tw = min_int(NABLA_TILE, Wt - NABLA_TILE * wb);
          for (int gh = 0; gh < th; gh++)
            for (int gw = 0; gw < tw; gw++) {
              size_t tile = start + (size_t)gh * tw + gw;
              size_t raster = ((size_t)t * Ht + NABLA_TILE * hb + gh) * Wt + NABLA_TILE * wb + gw;
              size_t from = dir == NABLA_RASTER_TO_TILE ? raster : tile;
              size_t to = dir == NABLA_RASTER_TO_TILE ? tile : raster;
              memcpy(out + to * D, in + from * D, D * sizeof *out);
            }
        }
  }
}

void nabla_ref_pool(const nabla_shape *s, const double *x, double *pooled) {
  if (!x || !pooled || !shape_ok(s)) return;
  size_t D = (size_t)s->head_dim, S = (size_t)s->seq, bh_n = (size_t)s->batch * s->heads;
  int nb = nabla_shape_blocks(s);
  for (size_t bh = 0; bh < bh_n; bh++)
    for (int i = 0; i < nb; i++) {
      size_t start, count;
      block_range(s, i, &start, &count);
      double *out = pooled + (bh * nb + i) * D;
      for (size_t d = 0; d < D; d++) {
        double sum = 0;
        for (size_t n = start; n < start + count; n++) sum += x[(bh * S + n) * D + d];
        out[d] = sum / (double)count;
      }
    }
}

void nabla_ref_map_softmax(const nabla_shape *s, const double *q_pooled, const double *k_pooled,
                           double *probs) {
  if (!q_pooled || !k_pooled || !probs || !shape_ok(s)) return;
  size_t D = (size_t)s->head_dim, bh_n = (size_t)s->batch * s->heads;
  size_t nb = (size_t)nabla_shape_blocks(s);
  double scale = 1.0 / sqrt((double)D);
  for (size_t bh = 0; bh < bh_n; bh++)
    for (size_t i = 0; i < nb; i++) {
      const double *qi = q_pooled + (bh * nb + i) * D;
      double *row = probs + (bh * nb + i) * nb;
      double max = -INFINITY;
      int finite = 1;
      for (size_t j = 0; j < nb; j++) {
        const double *kj = k_pooled + (bh * nb + j) * D;
        double dot = 0;
        for (size_t d = 0; d < D; d++) dot += qi[d] * kj[d];
        row[j] = dot * scale;
        finite &= isfinite(row[j]) != 0;
        if (row[j] > max) max = row[j];
      }
      if (!finite) { /* a NaN or ±Inf logit: the row is NaN, and selection keeps all of it */
        for (size_t j = 0; j < nb; j++) row[j] = NAN;
        continue;
      }
      double sum = 0;
      for (size_t j = 0; j < nb; j++) {
        row[j] = exp(row[j] - max);
        sum += row[j];
      }
      for (size_t j = 0; j < nb; j++) row[j] /= sum;
    }
}

/* ---- CDF selection -------------------------------------------------------------------------- */
/*
 * Exact rule: keep j iff above_j = sum of p_k > p_j (strictly) is <= thr. Tied blocks share
 * above_j and so are kept or dropped together. A row is flagged near (ambiguous under rounding)
 * when, for some block j with `ties` blocks of equal probability (itself included):
 *   (a) |above_j - thr| <= eps or |above_j + p_j - thr| <= eps (the header's definition);
 *   (b) ties >= 2 and the tied group straddles thr when ranked one by one, i.e.
 *       above_j <= thr + eps and above_j + (ties-1) p_j >= thr - eps: an implementation that
 *       breaks ties by rank (a sort) keeps only part of the group, which docs/algorithm.md §3–4 allows;
 *   (c) or the smallest kept probability is within a relative eps of the largest dropped one:
 *       a near-tie across the cut, whose order rounding can swap.
 * thr >= 1 keeps every block of every row exactly (above_j <= 1 - p_j <= 1) and flags nothing.
 * NaN probabilities count as 0.
 */

typedef struct {
  double p;
  int32_t j;
} ranked_block;

static int ranked_cmp(const void *a, const void *b) {
  const ranked_block *x = a, *y = b;
  if (x->p != y->p) return x->p > y->p ? -1 : 1;
  return (x->j > y->j) - (x->j < y->j);
}

static double clean_prob(double p) { return p == p ? p : 0.0; }

typedef struct {
  double thr, eps;
  int near;
  int any_kept, any_dropped;
  double min_kept, max_dropped;
} row_judge;

/* Decides a block (or a tied group) of probability p with mass `above` strictly above it. */
static int judge_block(row_judge *r, double p, double above, int ties) {
  int keep = above <= r->thr;
  if (fabs(above - r->thr) <= r->eps || fabs(above + p - r->thr) <= r->eps) r->near = 1;
  if (ties >= 2 && above <= r->thr + r->eps && above + (ties - 1) * p >= r->thr - r->eps)
    r->near = 1;
  if (keep) {
    if (!r->any_kept || p < r->min_kept) r->min_kept = p;
    r->any_kept = 1;
  } else {
    if (!r->any_dropped || p > r->max_dropped) r->max_dropped = p;
    r->any_dropped = 1;
  }
  return keep;
}

static int judge_finish(const row_judge *r) {
  if (r->near) return 1;
  return r->any_kept && r->any_dropped && r->min_kept - r->max_dropped <= r->eps * r->min_kept;
}

/* O(nb log nb) with a sort buffer of nb entries. */
static int select_row_sorted(const double *row, int nb, row_judge *r, ranked_block *buf,
                             uint8_t *keep) {
  for (int j = 0; j < nb; j++) {
    buf[j].p = clean_prob(row[j]);
    buf[j].j = j;
  }
  qsort(buf, (size_t)nb, sizeof *buf, ranked_cmp);
  double above = 0;
  for (int g = 0; g < nb;) {
    int e = g;
    while (e < nb && buf[e].p == buf[g].p) e++;
    uint8_t k = (uint8_t)judge_block(r, buf[g].p, above, e - g);
    for (; g < e; g++) {
      keep[buf[g].j] = k;
      above += buf[g].p;
    }
  }
  return judge_finish(r);
}

/* O(nb^2), no allocation: used for short rows and when the sort buffer cannot be allocated. */
static int select_row_quadratic(const double *row, int nb, row_judge *r, uint8_t *keep) {
  for (int j = 0; j < nb; j++) {
    double pj = clean_prob(row[j]), above = 0;
    int ties = 0;
    for (int k = 0; k < nb; k++) {
      double pk = clean_prob(row[k]);
      if (pk > pj) above += pk;
      if (pk == pj) ties++;
    }
    keep[j] = (uint8_t)judge_block(r, pj, above, ties);
  }
  return judge_finish(r);
}

void nabla_ref_select(const nabla_shape *s, const double *probs, double thr, uint8_t *bitmap,
                      uint8_t *near, double eps) {
  if (!probs || !bitmap || !shape_ok(s)) return;
  size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb;
  if (!(eps > 0)) eps = 0;
  if (thr >= 1) {
    memset(bitmap, 1, rows * nb);
    if (near) memset(near, 0, rows);
    return;
  }
  ranked_block *buf = nb > 64 ? malloc(nb * sizeof *buf) : NULL;
  for (size_t row = 0; row < rows; row++) {
    row_judge r = {thr, eps, 0, 0, 0, 0.0, 0.0};
    const double *p = probs + row * nb;
    uint8_t *keep = bitmap + row * nb;
    int is_near = buf ? select_row_sorted(p, (int)nb, &r, buf, keep)
                      : select_row_quadratic(p, (int)nb, &r, keep);
    if (near) near[row] = (uint8_t)is_near;
  }
  free(buf);
}

/* ---- STA, full mask, CSR ------------------------------------------------------------------- */

void nabla_ref_sta(const nabla_shape *s, int wt, int wh, int ww, uint8_t *bitmap) {
  if (!bitmap || !shape_ok(s) || !is_video(s) || wt < 1 || wh < 1 || ww < 1) return;
  int T = s->grid_t, hb_n = tiles_h(s), wb_n = tiles_w(s), nb = nabla_shape_blocks(s);
  /* Radii beyond the grid change nothing; clamping keeps t1 + rt from overflowing. */
  int rt = min_int(wt / 2, T), rh = min_int(wh / 2, hb_n), rw = min_int(ww / 2, wb_n);
  size_t bh_n = (size_t)s->batch * s->heads;
  for (size_t bh = 0; bh < bh_n; bh++)
    for (int i = 0; i < nb; i++) {
      int t1 = i / (hb_n * wb_n), h1 = i / wb_n % hb_n, w1 = i % wb_n;
      uint8_t *row = bitmap + (bh * nb + i) * (size_t)nb;
      for (int t2 = t1 - rt < 0 ? 0 : t1 - rt; t2 <= t1 + rt && t2 < T; t2++)
        for (int h2 = h1 - rh < 0 ? 0 : h1 - rh; h2 <= h1 + rh && h2 < hb_n; h2++)
          for (int w2 = w1 - rw < 0 ? 0 : w1 - rw; w2 <= w1 + rw && w2 < wb_n; w2++)
            row[(t2 * hb_n + h2) * wb_n + w2] = 1;
    }
}

nabla_status nabla_ref_mask(const nabla_shape *s, const nabla_algo *algo, const double *q,
                            const double *k, uint8_t *bitmap, uint8_t *near, double eps) {
  nabla_status st = NABLA_OK;
  double *q_pooled = NULL, *k_pooled = NULL, *probs = NULL;
  if (!algo || !bitmap || !shape_ok(s)) return NABLA_INVALID_ARGUMENT;
  if (algo->nabla && (!q || !k || !(algo->thr > 0 && algo->thr <= 1)))
    return NABLA_INVALID_ARGUMENT;
  if (algo->sta && (!is_video(s) || algo->sta_t < 1 || algo->sta_h < 1 || algo->sta_w < 1))
    return NABLA_INVALID_ARGUMENT;

  size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb;
  size_t D = (size_t)s->head_dim;
  if (near) memset(near, 0, rows);
  if (!algo->nabla) {
    memset(bitmap, algo->sta ? 0 : 1, rows * nb);
  } else {
    q_pooled = malloc(rows * D * sizeof *q_pooled);
    k_pooled = malloc(rows * D * sizeof *k_pooled);
    probs = malloc(rows * nb * sizeof *probs);
    if (!q_pooled || !k_pooled || !probs) {
      st = NABLA_OUT_OF_MEMORY;
      goto done;
    }
    nabla_ref_pool(s, q, q_pooled);
    nabla_ref_pool(s, k, k_pooled);
    nabla_ref_map_softmax(s, q_pooled, k_pooled, probs);
    nabla_ref_select(s, probs, algo->thr, bitmap, near, eps);
  }
  if (algo->sta) nabla_ref_sta(s, algo->sta_t, algo->sta_h, algo->sta_w, bitmap);
done:
  free(q_pooled);
  free(k_pooled);
  free(probs);
  return st;
}

int64_t nabla_ref_csr(const nabla_shape *s, const uint8_t *bitmap, int32_t *row_ptr,
                      int32_t *col_idx) {
  if (!bitmap || !row_ptr || !shape_ok(s)) return -1;
  size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb;
  int64_t kept = 0;
  row_ptr[0] = 0;
  for (size_t r = 0; r < rows; r++) {
    for (size_t j = 0; j < nb; j++)
      if (bitmap[r * nb + j]) {
        if (col_idx) col_idx[kept] = (int32_t)j;
        kept++;
      }
    row_ptr[r + 1] = (int32_t)kept;  /* fits: nabla_shape_check bounds B*H*Nb^2 by INT32_MAX */
  }
  return kept;
}

/* ---- Attention ------------------------------------------------------------------------------ */

/*
 * One query row against the keys of the listed blocks (all tokens when cols is NULL). Keys are
 * scored 64 at a time into a stack buffer and folded in with a running max (flash-attention
 * style, in double), so every dot product is computed once and nothing is allocated. A block
 * index out of range gives NaN so that a corrupt mask cannot pass a comparison.
 */
static void attend_row(const nabla_shape *s, const double *qrow, const double *k, const double *v,
                       const int32_t *cols, int ncols, double *orow) {
  size_t D = (size_t)s->head_dim;
  int nb = nabla_shape_blocks(s), spans = cols ? ncols : 1;
  double scale = 1.0 / sqrt((double)D), max = -INFINITY, sum = 0;
  double acc[NABLA_MAX_HEAD_DIM] = {0}, score[NABLA_BLOCK];
  for (int sp = 0; sp < spans; sp++) {
    if (cols && (cols[sp] < 0 || cols[sp] >= nb)) {
      for (size_t d = 0; d < D; d++) orow[d] = NAN;
      return;
    }
    size_t start = 0, count = (size_t)s->seq;
    if (cols) block_range(s, cols[sp], &start, &count);
    for (size_t c = start; c < start + count; c += NABLA_BLOCK) {
      size_t n = start + count - c < NABLA_BLOCK ? start + count - c : NABLA_BLOCK;
      double chunk_max = -INFINITY;
      for (size_t u = 0; u < n; u++) {
        double dot = 0;
        for (size_t d = 0; d < D; d++) dot += qrow[d] * k[(c + u) * D + d];
        score[u] = dot * scale;
        if (score[u] > chunk_max) chunk_max = score[u];
      }
      if (chunk_max > max) {  /* rescale what was summed under the old max */
        double f = exp(max - chunk_max);
        sum *= f;
        for (size_t d = 0; d < D; d++) acc[d] *= f;
        max = chunk_max;
      }
      for (size_t u = 0; u < n; u++) {
        double w = exp(score[u] - max);
        sum += w;
        for (size_t d = 0; d < D; d++) acc[d] += w * v[(c + u) * D + d];
      }
    }
  }
  /* An empty row is 0; a non-finite logit (NaN, or Inf - Inf) reaches the output as NaN, as on
   * the device (docs/algorithm.md). */
  for (size_t d = 0; d < D; d++) orow[d] = sum != 0.0 ? acc[d] / sum : 0.0;
}

void nabla_ref_attention_sparse(const nabla_shape *s, const double *q, const double *k,
                                const double *v, const int32_t *row_ptr, const int32_t *col_idx,
                                double *out) {
  if (!q || !k || !v || !row_ptr || !out || !shape_ok(s)) return;
  size_t D = (size_t)s->head_dim, S = (size_t)s->seq, bh_n = (size_t)s->batch * s->heads;
  int nb = nabla_shape_blocks(s);
  for (size_t bh = 0; bh < bh_n; bh++) {
    const double *kb = k + bh * S * D, *vb = v + bh * S * D;
    for (int i = 0; i < nb; i++) {
      size_t r = bh * nb + i, start, count;
      int64_t n = (int64_t)row_ptr[r + 1] - row_ptr[r];
      int malformed = row_ptr[r] < 0 || n < 0 || n > nb || (n > 0 && !col_idx);
      block_range(s, i, &start, &count);
      for (size_t t = start; t < start + count; t++) {
        double *orow = out + (bh * S + t) * D;
        if (n == 0 || malformed) {
          for (size_t d = 0; d < D; d++) orow[d] = malformed ? NAN : 0.0;
        } else {
          attend_row(s, q + (bh * S + t) * D, kb, vb, col_idx + row_ptr[r], (int)n, orow);
        }
      }
    }
  }
}

void nabla_ref_attention_dense(const nabla_shape *s, const double *q, const double *k,
                               const double *v, double *out) {
  if (!q || !k || !v || !out || !shape_ok(s)) return;
  size_t D = (size_t)s->head_dim, S = (size_t)s->seq, bh_n = (size_t)s->batch * s->heads;
  for (size_t bh = 0; bh < bh_n; bh++)
    for (size_t t = 0; t < S; t++)
      attend_row(s, q + (bh * S + t) * D, k + bh * S * D, v + bh * S * D, NULL, 0,
                 out + (bh * S + t) * D);
}
