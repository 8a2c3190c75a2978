/*
 * Reduced attention map on NVIDIA tensor cores (the "nvidia-mma" variant of the map stage):
 * logits[z][i][j] = scale * qp[z][i] · kp[z][j], the same product as cl/map.cl, from the split
 * pooling (cl/pool.cl with POOL_SPLIT=1): every pooled row x is s (hi + lo), s a power of two,
 * hi and lo fp16. Then
 *   x_i · y_j = s_i s_j (hi_i · hi_j + hi_i · lo_j + lo_i · hi_j + lo_i · lo_j)
 * and the first three products run on `mma.sync.aligned.m16n8k16` (fp16 inputs, fp32
 * accumulators). The dropped lo · lo term is below 2^-22 of |x_i| |y_j|, and hi + lo holds
 * each value to about 2^-22 of its row's largest: the map's error is of the order of fp32
 * accumulation, so the selection decides the same blocks as from the fp32 map (see
 * docs/algorithm.md for the bound).
 *
 * A work-group of 8 warps computes a 128 x 128 tile of one z; warp w owns rows 64 (w / 4) ..
 * + 64 and columns 32 (w % 4) .. + 32: 4 x 4 m16n8 accumulator tiles. The operands pass through
 * local memory MAP_KC = 16 values of d at a time, hi and lo side by side in each staged row,
 * double-buffered: chunk c + 1 is copied (cp.async) while chunk c is multiplied. Fragments
 * come from ldmatrix. Rows past Nb are zero-filled and nothing is stored out of range.
 * D is a multiple of 16.
 */
#define MAP_TILE 128 /* rows of the tile */
#ifndef MAP_TN
#define MAP_TN 64 /* columns of the tile: 64 (warps of 32 x 32) or 128 (warps of 64 x 32) */
#endif
#define MAP_WM (MAP_TN == 128 ? 64 : 32) /* rows per warp */
#define MAP_STAGES (MAP_TN == 128 ? 2 : 3)  /* local-memory buffers: 40 or 45 KiB in all */
#define MAP_MT (MAP_WM / 16)             /* m16 tiles per warp */
#define MAP_KC 16
#define MAP_THREADS 256
#define MAP_SROW (2 * MAP_KC + 8) /* halves per staged row: hi[16], lo[16], 8 of padding */
#define MAP_STAGE (MAP_TILE * MAP_SROW / 8) /* uint4 per staged operand */
#define MAP_COPIES ((MAP_TILE + MAP_TN) * 4 / MAP_THREADS) /* 16-byte copies per work-item */

/* Copies d-chunk d0 of rows i0.. (A) and j0.. (B) into one buffer pair: 4 x 16 bytes per row
 * (hi d0..+7, hi d0+8..+15, lo d0..+7, lo d0+8..+15), 256 rows, 4 copies per work-item. */
inline void map_stage(__local uint4 *as, __local uint4 *bs, __global const uint4 *arow,
                      __global const uint4 *brow, int na, int nb, int D, int d0, int lid) {
  const int row_chunks = D / 4; /* uint4 per pooled row (2 D halves) */
#pragma unroll
  for (int h = 0; h < MAP_COPIES; h++) {
    const int c = lid + h * MAP_THREADS, is_b = c >= 4 * MAP_TILE;
    const int r = (c >> 2) - (is_b ? MAP_TILE : 0), part = c & 3;
    const int live = r < (is_b ? nb : na);
    /* hi at halves [d0, d0 + 16) of the row, lo at D + d0 ..: uint4 index (part & 2 ? D : 0) / 8 + ... */
    const int src_chunk = ((part & 2) ? D / 8 : 0) + d0 / 8 + (part & 1);
    __global const uint4 *src = (is_b ? brow : arow) + (size_t)(live ? r : 0) * row_chunks + src_chunk;
    __local uint4 *dst = (is_b ? bs : as) + r * (MAP_SROW / 8) + part;
#if MMA_CPASYNC
    cp_async16(dst, src, live ? 16u : 0u);
#else
    *dst = live ? *src : (uint4)(0u);
#endif
  }
}

__kernel __attribute__((reqd_work_group_size(MAP_THREADS, 1, 1)))
void reduced_map_mma(__global const ushort *pooled, __global float *logits, int Nb, int D, int BH,
                     float scale) {
  __local uint4 abuf[MAP_STAGES][MAP_STAGE], bbuf[MAP_STAGES][MAP_TN * MAP_SROW / 8];
#ifdef NABLA_NO_PTX
  __local uint emu_all[8 * EMU_WORDS];
#endif
  const int lid = get_local_id(0), lane = lid & 31, warp = lid >> 5;
  const int g = lane >> 2, t = lane & 3, mi = lane >> 3, mr = lane & 7;
  const int j0 = get_group_id(0) * MAP_TN, i0 = get_group_id(1) * MAP_TILE;
  const size_t z = get_group_id(2);
  const int wm = MAP_WM * (warp / (MAP_TN / 32)), wn = 32 * (warp % (MAP_TN / 32));
#ifdef NABLA_NO_PTX
  __local uint *emu = emu_all + warp * EMU_WORDS;
#endif
  const size_t arow0 = z * Nb + i0, brow0 = ((size_t)BH + z) * Nb + j0;
  __global const uint4 *arow = (__global const uint4 *)pooled + arow0 * (D / 4);
  __global const uint4 *brow = (__global const uint4 *)pooled + brow0 * (D / 4);
  const int na = min(MAP_TILE, Nb - i0), nb = min(MAP_TN, Nb - j0);

  float acc[MAP_MT][4][4];
  UNROLL
  for (int a = 0; a < MAP_MT; a++)
    UNROLL
    for (int b = 0; b < 4; b++) acc[a][b][0] = acc[a][b][1] = acc[a][b][2] = acc[a][b][3] = 0.0f;

  /* MAP_STAGES - 1 chunks in flight ahead of the one multiplied; one group of copies per
   * chunk (empty past the end, so that the count of groups stays uniform). */
  for (int p = 0; p < MAP_STAGES - 1; p++) {
    if (p * MAP_KC < D) map_stage(abuf[p], bbuf[p], arow, brow, na, nb, D, p * MAP_KC, lid);
    stage_commit();
  }
  for (int d0 = 0, c = 0; d0 < D; d0 += MAP_KC, c = c + 1 == MAP_STAGES ? 0 : c + 1) {
#if MAP_STAGES == 3
    stage_wait_but_one(); /* chunk d0 is in buffer c; every warp is done with the buffer of d0 - 16 */
#else
    stage_wait();
#endif
    const int ahead = d0 + (MAP_STAGES - 1) * MAP_KC, cn = c == 0 ? MAP_STAGES - 1 : c - 1;
    if (ahead < D) map_stage(abuf[cn], bbuf[cn], arow, brow, na, nb, D, ahead, lid);
    stage_commit();
    __local const ushort *as = (__local const ushort *)abuf[c];
    __local const ushort *bs = (__local const ushort *)bbuf[c];
    /* B fragments of the warp's 4 n-tiles, hi and lo: one ldmatrix.x4 covers two n-tiles. */
    uint bhi[4][2], blo[4][2];
    UNROLL
    for (int p = 0; p < 2; p++) {
      const int off = (wn + 16 * p + 8 * (mi >> 1) + mr) * MAP_SROW + 8 * (mi & 1);
      uint f[4];
      ldsm_x4(f, bs, off, 0 EMU_PASS);
      bhi[2 * p][0] = f[0], bhi[2 * p][1] = f[1], bhi[2 * p + 1][0] = f[2], bhi[2 * p + 1][1] = f[3];
      ldsm_x4(f, bs, off + MAP_KC, 0 EMU_PASS);
      blo[2 * p][0] = f[0], blo[2 * p][1] = f[1], blo[2 * p + 1][0] = f[2], blo[2 * p + 1][1] = f[3];
    }
    uint ahi[MAP_MT][4], alo[MAP_MT][4];
    UNROLL
    for (int a = 0; a < MAP_MT; a++) {
      const int off = (wm + 16 * a + 8 * (mi & 1) + mr) * MAP_SROW + 8 * (mi >> 1);
      ldsm_x4(ahi[a], as, off, 0 EMU_PASS);
      ldsm_x4(alo[a], as, off + MAP_KC, 0 EMU_PASS);
    }
    /* One product at a time over all tiles: the three mma into one accumulator are 4 MAP_MT
     * instructions apart instead of back to back, so they do not wait on each other. */
    UNROLL
    for (int a = 0; a < MAP_MT; a++)
      UNROLL
      for (int b = 0; b < 4; b++) mma16816(acc[a][b], ahi[a], bhi[b][0], bhi[b][1] EMU_PASS);
    UNROLL
    for (int a = 0; a < MAP_MT; a++)
      UNROLL
      for (int b = 0; b < 4; b++) mma16816(acc[a][b], ahi[a], blo[b][0], blo[b][1] EMU_PASS);
    UNROLL
    for (int a = 0; a < MAP_MT; a++)
      UNROLL
      for (int b = 0; b < 4; b++) mma16816(acc[a][b], alo[a], bhi[b][0], bhi[b][1] EMU_PASS);
  }

  /* logits = acc * s_i * s_j * scale; lane holds rows g, g + 8 and columns 2t, 2t + 1 of
   * each tile. */
  __global const float *scales = (__global const float *)pooled + 2 * (size_t)BH * Nb * D;
  float sj[4][2];
  UNROLL
  for (int b = 0; b < 4; b++)
    UNROLL
    for (int e = 0; e < 2; e++) {
      const int j = wn + 8 * b + 2 * t + e;
      sj[b][e] = j < nb ? scales[brow0 + j] * scale : 0.0f;
    }
  __global float *out = logits + z * Nb * Nb;
  UNROLL
  for (int a = 0; a < MAP_MT; a++)
    UNROLL
    for (int h = 0; h < 2; h++) {
      const int i = wm + 16 * a + g + 8 * h;
      if (i >= na) continue;
      const float si = scales[arow0 + i];
      __global float *dst = out + (size_t)(i0 + i) * Nb + j0;
      UNROLL
      for (int b = 0; b < 4; b++) {
        const int j = wn + 8 * b + 2 * t;
        const float v0 = acc[a][b][2 * h] * si * sj[b][0], v1 = acc[a][b][2 * h + 1] * si * sj[b][1];
        if (j + 1 < nb && (Nb & 1) == 0) {
          vstore2((float2)(v0, v1), 0, dst + j);
        } else {
          if (j < nb) dst[j] = v0;
          if (j + 1 < nb) dst[j + 1] = v1;
        }
      }
    }
}
