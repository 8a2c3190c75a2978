/*
 * kernel_modules — builds and runs every kernel module the library makes on this device with
 * the library's own build options, plus -cl-opt-disable, and optionally writes each module out.
 *
 *   kernel_modules [--optimize] [--dump DIR] [--only VARIANT[,DTYPE]] [--amd]
 *
 * clCreateProgramWithSource and clBuildProgram are wrapped (-Wl,--wrap): each program the
 * library builds is recorded (source text and options) and built with " -cl-opt-disable"
 * appended, unless --optimize. With the disk cache off every module is built from source. The
 * run covers every stage: mask builds (pool, reduced map, select, STA, CSR, FlexAttention's
 * layout) and dense and sparse attention with each variant that runs on any device (portable,
 * cpu-rows and the registry's test aids, the tensor-core kernels emulated) in f32, f16 and bf16,
 * and the reorder.
 * Every attention output is compared with the float64 reference. It fails unless every stage
 * file was built (the probes of the real tensor-core variants only on their hardware).
 *
 * --dump DIR writes DIR/NN-<stage>.cl (the exact source) and DIR/NN-<stage>.opts (the options,
 * one line, without -cl-opt-disable) for each distinct module, so other compilers (clang for
 * AMD at -O0, ocloc) can build the same modules: docs/testing.md.
 *
 * --only runs just one variant (and dtype) on a smaller problem (one head of two blocks), e.g.
 * for an interpreter such as oclgrind; the check that every stage was built is then skipped.
 *
 * --amd makes the library choose as on an AMD GPU (the context's vendor, work-group limit and
 * local memory replaced, as tests/kernel_dump does): work-groups of 256 and the AMD tuning
 * defaults, so the portable attention's AMD shape runs here (under oclgrind, say). The real
 * variants' probes are then left out.
 *
 * Exit status: 0 all built and correct, 1 a failure (printed), 2 bad usage, 77 no device.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "kernels.h"
#include "nablacl.h"
#include "registry.h"

#define MAX_MODULES 128

typedef struct {
  char *source;
  char *options;
} module;

/* The wrappers' record: a test program, so file-scope state is acceptable here. */
static module modules[MAX_MODULES];
static int module_count;
static int opt_disable = 1;
static const char *pending_source; /* the source of the program being created */

cl_program __real_clCreateProgramWithSource(cl_context c, cl_uint n, const char **strings,
                                            const size_t *lengths, cl_int *rc);
cl_program __wrap_clCreateProgramWithSource(cl_context c, cl_uint n, const char **strings,
                                            const size_t *lengths, cl_int *rc) {
  pending_source = n == 1 ? strings[0] : NULL;
  return __real_clCreateProgramWithSource(c, n, strings, lengths, rc);
}

static void record(const char *source, const char *options) {
  for (int i = 0; i < module_count; i++)
    if (!strcmp(modules[i].source, source) && !strcmp(modules[i].options, options)) return;
  if (module_count == MAX_MODULES) return;
  modules[module_count].source = strdup(source);
  modules[module_count].options = strdup(options);
  if (modules[module_count].source && modules[module_count].options) module_count++;
}

cl_int __real_clBuildProgram(cl_program p, cl_uint n, const cl_device_id *devs, const char *options,
                             void (*notify)(cl_program, void *), void *user);
cl_int __wrap_clBuildProgram(cl_program p, cl_uint n, const cl_device_id *devs, const char *options,
                             void (*notify)(cl_program, void *), void *user) {
  const char *opts = options ? options : "";
  if (!pending_source) return __real_clBuildProgram(p, n, devs, options, notify, user); /* binary */
  record(pending_source, opts);
  pending_source = NULL;
  if (!opt_disable) return __real_clBuildProgram(p, n, devs, options, notify, user);
  size_t len = strlen(opts) + 32;
  char *more = malloc(len);
  if (!more) return CL_OUT_OF_HOST_MEMORY;
  snprintf(more, len, "%s -cl-opt-disable", opts);
  cl_int rc = __real_clBuildProgram(p, n, devs, more, notify, user);
  free(more);
  return rc;
}

/* The stage a recorded source ends with (the library appends "<stage text>\n"). */
static const char *stage_of(const char *source) {
  size_t n = strlen(source);
  const char *best = "unknown";
  size_t best_len = 0;
  for (size_t i = 0; i < nabla_kernel_source_count; i++) {
    size_t m = nabla_kernel_sources[i].size;
    if (m + 1 <= n && m > best_len && !memcmp(source + n - m - 1, nabla_kernel_sources[i].text, m)) {
      best = nabla_kernel_sources[i].name;
      best_len = m;
    }
  }
  return best;
}

/* A stage file is one that holds a __kernel (the preludes common, mma, wgmma hold none). */
static int is_stage(const nabla_kernel_source *s) {
  return !strncmp(s->text, "__kernel", 8) || strstr(s->text, "\n__kernel") != NULL;
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static double uniform(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static void quantize(double *x, size_t n, nabla_dtype dt) {
  for (size_t i = 0; i < n; i++)
    x[i] = dt == NABLA_F16 ? nabla_f16_to_f32(nabla_f32_to_f16((float)x[i]))
           : dt == NABLA_BF16 ? nabla_bf16_to_f32(nabla_f32_to_bf16((float)x[i]))
                              : (double)(float)x[i];
}

static void *pack(const double *x, size_t n, nabla_dtype dt) {
  void *p = malloc(n * nabla_dtype_size(dt));
  for (size_t i = 0; p && i < n; i++) {
    if (dt == NABLA_F32) ((float *)p)[i] = (float)x[i];
    else if (dt == NABLA_F16) ((uint16_t *)p)[i] = nabla_f32_to_f16((float)x[i]);
    else ((uint16_t *)p)[i] = nabla_f32_to_bf16((float)x[i]);
  }
  return p;
}

static double unpacked(const void *p, size_t i, nabla_dtype dt) {
  if (dt == NABLA_F32) return ((const float *)p)[i];
  if (dt == NABLA_F16) return nabla_f16_to_f32(((const uint16_t *)p)[i]);
  return nabla_bf16_to_f32(((const uint16_t *)p)[i]);
}

static int fail(nabla_context *ctx, const char *what, nabla_status st) {
  fprintf(stderr, "kernel_modules: %s: %s: %s\n", what, nabla_status_str(st), nabla_last_error(ctx));
  return 1;
}

/* Mask build + sparse + dense attention of one dtype with the context's forced variant. */
static int run_case(nabla_context *ctx, nabla_dtype dt, const char *variant, int small) {
  const nabla_shape s = small ? (nabla_shape){1, 1, 128, 64, 1, 8, 16} : (nabla_shape){1, 2, 256, 64, 1, 16, 16};
  const size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim;
  const int nb = nabla_shape_blocks(&s);
  const size_t rows = (size_t)s.batch * s.heads * nb;
  double *x = malloc(3 * n * sizeof *x), *ref = malloc(n * sizeof *ref);
  uint8_t *bitmap = malloc(rows * nb);
  int32_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr), *col_idx = malloc(rows * nb * sizeof *col_idx);
  int32_t *kv_num = malloc(rows * sizeof *kv_num), *kv_idx = malloc(rows * nb * sizeof *kv_idx);
  void *host[3] = {NULL, NULL, NULL}, *out = malloc(n * nabla_dtype_size(dt));
  const size_t pn = rows * (size_t)s.head_dim; /* block means of Q, then of K */
  double *means = malloc(2 * pn * sizeof *means);
  uint8_t *want = malloc(rows * nb), *near = malloc(rows);
  void *mhost[2] = {NULL, NULL};
  cl_mem buf[4] = {NULL, NULL, NULL, NULL}, mbuf[2] = {NULL, NULL};
  nabla_mask *mask = NULL;
  nabla_algo algo;
  char err[256], what[160];
  int bad = 1;
  nabla_status st = NABLA_OK;
  cl_int rc = CL_SUCCESS;
  if (!x || !ref || !bitmap || !row_ptr || !col_idx || !kv_num || !kv_idx || !out || !means || !want || !near)
    goto done;
  for (size_t i = 0; i < 3 * n; i++) x[i] = uniform();
  quantize(x, 3 * n, dt);
  for (int t = 0; t < 4; t++) {
    if (t < 3 && !(host[t] = pack(x + t * n, n, dt))) goto done;
    buf[t] = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE | (t < 3 ? CL_MEM_COPY_HOST_PTR : 0),
                            n * nabla_dtype_size(dt), t < 3 ? host[t] : NULL, &rc);
    if (rc != CL_SUCCESS) {
      fprintf(stderr, "kernel_modules: clCreateBuffer failed (%d)\n", (int)rc);
      goto done;
    }
  }
  nabla_algo_parse("nabla-0.6_sta-1-1-1", &algo, err, sizeof err);
  snprintf(what, sizeof what, "%s %s mask build", variant, nabla_dtype_name(dt));
  if ((st = nabla_mask_build(ctx, &algo, &s, dt, buf[0], buf[1], &mask, 0, NULL, NULL)) != NABLA_OK ||
      (st = nabla_mask_read_bitmap(ctx, mask, bitmap, rows * nb)) != NABLA_OK) {
    bad = fail(ctx, what, st);
    goto done;
  }
  /* FlexAttention's layout (csr_flex) against the reference CSR of that bitmap. */
  snprintf(what, sizeof what, "%s %s flex layout", variant, nabla_dtype_name(dt));
  if ((st = nabla_mask_read_flex(ctx, mask, kv_num, rows, kv_idx, rows * nb)) != NABLA_OK) {
    bad = fail(ctx, what, st);
    goto done;
  }
  nabla_ref_csr(&s, bitmap, row_ptr, col_idx);
  for (size_t r = 0; r < rows; r++)
    for (int j = 0; j < nb; j++) {
      int32_t n_r = row_ptr[r + 1] - row_ptr[r];
      if (kv_num[r] != n_r || kv_idx[r * nb + j] != (j < n_r ? col_idx[row_ptr[r] + j] : 0)) {
        fprintf(stderr, "kernel_modules: %s differs from the reference CSR at row %zu\n", what, r);
        goto done;
      }
    }
  /* The same mask from block means (pool.cl's POOL_UNIT pass, and the variant's map): rows
   * equal to the reference's but those within 1e-6 of the threshold. */
  snprintf(what, sizeof what, "%s mask from means", variant);
  nabla_ref_pool(&s, x, means);
  nabla_ref_pool(&s, x + n, means + pn);
  for (int t = 0; t < 2; t++) {
    if (!(mhost[t] = pack(means + t * pn, pn, NABLA_F32))) goto done;
    mbuf[t] = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                             pn * sizeof(float), mhost[t], &rc);
    if (rc != CL_SUCCESS) goto done;
  }
  nabla_mask *from_means = NULL;
  if ((st = nabla_mask_build_from_means(ctx, &algo, &s, mbuf[0], mbuf[1], &from_means, 0, NULL, NULL)) != NABLA_OK ||
      (st = nabla_mask_read_bitmap(ctx, from_means, want, rows * nb)) != NABLA_OK) {
    nabla_mask_release(from_means);
    bad = fail(ctx, what, st);
    goto done;
  }
  nabla_mask_release(from_means);
  uint8_t *ref_bits = (uint8_t *)ref; /* ref is free until the attention below */
  nabla_ref_mask(&s, &algo, x, x + n, ref_bits, near, 1e-6);
  for (size_t r = 0; r < rows; r++)
    if (!near[r] && memcmp(want + r * nb, ref_bits + r * nb, (size_t)nb) != 0) {
      fprintf(stderr, "kernel_modules: %s differs from the reference at row %zu\n", what, r);
      goto done;
    }
  /* nvidia-wgmma's twin also with two work-groups per query block (WG_SPLIT 2), whose partials
   * meet through global memory. */
  const int passes = strcmp(variant, "nvidia-wgmma-emulated") == 0 ? 4 : 2;
  for (int pass = 0; pass < passes; pass++) {
    const int dense = pass & 1;
    if (pass == 2 && (st = nabla_knob_set(ctx, "WG_SPLIT", "2")) != NABLA_OK) {
      bad = fail(ctx, "WG_SPLIT", st);
      goto done;
    }
    snprintf(what, sizeof what, "%s %s %s attention%s", variant, nabla_dtype_name(dt), dense ? "dense" : "sparse",
             pass >= 2 ? ", key halves" : "");
    if (dense) memset(bitmap, 1, rows * nb);
    else if ((st = nabla_mask_read_bitmap(ctx, mask, bitmap, rows * nb)) != NABLA_OK) {
      bad = fail(ctx, what, st);
      goto done;
    }
    nabla_ref_csr(&s, bitmap, row_ptr, col_idx);
    nabla_ref_attention_sparse(&s, x, x + n, x + 2 * n, row_ptr, col_idx, ref);
    if ((st = nabla_attend(ctx, &s, dt, dense ? NULL : mask, buf[0], buf[1], buf[2], buf[3], 0, NULL, NULL)) != NABLA_OK) {
      bad = fail(ctx, what, st);
      goto done;
    }
    rc = clEnqueueReadBuffer(nabla_context_queue(ctx), buf[3], CL_TRUE, 0, n * nabla_dtype_size(dt), out, 0, NULL, NULL);
    if (rc != CL_SUCCESS) goto done;
    double worst = 0, tol = dt == NABLA_F32 ? 2e-5 : dt == NABLA_F16 ? 4e-3 : 3e-2;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(unpacked(out, i, dt) - ref[i]));
    /* A variant whose kernel needs more local memory than the device has is not eligible (the
     * portable kernel ran, and its module was still built): said, not a failure. */
    if (strcmp(nabla_variant_last(ctx), variant) != 0 && strstr(nabla_variant_note(ctx), "bytes of local memory"))
      printf("kernel_modules: %s: %s\n", what, nabla_variant_note(ctx));
    else if (strcmp(nabla_variant_last(ctx), variant) != 0) worst = INFINITY;
    if (!(worst <= tol)) {
      fprintf(stderr, "kernel_modules: %s: ran %s, max abs error %.3g (tolerance %.3g)%s%s\n", what,
              nabla_variant_last(ctx), worst, tol, *nabla_variant_note(ctx) ? ": " : "", nabla_variant_note(ctx));
      goto done;
    }
  }
  nabla_knob_set(ctx, "WG_SPLIT", NULL);
  /* A pure STA mask has a kernel of its own (NABLA+STA fuses the window into the selection). */
  snprintf(what, sizeof what, "%s %s STA mask", variant, nabla_dtype_name(dt));
  nabla_mask_release(mask);
  mask = NULL;
  nabla_algo_parse("sta-3-1-1", &algo, err, sizeof err);
  if ((st = nabla_mask_build(ctx, &algo, &s, dt, buf[0], buf[1], &mask, 0, NULL, NULL)) != NABLA_OK ||
      (st = nabla_mask_read_bitmap(ctx, mask, bitmap, rows * nb)) != NABLA_OK) {
    bad = fail(ctx, what, st);
    goto done;
  }
  nabla_ref_mask(&s, &algo, NULL, NULL, (uint8_t *)ref, NULL, 0.0);
  if (memcmp(ref, bitmap, rows * nb) != 0) {
    fprintf(stderr, "kernel_modules: %s differs from the reference\n", what);
    goto done;
  }
  snprintf(what, sizeof what, "%s reorder", nabla_dtype_name(dt));
  for (int dir = 0; dir < 2; dir++)
    if ((st = nabla_reorder(ctx, &s, dt, (nabla_reorder_dir)dir, buf[dir], buf[3], 0, NULL, NULL)) != NABLA_OK) {
      bad = fail(ctx, what, st);
      goto done;
    }
  bad = clFinish(nabla_context_queue(ctx)) != CL_SUCCESS;
done:
  nabla_mask_release(mask);
  for (int t = 0; t < 4; t++)
    if (buf[t]) clReleaseMemObject(buf[t]);
  for (int t = 0; t < 3; t++) free(host[t]);
  for (int t = 0; t < 2; t++) {
    if (mbuf[t]) clReleaseMemObject(mbuf[t]);
    free(mhost[t]);
  }
  free(means), free(want), free(near);
  free(x), free(ref), free(bitmap), free(row_ptr), free(col_idx), free(kv_num), free(kv_idx), free(out);
  return bad;
}

static int dump(const char *dir) {
  char path[4096];
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "kernel_modules: cannot create %s: %s\n", dir, strerror(errno));
    return 1;
  }
  for (int i = 0; i < module_count; i++) {
    for (int part = 0; part < 2; part++) {
      snprintf(path, sizeof path, "%s/%02d-%s.%s", dir, i, stage_of(modules[i].source), part ? "opts" : "cl");
      FILE *f = fopen(path, "w");
      if (!f || fprintf(f, part ? "%s\n" : "%s", part ? modules[i].options : modules[i].source) < 0 || fclose(f) != 0) {
        fprintf(stderr, "kernel_modules: cannot write %s\n", path);
        return 1;
      }
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *dump_dir = NULL, *only = NULL;
  int amd = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--optimize")) opt_disable = 0;
    else if (!strcmp(argv[i], "--amd")) amd = 1;
    else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump_dir = argv[++i];
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else {
      fprintf(stderr, "usage: kernel_modules [--optimize] [--dump DIR] [--only VARIANT[,DTYPE]] [--amd]\n");
      return 2;
    }
  }
  setenv("NABLACL_CACHE_DIR", "off", 1); /* every module from source */
  unsetenv("NABLACL_VARIANT");
  nabla_context *ctx = NULL;
  char err[512];
  if (nabla_context_create(&ctx, NULL, err, sizeof err) != NABLA_OK) {
    fprintf(stderr, "kernel_modules: no device: %s\n", err);
    return 77;
  }
  if (amd) {
    ctx->caps.vendor = NABLA_VENDOR_AMD;
    ctx->caps.is_cpu = 0, ctx->caps.is_gpu = 1, ctx->caps.local_mem = 65536, ctx->caps.max_wg = 256;
    snprintf(ctx->caps.arch, sizeof ctx->caps.arch, "gfx90a");
  }
  /* Every variant that runs on any device: portable, cpu-rows and the registry's test aids (the
   * tensor-core kernels with their instructions emulated). */
#define KM_VARIANT(id, ENUM, name, ops, aid) \
  if (aid || NABLA_VARIANT_##ENUM == NABLA_VARIANT_PORTABLE || NABLA_VARIANT_##ENUM == NABLA_VARIANT_CPU_ROWS) \
    variants[nvariants] = name, emulated[nvariants++] = aid;
  const char *variants[NABLA_VARIANT_COUNT];
  int emulated[NABLA_VARIANT_COUNT], nvariants = 0;
  NABLA_VARIANT_LIST(KM_VARIANT)
#undef KM_VARIANT
  static const nabla_dtype dtypes[] = {NABLA_F32, NABLA_F16, NABLA_BF16};
  int bad = 0;
  char only_variant[64] = "";
  const char *only_dtype = NULL;
  if (only) {
    snprintf(only_variant, sizeof only_variant, "%s", only);
    char *comma = strchr(only_variant, ',');
    if (comma) *comma = '\0', only_dtype = comma + 1;
  }
  for (int v = 0; v < nvariants; v++) {
    if (only && strcmp(only_variant, variants[v]) != 0) continue;
    nabla_variant_force(ctx, variants[v]);
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++) {
      /* The tensor-core variants take f16/bf16 only. */
      if (emulated[v] && dtypes[d] == NABLA_F32) continue;
      if (only_dtype && strcmp(only_dtype, nabla_dtype_name(dtypes[d])) != 0) continue;
      bad |= run_case(ctx, dtypes[d], variants[v], only != NULL);
    }
  }
  /* The real variants' probes (built only where their instructions exist). */
#define KM_PROBE(id, ENUM, name, ops, aid) \
  if (!aid && !amd) nabla_variant_supported(ctx, name);
  NABLA_VARIANT_LIST(KM_PROBE)
#undef KM_PROBE
  for (size_t i = 0; i < nabla_kernel_source_count && !only; i++) {
    const nabla_kernel_source *src = &nabla_kernel_sources[i];
    if (!is_stage(src)) continue;
    if (!strncmp(src->name, "probe_", 6)) continue; /* the real probes build only on their hardware */
    int seen = 0;
    for (int m = 0; m < module_count && !seen; m++) seen = !strcmp(stage_of(modules[m].source), src->name);
    if (!seen) {
      fprintf(stderr, "kernel_modules: stage %s was never built\n", src->name);
      bad = 1;
    }
  }
  if (dump_dir && dump(dump_dir)) bad = 1;
  printf("kernel_modules: %d modules built%s%s\n", module_count, opt_disable ? " with -cl-opt-disable" : "",
         bad ? ", FAILED" : ", all ran and matched the reference");
  nabla_context_destroy(ctx);
  for (int i = 0; i < module_count; i++) free(modules[i].source), free(modules[i].options);
  return bad;
}
