/*
 * nablacl mask — builds the NABLA block mask of Q/K .npy files on the device, without the
 * attention: its density per head and per row, the build time, and the exports that
 * FlexAttention (kv_num_blocks / kv_indices) or any other consumer reads.
 *
 * Flow: read and validate the inputs (usage errors before the device is touched) -> context
 * -> upload (raster -> tile) -> one untimed build (program builds, workspace) -> --repeat
 * timed builds -> read the mask back -> optional float64 check -> write every output under a
 * temporary name and rename them all only when everything succeeded. --png draws one
 * (batch, head) with nabla_mask_picture.
 */
#include <stdlib.h>
#include <string.h>

#include "cli_inputs.h"
#include "png_out.h"

static const char usage[] =
    "nablacl mask --q Q.npy --k K.npy --algo STR [options]\n\n"
    "Inputs are C-order [B,H,S,D] arrays: '<f4' (f32), '<f2' (f16), or '<u2' holding bf16 bits\n"
    "(needs --dtype bf16). Masks are over 64-token blocks in tile order (see docs/algorithm.md).";

static const cli_option options[] = {
  {"--q", "Q.npy", "queries [B,H,S,D]"},
  {"--k", "K.npy", "keys, same shape and dtype as Q"},
  {"--algo", "STR", "nabla-<thr>, sta-<t>-<h>-<w>, nabla-<thr>_sta-<t>-<h>-<w>, dense"},
  {"--grid", "T,H,W", "video grid (T*H*W = S); default: plain sequence"},
  {"--order", "tile|raster", "token order of the inputs (default tile)"},
  {"--dtype", "f32|f16|bf16", "input type; bf16 requires '<u2' arrays (default: from file)"},
  {"--mask-out", "M.npy", "write the block mask, '|u1' [B,H,Nb,Nb]"},
  {"--csr-out", "PREFIX", "write PREFIX_kv_num_blocks.npy and PREFIX_kv_indices.npy ('<i4')"},
  {"--png", "FILE", "draw the block mask of one batch/head, with each row's kept count beside it"},
  {"--png-batch", "N", "batch drawn by --png (default 0)"},
  {"--png-head", "N", "head drawn by --png (default 0)"},
  {"--png-cell", "PX", "pixels per block in --png, 1..64 (default: max(1, min(8, 512 / blocks)))"},
  {"--device", "SEL", "device index, platform or device name substring, platform:NAME or device:NAME (default: NABLACL_DEVICE, GPU, CPU)"},
  {"--repeat", "N", "timed builds after an untimed one; mask_ms is their median (default 5)"},
  {"--check", NULL, "compare with the float64 reference mask; exit 1 and write nothing if a row differs"},
  {"--json", NULL, "print one JSON object"},
};
enum {
  OPT_Q, OPT_K, OPT_ALGO, OPT_GRID, OPT_ORDER, OPT_DTYPE, OPT_MASK_OUT, OPT_CSR_OUT,
  OPT_PNG, OPT_PNG_BATCH, OPT_PNG_HEAD, OPT_PNG_CELL, OPT_DEVICE, OPT_REPEAT, OPT_CHECK, OPT_JSON, OPT_COUNT
};

typedef struct {
  const char *v[OPT_COUNT];
  nabla_algo algo;
  int grid[3];
  int raster, repeat;
  int png_batch, png_head, png_cell;
  nabla_dtype dtype;
  char *csr_num_path, *csr_idx_path;
} mask_args;

typedef struct {
  double min, mid, max; /* mid: the median or the mean, as the field says */
} spread;

typedef struct {
  double mask_ms;
  cli_mask_host mask;    /* counts; bitmap for --mask-out / --check; Flex layout for --csr-out */
  spread head_density;   /* kept / Nb^2 of each (b, h) (mid: the median) */
  spread row_blocks;     /* kept key blocks of each query-block row (mid: the mean) */
  int checked;
  cli_mask_compare masks;
} mask_results;

/* ---- arguments -------------------------------------------------------------------------- */

static int parse_args(int argc, char **argv, mask_args *a) {
  memset(a, 0, sizeof *a);
  int rc = cli_parse(argc, argv, usage, options, OPT_COUNT, a->v);
  if (rc != CLI_PARSED) return rc;
  /* --q, --k and --algo lead the option table. */
  rc = cli_require("mask", options, a->v, OPT_ALGO + 1);
  if (!rc)
    rc = cli_parse_input_options(a->v[OPT_ALGO], a->v[OPT_GRID], a->v[OPT_DTYPE], a->v[OPT_ORDER],
                                 &a->algo, a->grid, &a->dtype, &a->raster);
  a->repeat = 5;
  if (!rc && a->v[OPT_REPEAT]) rc = cli_parse_int("--repeat", a->v[OPT_REPEAT], 1, 1000, &a->repeat);
  if (!rc && a->v[OPT_MASK_OUT]) rc = cli_check_output_path("--mask-out", a->v[OPT_MASK_OUT]);
  if (!rc && a->v[OPT_CSR_OUT]) rc = cli_csr_paths(a->v[OPT_CSR_OUT], &a->csr_num_path, &a->csr_idx_path);
  if (!rc && a->v[OPT_PNG] && !png_available()) {
    cli_error("--png: this nablacl was built without libpng (install libpng-dev and rebuild)");
    rc = CLI_EXIT_USAGE;
  }
  if (!rc && !a->v[OPT_PNG] && (a->v[OPT_PNG_BATCH] || a->v[OPT_PNG_HEAD] || a->v[OPT_PNG_CELL])) {
    cli_error("--png-batch, --png-head and --png-cell need --png");
    rc = CLI_EXIT_USAGE;
  }
  if (!rc && a->v[OPT_PNG]) rc = cli_check_output_path("--png", a->v[OPT_PNG]);
  if (!rc && a->v[OPT_PNG_BATCH]) rc = cli_parse_int("--png-batch", a->v[OPT_PNG_BATCH], 0, 1 << 30, &a->png_batch);
  if (!rc && a->v[OPT_PNG_HEAD]) rc = cli_parse_int("--png-head", a->v[OPT_PNG_HEAD], 0, 1 << 30, &a->png_head);
  if (!rc && a->v[OPT_PNG_CELL]) rc = cli_parse_int("--png-cell", a->v[OPT_PNG_CELL], 1, 64, &a->png_cell);
  if (rc) return rc;
  const cli_named_file outputs[] = {{"--mask-out", a->v[OPT_MASK_OUT]}, {"--csr-out", a->csr_num_path},
                                    {"--csr-out", a->csr_idx_path}, {"--png", a->v[OPT_PNG]}};
  const cli_named_file inputs[] = {{"--q", a->v[OPT_Q]}, {"--k", a->v[OPT_K]}};
  return cli_check_distinct(outputs, 4, inputs, 2);
}

/* ---- device ----------------------------------------------------------------------------- */

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* Per-head densities and per-row block counts from the CSR row pointers (read alone: the
 * column lists are not needed). */
static int row_stats(nabla_context *ctx, const nabla_shape *s, const nabla_mask *mask,
                     mask_results *r) {
  size_t nb = (size_t)nabla_shape_blocks(s), heads = (size_t)s->batch * s->heads, rows = heads * nb;
  int32_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr);
  double *dens = malloc(heads * sizeof *dens);
  cl_mem row_ptr_buf = NULL, col_idx_buf = NULL;
  int rc = CLI_EXIT_RUNTIME;
  if (!row_ptr || !dens) {
    cli_error("out of memory for the mask's row pointers");
    goto done;
  }
  nabla_status st = nabla_mask_buffers(mask, &row_ptr_buf, &col_idx_buf);
  if (st != NABLA_OK) {
    cli_lib_error(ctx, st, "nabla_mask_buffers");
    goto done;
  }
  if (cli_read_buffer(ctx, row_ptr_buf, (rows + 1) * sizeof *row_ptr, row_ptr, "the mask's row pointers"))
    goto done;
  r->row_blocks = (spread){(double)nb, (double)r->mask.kept / (double)rows, 0.0};
  for (size_t row = 0; row < rows; row++) {
    double n = row_ptr[row + 1] - row_ptr[row];
    if (n < r->row_blocks.min) r->row_blocks.min = n;
    if (n > r->row_blocks.max) r->row_blocks.max = n;
  }
  for (size_t h = 0; h < heads; h++)
    dens[h] = (double)(row_ptr[(h + 1) * nb] - row_ptr[h * nb]) / (double)(nb * nb);
  qsort(dens, heads, sizeof *dens, cmp_double);
  r->head_density = (spread){dens[0], heads % 2 ? dens[heads / 2] : 0.5 * (dens[heads / 2 - 1] + dens[heads / 2]),
                             dens[heads - 1]};
  rc = 0;
done:
  free(row_ptr);
  free(dens);
  return rc;
}

static int build_masks(nabla_context *ctx, const mask_args *a, const cli_inputs *in,
                       mask_results *r) {
  cl_mem q = NULL, k = NULL;
  nabla_mask *mask = NULL;
  double *times = calloc((size_t)a->repeat, sizeof *times);
  int rc = times ? 0 : CLI_EXIT_RUNTIME;
  if (!rc) rc = cli_upload_tile(ctx, in, a->raster, in->q.data, "Q", &q);
  if (!rc) rc = cli_upload_tile(ctx, in, a->raster, in->k.data, "K", &k);
  /* The first build compiles (or loads) the programs and allocates the workspace: untimed. */
  if (!rc) rc = cli_timed_mask_build(ctx, &a->algo, &in->shape, in->dtype, q, k, &mask, NULL);
  for (int i = 0; !rc && i < a->repeat; i++) {
    nabla_mask_release(mask);
    mask = NULL;
    rc = cli_timed_mask_build(ctx, &a->algo, &in->shape, in->dtype, q, k, &mask, &times[i]);
  }
  if (!rc) r->mask_ms = cli_median(times, a->repeat);
  if (!rc)
    rc = cli_mask_read(ctx, &in->shape, mask, a->v[OPT_MASK_OUT] || a->v[OPT_CHECK] || a->v[OPT_PNG],
                       a->v[OPT_CSR_OUT] != NULL, &r->mask);
  if (!rc) rc = row_stats(ctx, &in->shape, mask, r);
  nabla_mask_release(mask);
  cli_release_mem(&q);
  cli_release_mem(&k);
  free(times);
  return rc;
}

/* ---- float64 check ---------------------------------------------------------------------- */

static int check_mask(const mask_args *a, const cli_inputs *in, mask_results *r) {
  const nabla_shape *s = &in->shape;
  size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb;
  double *q = cli_tile_doubles(in, a->raster, in->q.data), *k = cli_tile_doubles(in, a->raster, in->k.data);
  uint8_t *ref = malloc(rows * nb), *near = malloc(rows);
  int rc = CLI_EXIT_RUNTIME;
  if (!q || !k || !ref || !near) {
    cli_error("--check: out of memory for the float64 reference");
    goto done;
  }
  nabla_status st = nabla_ref_mask(s, &a->algo, q, k, ref, near, 1e-6);
  if (st != NABLA_OK) {
    cli_lib_error(NULL, st, "--check: nabla_ref_mask");
    goto done;
  }
  cli_compare_masks(s, r->mask.bitmap, ref, near, &r->masks);
  r->checked = 1;
  rc = 0;
done:
  free(q);
  free(k);
  free(ref);
  free(near);
  return rc;
}

/* ---- outputs and report ----------------------------------------------------------------- */

static cJSON *spread_json(const spread *x, const char *middle) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "min", x->min);
  cJSON_AddNumberToObject(o, middle, x->mid);
  cJSON_AddNumberToObject(o, "max", x->max);
  return o;
}

static int report_json(const mask_args *a, const cli_inputs *in, const mask_results *r,
                       const char *device) {
  cJSON *o = cli_mask_report_json(device, a->v[OPT_ALGO], in, a->raster, &r->mask);
  cJSON_AddItemToObject(o, "head_density", spread_json(&r->head_density, "median"));
  cJSON_AddItemToObject(o, "row_blocks", spread_json(&r->row_blocks, "mean"));
  cJSON_AddNumberToObject(o, "mask_ms", r->mask_ms);
  cJSON_AddNumberToObject(o, "repeat", a->repeat);
  if (r->checked) {
    cJSON *c = cJSON_CreateObject();
    cli_json_add_mask_compare(c, &r->masks);
    cJSON_AddBoolToObject(c, "ok", r->masks.rows_bad == 0);
    cJSON_AddItemToObject(o, "check", c);
  }
  return cli_json_print(o);
}

static void report_human(const mask_args *a, const cli_inputs *in, const mask_results *r,
                         const char *device) {
  const nabla_shape *s = &in->shape;
  cli_mask_report_human(device, a->v[OPT_ALGO], in, a->raster, &r->mask);
  printf("per head     density %.2f / %.2f / %.2f %% (min / median / max of %d heads)\n",
         100.0 * r->head_density.min, 100.0 * r->head_density.mid,
         100.0 * r->head_density.max, s->batch * s->heads);
  printf("per row      %.0f / %.1f / %.0f key blocks (min / mean / max of %d blocks)\n",
         r->row_blocks.min, r->row_blocks.mid, r->row_blocks.max, nabla_shape_blocks(s));
  printf("mask build   %.3f ms (median of %d)\n", r->mask_ms, a->repeat);
  if (r->checked) cli_print_mask_compare("check        ", &r->masks, r->masks.rows_bad == 0);
}

/* The --png picture of the chosen (batch, head), written under a temporary name. */
static int add_picture(cli_outputs *set, const mask_args *a, const cli_inputs *in,
                       const mask_results *r) {
  char err[512], *temp = NULL, *target = cli_output_target(a->v[OPT_PNG]);
  int failed = !target || mask_png_temp(target, &in->shape, r->mask.bitmap, a->png_batch, a->png_head,
                                        a->png_cell, &temp, err, sizeof err) != 0;
  free(target);
  if (failed) {
    cli_error("--png %s: %s", a->v[OPT_PNG], target ? err : "out of memory");
    return CLI_EXIT_RUNTIME;
  }
  return cli_outputs_adopt(set, "--png", a->v[OPT_PNG], temp);
}

static int finish(nabla_context *ctx, const mask_args *a, const cli_inputs *in,
                  const mask_results *r) {
  char device[256];
  cli_device_name(ctx, device, sizeof device);
  cli_outputs set = {0};
  const int bad = r->checked && r->masks.rows_bad != 0;
  int rc = bad ? CLI_EXIT_RUNTIME
               : cli_mask_outputs_add(&set, &in->shape, a->v[OPT_MASK_OUT], a->csr_num_path,
                                      a->csr_idx_path, &r->mask);
  if (!rc && a->v[OPT_PNG]) rc = add_picture(&set, a, in, r);
  if (!rc) rc = cli_outputs_commit(&set);
  cli_outputs_discard(&set);
  if (bad || !rc) {
    if (a->v[OPT_JSON]) report_json(a, in, r, device);
    else report_human(a, in, r, device);
  }
  if (bad) cli_error("--check failed: mask rows differ from the reference (no output written)");
  return rc;
}

int cmd_mask(int argc, char **argv) {
  mask_args a;
  cli_inputs in = {0};
  mask_results r = {0};
  nabla_context *ctx = NULL;
  int rc = parse_args(argc, argv, &a);
  if (rc == CLI_HELP_SHOWN) {
    rc = CLI_EXIT_OK;
    goto done;
  }
  if (!rc) {
    const cli_input_spec spec = {a.v[OPT_Q], a.v[OPT_K], NULL, a.v[OPT_GRID],
                                 {a.grid[0], a.grid[1], a.grid[2]}, a.v[OPT_DTYPE], a.dtype};
    rc = cli_inputs_load(&spec, &in);
  }
  if (!rc && a.v[OPT_PNG] && (a.png_batch >= in.shape.batch || a.png_head >= in.shape.heads)) {
    cli_error("--png-batch %d / --png-head %d: the inputs have %d batch(es) and %d head(s)",
              a.png_batch, a.png_head, in.shape.batch, in.shape.heads);
    rc = CLI_EXIT_USAGE;
  }
  if (!rc) rc = cli_context(a.v[OPT_DEVICE], &ctx);
  if (!rc) rc = build_masks(ctx, &a, &in, &r);
  if (!rc && a.v[OPT_CHECK]) rc = check_mask(&a, &in, &r);
  if (!rc) rc = finish(ctx, &a, &in, &r);
done:
  nabla_context_destroy(ctx);
  cli_inputs_free(&in);
  cli_mask_host_free(&r.mask);
  free(a.csr_num_path);
  free(a.csr_idx_path);
  return rc;
}
