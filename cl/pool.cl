/*
 * Block mean-pooling: out[bh, i, d] = mean of x[bh, t, d] over the tokens t of block i
 * (block_start[i] .. block_start[i+1]; ragged blocks divide by their own count). fp32 result.
 * Pooling reads all of Q and K once, so it is bandwidth-bound: every work-item loads 16 bytes
 * per token (4 fp32 or 8 16-bit values; D is a multiple of 8) and neighbouring work-items read
 * neighbouring vectors of the same token row. Work-item (d / PV, i, bh).
 */
#if NABLA_DTYPE == 0
#define PV 4
#define floatv float4
#define VLOAD(p, i) vload4((i) / 4, (p))
#define VSTORE(v, p, i) vstore4((v), (i) / 4, (p))
#elif NABLA_DTYPE == 1
#define PV 8
#define floatv float8
#define VLOAD(p, i) vload_half8((i) / 8, (p))
#define VSTORE(v, p, i) vstore8((v), (i) / 8, (p))
#else
#define PV 8
#define floatv float8
#define VLOAD(p, i) as_float8(convert_uint8(vload8((i) / 8, (p))) << 16)
#define VSTORE(v, p, i) vstore8((v), (i) / 8, (p))
#endif

__kernel void pool(__global const STORE_T *x, __global float *out,
                   __global const int *block_start, int S, int D, int Nb) {
  int d = get_global_id(0) * PV;
  int i = get_global_id(1);
  size_t bh = get_global_id(2);
  if (d >= D || i >= Nb) return;
  int t0 = block_start[i], t1 = block_start[i + 1];
  size_t base = bh * (size_t)S * D + d;
  floatv acc = (floatv)(0.0f);
  for (int t = t0; t < t1; t++) acc += VLOAD(x, base + (size_t)t * D);
  VSTORE(acc / (float)(t1 - t0), out, (bh * Nb + i) * D + d);
}
