/*
 * Row softmax + CDF selection of the reduced map, one work-group per row (bh, i).
 *
 * p_j = softmax_j(logit_j) in fp32. Keep block j iff the mass of blocks with larger probability
 * is <= thr: with f(t) = sum of p_k > t, which falls as t grows, the kept set is {j : p_j >= t*}
 * where t* is the smallest float with f(t*) <= thr. Positive floats order like their bit
 * patterns, so t* is found by an 8-way search on the bits: each step evaluates f at 7 points
 * of the interval in one vector reduction, 12 steps cover 2^31 bit patterns. No sort. thr >= 1 keeps every block; a row with a non-finite logit keeps every block too
 * (the non-finite value then reaches the attention output instead of silently vanishing).
 */
#ifndef SEL_WG
#define SEL_WG 256 /* work-group size: a power of two */
#endif

inline float wg_sum(__local float *red, float v) {
  int lid = get_local_id(0);
  red[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = SEL_WG / 2; s > 0; s >>= 1) {
    if (lid < s) red[lid] += red[lid + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  float r = red[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}

inline float wg_max(__local float *red, float v) {
  int lid = get_local_id(0);
  red[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = SEL_WG / 2; s > 0; s >>= 1) {
    if (lid < s) red[lid] = fmax(red[lid], red[lid + s]);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  float r = red[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}

inline float8 wg_sum8(__local float8 *red, float8 v) {
  int lid = get_local_id(0);
  red[lid] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = SEL_WG / 2; s > 0; s >>= 1) {
    if (lid < s) red[lid] += red[lid + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  float8 r = red[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}

__kernel __attribute__((reqd_work_group_size(SEL_WG, 1, 1)))
void select_cdf(__global const float *logits, __global uchar *bitmap, int Nb, float thr,
                __local float *p) {
  __local float red[SEL_WG];
  __local float8 red8[SEL_WG];
  int lid = get_local_id(0);
  size_t row = get_group_id(0);
  __global const float *a = logits + row * Nb;
  __global uchar *m = bitmap + row * Nb;

  float mx = -INFINITY, bad = 0.0f;
  for (int j = lid; j < Nb; j += SEL_WG) {
    float v = a[j];
    p[j] = v;
    mx = fmax(mx, v);
    bad += isfinite(v) ? 0.0f : 1.0f;
  }
  mx = wg_max(red, mx);
  bad = wg_sum(red, bad);
  /* Every work-item runs the same barriers in the same order: no early exit, fixed trip count. */
  const int keep_all = bad > 0.0f || thr >= 1.0f;
  float z = 0.0f;
  for (int j = lid; j < Nb; j += SEL_WG) {
    float e = exp(p[j] - mx);
    p[j] = e;
    z += e;
  }
  z = wg_sum(red, z);
  float inv = 1.0f / z, pmax = 0.0f;
  for (int j = lid; j < Nb; j += SEL_WG) {
    p[j] *= inv;
    pmax = fmax(pmax, p[j]);
  }
  pmax = wg_max(red, pmax);

  /* Invariant: f(hi) <= thr (f(pmax) = 0) and f(lo - 1) > thr. Pivot k (1..7) sits at
   * lo + span*k/8; the first pivot with f <= thr becomes hi, the one before it + 1 becomes lo. */
  uint lo = 0u, hi = as_uint(pmax);
  for (int step = 0; step < 12; step++) {
    ulong span = hi - lo;
    uint piv[8];
    for (int c = 0; c < 7; c++) piv[c] = lo + (uint)((span * (ulong)(c + 1)) >> 3);
    piv[7] = hi;
    float8 t = (float8)(as_float(piv[0]), as_float(piv[1]), as_float(piv[2]), as_float(piv[3]),
                        as_float(piv[4]), as_float(piv[5]), as_float(piv[6]), as_float(piv[7]));
    float8 above = (float8)(0.0f);
    for (int j = lid; j < Nb; j += SEL_WG) {
      float8 pj = (float8)(p[j]);
      above += select((float8)(0.0f), pj, isgreater(pj, t));
    }
    above = wg_sum8(red8, above);
    float f[8];
    vstore8(above, 0, f);
    f[7] = 0.0f; /* f(hi) <= thr by the invariant, whatever rounding says */
    int c = 0;
    while (f[c] > thr) c++;
    uint new_lo = c ? piv[c - 1] + 1u : lo;
    hi = piv[c];
    lo = min(new_lo, hi);
  }
  float cut = as_float(lo);
  for (int j = lid; j < Nb; j += SEL_WG) m[j] = (keep_all || p[j] >= cut) ? 1 : 0;
}
