/*
 * Block mean-pooling of Q and K in one launch: out[z, i, d] = mean of x[bh, t, d] over the
 * tokens t of block i (block_start[i] .. block_start[i+1]; ragged blocks divide by their own
 * count), where z < BH pools q (bh = z) and z >= BH pools k (bh = z - BH). fp32 result.
 * Pooling reads all of Q and K once, so it is bandwidth-bound. A work-group (NV, TS) pools one
 * block: work-item (v, ts) loads the 16-byte vector v (4 fp32 or 8 16-bit values; D is a
 * multiple of 8) of tokens ts, ts + TS, ..., so a token row is read by neighbouring
 * work-items and every work-item has several loads in flight; the TS partial sums meet in
 * local memory.
 */
#if NABLA_DTYPE == 0
#define PV 4
#define floatv float4
#define VLOAD(p, i) vload4((i) / 4, (p))
#define VSTORE(v, p, i) vstore4((v), (i) / 4, (p))
#else /* fp16, bf16: 8 values per 16 bytes */
#define PV 8
#define floatv float8
#define VLOAD(p, i) LOAD8((p), (i))
#define VSTORE(v, p, i) vstore8((v), (i) / 8, (p))
#endif
#define POOL_WG 256 /* NV * TS <= POOL_WG, chosen by the host */

__kernel void pool(__global const STORE_T *q, __global const STORE_T *k, __global float *out,
                   __global const int *block_start, int S, int D, int Nb, int BH) {
  __local floatv part[POOL_WG];
  const int v = get_local_id(0), ts = get_local_id(1);
  const int nv = get_local_size(0), nts = get_local_size(1);
  const int i = get_group_id(1), z = get_group_id(2);
  const int is_k = z >= BH;
  __global const STORE_T *x = is_k ? k : q;
  const int t0 = block_start[i], t1 = block_start[i + 1];
  const size_t base = (size_t)(z - (is_k ? BH : 0)) * S * D + (size_t)v * PV;
  floatv acc = (floatv)(0.0f);
  int t = t0 + ts;
  for (; t + 3 * nts < t1; t += 4 * nts) {
    floatv x0 = VLOAD(x, base + (size_t)t * D), x1 = VLOAD(x, base + (size_t)(t + nts) * D);
    floatv x2 = VLOAD(x, base + (size_t)(t + 2 * nts) * D), x3 = VLOAD(x, base + (size_t)(t + 3 * nts) * D);
    acc += (x0 + x1) + (x2 + x3);
  }
  for (; t < t1; t += nts) acc += VLOAD(x, base + (size_t)t * D);
  part[ts * nv + v] = acc;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (ts != 0) return;
  for (int s = 1; s < nts; s++) acc += part[s * nv + v];
  VSTORE(acc / (float)(t1 - t0), out, ((size_t)z * Nb + i) * D + (size_t)v * PV);
}
