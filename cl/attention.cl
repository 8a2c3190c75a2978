/*
 * Block-sparse flash attention, portable OpenCL C 1.2.
 *
 * One work-group of 16 x 8 work-items computes one query block (<= 64 rows) of one (b, h):
 * for every kept key block (CSR row of the mask; every block when NABLA_DENSE) it forms the
 * 64x64 score tile S = Q Kᵀ in registers (8 rows x 4 columns per work-item, D consumed in
 * chunks of TILE_D staged through local memory and read as float4), updates the running row
 * max and sum (online softmax; exp2 with log2(e) folded into the scale), stages P in local
 * memory and accumulates O += P V (V staged TILE_V keys at a time, P read as float4).
 * Work-item (tx, ty) owns rows ty + 8a (a < 8), score columns tx + 16b (b < 4) and output
 * columns tx + 16e (e < ceil(D/16)); the strides keep local-memory reads conflict-free.
 * Storage may be fp32/fp16/bf16; all math is fp32. Ragged blocks: rows/keys beyond the
 * block's token count are zero-filled, and their scores masked.
 */
#ifndef TILE_D
#define TILE_D 16 /* head-dim chunk of Q·Kᵀ staged in local memory; multiple of 4 */
#endif
#ifndef TILE_V
#define TILE_V 16 /* keys of V staged per step of P·V; multiple of 4 */
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef NABLA_DENSE
#define NABLA_DENSE 0
#endif

#define BQ 64
#define BK 64
#define WX 16                         /* work-items along score / output columns */
#define WY 8                          /* work-items along rows */
#define RA (BQ / WY)                  /* rows per work-item */
#define CB (BK / WX)                  /* score columns per work-item */
#define DPT ((HEAD_DIM + WX - 1) / WX) /* output columns per work-item */
#define QK_STRIDE (TILE_D + 4)        /* keeps float4 rows aligned and banks apart */
#define P_STRIDE (BK + 4)

#define QK_FLOATS (2 * BQ * QK_STRIDE)
#define V_FLOATS (TILE_V * HEAD_DIM)
#define STAGE_FLOATS (QK_FLOATS > V_FLOATS ? QK_FLOATS : V_FLOATS)

__kernel __attribute__((reqd_work_group_size(WX, WY, 1)))
void attention(__global const STORE_T *q, __global const STORE_T *k, __global const STORE_T *v,
               __global STORE_T *o, __global const int *block_start,
               __global const int *row_ptr, __global const int *col_idx, int S, int Nb,
               float scale_log2) {
  __local float4 stage4[STAGE_FLOATS / 4]; /* Q and K chunks, later V rows */
  __local float4 ps4[BQ * P_STRIDE / 4];
  __local float red[BQ][WX + 1];
  __local float *stage = (__local float *)stage4;
  __local float *qs = stage, *ks = stage + BQ * QK_STRIDE, *vs = stage;
  __local float *ps = (__local float *)ps4;

  const int tx = get_local_id(0), ty = get_local_id(1);
  const int lid = ty * WX + tx;
  const int qb = get_group_id(1);
  const size_t bh = get_group_id(2);
  const size_t base = bh * (size_t)S * HEAD_DIM;
  const int q0 = block_start[qb], qn = block_start[qb + 1] - q0;

  float m[RA], l[RA], acc[RA][DPT];
  for (int a = 0; a < RA; a++) {
    m[a] = -INFINITY;
    l[a] = 0.0f;
    for (int e = 0; e < DPT; e++) acc[a][e] = 0.0f;
  }

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

    float s[RA][CB];
    for (int a = 0; a < RA; a++)
      for (int b = 0; b < CB; b++) s[a][b] = 0.0f;
    for (int d0 = 0; d0 < HEAD_DIM; d0 += TILE_D) {
      for (int idx = lid; idx < BQ * TILE_D; idx += WX * WY) {
        int r = idx / TILE_D, dd = idx - r * TILE_D, d = d0 + dd;
        qs[r * QK_STRIDE + dd] = (r < qn && d < HEAD_DIM) ? LOAD(q, base + (size_t)(q0 + r) * HEAD_DIM + d) : 0.0f;
        ks[r * QK_STRIDE + dd] = (r < kn && d < HEAD_DIM) ? LOAD(k, base + (size_t)(k0 + r) * HEAD_DIM + d) : 0.0f;
      }
      barrier(CLK_LOCAL_MEM_FENCE);
      for (int dd = 0; dd < TILE_D; dd += 4) {
        float4 kv[CB];
        for (int b = 0; b < CB; b++) kv[b] = vload4(0, ks + (tx + WX * b) * QK_STRIDE + dd);
        for (int a = 0; a < RA; a++) {
          float4 qv = vload4(0, qs + (ty + WY * a) * QK_STRIDE + dd);
          for (int b = 0; b < CB; b++) {
            s[a][b] = fma(qv.x, kv[b].x, s[a][b]);
            s[a][b] = fma(qv.y, kv[b].y, s[a][b]);
            s[a][b] = fma(qv.z, kv[b].z, s[a][b]);
            s[a][b] = fma(qv.w, kv[b].w, s[a][b]);
          }
        }
      }
      barrier(CLK_LOCAL_MEM_FENCE);
    }

    /* Online softmax: new row max, rescale, probabilities into ps. */
    for (int a = 0; a < RA; a++) {
      float mx = -INFINITY;
      for (int b = 0; b < CB; b++) {
        s[a][b] = (tx + WX * b < kn) ? s[a][b] * scale_log2 : -INFINITY;
        mx = fmax(mx, s[a][b]);
      }
      red[ty + WY * a][tx] = mx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float alpha[RA];
    for (int a = 0; a < RA; a++) {
      float mx = m[a];
      for (int t = 0; t < WX; t++) mx = fmax(mx, red[ty + WY * a][t]);
      alpha[a] = (m[a] == -INFINITY) ? 0.0f : exp2(m[a] - mx);
      m[a] = mx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int a = 0; a < RA; a++) {
      float sum = 0.0f;
      for (int b = 0; b < CB; b++) {
        float pv = (s[a][b] == -INFINITY) ? 0.0f : exp2(s[a][b] - m[a]);
        ps[(ty + WY * a) * P_STRIDE + tx + WX * b] = pv;
        sum += pv;
      }
      red[ty + WY * a][tx] = sum;
      for (int e = 0; e < DPT; e++) acc[a][e] *= alpha[a];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int a = 0; a < RA; a++) {
      float sum = 0.0f;
      for (int t = 0; t < WX; t++) sum += red[ty + WY * a][t];
      l[a] = l[a] * alpha[a] + sum;
    }

    /* O += P V, TILE_V keys at a time. */
    for (int c0 = 0; c0 < BK; c0 += TILE_V) {
      for (int idx = lid; idx < TILE_V * HEAD_DIM; idx += WX * WY) {
        int r = idx / HEAD_DIM, d = idx - r * HEAD_DIM, key = c0 + r;
        vs[r * HEAD_DIM + d] = key < kn ? LOAD(v, base + (size_t)(k0 + key) * HEAD_DIM + d) : 0.0f;
      }
      barrier(CLK_LOCAL_MEM_FENCE);
      for (int kk = 0; kk < TILE_V; kk += 4) {
        for (int a = 0; a < RA; a++) {
          float4 pv = vload4(0, ps + (ty + WY * a) * P_STRIDE + c0 + kk);
          for (int e = 0; e < DPT; e++) {
            int d = tx + WX * e;
            if (d < HEAD_DIM) {
              float r = acc[a][e];
              r = fma(pv.x, vs[(kk + 0) * HEAD_DIM + d], r);
              r = fma(pv.y, vs[(kk + 1) * HEAD_DIM + d], r);
              r = fma(pv.z, vs[(kk + 2) * HEAD_DIM + d], r);
              r = fma(pv.w, vs[(kk + 3) * HEAD_DIM + d], r);
              acc[a][e] = r;
            }
          }
        }
      }
      barrier(CLK_LOCAL_MEM_FENCE);
    }
  }

  for (int a = 0; a < RA; a++) {
    int r = ty + WY * a;
    if (r >= qn) continue;
    float inv = l[a] == 0.0f ? 0.0f : 1.0f / l[a]; /* no kept block: zeros; NaN stays NaN */
    for (int e = 0; e < DPT; e++) {
      int d = tx + WX * e;
      if (d < HEAD_DIM) STORE(o, base + (size_t)(q0 + r) * HEAD_DIM + d, acc[a][e] * inv);
    }
  }
}
