/*
 * The measuring tuner (nabla_tune).
 *
 * For every requested kernel and shape class:
 *   1. a result already in the tuning cache is kept (unless forced, or a --full run meets a
 *      quick result);
 *   2. the candidates are the kernel space's cartesian product, the reference configuration
 *      first and the device's built-in default second; a candidate that breaks a constraint
 *      (per-value availability, local memory, work-group size of the built kernel) is "unfit";
 *   3. each fit candidate is built first (outside any timing), then run on a small ragged check
 *      problem and its output compared with the reference configuration's (attention: max
 *      abs difference within the dtype's tolerance of the output scale; select: no row may
 *      differ unless the float64 oracle flags it as within rounding of the threshold); a
 *      mismatch is "rejected" and never chosen;
 *   4. it is timed on the class's problem: one untimed warm-up run (which also absorbs PoCL's
 *      compile per work-group size), then runs until the target duration (at least three
 *      unless runs are long) and the median of their event-profiled times;
 *   5. the fastest replaces the built-in default only if it also wins a paired rematch against
 *      it (median per-pair speed-up >= 3 % and faster in >= 70 % of the pairs), so noise never
 *      makes the tuned choice slower than the untuned one;
 *   6. the winner is stored at once (atomic put); every candidate's measurement is also
 *      checkpointed in namespace "tuning-progress", so an interrupted run resumes.
 * The stage timed is what the user calls, from a marker on the idle queue to the end of its last
 * kernel: nabla_attend (with the wgmma kernel's tile pack or tensor-map binding) for attention,
 * the whole mask build for select.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diskcache.h"
#include "internal.h"
#include "tune.h"
#include "registry.h"

#define MAX_CONFIGS 512
#define MAX_REPS_CAP 1000
#define REMATCH_MARGIN 0.03

/* ---- problems -------------------------------------------------------------------------- */

typedef struct {
  nabla_shape shape;
  nabla_dtype dtype;
  cl_mem q, k, v, o;
  nabla_mask *mask;   /* attention: a fixed sparse mask */
  double *qd, *kd;    /* select check problem: float64 copies of Q and K (as stored) */
  uint8_t *near;      /* select check problem: rows the oracle flags as near the threshold */
  size_t elems;
} problem;

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [-sqrt(3), sqrt(3)): unit variance. */
static float rng_unit(uint64_t *s) {
  return (float)(((double)(rng_next(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0) * 1.7320508075688772);
}

static void store_value(void *out, size_t i, nabla_dtype dtype, float f) {
  if (dtype == NABLA_F32) ((float *)out)[i] = f;
  else if (dtype == NABLA_F16) ((uint16_t *)out)[i] = nabla_f32_to_f16(f);
  else ((uint16_t *)out)[i] = nabla_f32_to_bf16(f);
}

static double load_value(const void *src, size_t i, nabla_dtype dtype) {
  if (dtype == NABLA_F32) return ((const float *)src)[i];
  if (dtype == NABLA_F16) return nabla_f16_to_f32(((const uint16_t *)src)[i]);
  return nabla_bf16_to_f32(((const uint16_t *)src)[i]);
}

/*
 * A tensor [B,H,S,D] in tile order: with `structured`, every block has its own mean direction
 * (so pooled Q and K differ per block and the reduced softmax is peaked) plus unit noise;
 * otherwise unit noise. `copy` (may be NULL) receives the stored values as doubles.
 */
static nabla_status make_tensor(nabla_context *ctx, const problem *p, int structured, uint64_t seed,
                                cl_mem *out, double *copy) {
  nabla_status st = NABLA_OK;
  const nabla_shape *s = &p->shape;
  size_t esize = nabla_dtype_size(p->dtype), D = (size_t)s->head_dim, S = (size_t)s->seq;
  int nb = nabla_shape_blocks(s);
  void *host = NULL;
  int32_t *starts = NULL;
  float *mean = NULL;
  cl_int rc = CL_SUCCESS;
  if (p->elems * esize > ctx->caps.max_alloc) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "a tensor of %zu bytes exceeds the device's max allocation", p->elems * esize);
    goto done;
  }
  host = malloc(p->elems * esize + 1);
  starts = malloc(((size_t)nb + 1) * sizeof *starts);
  mean = malloc(D * sizeof *mean + 1);
  if (!host || !starts || !mean) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of host memory for a %zu-element tuning problem", p->elems);
    goto done;
  }
  nabla_shape_block_starts(s, starts, (size_t)nb + 1);
  uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t bh = 0; bh < (size_t)s->batch * s->heads; bh++)
    for (int b = 0; b < nb; b++) {
      for (size_t d = 0; d < D; d++) mean[d] = structured ? 1.5f * rng_unit(&rng) : 0.0f;
      for (size_t t = (size_t)starts[b]; t < (size_t)starts[b + 1]; t++)
        for (size_t d = 0; d < D; d++) {
          size_t i = (bh * S + t) * D + d;
          store_value(host, i, p->dtype, mean[d] + rng_unit(&rng));
          if (copy) copy[i] = load_value(host, i, p->dtype);
        }
    }
  *out = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, p->elems * esize, host, &rc);
  if (rc != CL_SUCCESS) {
    *out = NULL;
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "clCreateBuffer(%zu bytes) failed: %s", p->elems * esize,
                    nabla_cl_error_name(rc));
  }
done:
  free(host);
  free(starts);
  free(mean);
  return st;
}

static void problem_release(problem *p) {
  if (p->q) clReleaseMemObject(p->q);
  if (p->k) clReleaseMemObject(p->k);
  if (p->v) clReleaseMemObject(p->v);
  if (p->o) clReleaseMemObject(p->o);
  nabla_mask_release(p->mask);
  free(p->qd);
  free(p->kd);
  free(p->near);
  memset(p, 0, sizeof *p);
}

static const nabla_algo select_algo = {1, 0.7, 0, 0, 0, 0};

/* Kept key blocks per row of the timing mask: a quarter of the row, 1 to 8. */
static int kept_per_row(int nb) {
  int k = nb / 4;
  return k < 1 ? 1 : k > 8 ? 8 : k;
}

/* Attention inputs and a fixed sparse mask: every row keeps its diagonal and distinct
 * pseudo-random other blocks. */
static nabla_status attention_prepare(nabla_context *ctx, problem *p, int check) {
  nabla_status st = NABLA_OK;
  const nabla_shape *s = &p->shape;
  int nb = nabla_shape_blocks(s), keep = kept_per_row(nb);
  size_t rows = (size_t)s->batch * s->heads * nb;
  uint8_t *bitmap = calloc(rows * (size_t)nb + 1, 1);
  cl_int rc = CL_SUCCESS;
  (void)check;
  if (!bitmap) return nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of host memory for a tuning mask");
  uint64_t rng = 12345;
  for (size_t r = 0; r < rows; r++) {
    uint8_t *row = bitmap + r * nb;
    row[r % (size_t)nb] = 1;
    for (int placed = 1; placed < keep;) {
      size_t j = (size_t)(rng_next(&rng) % (uint64_t)nb);
      if (!row[j]) row[j] = 1, placed++;
    }
  }
  TRY(st, make_tensor(ctx, p, 1, 1, &p->q, NULL));
  TRY(st, make_tensor(ctx, p, 1, 2, &p->k, NULL));
  TRY(st, make_tensor(ctx, p, 0, 3, &p->v, NULL));
  p->o = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, p->elems * nabla_dtype_size(p->dtype), NULL, &rc);
  if (rc != CL_SUCCESS) {
    p->o = NULL;
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "clCreateBuffer(output) failed: %s", nabla_cl_error_name(rc));
    goto done;
  }
  TRY(st, nabla_mask_from_bitmap(ctx, s, bitmap, &p->mask));
done:
  free(bitmap);
  return st;
}

/* Q and K for the mask build; the check problem also keeps float64 copies and the oracle's
 * near-threshold rows. */
static nabla_status select_prepare(nabla_context *ctx, problem *p, int check) {
  nabla_status st = NABLA_OK;
  const nabla_shape *s = &p->shape;
  size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb;
  uint8_t *bitmap = NULL;
  if (check) {
    p->qd = malloc(p->elems * sizeof *p->qd);
    p->kd = malloc(p->elems * sizeof *p->kd);
    p->near = malloc(rows + 1);
    bitmap = malloc(rows * nb + 1);
    if (!p->qd || !p->kd || !p->near || !bitmap) {
      st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of host memory for the select check");
      goto done;
    }
  }
  TRY(st, make_tensor(ctx, p, 1, 4, &p->q, p->qd));
  TRY(st, make_tensor(ctx, p, 1, 5, &p->k, p->kd));
  if (check && nabla_ref_mask(s, &select_algo, p->qd, p->kd, bitmap, p->near, 1e-4) != NABLA_OK) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "the float64 reference mask failed");
    goto done;
  }
done:
  free(bitmap);
  return st;
}

static double event_ms(cl_event from, cl_profiling_info from_what, cl_event to) {
  cl_ulong t0 = 0, t1 = 0;
  if (clGetEventProfilingInfo(from, from_what, sizeof t0, &t0, NULL) != CL_SUCCESS ||
      clGetEventProfilingInfo(to, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) != CL_SUCCESS)
    return NAN;
  return t1 >= t0 ? (double)(t1 - t0) * 1e-6 : 0.0;
}

/* One attention call; ms = from a marker on the idle queue to the end of the attention kernel,
 * so a variant's preparatory kernels (the wgmma tile pack or tmap_bind) count. The candidate's
 * VARIANT picks the kernel (-1: the automatic choice); TILE_D / TILE_V shape the portable one. */
static nabla_status attention_run(nabla_context *ctx, const problem *p, const nabla_params *params,
                                  double *ms) {
  nabla_status st = NABLA_OK;
  cl_event start = NULL, done_event = NULL;
  TRY_CL(st, ctx, clEnqueueMarkerWithWaitList(ctx->queue, 0, NULL, &start));
  TRY_CL(st, ctx, clFlush(ctx->queue));
  TRY(st, nabla_attend_params(ctx, &p->shape, p->dtype, p->mask, p->q, p->k, p->v, p->o, params, 0,
                              NULL, &done_event));
  TRY_CL(st, ctx, clWaitForEvents(1, &done_event));
  const int want = nabla_params_get(params, "VARIANT", NABLA_VARIANT_AUTO);
  if (want >= 0 && strcmp(nabla_variant_last(ctx), nabla_variant_name(want)) != 0) {
    /* The call fell back: its time is another kernel's, not this candidate's. */
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "VARIANT=%d (%s) ran as %s: %.300s", want, nabla_variant_name(want),
                    nabla_variant_last(ctx), nabla_variant_note(ctx));
    goto done;
  }
  if (ms) *ms = event_ms(start, CL_PROFILING_COMMAND_END, done_event);
done:
  if (start) clReleaseEvent(start);
  if (done_event) clReleaseEvent(done_event);
  return st;
}

/* One mask build; ms = from a marker on the idle queue to the end of the build's last kernel. */
static nabla_status select_build(nabla_context *ctx, const problem *p, const nabla_params *params,
                                 double *ms, nabla_mask **keep) {
  nabla_status st = NABLA_OK;
  cl_event start = NULL, done_event = NULL;
  nabla_mask *mask = NULL;
  TRY_CL(st, ctx, clEnqueueMarkerWithWaitList(ctx->queue, 0, NULL, &start));
  TRY_CL(st, ctx, clFlush(ctx->queue));
  TRY(st, nabla_mask_build_params(ctx, &select_algo, &p->shape, p->dtype, p->q, p->k, params, &mask,
                                  0, NULL, &done_event));
  TRY_CL(st, ctx, clWaitForEvents(1, &done_event));
  if (ms) *ms = event_ms(start, CL_PROFILING_COMMAND_END, done_event);
  if (keep) *keep = mask, mask = NULL;
done:
  if (start) clReleaseEvent(start);
  if (done_event) clReleaseEvent(done_event);
  nabla_mask_release(mask);
  return st;
}

static nabla_status select_run(nabla_context *ctx, const problem *p, const nabla_params *params,
                               double *ms) {
  return select_build(ctx, p, params, ms, NULL);
}

/* Output of a configuration on the check problem, as doubles (attention: O; select: bitmap). */
static nabla_status attention_output(nabla_context *ctx, const problem *p, const nabla_params *params,
                                     double **out, size_t *n) {
  nabla_status st = NABLA_OK;
  size_t esize = nabla_dtype_size(p->dtype);
  void *host = malloc(p->elems * esize + 1);
  double *vals = malloc(p->elems * sizeof *vals + 1);
  if (!host || !vals) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of host memory for the check");
    goto done;
  }
  cl_uchar zero = 0xff; /* poison: a kernel that writes nothing cannot pass */
  TRY_CL(st, ctx, clEnqueueFillBuffer(ctx->queue, p->o, &zero, 1, 0, p->elems * esize, 0, NULL, NULL));
  TRY(st, attention_run(ctx, p, params, NULL));
  TRY_CL(st, ctx, clEnqueueReadBuffer(ctx->queue, p->o, CL_TRUE, 0, p->elems * esize, host, 0, NULL, NULL));
  for (size_t i = 0; i < p->elems; i++) vals[i] = load_value(host, i, p->dtype);
  *out = vals, *n = p->elems;
  vals = NULL;
done:
  free(host);
  free(vals);
  return st;
}

static nabla_status select_output(nabla_context *ctx, const problem *p, const nabla_params *params,
                                  double **out, size_t *n) {
  nabla_status st = NABLA_OK;
  nabla_mask *mask = NULL;
  size_t nb = (size_t)nabla_shape_blocks(&p->shape), cells = (size_t)p->shape.batch * p->shape.heads * nb * nb;
  uint8_t *bitmap = malloc(cells + 1);
  double *vals = malloc(cells * sizeof *vals + 1);
  if (!bitmap || !vals) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of host memory for the check");
    goto done;
  }
  TRY(st, select_build(ctx, p, params, NULL, &mask));
  TRY(st, nabla_mask_read_bitmap(ctx, mask, bitmap, cells));
  for (size_t i = 0; i < cells; i++) vals[i] = bitmap[i];
  *out = vals, *n = cells;
  vals = NULL;
done:
  nabla_mask_release(mask);
  free(bitmap);
  free(vals);
  return st;
}

/* Relative tolerance of an output stored as dtype, against the scale of the output. */
static double dtype_tolerance(nabla_dtype dtype) {
  return dtype == NABLA_F32 ? 2e-5 : dtype == NABLA_F16 ? 4e-3 : 3e-2;
}

/* 1 when `cand` matches `ref`; *err gets the error measure. */
static int attention_compare(const problem *p, const double *ref, const double *cand, size_t n,
                             double *err, char *note, size_t note_len) {
  double scale = 0.0, diff = 0.0;
  for (size_t i = 0; i < n; i++) {
    double a = fabs(ref[i]), d = fabs(cand[i] - ref[i]);
    if (a > scale) scale = a;
    if (d > diff || d != d) diff = d;
  }
  double tol = dtype_tolerance(p->dtype) * (scale > 1e-3 ? scale : 1e-3);
  *err = diff;
  if (diff <= tol) return 1;
  snprintf(note, note_len, "output differs from the reference configuration's by %.3g (tolerance %.3g)", diff, tol);
  return 0;
}

static int select_compare(const problem *p, const double *ref, const double *cand, size_t n,
                          double *err, char *note, size_t note_len) {
  size_t nb = (size_t)nabla_shape_blocks(&p->shape), rows = nb ? n / nb : 0, bad = 0;
  for (size_t r = 0; r < rows; r++)
    if (memcmp(ref + r * nb, cand + r * nb, nb * sizeof *ref) != 0 && !p->near[r]) bad++;
  *err = (double)bad;
  if (!bad) return 1;
  snprintf(note, note_len, "%zu mask rows differ from the reference configuration's beyond rounding", bad);
  return 0;
}

typedef struct {
  const char *kernel;
  nabla_status (*prepare)(nabla_context *ctx, problem *p, int check);
  nabla_status (*run)(nabla_context *ctx, const problem *p, const nabla_params *params, double *ms);
  nabla_status (*output)(nabla_context *ctx, const problem *p, const nabla_params *params, double **out,
                         size_t *n);
  int (*compare)(const problem *p, const double *ref, const double *cand, size_t n, double *err,
                 char *note, size_t note_len);
  double (*work)(const nabla_shape *s); /* relative cost of one run, to predict run times */
  int needs_vo;  /* the problem needs V and O (bytes for the memory estimate) */
} kernel_ops;

/* Attention: kept block pairs of the problem's mask. */
static double attention_work(const nabla_shape *s) {
  int nb = nabla_shape_blocks(s);
  return (double)s->batch * s->heads * nb * kept_per_row(nb);
}

/* Mask build: pooling plus the reduced map and its selection. */
static double select_work(const nabla_shape *s) {
  double nb = nabla_shape_blocks(s);
  return (double)s->batch * s->heads * ((double)s->seq * s->head_dim + nb * nb * s->head_dim);
}

static const kernel_ops kernel_table[] = {
    {"attention", attention_prepare, attention_run, attention_output, attention_compare, attention_work, 1},
    {"select", select_prepare, select_run, select_output, select_compare, select_work, 0},
};

static const kernel_ops *ops_find(const char *kernel) {
  for (size_t i = 0; i < sizeof kernel_table / sizeof kernel_table[0]; i++)
    if (strcmp(kernel_table[i].kernel, kernel) == 0) return &kernel_table[i];
  return NULL;
}

/* ---- the tuner's state ----------------------------------------------------------------- */

/* Copies a string, truncated to fit. */
static void copy_text(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

typedef struct {
  nabla_context *ctx;
  nabla_tune_options opt;
  nabla_tune_callback cb;
  void *user;
  nabla_tune_summary sum;
  int done, total, stop;
  nabla_status failure;
  char failure_text[NABLA_ERR_LEN];
} tuner;

typedef struct {
  nabla_params params;
  char text[160];
  int is_reference, is_default;
  nabla_tune_state state;
  int resumed, reps;
  double ms, max_error;
  char note[320];
} config;

static void report(tuner *T, nabla_tune_report *r) {
  r->done = T->done;
  r->total = T->total;
  if (!r->note) r->note = "";
  if (!r->params) r->params = "";
  if (T->cb && !T->stop && T->cb(r, T->user)) T->stop = 1;
}

/* A report of `event` for (kernel, shape class, shape) of this run, every other field zero. */
static nabla_tune_report report_of(const tuner *T, nabla_tune_event event, const char *kernel,
                                   const char *cls, const nabla_shape *shape) {
  nabla_tune_report r;
  memset(&r, 0, sizeof r);
  r.event = event;
  r.kernel = kernel;
  r.shape_class = cls;
  r.dtype = T->opt.dtype;
  r.head_dim = T->opt.head_dim;
  r.shape = shape;
  return r;
}

static void report_config(tuner *T, const char *kernel, const char *cls, const nabla_shape *shape,
                          const config *c) {
  nabla_tune_report r = report_of(T, NABLA_TUNE_CANDIDATE, kernel, cls, shape);
  r.param_count = c->params.count;
  r.param_names = (const char *const *)c->params.names;
  r.param_values = c->params.values;
  r.params = c->text;
  r.state = c->state;
  r.is_reference = c->is_reference;
  r.is_default = c->is_default;
  r.resumed = c->resumed;
  r.reps = c->reps;
  r.ms = c->state == NABLA_TUNE_MEASURED ? c->ms : -1.0;
  r.reference_ms = r.default_ms = -1.0;
  r.max_error = c->max_error;
  r.note = c->note;
  report(T, &r);
}

/* Representative problem of a shape class (tile-order video grids; see docs/tuning.md). */
static nabla_shape class_shape(const tuner *T, int cls) {
  int D = T->opt.head_dim;
  switch (cls) {
    case 0:
      return T->opt.full ? (nabla_shape){1, 4, 4 * 32 * 32, D, 4, 32, 32}
                         : (nabla_shape){1, 2, 4 * 16 * 16, D, 4, 16, 16};
    case 1: return (nabla_shape){1, 8, 8 * 32 * 64, D, 8, 32, 64};
    default: return (nabla_shape){2, 40, 21 * 40 * 80, D, 21, 40, 80};
  }
}

/* Small ragged problem the outputs are compared on (18 blocks, ragged tiles at the edges). */
static nabla_shape check_shape(const tuner *T) {
  return (nabla_shape){1, 1, 3 * 12 * 20, T->opt.head_dim, 3, 12, 20};
}

/* Device bytes a problem needs; 0 if it does not fit the device. */
static int problem_fits(const tuner *T, const kernel_ops *ops, const nabla_shape *s, char *why,
                        size_t len) {
  const nabla_device_caps *c = &T->ctx->caps;
  double elems = (double)s->batch * s->heads * s->seq * s->head_dim;
  double tensor = elems * (double)nabla_dtype_size(T->opt.dtype);
  double nb = nabla_shape_blocks(s), rows = (double)s->batch * s->heads * nb;
  double total = tensor * (ops->needs_vo ? 4 : 2) + rows * nb * 5.0 + rows * 4.0 +
                 (ops->needs_vo ? 0.0 : rows * (double)s->head_dim * 8.0 + rows * nb * 4.0);
  if (tensor > (double)c->max_alloc || total > 0.6 * (double)c->global_mem) {
    snprintf(why, len, "the %s problem needs %.0f MiB of device memory; the device has %.0f MiB (max allocation %.0f MiB)",
             nabla_shape_class(s), total / 1048576.0, (double)c->global_mem / 1048576.0,
             (double)c->max_alloc / 1048576.0);
    return 0;
  }
  return 1;
}

/* ---- checkpoints ----------------------------------------------------------------------- */

static void progress_key(const tuner *T, const char *kernel, const char *cls, const nabla_shape *s,
                         char *buf, size_t len) {
  char key[256];
  nabla_tuning_key(T->ctx, kernel, T->opt.dtype, T->opt.head_dim, cls, key, sizeof key);
  snprintf(buf, len, "%s|%s|B%d H%d S%d grid %dx%dx%d|max%d", key, T->opt.full ? "full" : "quick",
           s->batch, s->heads, s->seq, s->grid_t, s->grid_h, s->grid_w, T->opt.max_candidates);
}

static const char *const state_names[] = {"measured", "rejected", "failed", "unfit"};

/* Loads an unfinished checkpoint's candidates (a JSON array), or NULL. */
static cJSON *progress_load(const tuner *T, const char *key) {
  void *data = NULL;
  size_t len = 0;
  cJSON *root = NULL, *list = NULL;
  if (!T->ctx->cache_root[0] ||
      nabla_diskcache_get(T->ctx->cache_root, NABLA_TUNING_PROGRESS_NS, key, &data, &len) != NABLA_OK)
    return NULL;
  root = cJSON_ParseWithLength(data, len);
  free(data);
  cJSON *schema = cJSON_GetObjectItemCaseSensitive(root, "schema");
  cJSON *complete = cJSON_GetObjectItemCaseSensitive(root, "complete");
  if (cJSON_IsNumber(schema) && schema->valuedouble == NABLA_TUNING_SCHEMA && cJSON_IsFalse(complete)) {
    list = cJSON_DetachItemFromObjectCaseSensitive(root, "candidates");
    if (!cJSON_IsArray(list)) {
      cJSON_Delete(list);
      list = NULL;
    }
  }
  cJSON_Delete(root);
  return list;
}

/* Takes a candidate's earlier measurement from the checkpoint; 1 when found. */
static int progress_find(cJSON *list, config *c) {
  cJSON *item;
  cJSON_ArrayForEach(item, list) {
    cJSON *params = cJSON_GetObjectItemCaseSensitive(item, "params");
    cJSON *state = cJSON_GetObjectItemCaseSensitive(item, "state");
    cJSON *ms = cJSON_GetObjectItemCaseSensitive(item, "ms");
    cJSON *reps = cJSON_GetObjectItemCaseSensitive(item, "reps");
    cJSON *err = cJSON_GetObjectItemCaseSensitive(item, "max_error");
    cJSON *note = cJSON_GetObjectItemCaseSensitive(item, "note");
    if (!cJSON_IsString(params) || strcmp(params->valuestring, c->text) != 0 || !cJSON_IsString(state)) continue;
    int s = -1;
    for (int i = 0; i < 4; i++)
      if (strcmp(state->valuestring, state_names[i]) == 0) s = i;
    if (s < 0 || (s == NABLA_TUNE_MEASURED && !(cJSON_IsNumber(ms) && ms->valuedouble > 0))) continue;
    c->state = (nabla_tune_state)s;
    c->ms = cJSON_IsNumber(ms) ? ms->valuedouble : -1.0;
    c->reps = cJSON_IsNumber(reps) ? reps->valueint : 0;
    c->max_error = cJSON_IsNumber(err) ? err->valuedouble : 0.0;
    snprintf(c->note, sizeof c->note, "%s", cJSON_IsString(note) ? note->valuestring : "");
    c->resumed = 1;
    return 1;
  }
  return 0;
}

static void progress_save(const tuner *T, const char *key, const char *kernel, const config *cs, int n,
                          int complete) {
  if (!T->ctx->cache_root[0]) return;
  cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "candidates");
  cJSON_AddNumberToObject(root, "schema", NABLA_TUNING_SCHEMA);
  cJSON_AddStringToObject(root, "device", T->ctx->device_desc);
  cJSON_AddStringToObject(root, "kernel", kernel);
  cJSON_AddBoolToObject(root, "complete", complete);
  for (int i = 0; i < n && !complete; i++) {
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "params", cs[i].text);
    cJSON_AddStringToObject(item, "state", state_names[cs[i].state]);
    cJSON_AddNumberToObject(item, "ms", cs[i].state == NABLA_TUNE_MEASURED ? cs[i].ms : -1.0);
    cJSON_AddNumberToObject(item, "reps", cs[i].reps);
    cJSON_AddNumberToObject(item, "max_error", cs[i].max_error);
    cJSON_AddStringToObject(item, "note", cs[i].note);
    cJSON_AddItemToArray(list, item);
  }
  char *text = cJSON_PrintUnformatted(root);
  if (text) nabla_diskcache_put(T->ctx->cache_root, NABLA_TUNING_PROGRESS_NS, key, text, strlen(text));
  cJSON_free(text);
  cJSON_Delete(root);
}

/* ---- measuring ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Whether a timing loop of `reps` runs totalling `total` ms is done. */
static int timing_done(const tuner *T, int reps, double total) {
  double target = T->opt.target_ms;
  return reps >= T->opt.max_reps || (reps >= 3 && total >= target) || (reps >= 1 && total >= 4.0 * target);
}

/* Warm-up run, then timed runs; median in *ms. With `limit` > 0 a warm-up slower than it stops
 * with NABLA_UNSUPPORTED. */
static nabla_status time_config(tuner *T, const kernel_ops *ops, const problem *p, config *c, double limit) {
  nabla_status st = NABLA_OK;
  double *times = malloc(sizeof *times * (size_t)T->opt.max_reps), warm = 0.0, total = 0.0;
  int reps = 0;
  if (!times) return nabla_fail(T->ctx, NABLA_OUT_OF_MEMORY, "out of memory");
  TRY(st, ops->run(T->ctx, p, &c->params, &warm));
  if (limit > 0 && warm > limit) {
    st = nabla_fail(T->ctx, NABLA_UNSUPPORTED, "one run takes %.0f ms, over the limit of %.0f ms", warm, limit);
    goto done;
  }
  while (!timing_done(T, reps, total)) {
    double ms = 0.0;
    TRY(st, ops->run(T->ctx, p, &c->params, &ms));
    if (!(ms >= 0.0)) {
      st = nabla_fail(T->ctx, NABLA_OPENCL, "event profiling gave no time (is profiling enabled on the queue?)");
      goto done;
    }
    times[reps++] = ms;
    total += ms;
  }
  c->ms = median(times, reps);
  c->reps = reps;
done:
  free(times);
  return st;
}

/*
 * Paired rematch of the winner `a` against the default `b` on the same problem: pairs of runs
 * in alternating order (ab, ba, ab, ...) so drift and order effects cancel, at least seven
 * pairs and twice the target duration. *accept is set when `a` is faster by the margin in the
 * median of the per-pair ratios and in at least 70 % of the pairs; medians go to ms_a / ms_b.
 */
static nabla_status rematch(tuner *T, const kernel_ops *ops, const problem *p, const nabla_params *a,
                            const nabla_params *b, double *ms_a, double *ms_b, int *accept) {
  nabla_status st = NABLA_OK;
  size_t cap = (size_t)T->opt.max_reps;
  double *ta = malloc(sizeof *ta * cap), *tb = malloc(sizeof *tb * cap), *ratio = malloc(sizeof *ratio * cap);
  double total = 0.0;
  int pairs = 0, wins = 0;
  *accept = 0;
  if (!ta || !tb || !ratio) {
    st = nabla_fail(T->ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  TRY(st, ops->run(T->ctx, p, a, NULL));
  TRY(st, ops->run(T->ctx, p, b, NULL));
  while (pairs < T->opt.max_reps &&
         (pairs < 7 || total < 2.0 * T->opt.target_ms) && !(pairs >= 5 && total >= 8.0 * T->opt.target_ms)) {
    double x = 0.0, y = 0.0;
    if (pairs % 2 == 0) {
      TRY(st, ops->run(T->ctx, p, a, &x));
      TRY(st, ops->run(T->ctx, p, b, &y));
    } else {
      TRY(st, ops->run(T->ctx, p, b, &y));
      TRY(st, ops->run(T->ctx, p, a, &x));
    }
    ta[pairs] = x, tb[pairs] = y;
    ratio[pairs] = x > 0.0 ? y / x : 0.0;
    wins += x < y;
    pairs++;
    total += 0.5 * (x + y);
  }
  *accept = median(ratio, pairs) >= 1.0 + REMATCH_MARGIN && wins * 10 >= pairs * 7;
  *ms_a = median(ta, pairs);
  *ms_b = median(tb, pairs);
done:
  free(ta);
  free(tb);
  free(ratio);
  return st;
}

/* ---- candidates ------------------------------------------------------------------------ */

static int same_values(const nabla_params *a, const nabla_params *b) {
  if (a->count != b->count) return 0;
  for (int i = 0; i < a->count; i++)
    if (a->values[i] != b->values[i]) return 0;
  return 1;
}

/* The candidates in order: reference, built-in default, then the cartesian product (--full) or
 * the default's neighbours that differ in one tunable (quick): each program build costs
 * seconds on PoCL, so a quick run measures 1 + sum(candidates - 1) configurations, not the
 * product. */
static int enumerate(const tuner *T, const nabla_kernel_space *space, config *out, int cap) {
  nabla_params ref, def;
  nabla_params_reference(space, &ref);
  nabla_params_builtin(T->ctx, space, T->opt.head_dim, &def);
  int n = 0;
  memset(&out[n], 0, sizeof out[n]);
  out[n].params = ref;
  out[n].is_reference = 1;
  out[n].is_default = same_values(&ref, &def);
  n++;
  if (!same_values(&ref, &def)) {
    memset(&out[n], 0, sizeof out[n]);
    out[n].params = def;
    out[n].is_default = 1;
    n++;
  }
  int idx[NABLA_MAX_PARAMS] = {0};
  for (;;) {
    nabla_params p = ref;
    int empty = 0;
    for (int i = 0; i < ref.count; i++) {
      if (space->params[i].count <= 0) empty = 1;
      else p.values[i] = space->params[i].candidates[idx[i]];
    }
    if (empty) break;
    int dup = 0, changed = 0;
    for (int j = 0; j < n; j++) dup |= same_values(&out[j].params, &p);
    for (int i = 0; i < p.count; i++) changed += p.values[i] != def.values[i];
    if (!T->opt.full && changed > 1) dup = 1; /* quick: one tunable at a time around the default */
    if (!dup && n < cap) {
      memset(&out[n], 0, sizeof out[n]);
      out[n].params = p;
      n++;
    }
    int i = 0;
    while (i < ref.count && ++idx[i] >= space->params[i].count) idx[i++] = 0;
    if (i == ref.count) break;
  }
  if (T->opt.max_candidates > 0 && n > T->opt.max_candidates) n = T->opt.max_candidates;
  for (int j = 0; j < n; j++) {
    snprintf(out[j].params.origin, sizeof out[j].params.origin, "candidate");
    nabla_params_text(&out[j].params, out[j].text, sizeof out[j].text);
    out[j].ms = -1.0;
    out[j].state = NABLA_TUNE_FAILED; /* until evaluated */
  }
  return n;
}

/* ---- one (kernel, shape class) ---------------------------------------------------------- */

static void utc_now(char *buf, size_t len) {
  time_t now = time(NULL);
  struct tm tm;
  if (!gmtime_r(&now, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(buf, len, "unknown");
}

static int store_result(tuner *T, const nabla_kernel_space *space, const char *cls, const nabla_shape *s,
                        const config *win, double ref_ms, double def_ms, int measured) {
  if (!T->ctx->cache_root[0]) return 0;
  char key[256], date[32];
  nabla_tuning_key(T->ctx, space->kernel, T->opt.dtype, T->opt.head_dim, cls, key, sizeof key);
  utc_now(date, sizeof date);
  cJSON *root = cJSON_CreateObject(), *params = cJSON_CreateObject(), *shape = cJSON_CreateObject();
  cJSON_AddNumberToObject(root, "schema", NABLA_TUNING_SCHEMA);
  cJSON_AddStringToObject(root, "device", T->ctx->device_desc);
  cJSON_AddStringToObject(root, "device_key", T->ctx->device_key);
  cJSON_AddStringToObject(root, "kernel", space->kernel);
  cJSON_AddStringToObject(root, "dtype", nabla_dtype_name(T->opt.dtype));
  cJSON_AddNumberToObject(root, "head_dim", T->opt.head_dim);
  cJSON_AddStringToObject(root, "shape_class", cls);
  for (int i = 0; i < win->params.count; i++)
    cJSON_AddNumberToObject(params, win->params.names[i], win->params.values[i]);
  cJSON_AddItemToObject(root, "params", params);
  cJSON_AddNumberToObject(root, "ms", win->ms);
  cJSON_AddNumberToObject(root, "reference_ms", ref_ms);
  cJSON_AddNumberToObject(root, "default_ms", def_ms);
  cJSON_AddStringToObject(root, "date", date);
  cJSON_AddNumberToObject(root, "candidates", measured);
  cJSON_AddStringToObject(root, "mode", T->opt.full ? "full" : "quick");
  cJSON_AddNumberToObject(shape, "batch", s->batch);
  cJSON_AddNumberToObject(shape, "heads", s->heads);
  cJSON_AddNumberToObject(shape, "seq", s->seq);
  cJSON_AddItemToObject(shape, "grid", cJSON_CreateIntArray((const int[]){s->grid_t, s->grid_h, s->grid_w}, 3));
  cJSON_AddItemToObject(root, "shape", shape);
  cJSON_AddStringToObject(root, "library", nabla_version_string());
  char *text = cJSON_PrintUnformatted(root);
  int ok = text && nabla_diskcache_put(T->ctx->cache_root, NABLA_TUNING_NS, key, text, strlen(text)) == NABLA_OK;
  cJSON_free(text);
  cJSON_Delete(root);
  return ok;
}

static void record_failure(tuner *T, nabla_status st, const char *what) {
  if (T->failure == NABLA_OK) {
    T->failure = st;
    snprintf(T->failure_text, sizeof T->failure_text, "%s", what);
  }
}

static void report_skip(tuner *T, const char *kernel, const char *cls, const nabla_shape *s, int planned,
                        const char *note) {
  nabla_tune_report r = report_of(T, NABLA_TUNE_SKIPPED, kernel, cls, s);
  T->done += planned;
  r.ms = r.reference_ms = r.default_ms = -1.0;
  r.note = note;
  T->sum.skipped++;
  report(T, &r);
}

/* Runs one configuration through build check, correctness check and timing. */
static void evaluate(tuner *T, const nabla_kernel_space *space, const kernel_ops *ops, const problem *check,
                     const problem *timed, config *c, const double *ref_out, size_t ref_n, double **out,
                     size_t *out_n, double limit) {
  nabla_context *ctx = T->ctx;
  nabla_status st;
  double *mine = NULL;
  size_t n = 0;
  char why[320];
  nabla_clear_error(ctx);
  if (!nabla_params_valid(ctx, space, T->opt.head_dim, &c->params, why, sizeof why)) {
    c->state = NABLA_TUNE_UNFIT;
    snprintf(c->note, sizeof c->note, "%s", why);
    return;
  }
  /* Build first: compilation stays outside every timed region. */
  st = nabla_params_build_check(ctx, space, T->opt.dtype, T->opt.head_dim, &c->params);
  if (st == NABLA_OK) st = ops->output(ctx, check, &c->params, &mine, &n); /* also warms the check shape */
  if (st != NABLA_OK) {
    c->state = st == NABLA_UNSUPPORTED ? NABLA_TUNE_UNFIT : NABLA_TUNE_FAILED;
    copy_text(c->note, sizeof c->note, ctx->error[0] ? ctx->error : nabla_status_str(st));
    goto done;
  }
  if (ref_out) {
    if (n != ref_n || !ops->compare(check, ref_out, mine, n, &c->max_error, c->note, sizeof c->note)) {
      c->state = NABLA_TUNE_REJECTED;
      goto done;
    }
  }
  if (out) *out = mine, *out_n = n, mine = NULL;
  if (c->resumed) goto done; /* the reference's time comes from the checkpoint */
  st = time_config(T, ops, timed, c, limit);
  if (st != NABLA_OK) {
    c->state = (st == NABLA_UNSUPPORTED && limit > 0) ? NABLA_TUNE_UNFIT : NABLA_TUNE_FAILED;
    copy_text(c->note, sizeof c->note, ctx->error[0] ? ctx->error : nabla_status_str(st));
    goto done;
  }
  c->state = NABLA_TUNE_MEASURED;
done:
  free(mine);
}

static void tune_one(tuner *T, const nabla_kernel_space *space, const nabla_shape *shape,
                     config *cs, int n) {
  nabla_context *ctx = T->ctx;
  const kernel_ops *ops = ops_find(space->kernel);
  const char *cls = nabla_shape_class(shape);
  problem check, timed;
  memset(&check, 0, sizeof check);
  memset(&timed, 0, sizeof timed);
  double *ref_out = NULL;
  size_t ref_n = 0;
  cJSON *resume = NULL;
  char pkey[512], why[512];
  nabla_status st;

  if (!T->opt.force) {
    nabla_params p;
    double ms = -1.0;
    int full = 0;
    if (nabla_tuning_load(ctx, space, T->opt.dtype, T->opt.head_dim, cls, &p, &ms, &full) && (full || !T->opt.full)) {
      nabla_tune_report r = report_of(T, NABLA_TUNE_CACHED, space->kernel, cls, shape);
      char text[160];
      nabla_params_text(&p, text, sizeof text);
      T->done += n;
      T->sum.cached++;
      r.param_count = p.count;
      r.param_names = (const char *const *)p.names;
      r.param_values = p.values;
      r.params = text;
      r.ms = ms;
      r.reference_ms = r.default_ms = -1.0;
      r.stored = 1;
      report(T, &r);
      return;
    }
  }
  if (!problem_fits(T, ops, shape, why, sizeof why)) {
    report_skip(T, space->kernel, cls, shape, n, why);
    return;
  }
  check.shape = check_shape(T);
  timed.shape = *shape;
  check.dtype = timed.dtype = T->opt.dtype;
  check.elems = (size_t)check.shape.batch * check.shape.heads * check.shape.seq * check.shape.head_dim;
  timed.elems = (size_t)shape->batch * shape->heads * shape->seq * shape->head_dim;
  nabla_clear_error(ctx);
  if ((st = ops->prepare(ctx, &check, 1)) != NABLA_OK) {
    snprintf(why, sizeof why, "preparing the check problem failed: %.400s", ctx->error);
    if (st != NABLA_UNSUPPORTED && st != NABLA_OUT_OF_MEMORY) record_failure(T, st, why);
    report_skip(T, space->kernel, cls, shape, n, why);
    goto done;
  }
  /* Predict the timed problem's run time from the reference on the check problem (second run,
   * after the build): a class far too slow for this device is skipped before its problem is
   * even made. Small problems carry fixed costs, so the prediction errs on the slow side. */
  double ratio = ops->work(shape) / ops->work(&check.shape);
  if (T->opt.max_run_ms > 0 && ratio > 4.0) {
    nabla_params ref;
    double ms = 0.0;
    nabla_params_reference(space, &ref);
    if (nabla_params_valid(ctx, space, T->opt.head_dim, &ref, NULL, 0) && ops->run(ctx, &check, &ref, NULL) == NABLA_OK &&
        ops->run(ctx, &check, &ref, &ms) == NABLA_OK && ms * ratio > T->opt.max_run_ms) {
      snprintf(why, sizeof why, "too slow on this device: one run of the %s problem would take about %.0f ms (limit %.0f ms)",
               cls, ms * ratio, T->opt.max_run_ms);
      report_skip(T, space->kernel, cls, shape, n, why);
      goto done;
    }
    nabla_clear_error(ctx);
  }
  if ((st = ops->prepare(ctx, &timed, 0)) != NABLA_OK) {
    snprintf(why, sizeof why, "preparing the problem failed: %.400s", ctx->error);
    if (st != NABLA_UNSUPPORTED && st != NABLA_OUT_OF_MEMORY) record_failure(T, st, why);
    report_skip(T, space->kernel, cls, shape, n, why);
    goto done;
  }

  progress_key(T, space->kernel, cls, shape, pkey, sizeof pkey);
  if (!T->opt.force) resume = progress_load(T, pkey);
  int measured = 0;
  for (int i = 0; i < n && !T->stop; i++) {
    config *c = &cs[i];
    if (resume) progress_find(resume, c);
    /* A resumed candidate keeps its checkpointed result; the reference always runs again (its
     * output is what the others are checked against) but keeps a checkpointed time. */
    if (c->is_reference && c->resumed && c->state != NABLA_TUNE_MEASURED) c->resumed = 0;
    if (!c->resumed || c->is_reference)
      evaluate(T, space, ops, &check, &timed, c, c->is_reference ? NULL : ref_out, ref_n,
               c->is_reference ? &ref_out : NULL, &ref_n, c->is_reference ? T->opt.max_run_ms : 0.0);
    measured += c->state == NABLA_TUNE_MEASURED;
    T->done++;
    report_config(T, space->kernel, cls, shape, c);
    if (c->is_reference && c->state != NABLA_TUNE_MEASURED) {
      snprintf(why, sizeof why, "the reference configuration %s: %s",
               c->state == NABLA_TUNE_UNFIT ? "does not fit" : c->state == NABLA_TUNE_REJECTED ? "was rejected" : "failed",
               c->note);
      if (c->state == NABLA_TUNE_FAILED) record_failure(T, NABLA_OPENCL, why);
      report_skip(T, space->kernel, cls, shape, n - i - 1, why);
      goto done;
    }
    progress_save(T, pkey, space->kernel, cs, i + 1, 0);
  }
  if (T->stop) {
    T->sum.interrupted = 1;
    goto done;
  }

  /* Winner: the fastest measured; ties go to the default, then the reference. */
  int win = -1, def = -1;
  for (int i = 0; i < n; i++) {
    if (cs[i].is_default) def = i;
    if (cs[i].state != NABLA_TUNE_MEASURED) continue;
    if (win < 0 || cs[i].ms < cs[win].ms) win = i;
  }
  if (def >= 0 && cs[def].state == NABLA_TUNE_MEASURED && win != def && !T->stop) {
    double ms_win = 0.0, ms_def = 0.0;
    int accept = 0;
    st = rematch(T, ops, &timed, &cs[win].params, &cs[def].params, &ms_win, &ms_def, &accept);
    if (st != NABLA_OK || !accept) {
      if (st == NABLA_OK) cs[def].ms = ms_def;
      win = def;
    } else {
      cs[win].ms = ms_win;
      cs[def].ms = ms_def;
    }
  }
  double ref_ms = cs[0].state == NABLA_TUNE_MEASURED ? cs[0].ms : -1.0;
  double def_ms = def >= 0 && cs[def].state == NABLA_TUNE_MEASURED ? cs[def].ms : -1.0;
  int stored = store_result(T, space, cls, shape, &cs[win], ref_ms, def_ms, measured);
  if (stored) progress_save(T, pkey, space->kernel, cs, n, 1);
  nabla_tuning_forget(ctx);
  T->sum.results++;
  T->sum.stored += stored;
  nabla_tune_report r = report_of(T, NABLA_TUNE_RESULT, space->kernel, cls, shape);
  r.param_count = cs[win].params.count;
  r.param_names = (const char *const *)cs[win].params.names;
  r.param_values = cs[win].params.values;
  r.params = cs[win].text;
  r.ms = cs[win].ms;
  r.reference_ms = ref_ms;
  r.default_ms = def_ms;
  r.candidates = measured;
  r.stored = stored;
  r.is_reference = cs[win].is_reference;
  r.is_default = cs[win].is_default;
  report(T, &r);
done:
  cJSON_Delete(resume);
  free(ref_out);
  problem_release(&check);
  problem_release(&timed);
  nabla_clear_error(ctx);
}

/* ---- the entry point -------------------------------------------------------------------- */

void nabla_tune_options_init(nabla_tune_options *o) {
  if (!o) return;
  memset(o, 0, sizeof *o);
  o->dtype = NABLA_BF16;
  o->head_dim = 64;
}

/* Whether `kernel` is named in the comma-separated list (NULL or "": all). */
static int kernel_wanted(const char *list, const char *kernel) {
  if (!list || !*list) return 1;
  size_t n = strlen(kernel);
  for (const char *s = list; *s;) {
    const char *comma = strchr(s, ',');
    size_t len = comma ? (size_t)(comma - s) : strlen(s);
    if (len == n && strncmp(s, kernel, n) == 0) return 1;
    s += len + (comma ? 1 : 0);
  }
  return 0;
}

static nabla_status check_options(nabla_context *ctx, nabla_tune_options *o) {
  if (o->dtype != NABLA_F32 && o->dtype != NABLA_F16 && o->dtype != NABLA_BF16)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "dtype %d is not f32, f16 or bf16", (int)o->dtype);
  if (o->shape) {
    char err[256];
    if (nabla_shape_check(o->shape, err, sizeof err) != NABLA_OK)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "tuning shape: %s", err);
    o->head_dim = o->shape->head_dim;
  }
  if (o->head_dim == 0) o->head_dim = 64;
  if (o->head_dim < 8 || o->head_dim > NABLA_MAX_HEAD_DIM || o->head_dim % 8)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "head_dim %d: must be a multiple of 8 up to %d",
                      o->head_dim, NABLA_MAX_HEAD_DIM);
  if (o->kernels && *o->kernels) {
    size_t total = strlen(o->kernels);
    if (o->kernels[total - 1] == ',')
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "kernels \"%s\": empty name", o->kernels);
    for (const char *s = o->kernels; *s;) {
      const char *comma = strchr(s, ',');
      size_t len = comma ? (size_t)(comma - s) : strlen(s);
      char name[64];
      if (len == 0 || len >= sizeof name)
        return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "kernels \"%s\": empty or overlong name", o->kernels);
      memcpy(name, s, len);
      name[len] = '\0';
      if (!nabla_kernel_space_find(name) || !ops_find(name))
        return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "kernels: no tunable kernel named \"%s\" (attention, select)", name);
      s += len + (comma ? 1 : 0);
    }
  }
  if (!(o->target_ms >= 0.0) || !(o->max_run_ms >= 0.0) || o->max_reps < 0 || o->max_candidates < 0)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "target_ms, max_run_ms, max_reps and max_candidates must not be negative");
  if (o->target_ms == 0.0) o->target_ms = o->full ? 1000.0 : 200.0;
  if (o->max_reps == 0) o->max_reps = 50;
  if (o->max_reps > MAX_REPS_CAP) o->max_reps = MAX_REPS_CAP;
  if (o->max_run_ms == 0.0) o->max_run_ms = 5000.0;
  cl_command_queue_properties props = 0;
  if (clGetCommandQueueInfo(ctx->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL) != CL_SUCCESS ||
      !(props & CL_QUEUE_PROFILING_ENABLE))
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "tuning needs a command queue with profiling enabled");
  return NABLA_OK;
}

static double wall_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

nabla_status nabla_tune(nabla_context *ctx, const nabla_tune_options *options, nabla_tune_callback callback,
                        void *user, nabla_tune_summary *summary) {
  nabla_status st = NABLA_OK;
  tuner *T = NULL;
  config *cs = NULL;
  double t0 = wall_seconds();
  if (summary) memset(summary, 0, sizeof *summary);
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  T = calloc(1, sizeof *T);
  cs = calloc(MAX_CONFIGS, sizeof *cs);
  if (!T || !cs) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  T->ctx = ctx;
  if (options) T->opt = *options;
  else nabla_tune_options_init(&T->opt);
  T->cb = callback;
  T->user = user;
  TRY(st, check_options(ctx, &T->opt));

  /* Plan: the classes to tune and the total number of configurations for the progress. */
  nabla_shape shapes[3];
  int nshapes = 0;
  if (T->opt.shape) shapes[nshapes++] = *T->opt.shape;
  else
    for (int c = 0; c < (T->opt.full ? 3 : 1); c++) shapes[nshapes++] = class_shape(T, c);
  for (size_t k = 0; nabla_kernel_space_at(k); k++) {
    const nabla_kernel_space *space = nabla_kernel_space_at(k);
    if (kernel_wanted(T->opt.kernels, space->kernel) && ops_find(space->kernel))
      T->total += nshapes * enumerate(T, space, cs, MAX_CONFIGS);
  }
  for (size_t k = 0; nabla_kernel_space_at(k) && !T->stop; k++) {
    const nabla_kernel_space *space = nabla_kernel_space_at(k);
    if (!kernel_wanted(T->opt.kernels, space->kernel) || !ops_find(space->kernel)) continue;
    for (int c = 0; c < nshapes && !T->stop; c++) {
      int n = enumerate(T, space, cs, MAX_CONFIGS);
      tune_one(T, space, &shapes[c], cs, n);
    }
  }
  if (T->stop) T->sum.interrupted = 1;
  nabla_tuning_forget(ctx);
  if (T->failure != NABLA_OK && !T->sum.interrupted)
    st = nabla_fail(ctx, T->failure, "%s", T->failure_text);
done:
  if (T) {
    T->sum.seconds = wall_seconds() - t0;
    if (summary) *summary = T->sum;
  }
  free(T);
  free(cs);
  return st;
}
