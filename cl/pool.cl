/*
 * Block mean-pooling of Q and K in one launch: out[z, i, d] = mean of x[bh, t, d] over the
 * tokens t of block i (block_start[i] .. block_start[i+1]; ragged blocks divide by their own
 * count), where z < BH pools q (bh = z) and z >= BH pools k (bh = z - BH). fp32 result.
 * Pooling reads all of Q and K once, so it is bandwidth-bound. A work-group (NV, TS) pools one
 * block: work-item (v, ts) loads the 16-byte vector v (4 fp32 or 8 16-bit values; D is a
 * multiple of 8; one 16-byte load, see nabla_fetch8) of tokens ts, ts + TS, ..., so a token
 * row is read by neighbouring work-items and every work-item has all its loads in flight at
 * once; the TS partial sums meet in local memory.
 *
 * POOL_UNIT=1: the inputs are already block means (fp32 [B H][Nb][D], nabla_mask_build_from_means):
 * block i is the one row i, S = Nb, and block_start is not read; the pass only converts (and
 * splits) them as the map wants.
 *
 * POOL_SPLIT=1 (for the tensor-core map, cl/map_mma.cl): each pooled row is written as a
 * power-of-two scale s and two fp16 vectors hi, lo with x ~= s (hi + lo): row r's 4 D bytes
 * hold hi[0..D) then lo[0..D) (Q rows with their pairs of values reordered for the map's
 * loads, see below), and the scales follow all 2 BH Nb rows as floats.
 */
#if NABLA_DTYPE == 0
#define PV 4
#define floatv float4
typedef float4 pool_raw;
#define POOL_FETCH(p, i, al) ((al) ? ((__global const float4 *)(p))[(i) / 4] : vload4((i) / 4, (p)))
#define POOL_UNPACK(r) (r)
#define POOL_RAW_ZERO ((float4)0.0f)
#define VSTORE(v, p, i) vstore4((v), (i) / 4, (p))
#define VSTORE_HALF(v, i, p) vstore_half4_rte((v), (i), (p))
#define VLOAD_HALF(i, p) vload_half4((i), (p))
#define POOL_VMAX(a) fmax(fmax((a).x, (a).y), fmax((a).z, (a).w))
#else /* fp16, bf16: 8 values per 16 bytes */
#define PV 8
#define floatv float8
typedef nabla_raw8 pool_raw;
#define POOL_FETCH(p, i, al) nabla_fetch8((p), (i), (al))
#define POOL_UNPACK(r) nabla_unpack8(r)
#define POOL_RAW_ZERO NABLA_RAW_ZERO
#define VSTORE(v, p, i) vstore8((v), (i) / 8, (p))
#define VSTORE_HALF(v, i, p) vstore_half8_rte((v), (i), (p))
#define VLOAD_HALF(i, p) vload_half8((i), (p))
#define POOL_VMAX(a) fmax(fmax(fmax((a).s0, (a).s1), fmax((a).s2, (a).s3)), fmax(fmax((a).s4, (a).s5), fmax((a).s6, (a).s7)))
#endif
#define POOL_WG 256 /* NV * TS <= POOL_WG, chosen by the host */
#ifndef POOL_SPLIT
#define POOL_SPLIT 0
#endif

#ifndef POOL_UNIT
#define POOL_UNIT 0
#endif

#ifndef POOL_TS
#define POOL_TS 16 /* token slices: get_local_size(1), set by the host */
#endif
/* Loads per work-item that cover a block of up to 64 tokens; longer blocks take a second loop. */
#define POOL_LPB ((64 + POOL_TS - 1) / POOL_TS)

__kernel void pool(__global const STORE_T *q, __global const STORE_T *k, __global float *out,
                   __global const int *block_start, int S, int D, int Nb, int BH) {
  __local floatv part[POOL_WG];
  const int v = get_local_id(0), ts = get_local_id(1), nv = get_local_size(0);
  const int i = get_group_id(1), z = get_group_id(2);
  const int is_k = z >= BH;
  __global const STORE_T *x = is_k ? k : q;
  const int t0 = POOL_UNIT ? i : block_start[i], t1 = POOL_UNIT ? i + 1 : block_start[i + 1];
  const size_t base = (size_t)(z - (is_k ? BH : 0)) * S * D + (size_t)v * PV;
  const int al = ((size_t)x & 15) == 0; /* whole 16-byte loads (see nabla_fetch8) */
  /* All POOL_LPB loads are issued before any is summed, whatever the block's length (loads
   * past its end are predicated off). Measured on the H100 (Wan 14B shape): 0.55 ms with a
   * loop of four loads a pass, 0.48 ms in this straight-line form. */
  pool_raw r[POOL_LPB];
#pragma unroll
  for (int l = 0; l < POOL_LPB; l++) {
    const int t = t0 + ts + l * POOL_TS;
    r[l] = t < t1 ? POOL_FETCH(x, base + (size_t)t * D, al) : POOL_RAW_ZERO;
  }
  floatv acc = (floatv)(0.0f);
#pragma unroll
  for (int l = 0; l < POOL_LPB; l++) acc += POOL_UNPACK(r[l]);
  for (int t = t0 + ts + POOL_LPB * POOL_TS; t < t1; t += POOL_TS) acc += POOL_UNPACK(POOL_FETCH(x, base + (size_t)t * D, al));
  part[ts * nv + v] = acc;
  barrier(CLK_LOCAL_MEM_FENCE);
  const size_t row = (size_t)z * Nb + i;
  floatv mean = (floatv)(0.0f); /* the row's mean, in the work-items ts == 0 */
  if (ts == 0) {
    for (int s = 1; s < POOL_TS; s++) acc += part[s * nv + v];
    mean = acc / (float)(t1 - t0);
  }
#if POOL_SPLIT
  __local float row_max[POOL_WG]; /* one per vector of the row: nv <= POOL_WG */
  if (ts == 0) row_max[v] = POOL_VMAX(fabs(mean));
  barrier(CLK_LOCAL_MEM_FENCE);
  if (ts != 0) return;
  /* x = s (hi + lo): s = 2^(e - 15) puts the row's largest |x| / s in [2^14, 2^15), inside
   * fp16's range, so hi (x / s rounded to fp16) and lo (the exact remainder, rounded again)
   * carry about 22 significant bits of every value relative to the row's largest. Rows of
   * zeros, infinities or NaN keep s = 1 (a non-finite value then reaches the map). */
  float m = 0.0f;
  for (int u = 0; u < nv; u++) m = fmax(m, row_max[u]);
  /* shift = e - 15 with m = f 2^e, f in [0.5, 1), from the exponent bits; at least -126 so
   * that 2^shift and 2^-shift are normal floats (rows below 2^-126 lose precision, not
   * range). Multiplying by 2^-shift is exact. */
  const int shift = (m > 0.0f && isfinite(m)) ? max((int)((as_uint(m) >> 23) & 0xffu) - 141, -126) : 0;
  const floatv xs = mean * as_float((uint)(127 - shift) << 23);
  ushort hb[PV], lb[PV];
  VSTORE_HALF(xs, 0, (__private half *)hb);
  const floatv hi = VLOAD_HALF(0, (__private const half *)hb);
  VSTORE_HALF(xs - hi, 0, (__private half *)lb);
  /* Pair of halves w goes to pair p. K rows keep their order (p = w); Q rows take the order in
   * which cl/map_mma.cl loads its A fragments: w = 8 s + 4 h + t (k-step s of 16 values, h its
   * upper 8, lane t) goes to 8 SP (s / SP) + 2 SP t + 2 (s % SP) + h, SP = 2 when D is a
   * multiple of 32, else 1, so a lane finds the words of SP k-steps side by side. */
  __global uint *dst = (__global uint *)out + row * D; /* a pair of halves a word */
  const int sp = D % 32 == 0 ? 2 : 1;
  for (int e = 0; e < PV; e += 2) {
    const int w = (v * PV + e) / 2, s = w / 8, h = (w / 4) & 1, t = w & 3;
    const int p = is_k ? w : 8 * sp * (s / sp) + 2 * sp * t + 2 * (s % sp) + h;
    dst[p] = as_uint((ushort2)(hb[e], hb[e + 1]));
    dst[D / 2 + p] = as_uint((ushort2)(lb[e], lb[e + 1]));
  }
  if (v == 0) ((__global float *)out)[2 * (size_t)BH * Nb * D + row] = as_float((uint)(127 + shift) << 23);
#else
  if (ts == 0) VSTORE(mean, out, row * D + (size_t)v * PV);
#endif
}
