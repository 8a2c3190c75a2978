/*
 * CSR compaction of the block bitmap [R = BH*Nb rows, Nb columns]:
 *   csr_count: row_ptr[r + 1] = kept blocks of row r
 *   csr_scan:  one work-group turns row_ptr[1..R] into the inclusive prefix sum (row_ptr[0] = 0)
 *   csr_fill:  col_idx[row_ptr[r] ..] = kept columns of row r, ascending
 * count and fill give each row CSR_TPR work-items, each owning a contiguous chunk of the row,
 * CSR_WG / CSR_TPR rows per work-group.
 */
#ifndef CSR_WG
#define CSR_WG 256
#endif
#ifndef CSR_TPR
#define CSR_TPR 32
#endif
#define CSR_ROWS (CSR_WG / CSR_TPR)

/* Kept blocks in this work-item's chunk of the row. */
inline int chunk_count(__global const uchar *row, int j0, int j1) {
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
  if (get_global_id(0) == 0) row_ptr[0] = 0;
  part[rr][lt] = r < R ? chunk_count(bitmap + (size_t)r * Nb, j0, j1) : 0;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lt == 0 && r < R) {
    int c = 0;
    for (int t = 0; t < CSR_TPR; t++) c += part[rr][t];
    row_ptr[r + 1] = c;
  }
}

__kernel __attribute__((reqd_work_group_size(CSR_WG, 1, 1)))
void csr_scan(__global int *row_ptr, int R) {
  __local int part[CSR_WG];
  int lid = get_local_id(0);
  int chunk = (R + CSR_WG - 1) / CSR_WG;
  int r0 = 1 + lid * chunk, r1 = min(R + 1, r0 + chunk);
  int s = 0;
  for (int r = r0; r < r1; r++) s += row_ptr[r];
  part[lid] = s;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (lid == 0) {
    int run = 0;
    for (int t = 0; t < CSR_WG; t++) {
      int v = part[t];
      part[t] = run;
      run += v;
    }
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  int run = part[lid];
  for (int r = r0; r < r1; r++) {
    run += row_ptr[r];
    row_ptr[r] = run;
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
