/*
 * cli_common — what the `nablacl` commands share: the command entry points, option parsing
 * driven by a table (which also prints --help), one-line error messages, atomic multi-file
 * output, OpenCL buffer/timing helpers, host dtype conversion, float64 checks and JSON output.
 *
 * Conventions of every command:
 *   exit 0   success
 *   exit 1   runtime failure (device, library, writing output, a failed --check)
 *   exit 2   bad invocation (unknown option, bad value, unreadable or inconsistent input file)
 * Errors print exactly one line "nablacl: <message>" on stderr, naming the bad argument.
 * Human output goes to stdout; --json prints one JSON object on stdout and nothing else there.
 */
#ifndef NABLACL_TOOLS_CLI_COMMON_H
#define NABLACL_TOOLS_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "nablacl.h"
#include "npy.h"
#include "cli_outputs.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_RUNTIME = 1, CLI_EXIT_USAGE = 2 };

/* Commands: `int cmd_<name>(int argc, char **argv)` with argv[0] the command name. To add one,
 * write tools/cmd_<name>.c and add a line to the table in main.c. */
int cmd_devices(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_mask(int argc, char **argv);

/* ---- messages --------------------------------------------------------------------------- */

/** Prints "nablacl: <message>\n" to stderr (newlines in the message become "; "). */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Prints "nablacl: warning: <message>\n" to stderr. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Reports a failed library call: "nablacl: <what>: <last error or status text>". */
void cli_lib_error(const nabla_context *ctx, nabla_status status, const char *what);

/* ---- options ---------------------------------------------------------------------------- */

typedef struct {
  const char *name;      /* "--grid" */
  const char *metavar;   /* "T,H,W"; NULL for a flag without a value */
  const char *help;      /* one line for --help */
} cli_option;

enum { CLI_PARSED = 0, CLI_HELP_SHOWN = -1 };

/**
 * Parses argv[1..argc) ("--name value" or "--name=value"; flags take no value). values[i] is
 * set to the value of opts[i], "" for a present flag, or left NULL. Prints help on -h/--help
 * and returns CLI_HELP_SHOWN; on an unknown, repeated or valueless option or a stray
 * argument prints the error and returns CLI_EXIT_USAGE; else CLI_PARSED.
 */
int cli_parse(int argc, char **argv, const char *usage, const cli_option *opts, size_t count,
              const char **values);

/** Prints "usage: <usage>" and the option table. */
void cli_print_help(FILE *out, const char *usage, const cli_option *opts, size_t count);

/**
 * Options opts[0..count) must all be given (values[i] not NULL): 0, or prints "missing <name>
 * <metavar> (see 'nablacl <command> --help')" for the first absent one and returns
 * CLI_EXIT_USAGE.
 */
int cli_require(const char *command, const cli_option *opts, const char *const *values, size_t count);

/* Value parsers: return 0, or print "nablacl: <opt> <text>: <why>" and return CLI_EXIT_USAGE. */
int cli_parse_int(const char *opt, const char *text, long min, long max, int *out);
int cli_parse_grid(const char *opt, const char *text, int grid[3]);
int cli_parse_dtype(const char *opt, const char *text, nabla_dtype *out);
int cli_parse_algo(const char *opt, const char *text, nabla_algo *out);

/* ---- device ----------------------------------------------------------------------------- */

/** Creates a context on `selector` (NULL: the default rule, NABLACL_DEVICE first); prints the
 * error on failure and returns CLI_EXIT_USAGE when a selector (the argument or NABLACL_DEVICE)
 * matches no device, else CLI_EXIT_RUNTIME. */
int cli_context(const char *selector, nabla_context **out);
/** Name of the context's device (CL_DEVICE_NAME), trimmed. */
void cli_device_name(const nabla_context *ctx, char *buf, size_t len);
/** A device buffer of `bytes`, filled from `host` when not NULL. NULL on failure (printed). */
cl_mem cli_buffer(nabla_context *ctx, size_t bytes, const void *host, const char *what);
/** Blocking read of a whole buffer; returns 0 or CLI_EXIT_RUNTIME (printed). */
int cli_read_buffer(nabla_context *ctx, cl_mem buf, size_t bytes, void *host, const char *what);
/** Enqueues a marker on the context's queue that starts a timed span. */
int cli_marker(nabla_context *ctx, cl_event *out);
/** Milliseconds from the end of `start` (a marker) to the end of `done`; both complete. */
double cli_span_ms(cl_event start, cl_event done);
/**
 * nabla_mask_build, then clFinish. With `ms`, also the build's span in milliseconds: from a
 * marker flushed on the idle queue to the end of the build's `done` event (so every kernel of
 * the build, and any first-use program build, is inside). Prints the error on failure.
 */
int cli_timed_mask_build(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                         nabla_dtype dtype, cl_mem q, cl_mem k, nabla_mask **mask, double *ms);
/** nabla_attend (mask NULL: dense), then clFinish; `ms` as for cli_timed_mask_build. */
int cli_timed_attend(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                     const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o, double *ms);
/** Releases an event (NULL allowed) and clears it. */
void cli_release_event(cl_event *event);
/** Releases a buffer (NULL allowed) and clears it. */
void cli_release_mem(cl_mem *mem);

/* ---- host data -------------------------------------------------------------------------- */

/** Element size of a storage dtype / its .npy dtype. */
npy_dtype cli_npy_dtype(nabla_dtype dtype);
/** Storage of `dtype` -> double. */
void cli_to_double(const void *src, size_t n, nabla_dtype dtype, double *out);
/** Float -> storage of `dtype` (round to nearest even). */
void cli_from_float(const float *src, size_t n, nabla_dtype dtype, void *dst);
/** max |a - b|, where the same non-finite value on both sides (NaN, or one signed Inf) counts
 * as 0; otherwise NaN wins. */
double cli_max_abs_diff(const double *a, const double *b, size_t n);
/** A monotonic clock in milliseconds, for warm-up durations (kernels are timed by events). */
double cli_clock_ms(void);
/** Whether to run another warm-up, `done` (>= 1) having run: while fewer than `min_runs`, or
 * until `warmup_ms` has passed since the first ended (it may have built programs). `*until` is
 * the caller's state, set when done is 1. */
int cli_warm_more(int done, int min_runs, int warmup_ms, double *until);
/** Median of n > 0 values (sorts them in place). */
double cli_median(double *v, int n);
/** max |a|. */
double cli_max_abs(const double *a, size_t n);
/** Elements of a [B,H,S,D] shape. */
size_t cli_shape_elems(const nabla_shape *shape);

/* ---- float64 checks --------------------------------------------------------------------- */

typedef struct {
  int64_t rows;         /* mask rows compared (B*H*Nb) */
  int64_t rows_equal;   /* identical rows */
  int64_t rows_near;    /* differing rows flagged near-threshold by the reference */
  int64_t rows_bad;     /* differing rows not explained by rounding */
} cli_mask_compare;

/** Compares a device bitmap with the reference bitmap + near flags, row by row. */
void cli_compare_masks(const nabla_shape *shape, const uint8_t *device, const uint8_t *ref,
                       const uint8_t *near, cli_mask_compare *out);

/**
 * Float64 block-sparse attention of the (b,h) slices [first, first + count) of q/k/v (tile
 * order) with the mask `bitmap` [B,H,Nb,Nb]; writes those slices of `out`. With `rows` (Nb
 * flags) only the query blocks flagged are computed, the others are left zero: a cheap
 * spot check of heads too long to check whole. Returns 0 or -1 (out of memory).
 */
int cli_ref_attention_heads(const nabla_shape *shape, const double *q, const double *k,
                            const double *v, const uint8_t *bitmap, const uint8_t *rows,
                            int first, int count, double *out);

/** Absolute tolerance of an output stored as `dtype` whose values reach `scale`. */
double cli_tolerance(nabla_dtype dtype, double scale);

/* Output files: cli_outputs.h. */

/* ---- JSON ------------------------------------------------------------------------------- */

/** {"batch":..,"heads":..,"seq":..,"head_dim":..,"blocks":..[,"grid":[T,H,W]]}. */
cJSON *cli_json_shape(const nabla_shape *shape);
/** Prints the object (formatted) and a newline to stdout, then deletes it. 0 or RUNTIME. */
int cli_json_print(cJSON *root);

/** "B=1 H=2 S=12288 D=64 grid 8x32x48 Nb=192". */
void cli_format_shape(const nabla_shape *shape, char *buf, size_t len);

#endif
