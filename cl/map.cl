/*
 * Reduced attention map: logits[z][i][j] = scale * sum_d qp[z][i][d] * kp[z][j][d] for every
 * (b, h) = z, where qp = pooled[0 .. BH) and kp = pooled[BH .. 2BH) are the pooled blocks
 * [BH, Nb, D] of Q and K (fp32, row-major, as cl/pool.cl writes them). One batched "A Bᵀ"
 * product, fp32 throughout. Map rows are ld floats apart (src/mask.c: Nb rounded up so that
 * every row starts on a 128-byte line; the columns past Nb are never read).
 *
 * A 16 x 16 work-group computes a 128 x 128 tile of one z. The operands pass through local
 * memory in chunks of MAP_KC along d, stored transposed (d-major) so that work-item (tx, ty)
 * reads its rows {4ty..4ty+3, 64+4ty..64+4ty+3} and columns {4tx.., 64+4tx..} as float4: four
 * 16-byte local reads feed 64 fused multiply-adds. The next chunk is loaded from global memory
 * into registers while the current one is multiplied. (A double-buffered form with one barrier
 * per chunk measured no faster on the H100: 0.53 against 0.51 ms at the Wan 14B shape.) Edge tiles (Nb not a multiple of 128)
 * read zeros and store nothing out of range. D is a multiple of 8, hence of 4.
 */
#define MAP_TILE 128
#ifndef MAP_KC
#define MAP_KC 16 /* d-chunk per local-memory stage; a multiple of 4 */
#endif
#define MAP_WX 16
#define MAP_WG (MAP_WX * MAP_WX)
#define MAP_LDS (MAP_TILE + 4)
#define MAP_LOADS (MAP_TILE * MAP_KC / 4 / MAP_WG) /* float4 loads per work-item per operand */

/* The float4 of `src` row `row`, columns d..d+3, or zeros outside the matrix. */
NABLA_INLINE float4 map_fetch(__global const float *src, int row, int d, int Nb, int D) {
  return (row < Nb && d < D) ? vload4(0, src + (size_t)row * D + d) : (float4)(0.0f);
}

__kernel __attribute__((reqd_work_group_size(MAP_WX, MAP_WX, 1)))
void reduced_map(__global const float *pooled, __global float *logits, int Nb, int ld, int D, int BH,
                 float scale) {
  __local float as[MAP_KC][MAP_LDS], bs[MAP_KC][MAP_LDS];
  const int tx = get_local_id(0), ty = get_local_id(1), lid = ty * MAP_WX + tx;
  const int j0 = get_group_id(0) * MAP_TILE, i0 = get_group_id(1) * MAP_TILE;
  const size_t z = get_group_id(2);
  __global const float *a = pooled + z * Nb * D, *b = pooled + (BH + z) * Nb * D;

  float4 na[MAP_LOADS], nb[MAP_LOADS]; /* the next chunk, in flight */
  for (int h = 0; h < MAP_LOADS; h++) {
    int idx = lid + h * MAP_WG, r = idx / (MAP_KC / 4), d = (idx % (MAP_KC / 4)) * 4;
    na[h] = map_fetch(a, i0 + r, d, Nb, D);
    nb[h] = map_fetch(b, j0 + r, d, Nb, D);
  }
  float acc[8][8]; /* every loop over it is unrolled: registers, not memory */
#pragma unroll
  for (int r = 0; r < 8; r++)
#pragma unroll
    for (int c = 0; c < 8; c++) acc[r][c] = 0.0f;

  for (int d0 = 0; d0 < D; d0 += MAP_KC) {
    for (int h = 0; h < MAP_LOADS; h++) { /* transposed: d-major */
      int idx = lid + h * MAP_WG, r = idx / (MAP_KC / 4), d = (idx % (MAP_KC / 4)) * 4;
      as[d][r] = na[h].x, as[d + 1][r] = na[h].y, as[d + 2][r] = na[h].z, as[d + 3][r] = na[h].w;
      bs[d][r] = nb[h].x, bs[d + 1][r] = nb[h].y, bs[d + 2][r] = nb[h].z, bs[d + 3][r] = nb[h].w;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (d0 + MAP_KC < D)
      for (int h = 0; h < MAP_LOADS; h++) {
        int idx = lid + h * MAP_WG, r = idx / (MAP_KC / 4), d = d0 + MAP_KC + (idx % (MAP_KC / 4)) * 4;
        na[h] = map_fetch(a, i0 + r, d, Nb, D);
        nb[h] = map_fetch(b, j0 + r, d, Nb, D);
      }
#pragma unroll
    for (int kk = 0; kk < MAP_KC; kk++) {
      float4 a0 = vload4(0, &as[kk][4 * ty]), a1 = vload4(0, &as[kk][64 + 4 * ty]);
      float4 b0 = vload4(0, &bs[kk][4 * tx]), b1 = vload4(0, &bs[kk][64 + 4 * tx]);
      float ar[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      float br[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int r = 0; r < 8; r++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[r][c] = fma(ar[r], br[c], acc[r][c]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }

  __global float *out = logits + z * Nb * ld;
#pragma unroll
  for (int r = 0; r < 8; r++) {
    int i = i0 + (r < 4 ? 4 * ty + r : 64 + 4 * ty + r - 4);
    if (i >= Nb) continue;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      int j = j0 + 64 * h + 4 * tx;
      float4 v = (float4)(acc[r][4 * h], acc[r][4 * h + 1], acc[r][4 * h + 2], acc[r][4 * h + 3]) * scale;
      __global float *dst = out + (size_t)i * ld + j;
      if (j + 3 < Nb) {
        vstore4(v, 0, dst);
      } else {
        if (j < Nb) dst[0] = v.x;
        if (j + 1 < Nb) dst[1] = v.y;
        if (j + 2 < Nb) dst[2] = v.z;
      }
    }
  }
}
