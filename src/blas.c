/*
 * The reduced map through CLBlast's strided batched GEMM, an alternative to cl/map.cl that the
 * tuner may choose (the select space's MAP_BLAS): CLBlast ships tuned GEMM parameters for many
 * AMD and Intel GPUs this project cannot tune itself.
 *
 * The library is opened at run time (libclblast.so.1, Debian's libclblast1), once per context,
 * so nablacl neither links nor requires it: without it MAP_BLAS=1 is simply unavailable. The
 * prototype and enum values below are CLBlast's C API (clblast_c.h, 1.5): row-major layout 101,
 * no transpose 111, transpose 112, success 0. CLBlast keeps compiled programs in a process-wide
 * cache keyed by the OpenCL context; releasing a context clears it, so a later context at the
 * same address never meets a stale program.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef int (*sgemm_strided_batched_fn)(int layout, int a_transpose, int b_transpose, size_t m, size_t n,
                                        size_t k, float alpha, cl_mem a, size_t a_offset, size_t a_ld,
                                        size_t a_stride, cl_mem b, size_t b_offset, size_t b_ld, size_t b_stride,
                                        float beta, cl_mem c, size_t c_offset, size_t c_ld, size_t c_stride,
                                        size_t batch_count, cl_command_queue *queue, cl_event *event);
typedef int (*clear_cache_fn)(void);

enum { BLAS_ROW_MAJOR = 101, BLAS_NO_TRANSPOSE = 111, BLAS_TRANSPOSE = 112 };

/* Copies a symbol's address into a function pointer (dlsym's void * does not convert in C). */
static int blas_sym(void *lib, const char *name, void *fn, size_t size) {
  void *p = dlsym(lib, name);
  if (p) memcpy(fn, &p, size);
  return p != NULL;
}

int nabla_blas_available(nabla_context *ctx) {
  nabla_blas *b = &ctx->blas;
  if (!b->tried) {
    b->tried = 1;
    b->lib = dlopen("libclblast.so.1", RTLD_NOW | RTLD_LOCAL);
    sgemm_strided_batched_fn gemm = NULL;
    if (!b->lib) {
      snprintf(b->why, sizeof b->why, "CLBlast (libclblast.so.1) is not installed");
    } else if (!blas_sym(b->lib, "CLBlastSgemmStridedBatched", &gemm, sizeof gemm)) {
      snprintf(b->why, sizeof b->why, "CLBlast lacks CLBlastSgemmStridedBatched (needs 1.5 or later)");
      dlclose(b->lib);
      b->lib = NULL;
    } else {
      memcpy(b->gemm, &gemm, sizeof gemm);
    }
  }
  return b->lib != NULL;
}

nabla_status nabla_blas_map(nabla_context *ctx, cl_mem pooled, cl_mem logits, int Nb, int ld, int D, int BH,
                            float scale, cl_event *event) {
  if (!nabla_blas_available(ctx)) return nabla_fail(ctx, NABLA_UNSUPPORTED, "%s", ctx->blas.why);
  sgemm_strided_batched_fn gemm = NULL;
  memcpy(&gemm, ctx->blas.gemm, sizeof gemm);
  const size_t n = (size_t)Nb, d = (size_t)D, rows = (size_t)BH * n;
  /* logits[z] = scale * qp[z] kp[z]ᵀ: qp = pooled rows [0, BH Nb), kp the next BH Nb rows. */
  int rc = gemm(BLAS_ROW_MAJOR, BLAS_NO_TRANSPOSE, BLAS_TRANSPOSE, n, n, d, scale, pooled, 0, d, n * d, pooled,
                rows * d, d, n * d, 0.0f, logits, 0, (size_t)ld, n * (size_t)ld, (size_t)BH, &ctx->queue, event);
  if (rc != 0) return nabla_fail(ctx, NABLA_OPENCL, "CLBlastSgemmStridedBatched failed (CLBlast status %d)", rc);
  return NABLA_OK;
}

void nabla_blas_release(nabla_context *ctx) {
  nabla_blas *b = &ctx->blas;
  clear_cache_fn clear = NULL;
  if (b->lib && blas_sym(b->lib, "CLBlastClearCache", &clear, sizeof clear)) clear();
  if (b->lib) dlclose(b->lib);
  memset(b, 0, sizeof *b);
}
