/*
 * Sliding-tile attention window, ORed into the block bitmap [BH, Nb, Nb]. Blocks form a
 * T x Hb x Wb grid; block (t1,h1,w1) sees (t2,h2,w2) iff |t1-t2| <= rt, |h1-h2| <= rh and
 * |w1-w2| <= rw (radii = floor(window/2)); see nabla_sta_keep in common.cl. Head-independent.
 * Work-item (j, i). The NABLA selection applies the same window itself (select.cl), so this
 * kernel serves pure STA masks.
 */
__kernel void sta_or(__global uchar *bitmap, int Nb, int BH, int Hb, int Wb, int rt, int rh,
                     int rw) {
  int j = get_global_id(0), i = get_global_id(1);
  if (i >= Nb || j >= Nb || !nabla_sta_keep(i, j, Hb, Wb, rt, rh, rw)) return;
  size_t cell = (size_t)i * Nb + j, stride = (size_t)Nb * Nb;
  for (int bh = 0; bh < BH; bh++) bitmap[bh * stride + cell] = 1;
}
