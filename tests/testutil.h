/* Shared helpers of the cmocka tests. */
#ifndef NABLA_TESTUTIL_H
#define NABLA_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "nablacl.h"

/* Creates a context on the default device (NABLACL_DEVICE honoured); NULL when none exists. */
nabla_context *tu_context(void);

/* cmocka group setup/teardown that put a context in *state, or skip when there is no device. */
int tu_group_setup(void **state);
int tu_group_teardown(void **state);

/* Deterministic xorshift random numbers. */
uint64_t tu_rand_u64(uint64_t *seed);
double tu_rand_uniform(uint64_t *seed);          /* [0, 1) */
double tu_rand_normal(uint64_t *seed);           /* N(0, 1) */
void tu_fill_normal(double *x, size_t n, uint64_t *seed, double scale);

/* Rounds doubles through a storage dtype (what the device will see). */
void tu_quantize(double *x, size_t n, nabla_dtype dtype);
/* Packs doubles into host storage of `dtype` (float, f16 bits or bf16 bits); malloc'd. */
void *tu_pack(const double *x, size_t n, nabla_dtype dtype);
/* Unpacks storage of `dtype` into doubles. */
void tu_unpack(const void *src, size_t n, nabla_dtype dtype, double *out);

/* Device buffer holding `x` packed as dtype (blocking write). */
cl_mem tu_buffer_from(nabla_context *ctx, const double *x, size_t n, nabla_dtype dtype);
/* Blocking read of a device buffer of dtype into doubles. */
void tu_buffer_read(nabla_context *ctx, cl_mem buf, size_t n, nabla_dtype dtype, double *out);

double tu_max_abs_diff(const double *a, const double *b, size_t n);

/* Output tolerance of the device tests against float64 (max abs): f32 2e-5, f16 4e-3, bf16 3e-2. */
double tu_tolerance(nabla_dtype dtype);

/* One attention case: random Q (N(0, q_scale²)), K, V quantized to `dtype`, a random block mask
 * of `density` (dense, mask NULL, when density < 0; row 2 kept empty when sparse, so its output
 * must be zeros), nabla_attend with the context's current variant setting, compared with
 * nabla_ref_attention_sparse. Returns the max abs error; fails the test on any API error. */
double tu_attend_vs_reference(nabla_context *ctx, const nabla_shape *s, nabla_dtype dtype,
                              double density, double q_scale, uint64_t seed);

/* The second half of tu_attend_vs_reference, on the caller's inputs: q, k, v (B·H·S·D values,
 * tile order; quantized to `dtype` here) and a block bitmap (B·H·Nb rows of Nb); with `dense`
 * the device runs without a mask (the bitmap, all ones, serves the reference). Returns the max
 * abs error of nabla_attend against nabla_ref_attention_sparse; fails the test on any API error. */
double tu_attend_inputs_vs_reference(nabla_context *ctx, const nabla_shape *s, nabla_dtype dtype, double *q,
                                     double *k, double *v, const uint8_t *bitmap, int dense);

/* Removes a file or a directory tree (making read-only directories writable first); a missing
 * path is fine. Symbolic links are removed, never followed. */
void tu_remove_tree(const char *path);

/* The whole file at path, malloc'd, NUL-terminated after its *len bytes; fails the test if it
 * cannot be read. */
unsigned char *tu_slurp(const char *path, size_t *len);
/* Writes len bytes to path, replacing it; fails the test on any error. */
void tu_spit(const char *path, const void *data, size_t len);

/* snprintf into a buffer of cap bytes; a result that does not fit fails the test. */
__attribute__((format(printf, 3, 4))) void tu_pathf(char *out, size_t cap, const char *fmt, ...);

/* Creates a fresh directory <NABLACL_TEST_HELPER_DIR or /tmp>/<tag>-XXXXXX (under /tmp when the
 * helper directory cannot hold it) and writes its path to out; 0 on success, -1 if none could
 * be made. Remove it with tu_remove_tree. */
int tu_temp_dir(char *out, size_t cap, const char *tag);

/* A saved environment variable: tu_env_save before a test changes it, tu_env_restore after. */
typedef struct {
  const char *name;
  char *value; /* NULL: it was unset */
} tu_env;
tu_env tu_env_save(const char *name);
void tu_env_restore(tu_env *saved);

/* The shared fixture of a test that needs a private directory. tu_dir_open makes `dir` fresh
 * (tu_temp_dir) and names `root` = <dir>/root (not created: a cache root that appears on its
 * first write); with TU_DIR_CACHE, NABLACL_CACHE_DIR points at root and NABLACL_KERNEL_DIR is
 * unset until tu_dir_close, which restores both and removes the directory with everything in
 * it. */
#define TU_PATH_CAP 4096
enum { TU_DIR_PLAIN = 0, TU_DIR_CACHE = 1 };
typedef struct {
  char dir[TU_PATH_CAP];
  char root[TU_PATH_CAP];
  int flags;
  tu_env saved_cache, saved_kernels;
} tu_dir;
/* 0, or -1 when no directory could be made. */
int tu_dir_open(tu_dir *d, const char *tag, int flags);
void tu_dir_close(tu_dir *d);
/* cmocka setup and teardown with *state a malloc'd tu_dir (tag "nablacl-test"): plain, or with
 * the environment of TU_DIR_CACHE. */
int tu_dir_setup(void **state);
int tu_dir_setup_cache(void **state);
int tu_dir_teardown(void **state);

/* Video-like Q/K: smooth in space and time plus noise, so NABLA masks are non-trivial. */
void tu_fill_video_like(const nabla_shape *shape, double *x, uint64_t *seed, double amp);

#endif
