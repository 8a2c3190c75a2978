/*
 * Capability probes of the "nvidia-mma" attention variant (src/variants/nvidia_mma.c runs them
 * once per device and keeps the verdict in the disk cache). One work-group of one warp (32 lanes).
 *
 * PROBE_SMEM=0, kernel probe_mma: the instructions the variant cannot do without.
 *   mma.sync m16n8k16 (f16 and bf16 inputs, fp32 accumulators) on A [16][16] and B [16][8]
 *   (16-bit bits, row-major) loaded per the PTX fragment layout; D goes to d16/dbf [16][8].
 *   shfl.sync.bfly: shfl[lane] = value of lane ^ 1 plus 100 x value of lane ^ 2.
 *   cvt.rn.{f16x2,bf16x2}.f32: cvt[lane] = packed (lane + 1/3, -lane / 7) for f16, bf16.
 * PROBE_SMEM=1, kernel probe_smem: cp.async (with a zero-filled chunk) of a [16][16] matrix
 *   into local memory, then ldmatrix.x4 and ldmatrix.x4.trans; each lane writes its 4 + 4
 *   registers, and the zero-filled chunk is read back.
 * The host computes every expected value independently and compares bit for bit.
 */
#ifndef PROBE_SMEM
#define PROBE_SMEM 0
#endif

#if !PROBE_SMEM
NABLA_INLINE void mma_f16(float *c, const uint *a, uint b0, uint b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
               " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
               : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]),
                 "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
NABLA_INLINE void mma_bf16(float *c, const uint *a, uint b0, uint b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
               " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
               : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]),
                 "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

NABLA_INLINE uint pair(__global const ushort *m, int stride, int r, int c) {
  return (uint)m[r * stride + c] | ((uint)m[r * stride + c + 1] << 16);
}
NABLA_INLINE uint pair_col(__global const ushort *m, int stride, int r, int c) {
  return (uint)m[r * stride + c] | ((uint)m[(r + 1) * stride + c] << 16);
}

__kernel __attribute__((reqd_work_group_size(32, 1, 1)))
void probe_mma(__global const ushort *a16, __global const ushort *b16,
               __global const ushort *abf, __global const ushort *bbf, __global float *d16,
               __global float *dbf, __global float *shfl, __global uint *cvt) {
  const int lane = get_local_id(0), g = lane >> 2, t = lane & 3;
  uint a[4], b0, b1;
  float c[4];
  for (int pass = 0; pass < 2; pass++) {
    __global const ushort *am = pass ? abf : a16, *bm = pass ? bbf : b16;
    __global float *dm = pass ? dbf : d16;
    a[0] = pair(am, 16, g, 2 * t);
    a[1] = pair(am, 16, g + 8, 2 * t);
    a[2] = pair(am, 16, g, 2 * t + 8);
    a[3] = pair(am, 16, g + 8, 2 * t + 8);
    b0 = pair_col(bm, 8, 2 * t, g);
    b1 = pair_col(bm, 8, 2 * t + 8, g);
    c[0] = c[1] = c[2] = c[3] = 0.5f;
    if (pass) mma_bf16(c, a, b0, b1);
    else mma_f16(c, a, b0, b1);
    dm[g * 8 + 2 * t] = c[0];
    dm[g * 8 + 2 * t + 1] = c[1];
    dm[(g + 8) * 8 + 2 * t] = c[2];
    dm[(g + 8) * 8 + 2 * t + 1] = c[3];
  }
  float x = (float)lane, y1, y2;
  asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(y1) : "f"(x), "r"(1));
  asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(y2) : "f"(x), "r"(2));
  shfl[lane] = y1 + 100.0f * y2;
  float lo = (float)lane + 1.0f / 3.0f, hi = -(float)lane / 7.0f;
  uint r16, rbf;
  asm volatile("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r16) : "f"(hi), "f"(lo));
  asm volatile("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(rbf) : "f"(hi), "f"(lo));
  cvt[2 * lane] = r16;
  cvt[2 * lane + 1] = rbf;
}

#else

#define PSTRIDE 24 /* 16-bit words per local row: 48 bytes, 16-byte aligned */

__kernel __attribute__((reqd_work_group_size(32, 1, 1)))
void probe_smem(__global const uint4 *m, __global uint *out) {
  __local uint4 buf[17 * PSTRIDE / 8];
  const int lane = get_local_id(0);
  /* Rows 0..15: two 16-byte chunks each (lanes 0..31); row 16, chunk 0: zero-filled. */
  __local uint4 *dst = buf + (lane >> 1) * (PSTRIDE / 8) + (lane & 1);
  uint sa = (uint)(size_t)dst;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(sa), "l"((ulong)(size_t)(m + lane)), "r"(16u) : "memory");
  if (lane == 0) {
    uint sz = (uint)(size_t)(buf + 16 * (PSTRIDE / 8));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :: "r"(sz), "l"((ulong)(size_t)m), "r"(0u) : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  barrier(CLK_LOCAL_MEM_FENCE);
  /* Matrix i = lane >> 3 covers rows 8 * (i & 1).. and columns 8 * (i >> 1)..; lane gives
   * the address of its row lane & 7. */
  int i = lane >> 3;
  __local const ushort *row =
      (__local const ushort *)buf + (8 * (i & 1) + (lane & 7)) * PSTRIDE + 8 * (i >> 1);
  uint addr = (uint)(size_t)row, r[8];
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[4]), "=r"(r[5]), "=r"(r[6]), "=r"(r[7]) : "r"(addr) : "memory");
  for (int j = 0; j < 8; j++) out[lane * 8 + j] = r[j];
  if (lane < 4) out[256 + lane] = ((__local const uint *)(buf + 16 * (PSTRIDE / 8)))[lane];
}
#endif
