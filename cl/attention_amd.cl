/*
 * Block-sparse flash attention on AMD matrix cores (cl/amd_matrix.cl: MFMA on CDNA, WMMA on
 * RDNA3), 16-bit storage (fp16 or bf16), fp32 accumulation and online softmax; the same CSR mask,
 * ragged blocks, scale and results as cl/attention.cl.
 *
 * One work-group of four waves (256 work-items with MFMA, 128 with WMMA) computes one query block
 * (<= 64 rows) of one (b, h); wave w owns the query rows 16w .. 16w + 15. For every kept key block:
 *   1. all work-items copy the block's V rows into local memory (vs, raw 16-bit words);
 *   2. each wave forms its 16 x 64 scores S = Q Kᵀ as four 16 x 16 tiles, HEAD_DIM / 16 matrix
 *      operations each: its Q fragments stay in registers for the whole row, K fragments come
 *      straight from global memory (a lane's A/B values are consecutive elements of one row);
 *   3. scale, mask the ragged tail, and the row maxima: every lane holds one column of a few
 *      rows per tile, so the 16 lanes of a row meet through a 64 x 16 local buffer (red);
 *   4. P = exp2(S - max) in fp32, rounded to the 16-bit input type into local memory (ps), the
 *      accumulators rescaled, per-lane partial row sums kept in fp32;
 *   5. O += P V: HEAD_DIM / 16 output tiles of 16 x 16 per wave, 4 matrix operations each (P
 *      from ps, V from vs).
 * Three barriers per key block. The output is divided by the row sums (zero rows stay zero) and
 * stored. Matrix operations per 64 x 64 block: 2 x 64 x 64 x HEAD_DIM / 4096 = HEAD_DIM / 2 per
 * wave (64 at HEAD_DIM 128), the figure the compile gate reads from the disassembly.
 *
 * Local memory: 2 (64 (HEAD_DIM + 8) + 64 x 72) + 4 x 64 x 17 bytes (33 KiB at HEAD_DIM 128), so
 * that two work-groups share a 64 KiB compute unit.
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
#define AMD_WG (4 * AMD_WAVE)
#define KD (HEAD_DIM / 16)       /* 16-column chunks of the head dim */
#define V_S (HEAD_DIM + 8)       /* row stride of vs, in 16-bit words */
#define P_S 72                   /* row stride of ps */
#define RED_S 17                 /* row stride of red, in floats */

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

__kernel __attribute__((reqd_work_group_size(AMD_WG, 1, 1)))
void attention(__global const STORE_T *qg, __global const STORE_T *kg, __global const STORE_T *vg,
               __global STORE_T *o, __global const int *block_start, __global const int *row_ptr,
               __global const int *col_idx, int S, int Nb, float scale_log2) {
  __global const ushort *q = (__global const ushort *)qg, *k = (__global const ushort *)kg,
                        *v = (__global const ushort *)vg;
  __local ushort vs[64 * V_S];
  __local ushort ps[64 * P_S];
  __local float red[64 * RED_S];
#ifdef AMD_EMULATE
  __local float emu_all[4 * AMD_EMU_FLOATS];
#endif
  const int lid = get_local_id(0), wave = lid / AMD_WAVE, lane = lid % AMD_WAVE, col = lane & 15;
#ifdef AMD_EMULATE
  __local float *emu = emu_all + wave * AMD_EMU_FLOATS;
#endif
  const int qb = get_group_id(1);
  const size_t bh = get_group_id(2), base = bh * (size_t)S * HEAD_DIM;
  const int q0 = block_start[qb], qn = block_start[qb + 1] - q0;
  const int r0 = 16 * wave; /* this wave's first row in the block */

  amd_frag qf[KD];
  for (int c = 0; c < KD; c++) qf[c] = load_rowfrag(q + base, (size_t)(q0 + r0), qn - r0, 16 * c, lane);
  amd_acc acc[KD];
  float m[AMD_NC], l[AMD_NC];
  for (int c = 0; c < KD; c++) acc[c] = (amd_acc)(0.0f);
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
    /* 1. V rows into vs, 8 words per work-item and step (zeros past the ragged tail). */
    for (int i = lid; i < 64 * (HEAD_DIM / 8); i += AMD_WG) {
      const int r = i / (HEAD_DIM / 8), c = 8 * (i % (HEAD_DIM / 8));
      ushort8 w = r < kn ? vload8(0, v + base + (size_t)(k0 + r) * HEAD_DIM + c) : (ushort8)(0);
      vstore8(w, 0, vs + r * V_S + c);
    }
    /* 2. S = Q Kᵀ: tile t holds the keys 16t .. 16t + 15. */
    amd_acc s[4];
    for (int t = 0; t < 4; t++) {
      s[t] = (amd_acc)(0.0f);
      for (int c = 0; c < KD; c++)
        s[t] = amd_mma(qf[c], load_rowfrag(k + base, (size_t)(k0 + 16 * t), kn - 16 * t, 16 * c, lane), s[t] AMD_EMU_PASS);
      AMD_TILE_FENCE();
    }
    /* 3. Scaled, masked scores and this lane's share of the row maxima. */
    float sv[4][AMD_NC];
    for (int r = 0; r < AMD_NC; r++) {
      float mx = -INFINITY;
      for (int t = 0; t < 4; t++) {
        const float x = 16 * t + col < kn ? amd_acc_get(s[t], r) * scale_log2 : -INFINITY;
        sv[t][r] = x;
        mx = fmax(mx, x);
      }
      red[(r0 + amd_acc_row(lane, r)) * RED_S + col] = mx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* 4. Online softmax over the 16 lanes of each row; P into ps, accumulators rescaled. */
    for (int r = 0; r < AMD_NC; r++) {
      const int rr = r0 + amd_acc_row(lane, r);
      float mx = m[r];
      for (int j = 0; j < 16; j++) mx = fmax(mx, red[rr * RED_S + j]);
      const float alpha = m[r] == -INFINITY ? 0.0f : exp2(m[r] - mx);
      m[r] = mx;
      float sum = 0.0f;
      for (int t = 0; t < 4; t++) {
        const float pv = sv[t][r] == -INFINITY ? 0.0f : exp2(sv[t][r] - mx);
        sum += pv;
        ps[rr * P_S + 16 * t + col] = amd_in_bits(pv);
      }
      l[r] = l[r] * alpha + sum;
      for (int c = 0; c < KD; c++) {
        __private float a[AMD_NC];
        *(__private amd_acc *)a = acc[c];
        a[r] *= alpha;
        acc[c] = *(__private amd_acc *)a;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* 5. O += P V, 16 keys per operation. */
    for (int t = 0; t < 4; t++) {
#if AMD_MATRIX == 1
      const amd_frag pf = vload4(0, ps + (r0 + col) * P_S + 16 * t + amd_a_k0(lane));
#else
      const amd_frag pf = vload16(0, ps + (r0 + col) * P_S + 16 * t);
#endif
      for (int c = 0; c < KD; c++) {
        __private ushort b[AMD_NA];
        for (int e = 0; e < AMD_NA; e++) b[e] = vs[(16 * t + amd_a_k0(lane) + e) * V_S + 16 * c + col];
        acc[c] = amd_mma(pf, *(__private const amd_frag *)b, acc[c] AMD_EMU_PASS);
      }
      AMD_TILE_FENCE();
    }
    barrier(CLK_LOCAL_MEM_FENCE); /* vs, ps and red are written again by the next block */
  }

  /* Row sums over the 16 lanes of each row, then O / sum (rows with no kept block: zeros). */
  for (int r = 0; r < AMD_NC; r++) red[(r0 + amd_acc_row(lane, r)) * RED_S + col] = l[r];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int r = 0; r < AMD_NC; r++) {
    const int rr = r0 + amd_acc_row(lane, r);
    if (rr >= qn) continue;
    float sum = 0.0f;
    for (int j = 0; j < 16; j++) sum += red[rr * RED_S + j];
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int c = 0; c < KD; c++) {
      const size_t at = base + (size_t)(q0 + rr) * HEAD_DIM + 16 * c + col;
      STORE(o, at, amd_acc_get(acc[c], r) * inv);
    }
  }
}
