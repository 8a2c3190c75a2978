/*
 * nablacl bench — times the mask build, block-sparse attention and dense attention.
 *
 * Every figure is a median over --repeat runs after warm-up runs (one, so that program builds
 * and first-touch allocation are outside, and more for --warmup-ms), timed with OpenCL event
 * profiling from a marker to the operation's last kernel. TFLOP/s count computed blocks only:
 * 4 * |q block| * |k block| * D per kept (query block, key block) pair and head.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "synth.h"

static const char usage[] =
    "nablacl bench [--grid T,H,W | --seq S] [--batch B] [--heads H] [--dim D]\n"
    "              [--dtype f32|f16|bf16] [--algo STR | --density X] [--repeat N]\n"
    "              [--variant NAME] [--stages] [--device SEL] [--json]";

/* --variant's help is completed at run time from nabla_variant_names (see parse). */
static const cli_option option_table[] = {
    {"--grid", "T,H,W", "video grid (default 4,32,32)"},
    {"--seq", "S", "plain sequence of S tokens instead of a grid"},
    {"--batch", "B", "batch (default 1)"},
    {"--heads", "H", "heads (default 2)"},
    {"--dim", "D", "head dim (default 64)"},
    {"--dtype", "f32|f16|bf16", "storage type (default bf16)"},
    {"--algo", "STR", "mask for the sparse run (default nabla-0.7)"},
    {"--density", "X", "random block mask of density X (diagonal kept) for the sparse run"},
    {"--repeat", "N", "timed runs per figure, median reported (default 5)"},
    {"--warmup-ms", "T", "warm up each figure until T ms have passed (to time a GPU at its sustained, power-capped clock; default 0: one run)"},
    {"--device", "SEL", "device index, platform or device name substring, platform:NAME or device:NAME"},
    {"--stages", NULL, "also profile one mask build + sparse attention per stage"},
    {"--json", NULL, "print one JSON object"},
    {"--variant", "NAME", NULL},
};
enum { O_GRID, O_SEQ, O_BATCH, O_HEADS, O_DIM, O_DTYPE, O_ALGO, O_DENSITY, O_REPEAT, O_WARMUP_MS, O_DEVICE, O_STAGES, O_JSON, O_VARIANT, O_COUNT };
_Static_assert(sizeof option_table / sizeof option_table[0] == O_COUNT, "one row per option");

typedef struct {
  nabla_shape shape;
  nabla_dtype dtype;
  nabla_algo algo;
  const char *algo_text;
  double density; /* < 0: use the algo's mask */
  int repeat, warmup_ms, json, stages;
  const char *device;
  const char *variant; /* NULL: automatic */
} bench_args;

typedef struct {
  double mask_ms, sparse_ms, dense_ms, density, sparse_tflops, dense_tflops;
  int64_t kept;
  char variant[32], variant_dense[32], variant_note[512]; /* what ran, and why not the wanted */
  char stages[1024]; /* "stage ms" lines of one profiled mask build + sparse attention */
} bench_result;

static int parse(int argc, char **argv, bench_args *a) {
  const char *v[O_COUNT] = {0};
  /* Every field starts at zero: an unset --warmup-ms left warmup_ms uninitialized, and each
   * figure then warmed up for whatever the stack held (about 33 s each on PoCL). */
  memset(a, 0, sizeof *a);
  cli_option options[O_COUNT];
  char variant_help[256];
  snprintf(variant_help, sizeof variant_help, "kernel variant (attention and mask map; default auto): %s",
           nabla_variant_names());
  memcpy(options, option_table, sizeof options);
  options[O_VARIANT].help = variant_help;
  int rc = cli_parse(argc, argv, usage, options, O_COUNT, v);
  if (rc != CLI_PARSED) return rc == CLI_HELP_SHOWN ? CLI_HELP_SHOWN : rc;
  int grid[3] = {4, 32, 32}, seq = 0;
  nabla_shape *s = &a->shape;
  *s = (nabla_shape){1, 2, 0, 64, 0, 0, 0};
  a->dtype = NABLA_BF16;
  a->algo_text = v[O_ALGO] ? v[O_ALGO] : "nabla-0.7";
  a->density = -1.0;
  a->repeat = 5;
  a->json = v[O_JSON] != NULL;
  a->stages = v[O_STAGES] != NULL;
  a->device = v[O_DEVICE];
  a->variant = v[O_VARIANT];
  if (v[O_GRID] && v[O_SEQ]) {
    cli_error("--grid and --seq exclude each other");
    return CLI_EXIT_USAGE;
  }
  if (v[O_ALGO] && v[O_DENSITY]) {
    cli_error("--algo and --density exclude each other");
    return CLI_EXIT_USAGE;
  }
  if ((v[O_GRID] && cli_parse_grid("--grid", v[O_GRID], grid)) ||
      (v[O_SEQ] && cli_parse_int("--seq", v[O_SEQ], 1, 1L << 30, &seq)) ||
      (v[O_BATCH] && cli_parse_int("--batch", v[O_BATCH], 1, 65536, &s->batch)) ||
      (v[O_HEADS] && cli_parse_int("--heads", v[O_HEADS], 1, 65536, &s->heads)) ||
      (v[O_DIM] && cli_parse_int("--dim", v[O_DIM], 8, NABLA_MAX_HEAD_DIM, &s->head_dim)) ||
      (v[O_DTYPE] && cli_parse_dtype("--dtype", v[O_DTYPE], &a->dtype)) ||
      (v[O_REPEAT] && cli_parse_int("--repeat", v[O_REPEAT], 1, 1000, &a->repeat)) ||
      (v[O_WARMUP_MS] && cli_parse_int("--warmup-ms", v[O_WARMUP_MS], 0, 600000, &a->warmup_ms)) ||
      cli_parse_algo("--algo", a->algo_text, &a->algo))
    return CLI_EXIT_USAGE;
  if (v[O_DENSITY]) {
    char *end = NULL;
    a->density = strtod(v[O_DENSITY], &end);
    if (end == v[O_DENSITY] || *end || !(a->density > 0.0 && a->density <= 1.0)) {
      cli_error("--density %s: must be a number in (0, 1]", v[O_DENSITY]);
      return CLI_EXIT_USAGE;
    }
  }
  if (seq) {
    s->seq = seq;
  } else {
    s->grid_t = grid[0], s->grid_h = grid[1], s->grid_w = grid[2];
    s->seq = grid[0] * grid[1] * grid[2];
  }
  char err[256];
  if (nabla_shape_check(s, err, sizeof err) != NABLA_OK) {
    cli_error("invalid shape: %s", err);
    return CLI_EXIT_USAGE;
  }
  if (a->algo.sta && !s->grid_t) {
    cli_error("--algo %s: STA needs --grid", a->algo_text);
    return CLI_EXIT_USAGE;
  }
  return CLI_PARSED;
}

/* FLOPs of attention over a CSR mask, counted on computed blocks with their real sizes. */
static double mask_flops(const nabla_shape *s, const int32_t *starts, const int32_t *row_ptr,
                         const int32_t *col_idx) {
  int nb = nabla_shape_blocks(s);
  double flops = 0;
  for (size_t r = 0; r < (size_t)s->batch * s->heads * nb; r++) {
    int i = (int)(r % (size_t)nb);
    double qlen = starts[i + 1] - starts[i], klen = 0;
    for (int p = row_ptr[r]; p < row_ptr[r + 1]; p++) klen += starts[col_idx[p] + 1] - starts[col_idx[p]];
    flops += 4.0 * qlen * klen * s->head_dim;
  }
  return flops;
}

/* Random block mask of the requested density with the diagonal always kept. */
static uint8_t *random_bitmap(const nabla_shape *s, double density) {
  int nb = nabla_shape_blocks(s);
  size_t rows = (size_t)s->batch * s->heads * nb;
  uint8_t *bm = malloc(rows * nb);
  uint64_t x = 0x853c49e6748fea9bull;
  if (!bm) return NULL;
  for (size_t r = 0; r < rows; r++)
    for (int j = 0; j < nb; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      bm[r * nb + j] = (j == (int)(r % (size_t)nb)) || (double)(x >> 11) * 0x1.0p-53 < density;
    }
  return bm;
}

/* Each figure's runs: untimed ones first, one (program builds, first-touch allocation) and
 * then more until --warmup-ms has passed since it ended; then --repeat timed ones. `timed` is
 * the index of the next timed run, -1 while warming up; i + 1 runs are done. */
static int next_run(const bench_args *a, int i, int timed, double *until) {
  return timed >= 0 || !cli_warm_more(i + 1, 1, a->warmup_ms, until) ? timed + 1 : -1;
}

static int time_mask(nabla_context *ctx, const bench_args *a, cl_mem q, cl_mem k, double *times,
                     nabla_mask **keep) {
  double until = 0.0;
  for (int i = 0, timed = -1; timed < a->repeat; i++) {
    nabla_mask *m = NULL;
    double ms = 0;
    int rc = cli_timed_mask_build(ctx, &a->algo, &a->shape, a->dtype, q, k, &m, &ms);
    if (rc) return rc;
    if (timed >= 0) times[timed] = ms;
    nabla_mask_release(*keep);
    *keep = m;
    timed = next_run(a, i, timed, &until);
  }
  return 0;
}

static int time_attend(nabla_context *ctx, const bench_args *a, const nabla_mask *mask, cl_mem q,
                       cl_mem k, cl_mem v, cl_mem o, double *times) {
  double until = 0.0;
  for (int i = 0, timed = -1; timed < a->repeat; i++) {
    double ms = 0;
    int rc = cli_timed_attend(ctx, &a->shape, a->dtype, mask, q, k, v, o, &ms);
    if (rc) return rc;
    if (timed >= 0) times[timed] = ms;
    timed = next_run(a, i, timed, &until);
  }
  return 0;
}

/* CSR of a mask + block starts -> FLOPs. */
static int flops_of(nabla_context *ctx, const nabla_shape *s, const nabla_mask *mask, double *flops,
                    int64_t *kept, double *density) {
  int nb = nabla_shape_blocks(s), rc = CLI_EXIT_RUNTIME;
  size_t rows = (size_t)s->batch * s->heads * nb;
  int32_t *starts = malloc(((size_t)nb + 1) * sizeof *starts), *row_ptr = malloc((rows + 1) * sizeof *row_ptr);
  int32_t *col_idx = NULL;
  nabla_status st;
  if (!starts || !row_ptr) goto done;
  if ((st = nabla_mask_stats(ctx, mask, kept, density)) != NABLA_OK) {
    cli_lib_error(ctx, st, "nabla_mask_stats");
    goto done;
  }
  col_idx = malloc(((size_t)*kept + 1) * sizeof *col_idx);
  if (!col_idx) goto done;
  nabla_shape_block_starts(s, starts, (size_t)nb + 1);
  if ((st = nabla_mask_read_csr(ctx, mask, row_ptr, rows + 1, col_idx, (size_t)*kept)) != NABLA_OK) {
    cli_lib_error(ctx, st, "nabla_mask_read_csr");
    goto done;
  }
  *flops = mask_flops(s, starts, row_ptr, col_idx);
  rc = 0;
done:
  if (rc && (!starts || !row_ptr || !col_idx)) cli_error("out of memory reading the mask");
  free(starts), free(row_ptr), free(col_idx);
  return rc;
}

static int report(nabla_context *ctx, const bench_args *a, const bench_result *r) {
  char device[256] = "", driver[128] = "", attn_cfg[128] = "", sel_cfg[128] = "";
  cli_device_name(ctx, device, sizeof device);
  clGetDeviceInfo(nabla_context_device(ctx), CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL);
  nabla_config_describe(ctx, "attention", &a->shape, a->dtype, attn_cfg, sizeof attn_cfg);
  nabla_config_describe(ctx, "select", &a->shape, a->dtype, sel_cfg, sizeof sel_cfg);
  char sparse_mask[96];
  if (a->density >= 0) snprintf(sparse_mask, sizeof sparse_mask, "random-%g", a->density);
  else snprintf(sparse_mask, sizeof sparse_mask, "%s", a->algo_text);
  if (a->json) {
    cJSON *root = cJSON_CreateObject(), *cfg = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "mask_ms", r->mask_ms);
    cJSON_AddNumberToObject(root, "sparse_ms", r->sparse_ms);
    cJSON_AddNumberToObject(root, "dense_ms", r->dense_ms);
    cJSON_AddNumberToObject(root, "density", r->density);
    cJSON_AddNumberToObject(root, "sparse_tflops", r->sparse_tflops);
    cJSON_AddNumberToObject(root, "dense_tflops", r->dense_tflops);
    cJSON_AddItemToObject(cfg, "shape", cli_json_shape(&a->shape));
    cJSON_AddStringToObject(cfg, "dtype", nabla_dtype_name(a->dtype));
    cJSON_AddStringToObject(cfg, "mask_algo", a->algo_text);
    cJSON_AddStringToObject(cfg, "sparse_mask", sparse_mask);
    cJSON_AddNumberToObject(cfg, "blocks_kept", (double)r->kept);
    cJSON_AddNumberToObject(cfg, "repeat", a->repeat);
    cJSON_AddNumberToObject(cfg, "warmup_ms", a->warmup_ms);
    cJSON_AddStringToObject(cfg, "attention", attn_cfg);
    cJSON_AddStringToObject(cfg, "select", sel_cfg);
    cJSON_AddStringToObject(cfg, "variant", r->variant);
    cJSON_AddStringToObject(cfg, "variant_dense", r->variant_dense);
    cJSON_AddStringToObject(cfg, "variant_note", r->variant_note);
    if (a->stages) {
      cJSON *st = cJSON_CreateObject();
      char name[64];
      double ms;
      for (const char *line = r->stages; sscanf(line, "%63s %lf", name, &ms) == 2; line = strchr(line, '\n') + 1)
        cJSON_AddNumberToObject(st, name, ms);
      cJSON_AddItemToObject(cfg, "stages_ms", st);
    }
    cJSON_AddItemToObject(root, "config", cfg);
    cJSON_AddStringToObject(root, "device", device);
    cJSON_AddStringToObject(root, "driver", driver);
    return cli_json_print(root);
  }
  char shape[160];
  cli_format_shape(&a->shape, shape, sizeof shape);
  printf("device      %s (driver %s)\n", device, driver);
  printf("shape       %s %s\n", shape, nabla_dtype_name(a->dtype));
  printf("config      attention %s; select %s\n", attn_cfg, sel_cfg);
  printf("variant     %s (dense: %s)%s%s\n", r->variant, r->variant_dense, r->variant_note[0] ? "; " : "",
         r->variant_note);
  printf("mask build  %10.3f ms  (%s, median of %d)\n", r->mask_ms, a->algo_text, a->repeat);
  printf("sparse      %10.3f ms  %8.3f TFLOP/s  density %.4f (%s, %lld blocks)\n", r->sparse_ms,
         r->sparse_tflops, r->density, sparse_mask, (long long)r->kept);
  printf("dense       %10.3f ms  %8.3f TFLOP/s\n", r->dense_ms, r->dense_tflops);
  printf("sparse/dense %.3f   mask/sparse %.3f\n", r->sparse_ms / r->dense_ms, r->mask_ms / r->sparse_ms);
  if (a->stages) printf("stages (ms, one mask build + sparse attention):\n%s", r->stages);
  return 0;
}

int cmd_bench(int argc, char **argv) {
  bench_args a;
  int rc = parse(argc, argv, &a);
  if (rc == CLI_HELP_SHOWN) return CLI_EXIT_OK;
  if (rc) return rc;
  nabla_context *ctx = NULL;
  nabla_mask *algo_mask = NULL, *rand_mask = NULL;
  cl_mem raster[3] = {0}, q = NULL, k = NULL, v = NULL, o = NULL;
  void *host[3] = {0};
  uint8_t *bitmap = NULL;
  double *times = calloc((size_t)a.repeat, sizeof *times);
  bench_result r = {0};
  size_t elems = cli_shape_elems(&a.shape), bytes = elems * nabla_dtype_size(a.dtype);
  if ((rc = cli_context(a.device, &ctx))) goto done;
  if (a.variant) {
    nabla_status vst = nabla_variant_force(ctx, a.variant);
    if (vst != NABLA_OK) {
      cli_lib_error(ctx, vst, "--variant");
      rc = CLI_EXIT_USAGE;
      goto done;
    }
  }
  for (int i = 0; i < 3; i++) host[i] = malloc(bytes);
  if (!times || !host[0] || !host[1] || !host[2] || synth_video_qkv(&a.shape, a.dtype, 1, host[0], host[1], host[2])) {
    cli_error("out of memory generating inputs (%zu bytes each)", bytes);
    rc = CLI_EXIT_RUNTIME;
    goto done;
  }
  rc = CLI_EXIT_RUNTIME;
  for (int i = 0; i < 3; i++)
    if (!(raster[i] = cli_buffer(ctx, bytes, host[i], "input"))) goto done;
  if (!(q = cli_buffer(ctx, bytes, NULL, "q")) || !(k = cli_buffer(ctx, bytes, NULL, "k")) ||
      !(v = cli_buffer(ctx, bytes, NULL, "v")) || !(o = cli_buffer(ctx, bytes, NULL, "o")))
    goto done;
  cl_mem tiles[3] = {q, k, v};
  for (int i = 0; i < 3; i++) {
    nabla_status st = nabla_reorder(ctx, &a.shape, a.dtype, NABLA_RASTER_TO_TILE, raster[i], tiles[i], 0, NULL, NULL);
    if (st != NABLA_OK) {
      cli_lib_error(ctx, st, "nabla_reorder");
      goto done;
    }
  }
  if ((rc = time_mask(ctx, &a, q, k, times, &algo_mask))) goto done;
  r.mask_ms = cli_median(times, a.repeat);
  const nabla_mask *sparse = algo_mask;
  if (a.density >= 0) {
    if (!(bitmap = random_bitmap(&a.shape, a.density))) {
      cli_error("out of memory for the random mask");
      rc = CLI_EXIT_RUNTIME;
      goto done;
    }
    nabla_status st = nabla_mask_from_bitmap(ctx, &a.shape, bitmap, &rand_mask);
    if (st != NABLA_OK) {
      cli_lib_error(ctx, st, "nabla_mask_from_bitmap");
      rc = CLI_EXIT_RUNTIME;
      goto done;
    }
    sparse = rand_mask;
  }
  double sparse_flops = 0;
  if ((rc = flops_of(ctx, &a.shape, sparse, &sparse_flops, &r.kept, &r.density))) goto done;
  if ((rc = time_attend(ctx, &a, sparse, q, k, v, o, times))) goto done;
  r.sparse_ms = cli_median(times, a.repeat);
  snprintf(r.variant, sizeof r.variant, "%s", nabla_variant_last(ctx));
  snprintf(r.variant_note, sizeof r.variant_note, "%s", nabla_variant_note(ctx));
  if ((rc = time_attend(ctx, &a, NULL, q, k, v, o, times))) goto done;
  r.dense_ms = cli_median(times, a.repeat);
  snprintf(r.variant_dense, sizeof r.variant_dense, "%s", nabla_variant_last(ctx));
  double dense_flops = 4.0 * a.shape.batch * a.shape.heads * (double)a.shape.seq * a.shape.seq * a.shape.head_dim;
  r.sparse_tflops = sparse_flops / (r.sparse_ms * 1e-3) * 1e-12;
  r.dense_tflops = dense_flops / (r.dense_ms * 1e-3) * 1e-12;
  if (a.stages) {
    nabla_mask *m = NULL;
    double ms = 0;
    nabla_profile_enable(ctx, 1);
    if ((rc = cli_timed_mask_build(ctx, &a.algo, &a.shape, a.dtype, q, k, &m, &ms)) == 0)
      rc = cli_timed_attend(ctx, &a.shape, a.dtype, sparse, q, k, v, o, &ms);
    nabla_profile_report(ctx, r.stages, sizeof r.stages);
    nabla_profile_enable(ctx, 0);
    nabla_mask_release(m);
    if (rc) goto done;
  }
  rc = report(ctx, &a, &r);
done:
  nabla_mask_release(algo_mask);
  nabla_mask_release(rand_mask);
  for (int i = 0; i < 3; i++) {
    cli_release_mem(&raster[i]);
    free(host[i]);
  }
  cli_release_mem(&q), cli_release_mem(&k), cli_release_mem(&v), cli_release_mem(&o);
  free(bitmap);
  free(times);
  nabla_context_destroy(ctx);
  return rc;
}
