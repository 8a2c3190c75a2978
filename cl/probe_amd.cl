/*
 * Probe of the AMD matrix cores (cl/amd_matrix.cl), run once per device by src/variants/amd.c: one
 * wave computes D = A B + C on one 16 x 16 x 16 tile, every lane loading its fragments by the
 * layouts the attention kernel assumes and writing each accumulator where that layout says it
 * belongs. The host fills A, B and C with small integers (exact in fp16, bf16 and fp32, distinct
 * at every position) and compares D element by element, so a layout that differs on the device
 * (lane order, accumulator rows) shows as a wrong element, not a build error.
 * a, b: 16 x 16 row-major 16-bit words of the input type; c, d: 16 x 16 row-major floats.
 */
__kernel __attribute__((reqd_work_group_size(AMD_WAVE, 1, 1)))
void probe_amd(__global const ushort *a, __global const ushort *b, __global const float *c, __global float *d) {
#ifdef AMD_EMULATE
  __local float emu[AMD_EMU_FLOATS];
#endif
  const int lane = get_local_id(0), col = lane & 15, k0 = amd_a_k0(lane);
  __private ushort fa[AMD_NA], fb[AMD_NA];
  __private float fc[AMD_NC];
  for (int e = 0; e < AMD_NA; e++) {
    fa[e] = a[col * 16 + k0 + e];   /* A[i = lane % 16][k] */
    fb[e] = b[(k0 + e) * 16 + col]; /* B[k][j = lane % 16] */
  }
  for (int r = 0; r < AMD_NC; r++) fc[r] = c[amd_acc_row(lane, r) * 16 + col];
  amd_acc acc = amd_mma(*(__private amd_frag *)fa, *(__private amd_frag *)fb, *(__private amd_acc *)fc AMD_EMU_PASS);
  for (int r = 0; r < AMD_NC; r++) d[amd_acc_row(lane, r) * 16 + col] = amd_acc_get(acc, r);
}
