/*
 * Raster <-> tile token order of a video tensor [BH, S, D]. Work-item (d, n, bh) moves one
 * element of raster token n = (t*Ht + h)*Wt + w. Its tile position is
 * block_start[(t*Hb + h/8)*Wb + w/8] + (h%8)*tw + (w%8), tw = width of that (maybe ragged) tile.
 * The element type only matters by size: ELEM is uint (4 bytes) or ushort (2 bytes).
 */
#ifndef ELEM
#define ELEM uint
#endif

__kernel void reorder(__global const ELEM *src, __global ELEM *dst,
                      __global const int *block_start, int S, int D, int Ht, int Wt, int Hb,
                      int Wb, int to_tile) {
  int d = get_global_id(0);
  int n = get_global_id(1);
  size_t bh = get_global_id(2);
  if (d >= D || n >= S) return;
  int plane = Ht * Wt;
  int t = n / plane, rem = n - t * plane;
  int h = rem / Wt, w = rem - h * Wt;
  int wb = w >> 3;
  int tw = min(8, Wt - 8 * wb);
  int f = block_start[(t * Hb + (h >> 3)) * Wb + wb] + (h & 7) * tw + (w & 7);
  size_t base = bh * (size_t)S * D;
  size_t raster = base + (size_t)n * D + d, tile = base + (size_t)f * D + d;
  if (to_tile)
    dst[tile] = src[raster];
  else
    dst[raster] = src[tile];
}
