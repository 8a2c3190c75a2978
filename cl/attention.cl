/*
 * Block-sparse flash attention, portable OpenCL C 1.2.
 *
 * One work-group of ATT_WG (128 or 256) work-items computes one query block (<= 64 rows) of one
 * (b, h). For
 * every kept key block (CSR row of the mask; every block when NABLA_DENSE) it forms the 64x64
 * score tile S = Q Kᵀ in registers, updates the running row max (online softmax; exp2 with
 * log2(e) folded into the scale) and accumulates O += P V in registers.
 *
 * Work-item lid is the logical (tx, ty) of a 16 x TYN grid (TYN = ATT_WG / 16) in which each
 * run of 32 work-items is an 8 x 4 patch: tx = lid % 8 + 8 (lid / 32 % 2), ty = lid / 8 % 4 +
 * 4 (lid / 64). It owns the rows ty + TYN a (a < RA = 64 / TYN: 8, or 4 with 256 work-items),
 * the score columns (keys) tx + 16b (b < 4) and the output columns 4(tx + 16e) .. 4(tx + 16e) +
 * 3 (e < ceil(HEAD_DIM / 64)). The register tiles (8 x 4 scores, 8 x 8 outputs at HEAD_DIM =
 * 128 with 128 work-items) keep local-memory reads per FMA low, which is what bounds this kernel
 * on GPUs: per head-dim column 12 floats for 32 FMAs in Q·Kᵀ, per key 16 floats for 64 FMAs in
 * P·V; all reads are float4, a 32-wide warp reading 8 distinct K rows, 4 distinct Q/P rows and
 * 128 contiguous bytes of a V row. Halving the tile (256 work-items) halves the registers, which
 * is what lets AMD's 64-wide waves keep several waves per SIMD (docs/variants.md).
 *
 * With 256 work-items (chosen on AMD GPUs only) the kernel has a shape of its own, for at most
 * 128 VGPRs (4 waves per SIMD on CDNA) under LLVM 15 and 19: K is staged transposed (TD rows of
 * the 64 keys) and a work-item's keys are 4 tx + b, so a head-dim step reads one float4 of 4
 * adjacent keys and its FMAs pair naturally into CDNA's packed v_pk_fma_f32 (LLVM 19's SLP
 * vectorizer paired keys of 4 different rows otherwise, with about 40 register moves an item);
 * P·V goes key by key; each item is stored before it is computed (STAGE); and on AMD's
 * compiler scheduling barriers (SCHED_FENCE) bound the local reads in flight. The arithmetic is
 * the same FMA chains in the same order; only the row sums' partials group other keys.
 *
 * The work of a key block is a sequence of staged items, each one buffer of local memory:
 *   ceil(HEAD_DIM / TD) Q·Kᵀ items, TD = min(TILE_D, HEAD_DIM): the Q and K columns
 *        [c·TD, (c+1)·TD) of the 64 query and 64 key rows (fp32, rows padded to TD + 4 floats),
 *   64 / TILE_V P·V items: TILE_V rows of V (fp32) and the matching TILE_V columns of P (the
 *        probabilities, written from their owners' registers; rows padded to TILE_V + 4).
 * Two such buffers alternate: while item i is computed from one, the global loads of item
 * i + 1 (after the last P·V item: the next key block's first Q·Kᵀ item; for the row's last
 * key block its own again, never read) are in flight into registers, which go into the other
 * buffer after the computation (with 256 work-items before it, see STAGE), then one barrier.
 * The last item of each phase is written out after its loop rather than by a branch inside
 * it: with the fetch and the store of the next item in if/else branches around the
 * computation, PoCL 3.1 computed wrong results. Global loads are 16 bytes (8 elements) per
 * work-item: whole uint4 / float4 words when q, k and v are 16-byte aligned, vload8
 * otherwise; bf16 and fp16 convert to fp32 when stored into local memory, so all arithmetic
 * is fp32. The row max is reduced through a small local buffer after
 * the last Q·Kᵀ item (one extra barrier per key block, before the first P·V item); row sums
 * stay per work-item partials (rescaled with their row) and are reduced once at the end.
 * Local memory: 4 (2 max(QK, TILE_V·HEAD_DIM + 64·(TILE_V + 4)) + 64·4·RED_S4) bytes, QK =
 * 2·64·(TD + 4) (64·(TD + 4) + 64·TD with 256 work-items; src/tune.c checks it). Ragged blocks: rows/keys beyond the block's token count are
 * zero-filled and their scores masked; rows with no kept block (sum 0) give zeros; NaN
 * propagates.
 */
#ifndef TILE_D
#define TILE_D 16 /* head-dim columns of Q and K per Q·Kᵀ item; multiple of 8 */
#endif
#ifndef TILE_V
#define TILE_V 16 /* keys of V (and columns of P) per P·V item; multiple of 4 dividing 64 */
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef NABLA_DENSE
#define NABLA_DENSE 0
#endif
#if HEAD_DIM % 8 != 0 || TILE_D % 8 != 0 || TILE_V % 4 != 0 || 64 % TILE_V != 0
#error "HEAD_DIM and TILE_D must be multiples of 8, TILE_V a multiple of 4 dividing 64"
#endif

#define BQ 64
#define BK 64
#ifndef ATT_WG
#define ATT_WG 128 /* work-items per work-group: 128 or 256 (fewer rows, so fewer registers, each) */
#endif
#if ATT_WG != 128 && ATT_WG != 256
#error "ATT_WG must be 128 or 256"
#endif
#define NT ATT_WG                               /* work-items; the host launches this size */
#define TYN (NT / 16)                           /* row groups: ty < TYN */
#define RA (BQ / TYN)                           /* rows per work-item: ty + TYN a */
#define CB 4                                    /* keys per work-item: tx + 16b */
#define TD (TILE_D < HEAD_DIM ? TILE_D : HEAD_DIM) /* head-dim columns per Q·Kᵀ item */
#define NQK ((HEAD_DIM + TD - 1) / TD)          /* Q·Kᵀ items per key block */
#define NPV (BK / TILE_V)                       /* P·V items per key block */
#define D4 (HEAD_DIM / 4)
#define DV4 ((D4 + 15) / 16)                    /* float4 output columns per work-item */
#define QK_S4 ((TD + 4) / 4)                    /* Q/K row stride in float4 */
#define P_S4 ((TILE_V + 4) / 4)                 /* P row stride in float4 */
/* Reduction row stride in float4: 16 + 4 floats, so that a 32-wide warp's writes (8 columns of
 * 4 rows) fall in distinct banks; with 256 work-items unpadded, for local memory's sake (a
 * 64-wide AMD wave writes 64 consecutive words either way). */
#define RED_S4 (NT == 256 ? 4 : 5)
#define QK_VPR (TD / 8)                         /* 8-element vectors per Q/K row of an item */
#define QK_VECS (2 * BQ * QK_VPR)
#define V_VPR (HEAD_DIM / 8)
#define V_VECS (TILE_V * V_VPR)
#define MAX_VECS (QK_VECS > V_VECS ? QK_VECS : V_VECS)
#define NPRE ((MAX_VECS + NT - 1) / NT)         /* vectors in flight per work-item */
#if NT == 256
#define QK_F4 (BQ * QK_S4 + TD * BK / 4) /* Q rows, then K transposed: TD rows of 64 keys */
#else
#define QK_F4 (2 * BQ * QK_S4)
#endif
#define PV_F4 (TILE_V * D4 + BQ * P_S4)
#define SLOT_F4 (QK_F4 > PV_F4 ? QK_F4 : PV_F4) /* one staging buffer */

/* The item loops of a key block, and the head-dim loop of a Q·Kᵀ item, stay loops on AMD's
 * compiler: LLVM 19 unrolled the item loops at HEAD_DIM 64 and spilled 110-130 VGPRs on gfx90a
 * and gfx942 (LLVM 15 did not unroll them), and the unrolled head-dim loop issued all of an
 * item's local reads at once (32 VGPRs more at TILE_D 8). exp2 there is v_exp_f32 with a
 * fix-up for results below 2^-126 that holds three constants in VGPRs; native_exp2 is the bare
 * instruction (1 ulp, as exp2), and a probability below 2^-126 next to its row's maximum (whose
 * own is 1) adds nothing representable to a row sum of at least 1. */
#ifdef __AMDGCN__
#define ITEM_LOOP _Pragma("unroll 1")
#define EXP2 native_exp2
#define SCHED_FENCE() __builtin_amdgcn_sched_barrier(0)
#else
#define ITEM_LOOP
#define EXP2 exp2
#define SCHED_FENCE()
#endif

/* One staged item: compute from the current buffer, store the next item's fetched vectors into
 * the other. With 256 work-items (AMD GPUs) the store comes first: the stores are conditional
 * (not every work-item holds a vector, or P values of the item), and LLVM's AMDGPU pipeline
 * sinks the computation's FMAs below such branches to the loop latch while the local reads
 * that feed them stay above, so an item's 8-12 float4 reads were all live across the stores
 * (146-149 VGPRs at HEAD_DIM 128 where storing first took 127, before K was transposed: one
 * wave per SIMD less; docs/variants.md, "AMD GPUs"). The item's global loads are then waited
 * for before its computation, not behind it: the other work-groups' waves (four per SIMD) are
 * what hide them. */
#if NT == 256
#define STAGE(compute, store) \
  do {                        \
    store;                    \
    compute;                  \
  } while (0)
#else
#define STAGE(compute, store) \
  do {                        \
    compute;                  \
    store;                    \
  } while (0)
#endif

/* Stores the fp32 values of a fetched vector at dst[0], dst[1]. */
NABLA_INLINE void put8(__local float4 *dst, nabla_raw8 r) {
  const float8 f = nabla_unpack8(r);
  dst[0] = f.lo;
  dst[1] = f.hi;
}

/* Global loads of Q·Kᵀ item c (columns c·TD ..) of query rows q0.. and key rows k0... */
NABLA_INLINE void fetch_qk(__private nabla_raw8 *pre, int lid, int c, __global const STORE_T *q,
                     __global const STORE_T *k, size_t base, int q0, int qn, int k0, int kn,
                     int aligned) {
  for (int i = 0; i < NPRE; i++) {
    int idx = lid + NT * i;
    pre[i] = NABLA_RAW_ZERO;
    if (idx < QK_VECS) {
      int isk = idx >= BQ * QK_VPR, j = idx - (isk ? BQ * QK_VPR : 0);
      int r = j / QK_VPR, d = c * TD + 8 * (j - r * QK_VPR);
      if (r < (isk ? kn : qn) && d < HEAD_DIM)
        pre[i] = nabla_fetch8(isk ? k : q, base + (size_t)((isk ? k0 : q0) + r) * HEAD_DIM + d, aligned);
    }
  }
}

NABLA_INLINE void store_qk(__local float4 *slot, __private const nabla_raw8 *pre, int lid) {
  for (int i = 0; i < NPRE; i++) {
    int idx = lid + NT * i;
#if NT == 256
    if (idx >= BQ * QK_VPR && idx < QK_VECS) { /* key r's 8 columns from d: 8 rows of kt */
      int j = idx - BQ * QK_VPR, r = j / QK_VPR, d = 8 * (j - r * QK_VPR);
      __local float *kt = (__local float *)(slot + BQ * QK_S4) + d * BK + r;
      const float8 f = nabla_unpack8(pre[i]);
      kt[0] = f.s0, kt[BK] = f.s1, kt[2 * BK] = f.s2, kt[3 * BK] = f.s3;
      kt[4 * BK] = f.s4, kt[5 * BK] = f.s5, kt[6 * BK] = f.s6, kt[7 * BK] = f.s7;
      continue;
    }
#endif
    if (idx < QK_VECS) {
      int r = idx / QK_VPR; /* K rows follow the 64 Q rows */
      put8(slot + r * QK_S4 + 2 * (idx - r * QK_VPR), pre[i]);
    }
  }
}

/* Global loads of P·V item c: V rows c·TILE_V .. of the key block at k0. */
NABLA_INLINE void fetch_v(__private nabla_raw8 *pre, int lid, int c, __global const STORE_T *v, size_t base,
                    int k0, int kn, int aligned) {
  for (int i = 0; i < NPRE; i++) {
    int idx = lid + NT * i;
    pre[i] = NABLA_RAW_ZERO;
    if (idx < V_VECS) {
      int r = idx / V_VPR, key = c * TILE_V + r;
      size_t at = base + (size_t)(k0 + key) * HEAD_DIM + 8 * (idx - r * V_VPR);
      if (key < kn) pre[i] = nabla_fetch8(v, at, aligned);
    }
  }
}

NABLA_INLINE void store_v(__local float4 *slot, __private const nabla_raw8 *pre, int lid) {
  for (int i = 0; i < NPRE; i++) {
    int idx = lid + NT * i;
    if (idx < V_VECS) put8(slot + 2 * idx, pre[i]); /* rows of HEAD_DIM floats, unpadded */
  }
}

/* The probabilities of keys c·TILE_V .. into the P part of a P·V item. */
NABLA_INLINE void store_p(__local float4 *slot, float s[RA][CB], int c, int tx, int ty) {
  __local float *ps = (__local float *)(slot + TILE_V * D4);
#if NT == 256
  int col = 4 * tx - c * TILE_V; /* keys 4 tx .. 4 tx + 3 */
  if (col >= 0 && col < TILE_V)
    for (int a = 0; a < RA; a++)
      for (int b = 0; b < CB; b++) ps[(ty + TYN * a) * (4 * P_S4) + col + b] = s[a][b];
#else
  for (int b = 0; b < CB; b++) {
    int col = tx + 16 * b - c * TILE_V;
    if (col >= 0 && col < TILE_V)
      for (int a = 0; a < RA; a++) ps[(ty + TYN * a) * (4 * P_S4) + col] = s[a][b];
  }
#endif
}

/* s += the Q·Kᵀ item's contribution to this work-item's scores. */
#if NT == 256
/* Keys 4 tx + b from K transposed; a fence after each half of a head-dim step (4 Q and 2 K
 * float4 in flight, not 4 and 4). */
NABLA_INLINE void qk_product(__local const float4 *item, float s[RA][CB], int tx, int ty) {
  __local const float4 *qs = item, *kt = item + BQ * QK_S4 + tx;
  ITEM_LOOP
  for (int d4 = 0; d4 < TD / 4; d4++) {
    float4 qv[RA], t[RA];
    for (int a = 0; a < RA; a++) {
      qv[a] = qs[(ty + TYN * a) * QK_S4 + d4];
      t[a] = (float4)(s[a][0], s[a][1], s[a][2], s[a][3]);
    }
    float4 k0 = kt[(4 * d4) * (BK / 4)], k1 = kt[(4 * d4 + 1) * (BK / 4)];
    for (int a = 0; a < RA; a++) t[a] = fma((float4)qv[a].y, k1, fma((float4)qv[a].x, k0, t[a]));
    SCHED_FENCE();
    float4 k2 = kt[(4 * d4 + 2) * (BK / 4)], k3 = kt[(4 * d4 + 3) * (BK / 4)];
    for (int a = 0; a < RA; a++) {
      t[a] = fma((float4)qv[a].w, k3, fma((float4)qv[a].z, k2, t[a]));
      s[a][0] = t[a].x, s[a][1] = t[a].y, s[a][2] = t[a].z, s[a][3] = t[a].w;
    }
  }
}
#else
NABLA_INLINE void qk_product(__local const float4 *item, float s[RA][CB], int tx, int ty) {
  __local const float4 *qs = item, *ks = item + BQ * QK_S4;
  ITEM_LOOP
  for (int d4 = 0; d4 < TD / 4; d4++) {
    float4 kv[CB];
    for (int b = 0; b < CB; b++) kv[b] = ks[(tx + 16 * b) * QK_S4 + d4];
    for (int a = 0; a < RA; a++) {
      float4 qv = qs[(ty + TYN * a) * QK_S4 + d4];
      for (int b = 0; b < CB; b++) {
        float t = s[a][b];
        t = fma(qv.x, kv[b].x, t);
        t = fma(qv.y, kv[b].y, t);
        t = fma(qv.z, kv[b].z, t);
        t = fma(qv.w, kv[b].w, t);
        s[a][b] = t;
      }
    }
  }
}
#endif

/* acc += the P·V item's contribution to this work-item's outputs. The key loop is unrolled
 * (compilers that do not know the pragma ignore it): faster on an H100, where unrolling the
 * Q·Kᵀ loop as well cost more in registers than it gained. */
#if NT == 256
/* Key by key, a fence after each: RA P values and DV4 float4 of V in flight (with float4 of P
 * for 4 keys at once, 12 float4 at HEAD_DIM 128). The same FMAs, each output in key order. */
NABLA_INLINE void pv_product(__local const float4 *item, float4 acc[RA][DV4], int tx, int ty) {
  __local const float4 *vs = item;
  __local const float *ps = (__local const float *)(item + TILE_V * D4);
#pragma unroll
  for (int j = 0; j < TILE_V; j++) {
    float pj[RA];
    for (int a = 0; a < RA; a++) pj[a] = ps[(ty + TYN * a) * (4 * P_S4) + j];
    for (int e = 0; e < DV4; e++) {
#if D4 % 16 != 0
      if (tx + 16 * e >= D4) continue;
#endif
      float4 vj = vs[j * D4 + tx + 16 * e];
      for (int a = 0; a < RA; a++) acc[a][e] = fma((float4)pj[a], vj, acc[a][e]);
    }
    SCHED_FENCE();
  }
}
#else
NABLA_INLINE void pv_product(__local const float4 *item, float4 acc[RA][DV4], int tx, int ty) {
  __local const float4 *vs = item, *ps = item + TILE_V * D4;
#pragma unroll
  for (int k4 = 0; k4 < TILE_V / 4; k4++) {
    float4 pv[RA];
    for (int a = 0; a < RA; a++) pv[a] = ps[(ty + TYN * a) * P_S4 + k4];
    for (int e = 0; e < DV4; e++) {
#if D4 % 16 != 0
      if (tx + 16 * e >= D4) continue;
#endif
      __local const float4 *vc = vs + (4 * k4) * D4 + tx + 16 * e;
      float4 v0 = vc[0], v1 = vc[D4], v2 = vc[2 * D4], v3 = vc[3 * D4];
      for (int a = 0; a < RA; a++) {
        float4 t = acc[a][e];
        t = fma((float4)pv[a].x, v0, t);
        t = fma((float4)pv[a].y, v1, t);
        t = fma((float4)pv[a].z, v2, t);
        t = fma((float4)pv[a].w, v3, t);
        acc[a][e] = t;
      }
    }
  }
}
#endif

__kernel __attribute__((reqd_work_group_size(NT, 1, 1)))
void attention(__global const STORE_T *q, __global const STORE_T *k, __global const STORE_T *v,
               __global STORE_T *o, __global const int *block_start,
               __global const int *row_ptr, __global const int *col_idx, int S, int Nb,
               float scale_log2) {
  __local float4 slots[2 * SLOT_F4];
  __local float4 red4[BQ * RED_S4]; /* per-row partial maxima, at the end partial sums */
  __local float *red = (__local float *)red4;

  const int lid = get_local_id(0);
  const int tx = (lid & 7) | ((lid >> 2) & 8), ty = ((lid >> 3) & 3) | ((lid >> 4) & ~3);
  const int qb = get_group_id(1);
  const size_t bh = get_group_id(2);
  const size_t base = bh * (size_t)S * HEAD_DIM;
  const int q0 = block_start[qb], qn = block_start[qb + 1] - q0;
  /* This work-item's slots of the row reduction: written at red_w + rows, read (its rows'
   * 16 partials) at red_r + rows. Row offsets are added to these two bases, and key and row
   * bounds compared as tx < kn - 16 b (a uniform right-hand side): written as functions of
   * ty + TYN a, AMD's compiler kept each of the RA row indices and their addresses in VGPRs
   * of their own through the key-block loop (about 25 at RA = 4). */
  __local float *red_w = red + ty * (4 * RED_S4) + tx;
  __local const float4 *red_r = red4 + ty * RED_S4;
  const int aligned = (((size_t)q | (size_t)k | (size_t)v) & 15) == 0;

  float m[RA], l[RA];
  float4 acc[RA][DV4];
  for (int a = 0; a < RA; a++) {
    m[a] = -INFINITY;
    l[a] = 0.0f;
    for (int e = 0; e < DV4; e++) acc[a][e] = (float4)0.0f;
  }

#if NABLA_DENSE
  const int p0 = 0, p1 = Nb;
#define KEY_BLOCK(p) (p)
#else
  const size_t row = bh * Nb + qb;
  const int p0 = row_ptr[row], p1 = row_ptr[row + 1];
#define KEY_BLOCK(p) col_idx[p]
#endif

  /* Item i of the key block p runs from buffer (item0 + i) % 2, item0 = (p - p0) (NQK + NPV). */
  nabla_raw8 pre[NPRE];
  if (p0 < p1) {
    int kb = KEY_BLOCK(p0), k0 = block_start[kb];
    fetch_qk(pre, lid, 0, q, k, base, q0, qn, k0, block_start[kb + 1] - k0, aligned);
    store_qk(slots, pre, lid);
  }
  barrier(CLK_LOCAL_MEM_FENCE);

  for (int p = p0; p < p1; p++) {
    const int kb = KEY_BLOCK(p);
    const int k0 = block_start[kb], kn = block_start[kb + 1] - k0;
    const int item0 = (p - p0) * (NQK + NPV);
#define CUR(i) (slots + ((item0 + (i)) & 1) * SLOT_F4)
#define NXT(i) (slots + ((item0 + (i) + 1) & 1) * SLOT_F4)

    /* S = Q Kᵀ, TD head-dim columns per item; the last one fetches the first V rows. */
    float s[RA][CB];
    for (int a = 0; a < RA; a++)
      for (int b = 0; b < CB; b++) s[a][b] = 0.0f;
    ITEM_LOOP
    for (int c = 0; c + 1 < NQK; c++) {
      fetch_qk(pre, lid, c + 1, q, k, base, q0, qn, k0, kn, aligned);
      STAGE(qk_product(CUR(c), s, tx, ty), store_qk(NXT(c), pre, lid));
      barrier(CLK_LOCAL_MEM_FENCE);
    }
    fetch_v(pre, lid, 0, v, base, k0, kn, aligned);
    STAGE(qk_product(CUR(NQK - 1), s, tx, ty), store_v(NXT(NQK - 1), pre, lid));
    for (int a = 0; a < RA; a++) {
      float mx = -INFINITY;
      for (int b = 0; b < CB; b++) {
        s[a][b] = (NT == 256 ? 4 * tx < kn - b : tx < kn - 16 * b) ? s[a][b] * scale_log2 : -INFINITY;
        mx = fmax(mx, s[a][b]);
      }
      red_w[a * (TYN * 4 * RED_S4)] = mx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* Online softmax: the row max over the 16 owners of a row, rescale, P = exp2(S - max). */
    for (int a = 0; a < RA; a++) {
      __local const float4 *rr = red_r + a * (TYN * RED_S4);
      float4 x = fmax(fmax(rr[0], rr[1]), fmax(rr[2], rr[3]));
      float mx = fmax(fmax(fmax(x.x, x.y), fmax(x.z, x.w)), m[a]);
      float alpha = (m[a] == -INFINITY) ? 0.0f : EXP2(m[a] - mx);
      m[a] = mx;
      float sum = 0.0f;
      for (int b = 0; b < CB; b++) {
        float pv = (s[a][b] == -INFINITY) ? 0.0f : EXP2(s[a][b] - mx);
        s[a][b] = pv;
        sum += pv;
      }
      l[a] = l[a] * alpha + sum; /* this work-item's columns only */
      for (int e = 0; e < DV4; e++) acc[a][e] *= alpha;
    }
    store_p(CUR(NQK), s, 0, tx, ty);
    barrier(CLK_LOCAL_MEM_FENCE);

    /* O += P V, TILE_V keys per item; the last one fetches the next key block's first item
     * (for the last block, its own again: unconditional code keeps every barrier region
     * simple, and the copy is never read). */
    ITEM_LOOP
    for (int c = 0; c + 1 < NPV; c++) {
      fetch_v(pre, lid, c + 1, v, base, k0, kn, aligned);
      STAGE(pv_product(CUR(NQK + c), acc, tx, ty),
            (store_v(NXT(NQK + c), pre, lid), store_p(NXT(NQK + c), s, c + 1, tx, ty)));
      barrier(CLK_LOCAL_MEM_FENCE);
    }
    {
      const int kb1 = p + 1 < p1 ? KEY_BLOCK(p + 1) : kb, k1 = block_start[kb1];
      fetch_qk(pre, lid, 0, q, k, base, q0, qn, k1, block_start[kb1 + 1] - k1, aligned);
      STAGE(pv_product(CUR(NQK + NPV - 1), acc, tx, ty), store_qk(NXT(NQK + NPV - 1), pre, lid));
      barrier(CLK_LOCAL_MEM_FENCE);
    }
#undef CUR
#undef NXT
  }

  /* Row sums over the 16 owners of each row (red's last reads are behind a barrier). */
  for (int a = 0; a < RA; a++) red_w[a * (TYN * 4 * RED_S4)] = l[a];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int a = 0; a < RA; a++) {
    const int r = ty + TYN * a;
    if (ty >= qn - TYN * a) continue; /* r >= qn */
    __local const float4 *rr = red_r + a * (TYN * RED_S4);
    float4 x = (rr[0] + rr[1]) + (rr[2] + rr[3]);
    float sum = (x.x + x.y) + (x.z + x.w);
    float inv = sum == 0.0f ? 0.0f : 1.0f / sum; /* no kept block: zeros; NaN stays NaN */
    for (int e = 0; e < DV4; e++) {
      int d = 4 * (tx + 16 * e);
      if (d >= HEAD_DIM) continue;
      size_t at = base + (size_t)(q0 + r) * HEAD_DIM + d;
      float4 y = acc[a][e] * inv;
      STORE(o, at + 0, y.x);
      STORE(o, at + 1, y.y);
      STORE(o, at + 2, y.z);
      STORE(o, at + 3, y.w);
    }
  }
}
