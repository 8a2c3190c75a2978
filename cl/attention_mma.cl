/*
 * Block-sparse flash attention on NVIDIA tensor cores ("nvidia-mma" variant of "attention").
 *
 * Same arguments and results as cl/attention.cl; fp16 or bf16 storage only, HEAD_DIM a
 * multiple of 16 up to 128. Products run on `mma.sync.aligned.m16n8k16` (16-bit inputs, fp32
 * accumulation) through inline PTX; softmax stays fp32.
 *
 * A work-group is MMA_QPW query blocks x 4 warps; warp w owns 16 query rows of block w / 4.
 * Per kept key block (the union of the work-group's CSR rows, ascending; every block when
 * NABLA_DENSE) the work-group stages K and V (64 x HEAD_DIM, 16-bit, padded rows) in local
 * memory, and each warp whose own row keeps the block computes:
 *   S = Q Kᵀ      8 n-tiles of m16n8, k-loop over HEAD_DIM; Q stays in registers as A fragments
 *   online softmax on the S fragments (row max / sum over the 4 lanes of a row by shuffles)
 *   O += P V      P converted to 16 bit is directly the A fragment (the m16n8 accumulator
 *                 layout of two adjacent n-tiles is the m16n8k16 A layout); V as B fragments.
 * Loads overlap compute: V(j) is copied while S(j) is computed, K(j+1) while P·V(j) is.
 *
 * The PTX primitives, their fragment layouts and their emulation are in cl/mma.cl, which the
 * host prepends to this file.
 *
 * MMA_SMEM_PTX=1 (the host sets it when the probe of ldmatrix/cp.async passed): K/V copies use
 * cp.async and fragments come from ldmatrix(.trans). 0: plain local loads and stores.
 * NABLA_NO_PTX: every PTX instruction is replaced by a local-memory emulation with barriers,
 * so the fragment logic of this file runs (slowly) on any OpenCL device; it is the
 * "nvidia-mma-emulated" variant used by the tests on CPUs.
 */
#if NABLA_DTYPE != 1 && NABLA_DTYPE != 2
#error "attention_mma needs fp16 or bf16 storage"
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef NABLA_DENSE
#define NABLA_DENSE 0
#endif
#ifndef MMA_QPW
#define MMA_QPW 1 /* query blocks per work-group (they share staged K/V blocks) */
#endif
#if HEAD_DIM % 16 != 0 || HEAD_DIM > 128
#error "attention_mma needs HEAD_DIM a multiple of 16, at most 128"
#endif
#if MMA_QPW != 1 && MMA_QPW != 2
#error "MMA_QPW must be 1 or 2"
#endif

#define BQ 64
#define BK 64
#define NWARP (4 * MMA_QPW)
#define NTHREADS (32 * NWARP)
#define KSTEPS (HEAD_DIM / 16)       /* k-steps of Q Kᵀ */
#define DTILES (HEAD_DIM / 8)        /* n-tiles of O */
#define LDS (HEAD_DIM + 8)           /* row stride of staged K/V in 16-bit words (bank spread) */
#define ROW_CHUNKS (HEAD_DIM / 8)    /* 16-byte chunks per row */
#define BLOCK_CHUNKS (BK * ROW_CHUNKS)

/* ---- staging ------------------------------------------------------------------------- */

/* Copies rows [0, kn) of a 64-row block (src = its first row) into dst, zero-filling the rest. */
NABLA_INLINE void stage_block(__local uint4 *dst, __global const uint4 *src, int kn, int lid) {
  for (int i = 0; i < (BLOCK_CHUNKS + NTHREADS - 1) / NTHREADS; i++) {
    int c = lid + i * NTHREADS;
    if (BLOCK_CHUNKS % NTHREADS != 0 && c >= BLOCK_CHUNKS) break;
    int r = c / ROW_CHUNKS, cc = c - r * ROW_CHUNKS;
    __local uint4 *d = dst + r * (LDS / 8) + cc;
#if MMA_CPASYNC
    cp_async16(d, r < kn ? src + r * ROW_CHUNKS + cc : src, r < kn ? 16u : 0u);
#else
    *d = r < kn ? src[r * ROW_CHUNKS + cc] : (uint4)(0u);
#endif
  }
#if MMA_CPASYNC
  cp_async_commit();
#endif
}

/* ---- the kernel ---------------------------------------------------------------------- */

MMA_ATTENTION_KERNEL
void attention(__global const ushort *q, __global const ushort *k, __global const ushort *v,
               __global ushort *o, __global const int *block_start,
               __global const int *row_ptr, __global const int *col_idx, int S, int Nb,
               float scale_log2) {
  __local uint4 kbuf[BK * LDS / 8], vbuf[BK * LDS / 8];
  __local const ushort *ks = (__local const ushort *)kbuf;
  __local const ushort *vs = (__local const ushort *)vbuf;
#ifdef NABLA_NO_PTX
  __local uint emu_all[NWARP * EMU_WORDS];
#endif

  const int lid = get_local_id(0), lane = lid & 31, warp = lid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int sub = warp >> 2;                     /* which query block of the work-group */
  const int qb0 = get_group_id(0) * MMA_QPW;
  const int qb = qb0 + sub;
  const size_t bh = get_group_id(1);
  const size_t base = bh * (size_t)S * HEAD_DIM; /* element offset of this (b, h) */
#ifdef NABLA_NO_PTX
  __local uint *emu = emu_all + warp * EMU_WORDS;
#endif

  /* This warp's 16 query rows; rows beyond the block (or a missing block) are zero. */
  const int have_qb = qb < Nb;
  const int q0 = have_qb ? block_start[qb] : 0;
  const int qn = have_qb ? block_start[qb + 1] - q0 : 0;
  const int r0 = 16 * (warp & 3);
  const int ra = r0 + g, rb = r0 + g + 8;        /* rows of c0,c1 and c2,c3 */
  uint qf[KSTEPS][4];
  mma_load_q(qf, (__global const uint *)(q + base + (size_t)q0 * HEAD_DIM), ra, rb, qn, t);

  float acc[4 * DTILES]; /* flat, like s: the helpers walk them whole */
  UNROLL
  for (int j = 0; j < DTILES; j++) acc[4 * j] = acc[4 * j + 1] = acc[4 * j + 2] = acc[4 * j + 3] = 0.0f;
  float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f;

  mma_rows rows = mma_rows_of(row_ptr, bh, qb0, Nb);

  __global const uint4 *kg = (__global const uint4 *)(k + base);
  __global const uint4 *vg = (__global const uint4 *)(v + base);
  int kb = mma_rows_next(&rows, col_idx, Nb);
  if (kb < Nb) {
    int k0 = block_start[kb];
    stage_block(kbuf, kg + (size_t)k0 * ROW_CHUNKS, block_start[kb + 1] - k0, lid);
  }
  while (kb < Nb) {
    const int k0 = block_start[kb], kn = block_start[kb + 1] - k0;
    const int mine = mma_rows_take(&rows, col_idx, kb, sub); /* this warp's row keeps kb */
    const int next = mma_rows_next(&rows, col_idx, Nb);

    stage_wait(); /* K(kb) is in; every warp is done with V of the previous block */
    stage_block(vbuf, vg + (size_t)k0 * ROW_CHUNKS, kn, lid);

    float s[32]; /* fragment j of the 8 key columns at s + 4 j */
#ifdef NABLA_NO_PTX
    /* The emulation's barriers need every warp on the same path: a warp whose row does not
     * keep kb computes with every key masked, which leaves its state unchanged. */
    const int compute = 1, kvalid = mine ? kn : 0;
#else
    const int compute = mine, kvalid = kn;
#endif
    if (compute) {
      UNROLL
      for (int j = 0; j < 8; j++) s[4 * j] = s[4 * j + 1] = s[4 * j + 2] = s[4 * j + 3] = 0.0f;
      UNROLL
      for (int st = 0; st < KSTEPS; st++) {
#if MMA_LDSM
        const int mi = lane >> 3, mr = lane & 7;
        UNROLL
        for (int jj = 0; jj < 4; jj++) {
          uint kf[4];
          ldsm_x4(kf, ks, (16 * jj + 8 * (mi >> 1) + mr) * LDS + 16 * st + 8 * (mi & 1), 0 EMU_PASS);
          mma16816(s + 8 * jj, qf[st], kf[0], kf[1] EMU_PASS);
          mma16816(s + 8 * jj + 4, qf[st], kf[2], kf[3] EMU_PASS);
        }
#else
        __local const uint *kw = (__local const uint *)kbuf;
        UNROLL
        for (int j = 0; j < 8; j++) {
          int w = ((8 * j + g) * LDS + 16 * st) / 2 + t;
          mma16816(s + 4 * j, qf[st], kw[w], kw[w + 4] EMU_PASS);
        }
#endif
      }

      mma_online_softmax(s, acc, kvalid, t, scale_log2, &ma, &mb, &la, &lb EMU_PASS);
    }

    stage_wait(); /* V(kb) is in; every warp is done with K(kb) */
    if (next < Nb) {
      int n0 = block_start[next];
      stage_block(kbuf, kg + (size_t)n0 * ROW_CHUNKS, block_start[next + 1] - n0, lid);
    }

    if (compute) {
      UNROLL
      for (int kc = 0; kc < 4; kc++) {
        uint pf[4];
        pf[0] = pack2(s[8 * kc + 0], s[8 * kc + 1]);
        pf[1] = pack2(s[8 * kc + 2], s[8 * kc + 3]);
        pf[2] = pack2(s[8 * kc + 4], s[8 * kc + 5]);
        pf[3] = pack2(s[8 * kc + 6], s[8 * kc + 7]);
#if MMA_LDSM
        const int mi = lane >> 3, mr = lane & 7;
        UNROLL
        for (int j = 0; j < DTILES; j += 2) {
          uint vf[4];
          ldsm_x4(vf, vs, (16 * kc + 8 * (mi & 1) + mr) * LDS + 8 * (j + (mi >> 1)), 1 EMU_PASS);
          mma16816(acc + 4 * j, pf, vf[0], vf[1] EMU_PASS);
          mma16816(acc + 4 * j + 4, pf, vf[2], vf[3] EMU_PASS);
        }
#else
        UNROLL
        for (int j = 0; j < DTILES; j++) {
          int c = 8 * j + g, r = 16 * kc + 2 * t;
          uint b0 = (uint)vs[r * LDS + c] | ((uint)vs[(r + 1) * LDS + c] << 16);
          uint b1 = (uint)vs[(r + 8) * LDS + c] | ((uint)vs[(r + 9) * LDS + c] << 16);
          mma16816(acc + 4 * j, pf, b0, b1 EMU_PASS);
        }
#endif
      }
    }
    kb = next;
  }

  mma_store_o((__global uint *)(o + base + (size_t)q0 * HEAD_DIM), acc, la, lb, ra, rb, qn,
              t EMU_PASS);
}
