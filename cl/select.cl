/*
 * Row softmax + CDF selection of the reduced map, with the sliding-tile window ORed in and
 * the kept count of every row written for the CSR. A work-group of SEL_WG work-items handles
 * SEL_WG / SEL_TPR rows; the SEL_TPR work-items of a row hold its values in registers
 * (SEL_PT each, strided by SEL_TPR: the host sets SEL_PT = ceil(Nb / SEL_TPR)).
 *
 * p_j = softmax_j(logit_j) in fp32. Keep block j iff the mass of blocks with larger probability
 * is <= thr: with f(t) = sum of p_k > t, which falls as t grows, the kept set is {j : p_j >= t*}
 * where t* is the smallest float with f(t*) <= thr. Positive floats order like their bit
 * patterns, so t* is found by a 16-way search on the bits: each step evaluates f at 15 points
 * of the interval in one vector reduction, 8 steps cover 2^31 bit patterns. No sort.
 * thr >= 1 keeps every block; a row with a non-finite logit keeps every block too (the
 * non-finite value then reaches the attention output instead of silently vanishing).
 *
 * Outputs: bitmap[row][j] = kept || (sta && window(row block, j)); row_ptr[row + 1] = kept
 * blocks of the row after the OR (the CSR's row lengths, which csr_scan turns into offsets);
 * the kept columns of the row, ascending, in place of its logits (see the compaction below).
 */
#ifndef SEL_WG
#define SEL_WG 256 /* work-group size */
#endif
#ifndef SEL_TPR
#define SEL_TPR 32 /* work-items per row; a multiple of 16 dividing SEL_WG */
#endif
#ifndef SEL_PT
#define SEL_PT 8 /* values per work-item: ceil(Nb / SEL_TPR), set by the host */
#endif
#define SEL_ROWS (SEL_WG / SEL_TPR)
#define SEL_GROUPS (SEL_TPR / 16) /* partial sums per component in row_sum16 */

#define SEL_COLS (SEL_PT * SEL_TPR) /* >= Nb */

typedef struct {
  float16 vec[SEL_ROWS][SEL_TPR];       /* one vector per work-item */
  float part[SEL_ROWS][SEL_GROUPS][16]; /* component sums over a share of the row */
  float2 two[SEL_ROWS][SEL_TPR];        /* pairs of row_max2 */
  int pre[SEL_ROWS][SEL_TPR];           /* kept blocks per chunk of the row */
  uchar keep[SEL_ROWS][SEL_COLS];       /* the row's decisions, for the compaction */
} sel_scratch;

/* Sum of v over the SEL_TPR work-items of row r, returned to each of them. Work-item lt adds
 * component lt % 16 of SEL_TPR / SEL_GROUPS vectors, then everyone adds the SEL_GROUPS
 * partial vectors: 16 + 16 * SEL_GROUPS local reads per work-item, not 16 * SEL_TPR. */
inline float16 row_sum16(__local sel_scratch *sc, int r, int lt, float16 v) {
  sc->vec[r][lt] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  const int c = lt % 16, g = lt / 16;
  __local const float *w = (__local const float *)sc->vec[r];
  float s = 0.0f;
  for (int i = g; i < SEL_TPR; i += SEL_GROUPS) s += w[i * 16 + c];
  sc->part[r][g][c] = s;
  barrier(CLK_LOCAL_MEM_FENCE);
  float16 t = vload16(0, sc->part[r][0]);
  for (int i = 1; i < SEL_GROUPS; i++) t += vload16(0, sc->part[r][i]);
  barrier(CLK_LOCAL_MEM_FENCE); /* vec and part are reused by the next call */
  return t;
}

/* Component-wise maximum of v over the SEL_TPR work-items of row r. */
inline float2 row_max2(__local sel_scratch *sc, int r, int lt, float2 v) {
  sc->two[r][lt] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  float2 m = (float2)(-INFINITY);
  for (int t = 0; t < SEL_TPR; t++) m = fmax(m, sc->two[r][t]);
  barrier(CLK_LOCAL_MEM_FENCE);
  return m;
}

__kernel __attribute__((reqd_work_group_size(SEL_WG, 1, 1)))
void select_cdf(__global float *logits, __global uchar *bitmap, __global int *row_ptr,
                int Nb, int rows, float thr, int sta, int Hb, int Wb, int rt, int rh, int rw) {
  __local sel_scratch sc;
  const int lid = get_local_id(0), r = lid / SEL_TPR, lt = lid % SEL_TPR;
  const int row = get_group_id(0) * SEL_ROWS + r;
  const int live = row < rows; /* spare rows of the last group still join every barrier */
  __global const float *a = logits + (size_t)(live ? row : 0) * Nb;

  float p[SEL_PT];
  float mx = -INFINITY, mn = INFINITY, bad = 0.0f;
  /* Unrolled so that all SEL_PT loads are in flight at once: one at a time, the row's read is
   * latency-bound (measured: most of the kernel's time on the H100). */
#pragma unroll
  for (int c = 0; c < SEL_PT; c++) {
    int j = lt + c * SEL_TPR;
    float v = (live && j < Nb) ? a[j] : -INFINITY;
    bad += (live && j < Nb && !isfinite(v)) ? 1.0f : 0.0f;
    p[c] = v;
    mx = fmax(mx, v);
    mn = (live && j < Nb) ? fmin(mn, v) : mn;
  }
  const float2 ext = row_max2(&sc, r, lt, (float2)(mx, -mn));
  mx = ext.x, mn = -ext.y;
  float z = 0.0f;
  for (int c = 0; c < SEL_PT; c++) {
    p[c] = (lt + c * SEL_TPR < Nb) ? exp(p[c] - mx) : 0.0f;
    z += p[c];
  }
  float16 zb = (float16)(0.0f);
  zb.s0 = z;
  zb.s1 = bad;
  zb = row_sum16(&sc, r, lt, zb);
  const int keep_all = zb.s1 > 0.0f || thr >= 1.0f;
  const float inv = 1.0f / zb.s0;
  for (int c = 0; c < SEL_PT; c++) p[c] *= inv;

  /* Invariant: f(hi) <= thr (hi starts at the bits of the largest p, whose f is 0) and
   * f(lo - 1) > thr (lo starts at the smallest p). Pivot k (0..15) sits at lo + floor(span * (k+1) / 16), so pivot 15 is hi;
   * with f falling in k, the first pivot with f <= thr becomes hi and the one before it + 1
   * becomes lo. Values above hi add the known mass s_hi to every pivot and values below lo
   * add nothing, so only values inside [lo, hi] are looked at: after the first steps that is a
   * handful per row. The pivots and their masses are vectors: choosing pivot k is arithmetic,
   * not a run-time index into an array (which would move the array to memory). */
  const uint16 k1 = (uint16)(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
  /* The search starts on [smallest p, largest p]: exp(mn - mx) * inv is exactly how the
   * smallest value's p was computed, and f just below it is the whole mass (> thr, or the
   * cut at the smallest value keeps everything, which is the answer then too). */
  uint lo = as_uint(exp(mn - mx) * inv), hi = as_uint(inv);
  float s_hi = 0.0f; /* f(hi): mass of the values above hi */
  for (int step = 0; step < 8; step++) {
    const uint span = hi - lo, sq = span >> 4, sr = span & 15u;
    const float16 t = as_float16((uint16)(lo) + (uint16)(sq) * k1 + (((uint16)(sr) * k1) >> 4));
    float16 above = (float16)(0.0f);
    for (int c = 0; c < SEL_PT; c++) {
      uint bits = as_uint(p[c]);
      if (bits >= lo && bits <= hi) {
        float16 pj = (float16)(p[c]);
        above += select((float16)(0.0f), pj, isgreater(pj, t));
      }
    }
    above = row_sum16(&sc, r, lt, above) + (float16)(s_hi);
    above.sf = s_hi; /* f(hi) <= thr by the invariant */
    /* k = pivots with f > thr; f(pivot k) is the largest f <= thr. */
    const int16 over = isgreater(above, (float16)(thr)); /* -1 where f > thr */
    const int8 o8 = over.lo + over.hi;
    const int4 o4 = o8.lo + o8.hi;
    const int2 o2 = o4.lo + o4.hi;
    const uint k = (uint)(-(o2.x + o2.y));
    float16 fk = select(above, (float16)(-INFINITY), over);
    float8 m8 = fmax(fk.lo, fk.hi);
    float4 m4 = fmax(m8.lo, m8.hi);
    float2 m2 = fmax(m4.lo, m4.hi);
    s_hi = fmax(m2.x, m2.y);
    const uint new_hi = lo + sq * (k + 1u) + ((sr * (k + 1u)) >> 4);
    const uint new_lo = k ? lo + sq * k + ((sr * k) >> 4) + 1u : lo;
    hi = new_hi;
    lo = min(new_lo, hi);
  }
  const float cut = as_float(lo);
  const int qb = (live ? row : 0) % Nb; /* query block of the row, for the window */
  __global uchar *m = bitmap + (size_t)(live ? row : 0) * Nb;
  for (int c = 0; c < SEL_PT; c++) {
    int j = lt + c * SEL_TPR, keep = 0;
    if (j < Nb && live) {
      keep = keep_all || p[c] >= cut || (sta && nabla_sta_keep(qb, j, Hb, Wb, rt, rh, rw));
      m[j] = keep ? 1 : 0;
    }
    sc.keep[r][j] = (uchar)keep;
  }
  /* Compaction: work-item lt takes the contiguous chunk [j0, j1) of the row's decisions, so
   * the chunks' counts in work-item order give every kept column its rank. The logits of this
   * row were read into registers above and are read by no other work-group: the kept columns
   * overwrite them (as ints), and csr_gather copies them to their CSR place once row_ptr is
   * scanned. */
  barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
  const int chunk = (Nb + SEL_TPR - 1) / SEL_TPR, j0 = min(Nb, lt * chunk), j1 = min(Nb, j0 + chunk);
  int n = 0;
  for (int j = j0; j < j1; j++) n += sc.keep[r][j];
  sc.pre[r][lt] = n;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (!live) return; /* no barrier follows */
  int pos = 0, total = 0;
  for (int t = 0; t < SEL_TPR; t++) {
    int v = sc.pre[r][t];
    pos += t < lt ? v : 0;
    total += v;
  }
  __global int *cols = (__global int *)logits + (size_t)row * Nb;
  for (int j = j0; j < j1; j++)
    if (sc.keep[r][j]) cols[pos++] = j;
  if (lt == 0) row_ptr[row + 1] = total;
}
