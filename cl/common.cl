/*
 * Common prelude of every nablacl kernel: storage types. The host prepends this file to each
 * stage file. NABLA_DTYPE: 0 = fp32, 1 = fp16 (through vload_half/vstore_half, so no
 * cl_khr_fp16 is needed), 2 = bf16 stored as 16-bit words. Arithmetic is always fp32.
 */
#ifndef NABLA_DTYPE
#define NABLA_DTYPE 0
#endif

/* Every helper function is always inlined, also without optimization: a plain C99 `inline`
 * left no definition at -O0 (AMD's compiler, SPIR-V consumers and -cl-opt-disable failed to link).
 * Not `static`: with internal linkage PoCL left the wgmma emulation's helpers (they hold
 * barriers) out of line and computed wrong results, and Intel's compiler stopped unrolling the
 * dpas loops (tests/intel_gate.sh counts 2 dpas instead of 128 at D=128). */
#define NABLA_INLINE inline __attribute__((always_inline))

/* LOAD8: the 8 values from element i (a multiple of 8) as a float8. */
#if NABLA_DTYPE == 0
#define STORE_T float
#define LOAD(p, i) ((p)[i])
#define STORE(p, i, v) ((p)[i] = (v))
#define LOAD8(p, i) vload8((i) / 8, (p))
#elif NABLA_DTYPE == 1
#define STORE_T half
#define LOAD(p, i) vload_half((i), (p))
#define STORE(p, i, v) vstore_half_rte((v), (i), (p))
#define LOAD8(p, i) vload_half8((i) / 8, (p))
#else
#define STORE_T ushort
#define LOAD(p, i) as_float(((uint)(p)[i]) << 16)
#define STORE(p, i, v) ((p)[i] = nabla_to_bf16(v))
#define LOAD8(p, i) as_float8(convert_uint8(vload8((i) / 8, (p))) << 16)
#endif

/* Eight consecutive stored elements as fetched by nabla_fetch8: fp32 values, or the 16-bit
 * words in a uint4 (element 2j in the low half of word j on a little-endian device). */
#if NABLA_DTYPE == 0
typedef float8 nabla_raw8;
#define NABLA_RAW_ZERO ((float8)0.0f)
#else
typedef uint4 nabla_raw8;
#define NABLA_RAW_ZERO ((uint4)0u)
#endif

/* Elements i .. i + 7 of p (i a multiple of 8). `aligned`: p is 16-byte aligned, so whole
 * 16-byte words can be loaded. vload8 only assumes the alignment of one element, and NVIDIA's
 * compiler splits it into 8 (16-bit) or 4-byte loads: the pooling, bandwidth-bound, measured
 * 0.53 ms with vload8 at the Wan 14B shape on the H100. */
NABLA_INLINE nabla_raw8 nabla_fetch8(__global const STORE_T *p, size_t i, int aligned) {
#if NABLA_DTYPE == 0
  if (aligned) {
    __global const float4 *p4 = (__global const float4 *)p + (i >> 2);
    return (float8)(p4[0], p4[1]);
  }
  return vload8(i >> 3, p);
#else
  if (aligned) return ((__global const uint4 *)p)[i >> 3];
  return as_uint4(vload8(i >> 3, (__global const ushort *)p));
#endif
}

/* The fp32 values of a fetched vector, in element order. */
NABLA_INLINE float8 nabla_unpack8(nabla_raw8 r) {
#if NABLA_DTYPE == 0
  return r;
#elif NABLA_DTYPE == 1
  __private uint4 w = r;
  return vload_half8(0, (__private const half *)&w);
#else
#ifdef __ENDIAN_LITTLE__
  const float4 even = as_float4(r << 16), odd = as_float4(r & 0xffff0000u);
#else
  const float4 even = as_float4(r & 0xffff0000u), odd = as_float4(r << 16);
#endif
  return (float8)(even.x, odd.x, even.y, odd.y, even.z, odd.z, even.w, odd.w);
#endif
}

/* fp32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
NABLA_INLINE ushort nabla_to_bf16(float v) {
  uint u = as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (ushort)(u >> 16);
}

/* Sliding-tile window (docs/algorithm.md §5): query block i sees key block j iff their (t, h, w) block
 * coordinates in the T x Hb x Wb block grid differ by at most (rt, rh, rw). nabla_sta_near
 * takes the coordinate differences (the selection walks the coordinates itself);
 * nabla_sta_keep the block indices (the STA kernel). */
NABLA_INLINE int nabla_sta_near(int dt, int dh, int dw, int rt, int rh, int rw) {
  return abs(dt) <= rt && abs(dh) <= rh && abs(dw) <= rw;
}

NABLA_INLINE int nabla_sta_keep(int i, int j, int Hb, int Wb, int rt, int rh, int rw) {
  int plane = Hb * Wb;
  int ti = i / plane, hi = (i % plane) / Wb, wi = i % Wb;
  int tj = j / plane, hj = (j % plane) / Wb, wj = j % Wb;
  return nabla_sta_near(ti - tj, hi - hj, wi - wj, rt, rh, rw);
}
