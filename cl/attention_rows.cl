/*
 * Block-sparse flash attention for CPU devices ("cpu-rows" variant of "attention").
 *
 * Same arguments and results as cl/attention.cl, shaped for a CPU: one work-item per query row
 * (a work-group of 64 is one query block of one (b, h)), no local memory and no barriers, so
 * the runtime can run a work-group as a plain loop, and the work-item's own loops over the head
 * dimension vectorise (float8: D is a multiple of 8). The GPU-shaped kernel spends its time in
 * barriers and local-memory staging there.
 *
 * Per kept key block (its CSR row; every block when NABLA_DENSE) the work-item computes the
 * block's scores s_t = q · k_t (log2 domain: scale_log2 folds 1/sqrt(D) and log2 e), takes the
 * block maximum, rescales its running sum and accumulator once, then adds exp2(s_t - m) v_t.
 * fp32 throughout; keys beyond a ragged block's token count are skipped; a row with no kept
 * block writes zeros; NaN propagates.
 */
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef NABLA_DENSE
#define NABLA_DENSE 0
#endif
#if HEAD_DIM % 8 != 0
#error "attention_rows needs HEAD_DIM a multiple of 8"
#endif
#define BQ 64
#define BK 64
#define NV (HEAD_DIM / 8) /* float8 vectors per row */

/* LOAD8 is in common.cl; the store is this kernel's only. */
#if NABLA_DTYPE == 0
#define STORE8(v, p, i) vstore8((v), (i) / 8, (p))
#elif NABLA_DTYPE == 1
#define STORE8(v, p, i) vstore_half8_rte((v), (i) / 8, (p))
#else
NABLA_INLINE void store8_bf16(float8 v, __global ushort *p, size_t i) {
  float f[8];
  vstore8(v, 0, f);
  for (int e = 0; e < 8; e++) p[i + e] = nabla_to_bf16(f[e]);
}
#define STORE8(v, p, i) store8_bf16((v), (p), (i))
#endif

NABLA_INLINE float hsum8(float8 v) {
  float4 a = v.lo + v.hi;
  float2 b = a.lo + a.hi;
  return b.x + b.y;
}

__kernel __attribute__((reqd_work_group_size(BQ, 1, 1)))
void attention(__global const STORE_T *q, __global const STORE_T *k, __global const STORE_T *v,
               __global STORE_T *o, __global const int *block_start,
               __global const int *row_ptr, __global const int *col_idx, int S, int Nb,
               float scale_log2) {
  const int r = get_local_id(0), qb = get_group_id(1);
  const size_t bh = get_group_id(2);
  const size_t base = bh * (size_t)S * HEAD_DIM;
  const int q0 = block_start[qb], qn = block_start[qb + 1] - q0;
  if (r >= qn) return; /* no barriers: a missing row of a ragged block just stops */

  float8 qv[NV], acc[NV];
  const size_t qrow = base + (size_t)(q0 + r) * HEAD_DIM;
  for (int e = 0; e < NV; e++) {
    qv[e] = LOAD8(q, qrow + 8 * e) * scale_log2;
    acc[e] = (float8)(0.0f);
  }
  float m = -INFINITY, l = 0.0f;

#if NABLA_DENSE
  const int p0 = 0, p1 = Nb;
#else
  const size_t row = bh * Nb + qb;
  const int p0 = row_ptr[row], p1 = row_ptr[row + 1];
#endif
  for (int p = p0; p < p1; p++) {
#if NABLA_DENSE
    const int kb = p;
#else
    const int kb = col_idx[p];
#endif
    const int k0 = block_start[kb], kn = block_start[kb + 1] - k0;
    float s[BK];
    float mx = m;
    for (int t = 0; t < kn; t++) {
      const size_t krow = base + (size_t)(k0 + t) * HEAD_DIM;
      float8 d = (float8)(0.0f);
      for (int e = 0; e < NV; e++) d = fma(qv[e], LOAD8(k, krow + 8 * e), d);
      s[t] = hsum8(d);
      mx = fmax(mx, s[t]);
    }
    /* mx is -INFINITY only when every score so far is; NaN makes it NaN and spreads. */
    const float alpha = (m == -INFINITY) ? 0.0f : exp2(m - mx);
    l *= alpha;
    for (int e = 0; e < NV; e++) acc[e] *= alpha;
    for (int t = 0; t < kn; t++) {
      const float w = (s[t] == -INFINITY) ? 0.0f : exp2(s[t] - mx);
      const size_t vrow = base + (size_t)(k0 + t) * HEAD_DIM;
      l += w;
      for (int e = 0; e < NV; e++) acc[e] = fma((float8)(w), LOAD8(v, vrow + 8 * e), acc[e]);
    }
    m = mx;
  }

  const float inv = l == 0.0f ? 0.0f : 1.0f / l; /* no kept block: zeros; NaN stays NaN */
  for (int e = 0; e < NV; e++) STORE8(acc[e] * inv, o, qrow + 8 * e);
}
