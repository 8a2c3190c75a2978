/*
 * Capability probe of the "nvidia-wgmma" attention variant (src/variants/nvidia_wgmma.c runs it
 * once per device and dtype and keeps the verdict in the disk cache). One work-group: one warpgroup of
 * 128 work-items. It runs exactly the operations of cl/attention_wgmma.cl, with the same
 * helpers of cl/wgmma.cl:
 *   b [64][128] (16-bit, rows = keys) is staged into a swizzled tile with only its first 61
 *   rows copied (the rest zero-filled, as for a ragged block); then
 *   d1 [64][64]  = a [64][128] bᵀ     8 k-steps of m64n64k16, K-major B; the first with the
 *                                     accumulator ignored (d1 starts at 1000, which must vanish);
 *   d2 [64][128] = 0.5 + p [64][64] b 4 k-steps of m64n128k16, MN-major (transposed) B;
 *   d3 [64][64]  = 0.5 + p b[:, :64]  4 k-steps of m64n64k16, MN-major B (head dim 64).
 * A operands come from registers, loaded per the fragment layout. Inputs are small integers, so
 * every result is exact; the host compares bit for bit.
 */
__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void probe_wgmma(__global const uint *a, __global const uint4 *b, __global const uint *p,
                 __global float *d1, __global float *d2, __global float *d3) {
  __local uint4 arena_raw[(2 * WG_TILE_HALF + 1024) / 16];
  __local uchar *arena = (__local uchar *)arena_raw;
#ifdef NABLA_NO_PTX
  __local uint wgemu[WG_EMU_WORDS];
#endif
  const int lid = get_local_id(0), wlid = lid, lane = lid & 31, g = lane >> 2, t = lane & 3;
  const int ra = 16 * (lid >> 5) + g, rb = ra + 8;
  __local uchar *tile = arena + ((1024u - (WG_ADDR(arena) & 1023u)) & 1023u);
  const uint taddr = WG_ADDR(tile);
  wg_stage_tile(tile, b, 61, 16, lid, 128);

  uint af[8][4], pf[4][4];
  UNROLL
  for (int s = 0; s < 8; s++) {
    af[s][0] = a[ra * 64 + 8 * s + t];
    af[s][1] = a[rb * 64 + 8 * s + t];
    af[s][2] = a[ra * 64 + 8 * s + t + 4];
    af[s][3] = a[rb * 64 + 8 * s + t + 4];
  }
  UNROLL
  for (int s = 0; s < 4; s++) {
    pf[s][0] = p[ra * 32 + 8 * s + t];
    pf[s][1] = p[rb * 32 + 8 * s + t];
    pf[s][2] = p[ra * 32 + 8 * s + t + 4];
    pf[s][3] = p[rb * 32 + 8 * s + t + 4];
  }
  float s1[32], s2[64], s3[32];
  UNROLL
  for (int i = 0; i < 32; i++) s1[i] = 1000.0f, s3[i] = 0.5f;
  UNROLL
  for (int i = 0; i < 64; i++) s2[i] = 0.5f;
  wg_stage_wait();

  wg_fence();
  UNROLL
  for (int s = 0; s < 8; s++)
    wg_mma_n64(s1, af[s], wg_desc(taddr + (s >> 2) * WG_TILE_HALF + (s & 3) * 32, 16, 1024), s > 0);
  UNROLL
  for (int s = 0; s < 4; s++)
    wg_mma_n128t(s2, pf[s], wg_desc(taddr + s * 2048, WG_TILE_HALF, 1024), 1);
  UNROLL
  for (int s = 0; s < 4; s++) wg_mma_n64t(s3, pf[s], wg_desc(taddr + s * 2048, WG_TILE_HALF, 1024), 1);
  wg_commit();
  wg_wait0();
  UNROLL
  for (int i = 0; i < 32; i++) {
    wg_keep(s1[i]);
    wg_keep(s3[i]);
  }
  UNROLL
  for (int i = 0; i < 64; i++) wg_keep(s2[i]);

  UNROLL
  for (int i = 0; i < 16; i++)
    UNROLL
    for (int e = 0; e < 4; e++) {
      int r = e < 2 ? ra : rb, c = 8 * i + 2 * t + (e & 1);
      d2[r * 128 + c] = s2[4 * i + e];
      if (i < 8) {
        d1[r * 64 + c] = s1[4 * i + e];
        d3[r * 64 + c] = s3[4 * i + e];
      }
    }
}
