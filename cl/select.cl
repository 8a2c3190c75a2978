/*
 * Row softmax + CDF selection of the reduced map, with the sliding-tile window ORed in and
 * the kept count of every row written for the CSR. A work-group of SEL_WG work-items handles
 * SEL_WG / SEL_TPR rows; the SEL_TPR work-items of a row hold its values in registers
 * (SEL_PT each, strided by SEL_TPR: the host sets SEL_PT = ceil(Nb / SEL_TPR)).
 *
 * p_j = softmax_j(logit_j) in fp32. Keep block j iff the mass of blocks with larger probability
 * is <= thr: with f(t) = sum of p_k > t, which falls as t grows, the kept set is {j : p_j >= t*}
 * where t* is the smallest float with f(t*) <= thr. Positive floats order like their bit
 * patterns, so t* is found on the bits, 4 of them per step, by a 16-bucket histogram of mass:
 * the interval [lo, hi] is cut into 16 buckets of 2^shift bit patterns, every value inside it
 * adds its p to its bucket (one index computation and one local add, whatever the number of
 * buckets), and the suffix sums of the buckets are f at the 16 bucket tops. 8 steps cover the
 * 2^30 patterns of (0, 1]; a row stops searching as soon as its interval holds at most one
 * value (usually after 3 or 4 steps). No sort.
 * thr >= 1 keeps every block; a row with a non-finite logit keeps every block too (the
 * non-finite value then reaches the attention output instead of silently vanishing).
 *
 * Outputs: bitmap[row][j] = kept || (sta && window(row block, j)); row_ptr[row + 1] = kept
 * blocks of the row after the OR (the CSR's row lengths); groups[g + 1] = the sum of those
 * over work-group g's rows; the kept columns of the row, ascending, in place of its logits
 * (see the compaction below). csr_gather turns these into the CSR.
 */
#ifndef SEL_WG
#define SEL_WG 256 /* work-group size */
#endif
#ifndef SEL_TPR
#define SEL_TPR 32 /* work-items per row; a multiple of 32 dividing SEL_WG */
#endif
#ifndef SEL_PT
#define SEL_PT 8 /* values per work-item: ceil(Nb / SEL_TPR), set by the host */
#endif
#define SEL_ROWS (SEL_WG / SEL_TPR)
#define SEL_GROUPS (SEL_TPR / 16) /* partial sums per bucket in hist_sum */
#define SEL_SHARE (SEL_TPR / SEL_GROUPS) /* columns each of those partial sums covers */

#define SEL_WPG (SEL_TPR / 32)      /* decision words per column group of SEL_TPR */
#define SEL_WORDS (SEL_PT * SEL_WPG) /* decision words per row (SEL_PT <= 64: km bits) */

typedef struct {
  /* hist[r][b][lt]: work-item lt's share of bucket b of row r. The +1 spreads the reads of
   * hist_sum (16 buckets x SEL_GROUPS shares at once) over distinct local-memory banks. */
  float hist[SEL_ROWS][16][SEL_TPR + 1];
  float part[SEL_ROWS][SEL_GROUPS][16]; /* bucket sums over a share of the row */
  float2 two[SEL_ROWS][SEL_TPR];        /* pairs of row_max2 */
  ulong km[SEL_ROWS][SEL_TPR];          /* each work-item's decisions, bit c = column c */
  uint words[SEL_ROWS][SEL_WORDS];      /* the row's decisions, 32 columns a word */
  int total[SEL_ROWS];                  /* kept blocks per row, for the group's sum */
  int busy[2][SEL_ROWS];                /* row still searching after step s: busy[s % 2] */
} sel_scratch;

/* The 16 bucket totals of row r, stored to *sums for each of its work-items, from the columns
 * that the work-items wrote into hist[r] before the call. Work-item lt adds bucket lt % 16
 * over a share of SEL_SHARE columns, then everyone adds the SEL_GROUPS shares: 16 + 16 *
 * SEL_GROUPS local reads per work-item, not 16 * SEL_TPR. Two barriers: a work-item writes its
 * hist column again only after the second, when every read of the first phase is done, and
 * part is written again only after the next call's first barrier. busy (or NULL): the rows'
 * flags, written before the call; returns whether any is set (1 without flags), the same
 * answer for every work-item of the group. */
NABLA_INLINE int hist_sum(__local sel_scratch *sc, int r, int lt, __local const int *busy, float16 *sums) {
  barrier(CLK_LOCAL_MEM_FENCE);
  int any = 1;
  if (busy) {
    any = 0;
#pragma unroll
    for (int i = 0; i < SEL_ROWS; i++) any |= busy[i];
  }
  const int b = lt % 16, g = lt / 16;
  __local const float *col = sc->hist[r][b] + g * SEL_SHARE;
  float s = 0.0f;
  for (int i = 0; i < SEL_SHARE; i++) s += col[i];
  sc->part[r][g][b] = s;
  barrier(CLK_LOCAL_MEM_FENCE);
  float16 t = vload16(0, sc->part[r][0]);
  for (int i = 1; i < SEL_GROUPS; i++) t += vload16(0, sc->part[r][i]);
  *sums = t;
  return any;
}

/* Writes work-item lt's 16 values into its hist column. */
NABLA_INLINE void hist_put(__local sel_scratch *sc, int r, int lt, float16 v) {
  float w[16];
  vstore16(v, 0, w);
#pragma unroll
  for (int b = 0; b < 16; b++) sc->hist[r][b][lt] = w[b];
}

/* Component-wise maximum of v over the SEL_TPR work-items of row r. `two` is written once
 * per launch, so one barrier suffices. */
NABLA_INLINE float2 row_max2(__local sel_scratch *sc, int r, int lt, float2 v) {
  sc->two[r][lt] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  float2 m = (float2)(-INFINITY);
  for (int t = 0; t < SEL_TPR; t++) m = fmax(m, sc->two[r][t]);
  return m;
}

#ifndef SEL_NV_BARRIER
#define SEL_NV_BARRIER 0 /* 1 only where the host knows barriers are NVIDIA's bar.sync */
#endif

__kernel __attribute__((reqd_work_group_size(SEL_WG, 1, 1)))
void select_cdf(__global float *logits, __global uchar *bitmap, __global int *row_ptr,
                __global int *groups, int Nb, int ld, int rows, float thr, int sta, int Hb, int Wb, int rt, int rh, int rw) {
  __local sel_scratch sc;
  const int lid = get_local_id(0), r = lid / SEL_TPR, lt = lid % SEL_TPR;
  const int row = get_group_id(0) * SEL_ROWS + r;
  /* Spare rows of the last group redo the group's last real row and write nothing. That row is
   * this work-group's own, so the barrier before the column writes orders these reads too
   * (row 0 would race with group 0). A per-load select instead cost 0.1 ms at Wan 14B. */
  const int live = row < rows;
  __global const float *a = logits + (size_t)(live ? row : rows - 1) * ld;

  float p[SEL_PT];
  float mx = -INFINITY, mn = INFINITY, bad = 0.0f;
  /* Unrolled so that all SEL_PT loads are in flight at once: one at a time, the row's read is
   * latency-bound (measured: most of the kernel's time on the H100). */
#pragma unroll
  for (int c = 0; c < SEL_PT; c++) {
    int j = lt + c * SEL_TPR;
    float v = j < Nb ? a[j] : -INFINITY;
    bad += (j < Nb && !isfinite(v)) ? 1.0f : 0.0f;
    p[c] = v;
    mx = fmax(mx, v);
    mn = j < Nb ? fmin(mn, v) : mn;
  }
  const float2 ext = row_max2(&sc, r, lt, (float2)(mx, -mn));
  mx = ext.x, mn = -ext.y;
  float z = 0.0f;
#pragma unroll
  for (int c = 0; c < SEL_PT; c++) {
    p[c] = (lt + c * SEL_TPR < Nb) ? exp(p[c] - mx) : 0.0f;
    z += p[c];
  }
  float16 zb = (float16)(0.0f);
  zb.s0 = z;
  zb.s1 = bad;
  hist_put(&sc, r, lt, zb);
  hist_sum(&sc, r, lt, NULL, &zb);
  const int keep_all = zb.s1 > 0.0f || thr >= 1.0f;
  const float inv = 1.0f / zb.s0;
#pragma unroll
  for (int c = 0; c < SEL_PT; c++) p[c] *= inv;

  /* Invariant: f(hi) = s_hi <= thr and f(lo - 1) > thr. The search starts on [smallest p,
   * largest p]: f there is 0 (nothing is larger than the largest p, inv = exp(0) * inv), and
   * just below the smallest p it is the whole mass (> thr, or the cut at the smallest value
   * keeps everything, which is then the answer too); exp(mn - mx) * inv is exactly how the
   * smallest value's p was computed. A step cuts [lo, hi] into buckets of 2^shift patterns,
   * shift the least with (hi - lo) >> shift <= 15; bucket k's top is
   * top_k = lo + (k + 1) 2^shift - 1 (top_15 >= hi) and f(top_k) = s_hi + the mass of buckets
   * above k. The least k with f(top_k) <= thr gives the new hi = min(top_k, hi), and
   * lo = top_(k-1) + 1 for k > 0. The span falls below 2^shift, so shift drops by 4 a step:
   * from at most 26 (p in (0, 1] spans fewer than 2^30 patterns), 8 steps end with lo == hi.
   * Values outside [lo, hi] are never looked at again: those above are s_hi, those below
   * count for nothing. Padding values are 0 and add nothing wherever they land. */
  uint lo = as_uint(exp(mn - mx) * inv), hi = as_uint(inv);
  float s_hi = 0.0f;
  int done = 0; /* [lo, hi] holds at most one value: the cut is lo */
  for (int step = 0; step < 8; step++) {
    const uint span = hi - lo;
    const uint shift = (uint)max(0, 28 - (int)clz(span));
    hist_put(&sc, r, lt, (float16)(0.0f));
    if (!done)
#pragma unroll
      for (int c = 0; c < SEL_PT; c++) {
        const uint bits = as_uint(p[c]);
        if (bits >= lo && bits <= hi) sc.hist[r][(bits - lo) >> shift][lt] += p[c];
      }
    float16 mass;
    if (!hist_sum(&sc, r, lt, step ? sc.busy[(step - 1) & 1] : NULL, &mass)) break;
    /* A row that is done only passes its flag on. (The flag written once after an if (!done)
     * block instead measured select 0.40 against 0.33 ms on the H100: ptxas schedules the
     * loop differently.) */
    if (done) {
      if (lt == 0) sc.busy[step & 1][r] = 0;
      continue;
    }
    float m[16];
    vstore16(mass, 0, m);
    float f = s_hi, fk = s_hi, mk = 0.0f; /* f(top_k), k from 15 down */
    uint k = 15;
#pragma unroll
    for (int b = 15; b >= 0; b--) {
      if (f <= thr) k = (uint)b, fk = f, mk = m[b];
      f += m[b];
    }
    const uint top = lo + ((k + 1u) << shift) - 1u;
    lo += k << shift;
    hi = min(top, hi);
    s_hi = fk;
    /* Two or more values in [lo, hi] weigh at least 2 lo (the rounded sums of non-negative
     * terms are monotone), so mass below 2 lo means at most one value v there. With none,
     * the kept set is p > hi, that is p >= lo; with one, f(t) > thr below v and f(v) =
     * s_hi <= thr, so t* = v and again p >= lo. Later steps would not change the decisions. */
    done = mk < 2.0f * as_float(lo);
    if (lt == 0) sc.busy[step & 1][r] = !done;
  }
  const float cut = as_float(lo);

  /* Decisions. Work-item lt's columns are j = lt + c SEL_TPR; the window test walks their
   * (t, h, w) block coordinates by the constant step SEL_TPR in mixed radix instead of
   * dividing for every column. km bit c = column lt + c SEL_TPR is kept. */
  const int qb = (live ? row : 0) % Nb; /* query block of the row, for the window */
  const int plane = Hb * Wb;
  const int qt = qb / plane, qh = (qb % plane) / Wb, qw = qb % Wb;
  const int dt = SEL_TPR / plane, dh = (SEL_TPR % plane) / Wb, dw = SEL_TPR % Wb;
  int jt = lt / plane, jh = (lt % plane) / Wb, jw = lt % Wb;
  __global uchar *m = bitmap + (size_t)(live ? row : 0) * Nb;
  ulong km = 0;
#pragma unroll
  for (int c = 0; c < SEL_PT; c++) {
    const int j = lt + c * SEL_TPR;
    const int win = sta && nabla_sta_near(jt - qt, jh - qh, jw - qw, rt, rh, rw);
    const int keep = j < Nb && (keep_all || p[c] >= cut || win);
    if (j < Nb && live) m[j] = (uchar)keep;
    km |= (ulong)keep << c;
    jw += dw;
    jh += dh + (jw >= Wb);
    jw -= jw >= Wb ? Wb : 0;
    jt += dt + (jh >= Hb);
    jh -= jh >= Hb ? Hb : 0;
  }

  /* Compaction, coalesced: word (c, w) of the row holds the decisions of columns
   * c SEL_TPR + 32 w .. + 31, one bit each, so a kept column's rank is the kept count of the
   * words before its own plus the bits below it in its word; consecutive kept columns land
   * in consecutive places. Work-item lt assembles the words lt, lt + SEL_TPR, ... from the km
   * of the 32 work-items they cover. The logits of this row were read into registers above
   * and by no other work-group: the kept columns overwrite them (as ints), and csr_gather
   * copies them to their CSR place once row_ptr is scanned. The global fence orders every
   * work-item's reads of the row before any of those writes (a local fence would not), except
   * where SEL_NV_BARRIER says the device's barrier orders global memory by itself. */
  sc.km[r][lt] = km;
#if SEL_NV_BARRIER
  /* NVIDIA: bar.sync orders every memory access of the threads it joins (PTX ISA, "bar"), and
   * the global fence costs a device-wide membar there (select 0.41 -> 0.51 ms at Wan 14B). */
  barrier(CLK_LOCAL_MEM_FENCE);
#else
  barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
#endif
  for (int wi = lt; wi < SEL_WORDS; wi += SEL_TPR) {
    const int c = wi / SEL_WPG, w0 = (wi % SEL_WPG) * 32;
    uint word = 0;
    for (int t = 0; t < 32; t++) word |= (uint)((sc.km[r][w0 + t] >> c) & 1) << t;
    sc.words[r][wi] = word;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  __global int *cols = (__global int *)logits + (size_t)(live ? row : 0) * ld;
  const int own = lt / 32;
  const uint below = (1u << (lt % 32)) - 1u;
  int run = 0;
#pragma unroll
  for (int c = 0; c < SEL_PT; c++)
    for (int w = 0; w < SEL_WPG; w++) {
      const uint word = sc.words[r][c * SEL_WPG + w];
      if (live && w == own && ((km >> c) & 1)) cols[run + popcount(word & below)] = lt + c * SEL_TPR;
      run += popcount(word);
    }
  /* The row's length, and the group's total at groups[group + 1] (csr_gather adds up those
   * of the groups before its own, then the lengths inside the group, for the rows' offsets). */
  if (lt == 0) {
    if (live) row_ptr[row + 1] = run;
    sc.total[r] = live ? run : 0;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lid == 0) {
    int t = 0;
    for (int i = 0; i < SEL_ROWS; i++) t += sc.total[i];
    groups[get_group_id(0) + 1] = t;
  }
}
