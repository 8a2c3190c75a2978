/*
 * Sliding-tile attention window, ORed into the block bitmap [BH, Nb, Nb]. Blocks form a
 * T x Hb x Wb grid; block (t1,h1,w1) sees (t2,h2,w2) iff |t1-t2| <= rt, |h1-h2| <= rh and
 * |w1-w2| <= rw (radii = floor(window/2)). Head-independent. Work-item (j, i).
 */
__kernel void sta_or(__global uchar *bitmap, int Nb, int BH, int Hb, int Wb, int rt, int rh,
                     int rw) {
  int j = get_global_id(0), i = get_global_id(1);
  if (i >= Nb || j >= Nb) return;
  int plane = Hb * Wb;
  int ti = i / plane, hi = (i % plane) / Wb, wi = i % Wb;
  int tj = j / plane, hj = (j % plane) / Wb, wj = j % Wb;
  if (abs(ti - tj) > rt || abs(hi - hj) > rh || abs(wi - wj) > rw) return;
  size_t cell = (size_t)i * Nb + j, stride = (size_t)Nb * Nb;
  for (int bh = 0; bh < BH; bh++) bitmap[bh * stride + cell] = 1;
}
