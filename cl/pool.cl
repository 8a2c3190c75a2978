/*
 * Block mean-pooling: out[bh, i, d] = mean of x[bh, t, d] over the tokens t of block i
 * (block_start[i] .. block_start[i+1]; ragged blocks divide by their own count). fp32 result.
 * Work-item (d, i, bh); neighbouring work-items read neighbouring d, so loads coalesce.
 */
__kernel void pool(__global const STORE_T *x, __global float *out,
                   __global const int *block_start, int S, int D, int Nb) {
  int d = get_global_id(0);
  int i = get_global_id(1);
  size_t bh = get_global_id(2);
  if (d >= D || i >= Nb) return;
  int t0 = block_start[i], t1 = block_start[i + 1];
  size_t base = bh * (size_t)S * D + d;
  float acc = 0.0f;
  for (int t = t0; t < t1; t++) acc += LOAD(x, base + (size_t)t * D);
  out[(bh * Nb + i) * D + d] = acc / (float)(t1 - t0);
}
