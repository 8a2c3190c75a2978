/*
 * Block-sparse flash attention on Intel's matrix engines (XMX) through
 * cl_intel_subgroup_matrix_multiply_accumulate (cl/dpas.cl: the instruction, real or emulated,
 * and the operand loaders), fp16 or bf16 storage, fp32 softmax and sums.
 *
 * One work-group of 64 / DPAS_M sub-groups of DPAS_SG work-items computes one query block
 * (<= 64 rows) of one (b, h); sub-group g owns the query rows DPAS_M g .., one matrix tile.
 * For every kept key block (CSR row of the mask; all blocks when NABLA_DENSE) it walks the keys
 * in chunks of KCH: S = Q Kᵀ on the matrix engine (tiles of DPAS_SG keys, 16 head-dim columns
 * per instruction; a K row is a lane's B operand as it lies in memory), online softmax in fp32
 * (exp2, log2(e) folded into the scale), P rounded to the storage type, O += P V on the matrix
 * engine (tiles of DPAS_SG output columns; V gathered by sub-group block reads of rows, two rows
 * per register). Per 64 x 64 block pair a sub-group issues 64/DPAS_SG x HEAD_DIM/16 Q·Kᵀ and
 * 4 x HEAD_DIM/DPAS_SG P·V instructions. No local memory and no barriers (but in the emulation
 * of DPAS_MODE 2): the sub-groups share K and V through the caches. Ragged blocks: rows and keys
 * beyond the block's tokens are zero and masked; rows with no kept block give zeros.
 */
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef NABLA_DENSE
#define NABLA_DENSE 0
#endif
#ifndef DPAS_Q_REGS
#define DPAS_Q_REGS (DPAS_SG == 16) /* Q's A registers kept for the whole kernel (SIMD8 has no room) */
#endif
#ifndef KCH
/* Keys per softmax step: a multiple of 16 and of DPAS_SG dividing 64. SIMD8 (dg2) takes 16:
 * its S tiles compete with O for the 128 registers (ocloc: 32 spilled more). */
#define KCH (DPAS_SG == 8 ? 16 : 32)
#endif
#if HEAD_DIM % 16 != 0 || HEAD_DIM > 128 || KCH % 16 != 0 || KCH % DPAS_SG != 0 || 64 % KCH != 0
#error "HEAD_DIM must be a multiple of 16 up to 128, KCH a multiple of 16 and of DPAS_SG dividing 64"
#endif

#define NSG (64 / DPAS_M)        /* sub-groups per work-group, DPAS_M query rows each */
#define WG (NSG * DPAS_SG)       /* work-items; the host launches this size */
#define DS (HEAD_DIM / 16)       /* K steps of Q·Kᵀ */
#define NT (KCH / DPAS_SG)       /* S tiles per chunk */
#define NG (KCH / 16)            /* P·V steps per chunk */
#define NO (HEAD_DIM / DPAS_SG)  /* output tiles */
#define SG_ID ((int)get_local_id(0) / DPAS_SG) /* 1-D work-groups: sub-groups are consecutive */

/* Sub-group max (op 0) or sum (op 1) of x[i] for each of DPAS_M rows; xch: DPAS_M floats per
 * work-item (DPAS_MODE 2 only). */
NABLA_INLINE void sg_reduce(float x[DPAS_M], int op, __local float *xch) {
#if DPAS_MODE == 2
  const int lid = get_local_id(0), first = lid - SG_LANE;
  barrier(CLK_LOCAL_MEM_FENCE);
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) xch[lid * DPAS_M + i] = x[i];
  barrier(CLK_LOCAL_MEM_FENCE);
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) {
    float r = xch[first * DPAS_M + i];
    for (int l = 1; l < DPAS_SG; l++) r = op ? r + xch[(first + l) * DPAS_M + i] : fmax(r, xch[(first + l) * DPAS_M + i]);
    x[i] = r;
  }
#else
  (void)xch;
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) x[i] = op ? sub_group_reduce_add(x[i]) : sub_group_reduce_max(x[i]);
#endif
}

__kernel SG_ATTR __attribute__((reqd_work_group_size(WG, 1, 1)))
void attention(__global const STORE_T *q, __global const STORE_T *k, __global const STORE_T *v,
               __global STORE_T *o, __global const int *block_start,
               __global const int *row_ptr, __global const int *col_idx, int S, int Nb,
               float scale_log2) {
#if DPAS_MODE == 2
  __local uint qpub[DS * WG * DPAS_M];  /* Q's A registers, published once */
  __local uint ppub[WG * DPAS_M];       /* a P·V step's A registers */
  __local float xch[WG * DPAS_M];       /* reductions */
  __local uint *qmine = qpub + (get_local_id(0) - SG_LANE) * DPAS_M, *pmine = ppub + (get_local_id(0) - SG_LANE) * DPAS_M;
#else
  __local uint *qmine = 0, *pmine = 0;
  __local float *xch = 0;
#endif
  const int lane = SG_LANE, r0 = DPAS_M * SG_ID;
  const int qb = get_group_id(1);
  const size_t bh = get_group_id(2);
  const size_t base = bh * (size_t)S * HEAD_DIM;
  const int q0 = block_start[qb], qn = block_start[qb + 1] - q0;
  __global const ushort *qs = (__global const ushort *)q + base + (size_t)(q0 + r0) * HEAD_DIM;
  __global const ushort *ks = (__global const ushort *)k + base, *vs = (__global const ushort *)v + base;

  /* Q's A registers of K step s (this sub-group's rows, head-dim columns 16s ..): kept for the
   * whole kernel where DPAS_Q_REGS (always in the emulation, which publishes them once), else
   * loaded again at every use (the caches serve them), leaving the registers to O. */
#if DPAS_Q_REGS || DPAS_MODE != 0
  uint qa[DS][DPAS_M];
DPAS_UNROLL
  for (int s = 0; s < DS; s++) {
    dpas_a_rows(qs + 16 * s, HEAD_DIM, qn - r0, qa[s]);
#if DPAS_MODE == 2
DPAS_UNROLL
    for (int i = 0; i < DPAS_M; i++) qpub[s * WG * DPAS_M + get_local_id(0) * DPAS_M + i] = qa[s][i];
#endif
  }
#if DPAS_MODE == 2
  barrier(CLK_LOCAL_MEM_FENCE);
#endif
#define Q_OPERAND(s) qa[s]
#else
#define Q_OPERAND(s) qa_s
#endif

  float m[DPAS_M], l[DPAS_M], acc[NO][DPAS_M];
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
DPAS_UNROLL
    for (int t = 0; t < NO; t++) acc[t][i] = 0.0f;
  }

#if NABLA_DENSE
  const int p0 = 0, p1 = Nb;
#define KEY_BLOCK(p) (p)
#else
  const size_t row = bh * Nb + qb;
  const int p0 = row_ptr[row], p1 = row_ptr[row + 1];
#define KEY_BLOCK(p) col_idx[p]
#endif

  for (int p = p0; p < p1; p++) {
    const int kb = KEY_BLOCK(p);
    const int k0 = block_start[kb], kn = block_start[kb + 1] - k0;
    for (int c0 = 0; c0 < kn; c0 += KCH) { /* a ragged block skips its empty chunks */
      /* S = Q Kᵀ: tile t holds keys c0 + DPAS_SG t + lane. */
      float sc[NT][DPAS_M];
DPAS_UNROLL
      for (int t = 0; t < NT; t++) {
        const int key = c0 + DPAS_SG * t + lane;
DPAS_UNROLL
        for (int i = 0; i < DPAS_M; i++) sc[t][i] = 0.0f;
DPAS_UNROLL
        for (int s = 0; s < DS; s++) {
#if !(DPAS_Q_REGS || DPAS_MODE != 0)
          uint qa_s[DPAS_M];
          dpas_a_rows(qs + 16 * s, HEAD_DIM, qn - r0, qa_s);
#endif
          uint b[8];
          dpas_b_col(ks + (size_t)(k0 + key) * HEAD_DIM + 16 * s, key < kn, b);
          dpas_mad(Q_OPERAND(s), qmine + s * WG * DPAS_M, b, sc[t]);
        }
      }

      /* Online softmax over the chunk: rows per component, keys per lane and tile. */
      float mx[DPAS_M];
DPAS_UNROLL
      for (int i = 0; i < DPAS_M; i++) {
        mx[i] = -INFINITY;
DPAS_UNROLL
        for (int t = 0; t < NT; t++) {
          const float x = c0 + DPAS_SG * t + lane < kn ? sc[t][i] * scale_log2 : -INFINITY;
          sc[t][i] = x;
          mx[i] = fmax(mx[i], x);
        }
      }
      sg_reduce(mx, 0, xch);
DPAS_UNROLL
      for (int i = 0; i < DPAS_M; i++) {
        const float mnew = fmax(m[i], mx[i]);
        const float alpha = m[i] == -INFINITY ? 0.0f : exp2(m[i] - mnew);
        m[i] = mnew;
        float sum = 0.0f;
DPAS_UNROLL
        for (int t = 0; t < NT; t++) {
          const float pv = sc[t][i] == -INFINITY ? 0.0f : exp2(sc[t][i] - mnew);
          sc[t][i] = pv;
          sum += pv;
        }
        l[i] = l[i] * alpha + sum; /* this lane's keys only */
DPAS_UNROLL
        for (int t = 0; t < NO; t++) acc[t][i] *= alpha;
      }

      /* O += P V, 16 keys per step (S tiles 2g, 2g + 1 on DPAS_SG 8, tile g on 16). */
DPAS_UNROLL
      for (int g = 0; g < NG; g++) {
        uint pa[DPAS_M];
        dpas_a_probs(sc[(16 / DPAS_SG) * g], sc[(16 / DPAS_SG) * g + (DPAS_SG == 8)], pa);
        dpas_publish(pmine, pa);
        __global const ushort *vrows = vs + (size_t)(k0 + c0 + 16 * g) * HEAD_DIM;
DPAS_UNROLL
        for (int t = 0; t < NO; t++) {
          uint b[8];
          dpas_b_rows(vrows + DPAS_SG * t, HEAD_DIM, kn - c0 - 16 * g, b);
          dpas_mad(pa, pmine, b, acc[t]);
        }
      }
    }
  }

  /* Row sums over the lanes; no kept block (sum 0) gives zeros, NaN stays NaN. */
  sg_reduce(l, 1, xch);
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) {
    const int r = r0 + i;
    if (r >= qn) continue;
    const float inv = l[i] == 0.0f ? 0.0f : 1.0f / l[i];
DPAS_UNROLL
    for (int t = 0; t < NO; t++) STORE(o, base + (size_t)(q0 + r) * HEAD_DIM + DPAS_SG * t + lane, acc[t][i] * inv);
  }
}
