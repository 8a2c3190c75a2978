/*
 * nablacl run — NABLA attention on Q/K/V .npy files.
 *
 * Flow: read and validate every input (usage errors before the device is touched) -> context
 * -> upload -> (raster -> tile) -> nabla_mask_build -> nabla_attend -> (tile -> raster) ->
 * read back -> optional float64 check -> write every output under a temporary name and rename
 * them all only when everything succeeded.
 *
 * Timings come from OpenCL event profiling: a marker enqueued on the idle queue starts the
 * span and the operation's `done` event ends it, so an operation made of several kernels is
 * measured whole.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_inputs.h"

static const char usage[] =
    "nablacl run --q Q.npy --k K.npy --v V.npy --algo STR [options]\n\n"
    "Inputs are C-order [B,H,S,D] arrays: '<f4' (f32), '<f2' (f16), or '<u2' holding bf16 bits\n"
    "(needs --dtype bf16). The output has the input's dtype and token order.";

static const cli_option options[] = {
  {"--q", "Q.npy", "queries [B,H,S,D]"},
  {"--k", "K.npy", "keys, same shape and dtype as Q"},
  {"--v", "V.npy", "values, same shape and dtype as Q"},
  {"--algo", "STR", "nabla-<thr>, sta-<t>-<h>-<w>, nabla-<thr>_sta-<t>-<h>-<w>, dense"},
  {"--grid", "T,H,W", "video grid (T*H*W = S); default: plain sequence"},
  {"--order", "tile|raster", "token order of inputs and output (default tile)"},
  {"--dtype", "f32|f16|bf16", "input type; bf16 requires '<u2' arrays (default: from file)"},
  {"--out", "O.npy", "write the attention output"},
  {"--mask-out", "M.npy", "write the block mask, '|u1' [B,H,Nb,Nb]"},
  {"--csr-out", "PREFIX", "write PREFIX_kv_num_blocks.npy and PREFIX_kv_indices.npy ('<i4')"},
  {"--device", "SEL", "device index, platform or device name substring, platform:NAME or device:NAME (default: NABLACL_DEVICE, GPU, CPU)"},
  {"--warmup", "N", "untimed runs before the timed one (default 0: only the mask build)"},
  {"--warmup-ms", "T", "keep warming up until T ms have passed (to time a GPU at its sustained, power-capped clock; default 0)"},
  {"--repeat", "N", "timed runs; mask_ms and attn_ms are their medians (default 1)"},
  {"--mask-in", "M.npy", "attend with this '|u1' [B,H,Nb,Nb] block mask instead of --algo's (still built and timed)"},
  {"--check", NULL, "compare with the float64 reference (mask and attention)"},
  {"--json", NULL, "print one JSON object"},
};
enum {
  OPT_Q, OPT_K, OPT_V, OPT_ALGO, OPT_GRID, OPT_ORDER, OPT_DTYPE, OPT_OUT, OPT_MASK_OUT,
  OPT_CSR_OUT, OPT_DEVICE, OPT_WARMUP, OPT_WARMUP_MS, OPT_REPEAT, OPT_MASK_IN, OPT_CHECK, OPT_JSON, OPT_COUNT
};

typedef struct {
  const char *v[OPT_COUNT];
  nabla_algo algo;
  int grid[3];
  int raster, warmup, warmup_ms, repeat;
  nabla_dtype dtype;
  char *csr_num_path, *csr_idx_path;
} run_args;

typedef struct {
  cli_inputs base;      /* Q, K, V, their shape and dtype */
  npy_array mask_in;    /* --mask-in, empty when absent */
} run_inputs;

typedef struct {
  double mask_ms, attn_ms;
  void *out;            /* output in the caller's token order and dtype */
  cli_mask_host mask;   /* bitmap for --mask-out / --check, Flex layout for --csr-out */
  int checked, check_ok;
  double max_abs_err, tolerance;
  cli_mask_compare masks;
  char variant[32];     /* attention kernel variant that ran (nabla_variant_last) */
} run_results;

/* ---- arguments -------------------------------------------------------------------------- */

static int check_outputs(run_args *a) {
  int rc = 0;
  if (!rc && a->v[OPT_OUT]) rc = cli_check_output_path("--out", a->v[OPT_OUT]);
  if (!rc && a->v[OPT_MASK_OUT]) rc = cli_check_output_path("--mask-out", a->v[OPT_MASK_OUT]);
  if (!rc && a->v[OPT_CSR_OUT]) rc = cli_csr_paths(a->v[OPT_CSR_OUT], &a->csr_num_path, &a->csr_idx_path);
  if (rc) return rc;
  const cli_named_file outputs[] = {{"--out", a->v[OPT_OUT]}, {"--mask-out", a->v[OPT_MASK_OUT]},
                                    {"--csr-out", a->csr_num_path}, {"--csr-out", a->csr_idx_path}};
  const cli_named_file inputs[] = {{"--q", a->v[OPT_Q]}, {"--k", a->v[OPT_K]}, {"--v", a->v[OPT_V]},
                                   {"--mask-in", a->v[OPT_MASK_IN]}};
  return cli_check_distinct(outputs, 4, inputs, 4);
}

static int parse_values(run_args *a) {
  /* --q, --k, --v and --algo lead the option table. */
  int rc = cli_require("run", options, a->v, OPT_ALGO + 1);
  if (!rc)
    rc = cli_parse_input_options(a->v[OPT_ALGO], a->v[OPT_GRID], a->v[OPT_DTYPE], a->v[OPT_ORDER],
                                 &a->algo, a->grid, &a->dtype, &a->raster);
  if (!rc && a->v[OPT_WARMUP]) rc = cli_parse_int("--warmup", a->v[OPT_WARMUP], 0, 1000, &a->warmup);
  if (!rc && a->v[OPT_WARMUP_MS])
    rc = cli_parse_int("--warmup-ms", a->v[OPT_WARMUP_MS], 0, 600000, &a->warmup_ms);
  a->repeat = 1;
  if (!rc && a->v[OPT_REPEAT]) rc = cli_parse_int("--repeat", a->v[OPT_REPEAT], 1, 1000, &a->repeat);
  return rc ? rc : check_outputs(a);
}

static int parse_args(int argc, char **argv, run_args *a) {
  memset(a, 0, sizeof *a);
  int rc = cli_parse(argc, argv, usage, options, OPT_COUNT, a->v);
  if (rc != CLI_PARSED) return rc;
  return parse_values(a);
}

/* ---- inputs ----------------------------------------------------------------------------- */

/* --mask-in: '|u1' [B, H, Nb, Nb] of 0/1. */
static int load_mask_in(const run_args *a, run_inputs *in) {
  const char *path = a->v[OPT_MASK_IN];
  int rc = cli_load_tensor("--mask-in", path, &in->mask_in);
  if (rc) return rc;
  const npy_array *m = &in->mask_in;
  const nabla_shape *s = &in->base.shape;
  size_t nb = (size_t)nabla_shape_blocks(s);
  if (m->dtype != NPY_U8 || m->ndim != 4 || m->shape[0] != (size_t)s->batch ||
      m->shape[1] != (size_t)s->heads || m->shape[2] != nb || m->shape[3] != nb) {
    cli_error("--mask-in %s: needs a '|u1' array of shape [%d, %d, %zu, %zu]", path, s->batch,
              s->heads, nb, nb);
    return CLI_EXIT_USAGE;
  }
  const uint8_t *bits = m->data;
  for (size_t i = 0; i < m->count; i++)
    if (bits[i] > 1) {
      cli_error("--mask-in %s: element %zu is %u; entries must be 0 or 1", path, i, bits[i]);
      return CLI_EXIT_USAGE;
    }
  return 0;
}

static int load_inputs(const run_args *a, run_inputs *in) {
  const cli_input_spec spec = {a->v[OPT_Q], a->v[OPT_K], a->v[OPT_V], a->v[OPT_GRID],
                               {a->grid[0], a->grid[1], a->grid[2]}, a->v[OPT_DTYPE], a->dtype};
  int rc = cli_inputs_load(&spec, &in->base);
  if (rc) return rc;
  return a->v[OPT_MASK_IN] ? load_mask_in(a, in) : 0;
}

/* ---- device ----------------------------------------------------------------------------- */

typedef struct {
  cl_mem q, k, v, o;          /* tile order, what the library sees */
  cl_mem o_raster;            /* the output in raster order (--order raster) */
} run_buffers;

static void release_buffers(run_buffers *b) {
  cli_release_mem(&b->q);
  cli_release_mem(&b->k);
  cli_release_mem(&b->v);
  cli_release_mem(&b->o);
  cli_release_mem(&b->o_raster);
}

static int upload(nabla_context *ctx, const run_args *a, const run_inputs *in, run_buffers *b) {
  const cli_inputs *x = &in->base;
  int rc = cli_upload_tile(ctx, x, a->raster, x->q.data, "Q", &b->q);
  if (!rc) rc = cli_upload_tile(ctx, x, a->raster, x->k.data, "K", &b->k);
  if (!rc) rc = cli_upload_tile(ctx, x, a->raster, x->v.data, "V", &b->v);
  if (!rc && !(b->o = cli_buffer(ctx, x->bytes, NULL, "O"))) rc = CLI_EXIT_RUNTIME;
  if (!rc && a->raster && !(b->o_raster = cli_buffer(ctx, x->bytes, NULL, "O"))) rc = CLI_EXIT_RUNTIME;
  if (!rc && clFinish(nabla_context_queue(ctx)) != CL_SUCCESS) {
    cli_error("uploading the inputs failed");
    rc = CLI_EXIT_RUNTIME;
  }
  return rc;
}

static int timed_mask(nabla_context *ctx, const run_args *a, const run_inputs *in,
                      const run_buffers *b, nabla_mask **mask, double *ms) {
  return cli_timed_mask_build(ctx, &a->algo, &in->base.shape, in->base.dtype, b->q, b->k, mask, ms);
}

static int read_output(nabla_context *ctx, const run_args *a, const run_inputs *in,
                       const run_buffers *b, run_results *r) {
  const cli_inputs *x = &in->base;
  cl_mem src = b->o;
  if (a->raster) {
    nabla_status st = nabla_reorder(ctx, &x->shape, x->dtype, NABLA_TILE_TO_RASTER, b->o,
                                    b->o_raster, 0, NULL, NULL);
    if (st != NABLA_OK) {
      cli_lib_error(ctx, st, "nabla_reorder");
      return CLI_EXIT_RUNTIME;
    }
    src = b->o_raster;
  }
  r->out = malloc(x->bytes ? x->bytes : 1);
  if (!r->out) {
    cli_error("out of memory for the output (%zu bytes)", x->bytes);
    return CLI_EXIT_RUNTIME;
  }
  return cli_read_buffer(ctx, src, x->bytes, r->out, "the output");
}

static int run_device(nabla_context *ctx, const run_args *a, const run_inputs *in,
                      run_results *r) {
  const cli_inputs *x = &in->base;
  run_buffers b = {0};
  nabla_mask *mask = NULL, *given = NULL; /* the algorithm's mask; --mask-in's */
  int rc = upload(ctx, a, in, &b);
  if (!rc && in->mask_in.data) { /* attend with the caller's mask instead (the build is still timed) */
    nabla_status st = nabla_mask_from_bitmap(ctx, &x->shape, in->mask_in.data, &given);
    if (st != NABLA_OK) {
      cli_lib_error(ctx, st, "--mask-in");
      rc = CLI_EXIT_RUNTIME;
    }
  }
  /* The mask build is always warmed once: the first build compiles (or loads) its programs
   * and allocates the context's workspace, which is not what mask_ms should report.
   * Attention is warmed only on request (--warmup, --warmup-ms), with the mask it is timed
   * with. */
  const int warm_attend = a->warmup > 0 || a->warmup_ms > 0;
  double warm_until = 0.0;
  for (int i = 0; !rc && (i == 0 || cli_warm_more(i, a->warmup, a->warmup_ms, &warm_until)); i++) {
    rc = timed_mask(ctx, a, in, &b, &mask, NULL);
    if (!rc && warm_attend)
      rc = cli_timed_attend(ctx, &x->shape, x->dtype, given ? given : mask, b.q, b.k, b.v, b.o, NULL);
    nabla_mask_release(mask);
    mask = NULL;
  }
  double *times = calloc((size_t)a->repeat, sizeof *times);
  if (!times) rc = CLI_EXIT_RUNTIME;
  for (int i = 0; !rc && i < a->repeat; i++) {
    nabla_mask_release(mask);
    mask = NULL;
    rc = timed_mask(ctx, a, in, &b, &mask, &times[i]);
  }
  if (!rc) r->mask_ms = cli_median(times, a->repeat);
  if (given) { /* from here on, the mask used is the caller's */
    nabla_mask_release(mask);
    mask = given;
    given = NULL;
  }
  for (int i = 0; !rc && i < a->repeat; i++)
    rc = cli_timed_attend(ctx, &x->shape, x->dtype, mask, b.q, b.k, b.v, b.o, &times[i]);
  if (!rc) r->attn_ms = cli_median(times, a->repeat);
  if (!rc) snprintf(r->variant, sizeof r->variant, "%s", nabla_variant_last(ctx));
  free(times);
  if (!rc) rc = read_output(ctx, a, in, &b, r);
  if (!rc)
    rc = cli_mask_read(ctx, &x->shape, mask, a->v[OPT_MASK_OUT] || a->v[OPT_CHECK],
                       a->v[OPT_CSR_OUT] != NULL, &r->mask);
  nabla_mask_release(given);
  nabla_mask_release(mask);
  release_buffers(&b);
  return rc;
}

/* ---- float64 check ---------------------------------------------------------------------- */

static void warn_if_slow(const cli_inputs *in, const run_results *r) {
  double s = in->shape.seq, flops = 4.0 * in->shape.batch * in->shape.heads * s * s *
                                    in->shape.head_dim * r->mask.density;
  if (flops > 2e10)
    cli_warn("--check: the float64 reference needs ~%.0f GFLOP on the host; this may be slow",
             flops * 1e-9);
}

static int run_check(const run_args *a, const run_inputs *in, run_results *r) {
  const cli_inputs *x = &in->base;
  const nabla_shape *s = &x->shape;
  size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb;
  double *q = cli_tile_doubles(x, a->raster, x->q.data), *k = cli_tile_doubles(x, a->raster, x->k.data);
  double *v = cli_tile_doubles(x, a->raster, x->v.data), *o = cli_tile_doubles(x, a->raster, r->out);
  double *ref = malloc(x->elems * sizeof *ref);
  uint8_t *ref_mask = malloc(rows * nb), *near = malloc(rows);
  int rc = CLI_EXIT_RUNTIME;
  warn_if_slow(x, r);
  if (!q || !k || !v || !o || !ref || !ref_mask || !near) {
    cli_error("--check: out of memory for the float64 reference");
    goto done;
  }
  /* With --mask-in the device attended with the caller's mask: that is the expected mask. */
  nabla_status st = NABLA_OK;
  if (in->mask_in.data) {
    memcpy(ref_mask, in->mask_in.data, rows * nb);
    memset(near, 0, rows);
  } else {
    st = nabla_ref_mask(s, &a->algo, q, k, ref_mask, near, 1e-6);
  }
  if (st != NABLA_OK) {
    cli_lib_error(NULL, st, "--check: nabla_ref_mask");
    goto done;
  }
  cli_compare_masks(s, r->mask.bitmap, ref_mask, near, &r->masks);
  if (cli_ref_attention_heads(s, q, k, v, r->mask.bitmap, NULL, 0, s->batch * s->heads, ref) != 0) {
    cli_error("--check: out of memory");
    goto done;
  }
  r->max_abs_err = cli_max_abs_diff(o, ref, x->elems);
  r->tolerance = cli_tolerance(x->dtype, cli_max_abs(v, x->elems));
  r->checked = 1;
  r->check_ok = r->masks.rows_bad == 0 && r->max_abs_err <= r->tolerance;
  rc = 0;
done:
  free(q);
  free(k);
  free(v);
  free(o);
  free(ref);
  free(ref_mask);
  free(near);
  return rc;
}

/* ---- outputs and report ----------------------------------------------------------------- */

static int write_outputs(const run_args *a, const cli_inputs *in, const run_results *r,
                         cli_outputs *set) {
  const nabla_shape *s = &in->shape;
  size_t out_dims[4] = {(size_t)s->batch, (size_t)s->heads, (size_t)s->seq, (size_t)s->head_dim};
  int rc = 0;
  if (a->v[OPT_OUT])
    rc = cli_outputs_add(set, "--out", a->v[OPT_OUT], cli_npy_dtype(in->dtype), 4, out_dims, r->out);
  if (!rc)
    rc = cli_mask_outputs_add(set, s, a->v[OPT_MASK_OUT], a->csr_num_path, a->csr_idx_path, &r->mask);
  return rc;
}

static cJSON *check_json(const run_results *r) {
  cJSON *c = cJSON_CreateObject();
  cJSON_AddNumberToObject(c, "max_abs_err", r->max_abs_err);
  cJSON_AddNumberToObject(c, "tolerance", r->tolerance);
  cli_json_add_mask_compare(c, &r->masks);
  cJSON_AddBoolToObject(c, "ok", r->check_ok);
  return c;
}

static int report_json(const run_args *a, const cli_inputs *in, const run_results *r,
                       const char *device) {
  cJSON *o = cli_mask_report_json(device, a->v[OPT_ALGO], in, a->raster, &r->mask);
  cJSON_AddNumberToObject(o, "mask_ms", r->mask_ms);
  cJSON_AddNumberToObject(o, "attn_ms", r->attn_ms);
  cJSON_AddStringToObject(o, "variant", r->variant);
  if (r->checked) cJSON_AddItemToObject(o, "check", check_json(r));
  return cli_json_print(o);
}

static void report_human(const run_args *a, const run_inputs *in, const run_results *r,
                         const char *device) {
  char algo[256], median[48] = "";
  snprintf(algo, sizeof algo, "%s%s", a->v[OPT_ALGO],
           in->mask_in.data ? " (its mask built and timed; attention with --mask-in's, counted below)" : "");
  if (a->repeat > 1) snprintf(median, sizeof median, "median of %d", a->repeat);
  cli_mask_report_human(device, algo, &in->base, a->raster, &r->mask);
  printf("mask build   %.3f ms%s%s%s\n", r->mask_ms, *median ? " (" : "", median, *median ? ")" : "");
  printf("attention    %.3f ms (%s kernel%s%s)\n", r->attn_ms, r->variant, *median ? ", " : "", median);
  if (!r->checked) return;
  printf("check        max abs err %.3g (tolerance %.3g): %s\n", r->max_abs_err, r->tolerance,
         r->max_abs_err <= r->tolerance ? "ok" : "FAILED");
  cli_print_mask_compare("             ", &r->masks, r->masks.rows_bad == 0);
}

static int finish(nabla_context *ctx, const run_args *a, const run_inputs *rin,
                  const run_results *r) {
  const cli_inputs *in = &rin->base;
  char device[256];
  cli_device_name(ctx, device, sizeof device);
  cli_outputs set = {0};
  int rc = write_outputs(a, in, r, &set);
  if (!rc && r->checked && !r->check_ok) rc = CLI_EXIT_RUNTIME;
  if (!rc) rc = cli_outputs_commit(&set);
  cli_outputs_discard(&set);
  if (r->checked || !rc) {
    if (a->v[OPT_JSON]) report_json(a, in, r, device);
    else report_human(a, rin, r, device);
  }
  if (r->checked && !r->check_ok)
    cli_error("--check failed: %s (no output written)",
              r->masks.rows_bad ? "mask rows differ from the reference" : "output error above tolerance");
  return rc;
}

int cmd_run(int argc, char **argv) {
  run_args a;
  run_inputs in = {0};
  run_results r = {0};
  nabla_context *ctx = NULL;
  int rc = parse_args(argc, argv, &a);
  if (rc == CLI_HELP_SHOWN) {
    rc = CLI_EXIT_OK;
    goto done;
  }
  if (!rc) rc = load_inputs(&a, &in);
  if (!rc) rc = cli_context(a.v[OPT_DEVICE], &ctx);
  if (!rc) rc = run_device(ctx, &a, &in, &r);
  if (!rc && a.v[OPT_CHECK]) rc = run_check(&a, &in, &r);
  if (!rc) rc = finish(ctx, &a, &in, &r);
done:
  nabla_context_destroy(ctx);
  cli_inputs_free(&in.base);
  npy_free(&in.mask_in);
  free(r.out);
  cli_mask_host_free(&r.mask);
  free(a.csr_num_path);
  free(a.csr_idx_path);
  return rc;
}
