/*
 * CSR compaction of the block bitmap [R = BH*Nb rows, Nb columns]:
 *   csr_count: row_ptr[r + 1] = kept blocks of row r
 *   csr_scan:  one work-group turns row_ptr[1..R] into the inclusive prefix sum (row_ptr[0] = 0)
 *   csr_fill:  col_idx[row_ptr[r] ..] = kept columns of row r, ascending
 *   csr_gather: the same from the per-row lists the NABLA selection compacted, with offsets
 *              from the selection's per-work-group totals
 *   csr_flex:  FlexAttention's layout of a finished CSR: kv_num_blocks[r] = the row's length,
 *              kv_indices[r][0 .. Nb) = its columns, then zeros
 * count and fill give each row CSR_TPR work-items, each owning a contiguous chunk of the row,
 * CSR_WG / CSR_TPR rows per work-group; flex gives each row CSR_TPR work-items too, striding.
 */
#ifndef CSR_WG
#define CSR_WG 256
#endif
#ifndef CSR_TPR
#define CSR_TPR 32
#endif
#define CSR_ROWS (CSR_WG / CSR_TPR)

/* Kept blocks in this work-item's chunk of the row. */
NABLA_INLINE int chunk_count(__global const uchar *row, int j0, int j1) {
  int c = 0;
  for (int j = j0; j < j1; j++) c += row[j];
  return c;
}

__kernel __attribute__((reqd_work_group_size(CSR_WG, 1, 1)))
void csr_count(__global const uchar *bitmap, __global int *row_ptr, int Nb, int R) {
  __local int part[CSR_ROWS][CSR_TPR];
  const int lid = get_local_id(0), rr = lid / CSR_TPR, lt = lid % CSR_TPR;
  const int r = get_group_id(0) * CSR_ROWS + rr;
  const int chunk = (Nb + CSR_TPR - 1) / CSR_TPR, j0 = min(Nb, lt * chunk), j1 = min(Nb, j0 + chunk);
  part[rr][lt] = r < R ? chunk_count(bitmap + (size_t)r * Nb, j0, j1) : 0;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lt == 0 && r < R) {
    int c = 0;
    for (int t = 0; t < CSR_TPR; t++) c += part[rr][t];
    row_ptr[r + 1] = c;
  }
}

/* One work-group scans tiles of CSR_WG * SCAN_PT counts: each work-item adds its SCAN_PT
 * consecutive counts, a Hillis-Steele scan in local memory gives the offsets of the
 * work-items, and a carry links the tiles. Sets row_ptr[0] = 0 itself. */
#define SCAN_PT 16
__kernel __attribute__((reqd_work_group_size(CSR_WG, 1, 1)))
void csr_scan(__global int *row_ptr, int R) {
  __local int sums[CSR_WG];
  const int lid = get_local_id(0);
  __global int *x = row_ptr + 1;
  if (lid == 0) row_ptr[0] = 0;
  int carry = 0;
  for (int base = 0; base < R; base += CSR_WG * SCAN_PT) {
    const int i0 = base + lid * SCAN_PT;
    int v[SCAN_PT], run = 0;
    for (int e = 0; e < SCAN_PT; e++) {
      run += i0 + e < R ? x[i0 + e] : 0;
      v[e] = run;
    }
    sums[lid] = run;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int off = 1; off < CSR_WG; off <<= 1) {
      int add = lid >= off ? sums[lid - off] : 0;
      barrier(CLK_LOCAL_MEM_FENCE);
      sums[lid] += add;
      barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int before = carry + (lid ? sums[lid - 1] : 0);
    for (int e = 0; e < SCAN_PT; e++)
      if (i0 + e < R) x[i0 + e] = before + v[e];
    carry += sums[CSR_WG - 1];
    barrier(CLK_LOCAL_MEM_FENCE); /* sums is rewritten by the next tile */
  }
}

__kernel __attribute__((reqd_work_group_size(CSR_WG, 1, 1)))
void csr_fill(__global const uchar *bitmap, __global const int *row_ptr, __global int *col_idx,
              int Nb, int R) {
  __local int part[CSR_ROWS][CSR_TPR];
  const int lid = get_local_id(0), rr = lid / CSR_TPR, lt = lid % CSR_TPR;
  const int r = get_group_id(0) * CSR_ROWS + rr;
  const int chunk = (Nb + CSR_TPR - 1) / CSR_TPR, j0 = min(Nb, lt * chunk), j1 = min(Nb, j0 + chunk);
  __global const uchar *row = bitmap + (size_t)(r < R ? r : 0) * Nb;
  part[rr][lt] = r < R ? chunk_count(row, j0, j1) : 0;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (r >= R) return;
  int pos = row_ptr[r];
  for (int t = 0; t < lt; t++) pos += part[rr][t];
  for (int j = j0; j < j1; j++)
    if (row[j]) col_idx[pos++] = j;
}

/* After the NABLA selection, whose work-group g (rows r0 = g * group_rows ..) wrote each row's
 * length at row_ptr[r + 1], its kept columns compacted at cols[r * ld ..] and the group's
 * total at groups[g + 1]. One work-group per selection group: the group's offset (the sum of
 * the totals before it, which every work-group adds up itself: a few thousand ints from the
 * cache cost less than a scan launch between two kernels), the offsets of its rows, then the
 * copy of their columns to col_idx[row_ptr[r] ..]. Needs group_rows <= CSR_WG. */
__kernel __attribute__((reqd_work_group_size(CSR_WG, 1, 1)))
void csr_gather(__global const int *cols, __global const int *groups, __global int *row_ptr,
                __global int *col_idx, int ld, int R, int group_rows) {
  __local int start[CSR_WG + 1];
  __local int sums[CSR_WG];
  const int lid = get_local_id(0), g = get_group_id(0);
  const int r0 = g * group_rows, nr = min(group_rows, R - r0);
  int before = 0;
  for (int i = lid; i < g; i += CSR_WG) before += groups[i + 1];
  sums[lid] = before;
  for (int n = CSR_WG / 2; n > 0; n >>= 1) {
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < n) sums[lid] += sums[lid + n];
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lid == 0) {
    int s = sums[0];
    for (int i = 0; i < nr; i++) {
      start[i] = s;
      s += row_ptr[r0 + i + 1];
    }
    start[nr] = s;
    if (g == 0) row_ptr[0] = 0;
  }
  /* The lengths are read (by work-item 0); the offsets may replace them. A local fence alone
   * would not order those global reads before the other work-items' writes. */
  barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
  for (int i = lid; i < nr; i += CSR_WG) row_ptr[r0 + i + 1] = start[i + 1];
  const int rr = lid / CSR_TPR, lt = lid % CSR_TPR;
  for (int i = rr; i < nr; i += CSR_ROWS) {
    const int p0 = start[i], n = start[i + 1] - p0;
    __global const int *src = cols + (size_t)(r0 + i) * ld;
    for (int e = lt; e < n; e += CSR_TPR) col_idx[p0 + e] = src[e];
  }
}

/* Every one of a row's Nb outputs is written, the kept columns first: CSR_TPR work-items per row
 * stride over it, so a row's writes (and its reads of col_idx) go out in contiguous runs of
 * CSR_TPR ints, whatever the density. */
__kernel __attribute__((reqd_work_group_size(CSR_WG, 1, 1)))
void csr_flex(__global const int *row_ptr, __global const int *col_idx, __global int *kv_num_blocks,
              __global int *kv_indices, int Nb, int R) {
  const int lid = get_local_id(0), lt = lid % CSR_TPR;
  const int r = get_group_id(0) * CSR_ROWS + lid / CSR_TPR;
  if (r >= R) return;
  const int p0 = row_ptr[r], n = row_ptr[r + 1] - p0;
  __global int *out = kv_indices + (size_t)r * Nb;
  for (int j = lt; j < Nb; j += CSR_TPR) out[j] = j < n ? col_idx[p0 + j] : 0;
  if (lt == 0) kv_num_blocks[r] = n;
}
