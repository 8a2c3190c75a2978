/*
 * Reduced attention map on NVIDIA tensor cores (the "nvidia-mma" variant of the map stage):
 * logits[z][i][j] = scale * qp[z][i] · kp[z][j] (rows ld floats apart), the same product as
 * cl/map.cl, from the split pooling (cl/pool.cl with POOL_SPLIT=1): every pooled row x is
 * s (hi + lo), s a power of two, hi and lo fp16. Then
 *   x_i · y_j = s_i s_j (hi_i · hi_j + hi_i · lo_j + lo_i · hi_j + lo_i · lo_j)
 * and the first three products run on `mma.sync.aligned.m16n8k16` (fp16 inputs, fp32
 * accumulators). hi + lo holds each value to 2^-22 of its row's largest and the dropped
 * lo · lo term is smaller still: the map is as accurate as the fp32 one (tests/test_mask.c
 * measures both against float64).
 *
 * A work-group of 8 warps owns 128 rows i of one z; warp w keeps the A fragments (hi and lo)
 * of its 16 rows for all of d in registers, loaded once. The columns j pass by in tiles of
 * MAP_BN staged in local memory (hi and lo side by side in each row; MAP_STAGES - 1 tiles are
 * copied by cp.async while one is multiplied), so each barrier serves 3 MAP_BN / 8 mma per 16
 * of d per warp and each staged tile is read by all 8 warps. Work-group (s, strip, z) takes
 * the column tiles s, s + splits, ... of its strip. Rows and columns past Nb read as zero;
 * nothing is stored past row Nb, and the columns from Nb to ld receive zeros. MAP_D: D, a
 * multiple of 16 up to 128.
 */
#ifndef MAP_D
#define MAP_D 128
#endif
#if MAP_D % 16 != 0 || MAP_D > 128
#error "map_mma needs D a multiple of 16, at most 128"
#endif
#define MAP_ROWS 128 /* rows per work-group: 16 per warp */
#ifndef MAP_BN
#define MAP_BN 32    /* columns per staged tile: 16 or 32 */
#endif
#ifndef MAP_STAGES
#define MAP_STAGES 2 /* staged tiles: the one multiplied and MAP_STAGES - 1 in flight (2 or 3) */
#endif
/* Local memory: MAP_STAGES x MAP_BN x (2 D + 8) halves, 33 KiB at the defaults and D = 128;
 * NVIDIA's OpenCL allows 48 KiB, so 32 columns fit 2 stages only. Measured on the H100 (Wan 14B
 * shape): 32 columns and 2 stages 0.29 ms, 16 columns and 2 or 3 stages 0.34 ms. */
#define MAP_NT (MAP_BN / 8) /* n-tiles per warp */
#define MAP_SWZ(r) ((((r) & 3) << 2) & (MAP_BN / 2 - 1)) /* staged output: pair swizzle of row r */
#define MAP_THREADS 256
#define MAP_KSTEPS (MAP_D / 16)
#define MAP_SP (MAP_D % 32 == 0 ? 2 : 1) /* k-steps per A load (cl/pool.cl's Q layout) */
#define MAP_SROW (2 * MAP_D + 8)            /* halves per staged row: hi[D], lo[D], padding */
#define MAP_CHUNKS (MAP_D / 4)              /* 16-byte pieces of a pooled row (2 D halves) */
/* 16-byte words of a stage: a staged tile, or the 8 warps' 16 x MAP_BN output blocks. */
#define MAP_STAGE_U4 (MAP_SROW >= 256 ? MAP_BN * MAP_SROW / 8 : MAP_BN * 32)
#define MAP_COPIES ((MAP_BN * MAP_CHUNKS + MAP_THREADS - 1) / MAP_THREADS) /* per work-item and tile */

/* Copies column tile j0 (rows j0 .. j0 + MAP_BN - 1 of kp, zeros past Nb) into dst, as one
 * group of copies. */
NABLA_INLINE void map_stage(__local uint4 *dst, __global const uint4 *kp, int j0, int Nb, int lid) {
#pragma unroll
  for (int h = 0; h < MAP_COPIES; h++) {
    const int c = lid + h * MAP_THREADS, r = c / MAP_CHUNKS, piece = c % MAP_CHUNKS;
    if (MAP_BN * MAP_CHUNKS % MAP_THREADS != 0 && c >= MAP_BN * MAP_CHUNKS) break;
    const int live = j0 + r < Nb;
    __global const uint4 *src = kp + (size_t)(live ? j0 + r : 0) * MAP_CHUNKS + piece;
    __local uint4 *d = dst + r * (MAP_SROW / 8) + piece;
#if MMA_CPASYNC
    cp_async16(d, src, live ? 16u : 0u);
#else
    *d = live ? *src : (uint4)(0u);
#endif
  }
  stage_commit();
}

/* The A fragments of MAP_SP k-steps (f[0 .. MAP_SP)) of rows a and b (zeros for a missing
 * row) from the 2 MAP_SP words at word c of each row: cl/pool.cl lays the split Q rows out so
 * that these are the words (s, h = 0), (s, h = 1), (s + 1, h = 0), ... of lane t, where word
 * (s, h) holds k = 2t + 8h, 2t + 8h + 1 of k-step s. One 16-byte (or 8-byte) load per row
 * instead of four scalar ones. */
NABLA_INLINE void map_afrag(uint (*f)[4], __global const uint *a, __global const uint *b, int has_a,
                      int has_b, int c) {
#if MAP_SP == 2
  const uint4 x = has_a ? *(__global const uint4 *)(a + c) : (uint4)(0u);
  const uint4 y = has_b ? *(__global const uint4 *)(b + c) : (uint4)(0u);
  f[0][0] = x.s0, f[0][2] = x.s1, f[1][0] = x.s2, f[1][2] = x.s3;
  f[0][1] = y.s0, f[0][3] = y.s1, f[1][1] = y.s2, f[1][3] = y.s3;
#else
  const uint2 x = has_a ? *(__global const uint2 *)(a + c) : (uint2)(0u);
  const uint2 y = has_b ? *(__global const uint2 *)(b + c) : (uint2)(0u);
  f[0][0] = x.s0, f[0][2] = x.s1;
  f[0][1] = y.s0, f[0][3] = y.s1;
#endif
}

__kernel __attribute__((reqd_work_group_size(MAP_THREADS, 1, 1)))
void reduced_map_mma(__global const ushort *restrict pooled, __global float *restrict logits, int Nb,
                     int ld, int BH, float scale) {
  __local uint4 bbuf[MAP_STAGES][MAP_STAGE_U4];
#ifdef NABLA_NO_PTX
  __local uint emu_all[8 * EMU_WORDS];
#endif
  const int lid = get_local_id(0), lane = lid & 31, warp = lid >> 5;
  const int g = lane >> 2, t = lane & 3, mi = lane >> 3, mr = lane & 7;
  const int split = get_group_id(0), splits = get_num_groups(0);
  const int i0 = get_group_id(1) * MAP_ROWS + 16 * warp;
  const size_t z = get_group_id(2);
#ifdef NABLA_NO_PTX
  __local uint *emu = emu_all + warp * EMU_WORDS;
#endif
  const size_t arow0 = z * Nb, brow0 = ((size_t)BH + z) * Nb;
  __global const uint4 *kp = (__global const uint4 *)pooled + brow0 * MAP_CHUNKS;
  const int tiles = (Nb + MAP_BN - 1) / MAP_BN;
  __global const float *scales = (__global const float *)pooled + 2 * (size_t)BH * Nb * MAP_D;
  for (int p = 0; p < MAP_STAGES - 1; p++) { /* one group of copies per tile, empty past the end */
    if (split + p * splits < tiles) map_stage(bbuf[p], kp, (split + p * splits) * MAP_BN, Nb, lid);
    else stage_commit();
  }

  /* This warp's A fragments: rows i0 + g and i0 + g + 8, the 32-bit pairs of halves at d =
   * 16 s + 2 t (+ 8), hi then lo (row layout of mma.m16n8k16; see cl/mma.cl). */
  const int ra = i0 + g, rb = i0 + g + 8;
  uint ahi[MAP_KSTEPS][4], alo[MAP_KSTEPS][4];
  {
    __global const uint *w = (__global const uint *)pooled;
    const size_t pa = (arow0 + (ra < Nb ? ra : 0)) * MAP_D, pb = (arow0 + (rb < Nb ? rb : 0)) * MAP_D;
    UNROLL
    for (int s = 0; s < MAP_KSTEPS; s += MAP_SP) {
      const int c = 8 * s + 2 * MAP_SP * t;
      map_afrag(ahi + s, w + pa, w + pb, ra < Nb, rb < Nb, c);
      map_afrag(alo + s, w + pa, w + pb, ra < Nb, rb < Nb, MAP_D / 2 + c);
    }
  }
  const float sa = ra < Nb ? scales[arow0 + ra] * scale : 0.0f;
  const float sb = rb < Nb ? scales[arow0 + rb] * scale : 0.0f;
  __global float *out = logits + z * Nb * ld;

  for (int tile = split, buf = 0; tile < tiles; tile += splits, buf = buf + 1 == MAP_STAGES ? 0 : buf + 1) {
#if MAP_STAGES == 3
    stage_wait_but_one(); /* tile is in bbuf[buf]; every warp is done with the previous buffer */
#else
    stage_wait();
#endif
    const int ahead = tile + (MAP_STAGES - 1) * splits, nbuf = buf == 0 ? MAP_STAGES - 1 : buf - 1;
    if (ahead < tiles) map_stage(bbuf[nbuf], kp, ahead * MAP_BN, Nb, lid);
    else stage_commit();
    __local const ushort *bs = (__local const ushort *)bbuf[buf];
    /* The columns' scales, loaded before the products so that their latency hides behind
     * them (loaded next to the stores, each store waited for its load: the map took 0.37
     * instead of 0.28 ms). */
    const int j0 = tile * MAP_BN;
    float s0[MAP_NT], s1[MAP_NT];
    UNROLL
    for (int b = 0; b < MAP_NT; b++) {
      const int j = j0 + 8 * b + 2 * t;
      s0[b] = j < Nb ? scales[brow0 + j] : 0.0f;
      s1[b] = j + 1 < Nb ? scales[brow0 + j + 1] : 0.0f;
    }
    float acc[MAP_NT][4];
    UNROLL
    for (int b = 0; b < MAP_NT; b++) acc[b][0] = acc[b][1] = acc[b][2] = acc[b][3] = 0.0f;
    UNROLL
    for (int s = 0; s < MAP_KSTEPS; s++) {
      /* B fragments of the 4 n-tiles, hi and lo: one ldmatrix.x4 covers two n-tiles. */
      uint bhi[MAP_NT][2], blo[MAP_NT][2];
      UNROLL
      for (int p = 0; p < MAP_NT / 2; p++) {
        const int off = (16 * p + 8 * (mi >> 1) + mr) * MAP_SROW + 16 * s + 8 * (mi & 1);
        uint f[4];
        ldsm_x4(f, bs, off, 0 EMU_PASS);
        bhi[2 * p][0] = f[0], bhi[2 * p][1] = f[1], bhi[2 * p + 1][0] = f[2], bhi[2 * p + 1][1] = f[3];
        ldsm_x4(f, bs, off + MAP_D, 0 EMU_PASS);
        blo[2 * p][0] = f[0], blo[2 * p][1] = f[1], blo[2 * p + 1][0] = f[2], blo[2 * p + 1][1] = f[3];
      }
      UNROLL
      for (int b = 0; b < MAP_NT; b++) mma16816(acc[b], ahi[s], bhi[b][0], bhi[b][1] EMU_PASS);
      UNROLL
      for (int b = 0; b < MAP_NT; b++) mma16816(acc[b], ahi[s], blo[b][0], blo[b][1] EMU_PASS);
      UNROLL
      for (int b = 0; b < MAP_NT; b++) mma16816(acc[b], alo[s], bhi[b][0], bhi[b][1] EMU_PASS);
    }
    /* logits = acc s_i s_j scale: the lane holds rows g, g + 8 and columns 2t, 2t + 1 of
     * each n-tile. They pass through the tile's local buffer, which every warp has finished
     * reading after the barrier (the next copy into it follows the next iteration's barrier),
     * so that each store writes whole rows of MAP_BN floats: straight from the fragments, a
     * warp's store covered 32 bytes of 8 rows, and the map was bound by the L2's request rate
     * (ncu, Wan 14B shape). The warp's 16 x MAP_BN block is row-major with its column pairs
     * XOR-swizzled by the row (pair p of row r at p ^ MAP_SWZ(r)), against bank conflicts.
     * Whole tiles are stored: the columns from Nb to ld hold zeros. */
    barrier(CLK_LOCAL_MEM_FENCE);
    __local float *stg = (__local float *)bbuf[buf] + warp * 16 * MAP_BN;
    UNROLL
    for (int b = 0; b < MAP_NT; b++) {
      UNROLL
      for (int h = 0; h < 2; h++) {
        const float si = h ? sb : sa;
        const int r = g + 8 * h, p = (4 * b + t) ^ MAP_SWZ(r);
        vstore2((float2)(acc[b][2 * h] * si * s0[b], acc[b][2 * h + 1] * si * s1[b]), 0, stg + r * MAP_BN + 2 * p);
      }
    }
    warp_sync();
    UNROLL
    for (int k = 0; k < MAP_BN / 8; k++) { /* 4 floats a lane, MAP_BN / 4 lanes a row */
      const int r = k * (128 / MAP_BN) + lane / (MAP_BN / 4), q = lane % (MAP_BN / 4);
      const float4 v = vload4(0, stg + r * MAP_BN + 2 * ((2 * q) ^ MAP_SWZ(r)));
      if (i0 + r < Nb) *(__global float4 *)(out + (size_t)(i0 + r) * ld + j0 + 4 * q) = v;
    }
  }
}
