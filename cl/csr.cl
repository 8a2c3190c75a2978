/*
 * CSR compaction of the block bitmap [R = BH*Nb rows, Nb columns]:
 *   csr_count: row_ptr[r + 1] = kept blocks of row r
 *   csr_scan:  one work-group turns row_ptr[1..R] into the inclusive prefix sum (row_ptr[0] = 0)
 *   csr_fill:  col_idx[row_ptr[r] ..] = kept columns of row r, ascending
 */
#ifndef CSR_WG
#define CSR_WG 256
#endif

__kernel void csr_count(__global const uchar *bitmap, __global int *row_ptr, int Nb, int R) {
  int r = get_global_id(0);
  if (r == 0) row_ptr[0] = 0;
  if (r >= R) return;
  __global const uchar *row = bitmap + (size_t)r * Nb;
  int c = 0;
  for (int j = 0; j < Nb; j++) c += row[j];
  row_ptr[r + 1] = c;
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

__kernel void csr_fill(__global const uchar *bitmap, __global const int *row_ptr,
                       __global int *col_idx, int Nb, int R) {
  int r = get_global_id(0);
  if (r >= R) return;
  __global const uchar *row = bitmap + (size_t)r * Nb;
  int pos = row_ptr[r];
  for (int j = 0; j < Nb; j++)
    if (row[j]) col_idx[pos++] = j;
}
