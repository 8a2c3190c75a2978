/*
 * AMD matrix-core primitives shared by cl/attention_amd.cl and cl/probe_amd.cl: the host
 * prepends this file, after cl/common.cl, to those stage files.
 *
 * One operation, D = A B + C on 16 x 16 x 16 tiles, 16-bit inputs (AMD_IN: 1 fp16, 2 bf16),
 * fp32 accumulators, on either matrix core:
 *   AMD_MATRIX 1: CDNA's MFMA (gfx90a, gfx94x), 64-wide waves,
 *                 v_mfma_f32_16x16x16f16 / v_mfma_f32_16x16x16bf16_1k (gfx94x: ..._bf16);
 *   AMD_MATRIX 2: RDNA3's WMMA (gfx11), 32-wide waves,
 *                 v_wmma_f32_16x16x16_f16 / v_wmma_f32_16x16x16_bf16.
 *
 * Fragment layouts, lane l of the wave (the CDNA3 ISA guide's and the RDNA3 ISA guide's; the
 * probe of src/variants/amd.c checks them element by element on the device):
 *   MFMA: A[i][k]: i = l % 16, k = 4 (l / 16) + e, e < 4    (AMD_NA = 4 values per lane)
 *         B[k][j]: j = l % 16, k = 4 (l / 16) + e, e < 4
 *         C[i][j]: j = l % 16, i = 4 (l / 16) + r, r < 4    (AMD_NC = 4)
 *   WMMA: A[i][k]: i = l % 16, k = e, e < 16                 (AMD_NA = 16; lanes 16-31 repeat 0-15)
 *         B[k][j]: j = l % 16, k = e, e < 16
 *         C[i][j]: j = l % 16, i = 2 r + l / 16, r < 8       (AMD_NC = 8)
 * So in both a lane's A values are consecutive columns of one row, its B values consecutive rows
 * of one column, and its accumulators one column: amd_a_k0, amd_acc_row say where.
 *
 * AMD_EMULATE: the matrix instruction is computed in plain OpenCL C through a per-wave local
 * scratch (AMD_EMU_ARGS), with barriers, so the fragment logic of a kernel runs, slowly, on any
 * OpenCL device; every wave of a work-group must then take the same path. Waves are then the
 * runs of AMD_WAVE consecutive work-items, as on the hardware.
 */
#ifndef AMD_MATRIX
#define AMD_MATRIX 1
#endif
#ifndef AMD_IN
#define AMD_IN NABLA_DTYPE
#endif
#if AMD_IN != 1 && AMD_IN != 2
#error "matrix inputs are fp16 (AMD_IN=1) or bf16 (AMD_IN=2)"
#endif

#if AMD_MATRIX == 1
#define AMD_WAVE 64
#define AMD_NA 4
#define AMD_NC 4
typedef ushort4 amd_frag;  /* the 16-bit values of an A or B fragment, as raw bits */
typedef float4 amd_acc;
#elif AMD_MATRIX == 2
#define AMD_WAVE 32
#define AMD_NA 16
#define AMD_NC 8
typedef ushort16 amd_frag;
typedef float8 amd_acc;
#else
#error "AMD_MATRIX is 1 (MFMA) or 2 (WMMA)"
#endif

/* Where lane l's fragment values sit: A's first column (B's first row) and accumulator r's row. */
NABLA_INLINE int amd_a_k0(int l) { return AMD_MATRIX == 1 ? 4 * (l >> 4) : 0; }
NABLA_INLINE int amd_acc_row(int l, int r) { return AMD_MATRIX == 1 ? 4 * (l >> 4) + r : 2 * r + (l >> 4); }

/* Value e of a fragment / accumulator, by index (the vector types have no run-time indexing). */
NABLA_INLINE ushort amd_frag_get(amd_frag f, int e) {
  __private ushort v[AMD_NA];
  *(__private amd_frag *)v = f;
  return v[e];
}
NABLA_INLINE float amd_acc_get(amd_acc c, int r) {
  __private float v[AMD_NC];
  *(__private amd_acc *)v = c;
  return v[r];
}

/* The float value of a 16-bit input. */
NABLA_INLINE float amd_in_float(ushort bits) {
#if AMD_IN == 1
  __private ushort h = bits;
  return vload_half(0, (__private const half *)&h);
#else
  return as_float((uint)bits << 16);
#endif
}

/* A float rounded to the 16-bit input type (round to nearest even). */
NABLA_INLINE ushort amd_in_bits(float x) {
#if AMD_IN == 1
  __private ushort h;
  vstore_half_rte(x, 0, (__private half *)&h);
  return h;
#else
  return nabla_to_bf16(x);
#endif
}

#ifdef AMD_EMULATE
/* Per-wave scratch of the emulation: A and B as 16 x 16 floats. */
#define AMD_EMU_FLOATS 512
#define AMD_EMU_ARGS , __local float *emu, int lane
#define AMD_EMU_PASS , emu, lane

NABLA_INLINE amd_acc amd_mma(amd_frag a, amd_frag b, amd_acc c AMD_EMU_ARGS) {
  const int col = lane & 15, k0 = amd_a_k0(lane);
  barrier(CLK_LOCAL_MEM_FENCE); /* the previous call's reads are done */
  for (int e = 0; e < AMD_NA; e++) {
    emu[col * 16 + k0 + e] = amd_in_float(amd_frag_get(a, e));       /* A[i = col][k] */
    emu[256 + (k0 + e) * 16 + col] = amd_in_float(amd_frag_get(b, e)); /* B[k][j = col] */
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  __private float d[AMD_NC];
  for (int r = 0; r < AMD_NC; r++) {
    const int row = amd_acc_row(lane, r);
    float s = amd_acc_get(c, r);
    for (int k = 0; k < 16; k++) s = fma(emu[row * 16 + k], emu[256 + k * 16 + col], s);
    d[r] = s;
  }
  return *(__private amd_acc *)d;
}
#if AMD_MATRIX == 2
/* The maximum and the sum of x over lanes 16 (l / 16) .. 16 (l / 16) + 15: those holding
 * one row of an accumulator. */
NABLA_INLINE float amd_row_max(float x AMD_EMU_ARGS) {
  barrier(CLK_LOCAL_MEM_FENCE);
  emu[lane] = x;
  barrier(CLK_LOCAL_MEM_FENCE);
  float y = emu[lane & 16];
  for (int j = 1; j < 16; j++) y = fmax(y, emu[(lane & 16) + j]);
  return y;
}
NABLA_INLINE float amd_row_sum(float x AMD_EMU_ARGS) {
  barrier(CLK_LOCAL_MEM_FENCE);
  emu[lane] = x;
  barrier(CLK_LOCAL_MEM_FENCE);
  float y = emu[lane & 16];
  for (int j = 1; j < 16; j++) y += emu[(lane & 16) + j];
  return y;
}
#endif
#else
#define AMD_EMU_ARGS
#define AMD_EMU_PASS
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#if AMD_MATRIX == 1
typedef half amd_half4 __attribute__((ext_vector_type(4)));
typedef short amd_short4 __attribute__((ext_vector_type(4)));
NABLA_INLINE amd_acc amd_mma(amd_frag a, amd_frag b, amd_acc c) {
#if AMD_IN == 1
  return __builtin_amdgcn_mfma_f32_16x16x16f16(__builtin_bit_cast(amd_half4, a), __builtin_bit_cast(amd_half4, b), c,
                                               0, 0, 0);
#else
  return __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(__builtin_bit_cast(amd_short4, a), __builtin_bit_cast(amd_short4, b),
                                                   c, 0, 0, 0);
#endif
}
#else
typedef half amd_half16 __attribute__((ext_vector_type(16)));
typedef short amd_short16 __attribute__((ext_vector_type(16)));
NABLA_INLINE amd_acc amd_mma(amd_frag a, amd_frag b, amd_acc c) {
#if AMD_IN == 1
  return __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(__builtin_bit_cast(amd_half16, a), __builtin_bit_cast(amd_half16, b), c);
#else
  return __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32(__builtin_bit_cast(amd_short16, a),
                                                     __builtin_bit_cast(amd_short16, b), c);
#endif
}
/* Butterflies over the 16 lanes of a DPP row (row_xmask, gfx10+: lane l reads lane l ^ n). */
#define AMD_XMASK(x, n) as_float(__builtin_amdgcn_update_dpp(0, as_int(x), 0x160 + (n), 0xf, 0xf, false))
NABLA_INLINE float amd_row_max(float x) {
  x = fmax(x, AMD_XMASK(x, 1));
  x = fmax(x, AMD_XMASK(x, 2));
  x = fmax(x, AMD_XMASK(x, 4));
  return fmax(x, AMD_XMASK(x, 8));
}
NABLA_INLINE float amd_row_sum(float x) {
  x += AMD_XMASK(x, 1);
  x += AMD_XMASK(x, 2);
  x += AMD_XMASK(x, 4);
  return x + AMD_XMASK(x, 8);
}
#endif
#endif
