/*
 * Row softmax + CDF selection of the reduced map. A work-group of SEL_WG work-items handles
 * SEL_WG / SEL_TPR rows; the SEL_TPR work-items of a row hold its values in registers
 * (SEL_PT each, strided by SEL_TPR: the host sets SEL_PT = ceil(Nb / SEL_TPR)).
 *
 * p_j = softmax_j(logit_j) in fp32. Keep block j iff the mass of blocks with larger probability
 * is <= thr: with f(t) = sum of p_k > t, which falls as t grows, the kept set is {j : p_j >= t*}
 * where t* is the smallest float with f(t*) <= thr. Positive floats order like their bit
 * patterns, so t* is found by an 8-way search on the bits: each step evaluates f at 7 points
 * of the interval in one vector reduction, 12 steps cover 2^31 bit patterns. No sort.
 * thr >= 1 keeps every block; a row with a non-finite logit keeps every block too (the
 * non-finite value then reaches the attention output instead of silently vanishing).
 */
#ifndef SEL_WG
#define SEL_WG 256 /* work-group size */
#endif
#ifndef SEL_TPR
#define SEL_TPR 32 /* work-items per row; divides SEL_WG */
#endif
#ifndef SEL_PT
#define SEL_PT 8 /* values per work-item: ceil(Nb / SEL_TPR), set by the host */
#endif
#define SEL_ROWS (SEL_WG / SEL_TPR)

/* Sum over the SEL_TPR work-items of this row: every work-item reads all partials (two
 * barriers, no tree). */
inline float8 row_sum8(__local float8 (*red)[SEL_TPR], int r, int lt, float8 v) {
  red[r][lt] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  float8 s = (float8)(0.0f);
  for (int t = 0; t < SEL_TPR; t++) s += red[r][t];
  barrier(CLK_LOCAL_MEM_FENCE);
  return s;
}

inline float row_max(__local float (*red)[SEL_TPR], int r, int lt, float v) {
  red[r][lt] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  float m = -INFINITY;
  for (int t = 0; t < SEL_TPR; t++) m = fmax(m, red[r][t]);
  barrier(CLK_LOCAL_MEM_FENCE);
  return m;
}

__kernel __attribute__((reqd_work_group_size(SEL_WG, 1, 1)))
void select_cdf(__global const float *logits, __global uchar *bitmap, int Nb, int rows,
                float thr) {
  __local float8 red8[SEL_ROWS][SEL_TPR];
  __local float red1[SEL_ROWS][SEL_TPR];
  const int lid = get_local_id(0), r = lid / SEL_TPR, lt = lid % SEL_TPR;
  const int row = get_group_id(0) * SEL_ROWS + r;
  const int live = row < rows; /* spare rows of the last group still join every barrier */
  __global const float *a = logits + (size_t)(live ? row : 0) * Nb;

  float p[SEL_PT];
  float mx = -INFINITY, bad = 0.0f;
  for (int c = 0; c < SEL_PT; c++) {
    int j = lt + c * SEL_TPR;
    float v = (live && j < Nb) ? a[j] : -INFINITY;
    bad += (live && j < Nb && !isfinite(v)) ? 1.0f : 0.0f;
    p[c] = v;
    mx = fmax(mx, v);
  }
  mx = row_max(red1, r, lt, mx);
  float z = 0.0f;
  for (int c = 0; c < SEL_PT; c++) {
    p[c] = (lt + c * SEL_TPR < Nb) ? exp(p[c] - mx) : 0.0f;
    z += p[c];
  }
  float8 zb = row_sum8(red8, r, lt, (float8)(z, bad, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f));
  const int keep_all = zb.s1 > 0.0f || thr >= 1.0f;
  const float inv = 1.0f / zb.s0;
  for (int c = 0; c < SEL_PT; c++) p[c] *= inv;

  /* Invariant: f(hi) <= thr (hi starts at the bits of the largest p, whose f is 0) and
   * f(lo - 1) > thr. Pivot k (1..7) sits at lo + span*k/8; the first pivot with f <= thr
   * becomes hi, the one before it + 1 becomes lo. Values above hi add the known mass s_hi to
   * every pivot and values below lo add nothing, so only values inside [lo, hi] are looked
   * at: after the first steps that is a handful per row. */
  uint lo = 0u, hi = as_uint(inv);
  float s_hi = 0.0f; /* f(hi): mass of the values above hi */
  for (int step = 0; step < 12; step++) {
    ulong span = hi - lo;
    uint piv[8];
    for (int k = 0; k < 7; k++) piv[k] = lo + (uint)((span * (ulong)(k + 1)) >> 3);
    piv[7] = hi;
    float8 t = (float8)(as_float(piv[0]), as_float(piv[1]), as_float(piv[2]), as_float(piv[3]),
                        as_float(piv[4]), as_float(piv[5]), as_float(piv[6]), as_float(piv[7]));
    float8 above = (float8)(0.0f);
    for (int c = 0; c < SEL_PT; c++) {
      uint bits = as_uint(p[c]);
      if (bits >= lo && bits <= hi) {
        float8 pj = (float8)(p[c]);
        above += select((float8)(0.0f), pj, isgreater(pj, t));
      }
    }
    above = row_sum8(red8, r, lt, above) + (float8)(s_hi);
    float f[8];
    vstore8(above, 0, f);
    f[7] = s_hi; /* <= thr by the invariant */
    int k = 0;
    while (f[k] > thr) k++;
    uint new_lo = k ? piv[k - 1] + 1u : lo;
    s_hi = f[k];
    hi = piv[k];
    lo = min(new_lo, hi);
  }
  const float cut = as_float(lo);
  if (!live) return; /* no barrier follows */
  __global uchar *m = bitmap + (size_t)row * Nb;
  for (int c = 0; c < SEL_PT; c++) {
    int j = lt + c * SEL_TPR;
    if (j < Nb) m[j] = (keep_all || p[c] >= cut) ? 1 : 0;
  }
}
