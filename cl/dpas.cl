/*
 * Prelude of the Intel matrix-engine stages (cl/attention_dpas.cl, cl/probe_dpas.cl): the
 * instruction of cl_intel_subgroup_matrix_multiply_accumulate for fp16/bf16 (M = 8 rows, K = 16,
 * N = DPAS_SG columns), real or emulated, and the loaders that put Q, K, V and P into its
 * operand layouts. The probe runs these same loaders, so what it checks on a device is what
 * the attention kernel assumes.
 *
 * Operand layouts (the extension's; lane = sub-group local id), row i < DPAS_M:
 *   DPAS_SG 8 (Xe-HPG, dg2):  a: int per row, lane j holds A[i][2j] (low 16 bits), A[i][2j+1]
 *   DPAS_SG 16 (Xe-HPC, Xe2): a: short per row, lane j holds A[i][j]
 *   b (both): int8, lane n holds column n: b.sk = B[2k][n] (low half), B[2k+1][n]
 *   acc, result: float8 (float4 at M = 4), lane n holds column n, component i row i.
 * Registers are passed as uint arrays (a[DPAS_M], b[8]; a 16-bit A value in the low half).
 *
 * DPAS_MODE: 0 the hardware instruction (Intel GPUs: dg2 with DPAS_SG 8, pvc/Xe2 with 16);
 * 1 emulated with sub-group broadcasts (devices with cl_intel_subgroups and the required
 * sub-group size: Intel's CPU runtime); 2 emulated, the sub-group itself emulated through
 * local memory (devices without sub-groups: PoCL). The emulations read every operand where the
 * layout puts it, so they check the loaders' reading of the layouts on any device.
 */
#ifndef DPAS_SG
#define DPAS_SG 8 /* sub-group size: 8 (dg2) or 16 (pvc, Xe2) */
#endif
#ifndef DPAS_MODE
#define DPAS_MODE 0
#endif
#ifndef DPAS_M
/* Rows of a matrix tile: 8, or 4 on SIMD8 (dg2), whose 128 registers of 8 lanes cannot hold an
 * 8-row fp32 output tile of HEAD_DIM 128 (128 registers alone); ocloc: spills at 8, not at 4. */
#define DPAS_M (DPAS_SG == 8 ? 4 : 8)
#endif
#if DPAS_M != 8 && DPAS_M != 4
#error "DPAS_M must be 8 or 4"
#endif
#if NABLA_DTYPE != 1 && NABLA_DTYPE != 2
#error "the matrix engine takes fp16 or bf16 storage"
#endif
#if DPAS_SG != 8 && DPAS_SG != 16
#error "DPAS_SG must be 8 or 16"
#endif

/* Small loops are unrolled for the hardware, where their arrays must become registers; the
 * emulations leave it to the compiler (unrolled, the CPU compilers took 25 s per build). */
#if DPAS_MODE == 0
#define DPAS_UNROLL _Pragma("unroll")
#else
#define DPAS_UNROLL
#endif

#if DPAS_MODE == 2
#define SG_LANE ((int)get_local_id(0) % DPAS_SG)
#define SG_ATTR
#else
#define SG_LANE ((int)get_sub_group_local_id())
#define SG_ATTR __attribute__((intel_reqd_sub_group_size(DPAS_SG)))
#endif

/* 16-bit storage values <-> fp32 (round to nearest even). */
NABLA_INLINE float dpas_f32(uint h) {
#if NABLA_DTYPE == 1
  ushort u = (ushort)h;
  return vload_half(0, (__private const half *)&u);
#else
  return as_float(h << 16);
#endif
}

NABLA_INLINE uint dpas_16(float x) {
#if NABLA_DTYPE == 1
  ushort u;
  vstore_half_rte(x, 0, (__private half *)&u);
  return u;
#else
  return nabla_to_bf16(x);
#endif
}

NABLA_INLINE uint dpas_pack(uint lo, uint hi) { return (lo & 0xffffu) | (hi << 16); }

#if DPAS_MODE == 0
/* The extension's builtins, declared here: the 2022 compilers' headers lack them, although
 * their library has them (docs/variants.md). */
#if DPAS_SG == 8
#define DPAS_A_T int
#define DPAS_A_T4 int4
#define DPAS_A_T8 int8
#else
#define DPAS_A_T short
#define DPAS_A_T4 short4
#define DPAS_A_T8 short8
#endif
#define DPAS_A(i) ((DPAS_A_T)a[i])
float8 __attribute__((overloadable)) intel_sub_group_f16_f16_matrix_mad_k16(DPAS_A_T8 a, int8 b, float8 acc);
float8 __attribute__((overloadable)) intel_sub_group_bf16_bf16_matrix_mad_k16(DPAS_A_T8 a, int8 b, float8 acc);
float4 __attribute__((overloadable)) intel_sub_group_f16_f16_matrix_mad_k16(DPAS_A_T4 a, int8 b, float4 acc);
float4 __attribute__((overloadable)) intel_sub_group_bf16_bf16_matrix_mad_k16(DPAS_A_T4 a, int8 b, float4 acc);
#if NABLA_DTYPE == 1
#define DPAS_MAD intel_sub_group_f16_f16_matrix_mad_k16
#else
#define DPAS_MAD intel_sub_group_bf16_bf16_matrix_mad_k16
#endif

/* acc += A B, one DPAS_M x 16 x DPAS_SG step (pub: unused, see DPAS_MODE 2). */
NABLA_INLINE void dpas_mad(const uint a[DPAS_M], __local const uint *pub, const uint b[8], float acc[DPAS_M]) {
  (void)pub;
  const int8 bv = as_int8((uint8)(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]));
#if DPAS_M == 8
  const DPAS_A_T8 av = (DPAS_A_T8)(DPAS_A(0), DPAS_A(1), DPAS_A(2), DPAS_A(3), DPAS_A(4), DPAS_A(5), DPAS_A(6), DPAS_A(7));
  float8 c = DPAS_MAD(av, bv, (float8)(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]));
  acc[4] = c.s4, acc[5] = c.s5, acc[6] = c.s6, acc[7] = c.s7;
#else
  const DPAS_A_T4 av = (DPAS_A_T4)(DPAS_A(0), DPAS_A(1), DPAS_A(2), DPAS_A(3));
  float4 c = DPAS_MAD(av, bv, (float4)(acc[0], acc[1], acc[2], acc[3]));
#endif
  acc[0] = c.s0, acc[1] = c.s1, acc[2] = c.s2, acc[3] = c.s3;
}
#else
/* The A register of row i held by lane `lane`: a broadcast, or (DPAS_MODE 2) the copy the
 * sub-group published to local memory (dpas_publish). */
#if DPAS_MODE == 1
#define DPAS_A_AT(a, pub, i, lane) sub_group_broadcast((a)[i], (lane))
#else
#define DPAS_A_AT(a, pub, i, lane) (pub)[(lane) * DPAS_M + (i)]
#endif

/* The emulated instruction: acc[i] (column = this lane) += sum over k < 16 of A[i][k] B[k][lane],
 * in fp32 (the products of 16-bit values are exact). */
NABLA_INLINE void dpas_mad(const uint a[DPAS_M], __local const uint *pub, const uint b[8], float acc[DPAS_M]) {
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) {
    float t = acc[i];
DPAS_UNROLL
    for (int kp = 0; kp < 8; kp++) {
#if DPAS_SG == 8
      const uint w = DPAS_A_AT(a, pub, i, kp); /* A[i][2kp], A[i][2kp+1] */
      const uint lo = w, hi = w >> 16;
#else
      const uint lo = DPAS_A_AT(a, pub, i, 2 * kp), hi = DPAS_A_AT(a, pub, i, 2 * kp + 1);
#endif
      t = fma(dpas_f32(lo & 0xffffu), dpas_f32(b[kp] & 0xffffu), t);
      t = fma(dpas_f32(hi & 0xffffu), dpas_f32(b[kp] >> 16), t);
    }
    acc[i] = t;
  }
}
#endif

/* DPAS_MODE 2 only: every lane's DPAS_M A registers into its sub-group's region pub (DPAS_M uint
 * per lane), between barriers; must be reached by the whole work-group. Else nothing. */
NABLA_INLINE void dpas_publish(__local uint *pub, const uint a[DPAS_M]) {
#if DPAS_MODE == 2
  barrier(CLK_LOCAL_MEM_FENCE);
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) pub[SG_LANE * DPAS_M + i] = a[i];
  barrier(CLK_LOCAL_MEM_FENCE);
#else
  (void)pub, (void)a;
#endif
}

/* Element `lane` of the DPAS_SG consecutive 16-bit values at p: a sub-group block read where
 * sub-groups exist (p must be 4-byte aligned), else a load. Uniform across the sub-group. */
NABLA_INLINE uint dpas_row_read(__global const ushort *p) {
#if DPAS_MODE == 2
  return p[SG_LANE];
#else
  return intel_sub_group_block_read_us(p);
#endif
}

/* A registers of DPAS_M rows x 16 columns of a row-major 16-bit matrix: row i at
 * rows + i * stride, rows i >= nrows zero. */
NABLA_INLINE void dpas_a_rows(__global const ushort *rows, size_t stride, int nrows, uint a[DPAS_M]) {
#if DPAS_MODE == 2
  const int lane = SG_LANE;
#endif
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) {
    __global const ushort *row = rows + i * stride;
#if DPAS_MODE == 2 && DPAS_SG == 8
    a[i] = i < nrows ? dpas_pack(row[2 * lane], row[2 * lane + 1]) : 0u;
#elif DPAS_MODE == 2
    a[i] = i < nrows ? (uint)row[lane] : 0u;
#elif DPAS_SG == 8 /* lane j's pair is the row's 32-bit word j: a block read (rows are 4-byte aligned) */
    a[i] = i < nrows ? intel_sub_group_block_read((__global const uint *)row) : 0u;
#else
    a[i] = i < nrows ? dpas_row_read(row) : 0u;
#endif
  }
}

/* B registers whose column (this lane's) is 16 consecutive values at col (a row of K: B = Kᵀ);
 * zero when !valid. col must be 4-byte aligned. */
NABLA_INLINE void dpas_b_col(__global const ushort *col, int valid, uint b[8]) {
  __global const uint *w = (__global const uint *)col;
DPAS_UNROLL
  for (int j = 0; j < 8; j++) b[j] = valid ? w[j] : 0u;
}

/* The K order of a P·V step: K index 2j + h is the step's key dpas_key(j, h). DPAS_SG 8: keys j
 * and j + 8, i.e. lane j of two S tiles, so P needs no shuffle (the sum over K is order-free);
 * DPAS_SG 16: keys 2j and 2j + 1 (lane n of the one S tile holds key n). */
#if DPAS_SG == 8
#define dpas_key(j, h) ((j) + 8 * (h))
#else
#define dpas_key(j, h) (2 * (j) + (h))
#endif

/* A registers of P for a step of 16 keys from fp32 values of the S tile layout: DPAS_SG 8: p0,
 * p1 the tiles of keys 0..7 and 8..15; DPAS_SG 16: p0 the tile (p1 unused). */
NABLA_INLINE void dpas_a_probs(const float p0[DPAS_M], const float p1[DPAS_M], uint a[DPAS_M]) {
DPAS_UNROLL
  for (int i = 0; i < DPAS_M; i++) {
#if DPAS_SG == 8
    a[i] = dpas_pack(dpas_16(p0[i]), dpas_16(p1[i]));
#else
    a[i] = dpas_16(p0[i]);
    (void)p1;
#endif
  }
}

/* B registers of a P·V step: rows (keys) of V at rows + key * stride, DPAS_SG columns from there,
 * in the K order of dpas_key; keys >= nkeys zero (uniform: whole rows). */
NABLA_INLINE void dpas_b_rows(__global const ushort *rows, size_t stride, int nkeys, uint b[8]) {
DPAS_UNROLL
  for (int j = 0; j < 8; j++) {
    const int lo = dpas_key(j, 0), hi = dpas_key(j, 1);
    b[j] = dpas_pack(lo < nkeys ? dpas_row_read(rows + lo * stride) : 0u,
                     hi < nkeys ? dpas_row_read(rows + hi * stride) : 0u);
  }
}
