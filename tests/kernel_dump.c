/*
 * kernel_dump: every program the library builds for a simulated device, as source files and a
 * manifest, for offline compilers (tools/amd_gate.py feeds them to clang's AMDGPU back end).
 *
 * It opens a context on whatever OpenCL device there is (PoCL in CI), replaces the context's
 * device capabilities with those of the target named on the command line, and then runs the
 * library's own calls (mask builds, attention in every dtype and head dim, optionally every
 * tuner candidate of the portable attention) with the context's program hook recording the
 * stage name, the build options and the complete source of each program just before it is
 * built. So the options are the library's own, never re-derived: built-in defaults of the
 * device class, the selection's split for each row length, the variant choice. Programs that
 * only the real device can build (matrix-core kernels on PoCL) are recorded all the same and
 * then fall back on the host device, as they would on a device whose probe fails.
 *
 *   kernel_dump --target gfx90a --out DIR [--candidates]
 *
 * DIR/manifest.jsonl: one JSON object a line {"id", "stage", "options", "default", "what"};
 * DIR/<id>.cl the source. "default" is 1 for what the library builds by default for that
 * target (no tuning); candidates of the tuner are 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "diskcache.h"
#include "internal.h"
#include "nablacl.h"
#include "tune.h"
#include "variant.h"

typedef struct {
  const char *arch;
  unsigned compute_units;
} target_profile;

/* Device classes as ROCm's OpenCL reports them: 64 KiB of local memory per work-group and
 * work-groups of at most 256 work-items on every one of these (CL_DEVICE_MAX_WORK_GROUP_SIZE). */
static const target_profile profiles[] = {
    {"gfx90a", 104}, /* MI210 / one MI250X die: CDNA2 */
    {"gfx940", 304}, /* CDNA3 as clang-15 knows it (it lacks the MI300X's gfx942) */
    {"gfx942", 304}, /* MI300X, for clang-19 (tools/amd_gate.py --llvm 19) */
    {"gfx1030", 72}, /* RDNA2 */
    {"gfx1100", 96}, /* RDNA3 */
};

typedef struct {
  FILE *manifest;
  const char *dir;
  int count, is_default;
  const char *what;
  char seen[512][400];
  int nseen;
} dump_state;

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
    else fputc(*s, f);
  }
  fputc('"', f);
}

static void record(void *user, const char *name, const char *options, const char *source) {
  dump_state *d = user;
  char key[400];
  snprintf(key, sizeof key, "%s|%s", name, options);
  for (int i = 0; i < d->nseen; i++)
    if (strcmp(d->seen[i], key) == 0) return;
  if (d->nseen < 512) snprintf(d->seen[d->nseen++], sizeof d->seen[0], "%s", key);
  char path[4096];
  snprintf(path, sizeof path, "%s/%03d.cl", d->dir, d->count);
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "kernel_dump: cannot write %s\n", path);
    exit(1);
  }
  fputs(source, f);
  fclose(f);
  fprintf(d->manifest, "{\"id\": \"%03d\", \"stage\": ", d->count);
  json_string(d->manifest, name);
  fprintf(d->manifest, ", \"options\": ");
  json_string(d->manifest, options);
  fprintf(d->manifest, ", \"default\": %d, \"what\": ", d->is_default);
  json_string(d->manifest, d->what);
  fprintf(d->manifest, "}\n");
  d->count++;
}

static cl_mem random_buffer(nabla_context *ctx, size_t n, nabla_dtype dtype, unsigned seed) {
  size_t es = nabla_dtype_size(dtype);
  unsigned char *h = malloc(n * es);
  if (!h) return NULL;
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    float x = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    if (dtype == NABLA_F32) memcpy(h + 4 * i, &x, 4);
    else {
      uint16_t w = dtype == NABLA_F16 ? nabla_f32_to_f16(x) : nabla_f32_to_bf16(x);
      memcpy(h + 2 * i, &w, 2);
    }
  }
  cl_int rc = CL_SUCCESS;
  cl_mem m = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * es, h, &rc);
  free(h);
  return rc == CL_SUCCESS ? m : NULL;
}

/* One problem: the NABLA mask build and attention with it (sparse), or dense attention; with
 * params (not NULL) the portable attention with those parameters instead of the defaults. */
static int run_problem(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, const char *algo_text,
                       const nabla_params *params) {
  size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim;
  nabla_algo algo;
  nabla_mask *mask = NULL;
  char err[256];
  int ok = 0;
  cl_mem q = random_buffer(ctx, n, dtype, 1), k = random_buffer(ctx, n, dtype, 2),
         v = random_buffer(ctx, n, dtype, 3), o = random_buffer(ctx, n, dtype, 4);
  if (!q || !k || !v || !o || nabla_algo_parse(algo_text, &algo, err, sizeof err) != NABLA_OK) goto done;
  if ((algo.nabla || algo.sta) && nabla_mask_build(ctx, &algo, &s, dtype, q, k, &mask, 0, NULL, NULL) != NABLA_OK)
    goto done;
  nabla_status st = params ? nabla_attend_params(ctx, &s, dtype, mask, q, k, v, o, params, 0, NULL, NULL)
                           : nabla_attend(ctx, &s, dtype, mask, q, k, v, o, 0, NULL, NULL);
  if (st != NABLA_OK) goto done;
  ok = clFinish(nabla_context_queue(ctx)) == CL_SUCCESS;
done:
  if (!ok) fprintf(stderr, "kernel_dump: %s d%d %s: %s\n", nabla_dtype_name(dtype), s.head_dim, algo_text, nabla_last_error(ctx));
  nabla_mask_release(mask);
  if (q) clReleaseMemObject(q);
  if (k) clReleaseMemObject(k);
  if (v) clReleaseMemObject(v);
  if (o) clReleaseMemObject(o);
  return ok;
}

/* Only the mask build, at a plain sequence of nb blocks (the selection's split depends on nb),
 * from Q and K and from block means (nabla_mask_build_from_means: fp32, the pooling's
 * POOL_UNIT pass). */
static int run_mask(nabla_context *ctx, int nb, nabla_dtype dtype) {
  nabla_shape s = {1, 1, 64 * nb, 64, 0, 0, 0};
  size_t n = (size_t)s.seq * s.head_dim, pn = (size_t)nb * s.head_dim;
  nabla_algo algo;
  nabla_mask *mask = NULL, *from_means = NULL;
  char err[64];
  cl_mem q = random_buffer(ctx, n, dtype, 5), k = random_buffer(ctx, n, dtype, 6);
  cl_mem qm = random_buffer(ctx, pn, NABLA_F32, 7), km = random_buffer(ctx, pn, NABLA_F32, 8);
  int ok = q && k && qm && km && nabla_algo_parse("nabla-0.7", &algo, err, sizeof err) == NABLA_OK &&
           nabla_mask_build(ctx, &algo, &s, dtype, q, k, &mask, 0, NULL, NULL) == NABLA_OK &&
           nabla_mask_build_from_means(ctx, &algo, &s, qm, km, &from_means, 0, NULL, NULL) == NABLA_OK &&
           clFinish(nabla_context_queue(ctx)) == CL_SUCCESS;
  if (!ok) fprintf(stderr, "kernel_dump: mask of %d blocks: %s\n", nb, nabla_last_error(ctx));
  nabla_mask_release(mask);
  nabla_mask_release(from_means);
  cl_mem bufs[4] = {q, k, qm, km};
  for (int i = 0; i < 4; i++)
    if (bufs[i]) clReleaseMemObject(bufs[i]);
  return ok;
}

int main(int argc, char **argv) {
  const char *arch = NULL, *dir = NULL;
  int candidates = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--target") == 0 && i + 1 < argc) arch = argv[++i];
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) dir = argv[++i];
    else if (strcmp(argv[i], "--candidates") == 0) candidates = 1;
    else arch = NULL, i = argc;
  }
  const target_profile *tp = NULL;
  for (size_t i = 0; arch && i < sizeof profiles / sizeof profiles[0]; i++)
    if (strcmp(profiles[i].arch, arch) == 0) tp = &profiles[i];
  if (!tp || !dir) {
    fprintf(stderr, "usage: kernel_dump --target gfx90a|gfx940|gfx942|gfx1030|gfx1100 --out DIR [--candidates]\n");
    return 2;
  }
  char path[4096], err[512];
  snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
  dump_state *d = calloc(1, sizeof *d);
  nabla_context *ctx = NULL;
  if (!d || !(d->manifest = fopen(path, "w"))) {
    fprintf(stderr, "kernel_dump: cannot write %s\n", path);
    return 1;
  }
  d->dir = dir;
  if (nabla_context_create(&ctx, NULL, err, sizeof err) != NABLA_OK) {
    fprintf(stderr, "kernel_dump: no OpenCL device: %s\n", err);
    return 1;
  }
  /* The simulated device: what the library reads of the device when it chooses. */
  ctx->caps.vendor = NABLA_VENDOR_AMD;
  ctx->caps.is_cpu = 0, ctx->caps.is_gpu = 1;
  ctx->caps.local_mem = 65536, ctx->caps.max_wg = 256, ctx->caps.compute_units = tp->compute_units;
  snprintf(ctx->caps.arch, sizeof ctx->caps.arch, "%s", tp->arch);
  /* A device key of its own per target and run: probe verdicts and tuning entries are kept by
   * device key, and neither a verdict cached before (which would leave the probe unrecorded) nor
   * a tuning entry (the gate checks the built-in defaults) may answer here. */
  char keyed[256];
  snprintf(keyed, sizeof keyed, "%s|simulated %s|%ld|%ld", ctx->device_key, tp->arch, (long)getpid(), (long)time(NULL));
  snprintf(ctx->device_key, sizeof ctx->device_key, "%016llx%016llx",
           (unsigned long long)nabla_hash64(keyed, strlen(keyed), 1),
           (unsigned long long)nabla_hash64(keyed, strlen(keyed), 2));
  ctx->program_hook = record, ctx->program_hook_user = d;
  /* The matrix-core variant of the target: its probe is recorded (and fails on the host device);
   * then it is marked as passed, so the attention calls below build (and record) its kernel the
   * way the real device would, before falling back here. */
  const int matrix = strcmp(tp->arch, "gfx1030") == 0 ? -1
                     : strncmp(tp->arch, "gfx11", 5) == 0 ? NABLA_VARIANT_AMD_WMMA : NABLA_VARIANT_AMD_MFMA;
  d->is_default = 1;
  d->what = "matrix-core probe";
  if (matrix >= 0) {
    nabla_variant_probe_run(ctx, matrix, NULL, 0);
    ctx->variants.probe[matrix].supported = 1;
  }

  int failures = 0;
  const nabla_dtype dtypes[3] = {NABLA_F32, NABLA_F16, NABLA_BF16};
  const int dims[2] = {64, 128};
  d->is_default = 1;
  for (int t = 0; t < 3; t++)
    for (int h = 0; h < 2; h++) {
      nabla_shape s = {1, 2, 4 * 8 * 8 + 5 * 8 - 3, dims[h], 0, 0, 0}; /* 5 blocks, the last ragged */
      /* A matrix kernel that did not build here is not tried again on the context: re-arm it. */
      d->what = "nabla-0.7 mask and sparse attention";
      if (matrix >= 0) ctx->variants.probe[matrix].broken = 0;
      failures += !run_problem(ctx, s, dtypes[t], "nabla-0.7", NULL);
      d->what = "sta-3-3-3 mask and attention";
      nabla_shape video = {1, 2, 2 * 16 * 16, dims[h], 2, 16, 16};
      if (matrix >= 0) ctx->variants.probe[matrix].broken = 0;
      failures += !run_problem(ctx, video, dtypes[t], "sta-3-3-3", NULL);
      d->what = "dense attention";
      if (matrix >= 0) ctx->variants.probe[matrix].broken = 0;
      failures += !run_problem(ctx, s, dtypes[t], "dense", NULL);
    }
  /* Row lengths of the selection: CI-sized, Wan 1.3B, Wan 14B (cropped and not), the longest
   * row of one split, and one beyond it. */
  const int nbs[] = {5, 378, 1050, 1260, 1536, 3000};
  for (size_t i = 0; i < sizeof nbs / sizeof nbs[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "mask build, %d blocks per row", nbs[i]);
    d->what = what;
    failures += !run_mask(ctx, nbs[i], NABLA_BF16);
  }
  if (candidates) { /* every configuration the tuner may pick for the portable attention */
    d->is_default = 0;
    d->what = "tuner candidate";
    const nabla_kernel_space *space = nabla_kernel_space_find("attention");
    nabla_params p;
    nabla_params_reference(space, &p);
    /* the Cartesian product of the portable kernel's tunables (VARIANT fixed to portable) */
    int idx[NABLA_MAX_PARAMS] = {0}, nparams = p.count;
    for (;;) {
      nabla_params cand = p;
      int skip = 0;
      for (int i = 0; i < nparams; i++) {
        cand.values[i] = space->params[i].candidates[idx[i]];
        if (strcmp(space->params[i].name, "VARIANT") == 0 && cand.values[i] != NABLA_VARIANT_PORTABLE) skip = 1;
      }
      for (int t = 0; t < 3 && !skip; t++)
        for (int h = 0; h < 2; h++) {
          nabla_shape s = {1, 1, 2 * 64, dims[h], 0, 0, 0};
          if (nabla_params_valid(ctx, space, dims[h], &cand, NULL, 0))
            failures += !run_problem(ctx, s, dtypes[t], "dense", &cand);
        }
      int i = 0;
      while (i < nparams && ++idx[i] >= space->params[i].count) idx[i++] = 0;
      if (i == nparams) break;
    }
  }
  fclose(d->manifest);
  nabla_context_destroy(ctx);
  printf("kernel_dump: %d programs for %s in %s%s\n", d->count, tp->arch, dir,
         failures ? " (some runs failed on the host device; see above)" : "");
  free(d);
  return failures ? 1 : 0;
}
