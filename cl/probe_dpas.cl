/*
 * Probe of the intel-dpas variant: one sub-group runs the two matrix products of the attention
 * kernel through the same loaders (cl/dpas.cl) on small integers, so the host can check every
 * element against the layouts the kernel assumes:
 *   d1 = A Bᵀ   A: 8 x 16 row-major (as Q), bt: DPAS_SG x 16 row-major (as K rows)
 *   d2 = P V    P: 8 x 16 fp32 (as the probabilities), v: 16 x DPAS_SG row-major (as V rows)
 * d1, d2: 8 x DPAS_SG row-major fp32, of which the first DPAS_M rows are written. One
 * work-group of DPAS_SG work-items.
 */
__kernel SG_ATTR __attribute__((reqd_work_group_size(DPAS_SG, 1, 1)))
void probe_dpas(__global const ushort *a, __global const ushort *bt, __global const float *p,
                __global const ushort *v, __global float *d1, __global float *d2) {
#if DPAS_MODE == 2
  __local uint pub[DPAS_SG * DPAS_M];
#else
  __local uint *pub = 0;
#endif
  const int lane = SG_LANE;
  uint ra[DPAS_M], rb[8];
  float acc[DPAS_M];
  for (int i = 0; i < DPAS_M; i++) acc[i] = 0.0f;
  dpas_a_rows(a, 16, DPAS_M, ra);
  dpas_publish(pub, ra);
  dpas_b_col(bt + 16 * lane, 1, rb);
  dpas_mad(ra, pub, rb, acc);
  for (int i = 0; i < DPAS_M; i++) d1[i * DPAS_SG + lane] = acc[i];

  /* P in the S tile layout: lane n holds key n of a tile of DPAS_SG keys. */
  float p0[DPAS_M], p1[DPAS_M];
  for (int i = 0; i < DPAS_M; i++) {
    p0[i] = p[i * 16 + lane];
    p1[i] = DPAS_SG == 8 ? p[i * 16 + 8 + lane] : 0.0f;
    acc[i] = 0.5f; /* a non-zero accumulator is added */
  }
  dpas_a_probs(p0, p1, ra);
  dpas_publish(pub, ra);
  dpas_b_rows(v, DPAS_SG, 16, rb);
  dpas_mad(ra, pub, rb, acc);
  for (int i = 0; i < DPAS_M; i++) d2[i * DPAS_SG + lane] = acc[i];
}
