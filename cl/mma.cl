/*
 * Tensor-core primitives shared by the NVIDIA kernels (cl/attention_mma.cl, cl/map_mma.cl):
 * the host prepends this file, after cl/common.cl, to those stage files.
 *
 * mma16816 (mma.sync m16n8k16, 16-bit inputs, fp32 accumulators), shfl_xor, warp_any,
 * exp2_ftz, pack2 (two fp32 -> the storage type's 16-bit pair), warp_sync, and, when
 * MMA_SMEM_PTX is set, ldsm_x4 (ldmatrix.x4[.trans]) and 16-byte cp.async copies; for the two
 * attention kernels (HEAD_DIM defined), the row walk mma_rows_*, mma_load_q, mma_online_softmax
 * and mma_store_o.
 * MMA_IN: the 16-bit type of the mma inputs, 1 = fp16, 2 = bf16; by default the storage type
 * (NABLA_DTYPE). pack2 always packs for the storage type.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16, lane = 4 * g + t):
 *   A (16x16, row): reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..], reg3 = A[g+8][2t+8..]
 *   B (16x8, col):  reg0 = B[2t..2t+1][g], reg1 = B[2t+8..2t+9][g]
 *   C (16x8 fp32):  c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
 * (each 32-bit register holds two 16-bit values, the lower index in the low half).
 *
 * NABLA_NO_PTX: every PTX instruction is replaced by a local-memory emulation with barriers
 * (EMU_ARGS / EMU_PASS carry a per-warp scratch of EMU_WORDS words and the lane), so the
 * fragment logic of a kernel runs, slowly, on any OpenCL device; every warp of a work-group
 * must then take the same path.
 */
#ifndef MMA_SMEM_PTX
#define MMA_SMEM_PTX 1
#endif
#ifndef MMA_IN
#define MMA_IN NABLA_DTYPE
#endif
#if MMA_IN != 1 && MMA_IN != 2
#error "mma inputs are fp16 (MMA_IN=1) or bf16 (MMA_IN=2)"
#endif
/* MMA_LDSM: fragments through ldmatrix; MMA_CPASYNC: copies through cp.async. The emulation
 * emulates ldmatrix when MMA_SMEM_PTX is set (so its addressing is tested) and copies plainly. */
#define MMA_LDSM MMA_SMEM_PTX
#ifdef NABLA_NO_PTX
#define MMA_CPASYNC 0
#else
#define MMA_CPASYNC MMA_SMEM_PTX
#endif

/* Full unrolling keeps the fragment arrays in registers; the emulation's loops hold barriers,
 * which cannot be unrolled. */
#ifdef NABLA_NO_PTX
#define UNROLL
#else
#define UNROLL _Pragma("unroll")
#endif

/* ---- PTX primitives and their emulation ------------------------------------------------ */

#ifdef NABLA_NO_PTX
/* Per-warp scratch of the emulation: 6 words per lane for mma, 1 for shuffles/ldmatrix. */
#define EMU_WORDS (32 * 6)
#define EMU_ARGS , __local uint *emu, int lane
#define EMU_PASS , emu, lane

NABLA_INLINE float emu_half(uint bits) {
#if MMA_IN == 1
  ushort h = (ushort)bits;
  return vload_half(0, (const __private half *)&h);
#else
  return as_float((bits & 0xffffu) << 16);
#endif
}

/* A[r][k] of the fragments stored by all lanes at emu (6 words per lane). */
NABLA_INLINE float emu_a(__local const uint *emu, int r, int k) {
  int src = (r & 7) * 4 + ((k & 7) >> 1), reg = (r >> 3) + ((k >> 3) << 1);
  uint w = emu[src * 6 + reg];
  return emu_half((k & 1) ? w >> 16 : w);
}
NABLA_INLINE float emu_b(__local const uint *emu, int k, int n) {
  int src = n * 4 + ((k & 7) >> 1), reg = 4 + (k >> 3);
  uint w = emu[src * 6 + reg];
  return emu_half((k & 1) ? w >> 16 : w);
}

NABLA_INLINE void mma16816(float *c, const uint *a, uint b0, uint b1 EMU_ARGS) {
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int i = 0; i < 4; i++) emu[lane * 6 + i] = a[i];
  emu[lane * 6 + 4] = b0;
  emu[lane * 6 + 5] = b1;
  barrier(CLK_LOCAL_MEM_FENCE);
  int g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; i++) {
    int r = g + 8 * (i >> 1), n = 2 * t + (i & 1);
    float acc = c[i];
    for (int k = 0; k < 16; k++) acc = fma(emu_a(emu, r, k), emu_b(emu, k, n), acc);
    c[i] = acc;
  }
}

NABLA_INLINE float shfl_xor(float v, int m EMU_ARGS) {
  __local float *f = (__local float *)emu;
  barrier(CLK_LOCAL_MEM_FENCE);
  f[lane] = v;
  barrier(CLK_LOCAL_MEM_FENCE);
  return f[lane ^ m];
}

#define exp2_ftz native_exp2

/* Whether any lane of the warp passes a true flag. The emulation says yes: every warp then
 * takes the same path (its barriers need that), and rescaling by 1 changes nothing. */
NABLA_INLINE int warp_any(int flag EMU_ARGS) { return 1; }

NABLA_INLINE uint pack2(float lo, float hi) {
#if NABLA_DTYPE == 1
  ushort h[2];
  vstore_half_rte(lo, 0, (__private half *)h);
  vstore_half_rte(hi, 1, (__private half *)h);
  return (uint)h[0] | ((uint)h[1] << 16);
#else
  return (uint)nabla_to_bf16(lo) | ((uint)nabla_to_bf16(hi) << 16);
#endif
}

/* ldmatrix.x4 (trans = 0/1): lane l gives the row address (offset into base) of row l & 7 of
 * matrix l >> 3 and receives register i of matrix i. */
NABLA_INLINE void ldsm_x4(uint *r, __local const ushort *base, int off, int trans EMU_ARGS) {
  __local int *addr = (__local int *)emu;
  barrier(CLK_LOCAL_MEM_FENCE);
  addr[lane] = off;
  barrier(CLK_LOCAL_MEM_FENCE);
  int g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; i++) {
    uint lo, hi;
    if (trans) {
      lo = base[addr[8 * i + 2 * t] + g];
      hi = base[addr[8 * i + 2 * t + 1] + g];
    } else {
      lo = base[addr[8 * i + g] + 2 * t];
      hi = base[addr[8 * i + g] + 2 * t + 1];
    }
    r[i] = lo | (hi << 16);
  }
}

#else /* real PTX */
#define EMU_ARGS
#define EMU_PASS

#if MMA_IN == 1
#define MMA_TYPES ".f32.f16.f16.f32"
#else
#define MMA_TYPES ".f32.bf16.bf16.f32"
#endif
#if NABLA_DTYPE == 1
#define CVT_X2 "cvt.rn.f16x2.f32"
#else
#define CVT_X2 "cvt.rn.bf16x2.f32"
#endif

NABLA_INLINE void mma16816(float *c, const uint *a, uint b0, uint b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col" MMA_TYPES
               " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
               : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]),
                 "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

NABLA_INLINE float shfl_xor(float v, int m) {
  float r;
  asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(m));
  return r;
}

/* 2^x flushing tiny results to zero: one MUFU instruction, without the denormal fix-up that
 * plain ex2.approx.f32 costs (softmax weights below 2^-126 do not matter). */
NABLA_INLINE float exp2_ftz(float x) {
  float r;
  asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

NABLA_INLINE int warp_any(int flag) {
  int r;
  asm volatile("{ .reg .pred p, q; setp.ne.s32 p, %1, 0; vote.sync.any.pred q, p, 0xffffffff;"
               " selp.s32 %0, 1, 0, q; }"
               : "=r"(r) : "r"(flag));
  return r;
}

/* cvt packs its first source into the upper half. */
NABLA_INLINE uint pack2(float lo, float hi) {
  uint r;
  asm volatile(CVT_X2 " %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

#if MMA_SMEM_PTX
/* A __local pointer converted to an integer is its .shared address (the probe checks this). */
#define SHARED_ADDR(p) ((uint)(size_t)(p))

NABLA_INLINE void ldsm_x4(uint *r, __local const ushort *base, int off, int trans) {
  uint a = SHARED_ADDR(base + off);
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}

/* 16-byte asynchronous copy; src_bytes 0 zero-fills the destination. */
NABLA_INLINE void cp_async16(__local uint4 *dst, __global const uint4 *src, uint src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(SHARED_ADDR(dst)), "l"((ulong)(size_t)src), "r"(src_bytes) : "memory");
}
NABLA_INLINE void cp_async_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }
NABLA_INLINE void cp_async_wait_all(void) { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
NABLA_INLINE void cp_async_wait_but_one(void) { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
#endif
#endif

/* Orders the local-memory accesses of the lanes of a warp (bar.warp.sync). The emulation, whose
 * warps all take the same path, waits for the work-group. */
NABLA_INLINE void warp_sync(void) {
#ifdef NABLA_NO_PTX
  barrier(CLK_LOCAL_MEM_FENCE);
#else
  asm volatile("bar.warp.sync -1;" ::: "memory");
#endif
}

/* Waits for this work-item's outstanding copies into local memory, then for the work-group:
 * afterwards every copy issued before is visible to every work-item. */
NABLA_INLINE void stage_wait(void) {
#if MMA_CPASYNC
  cp_async_wait_all();
#endif
  barrier(CLK_LOCAL_MEM_FENCE);
}

/* Ends a group of copies (stage_wait_but_one counts groups); nothing without cp.async. */
NABLA_INLINE void stage_commit(void) {
#if MMA_CPASYNC
  cp_async_commit();
#endif
}

/* As stage_wait, but the copies of the most recently committed group may still be in flight. */
NABLA_INLINE void stage_wait_but_one(void) {
#if MMA_CPASYNC
  cp_async_wait_but_one();
#endif
  barrier(CLK_LOCAL_MEM_FENCE);
}

/* ---- attention helpers shared by cl/attention_mma.cl and cl/attention_wgmma.cl ---------- */
#ifdef HEAD_DIM
/* MMA_MAXRREG: the host caps registers (-cl-nv-maxrregcount) so that more work-groups fit on a
 * multiprocessor; a required work-group size would make the compiler ignore the cap, so
 * MMA_ATTENTION_KERNEL declares one (the kernel's NTHREADS) only without a cap. */
#ifndef MMA_MAXRREG
#define MMA_MAXRREG 0
#endif
#if MMA_MAXRREG
#define MMA_ATTENTION_KERNEL __kernel
#else
#define MMA_ATTENTION_KERNEL __kernel __attribute__((reqd_work_group_size(NTHREADS, 1, 1)))
#endif

/* The key blocks a work-group visits: the union, ascending, of the CSR rows of its MMA_QPW query
 * blocks from qb0 (every block when NABLA_DENSE, where row_ptr and col_idx are not read); a
 * missing second block has an empty row. */
typedef struct {
  int pa, ea; /* the first query block's row: next entry, end */
#if MMA_QPW == 2
  int pb, eb; /* the second's */
#endif
} mma_rows;

NABLA_INLINE mma_rows mma_rows_of(__global const int *row_ptr, size_t bh, int qb0, int Nb) {
  mma_rows r;
#if NABLA_DENSE
  r.pa = 0, r.ea = Nb;
#if MMA_QPW == 2
  r.pb = 0, r.eb = qb0 + 1 < Nb ? Nb : 0;
#endif
#else
  const size_t row0 = bh * Nb + qb0;
  r.pa = row_ptr[row0], r.ea = row_ptr[row0 + 1];
#if MMA_QPW == 2
  r.pb = 0, r.eb = 0;
  if (qb0 + 1 < Nb) r.pb = row_ptr[row0 + 1], r.eb = row_ptr[row0 + 2];
#endif
#endif
  return r;
}

/* The key block of row entry p. */
NABLA_INLINE int mma_col(__global const int *col_idx, int p) {
#if NABLA_DENSE
  return p;
#else
  return col_idx[p];
#endif
}

/* The next key block of the union, or Nb when every row is done. */
NABLA_INLINE int mma_rows_next(const mma_rows *r, __global const int *col_idx, int Nb) {
  int kb = r->pa < r->ea ? mma_col(col_idx, r->pa) : Nb;
#if MMA_QPW == 2
  kb = min(kb, r->pb < r->eb ? mma_col(col_idx, r->pb) : Nb);
#endif
  return kb;
}

/* Advances the rows past kb, the block mma_rows_next gave; returns whether the row of query
 * block `sub` (0 or 1) of the work-group keeps it. */
NABLA_INLINE int mma_rows_take(mma_rows *r, __global const int *col_idx, int kb, int sub) {
  int mine = r->pa < r->ea && mma_col(col_idx, r->pa) == kb;
  if (mine) r->pa++;
#if MMA_QPW == 2
  const int mine_b = r->pb < r->eb && mma_col(col_idx, r->pb) == kb;
  if (mine_b) r->pb++;
  if (sub) mine = mine_b;
#else
  (void)sub;
#endif
  return mine;
}

/* The A fragments of the query rows ra and rb (row ra + 8) of a block of qn rows at qw, for
 * each of the HEAD_DIM / 16 k-steps (the m16n8k16 A layout, which is also wgmma's); rows at
 * or beyond qn are zero. */
NABLA_INLINE void mma_load_q(uint qf[][4], __global const uint *qw, int ra, int rb, int qn, int t) {
  UNROLL
  for (int s = 0; s < HEAD_DIM / 16; s++) {
    int w = 8 * s + t;
    qf[s][0] = ra < qn ? qw[ra * (HEAD_DIM / 2) + w] : 0u;
    qf[s][1] = rb < qn ? qw[rb * (HEAD_DIM / 2) + w] : 0u;
    qf[s][2] = ra < qn ? qw[ra * (HEAD_DIM / 2) + w + 4] : 0u;
    qf[s][3] = rb < qn ? qw[rb * (HEAD_DIM / 2) + w + 4] : 0u;
  }
}

/* One key block of the online softmax in base 2, on a warp's S fragments: s[4j..4j+3] are the
 * scores of key columns 8j + 2t, 8j + 2t + 1 for row ra (s[4j], s[4j+1]) and row rb (s[4j+2],
 * s[4j+3]), j < 8. Columns at or beyond kvalid are masked. The running maxima ma, mb are in the
 * scaled domain (raw scores enter exp2 through one fma); la, lb are per-lane partial sums (the 4
 * lanes of a row add up in mma_store_o). Leaves the probabilities in s, rounded as the P.V
 * product takes them (round_pair), and rescales the O accumulators (acc[4j..4j+3] for columns
 * 8j..8j+7: rows ra, ra, rb, rb).
 * The O rescale is skipped while no row of the warp moves its reference maximum. With
 * MMA_LAZY_RESCALE = tau > 0 (log2 units) the references are lazy: one moves only when a block's
 * maximum exceeds it by more than tau, so probabilities are at most 2^tau (fp32 sums; tau <= 15
 * keeps fp16 P finite), the result is the same (O and l share the reference), and the rescale runs a few
 * times per row instead of whenever a running maximum grows. 0: the running maxima (the host
 * passes 12 to the wgmma kernel and 0 to the mma kernel unless NABLACL_MMA_LAZY_RESCALE says). */
#ifndef MMA_LAZY_RESCALE
#define MMA_LAZY_RESCALE 0
#endif

/* p0, p1 as the P.V product sees them: rounded to the storage type by pack2 (the pair it
 * packs) and widened back. The row sums add these values, so O and l weigh every key alike and
 * a row's weights sum to one: a key that dominates a row returns its value, whatever the
 * reference maximum (with fp32 sums of unrounded P, a dominant weight off by up to 2^-8 in bf16
 * moves the output as much, whenever the lazy reference leaves that weight at a value bf16
 * cannot hold; 1.0, which the running maxima give it, it can). */
NABLA_INLINE void round_pair(float *p0, float *p1) {
  const uint w = pack2(*p0, *p1);
#if NABLA_DTYPE == 1
  const ushort h[2] = {(ushort)w, (ushort)(w >> 16)};
  *p0 = vload_half(0, (const __private half *)h);
  *p1 = vload_half(1, (const __private half *)h);
#else
  *p0 = as_float(w << 16);
  *p1 = as_float(w & 0xffff0000u);
#endif
}

NABLA_INLINE void mma_online_softmax(float *s, float *acc, int kvalid, int t, float scale_log2, float *ma,
                               float *mb, float *la, float *lb EMU_ARGS) {
  if (kvalid < 64) { /* ragged (or, emulated, not this warp's) block: mask the tail */
    UNROLL
    for (int j = 0; j < 8; j++) {
      int c = 8 * j + 2 * t;
      if (c >= kvalid) s[4 * j] = s[4 * j + 2] = -INFINITY;
      if (c + 1 >= kvalid) s[4 * j + 1] = s[4 * j + 3] = -INFINITY;
    }
  }
  float xa = -INFINITY, xb = -INFINITY;
  UNROLL
  for (int j = 0; j < 8; j++) {
    xa = fmax(xa, fmax(s[4 * j], s[4 * j + 1]));
    xb = fmax(xb, fmax(s[4 * j + 2], s[4 * j + 3]));
  }
  xa = fmax(xa, shfl_xor(xa, 1 EMU_PASS));
  xb = fmax(xb, shfl_xor(xb, 1 EMU_PASS));
  xa = fmax(xa, shfl_xor(xa, 2 EMU_PASS));
  xb = fmax(xb, shfl_xor(xb, 2 EMU_PASS));
  xa *= scale_log2;
  xb *= scale_log2;
#if MMA_LAZY_RESCALE > 0
  float na = xa > *ma + (float)MMA_LAZY_RESCALE ? xa : *ma, nb = xb > *mb + (float)MMA_LAZY_RESCALE ? xb : *mb;
#else
  float na = fmax(*ma, xa), nb = fmax(*mb, xb);
#endif
  float alpha_a = *ma == -INFINITY ? 0.0f : exp2_ftz(*ma - na);
  float alpha_b = *mb == -INFINITY ? 0.0f : exp2_ftz(*mb - nb);
  *ma = na;
  *mb = nb;
  if (na == -INFINITY) na = 0.0f; /* only when nothing is kept yet: all scores -inf */
  if (nb == -INFINITY) nb = 0.0f;
  float sa = 0.0f, sb = 0.0f;
  UNROLL
  for (int j = 0; j < 8; j++) {
    s[4 * j] = exp2_ftz(fma(s[4 * j], scale_log2, -na));
    s[4 * j + 1] = exp2_ftz(fma(s[4 * j + 1], scale_log2, -na));
    s[4 * j + 2] = exp2_ftz(fma(s[4 * j + 2], scale_log2, -nb));
    s[4 * j + 3] = exp2_ftz(fma(s[4 * j + 3], scale_log2, -nb));
    round_pair(&s[4 * j], &s[4 * j + 1]);
    round_pair(&s[4 * j + 2], &s[4 * j + 3]);
    sa += s[4 * j] + s[4 * j + 1];
    sb += s[4 * j + 2] + s[4 * j + 3];
  }
  *la = *la * alpha_a + sa;
  *lb = *lb * alpha_b + sb;
  if (warp_any(alpha_a != 1.0f || alpha_b != 1.0f EMU_PASS)) {
    UNROLL
    for (int j = 0; j < HEAD_DIM / 8; j++) {
      acc[4 * j] *= alpha_a;
      acc[4 * j + 1] *= alpha_a;
      acc[4 * j + 2] *= alpha_b;
      acc[4 * j + 3] *= alpha_b;
    }
  }
}

/* The end of the online softmax: adds up the 4 lanes' partial row sums la, lb, divides the O
 * accumulators (acc[4j..4j+3] for columns 8j..8j+7: rows ra, ra, rb, rb) by them and stores
 * rows ra and rb below qn of the block at ow. A row without any kept block gets zeros. */
NABLA_INLINE void mma_store_o(__global uint *ow, const float *acc, float la, float lb, int ra, int rb,
                        int qn, int t EMU_ARGS) {
  la += shfl_xor(la, 1 EMU_PASS);
  lb += shfl_xor(lb, 1 EMU_PASS);
  la += shfl_xor(la, 2 EMU_PASS);
  lb += shfl_xor(lb, 2 EMU_PASS);
  const float ia = la == 0.0f ? 0.0f : 1.0f / la;
  const float ib = lb == 0.0f ? 0.0f : 1.0f / lb;
  UNROLL
  for (int j = 0; j < HEAD_DIM / 8; j++) {
    int w = 4 * j + t;
    if (ra < qn) ow[ra * (HEAD_DIM / 2) + w] = pack2(acc[4 * j] * ia, acc[4 * j + 1] * ia);
    if (rb < qn) ow[rb * (HEAD_DIM / 2) + w] = pack2(acc[4 * j + 2] * ib, acc[4 * j + 3] * ib);
  }
}
#endif
