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

#include "cli_common.h"

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
  {"--device", "SEL", "device index or name substring (default: NABLACL_DEVICE, GPU, CPU)"},
  {"--warmup", "N", "untimed runs before the timed one (default 0: only the mask build)"},
  {"--repeat", "N", "timed runs; mask_ms and attn_ms are their medians (default 1)"},
  {"--mask-in", "M.npy", "attend with this '|u1' [B,H,Nb,Nb] block mask instead of --algo's (still built and timed)"},
  {"--check", NULL, "compare with the float64 reference (mask and attention)"},
  {"--json", NULL, "print one JSON object"},
};
enum {
  OPT_Q, OPT_K, OPT_V, OPT_ALGO, OPT_GRID, OPT_ORDER, OPT_DTYPE, OPT_OUT, OPT_MASK_OUT,
  OPT_CSR_OUT, OPT_DEVICE, OPT_WARMUP, OPT_REPEAT, OPT_MASK_IN, OPT_CHECK, OPT_JSON, OPT_COUNT
};

typedef struct {
  const char *v[OPT_COUNT];
  nabla_algo algo;
  int grid[3];
  int raster, warmup, repeat;
  int dtype_given;
  nabla_dtype dtype;
  char *csr_num_path, *csr_idx_path;
} run_args;

typedef struct {
  npy_array q, k, v;
  npy_array mask_in;    /* --mask-in, empty when absent */
  nabla_shape shape;
  nabla_dtype dtype;
  size_t elems, bytes;
} run_inputs;

typedef struct {
  double mask_ms, attn_ms, density;
  int64_t kept;
  void *out;            /* output in the caller's token order and dtype */
  uint8_t *bitmap;      /* device mask [B,H,Nb,Nb] (for --mask-out / --check) */
  int32_t *kv_num, *kv_idx;
  int checked, check_ok;
  double max_abs_err, tolerance;
  cli_mask_compare masks;
  char variant[32];     /* attention kernel variant that ran (nabla_variant_last) */
} run_results;

/* ---- arguments -------------------------------------------------------------------------- */

static int required(const run_args *a, int opt) {
  if (a->v[opt]) return 0;
  cli_error("missing %s %s (see 'nablacl run --help')", options[opt].name, options[opt].metavar);
  return CLI_EXIT_USAGE;
}

static char *join(const char *prefix, const char *suffix) {
  size_t n = strlen(prefix) + strlen(suffix) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s%s", prefix, suffix);
  return s;
}

static int check_outputs(run_args *a) {
  int rc = 0;
  if (!rc && a->v[OPT_OUT]) rc = cli_check_output_path("--out", a->v[OPT_OUT]);
  if (!rc && a->v[OPT_MASK_OUT]) rc = cli_check_output_path("--mask-out", a->v[OPT_MASK_OUT]);
  if (!rc && a->v[OPT_OUT] && a->v[OPT_MASK_OUT] && !strcmp(a->v[OPT_OUT], a->v[OPT_MASK_OUT])) {
    cli_error("--mask-out %s: same file as --out", a->v[OPT_MASK_OUT]);
    rc = CLI_EXIT_USAGE;
  }
  if (rc || !a->v[OPT_CSR_OUT]) return rc;
  a->csr_num_path = join(a->v[OPT_CSR_OUT], "_kv_num_blocks.npy");
  a->csr_idx_path = join(a->v[OPT_CSR_OUT], "_kv_indices.npy");
  if (!a->csr_num_path || !a->csr_idx_path) {
    cli_error("out of memory");
    return CLI_EXIT_RUNTIME;
  }
  rc = cli_check_output_path("--csr-out", a->csr_num_path);
  return rc ? rc : cli_check_output_path("--csr-out", a->csr_idx_path);
}

static int parse_values(run_args *a) {
  int rc = 0;
  for (int opt = OPT_Q; !rc && opt <= OPT_ALGO; opt++) rc = required(a, opt);
  if (!rc) rc = cli_parse_algo("--algo", a->v[OPT_ALGO], &a->algo);
  if (!rc && a->v[OPT_GRID]) rc = cli_parse_grid("--grid", a->v[OPT_GRID], a->grid);
  if (!rc && a->v[OPT_DTYPE]) rc = cli_parse_dtype("--dtype", a->v[OPT_DTYPE], &a->dtype);
  if (!rc && a->v[OPT_WARMUP]) rc = cli_parse_int("--warmup", a->v[OPT_WARMUP], 0, 1000, &a->warmup);
  a->repeat = 1;
  if (!rc && a->v[OPT_REPEAT]) rc = cli_parse_int("--repeat", a->v[OPT_REPEAT], 1, 1000, &a->repeat);
  if (rc) return rc;
  a->dtype_given = a->v[OPT_DTYPE] != NULL;
  const char *order = a->v[OPT_ORDER] ? a->v[OPT_ORDER] : "tile";
  if (strcmp(order, "tile") != 0 && strcmp(order, "raster") != 0) {
    cli_error("--order %s: must be 'tile' or 'raster'", order);
    return CLI_EXIT_USAGE;
  }
  a->raster = strcmp(order, "raster") == 0;
  if (a->algo.sta && !a->v[OPT_GRID]) {
    cli_error("--algo %s: STA needs a video grid (--grid T,H,W)", a->v[OPT_ALGO]);
    return CLI_EXIT_USAGE;
  }
  return check_outputs(a);
}

static int parse_args(int argc, char **argv, run_args *a) {
  memset(a, 0, sizeof *a);
  int rc = cli_parse(argc, argv, usage, options, OPT_COUNT, a->v);
  if (rc != CLI_PARSED) return rc;
  return parse_values(a);
}

/* ---- inputs ----------------------------------------------------------------------------- */

static void format_dims(const npy_array *a, char *buf, size_t len) {
  size_t used = (size_t)snprintf(buf, len, "(");
  for (int i = 0; i < a->ndim && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%zu", i ? ", " : "", a->shape[i]);
  if (used < len) snprintf(buf + used, len - used, ")");
}

static int load_one(const char *opt, const char *path, npy_array *out) {
  char err[512];
  if (npy_read(path, out, err, sizeof err) != 0) {
    cli_error("%s %s: %s", opt, path, err);
    return CLI_EXIT_USAGE;
  }
  if (out->ndim != 4) {
    char dims[128];
    format_dims(out, dims, sizeof dims);
    cli_error("%s %s: expected a 4-D array [B,H,S,D], got shape %s", opt, path, dims);
    return CLI_EXIT_USAGE;
  }
  for (int i = 0; i < 4; i++)
    if (out->shape[i] == 0 || out->shape[i] > 0x7fffffff) {
      cli_error("%s %s: dimension %d is %zu", opt, path, i, out->shape[i]);
      return CLI_EXIT_USAGE;
    }
  return 0;
}

static int same_as_q(const char *opt, const char *path, const npy_array *x, const npy_array *q) {
  if (x->dtype != q->dtype) {
    cli_error("%s %s: dtype '%s' differs from Q's '%s'", opt, path, npy_dtype_descr(x->dtype),
              npy_dtype_descr(q->dtype));
    return CLI_EXIT_USAGE;
  }
  if (memcmp(x->shape, q->shape, 4 * sizeof x->shape[0]) != 0) {
    char a[128], b[128];
    format_dims(x, a, sizeof a);
    format_dims(q, b, sizeof b);
    cli_error("%s %s: shape %s differs from Q's %s", opt, path, a, b);
    return CLI_EXIT_USAGE;
  }
  return 0;
}

static int input_dtype(const run_args *a, const npy_array *q, nabla_dtype *out) {
  const char *descr = npy_dtype_descr(q->dtype);
  if (q->dtype == NPY_U16 && !(a->dtype_given && a->dtype == NABLA_BF16)) {
    cli_error("--q %s: dtype '<u2' holds bf16 bits and needs --dtype bf16", a->v[OPT_Q]);
    return CLI_EXIT_USAGE;
  }
  if (q->dtype != NPY_F32 && q->dtype != NPY_F16 && q->dtype != NPY_U16) {
    cli_error("--q %s: dtype '%s' is not an input type (use <f4, <f2, or <u2 with --dtype bf16)",
              a->v[OPT_Q], descr);
    return CLI_EXIT_USAGE;
  }
  *out = q->dtype == NPY_F32 ? NABLA_F32 : q->dtype == NPY_F16 ? NABLA_F16 : NABLA_BF16;
  if (a->dtype_given && a->dtype != *out) {
    cli_error("--dtype %s: inputs are '%s' (%s needs '%s')", a->v[OPT_DTYPE], descr,
              nabla_dtype_name(a->dtype), npy_dtype_descr(cli_npy_dtype(a->dtype)));
    return CLI_EXIT_USAGE;
  }
  return 0;
}

static int input_shape(const run_args *a, const npy_array *q, nabla_shape *s) {
  memset(s, 0, sizeof *s);
  s->batch = (int)q->shape[0];
  s->heads = (int)q->shape[1];
  s->seq = (int)q->shape[2];
  s->head_dim = (int)q->shape[3];
  if (a->v[OPT_GRID]) {
    long long tokens = (long long)a->grid[0] * a->grid[1] * a->grid[2];
    if (tokens != s->seq) {
      cli_error("--grid %s has %lld tokens but Q has S=%d", a->v[OPT_GRID], tokens, s->seq);
      return CLI_EXIT_USAGE;
    }
    s->grid_t = a->grid[0];
    s->grid_h = a->grid[1];
    s->grid_w = a->grid[2];
  }
  char err[512] = "";
  nabla_status st = nabla_shape_check(s, err, sizeof err);
  if (st != NABLA_OK) {
    cli_error("--q %s: %s", a->v[OPT_Q], *err ? err : nabla_status_str(st));
    return CLI_EXIT_USAGE;
  }
  return 0;
}

/* --mask-in: '|u1' [B, H, Nb, Nb] of 0/1. */
static int load_mask_in(const run_args *a, run_inputs *in) {
  const char *path = a->v[OPT_MASK_IN];
  int rc = load_one("--mask-in", path, &in->mask_in);
  if (rc) return rc;
  const npy_array *m = &in->mask_in;
  size_t nb = (size_t)nabla_shape_blocks(&in->shape);
  const nabla_shape *s = &in->shape;
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
  int rc = load_one("--q", a->v[OPT_Q], &in->q);
  if (!rc) rc = load_one("--k", a->v[OPT_K], &in->k);
  if (!rc) rc = load_one("--v", a->v[OPT_V], &in->v);
  if (!rc) rc = same_as_q("--k", a->v[OPT_K], &in->k, &in->q);
  if (!rc) rc = same_as_q("--v", a->v[OPT_V], &in->v, &in->q);
  if (!rc) rc = input_dtype(a, &in->q, &in->dtype);
  if (!rc) rc = input_shape(a, &in->q, &in->shape);
  if (rc) return rc;
  in->elems = cli_shape_elems(&in->shape);
  in->bytes = in->elems * nabla_dtype_size(in->dtype);
  return a->v[OPT_MASK_IN] ? load_mask_in(a, in) : 0;
}

/* ---- device ----------------------------------------------------------------------------- */

typedef struct {
  cl_mem q, k, v, o;          /* tile order, what the library sees */
  cl_mem raster[4];           /* q, k, v, o in raster order (--order raster) */
} run_buffers;

static void release_buffers(run_buffers *b) {
  cli_release_mem(&b->q);
  cli_release_mem(&b->k);
  cli_release_mem(&b->v);
  cli_release_mem(&b->o);
  for (int i = 0; i < 4; i++) cli_release_mem(&b->raster[i]);
}

static int upload(nabla_context *ctx, const run_args *a, const run_inputs *in, run_buffers *b) {
  const npy_array *src[3] = {&in->q, &in->k, &in->v};
  cl_mem *tile[4] = {&b->q, &b->k, &b->v, &b->o};
  static const char *const names[4] = {"Q", "K", "V", "O"};
  for (int i = 0; i < 4; i++) {
    *tile[i] = cli_buffer(ctx, in->bytes, i < 3 && !a->raster ? src[i]->data : NULL, names[i]);
    if (!*tile[i]) return CLI_EXIT_RUNTIME;
    if (!a->raster) continue;
    b->raster[i] = cli_buffer(ctx, in->bytes, i < 3 ? src[i]->data : NULL, names[i]);
    if (!b->raster[i]) return CLI_EXIT_RUNTIME;
    if (i == 3) break;
    nabla_status st = nabla_reorder(ctx, &in->shape, in->dtype, NABLA_RASTER_TO_TILE,
                                    b->raster[i], *tile[i], 0, NULL, NULL);
    if (st != NABLA_OK) {
      cli_lib_error(ctx, st, "nabla_reorder");
      return CLI_EXIT_RUNTIME;
    }
  }
  if (clFinish(nabla_context_queue(ctx)) != CL_SUCCESS) {
    cli_error("uploading the inputs failed");
    return CLI_EXIT_RUNTIME;
  }
  for (int i = 0; i < 3; i++) cli_release_mem(&b->raster[i]);   /* tile copies suffice now */
  return 0;
}

static int timed_mask(nabla_context *ctx, const run_args *a, const run_inputs *in,
                      const run_buffers *b, nabla_mask **mask, double *ms) {
  return cli_timed_mask_build(ctx, &a->algo, &in->shape, in->dtype, b->q, b->k, mask, ms);
}

static int read_output(nabla_context *ctx, const run_args *a, const run_inputs *in,
                       const run_buffers *b, run_results *r) {
  cl_mem src = b->o;
  if (a->raster) {
    nabla_status st = nabla_reorder(ctx, &in->shape, in->dtype, NABLA_TILE_TO_RASTER, b->o,
                                    b->raster[3], 0, NULL, NULL);
    if (st != NABLA_OK) {
      cli_lib_error(ctx, st, "nabla_reorder");
      return CLI_EXIT_RUNTIME;
    }
    src = b->raster[3];
  }
  r->out = malloc(in->bytes ? in->bytes : 1);
  if (!r->out) {
    cli_error("out of memory for the output (%zu bytes)", in->bytes);
    return CLI_EXIT_RUNTIME;
  }
  return cli_read_buffer(ctx, src, in->bytes, r->out, "the output");
}

static int read_mask(nabla_context *ctx, const run_args *a, const run_inputs *in,
                     const nabla_mask *mask, run_results *r) {
  size_t nb = (size_t)nabla_shape_blocks(&in->shape);
  size_t rows = (size_t)in->shape.batch * in->shape.heads * nb;
  nabla_status st = nabla_mask_stats(ctx, mask, &r->kept, &r->density);
  if (st == NABLA_OK && (a->v[OPT_MASK_OUT] || a->v[OPT_CHECK])) {
    r->bitmap = malloc(rows * nb);
    st = r->bitmap ? nabla_mask_read_bitmap(ctx, mask, r->bitmap, rows * nb) : NABLA_OUT_OF_MEMORY;
  }
  if (st == NABLA_OK && a->v[OPT_CSR_OUT]) {
    r->kv_num = malloc(rows * sizeof *r->kv_num);
    r->kv_idx = malloc(rows * nb * sizeof *r->kv_idx);
    st = r->kv_num && r->kv_idx ? nabla_mask_read_flex(ctx, mask, r->kv_num, rows, r->kv_idx,
                                                       rows * nb)
                                : NABLA_OUT_OF_MEMORY;
  }
  if (st != NABLA_OK) {
    cli_lib_error(ctx, st, "reading the mask");
    return CLI_EXIT_RUNTIME;
  }
  return 0;
}

static int run_device(nabla_context *ctx, const run_args *a, const run_inputs *in,
                      run_results *r) {
  run_buffers b = {0};
  nabla_mask *mask = NULL;
  int rc = upload(ctx, a, in, &b);
  /* The mask build is always warmed once: the first build compiles (or loads) its programs
   * and allocates the context's workspace, which is not what mask_ms should report.
   * Attention is warmed only on request (--warmup). */
  for (int i = 0; !rc && i < (a->warmup > 0 ? a->warmup : 1); i++) {
    rc = timed_mask(ctx, a, in, &b, &mask, NULL);
    if (!rc && a->warmup > 0)
      rc = cli_timed_attend(ctx, &in->shape, in->dtype, mask, b.q, b.k, b.v, b.o, NULL);
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
  if (!rc && in->mask_in.data) { /* attend with the caller's mask instead */
    nabla_mask_release(mask);
    mask = NULL;
    nabla_status st = nabla_mask_from_bitmap(ctx, &in->shape, in->mask_in.data, &mask);
    if (st != NABLA_OK) {
      cli_lib_error(ctx, st, "--mask-in");
      rc = CLI_EXIT_RUNTIME;
    }
  }
  for (int i = 0; !rc && i < a->repeat; i++)
    rc = cli_timed_attend(ctx, &in->shape, in->dtype, mask, b.q, b.k, b.v, b.o, &times[i]);
  if (!rc) r->attn_ms = cli_median(times, a->repeat);
  if (!rc) snprintf(r->variant, sizeof r->variant, "%s", nabla_variant_last(ctx));
  free(times);
  if (!rc) rc = read_output(ctx, a, in, &b, r);
  if (!rc) rc = read_mask(ctx, a, in, mask, r);
  nabla_mask_release(mask);
  release_buffers(&b);
  return rc;
}

/* ---- float64 check ---------------------------------------------------------------------- */

/* Storage -> double in tile order. */
static double *tile_doubles(const run_args *a, const run_inputs *in, const void *data) {
  double *x = malloc(in->elems * sizeof *x), *t = NULL;
  if (!x) return NULL;
  cli_to_double(data, in->elems, in->dtype, x);
  if (!a->raster || !in->shape.grid_t) return x;
  t = malloc(in->elems * sizeof *t);
  if (t) nabla_ref_reorder(&in->shape, NABLA_RASTER_TO_TILE, x, t);
  free(x);
  return t;
}

static void warn_if_slow(const run_inputs *in, const run_results *r) {
  double s = in->shape.seq, flops = 4.0 * in->shape.batch * in->shape.heads * s * s *
                                    in->shape.head_dim * r->density;
  if (flops > 2e10)
    cli_warn("--check: the float64 reference needs ~%.0f GFLOP on the host; this may be slow",
             flops * 1e-9);
}

static int run_check(const run_args *a, const run_inputs *in, run_results *r) {
  const nabla_shape *s = &in->shape;
  size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb;
  double *q = tile_doubles(a, in, in->q.data), *k = tile_doubles(a, in, in->k.data);
  double *v = tile_doubles(a, in, in->v.data), *o = tile_doubles(a, in, r->out);
  double *ref = malloc(in->elems * sizeof *ref);
  uint8_t *ref_mask = malloc(rows * nb), *near = malloc(rows);
  int rc = CLI_EXIT_RUNTIME;
  warn_if_slow(in, r);
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
  cli_compare_masks(s, r->bitmap, ref_mask, near, &r->masks);
  if (cli_ref_attention_heads(s, q, k, v, r->bitmap, NULL, 0, s->batch * s->heads, ref) != 0) {
    cli_error("--check: out of memory");
    goto done;
  }
  r->max_abs_err = cli_max_abs_diff(o, ref, in->elems);
  r->tolerance = cli_tolerance(in->dtype, cli_max_abs(v, in->elems));
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

static int write_outputs(const run_args *a, const run_inputs *in, const run_results *r,
                         cli_outputs *set) {
  const nabla_shape *s = &in->shape;
  size_t nb = (size_t)nabla_shape_blocks(s);
  size_t out_dims[4] = {(size_t)s->batch, (size_t)s->heads, (size_t)s->seq, (size_t)s->head_dim};
  size_t mask_dims[4] = {(size_t)s->batch, (size_t)s->heads, nb, nb};
  int rc = 0;
  if (!rc && a->v[OPT_OUT])
    rc = cli_outputs_add(set, "--out", a->v[OPT_OUT], cli_npy_dtype(in->dtype), 4, out_dims, r->out);
  if (!rc && a->v[OPT_MASK_OUT])
    rc = cli_outputs_add(set, "--mask-out", a->v[OPT_MASK_OUT], NPY_U8, 4, mask_dims, r->bitmap);
  if (!rc && a->v[OPT_CSR_OUT])
    rc = cli_outputs_add(set, "--csr-out", a->csr_num_path, NPY_I32, 3, mask_dims, r->kv_num);
  if (!rc && a->v[OPT_CSR_OUT])
    rc = cli_outputs_add(set, "--csr-out", a->csr_idx_path, NPY_I32, 4, mask_dims, r->kv_idx);
  return rc;
}

static cJSON *check_json(const run_results *r) {
  cJSON *c = cJSON_CreateObject();
  cJSON_AddNumberToObject(c, "max_abs_err", r->max_abs_err);
  cJSON_AddNumberToObject(c, "tolerance", r->tolerance);
  cJSON_AddNumberToObject(c, "mask_rows", (double)r->masks.rows);
  cJSON_AddNumberToObject(c, "mask_rows_equal", (double)r->masks.rows_equal);
  cJSON_AddNumberToObject(c, "mask_rows_near_threshold", (double)r->masks.rows_near);
  cJSON_AddNumberToObject(c, "mask_rows_unexplained", (double)r->masks.rows_bad);
  cJSON_AddBoolToObject(c, "ok", r->check_ok);
  return c;
}

static int report_json(const run_args *a, const run_inputs *in, const run_results *r,
                       const char *device) {
  cJSON *o = cJSON_CreateObject();
  const nabla_shape *s = &in->shape;
  double total = (double)s->batch * s->heads * nabla_shape_blocks(s) * nabla_shape_blocks(s);
  cJSON_AddStringToObject(o, "device", device);
  cJSON_AddStringToObject(o, "algo", a->v[OPT_ALGO]);
  cJSON_AddStringToObject(o, "dtype", nabla_dtype_name(in->dtype));
  cJSON_AddStringToObject(o, "order", a->raster ? "raster" : "tile");
  cJSON_AddItemToObject(o, "shape", cli_json_shape(s));
  cJSON_AddNumberToObject(o, "density", r->density);
  cJSON_AddNumberToObject(o, "blocks_kept", (double)r->kept);
  cJSON_AddNumberToObject(o, "blocks_total", total);
  cJSON_AddNumberToObject(o, "mask_ms", r->mask_ms);
  cJSON_AddNumberToObject(o, "attn_ms", r->attn_ms);
  cJSON_AddStringToObject(o, "variant", r->variant);
  if (r->checked) cJSON_AddItemToObject(o, "check", check_json(r));
  return cli_json_print(o);
}

static void report_human(const run_args *a, const run_inputs *in, const run_results *r,
                         const char *device) {
  const nabla_shape *s = &in->shape;
  double total = (double)s->batch * s->heads * nabla_shape_blocks(s) * nabla_shape_blocks(s);
  char shape[160];
  cli_format_shape(s, shape, sizeof shape);
  printf("device       %s\n", device);
  printf("shape        %s\n", shape);
  printf("dtype        %s, %s order\n", nabla_dtype_name(in->dtype), a->raster ? "raster" : "tile");
  printf("algo         %s\n", a->v[OPT_ALGO]);
  printf("blocks kept  %lld of %.0f (density %.2f %%)\n", (long long)r->kept, total,
         100.0 * r->density);
  printf("mask build   %.3f ms\n", r->mask_ms);
  printf("attention    %.3f ms (%s kernel)\n", r->attn_ms, r->variant);
  if (!r->checked) return;
  printf("check        max abs err %.3g (tolerance %.3g)\n", r->max_abs_err, r->tolerance);
  printf("             mask rows identical %lld / %lld, %lld near threshold, %lld unexplained: %s\n",
         (long long)r->masks.rows_equal, (long long)r->masks.rows, (long long)r->masks.rows_near,
         (long long)r->masks.rows_bad, r->check_ok ? "ok" : "FAILED");
}

static int finish(nabla_context *ctx, const run_args *a, const run_inputs *in,
                  const run_results *r) {
  char device[256];
  cli_device_name(ctx, device, sizeof device);
  cli_outputs set = {0};
  int rc = write_outputs(a, in, r, &set);
  if (!rc && r->checked && !r->check_ok) rc = CLI_EXIT_RUNTIME;
  if (!rc) rc = cli_outputs_commit(&set);
  cli_outputs_discard(&set);
  if (r->checked || !rc) {
    if (a->v[OPT_JSON]) report_json(a, in, r, device);
    else report_human(a, in, r, device);
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
  npy_free(&in.q);
  npy_free(&in.k);
  npy_free(&in.v);
  npy_free(&in.mask_in);
  free(r.out);
  free(r.bitmap);
  free(r.kv_num);
  free(r.kv_idx);
  free(a.csr_num_path);
  free(a.csr_idx_path);
  return rc;
}
