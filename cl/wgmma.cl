/*
 * Hopper warpgroup MMA primitives (wgmma.mma_async, sm_90a) for cl/attention_wgmma.cl and its
 * probe (cl/probe_wgmma.cl); the host prepends this file after cl/common.cl and cl/mma.cl.
 *
 * NVIDIA's OpenCL compiler emits PTX for sm_90, where wgmma does not exist, and has no option
 * for sm_90a. Every sm_90a-only instruction is therefore written as a PTX comment that begins
 * with the mark WG ("//@wg "): the first build compiles, and the host (src/ptxpatch.c) then
 * takes the program's PTX, removes the marks, retargets it to sm_90a and builds the program
 * again from that PTX. Without the patch the marked instructions do nothing, so a kernel built
 * from source alone is never launched.
 *
 * Operands (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"): a warpgroup
 * (4 warps, 128 work-items) computes D[64][N] += A[64][16] B[16][N]; warp w owns rows
 * 16w..16w+15, and within a warp the layouts are those of mma.m16n8k16 (cl/mma.cl):
 *   A in registers, a[4]: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..],
 *     a[3] = A[g+8][2t+8..] (rows relative to 16w; lane = 4g + t);
 *   D (fp32), N/2 registers: d[4i+0..1] = D[g][8i+2t..8i+2t+1], d[4i+2..3] = D[g+8][8i+2t..].
 *   B in local memory, through a 64-bit matrix descriptor (wg_desc): start address >> 4 in
 *     bits 0-13, leading byte offset >> 4 in 16-29, stride byte offset >> 4 in 32-45, and the
 *     swizzle mode in 62-63 (1 = 128-byte swizzle, the only mode used here).
 *
 * Tile layout in local memory (wg_tile_offset), for a 64-row block of K or V, row r (key),
 * column c (head dim): the columns are split in 64-wide halves of 64 rows x 128 bytes (8 KB
 * each); row r of a half starts at 128 r; its 16-byte chunk j (columns 8j..8j+7 of the half)
 * sits at chunk slot j ^ (r % 8): the 128-byte swizzle, which the hardware applies to the
 * address bits (so a tile must start on a 1024-byte boundary). The same bytes serve two roles:
 *   K as B of S = Q Kᵀ, "K-major" (B[k][n] = K[n][k], k = head dim): for the k-step of columns
 *     16s..16s+15 the start is half s / 4, plus 32 (s % 4) bytes; stride byte offset 1024 (the
 *     next 8 rows); the leading byte offset is unused;
 *   V as B of O = P V, "MN-major" (B[k][n] = V[k][n], transposed operand): for the k-step of
 *     rows 16s..16s+15 the start is 2048 s; leading byte offset 8192 (the next half, n += 64),
 *     stride byte offset 1024 (the next 8 rows, k += 8).
 * The probe checks exactly these products against the host, bit for bit.
 *
 * Ordering: local memory written by the work-items (cp.async included) must be made visible to
 * wgmma, which reads through the async proxy: each writer waits for its copies, runs
 * fence.proxy.async, then the work-group meets at a barrier (wg_stage_wait). Bulk copies
 * (cp.async.bulk, in cl/attention_wgmma.cl) write through the async proxy themselves and
 * complete on an mbarrier, whose phase each reader waits for. wgmma runs
 * asynchronously: wg_fence before a batch, wg_commit after it, and wg_wait0 before its results
 * (or the registers of its A operand) are touched again; wg_keep pins a register's value
 * around these points so that the compiler does not move reads or writes across them.
 *
 * NABLA_NO_PTX: every instruction is emulated (A fragments exchanged through local memory,
 * B read through the descriptor with the same address and swizzle arithmetic), so the kernels'
 * logic runs on any OpenCL device; WG_EMU_ARGS / WG_EMU_PASS carry the warpgroup's scratch
 * (wgemu), the local memory the descriptors address (arena) and the work-item's index in its
 * warpgroup (wlid).
 */
#define WG_TILE_HALF 8192 /* bytes of a 64-row x 64-column half of a tile */

/* Byte offset of row r, 16-byte chunk j (columns 8j..8j+7) in a tile. */
NABLA_INLINE uint wg_tile_offset(int r, int j) {
  return (uint)((j >> 3) * WG_TILE_HALF + r * 128 + (((j & 7) ^ (r & 7)) << 4));
}

/* The descriptor of a 128-byte-swizzled operand at local address addr. */
NABLA_INLINE ulong wg_desc(uint addr, uint lbo, uint sbo) {
  return (ulong)((addr & 0x3FFFFu) >> 4) | ((ulong)(lbo >> 4) << 16) | ((ulong)(sbo >> 4) << 32) |
         ((ulong)1 << 62);
}

#ifdef NABLA_NO_PTX
/* Per-work-group scratch of the emulation: the 4 A registers of each of the 128 work-items. */
#define WG_EMU_WORDS (128 * 4)
#define WG_EMU_ARGS , __local uint *wgemu, __local const uchar *arena, int lid
#define WG_EMU_PASS , wgemu, arena, wlid
/* The emulation's local addresses are offsets into the arena its descriptors address. */
#define WG_ADDR(p) ((uint)((__local const uchar *)(p) - arena))

NABLA_INLINE void wg_fence(void) {}
NABLA_INLINE void wg_commit(void) {}
NABLA_INLINE void wg_wait0(void) {}
NABLA_INLINE void fence_proxy_async(void) {}
#define wg_keep(x) ((void)0)

/* Element k (0..15) of row m (0..63) of A, from the exchanged registers. */
NABLA_INLINE float wg_emu_a(__local const uint *wgemu, int m, int k) {
  int lane = 4 * (m & 7) + ((k & 7) >> 1), reg = ((m >> 3) & 1) + 2 * (k >> 3);
  uint w = wgemu[(32 * (m >> 4) + lane) * 4 + reg];
  return emu_half((k & 1) ? w >> 16 : w);
}

/* Element (k, n) of B through the descriptor; trans: MN-major. */
NABLA_INLINE float wg_emu_b(__local const uchar *arena, ulong desc, int k, int n, int trans) {
  uint start = (uint)(desc & 0x3FFFu) << 4, lbo = (uint)((desc >> 16) & 0x3FFFu) << 4;
  uint sbo = (uint)((desc >> 32) & 0x3FFFu) << 4;
  uint addr = trans ? start + (uint)(n >> 6) * lbo + (uint)(k >> 3) * sbo + (uint)(k & 7) * 128u + 2u * (uint)(n & 63)
                    : start + (uint)(n >> 3) * sbo + (uint)(n & 7) * 128u + 2u * (uint)k;
  addr ^= ((addr >> 7) & 7u) << 4;
  return emu_half(*(__local const ushort *)(arena + addr));
}

NABLA_INLINE void wg_mma_emu(float *d, const uint *a, ulong desc, int accumulate, int n, int trans WG_EMU_ARGS) {
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int i = 0; i < 4; i++) wgemu[lid * 4 + i] = a[i];
  barrier(CLK_LOCAL_MEM_FENCE);
  const int lane = lid & 31, g = lane >> 2, t = lane & 3, m0 = 16 * (lid >> 5);
  for (int i = 0; i < n / 8; i++)
    for (int e = 0; e < 4; e++) {
      int m = m0 + g + 8 * (e >> 1), c = 8 * i + 2 * t + (e & 1);
      float acc = accumulate ? d[4 * i + e] : 0.0f;
      for (int k = 0; k < 16; k++) acc = fma(wg_emu_a(wgemu, m, k), wg_emu_b(arena, desc, k, c, trans), acc);
      d[4 * i + e] = acc;
    }
}
#define wg_mma_n64(d, a, desc, acc) wg_mma_emu(d, a, desc, acc, 64, 0 WG_EMU_PASS)
#define wg_mma_n64t(d, a, desc, acc) wg_mma_emu(d, a, desc, acc, 64, 1 WG_EMU_PASS)
#define wg_mma_n128t(d, a, desc, acc) wg_mma_emu(d, a, desc, acc, 128, 1 WG_EMU_PASS)

#else /* real PTX */
#define WG_EMU_ARGS
#define WG_EMU_PASS
#define WG_ADDR(p) ((uint)(size_t)(p)) /* a __local pointer as an integer is its .shared address */
#define WG "//@wg "
#if MMA_IN == 1
#define WG_TYPES ".f16.f16"
#else
#define WG_TYPES ".bf16.bf16"
#endif

NABLA_INLINE void wg_fence(void) { asm volatile(WG "wgmma.fence.sync.aligned;" ::: "memory"); }
NABLA_INLINE void wg_commit(void) { asm volatile(WG "wgmma.commit_group.sync.aligned;" ::: "memory"); }
NABLA_INLINE void wg_wait0(void) { asm volatile(WG "wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
NABLA_INLINE void fence_proxy_async(void) { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
#define wg_keep(x) asm volatile("" : "+f"(x) :: "memory")

/* One wgmma.m64nNk16 with A from registers a[0..3] and B through desc, K-major (TRANS "0") or
 * MN-major ("1"), D += A B where accumulate is set, else D = A B. DPH lists D's placeholders
 * (%0 .. %(N/2 - 1)), APH, DESCPH and SCALEPH those of a, desc and accumulate after them; the
 * variable arguments are D's N/2 "+f" operands. */
#define WG_MMA_ASM(N, TRANS, DPH, APH, DESCPH, SCALEPH, ...)                                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " SCALEPH ", 0;\n" WG                               \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32" WG_TYPES " {" DPH "}, {" APH "}, " DESCPH \
               ", p, 1, 1, " TRANS ";\n}"                                                             \
               : __VA_ARGS__                                                                          \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(accumulate))
/* d[i] .. d[i + 7] and d[i] .. d[i + 31] as "+f" operands. */
#define WG_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                 "+f"(d[i + 6]), "+f"(d[i + 7])
#define WG_D32(i) WG_D8(i), WG_D8(i + 8), WG_D8(i + 16), WG_D8(i + 24)
/* Placeholders %t0 .. %t9 (t a decimal digit), %0 .. %31 and %0 .. %63. */
#define WG_P10(t) "%" #t "0, %" #t "1, %" #t "2, %" #t "3, %" #t "4, %" #t "5, %" #t "6, %" #t "7, %" #t "8, %" #t "9, "
#define WG_P32 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, " WG_P10(1) WG_P10(2) "%30, %31"
#define WG_P64 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, " WG_P10(1) WG_P10(2) WG_P10(3) WG_P10(4) WG_P10(5) \
               "%60, %61, %62, %63"

/* D[64][64] (+)= A[64][16] (registers) x B[16][64], B K-major (desc). */
NABLA_INLINE void wg_mma_n64(float *d, const uint *a, ulong desc, int accumulate) {
  WG_MMA_ASM(64, "0", WG_P32, "%32, %33, %34, %35", "%36", "%37", WG_D32(0));
}

/* D[64][64] (+)= A[64][16] (registers) x B[16][64], B MN-major (desc). */
NABLA_INLINE void wg_mma_n64t(float *d, const uint *a, ulong desc, int accumulate) {
  WG_MMA_ASM(64, "1", WG_P32, "%32, %33, %34, %35", "%36", "%37", WG_D32(0));
}

/* D[64][128] (+)= A[64][16] (registers) x B[16][128], B MN-major (desc). */
NABLA_INLINE void wg_mma_n128t(float *d, const uint *a, ulong desc, int accumulate) {
  WG_MMA_ASM(128, "1", WG_P64, "%64, %65, %66, %67", "%68", "%69", WG_D32(0), WG_D32(32));
}

#endif

/* Waits for this work-item's copies into local memory, makes them visible to wgmma, then waits
 * for the work-group. */
NABLA_INLINE void wg_stage_wait(void) {
#if MMA_CPASYNC
  cp_async_wait_all();
#endif
  fence_proxy_async();
  barrier(CLK_LOCAL_MEM_FENCE);
}

/* Copies rows [0, kn) of a 64-row block with `row_chunks` 16-byte chunks per row (src = its first
 * row) into the tile at dst, zero-filling the other rows; nthreads work-items, this one lid. */
NABLA_INLINE void wg_stage_tile(__local uchar *dst, __global const uint4 *src, int kn, int row_chunks,
                          int lid, int nthreads) {
  const int total = 64 * row_chunks;
  for (int c = lid; c < total; c += nthreads) {
    int r = c / row_chunks, j = c - r * row_chunks;
    __local uint4 *d = (__local uint4 *)(dst + wg_tile_offset(r, j));
#if MMA_CPASYNC
    cp_async16(d, r < kn ? src + r * row_chunks + j : src, r < kn ? 16u : 0u);
#else
    *d = r < kn ? src[r * row_chunks + j] : (uint4)(0u);
#endif
  }
#if MMA_CPASYNC
  cp_async_commit();
#endif
}
