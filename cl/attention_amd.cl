/*
 * Block-sparse flash attention on AMD matrix cores (cl/amd_matrix.cl: MFMA on CDNA, WMMA on
 * RDNA3), 16-bit storage (fp16 or bf16), fp32 accumulation and online softmax; the same CSR mask,
 * ragged blocks, scale and results as cl/attention.cl.
 *
 * One work-group of 256 work-items computes one query block (<= 64 rows) of one (b, h): MFMA four
 * waves of 64, wave w owning the query rows 16w .. 16w + 15; WMMA eight waves of 32, two per 16
 * rows (AMD_SPLIT), which share the rows' score tiles and output tiles. For every kept key block:
 *   1. all work-items copy the block's V rows into local memory (raw 16-bit words; WMMA
 *      transposed, so that a B fragment is one read);
 *   2. each wave forms its share of the 16 x 64 scores S = Q Kᵀ (MFMA all four 16 x 16 tiles,
 *      WMMA two), HEAD_DIM / 16 matrix operations a tile; Q fragments stay in registers (MFMA) or
 *      come from local memory (WMMA, qs), K fragments straight from global memory (a lane's A/B
 *      values are consecutive elements of one row);
 *   3. scale, mask the ragged tail, and the row maxima: every lane holds one column of a few rows
 *      per tile; MFMA's 16 lanes of a row meet through local memory (red), WMMA's reduce by DPP
 *      first and the two waves meet there;
 *   4. P = exp2(S - max) in fp32, rounded to the 16-bit input type into local memory (ps), the
 *      accumulators rescaled, per-lane partial row sums kept in fp32;
 *   5. O += P V: the wave's output tiles of 16 x 16 (MFMA HEAD_DIM / 16, WMMA half of them), 4
 *      matrix operations each (P from ps, V from local memory).
 * Three barriers per key block. The output is divided by the row sums (zero rows stay zero) and
 * stored. Matrix operations per 64 x 64 block: 2 x 64 x 64 x HEAD_DIM / 4096 = HEAD_DIM / 2 per
 * MFMA wave, HEAD_DIM / 4 per WMMA wave (32 at HEAD_DIM 128), the figure the compile gate reads
 * from the disassembly.
 *
 * Local memory: MFMA 2 (64 (HEAD_DIM + 8) + 64 x 72) + 4 x 64 x 17 bytes (30 KiB at HEAD_DIM
 * 128), WMMA 2 (64 (HEAD_DIM + 8) + 72 HEAD_DIM + 64 x 72) + 4 x 64 x 2 bytes (Q, V, P, maxima:
 * 44.5 KiB at 128, so that two work-groups share gfx11's 128 KiB per WGP).
 */
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef NABLA_DENSE
#define NABLA_DENSE 0
#endif
#if HEAD_DIM % 16 != 0 || HEAD_DIM > 128
#error "HEAD_DIM must be a multiple of 16 up to 128"
#endif
#if NABLA_DTYPE != 1 && NABLA_DTYPE != 2
#error "the matrix-core attention stores fp16 or bf16"
#endif

/* A scheduling fence after each 16 x 16 tile: without it the compiler issues every tile's
 * fragment loads first, for latency (gfx90a, D = 128: 165 VGPRs without, 156 with). */
#ifdef AMD_EMULATE
#define AMD_TILE_FENCE()
#else
#define AMD_TILE_FENCE() __builtin_amdgcn_sched_barrier(0)
#endif
/* WMMA: a fence after every operation too, or LLVM loads all of a tile's D/16 fragment pairs
 * first (gfx1100, clang-19: 138 VGPRs without at HEAD_DIM 64, 93 with; 219 and 109 at 128). */
#if AMD_MATRIX == 2
#define AMD_STEP_FENCE() AMD_TILE_FENCE()
#else
#define AMD_STEP_FENCE()
#endif
/* Waves per 16 query rows. WMMA: two, which split S's key tiles and O's column tiles, so that a
 * lane holds 2 S tiles and at most 4 O tiles of 8 VGPRs, with Q in local memory (one wave per
 * 16 rows held 4 + 8 tiles and 64 VGPRs of Q fragments at HEAD_DIM 128). */
#if AMD_MATRIX == 2
#define AMD_SPLIT 2
#else
#define AMD_SPLIT 1
#endif
#define AMD_WG (4 * AMD_SPLIT * AMD_WAVE)
#define KD (HEAD_DIM / 16)                         /* 16-column chunks of the head dim */
#define NT (4 / AMD_SPLIT)                         /* S tiles (16 keys) per wave */
#define NO ((KD + AMD_SPLIT - 1) / AMD_SPLIT)      /* O tiles (16 columns) per wave */
#define V_S (HEAD_DIM + 8)                         /* row stride of vs and qs, in 16-bit words */
#define VT_S 72                                    /* row stride of vt (V transposed) */
#define P_S 72                                     /* row stride of ps */
/* Row maxima and sums meet in red: MFMA one value per lane (16 a row, stride 17), WMMA one per
 * wave, reduced over its 16 lanes first (amd_row_max, amd_row_sum). */
#if AMD_MATRIX == 2
#define RED_N AMD_SPLIT
#define RED_S AMD_SPLIT
#else
#define RED_N 16
#define RED_S 17
#endif

/* A fragment of the 16-bit matrix m (rows of HEAD_DIM words from `row0`): rows row0 + (l % 16),
 * columns c0 + amd_a_k0(l) .., zeros for rows at or past `rows`. Also serves K as the B operand
 * of Q Kᵀ (B[k][j] = K[j][k]: the same shape). */
NABLA_INLINE amd_frag load_rowfrag(__global const ushort *m, size_t row0, int rows, int c0, int lane) {
  const int r = lane & 15;
  amd_frag f = (amd_frag)(0);
  if (r < rows) {
    __global const ushort *p = m + (row0 + (size_t)r) * HEAD_DIM + c0 + amd_a_k0(lane);
#if AMD_MATRIX == 1
    f = vload4(0, p);
#else
    f = vload16(0, p);
#endif
  }
  return f;
}

#if AMD_MATRIX == 2
/* load_rowfrag without a branch: rows past `last` (a row index of the same matrix, valid) read
 * row `last` and are zeroed by a select, so that the loads of a tile share one basic block and
 * the tile fence bounds them (with the branch LLVM hoisted every tile's loads above all the
 * operations: 128 VGPRs of K fragments at HEAD_DIM 64). */
NABLA_INLINE amd_frag load_rowfrag_clamped(__global const ushort *m, int row0, int last, int c0, int lane) {
  const int r = row0 + (lane & 15);
  const amd_frag f = vload16(0, m + (size_t)min(r, last) * HEAD_DIM + c0);
  return r <= last ? f : (amd_frag)(0);
}
#endif

__kernel __attribute__((reqd_work_group_size(AMD_WG, 1, 1)))
void attention(__global const STORE_T *qg, __global const STORE_T *kg, __global const STORE_T *vg,
               __global STORE_T *o, __global const int *block_start, __global const int *row_ptr,
               __global const int *col_idx, int S, int Nb, float scale_log2) {
  __global const ushort *q = (__global const ushort *)qg, *k = (__global const ushort *)kg,
                        *v = (__global const ushort *)vg;
#if AMD_MATRIX == 2
  __local ushort qs[64 * V_S];
  __local ushort vt[HEAD_DIM * VT_S];
#else
  __local ushort vs[64 * V_S];
#endif
  __local ushort ps[64 * P_S];
  __local float red[64 * RED_S];
#ifdef AMD_EMULATE
  __local float emu_all[4 * AMD_SPLIT * AMD_EMU_FLOATS];
#endif
  const int lid = get_local_id(0), wave = lid / AMD_WAVE, lane = lid % AMD_WAVE, col = lane & 15;
#ifdef AMD_EMULATE
  __local float *emu = emu_all + wave * AMD_EMU_FLOATS;
#endif
  const int qb = get_group_id(1);
  const size_t bh = get_group_id(2), base = bh * (size_t)S * HEAD_DIM;
  const int q0 = block_start[qb], qn = block_start[qb + 1] - q0;
  /* This wave's first row in the block and its share (h) of the tiles. */
  const int r0 = 16 * (wave / AMD_SPLIT), h = wave % AMD_SPLIT;
  /* red's row of this lane's accumulator r, from one pointer (clang-15 otherwise keeps a second
   * index live through the loop and spills it at HEAD_DIM 128). */
#if AMD_MATRIX == 2
  __local float *const red_row = red + (r0 + amd_acc_row(lane, 0)) * RED_S;
#define RED_ROW(r) (red_row + (amd_acc_row(lane, r) - amd_acc_row(lane, 0)) * RED_S)
#define RED_AT(r, rr, j) RED_ROW(r)[j]
#else
#define RED_AT(r, rr, j) red[(rr) * RED_S + (j)]
#endif

#if AMD_MATRIX == 2
  /* Q rows into qs (zeros past the ragged tail); A fragments are read from there per step. */
  for (int i = lid; i < 64 * (HEAD_DIM / 8); i += AMD_WG) {
    const int r = i / (HEAD_DIM / 8), c = 8 * (i % (HEAD_DIM / 8));
    ushort8 w = r < qn ? vload8(0, q + base + (size_t)(q0 + r) * HEAD_DIM + c) : (ushort8)(0);
    vstore8(w, 0, qs + r * V_S + c);
  }
  barrier(CLK_LOCAL_MEM_FENCE);
#define Q_FRAG(c) vload16(0, qs + (r0 + col) * V_S + 16 * (c))
#define K_FRAG(t, c) load_rowfrag_clamped(k + base, k0 + 16 * (t), k0 + kn - 1, 16 * (c), lane)
#else
  amd_frag qf[KD];
  for (int c = 0; c < KD; c++) qf[c] = load_rowfrag(q + base, (size_t)(q0 + r0), qn - r0, 16 * c, lane);
#define Q_FRAG(c) qf[c]
#define K_FRAG(t, c) load_rowfrag(k + base, (size_t)(k0 + 16 * (t)), kn - 16 * (t), 16 * (c), lane)
#endif
  amd_acc acc[NO];
  float m[AMD_NC], l[AMD_NC];
  for (int i = 0; i < NO; i++) acc[i] = (amd_acc)(0.0f);
  for (int r = 0; r < AMD_NC; r++) m[r] = -INFINITY, l[r] = 0.0f;

#if NABLA_DENSE
  const int p0 = 0, p1 = Nb;
#define KEY_BLOCK(p) (p)
#else
  const size_t row = bh * Nb + qb;
  const int p0 = row_ptr[row], p1 = row_ptr[row + 1];
#define KEY_BLOCK(p) col_idx[p]
#endif

  for (int p = p0; p < p1; p++) {
    const int kb = KEY_BLOCK(p), k0 = block_start[kb], kn = block_start[kb + 1] - k0;
    /* 1. V rows into local memory, 8 words per work-item and step (zeros past the ragged tail);
     * WMMA transposed (vt[d][key]), so that a B fragment (16 keys of one column) is one read. */
#if AMD_MATRIX == 2
    for (int i = lid; i < 64 * (HEAD_DIM / 8); i += AMD_WG) {
      const int r = i % 64, c = 8 * (i / 64);
      __private ushort w[8];
      *(__private ushort8 *)w = r < kn ? vload8(0, v + base + (size_t)(k0 + r) * HEAD_DIM + c) : (ushort8)(0);
      for (int e = 0; e < 8; e++) vt[(c + e) * VT_S + r] = w[e];
    }
#else
    for (int i = lid; i < 64 * (HEAD_DIM / 8); i += AMD_WG) {
      const int r = i / (HEAD_DIM / 8), c = 8 * (i % (HEAD_DIM / 8));
      ushort8 w = r < kn ? vload8(0, v + base + (size_t)(k0 + r) * HEAD_DIM + c) : (ushort8)(0);
      vstore8(w, 0, vs + r * V_S + c);
    }
#endif
    /* 2. S = Q Kᵀ: this wave's tile i holds the keys 16t .. 16t + 15. */
    amd_acc s[NT];
    for (int i = 0; i < NT; i++) {
      const int t = NT * h + i;
      s[i] = (amd_acc)(0.0f);
      for (int c = 0; c < KD; c++) {
        s[i] = amd_mma(Q_FRAG(c), K_FRAG(t, c), s[i] AMD_EMU_PASS);
        AMD_STEP_FENCE();
      }
      AMD_TILE_FENCE();
    }
    /* 3. Scaled, masked scores and this lane's share of the row maxima. */
    float sv[NT][AMD_NC];
    for (int r = 0; r < AMD_NC; r++) {
      float mx = -INFINITY;
      for (int i = 0; i < NT; i++) {
        const float x = 16 * (NT * h + i) + col < kn ? amd_acc_get(s[i], r) * scale_log2 : -INFINITY;
        sv[i][r] = x;
        mx = fmax(mx, x);
      }
#if AMD_MATRIX == 2
      mx = amd_row_max(mx AMD_EMU_PASS);
      if (col == 0) RED_ROW(r)[h] = mx;
#else
      red[(r0 + amd_acc_row(lane, r)) * RED_S + col] = mx;
#endif
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* 4. Online softmax over the lanes of each row; P into ps, accumulators rescaled. */
    for (int r = 0; r < AMD_NC; r++) {
      const int rr = r0 + amd_acc_row(lane, r);
      float mx = m[r];
      for (int j = 0; j < RED_N; j++) mx = fmax(mx, RED_AT(r, rr, j));
      const float alpha = m[r] == -INFINITY ? 0.0f : exp2(m[r] - mx);
      m[r] = mx;
      float sum = 0.0f;
      for (int i = 0; i < NT; i++) {
        const float pv = sv[i][r] == -INFINITY ? 0.0f : exp2(sv[i][r] - mx);
        sum += pv;
        ps[rr * P_S + 16 * (NT * h + i) + col] = amd_in_bits(pv);
      }
      l[r] = l[r] * alpha + sum;
      for (int i = 0; i < NO; i++) {
        __private float a[AMD_NC];
        *(__private amd_acc *)a = acc[i];
        a[r] *= alpha;
        acc[i] = *(__private amd_acc *)a;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* 5. O += P V, 16 keys per operation; this wave's tile i holds the columns 16c .. 16c + 15
     * (an odd HEAD_DIM / 16 gives the last wave a tile past the end: computed on valid data for
     * the same number of operations in every wave, and not stored). */
    for (int t = 0; t < 4; t++) {
#if AMD_MATRIX == 1
      const amd_frag pf = vload4(0, ps + (r0 + col) * P_S + 16 * t + amd_a_k0(lane));
#else
      const amd_frag pf = vload16(0, ps + (r0 + col) * P_S + 16 * t);
#endif
      for (int i = 0; i < NO; i++) {
        const int c = min(h + AMD_SPLIT * i, KD - 1);
#if AMD_MATRIX == 2
        const amd_frag vf = vload16(0, vt + (16 * c + col) * VT_S + 16 * t);
#else
        __private ushort b[AMD_NA];
        for (int e = 0; e < AMD_NA; e++) b[e] = vs[(16 * t + amd_a_k0(lane) + e) * V_S + 16 * c + col];
        const amd_frag vf = *(__private const amd_frag *)b;
#endif
        acc[i] = amd_mma(pf, vf, acc[i] AMD_EMU_PASS);
        AMD_STEP_FENCE();
      }
      AMD_TILE_FENCE();
    }
    barrier(CLK_LOCAL_MEM_FENCE); /* V, ps and red are written again by the next block */
  }

  /* Row sums over the lanes of each row, then O / sum (rows with no kept block: zeros). */
  for (int r = 0; r < AMD_NC; r++) {
#if AMD_MATRIX == 2
    const float lr = amd_row_sum(l[r] AMD_EMU_PASS);
    if (col == 0) RED_ROW(r)[h] = lr;
#else
    red[(r0 + amd_acc_row(lane, r)) * RED_S + col] = l[r];
#endif
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int r = 0; r < AMD_NC; r++) {
    const int rr = r0 + amd_acc_row(lane, r);
    if (rr >= qn) continue;
    float sum = 0.0f;
    for (int j = 0; j < RED_N; j++) sum += RED_AT(r, rr, j);
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int i = 0; i < NO; i++) {
      const int c = h + AMD_SPLIT * i;
      if (c >= KD) continue;
      const size_t at = base + (size_t)(q0 + rr) * HEAD_DIM + 16 * c + col;
      STORE(o, at, amd_acc_get(acc[i], r) * inv);
    }
  }
}
