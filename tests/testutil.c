#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

nabla_context *tu_context(void) {
  nabla_context *ctx = NULL;
  char err[2048];
  if (nabla_context_create(&ctx, NULL, err, sizeof err) != NABLA_OK) return NULL;
  return ctx;
}

int tu_group_setup(void **state) {
  nabla_context *ctx = tu_context();
  if (!ctx) {
    print_message("no OpenCL device: skipping device tests\n");
    *state = NULL;
    return 0;
  }
  *state = ctx;
  return 0;
}

int tu_group_teardown(void **state) {
  nabla_context_destroy(*state);
  return 0;
}

uint64_t tu_rand_u64(uint64_t *seed) {
  uint64_t x = *seed ? *seed : 0x9E3779B97F4A7C15ull;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *seed = x;
  return x * 0x2545F4914F6CDD1Dull;
}

double tu_rand_uniform(uint64_t *seed) { return (double)(tu_rand_u64(seed) >> 11) * 0x1.0p-53; }

double tu_rand_normal(uint64_t *seed) {
  double u1 = tu_rand_uniform(seed), u2 = tu_rand_uniform(seed);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void tu_fill_normal(double *x, size_t n, uint64_t *seed, double scale) {
  for (size_t i = 0; i < n; i++) x[i] = scale * tu_rand_normal(seed);
}

void tu_quantize(double *x, size_t n, nabla_dtype dtype) {
  for (size_t i = 0; i < n; i++) {
    float f = (float)x[i];
    if (dtype == NABLA_F16) f = nabla_f16_to_f32(nabla_f32_to_f16(f));
    else if (dtype == NABLA_BF16) f = nabla_bf16_to_f32(nabla_f32_to_bf16(f));
    x[i] = f;
  }
}

void *tu_pack(const double *x, size_t n, nabla_dtype dtype) {
  void *out = malloc(n * nabla_dtype_size(dtype) + 1);
  if (!out) return NULL;
  for (size_t i = 0; i < n; i++) {
    float f = (float)x[i];
    if (dtype == NABLA_F32) ((float *)out)[i] = f;
    else if (dtype == NABLA_F16) ((uint16_t *)out)[i] = nabla_f32_to_f16(f);
    else ((uint16_t *)out)[i] = nabla_f32_to_bf16(f);
  }
  return out;
}

void tu_unpack(const void *src, size_t n, nabla_dtype dtype, double *out) {
  for (size_t i = 0; i < n; i++) {
    if (dtype == NABLA_F32) out[i] = ((const float *)src)[i];
    else if (dtype == NABLA_F16) out[i] = nabla_f16_to_f32(((const uint16_t *)src)[i]);
    else out[i] = nabla_bf16_to_f32(((const uint16_t *)src)[i]);
  }
}

cl_mem tu_buffer_from(nabla_context *ctx, const double *x, size_t n, nabla_dtype dtype) {
  void *host = tu_pack(x, n, dtype);
  assert_non_null(host);
  cl_int err;
  size_t bytes = n * nabla_dtype_size(dtype);
  cl_mem buf = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              bytes ? bytes : 4, host, &err);
  assert_int_equal(err, CL_SUCCESS);
  free(host);
  return buf;
}

void tu_buffer_read(nabla_context *ctx, cl_mem buf, size_t n, nabla_dtype dtype, double *out) {
  size_t bytes = n * nabla_dtype_size(dtype);
  void *host = malloc(bytes + 1);
  assert_non_null(host);
  assert_int_equal(clEnqueueReadBuffer(nabla_context_queue(ctx), buf, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                   CL_SUCCESS);
  tu_unpack(host, n, dtype, out);
  free(host);
}

double tu_max_abs_diff(const double *a, const double *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs(a[i] - b[i]);
    if (d > m || d != d) m = d;
  }
  return m;
}

void tu_fill_video_like(const nabla_shape *s, double *x, uint64_t *seed, double amp) {
  /* Per head a few smooth spatial-temporal waves: nearby tokens get similar vectors, so pooled
   * blocks are distinct and the reduced softmax is peaked around neighbours. */
  int T = s->grid_t ? s->grid_t : 1, Ht = s->grid_t ? s->grid_h : 1, Wt = s->grid_t ? s->grid_w : s->seq;
  int D = s->head_dim;
  for (int bh = 0; bh < s->batch * s->heads; bh++) {
    double fr[8][3], ph[8];
    for (int c = 0; c < 8; c++) {
      for (int a = 0; a < 3; a++) fr[c][a] = 0.05 + 0.4 * tu_rand_uniform(seed);
      ph[c] = 6.28 * tu_rand_uniform(seed);
    }
    double *proj = malloc(sizeof(double) * 8 * (size_t)D);
    tu_fill_normal(proj, 8 * (size_t)D, seed, 1.0);
    for (int t = 0; t < T; t++)
      for (int h = 0; h < Ht; h++)
        for (int w = 0; w < Wt; w++) {
          size_t n = ((size_t)t * Ht + h) * Wt + w;
          double feat[8];
          for (int c = 0; c < 8; c++) feat[c] = cos(fr[c][0] * t + fr[c][1] * h + fr[c][2] * w + ph[c]);
          double *row = x + ((size_t)bh * s->seq + n) * D;
          for (int d = 0; d < D; d++) {
            double v = 0;
            for (int c = 0; c < 8; c++) v += feat[c] * proj[c * D + d];
            row[d] = amp * v + 0.3 * tu_rand_normal(seed);
          }
        }
    free(proj);
  }
}

void tu_remove_tree(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return;
  if (!S_ISDIR(sb.st_mode)) {
    unlink(path);
    return;
  }
  chmod(path, 0700); /* undo read-only test directories */
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      size_t len = strlen(path) + strlen(e->d_name) + 2;
      char *child = malloc(len);
      if (!child) break;
      snprintf(child, len, "%s/%s", path, e->d_name);
      tu_remove_tree(child);
      free(child);
    }
    closedir(d);
  }
  rmdir(path);
}

double tu_tolerance(nabla_dtype dtype) {
  return dtype == NABLA_F32 ? 2e-5 : dtype == NABLA_F16 ? 4e-3 : 3e-2;
}

double tu_attend_inputs_vs_reference(nabla_context *ctx, const nabla_shape *s, nabla_dtype dtype, double *q,
                                     double *k, double *v, const uint8_t *bitmap, int dense) {
  size_t n = (size_t)s->batch * s->heads * s->seq * s->head_dim;
  int nb = nabla_shape_blocks(s);
  size_t rows = (size_t)s->batch * s->heads * nb;
  double *ref = malloc(n * sizeof *ref), *out = malloc(n * sizeof *out);
  int32_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr), *col_idx = malloc(rows * nb * sizeof *col_idx);
  assert_non_null(ref), assert_non_null(out), assert_non_null(row_ptr), assert_non_null(col_idx);
  tu_quantize(q, n, dtype);
  tu_quantize(k, n, dtype);
  tu_quantize(v, n, dtype);
  nabla_ref_csr(s, bitmap, row_ptr, col_idx);
  nabla_ref_attention_sparse(s, q, k, v, row_ptr, col_idx, ref);

  cl_mem dq = tu_buffer_from(ctx, q, n, dtype), dk = tu_buffer_from(ctx, k, n, dtype);
  cl_mem dv = tu_buffer_from(ctx, v, n, dtype), dout = tu_buffer_from(ctx, q, n, dtype);
  nabla_mask *mask = NULL;
  if (!dense) assert_int_equal(nabla_mask_from_bitmap(ctx, s, bitmap, &mask), NABLA_OK);
  nabla_status st = nabla_attend(ctx, s, dtype, mask, dq, dk, dv, dout, 0, NULL, NULL);
  if (st != NABLA_OK) fail_msg("nabla_attend: %s", nabla_last_error(ctx));
  tu_buffer_read(ctx, dout, n, dtype, out);
  double err = tu_max_abs_diff(out, ref, n);
  nabla_mask_release(mask);
  clReleaseMemObject(dq), clReleaseMemObject(dk), clReleaseMemObject(dv), clReleaseMemObject(dout);
  free(ref), free(out), free(row_ptr), free(col_idx);
  return err;
}

double tu_attend_vs_reference(nabla_context *ctx, const nabla_shape *s, nabla_dtype dtype,
                              double density, double q_scale, uint64_t seed) {
  size_t n = (size_t)s->batch * s->heads * s->seq * s->head_dim;
  int nb = nabla_shape_blocks(s);
  size_t rows = (size_t)s->batch * s->heads * nb;
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
  uint8_t *bitmap = malloc(rows * nb);
  assert_non_null(q), assert_non_null(k), assert_non_null(v), assert_non_null(bitmap);
  tu_fill_normal(q, n, &seed, q_scale);
  tu_fill_normal(k, n, &seed, 1.0);
  tu_fill_normal(v, n, &seed, 1.0);
  for (size_t i = 0; i < rows * nb; i++) bitmap[i] = density < 0 || tu_rand_uniform(&seed) < density;
  if (density >= 0 && rows > 2) memset(bitmap + 2 * (size_t)nb, 0, nb); /* an empty row: zeros */
  double err = tu_attend_inputs_vs_reference(ctx, s, dtype, q, k, v, bitmap, density < 0);
  free(q), free(k), free(v), free(bitmap);
  return err;
}

/* ---- files and environment ------------------------------------------------------------- */

unsigned char *tu_slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) fail_msg("cannot open %s", path);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  long n = ftell(fp);
  assert_true(n >= 0);
  rewind(fp);
  unsigned char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
  fclose(fp);
  buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

void tu_spit(const char *path, const void *data, size_t len) {
  FILE *fp = fopen(path, "wb");
  if (!fp) fail_msg("cannot create %s", path);
  if (len) assert_int_equal(fwrite(data, 1, len, fp), len);
  assert_int_equal(fclose(fp), 0);
}

void tu_pathf(char *out, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out, cap, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= cap) fail_msg("path longer than %zu bytes: %s...", cap, out);
}

int tu_temp_dir(char *out, size_t cap, const char *tag) {
  const char *base = getenv("NABLACL_TEST_HELPER_DIR");
  const char *bases[2] = {base && base[0] ? base : "/tmp", "/tmp"};
  for (int i = 0; i < 2; i++) {
    int n = snprintf(out, cap, "%s/%s-XXXXXX", bases[i], tag);
    if (n > 0 && (size_t)n < cap && mkdtemp(out)) return 0;
  }
  return -1;
}

int tu_dir_open(tu_dir *d, const char *tag, int flags) {
  memset(d, 0, sizeof *d);
  if (tu_temp_dir(d->dir, sizeof d->dir, tag) != 0) return -1;
  if (snprintf(d->root, sizeof d->root, "%s/root", d->dir) >= (int)sizeof d->root) {
    tu_remove_tree(d->dir);
    return -1;
  }
  d->flags = flags;
  if (flags & TU_DIR_CACHE) {
    d->saved_cache = tu_env_save("NABLACL_CACHE_DIR");
    d->saved_kernels = tu_env_save("NABLACL_KERNEL_DIR");
    setenv("NABLACL_CACHE_DIR", d->root, 1);
    unsetenv("NABLACL_KERNEL_DIR");
  }
  return 0;
}

void tu_dir_close(tu_dir *d) {
  if (d->flags & TU_DIR_CACHE) {
    tu_env_restore(&d->saved_cache);
    tu_env_restore(&d->saved_kernels);
  }
  tu_remove_tree(d->dir);
}

static int dir_setup(void **state, int flags) {
  tu_dir *d = malloc(sizeof *d);
  if (!d || tu_dir_open(d, "nablacl-test", flags) != 0) {
    free(d);
    return -1;
  }
  *state = d;
  return 0;
}

int tu_dir_setup(void **state) { return dir_setup(state, TU_DIR_PLAIN); }

int tu_dir_setup_cache(void **state) { return dir_setup(state, TU_DIR_CACHE); }

int tu_dir_teardown(void **state) {
  tu_dir *d = *state;
  if (d) tu_dir_close(d);
  free(d);
  return 0;
}

tu_env tu_env_save(const char *name) {
  tu_env saved = {name, NULL};
  const char *v = getenv(name);
  if (v) saved.value = strdup(v);
  return saved;
}

void tu_env_restore(tu_env *saved) {
  if (saved->value) setenv(saved->name, saved->value, 1);
  else unsetenv(saved->name);
  free(saved->value);
  saved->value = NULL;
}
