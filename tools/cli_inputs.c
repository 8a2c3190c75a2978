/*
 * cli_inputs — .npy attention inputs and mask exports shared by `run` and `mask` (see
 * cli_inputs.h).
 */
#include "cli_inputs.h"

#include <stdlib.h>
#include <string.h>

/* ---- reading and validating ------------------------------------------------------------- */

int cli_parse_input_options(const char *algo_text, const char *grid_text, const char *dtype_text,
                            const char *order_text, nabla_algo *algo, int grid[3],
                            nabla_dtype *dtype, int *raster) {
  int rc = cli_parse_algo("--algo", algo_text, algo);
  if (!rc && grid_text) rc = cli_parse_grid("--grid", grid_text, grid);
  if (!rc && dtype_text) rc = cli_parse_dtype("--dtype", dtype_text, dtype);
  if (rc) return rc;
  const char *order = order_text ? order_text : "tile";
  if (strcmp(order, "tile") != 0 && strcmp(order, "raster") != 0) {
    cli_error("--order %s: must be 'tile' or 'raster'", order);
    return CLI_EXIT_USAGE;
  }
  *raster = strcmp(order, "raster") == 0;
  if (algo->sta && !grid_text) {
    cli_error("--algo %s: STA needs a video grid (--grid T,H,W)", algo_text);
    return CLI_EXIT_USAGE;
  }
  return 0;
}

static void format_dims(const npy_array *a, char *buf, size_t len) {
  size_t used = (size_t)snprintf(buf, len, "(");
  for (int i = 0; i < a->ndim && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%zu", i ? ", " : "", a->shape[i]);
  if (used < len) snprintf(buf + used, len - used, ")");
}

/* Opens a tensor file: its header, its size against the header's claim and the 4-D rule, with
 * nothing allocated for the data yet. */
static int open_tensor(const char *opt, const char *path, npy_reader *r) {
  char err[512];
  const int rc = npy_open(path, r, err, sizeof err);
  if (rc != 0) {
    cli_error("%s %s: %s%s", opt, path, err,
              rc == NPY_EDTYPE ? " (Q, K and V: '<f4', '<f2', or '<u2' holding bf16)" : "");
    return CLI_EXIT_USAGE;
  }
  const npy_array *a = &r->array;
  int bad = a->ndim != 4;
  if (bad) {
    char dims[128];
    format_dims(a, dims, sizeof dims);
    cli_error("%s %s: expected a 4-D array [B,H,S,D], got shape %s", opt, path, dims);
  }
  for (int i = 0; i < 4 && !bad; i++)
    if (a->shape[i] == 0 || a->shape[i] > 0x7fffffff) {
      cli_error("%s %s: dimension %d is %zu", opt, path, i, a->shape[i]);
      bad = 1;
    }
  if (bad) npy_close(r);
  return bad ? CLI_EXIT_USAGE : 0;
}

static int read_tensor(const char *opt, const char *path, npy_reader *r, npy_array *out) {
  char err[512];
  if (npy_read_data(r, out, err, sizeof err) == 0) return 0;
  cli_error("%s %s: %s", opt, path, err);
  return CLI_EXIT_USAGE;
}

int cli_load_tensor(const char *opt, const char *path, npy_array *out) {
  npy_reader r;
  memset(out, 0, sizeof *out);
  const int rc = open_tensor(opt, path, &r);
  return rc ? rc : read_tensor(opt, path, &r, out);
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

static int input_dtype(const cli_input_spec *spec, const npy_array *q, nabla_dtype *out) {
  const char *descr = npy_dtype_descr(q->dtype);
  if (q->dtype == NPY_U16 && !(spec->dtype_text && spec->dtype == NABLA_BF16)) {
    cli_error("--q %s: dtype '<u2' holds bf16 bits and needs --dtype bf16", spec->q_path);
    return CLI_EXIT_USAGE;
  }
  if (q->dtype != NPY_F32 && q->dtype != NPY_F16 && q->dtype != NPY_U16) {
    cli_error("--q %s: dtype '%s' is not an input type (use <f4, <f2, or <u2 with --dtype bf16)",
              spec->q_path, descr);
    return CLI_EXIT_USAGE;
  }
  *out = q->dtype == NPY_F32 ? NABLA_F32 : q->dtype == NPY_F16 ? NABLA_F16 : NABLA_BF16;
  if (spec->dtype_text && spec->dtype != *out) {
    cli_error("--dtype %s: inputs are '%s' (%s needs '%s')", spec->dtype_text, descr,
              nabla_dtype_name(spec->dtype), npy_dtype_descr(cli_npy_dtype(spec->dtype)));
    return CLI_EXIT_USAGE;
  }
  return 0;
}

static int input_shape(const cli_input_spec *spec, const npy_array *q, nabla_shape *s) {
  memset(s, 0, sizeof *s);
  s->batch = (int)q->shape[0];
  s->heads = (int)q->shape[1];
  s->seq = (int)q->shape[2];
  s->head_dim = (int)q->shape[3];
  if (spec->grid_text) {
    long long tokens = (long long)spec->grid[0] * spec->grid[1] * spec->grid[2];
    if (tokens != s->seq) {
      cli_error("--grid %s has %lld tokens but Q has S=%d", spec->grid_text, tokens, s->seq);
      return CLI_EXIT_USAGE;
    }
    s->grid_t = spec->grid[0];
    s->grid_h = spec->grid[1];
    s->grid_w = spec->grid[2];
  }
  char err[512] = "";
  nabla_status st = nabla_shape_check(s, err, sizeof err);
  if (st != NABLA_OK) {
    cli_error("--q %s: %s", spec->q_path, *err ? err : nabla_status_str(st));
    return CLI_EXIT_USAGE;
  }
  return 0;
}

int cli_inputs_load(const cli_input_spec *spec, cli_inputs *in) {
  /* Every header and every shape rule is checked before any tensor's data is allocated. */
  npy_reader q, k, v;
  memset(&q, 0, sizeof q), memset(&k, 0, sizeof k), memset(&v, 0, sizeof v);
  int rc = open_tensor("--q", spec->q_path, &q);
  if (!rc) rc = open_tensor("--k", spec->k_path, &k);
  if (!rc && spec->v_path) rc = open_tensor("--v", spec->v_path, &v);
  if (!rc) rc = same_as_q("--k", spec->k_path, &k.array, &q.array);
  if (!rc && spec->v_path) rc = same_as_q("--v", spec->v_path, &v.array, &q.array);
  if (!rc) rc = input_dtype(spec, &q.array, &in->dtype);
  if (!rc) rc = input_shape(spec, &q.array, &in->shape);
  if (!rc) rc = read_tensor("--q", spec->q_path, &q, &in->q);
  if (!rc) rc = read_tensor("--k", spec->k_path, &k, &in->k);
  if (!rc && spec->v_path) rc = read_tensor("--v", spec->v_path, &v, &in->v);
  npy_close(&q), npy_close(&k), npy_close(&v);
  if (rc) return rc;
  in->elems = cli_shape_elems(&in->shape);
  in->bytes = in->elems * nabla_dtype_size(in->dtype);
  return 0;
}

void cli_inputs_free(cli_inputs *in) {
  npy_free(&in->q);
  npy_free(&in->k);
  npy_free(&in->v);
}

/* ---- device ----------------------------------------------------------------------------- */

int cli_upload_tile(nabla_context *ctx, const cli_inputs *in, int raster, const void *host,
                    const char *name, cl_mem *out) {
  *out = cli_buffer(ctx, in->bytes, raster ? NULL : host, name);
  if (!*out) return CLI_EXIT_RUNTIME;
  if (!raster) return 0;
  cl_mem src = cli_buffer(ctx, in->bytes, host, name);
  if (!src) return CLI_EXIT_RUNTIME;
  nabla_status st = nabla_reorder(ctx, &in->shape, in->dtype, NABLA_RASTER_TO_TILE, src, *out,
                                  0, NULL, NULL);
  /* Released now: OpenCL keeps it alive until the reorder that reads it has run. */
  cli_release_mem(&src);
  if (st != NABLA_OK) {
    cli_lib_error(ctx, st, "nabla_reorder");
    return CLI_EXIT_RUNTIME;
  }
  return 0;
}

double *cli_tile_doubles(const cli_inputs *in, int raster, const void *data) {
  double *x = malloc(in->elems * sizeof *x), *t = NULL;
  if (!x) return NULL;
  cli_to_double(data, in->elems, in->dtype, x);
  if (!raster || !in->shape.grid_t) return x;
  t = malloc(in->elems * sizeof *t);
  if (t) nabla_ref_reorder(&in->shape, NABLA_RASTER_TO_TILE, x, t);
  free(x);
  return t;
}

/* ---- masks ------------------------------------------------------------------------------ */

int cli_mask_read(nabla_context *ctx, const nabla_shape *shape, const nabla_mask *mask,
                  int bitmap, int flex, cli_mask_host *out) {
  size_t nb = (size_t)nabla_shape_blocks(shape);
  size_t rows = (size_t)shape->batch * shape->heads * nb;
  nabla_status st = nabla_mask_stats(ctx, mask, &out->kept, &out->density);
  if (st == NABLA_OK && bitmap) {
    out->bitmap = malloc(rows * nb);
    st = out->bitmap ? nabla_mask_read_bitmap(ctx, mask, out->bitmap, rows * nb)
                     : NABLA_OUT_OF_MEMORY;
  }
  if (st == NABLA_OK && flex) {
    out->kv_num = malloc(rows * sizeof *out->kv_num);
    out->kv_idx = malloc(rows * nb * sizeof *out->kv_idx);
    st = out->kv_num && out->kv_idx
             ? nabla_mask_read_flex(ctx, mask, out->kv_num, rows, out->kv_idx, rows * nb)
             : NABLA_OUT_OF_MEMORY;
  }
  if (st != NABLA_OK) {
    cli_lib_error(ctx, st, "reading the mask");
    return CLI_EXIT_RUNTIME;
  }
  return 0;
}

void cli_mask_host_free(cli_mask_host *m) {
  free(m->bitmap);
  free(m->kv_num);
  free(m->kv_idx);
  m->bitmap = NULL;
  m->kv_num = m->kv_idx = NULL;
}

static char *join(const char *prefix, const char *suffix) {
  size_t n = strlen(prefix) + strlen(suffix) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s%s", prefix, suffix);
  return s;
}

int cli_csr_paths(const char *prefix, char **num_path, char **idx_path) {
  *num_path = join(prefix, "_kv_num_blocks.npy");
  *idx_path = join(prefix, "_kv_indices.npy");
  if (!*num_path || !*idx_path) {
    cli_error("out of memory");
    return CLI_EXIT_RUNTIME;
  }
  int rc = cli_check_output_path("--csr-out", *num_path);
  return rc ? rc : cli_check_output_path("--csr-out", *idx_path);
}

int cli_mask_outputs_add(cli_outputs *set, const nabla_shape *shape, const char *mask_out,
                         const char *num_path, const char *idx_path, const cli_mask_host *m) {
  size_t nb = (size_t)nabla_shape_blocks(shape);
  size_t dims[4] = {(size_t)shape->batch, (size_t)shape->heads, nb, nb};
  int rc = 0;
  if (!rc && mask_out) rc = cli_outputs_add(set, "--mask-out", mask_out, NPY_U8, 4, dims, m->bitmap);
  if (!rc && num_path) rc = cli_outputs_add(set, "--csr-out", num_path, NPY_I32, 3, dims, m->kv_num);
  if (!rc && num_path) rc = cli_outputs_add(set, "--csr-out", idx_path, NPY_I32, 4, dims, m->kv_idx);
  return rc;
}

void cli_json_add_mask_compare(cJSON *o, const cli_mask_compare *m) {
  cJSON_AddNumberToObject(o, "mask_rows", (double)m->rows);
  cJSON_AddNumberToObject(o, "mask_rows_equal", (double)m->rows_equal);
  cJSON_AddNumberToObject(o, "mask_rows_near_threshold", (double)m->rows_near);
  cJSON_AddNumberToObject(o, "mask_rows_unexplained", (double)m->rows_bad);
}

void cli_print_mask_compare(const char *lead, const cli_mask_compare *m, int ok) {
  printf("%smask rows identical %lld / %lld, %lld near threshold, %lld unexplained: %s\n", lead,
         (long long)m->rows_equal, (long long)m->rows, (long long)m->rows_near,
         (long long)m->rows_bad, ok ? "ok" : "FAILED");
}

cJSON *cli_mask_report_json(const char *device, const char *algo, const cli_inputs *in,
                            int raster, const cli_mask_host *m) {
  const nabla_shape *s = &in->shape;
  double nb = nabla_shape_blocks(s);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "device", device);
  cJSON_AddStringToObject(o, "algo", algo);
  cJSON_AddStringToObject(o, "dtype", nabla_dtype_name(in->dtype));
  cJSON_AddStringToObject(o, "order", raster ? "raster" : "tile");
  cJSON_AddItemToObject(o, "shape", cli_json_shape(s));
  cJSON_AddNumberToObject(o, "density", m->density);
  cJSON_AddNumberToObject(o, "blocks_kept", (double)m->kept);
  cJSON_AddNumberToObject(o, "blocks_total", (double)s->batch * s->heads * nb * nb);
  return o;
}

void cli_mask_report_human(const char *device, const char *algo, const cli_inputs *in,
                           int raster, const cli_mask_host *m) {
  const nabla_shape *s = &in->shape;
  double nb = nabla_shape_blocks(s);
  char shape[160];
  cli_format_shape(s, shape, sizeof shape);
  printf("device       %s\n", device);
  printf("shape        %s\n", shape);
  printf("dtype        %s, %s order\n", nabla_dtype_name(in->dtype), raster ? "raster" : "tile");
  printf("algo         %s\n", algo);
  printf("blocks kept  %lld of %.0f (density %.2f %%)\n", (long long)m->kept,
         s->batch * s->heads * nb * nb, 100.0 * m->density);
}
