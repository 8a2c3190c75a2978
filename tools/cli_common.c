/* cli_common.c — shared helpers of the nablacl commands (see cli_common.h). */
#include "cli_common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- messages --------------------------------------------------------------------------- */

static void print_line(const char *prefix, const char *fmt, va_list ap) {
  char msg[4096];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
  if (isatty(STDERR_FILENO)) fputs("\r\033[K", stderr); /* over a progress line, if one is shown */
  fputs(prefix, stderr);
  for (const char *p = msg; *p; p++) {
    if (*p == '\n') fputs("; ", stderr);
    else fputc(*p, stderr);
  }
  fputc('\n', stderr);
}

void cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  print_line("nablacl: ", fmt, ap);
  va_end(ap);
}

void cli_warn(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  print_line("nablacl: warning: ", fmt, ap);
  va_end(ap);
}

void cli_lib_error(const nabla_context *ctx, nabla_status status, const char *what) {
  const char *detail = ctx ? nabla_last_error(ctx) : NULL;
  if (!detail || !*detail) detail = nabla_status_str(status);
  cli_error("%s: %s", what, detail);
}

/* ---- options ---------------------------------------------------------------------------- */

void cli_print_help(FILE *out, const char *usage, const cli_option *opts, size_t count) {
  fprintf(out, "usage: %s\n", usage);
  if (count) fprintf(out, "\noptions:\n");
  for (size_t i = 0; i < count; i++) {
    char left[64];
    snprintf(left, sizeof left, "%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
             opts[i].metavar ? opts[i].metavar : "");
    fprintf(out, "  %-24s %s\n", left, opts[i].help);
  }
  fprintf(out, "  %-24s %s\n", "-h, --help", "show this help");
}

static int find_option(const cli_option *opts, size_t count, const char *arg, size_t len) {
  for (size_t i = 0; i < count; i++)
    if (strlen(opts[i].name) == len && strncmp(opts[i].name, arg, len) == 0) return (int)i;
  return -1;
}

/* Handles argv[*i] (an option); advances *i past a separate value. */
static int parse_one(int argc, char **argv, int *i, const cli_option *opts, size_t count,
                     const char **values) {
  const char *arg = argv[*i], *eq = strchr(arg, '=');
  size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
  int k = find_option(opts, count, arg, len);
  if (k < 0) {
    cli_error("unknown option '%.*s' for '%s' (see 'nablacl %s --help')", (int)len, arg, argv[0],
              argv[0]);
    return CLI_EXIT_USAGE;
  }
  if (values[k]) {
    cli_error("%s given more than once", opts[k].name);
    return CLI_EXIT_USAGE;
  }
  if (!opts[k].metavar) {
    if (eq) {
      cli_error("%s takes no value", opts[k].name);
      return CLI_EXIT_USAGE;
    }
    values[k] = "";
    return CLI_PARSED;
  }
  const char *value = eq ? eq + 1 : (*i + 1 < argc ? argv[*i + 1] : NULL);
  if (!value || (!eq && strncmp(value, "--", 2) == 0) || !*value) {
    cli_error("%s needs a value (%s)", opts[k].name, opts[k].metavar);
    return CLI_EXIT_USAGE;
  }
  if (!eq) (*i)++;
  values[k] = value;
  return CLI_PARSED;
}

int cli_parse(int argc, char **argv, const char *usage, const cli_option *opts, size_t count,
              const char **values) {
  for (size_t k = 0; k < count; k++) values[k] = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      cli_print_help(stdout, usage, opts, count);
      return CLI_HELP_SHOWN;
    }
    if (strncmp(argv[i], "--", 2) != 0 || argv[i][2] == '\0') {
      cli_error("unexpected argument '%s' for '%s' (see 'nablacl %s --help')", argv[i], argv[0],
                argv[0]);
      return CLI_EXIT_USAGE;
    }
    int rc = parse_one(argc, argv, &i, opts, count, values);
    if (rc != CLI_PARSED) return rc;
  }
  return CLI_PARSED;
}

int cli_require(const char *command, const cli_option *opts, const char *const *values, size_t count) {
  for (size_t i = 0; i < count; i++)
    if (!values[i]) {
      cli_error("missing %s %s (see 'nablacl %s --help')", opts[i].name, opts[i].metavar, command);
      return CLI_EXIT_USAGE;
    }
  return 0;
}

int cli_parse_int(const char *opt, const char *text, long min, long max, int *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno == ERANGE) {
    cli_error("%s %s: not an integer", opt, text);
    return CLI_EXIT_USAGE;
  }
  if (v < min || v > max) {
    cli_error("%s %s: must be between %ld and %ld", opt, text, min, max);
    return CLI_EXIT_USAGE;
  }
  *out = (int)v;
  return 0;
}

int cli_parse_grid(const char *opt, const char *text, int grid[3]) {
  const char *p = text;
  for (int a = 0; a < 3; a++) {
    char *end = NULL;
    errno = 0;
    long v = strtol(p, &end, 10);
    int sep_ok = a < 2 ? (*end == ',' || *end == 'x') : *end == '\0';
    if (end == p || !sep_ok || errno == ERANGE || v < 1 || v > 1000000) {
      cli_error("%s %s: expected T,H,W (three positive integers, frames x height x width)", opt,
                text);
      return CLI_EXIT_USAGE;
    }
    grid[a] = (int)v;
    p = end + 1;
  }
  if ((long long)grid[0] * grid[1] * grid[2] > INT_MAX) {
    cli_error("%s %s: too many tokens", opt, text);
    return CLI_EXIT_USAGE;
  }
  return 0;
}

int cli_parse_dtype(const char *opt, const char *text, nabla_dtype *out) {
  static const struct {
    const char *name;
    nabla_dtype dtype;
  } names[] = {{"f32", NABLA_F32}, {"fp32", NABLA_F32}, {"float32", NABLA_F32},
               {"f16", NABLA_F16}, {"fp16", NABLA_F16}, {"float16", NABLA_F16},
               {"half", NABLA_F16}, {"bf16", NABLA_BF16}, {"bfloat16", NABLA_BF16}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcasecmp(text, names[i].name) == 0) {
      *out = names[i].dtype;
      return 0;
    }
  cli_error("%s %s: unknown dtype (use f32, f16 or bf16)", opt, text);
  return CLI_EXIT_USAGE;
}

int cli_parse_algo(const char *opt, const char *text, nabla_algo *out) {
  char err[512] = "";
  nabla_status st = nabla_algo_parse(text, out, err, sizeof err);
  if (st != NABLA_OK) {
    cli_error("%s %s: %s", opt, text, *err ? err : nabla_status_str(st));
    return CLI_EXIT_USAGE;
  }
  return 0;
}

/* ---- device ----------------------------------------------------------------------------- */

int cli_context(const char *selector, nabla_context **out) {
  char err[4096] = "";
  nabla_status st = nabla_context_create(out, selector, err, sizeof err);
  if (st == NABLA_OK) {
    if (*nabla_context_cache_note(*out)) cli_warn("%s", nabla_context_cache_note(*out));
    return 0;
  }
  const char *env = getenv("NABLACL_DEVICE");
  if (!*err) snprintf(err, sizeof err, "%s", nabla_status_str(st));
  if (st == NABLA_INVALID_ARGUMENT) { /* the environment (NABLACL_KERNEL_DIR): say only what */
    cli_error("%s", err);
    return CLI_EXIT_USAGE;
  }
  if (selector) cli_error("--device %s: %s", selector, err);
  else if (env && *env) cli_error("NABLACL_DEVICE=%s: %s", env, err);
  else cli_error("cannot open an OpenCL device: %s", err);
  /* A selector that matches no device is a bad invocation; no device at all is not. */
  return st == NABLA_NO_DEVICE && (selector || (env && *env)) ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME;
}

void cli_device_name(const nabla_context *ctx, char *buf, size_t len) {
  buf[0] = '\0';
  if (clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_NAME, len, buf, NULL) != CL_SUCCESS)
    snprintf(buf, len, "?");
  buf[len - 1] = '\0';
  size_t n = strlen(buf), start = 0;
  while (n > 0 && buf[n - 1] == ' ') buf[--n] = '\0';
  while (buf[start] == ' ') start++;
  memmove(buf, buf + start, n - start + 1);
}

cl_mem cli_buffer(nabla_context *ctx, size_t bytes, const void *host, const char *what) {
  cl_int err = CL_SUCCESS;
  cl_mem_flags flags = CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0);
  cl_mem mem = clCreateBuffer(nabla_context_cl_context(ctx), flags, bytes ? bytes : 4,
                              (void *)host, &err);
  if (!mem || err != CL_SUCCESS) {
    cli_error("cannot allocate %zu bytes on the device for %s (OpenCL error %d)", bytes, what,
              (int)err);
    return NULL;
  }
  return mem;
}

int cli_read_buffer(nabla_context *ctx, cl_mem buf, size_t bytes, void *host, const char *what) {
  cl_int err = clEnqueueReadBuffer(nabla_context_queue(ctx), buf, CL_TRUE, 0, bytes, host, 0,
                                   NULL, NULL);
  if (err != CL_SUCCESS) {
    cli_error("reading %s from the device failed (OpenCL error %d)", what, (int)err);
    return CLI_EXIT_RUNTIME;
  }
  return 0;
}

int cli_marker(nabla_context *ctx, cl_event *out) {
  cl_int err = clEnqueueMarkerWithWaitList(nabla_context_queue(ctx), 0, NULL, out);
  if (err != CL_SUCCESS) {
    cli_error("clEnqueueMarkerWithWaitList failed (OpenCL error %d)", (int)err);
    return CLI_EXIT_RUNTIME;
  }
  return 0;
}

double cli_span_ms(cl_event start, cl_event done) {
  cl_ulong t0 = 0, t1 = 0;
  if (!start || !done ||
      clGetEventProfilingInfo(start, CL_PROFILING_COMMAND_END, sizeof t0, &t0, NULL) != CL_SUCCESS ||
      clGetEventProfilingInfo(done, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) != CL_SUCCESS)
    return NAN;
  return t1 >= t0 ? (double)(t1 - t0) * 1e-6 : 0.0;
}

/* Ends a timed span: reports a failed call, finishes the queue, measures. */
static int end_span(nabla_context *ctx, nabla_status st, const char *what, cl_event start,
                    cl_event done, double *ms) {
  if (st != NABLA_OK) {
    cli_lib_error(ctx, st, what);
    return CLI_EXIT_RUNTIME;
  }
  cl_int err = clFinish(nabla_context_queue(ctx));
  if (err != CL_SUCCESS) {
    cli_error("%s: clFinish failed (OpenCL error %d)", what, (int)err);
    return CLI_EXIT_RUNTIME;
  }
  if (ms) *ms = cli_span_ms(start, done);
  return 0;
}

int cli_timed_mask_build(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                         nabla_dtype dtype, cl_mem q, cl_mem k, nabla_mask **mask, double *ms) {
  cl_event start = NULL, done = NULL;
  int rc = cli_marker(ctx, &start);
  if (rc) return rc;
  clFlush(nabla_context_queue(ctx));
  nabla_status st = nabla_mask_build(ctx, algo, shape, dtype, q, k, mask, 0, NULL, &done);
  rc = end_span(ctx, st, "nabla_mask_build", start, done, ms);
  cli_release_event(&start);
  cli_release_event(&done);
  return rc;
}

int cli_timed_attend(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                     const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o, double *ms) {
  cl_event start = NULL, done = NULL;
  int rc = cli_marker(ctx, &start);
  if (rc) return rc;
  clFlush(nabla_context_queue(ctx));
  nabla_status st = nabla_attend(ctx, shape, dtype, mask, q, k, v, o, 0, NULL, &done);
  rc = end_span(ctx, st, "nabla_attend", start, done, ms);
  cli_release_event(&start);
  cli_release_event(&done);
  return rc;
}

void cli_release_event(cl_event *event) {
  if (*event) clReleaseEvent(*event);
  *event = NULL;
}

void cli_release_mem(cl_mem *mem) {
  if (*mem) clReleaseMemObject(*mem);
  *mem = NULL;
}

/* ---- host data -------------------------------------------------------------------------- */

npy_dtype cli_npy_dtype(nabla_dtype dtype) {
  return dtype == NABLA_F32 ? NPY_F32 : dtype == NABLA_F16 ? NPY_F16 : NPY_U16;
}

void cli_to_double(const void *src, size_t n, nabla_dtype dtype, double *out) {
  const float *f = src;
  const uint16_t *h = src;
  for (size_t i = 0; i < n; i++)
    out[i] = dtype == NABLA_F32   ? (double)f[i]
             : dtype == NABLA_F16 ? (double)nabla_f16_to_f32(h[i])
                                  : (double)nabla_bf16_to_f32(h[i]);
}

void cli_from_float(const float *src, size_t n, nabla_dtype dtype, void *dst) {
  if (dtype == NABLA_F32) {
    memcpy(dst, src, n * sizeof(float));
    return;
  }
  uint16_t *h = dst;
  for (size_t i = 0; i < n; i++)
    h[i] = dtype == NABLA_F16 ? nabla_f32_to_f16(src[i]) : nabla_f32_to_bf16(src[i]);
}

double cli_max_abs_diff(const double *a, const double *b, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++) {
    /* Non-finite values agree where both sides have the same one (NaN, or one signed Inf):
     * non-finite inputs reach the output by design (docs/algorithm.md). */
    int same = (isnan(a[i]) && isnan(b[i])) || (isinf(a[i]) && a[i] == b[i]);
    double d = same ? 0.0 : fabs(a[i] - b[i]);
    if (d > m || isnan(d)) m = d;
    if (isnan(m)) break;
  }
  return m;
}

double cli_max_abs(const double *a, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(a[i]) && fabs(a[i]) > m) m = fabs(a[i]);
  return m;
}

size_t cli_shape_elems(const nabla_shape *s) {
  return (size_t)s->batch * (size_t)s->heads * (size_t)s->seq * (size_t)s->head_dim;
}

/* ---- float64 checks --------------------------------------------------------------------- */

void cli_compare_masks(const nabla_shape *shape, const uint8_t *device, const uint8_t *ref,
                       const uint8_t *near, cli_mask_compare *out) {
  size_t nb = (size_t)nabla_shape_blocks(shape);
  memset(out, 0, sizeof *out);
  out->rows = (int64_t)shape->batch * shape->heads * (int64_t)nb;
  for (int64_t r = 0; r < out->rows; r++) {
    if (memcmp(device + (size_t)r * nb, ref + (size_t)r * nb, nb) == 0) out->rows_equal++;
    else if (near && near[r]) out->rows_near++;
    else out->rows_bad++;
  }
}

/* Drops the query blocks not flagged in `rows` from a single-head CSR. */
static void keep_rows(size_t nb, const uint8_t *rows, int32_t *row_ptr, int32_t *col_idx) {
  int32_t kept = 0;
  for (size_t i = 0; i < nb; i++) {
    int32_t begin = row_ptr[i], end = row_ptr[i + 1];
    row_ptr[i] = kept;
    if (!rows[i]) continue;
    memmove(col_idx + kept, col_idx + begin, (size_t)(end - begin) * sizeof *col_idx);
    kept += end - begin;
  }
  row_ptr[nb] = kept;
}

int cli_ref_attention_heads(const nabla_shape *shape, const double *q, const double *k,
                            const double *v, const uint8_t *bitmap, const uint8_t *rows,
                            int first, int count, double *out) {
  nabla_shape one = *shape;
  one.batch = 1;
  one.heads = 1;
  size_t nb = (size_t)nabla_shape_blocks(shape), slice = (size_t)shape->seq * shape->head_dim;
  int32_t *row_ptr = malloc((nb + 1) * sizeof *row_ptr);
  int32_t *col_idx = malloc(nb * nb * sizeof *col_idx);
  int rc = -1;
  if (!row_ptr || !col_idx) goto done;
  for (int bh = first; bh < first + count; bh++) {
    size_t off = (size_t)bh * slice;
    nabla_ref_csr(&one, bitmap + (size_t)bh * nb * nb, row_ptr, col_idx);
    if (rows) keep_rows(nb, rows, row_ptr, col_idx);
    nabla_ref_attention_sparse(&one, q + off, k + off, v + off, row_ptr, col_idx, out + off);
  }
  rc = 0;
done:
  free(row_ptr);
  free(col_idx);
  return rc;
}

double cli_tolerance(nabla_dtype dtype, double scale) {
  /* A few output ulps of the storage type on top of fp32 accumulation error. */
  double rel = dtype == NABLA_F32 ? 1e-4 : dtype == NABLA_F16 ? 2e-3 : 1.6e-2;
  return rel * (scale > 1e-30 ? scale : 1e-30);
}

/* ---- JSON ------------------------------------------------------------------------------- */

cJSON *cli_json_shape(const nabla_shape *s) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddNumberToObject(o, "batch", s->batch);
  cJSON_AddNumberToObject(o, "heads", s->heads);
  cJSON_AddNumberToObject(o, "seq", s->seq);
  cJSON_AddNumberToObject(o, "head_dim", s->head_dim);
  cJSON_AddNumberToObject(o, "blocks", nabla_shape_blocks(s));
  if (s->grid_t) {
    const int grid[3] = {s->grid_t, s->grid_h, s->grid_w};
    cJSON_AddItemToObject(o, "grid", cJSON_CreateIntArray(grid, 3));
  }
  return o;
}

int cli_json_print(cJSON *root) {
  char *text = root ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  if (!text) {
    cli_error("out of memory formatting JSON");
    return CLI_EXIT_RUNTIME;
  }
  puts(text);
  cJSON_free(text);
  return fflush(stdout) == 0 ? 0 : CLI_EXIT_RUNTIME;
}

void cli_format_shape(const nabla_shape *s, char *buf, size_t len) {
  int n = snprintf(buf, len, "B=%d H=%d S=%d D=%d", s->batch, s->heads, s->seq, s->head_dim);
  if (n < 0 || (size_t)n >= len) return;
  if (s->grid_t)
    snprintf(buf + n, len - (size_t)n, "  grid %dx%dx%d  Nb=%d", s->grid_t, s->grid_h, s->grid_w,
             nabla_shape_blocks(s));
  else snprintf(buf + n, len - (size_t)n, "  Nb=%d", nabla_shape_blocks(s));
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

double cli_clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

int cli_warm_more(int done, int min_runs, int warmup_ms, double *until) {
  if (done == 1) *until = cli_clock_ms() + warmup_ms;
  return done < min_runs || cli_clock_ms() < *until;
}

double cli_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
