/*
 * nablacl demo — the whole pipeline on a generated video-like problem.
 *
 * Generates Q, K, V in raster order with the structure of a video transformer's activations
 * (smooth in space and time, plus noise; Q and K share that structure so attention is
 * local), uploads them, reorders raster -> tile on the device, builds the NABLA mask, runs
 * sparse and dense attention, and reports what sparsity buys (speed) and costs (error vs
 * dense), plus the error against the float64 reference on a few heads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "png_out.h"
#include "synth.h"

static const char usage[] =
    "nablacl demo [options]\n\n"
    "Runs NABLA on a generated video-like problem and compares sparse with dense attention.\n"
    "Wan2.1-14B sized, on a GPU: nablacl demo --grid 21,45,80 --heads 40 --dim 128";

static const cli_option options[] = {
  {"--grid", "T,H,W", "latent video grid, frames x height x width (default 4,32,48)"},
  {"--heads", "H", "attention heads (default 2)"},
  {"--dim", "D", "head dimension, multiple of 8 up to 256 (default 64)"},
  {"--batch", "B", "batch size (default 1)"},
  {"--dtype", "f32|f16|bf16", "storage type (default bf16)"},
  {"--algo", "STR", "sparsity (default nabla-0.7)"},
  {"--device", "SEL", "device index, platform or device name substring, platform:NAME or device:NAME (default: NABLACL_DEVICE, GPU, CPU)"},
  {"--seed", "N", "generator seed (default 1)"},
  {"--ref-heads", "N", "heads checked against float64 (default: as many as take ~2 s; 0 = none)"},
  {"--png", "FILE", "also draw the mask of batch 0, head 0 (as `nablacl mask --png`)"},
  {"--json", NULL, "print one JSON object"},
};
enum {
  OPT_GRID, OPT_HEADS, OPT_DIM, OPT_BATCH, OPT_DTYPE, OPT_ALGO, OPT_DEVICE, OPT_SEED,
  OPT_REF_HEADS, OPT_PNG, OPT_JSON, OPT_COUNT
};

#define DEMO_REF_BUDGET 2.5e9      /* float64 flops spent on the reference by default */

typedef struct {
  const char *v[OPT_COUNT];
  nabla_shape shape;
  nabla_dtype dtype;
  nabla_algo algo;
  const char *algo_text;
  int seed, ref_heads;         /* ref_heads -1: automatic */
} demo_args;

typedef struct {
  void *q, *k, *v;             /* raster order, storage dtype */
  size_t elems, bytes;
} demo_data;

typedef struct {
  double gen_s, ref_s, mask_ms, sparse_ms, dense_ms, density;
  double err_vs_dense, rel_vs_dense;   /* max abs and relative RMS, sparse vs dense */
  int64_t kept;
  void *sparse, *dense;        /* outputs, raster order, storage dtype */
  uint8_t *bitmap;             /* device mask */
  int ref_heads, ref_rows, ref_ok;   /* heads checked, query blocks checked per head */
  double ref_err, ref_tol;
  cli_mask_compare masks;
  char variant[32], variant_note[512]; /* the sparse kernel that ran, and why not the wanted one */
} demo_results;

/* ---- arguments -------------------------------------------------------------------------- */

static int parse_numbers(demo_args *a, int grid[3]) {
  int rc = 0;
  nabla_shape *s = &a->shape;
  if (a->v[OPT_GRID]) rc = cli_parse_grid("--grid", a->v[OPT_GRID], grid);
  if (!rc && a->v[OPT_HEADS]) rc = cli_parse_int("--heads", a->v[OPT_HEADS], 1, 4096, &s->heads);
  if (!rc && a->v[OPT_DIM])
    rc = cli_parse_int("--dim", a->v[OPT_DIM], 8, NABLA_MAX_HEAD_DIM, &s->head_dim);
  if (!rc && a->v[OPT_BATCH]) rc = cli_parse_int("--batch", a->v[OPT_BATCH], 1, 4096, &s->batch);
  if (!rc && a->v[OPT_SEED]) rc = cli_parse_int("--seed", a->v[OPT_SEED], 0, 2147483647, &a->seed);
  if (!rc && a->v[OPT_REF_HEADS])
    rc = cli_parse_int("--ref-heads", a->v[OPT_REF_HEADS], 0, 1 << 20, &a->ref_heads);
  if (!rc && a->v[OPT_DTYPE]) rc = cli_parse_dtype("--dtype", a->v[OPT_DTYPE], &a->dtype);
  return rc;
}

static int parse_args(int argc, char **argv, demo_args *a) {
  memset(a, 0, sizeof *a);
  int rc = cli_parse(argc, argv, usage, options, OPT_COUNT, a->v);
  if (rc != CLI_PARSED) return rc;
  int grid[3] = {4, 32, 48};   /* S = 6144: well under a minute on 2 CPU cores (PoCL) */
  a->shape = (nabla_shape){.batch = 1, .heads = 2, .head_dim = 64};
  a->dtype = NABLA_BF16;
  a->seed = 1;
  a->ref_heads = -1;
  a->algo_text = a->v[OPT_ALGO] ? a->v[OPT_ALGO] : "nabla-0.7";
  rc = parse_numbers(a, grid);
  if (!rc) rc = cli_parse_algo("--algo", a->algo_text, &a->algo);
  if (!rc && a->v[OPT_PNG] && !png_available()) {
    cli_error("--png: this nablacl was built without libpng (install libpng-dev and rebuild)");
    rc = CLI_EXIT_USAGE;
  }
  if (!rc && a->v[OPT_PNG]) rc = cli_check_output_path("--png", a->v[OPT_PNG]);
  if (rc) return rc;
  a->shape.grid_t = grid[0];
  a->shape.grid_h = grid[1];
  a->shape.grid_w = grid[2];
  a->shape.seq = grid[0] * grid[1] * grid[2];
  if (a->shape.head_dim % 8 != 0) {
    cli_error("--dim %s: must be a multiple of 8 up to %d", a->v[OPT_DIM], NABLA_MAX_HEAD_DIM);
    return CLI_EXIT_USAGE;
  }
  char err[512] = "";
  if (nabla_shape_check(&a->shape, err, sizeof err) != NABLA_OK) {
    cli_error("invalid shape: %s", err);
    return CLI_EXIT_USAGE;
  }
  return 0;
}

/* ---- inputs ----------------------------------------------------------------------------- */

static int generate(const demo_args *a, demo_data *d) {
  const nabla_shape *s = &a->shape;
  d->elems = cli_shape_elems(s);
  d->bytes = d->elems * nabla_dtype_size(a->dtype);
  d->q = malloc(d->bytes);
  d->k = malloc(d->bytes);
  d->v = malloc(d->bytes);
  if (!d->q || !d->k || !d->v || synth_video_qkv(s, a->dtype, (uint64_t)a->seed, d->q, d->k, d->v)) {
    cli_error("out of memory generating Q/K/V (%zu bytes each)", d->bytes);
    return CLI_EXIT_RUNTIME;
  }
  return 0;
}

static void free_data(demo_data *d) {
  free(d->q);
  free(d->k);
  free(d->v);
  memset(d, 0, sizeof *d);
}

/* ---- device ----------------------------------------------------------------------------- */

typedef struct {
  cl_mem raster, q, k, v, sparse, dense;   /* `raster` is the staging buffer for reorders */
} demo_buffers;

static void release_buffers(demo_buffers *b) {
  cl_mem *all[] = {&b->raster, &b->q, &b->k, &b->v, &b->sparse, &b->dense};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cli_release_mem(all[i]);
}

static int reorder(nabla_context *ctx, const demo_args *a, nabla_reorder_dir dir, cl_mem src,
                   cl_mem dst) {
  nabla_status st = nabla_reorder(ctx, &a->shape, a->dtype, dir, src, dst, 0, NULL, NULL);
  if (st == NABLA_OK && clFinish(nabla_context_queue(ctx)) == CL_SUCCESS) return 0;
  cli_lib_error(ctx, st == NABLA_OK ? NABLA_OPENCL : st, "nabla_reorder");
  return CLI_EXIT_RUNTIME;
}

/* Uploads each raster tensor through the staging buffer and reorders it into tile order. */
static int upload(nabla_context *ctx, const demo_args *a, const demo_data *d, demo_buffers *b) {
  const void *host[3] = {d->q, d->k, d->v};
  cl_mem *tile[5] = {&b->q, &b->k, &b->v, &b->sparse, &b->dense};
  static const char *const names[5] = {"Q", "K", "V", "sparse O", "dense O"};
  b->raster = cli_buffer(ctx, d->bytes, NULL, "staging");
  if (!b->raster) return CLI_EXIT_RUNTIME;
  for (int i = 0; i < 5; i++) {
    *tile[i] = cli_buffer(ctx, d->bytes, NULL, names[i]);
    if (!*tile[i]) return CLI_EXIT_RUNTIME;
    if (i >= 3) continue;
    cl_int err = clEnqueueWriteBuffer(nabla_context_queue(ctx), b->raster, CL_TRUE, 0, d->bytes,
                                      host[i], 0, NULL, NULL);
    if (err != CL_SUCCESS) {
      cli_error("uploading %s failed (OpenCL error %d)", names[i], (int)err);
      return CLI_EXIT_RUNTIME;
    }
    int rc = reorder(ctx, a, NABLA_RASTER_TO_TILE, b->raster, *tile[i]);
    if (rc) return rc;
  }
  return 0;
}

/* Reorders a tile-order output to raster through the staging buffer and reads it. */
static int download(nabla_context *ctx, const demo_args *a, cl_mem tile, size_t bytes,
                    void **out, cl_mem staging) {
  *out = malloc(bytes);
  if (!*out) {
    cli_error("out of memory reading the output");
    return CLI_EXIT_RUNTIME;
  }
  int rc = reorder(ctx, a, NABLA_TILE_TO_RASTER, tile, staging);
  return rc ? rc : cli_read_buffer(ctx, staging, bytes, *out, "the output");
}

static int read_mask(nabla_context *ctx, const demo_args *a, const nabla_mask *mask,
                     demo_results *r) {
  size_t nb = (size_t)nabla_shape_blocks(&a->shape);
  size_t cells = (size_t)a->shape.batch * a->shape.heads * nb * nb;
  nabla_status st = nabla_mask_stats(ctx, mask, &r->kept, &r->density);
  r->bitmap = st == NABLA_OK ? malloc(cells) : NULL;
  if (st == NABLA_OK) st = r->bitmap ? nabla_mask_read_bitmap(ctx, mask, r->bitmap, cells)
                                     : NABLA_OUT_OF_MEMORY;
  if (st == NABLA_OK) return 0;
  cli_lib_error(ctx, st, "reading the mask");
  return CLI_EXIT_RUNTIME;
}

/*
 * Untimed first runs, so the timed ones exclude program builds (kernels are compiled or
 * loaded once per process and options) and first-touch costs such as the mask workspace. The mask is warmed on the real
 * shape (cheap); attention on a view that treats every frame as a head: the same tokens per
 * launch, so the same tuned programs, at 1/T of the work.
 */
static int warm_up(nabla_context *ctx, const demo_args *a, const demo_buffers *b) {
  nabla_mask *mask = NULL, *frame_mask = NULL;
  nabla_shape frames = a->shape;
  frames.batch = 1;
  frames.heads = a->shape.batch * a->shape.heads * a->shape.grid_t;
  frames.grid_t = 1;
  frames.seq = frames.grid_h * frames.grid_w;
  int rc = cli_timed_mask_build(ctx, &a->algo, &a->shape, a->dtype, b->q, b->k, &mask, NULL);
  if (!rc) rc = cli_timed_mask_build(ctx, &a->algo, &frames, a->dtype, b->q, b->k, &frame_mask, NULL);
  if (!rc)
    rc = cli_timed_attend(ctx, &frames, a->dtype, frame_mask, b->q, b->k, b->v, b->sparse, NULL);
  if (!rc) rc = cli_timed_attend(ctx, &frames, a->dtype, NULL, b->q, b->k, b->v, b->dense, NULL);
  nabla_mask_release(mask);
  nabla_mask_release(frame_mask);
  return rc;
}

/* What the demo is doing, on one self-erasing stderr line, for a person watching (a terminal):
 * a large problem on a CPU takes minutes. NULL erases the line. Nothing when stderr is a file. */
static void phase(const char *what) {
  if (!isatty(STDERR_FILENO)) return;
  if (what) fprintf(stderr, "\rnablacl demo: %s ...\033[K", what);
  else fprintf(stderr, "\r\033[K");
  fflush(stderr);
}

static int run_device(nabla_context *ctx, const demo_args *a, const demo_data *d,
                      demo_results *r) {
  demo_buffers b = {0};
  nabla_mask *mask = NULL;
  int rc = upload(ctx, a, d, &b);
  if (!rc) phase("warming up (the first run builds the kernels)");
  if (!rc) rc = warm_up(ctx, a, &b);
  if (!rc) phase("mask build");
  if (!rc) rc = cli_timed_mask_build(ctx, &a->algo, &a->shape, a->dtype, b.q, b.k, &mask, &r->mask_ms);
  if (!rc) phase("sparse attention");
  if (!rc)
    rc = cli_timed_attend(ctx, &a->shape, a->dtype, mask, b.q, b.k, b.v, b.sparse, &r->sparse_ms);
  if (!rc) {
    snprintf(r->variant, sizeof r->variant, "%s", nabla_variant_last(ctx));
    snprintf(r->variant_note, sizeof r->variant_note, "%s", nabla_variant_note(ctx));
  }
  if (!rc) phase("dense attention");
  if (!rc)
    rc = cli_timed_attend(ctx, &a->shape, a->dtype, NULL, b.q, b.k, b.v, b.dense, &r->dense_ms);
  if (!rc) rc = read_mask(ctx, a, mask, r);
  if (!rc) rc = download(ctx, a, b.sparse, d->bytes, &r->sparse, b.raster);
  if (!rc) rc = download(ctx, a, b.dense, d->bytes, &r->dense, b.raster);
  nabla_mask_release(mask);
  release_buffers(&b);
  return rc;
}

/* ---- comparisons ------------------------------------------------------------------------ */

/* max |x - y| and ||x - y|| / ||y|| of two stored tensors. */
static void compare_stored(const void *x, const void *y, size_t n, nabla_dtype dtype,
                           double *max_abs, double *rel_rms) {
  enum { CHUNK = 4096 };
  double a[CHUNK], b[CHUNK], m = 0.0, diff2 = 0.0, ref2 = 0.0;
  size_t esize = nabla_dtype_size(dtype);
  for (size_t i = 0; i < n; i += CHUNK) {
    size_t len = n - i < CHUNK ? n - i : CHUNK;
    cli_to_double((const char *)x + i * esize, len, dtype, a);
    cli_to_double((const char *)y + i * esize, len, dtype, b);
    double d = cli_max_abs_diff(a, b, len);
    if (d > m || isnan(d)) m = d;
    for (size_t j = 0; j < len; j++) {
      diff2 += (a[j] - b[j]) * (a[j] - b[j]);
      ref2 += b[j] * b[j];
    }
  }
  *max_abs = m;
  *rel_rms = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
}

/*
 * What the float64 check covers: as many whole heads as fit the budget (attention dominates
 * its cost); when one head alone is over budget, evenly spaced query blocks of one head.
 * --ref-heads N asks for N whole heads.
 */
static void plan_reference(const demo_args *a, demo_results *r) {
  int total = a->shape.batch * a->shape.heads, nb = nabla_shape_blocks(&a->shape);
  double kept_tokens = r->density * a->shape.seq + NABLA_BLOCK;
  double per_row = 4.0 * NABLA_BLOCK * kept_tokens * a->shape.head_dim, per_head = per_row * nb;
  r->ref_rows = nb;
  if (a->ref_heads >= 0) {
    r->ref_heads = a->ref_heads < total ? a->ref_heads : total;
    return;
  }
  double heads = DEMO_REF_BUDGET / per_head;
  r->ref_heads = heads < 1.0 ? 1 : heads > total ? total : (int)heads;
  if (heads < 1.0) {
    double rows = DEMO_REF_BUDGET / per_row;
    r->ref_rows = rows < 1.0 ? 1 : rows > nb ? nb : (int)rows;
  }
}

typedef struct {
  double *raster, *q, *k, *v, *ref, *out;   /* one head each, [S, D] */
  uint8_t *mask, *near, *rows;              /* [Nb, Nb], [Nb], [Nb] */
  int32_t *starts;                          /* [Nb + 1] */
} ref_scratch;

static int scratch_alloc(const demo_args *a, demo_results *r, ref_scratch *x) {
  size_t n = (size_t)a->shape.seq * a->shape.head_dim, nb = (size_t)nabla_shape_blocks(&a->shape);
  double *pool = malloc(6 * n * sizeof(double));
  *x = (ref_scratch){pool, pool + n, pool + 2 * n, pool + 3 * n, pool + 4 * n, pool + 5 * n,
                     malloc(nb * nb), malloc(nb), calloc(nb, 1), malloc((nb + 1) * sizeof(int32_t))};
  if (!pool || !x->mask || !x->near || !x->rows || !x->starts) return -1;
  nabla_shape one = a->shape;
  one.batch = one.heads = 1;
  nabla_shape_block_starts(&one, x->starts, nb + 1);
  for (int i = 0; i < r->ref_rows; i++)   /* evenly spaced, centred in their strides */
    x->rows[(size_t)((2 * (long long)i + 1) * (long long)nb / (2 * r->ref_rows))] = 1;
  return 0;
}

static void scratch_free(ref_scratch *x) {
  free(x->raster);
  free(x->mask);
  free(x->near);
  free(x->rows);
  free(x->starts);
}

/* Dequantizes one head of a raster tensor into tile order. */
static void head_tile(const demo_args *a, const nabla_shape *one, const void *src, size_t bh,
                      double *raster, double *tile) {
  size_t n = (size_t)a->shape.seq * a->shape.head_dim;
  cli_to_double((const char *)src + bh * n * nabla_dtype_size(a->dtype), n, a->dtype, raster);
  nabla_ref_reorder(one, NABLA_RASTER_TO_TILE, raster, tile);
}

/* max |device - reference| over the checked query blocks of one head (tile order). */
static double checked_error(const demo_args *a, const ref_scratch *x) {
  double err = 0.0;
  size_t D = (size_t)a->shape.head_dim;
  for (int i = 0; i < nabla_shape_blocks(&a->shape); i++) {
    if (!x->rows[i]) continue;
    size_t off = (size_t)x->starts[i] * D, len = (size_t)(x->starts[i + 1] - x->starts[i]) * D;
    double e = cli_max_abs_diff(x->out + off, x->ref + off, len);
    if (e > err || isnan(e)) err = e;
  }
  return err;
}

/* Float64 reference of one head: its NABLA mask vs the device's, its attention (device mask). */
static int ref_head(const demo_args *a, demo_results *r, const demo_data *d, size_t bh,
                    ref_scratch *x, cli_mask_compare *cmp) {
  nabla_shape one = a->shape;
  one.batch = one.heads = 1;
  size_t n = (size_t)a->shape.seq * a->shape.head_dim, nb = (size_t)nabla_shape_blocks(&one);
  const uint8_t *dev_mask = r->bitmap + bh * nb * nb;
  head_tile(a, &one, d->q, bh, x->raster, x->q);
  head_tile(a, &one, d->k, bh, x->raster, x->k);
  head_tile(a, &one, d->v, bh, x->raster, x->v);
  nabla_ref_mask(&one, &a->algo, x->q, x->k, x->mask, x->near, 1e-6);
  cli_compare_masks(&one, dev_mask, x->mask, x->near, cmp);
  if (cli_ref_attention_heads(&one, x->q, x->k, x->v, dev_mask, x->rows, 0, 1, x->ref) != 0)
    return -1;
  head_tile(a, &one, r->sparse, bh, x->raster, x->out);
  double err = checked_error(a, x);
  if (err > r->ref_err || isnan(err)) r->ref_err = err;
  double tol = cli_tolerance(a->dtype, cli_max_abs(x->v, n));
  if (tol > r->ref_tol) r->ref_tol = tol;
  return 0;
}

static int run_reference(const demo_args *a, const demo_data *d, demo_results *r) {
  ref_scratch x;
  double t0 = 1e-3 * cli_clock_ms();
  int rc = 0, total = a->shape.batch * a->shape.heads;
  plan_reference(a, r);
  if (scratch_alloc(a, r, &x) != 0) rc = -1;
  for (int i = 0; !rc && i < r->ref_heads; i++) {
    cli_mask_compare cmp;   /* spread the checked heads over the batch and heads */
    rc = ref_head(a, r, d, (size_t)((long long)i * total / r->ref_heads), &x, &cmp);
    r->masks.rows += cmp.rows;
    r->masks.rows_equal += cmp.rows_equal;
    r->masks.rows_near += cmp.rows_near;
    r->masks.rows_bad += cmp.rows_bad;
  }
  r->ref_ok = r->masks.rows_bad == 0 && r->ref_err <= r->ref_tol;
  r->ref_s = 1e-3 * cli_clock_ms() - t0;
  scratch_free(&x);
  if (rc) cli_error("out of memory for the float64 reference");
  return rc ? CLI_EXIT_RUNTIME : 0;
}

/* ---- report ----------------------------------------------------------------------------- */

static cJSON *reference_json(const demo_args *a, const demo_results *r) {
  cJSON *c = cJSON_CreateObject();
  cJSON_AddNumberToObject(c, "heads_checked", r->ref_heads);
  cJSON_AddNumberToObject(c, "heads_total", a->shape.batch * a->shape.heads);
  cJSON_AddNumberToObject(c, "query_blocks_checked_per_head", r->ref_rows);
  cJSON_AddNumberToObject(c, "max_abs_err", r->ref_err);
  cJSON_AddNumberToObject(c, "tolerance", r->ref_tol);
  cJSON_AddNumberToObject(c, "mask_rows", (double)r->masks.rows);
  cJSON_AddNumberToObject(c, "mask_rows_equal", (double)r->masks.rows_equal);
  cJSON_AddNumberToObject(c, "mask_rows_near_threshold", (double)r->masks.rows_near);
  cJSON_AddNumberToObject(c, "mask_rows_unexplained", (double)r->masks.rows_bad);
  cJSON_AddNumberToObject(c, "seconds", r->ref_s);
  cJSON_AddBoolToObject(c, "ok", r->ref_ok);
  return c;
}

static int report_json(const demo_args *a, const demo_results *r, const char *device) {
  cJSON *o = cJSON_CreateObject();
  double nb = nabla_shape_blocks(&a->shape);
  cJSON_AddStringToObject(o, "device", device);
  cJSON_AddStringToObject(o, "algo", a->algo_text);
  cJSON_AddStringToObject(o, "dtype", nabla_dtype_name(a->dtype));
  cJSON_AddItemToObject(o, "shape", cli_json_shape(&a->shape));
  cJSON_AddNumberToObject(o, "density", r->density);
  cJSON_AddNumberToObject(o, "blocks_kept", (double)r->kept);
  cJSON_AddNumberToObject(o, "blocks_total", a->shape.batch * a->shape.heads * nb * nb);
  cJSON_AddNumberToObject(o, "mask_ms", r->mask_ms);
  cJSON_AddNumberToObject(o, "attn_ms", r->sparse_ms);
  cJSON_AddStringToObject(o, "variant", r->variant);
  cJSON_AddStringToObject(o, "variant_note", r->variant_note);
  cJSON_AddNumberToObject(o, "dense_ms", r->dense_ms);
  cJSON_AddNumberToObject(o, "speedup", r->dense_ms / r->sparse_ms);
  cJSON_AddNumberToObject(o, "speedup_with_mask", r->dense_ms / (r->sparse_ms + r->mask_ms));
  cJSON_AddNumberToObject(o, "max_abs_err_vs_dense", r->err_vs_dense);
  cJSON_AddNumberToObject(o, "rel_rms_err_vs_dense", r->rel_vs_dense);
  if (r->ref_heads > 0) cJSON_AddItemToObject(o, "reference", reference_json(a, r));
  cJSON_AddNumberToObject(o, "generate_s", r->gen_s);
  return cli_json_print(o);
}

static void report_human(const demo_args *a, const demo_results *r, const char *device) {
  char shape[160];
  double nb = nabla_shape_blocks(&a->shape);
  cli_format_shape(&a->shape, shape, sizeof shape);
  printf("device            %s\n", device);
  printf("shape             %s, %s\n", shape, nabla_dtype_name(a->dtype));
  printf("algo              %s\n", a->algo_text);
  printf("blocks kept       %lld of %.0f (density %.2f %%)\n", (long long)r->kept,
         a->shape.batch * a->shape.heads * nb * nb, 100.0 * r->density);
  printf("mask build        %9.3f ms\n", r->mask_ms);
  printf("sparse attention  %9.3f ms (%s kernel)%s%s\n", r->sparse_ms, r->variant, *r->variant_note ? "; " : "",
         r->variant_note);
  printf("dense attention   %9.3f ms\n", r->dense_ms);
  printf("speedup           %9.2fx (%.2fx including the mask build)\n", r->dense_ms / r->sparse_ms,
         r->dense_ms / (r->sparse_ms + r->mask_ms));
  printf("sparse vs dense   max abs err %.3g, relative RMS err %.3g (what sparsity costs)\n",
         r->err_vs_dense, r->rel_vs_dense);
  if (r->ref_heads <= 0) return;
  char rows[64] = "";
  if (r->ref_rows < nb) snprintf(rows, sizeof rows, " (%d of %.0f query blocks)", r->ref_rows, nb);
  printf("vs float64        max abs err %.3g (tolerance %.3g) on %d of %d heads%s: %s\n",
         r->ref_err, r->ref_tol, r->ref_heads, a->shape.batch * a->shape.heads, rows,
         r->ref_ok ? "ok" : "FAILED");
  printf("mask vs float64   %lld / %lld rows identical, %lld near threshold, %lld unexplained\n",
         (long long)r->masks.rows_equal, (long long)r->masks.rows, (long long)r->masks.rows_near,
         (long long)r->masks.rows_bad);
}

static int report(nabla_context *ctx, const demo_args *a, const demo_results *r) {
  char device[256];
  cli_device_name(ctx, device, sizeof device);
  int rc = a->v[OPT_JSON] ? report_json(a, r, device) : (report_human(a, r, device), 0);
  if (!rc && r->ref_heads > 0 && !r->ref_ok) {
    cli_error("the device result disagrees with the float64 reference");
    rc = CLI_EXIT_RUNTIME;
  }
  return rc;
}

/* --png: the device mask of batch 0, head 0, renamed into place once written. */
static int write_picture(const demo_args *a, const demo_results *r) {
  char err[512], *temp = NULL, *target = cli_output_target(a->v[OPT_PNG]);
  int failed = !target || mask_png_temp(target, &a->shape, r->bitmap, 0, 0, 0, &temp, err, sizeof err) != 0;
  free(target);
  if (failed) {
    cli_error("--png %s: %s", a->v[OPT_PNG], target ? err : "out of memory");
    return CLI_EXIT_RUNTIME;
  }
  cli_outputs set = {0};
  int rc = cli_outputs_adopt(&set, "--png", a->v[OPT_PNG], temp);
  if (!rc) rc = cli_outputs_commit(&set);
  cli_outputs_discard(&set);
  return rc;
}

int cmd_demo(int argc, char **argv) {
  demo_args a;
  demo_data d = {0};
  demo_results r = {0};
  nabla_context *ctx = NULL;
  int rc = parse_args(argc, argv, &a);
  if (rc == CLI_HELP_SHOWN) return CLI_EXIT_OK;
  if (!rc) rc = cli_context(a.v[OPT_DEVICE], &ctx);
  double t0 = 1e-3 * cli_clock_ms();
  if (!rc) phase("generating the inputs");
  if (!rc) rc = generate(&a, &d);
  r.gen_s = 1e-3 * cli_clock_ms() - t0;
  if (!rc) rc = run_device(ctx, &a, &d, &r);
  if (!rc) compare_stored(r.sparse, r.dense, d.elems, a.dtype, &r.err_vs_dense, &r.rel_vs_dense);
  if (!rc) phase("float64 reference on the host");
  if (!rc) rc = run_reference(&a, &d, &r);
  if (!rc) phase(NULL);
  if (!rc) rc = report(ctx, &a, &r);
  if (!rc && a.v[OPT_PNG]) rc = write_picture(&a, &r);
  nabla_context_destroy(ctx);
  free_data(&d);
  free(r.sparse);
  free(r.dense);
  free(r.bitmap);
  return rc;
}
