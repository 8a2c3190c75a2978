/*
 * nablacl tune — measures the kernels' configurations on a device and stores the fastest in the
 * tuning cache, where every later process finds them.
 *
 * Progress goes to stderr: a bar on a terminal, one line per configuration otherwise. The
 * summary (or with --json one JSON object: every configuration measured and the winners) goes
 * to stdout. Ctrl-C stops after the current configuration; results and per-configuration
 * measurements finished so far are in the cache, so running the same command again resumes.
 * A second Ctrl-C stops at once.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"

static const char usage[] =
    "nablacl tune [--device SEL] [--dtype f32|f16|bf16] [--dim D] [--quick | --full]\n"
    "             [--force] [--kernels LIST] [--json]";

static const cli_option options[] = {
    {"--device", "SEL", "device index, platform or device name substring, platform:NAME or device:NAME"},
    {"--dtype", "f32|f16|bf16", "storage type to tune for (default bf16)"},
    {"--dim", "D", "head dim to tune for (default 64)"},
    {"--quick", NULL, "the small shape class, 0.2 s per configuration (the default)"},
    {"--full", NULL, "every shape class that fits the device, 1 s per configuration"},
    {"--force", NULL, "retune results already in the cache"},
    {"--kernels", "LIST", "comma-separated kernels to tune (default attention,select)"},
    {"--json", NULL, "print one JSON object: every configuration measured and the winners"},
};
enum { O_DEVICE, O_DTYPE, O_DIM, O_QUICK, O_FULL, O_FORCE, O_KERNELS, O_JSON, O_COUNT };

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static const char *const state_names[] = {"measured", "rejected", "failed", "unfit"};

typedef struct {
  int json, tty;
  int bar_shown;
  cJSON *measurements, *winners, *skipped;
  int rows;
  char table[64][256];  /* human summary lines */
  char lead[128];       /* the fastest candidate measured since the last result, */
  double lead_ms;       /* and its time (0: none yet) */
} tune_ui;

static cJSON *params_json(const nabla_tune_report *r) {
  cJSON *o = cJSON_CreateObject();
  for (int i = 0; o && i < r->param_count; i++) cJSON_AddNumberToObject(o, r->param_names[i], r->param_values[i]);
  return o;
}

static void progress_line(tune_ui *ui, const nabla_tune_report *r) {
  char what[400];
  if (r->event == NABLA_TUNE_CANDIDATE) {
    if (r->state == NABLA_TUNE_MEASURED)
      snprintf(what, sizeof what, "%-9s %-6s %-30s %10.3f ms%s", r->kernel, r->shape_class, r->params, r->ms,
               r->resumed ? " (resumed)" : "");
    else
      snprintf(what, sizeof what, "%-9s %-6s %-30s %s", r->kernel, r->shape_class, r->params, state_names[r->state]);
    if (r->state == NABLA_TUNE_MEASURED && (ui->lead_ms <= 0.0 || r->ms < ui->lead_ms)) {
      snprintf(ui->lead, sizeof ui->lead, "%s", r->params);
      ui->lead_ms = r->ms;
    }
  } else if (r->event == NABLA_TUNE_RESULT) {
    if (ui->lead_ms > 0.0 && strcmp(ui->lead, r->params) != 0) /* the default kept its place */
      snprintf(what, sizeof what, "%-9s %-6s winner %s (%.3f ms): %s, the fastest at first, lost the paired rematch",
               r->kernel, r->shape_class, r->params, r->ms, ui->lead);
    else
      snprintf(what, sizeof what, "%-9s %-6s winner %s (%.3f ms)", r->kernel, r->shape_class, r->params, r->ms);
  } else if (r->event == NABLA_TUNE_CACHED) {
    snprintf(what, sizeof what, "%-9s %-6s cached %s", r->kernel, r->shape_class, r->params);
  } else {
    snprintf(what, sizeof what, "%-9s %-6s skipped", r->kernel, r->shape_class);
  }
  if (ui->tty) {
    enum { WIDTH = 24 };
    int filled = r->total ? (int)((long)WIDTH * r->done / r->total) : WIDTH;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '-';
    bar[WIDTH] = '\0';
    fprintf(stderr, "\r[%s] %3d/%-3d %s\033[K", bar, r->done, r->total, what);
    ui->bar_shown = 1;
  } else {
    fprintf(stderr, "tune %d/%d %s\n", r->done, r->total, what);
  }
  if (r->event != NABLA_TUNE_CANDIDATE) ui->lead_ms = 0.0; /* the next kernel and class start afresh */
  if (r->event == NABLA_TUNE_SKIPPED || (r->event == NABLA_TUNE_CANDIDATE && r->state == NABLA_TUNE_FAILED)) {
    if (ui->bar_shown) fputc('\n', stderr), ui->bar_shown = 0;
    cli_warn("%s %s %s: %s", r->kernel, r->shape_class, r->event == NABLA_TUNE_SKIPPED ? "skipped" : r->params, r->note);
  }
  fflush(stderr);
}

static int on_report(const nabla_tune_report *r, void *user) {
  tune_ui *ui = user;
  progress_line(ui, r);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kernel", r->kernel);
  cJSON_AddStringToObject(o, "shape_class", r->shape_class);
  if (r->event == NABLA_TUNE_CANDIDATE) {
    cJSON_AddItemToObject(o, "params", params_json(r));
    cJSON_AddStringToObject(o, "state", state_names[r->state]);
    if (r->state == NABLA_TUNE_MEASURED) cJSON_AddNumberToObject(o, "ms", r->ms);
    else cJSON_AddNullToObject(o, "ms");
    cJSON_AddNumberToObject(o, "reps", r->reps);
    cJSON_AddNumberToObject(o, "max_error", r->max_error);
    cJSON_AddBoolToObject(o, "reference", r->is_reference);
    cJSON_AddBoolToObject(o, "default", r->is_default);
    cJSON_AddBoolToObject(o, "resumed", r->resumed);
    if (*r->note) cJSON_AddStringToObject(o, "note", r->note);
    cJSON_AddItemToArray(ui->measurements, o);
  } else if (r->event == NABLA_TUNE_SKIPPED) {
    cJSON_AddStringToObject(o, "reason", r->note);
    cJSON_AddItemToArray(ui->skipped, o);
  } else {
    int tuned = r->event == NABLA_TUNE_RESULT;
    cJSON_AddItemToObject(o, "params", params_json(r));
    cJSON_AddStringToObject(o, "source", tuned ? "tuned" : "cached");
    cJSON_AddNumberToObject(o, "ms", r->ms);
    if (tuned) {
      cJSON_AddNumberToObject(o, "reference_ms", r->reference_ms);
      cJSON_AddNumberToObject(o, "default_ms", r->default_ms);
      cJSON_AddNumberToObject(o, "speedup_vs_default", r->default_ms > 0 && r->ms > 0 ? r->default_ms / r->ms : 1.0);
      cJSON_AddNumberToObject(o, "candidates", r->candidates);
    }
    cJSON_AddBoolToObject(o, "stored", r->stored);
    cJSON_AddItemToObject(o, "shape", cli_json_shape(r->shape));
    cJSON_AddItemToArray(ui->winners, o);
    if (ui->rows < 64) {
      char def[32] = "-";
      if (tuned && r->default_ms > 0) snprintf(def, sizeof def, "%.3f", r->default_ms);
      snprintf(ui->table[ui->rows++], sizeof ui->table[0], "%-10s %-7s %-30s %10.3f %10s  %-6s %s",
               r->kernel, r->shape_class, r->params, r->ms, def, tuned ? "tuned" : "cached",
               tuned ? (r->stored ? "yes" : "no") : "-"); /* a cached row was stored before */
    }
  }
  return interrupted;
}

int cmd_tune(int argc, char **argv) {
  const char *v[O_COUNT] = {0};
  int rc = cli_parse(argc, argv, usage, options, O_COUNT, v);
  if (rc == CLI_HELP_SHOWN) return CLI_EXIT_OK;
  if (rc) return rc;
  nabla_tune_options opt;
  nabla_tune_options_init(&opt);
  if (v[O_QUICK] && v[O_FULL]) {
    cli_error("--quick and --full exclude each other");
    return CLI_EXIT_USAGE;
  }
  if ((v[O_DTYPE] && cli_parse_dtype("--dtype", v[O_DTYPE], &opt.dtype)) ||
      (v[O_DIM] && cli_parse_int("--dim", v[O_DIM], 8, NABLA_MAX_HEAD_DIM, &opt.head_dim)))
    return CLI_EXIT_USAGE;
  if (opt.head_dim % 8) {
    cli_error("--dim %d: must be a multiple of 8", opt.head_dim);
    return CLI_EXIT_USAGE;
  }
  if (v[O_KERNELS]) {
    const char *list = v[O_KERNELS];
    for (const char *s = list; *s;) {
      size_t len = strcspn(s, ",");
      if (!((len == 9 && strncmp(s, "attention", 9) == 0) || (len == 6 && strncmp(s, "select", 6) == 0))) {
        cli_error("--kernels %s: unknown kernel '%.*s' (attention, select)", list, (int)len, s);
        return CLI_EXIT_USAGE;
      }
      s += len + (s[len] == ',');
    }
  }
  opt.full = v[O_FULL] != NULL;
  opt.force = v[O_FORCE] != NULL;
  opt.kernels = v[O_KERNELS];

  tune_ui ui;
  memset(&ui, 0, sizeof ui);
  ui.json = v[O_JSON] != NULL;
  ui.tty = isatty(STDERR_FILENO);
  ui.measurements = cJSON_CreateArray();
  ui.winners = cJSON_CreateArray();
  ui.skipped = cJSON_CreateArray();
  nabla_context *ctx = NULL;
  if ((rc = cli_context(v[O_DEVICE], &ctx))) goto done;

  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sa.sa_flags = (int)SA_RESETHAND; /* a second Ctrl-C stops at once */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old);
  nabla_tune_summary sum;
  nabla_status st = nabla_tune(ctx, &opt, on_report, &ui, &sum);
  sigaction(SIGINT, &old, NULL);
  if (ui.bar_shown) fputc('\n', stderr);
  if (st != NABLA_OK) {
    cli_lib_error(ctx, st, "nabla_tune");
    rc = st == NABLA_INVALID_ARGUMENT ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME;
    if (!ui.json) goto done;
  }

  char device[256], cache[4096];
  cli_device_name(ctx, device, sizeof device);
  const char *dir = nabla_context_cache_dir(ctx);
  snprintf(cache, sizeof cache, "%s", dir ? dir : "");
  if (ui.json) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "device", device);
    cJSON_AddStringToObject(root, "device_key", nabla_context_device_key(ctx));
    cJSON_AddStringToObject(root, "dtype", nabla_dtype_name(opt.dtype));
    cJSON_AddNumberToObject(root, "head_dim", opt.head_dim);
    cJSON_AddStringToObject(root, "mode", opt.full ? "full" : "quick");
    if (dir) cJSON_AddStringToObject(root, "cache_dir", cache);
    else cJSON_AddNullToObject(root, "cache_dir");
    cJSON_AddItemToObject(root, "measurements", ui.measurements);
    cJSON_AddItemToObject(root, "winners", ui.winners);
    cJSON_AddItemToObject(root, "skipped", ui.skipped);
    ui.measurements = ui.winners = ui.skipped = NULL;
    cJSON_AddNumberToObject(root, "stored", sum.stored);
    cJSON_AddBoolToObject(root, "interrupted", sum.interrupted);
    cJSON_AddNumberToObject(root, "seconds", sum.seconds);
    if (st != NABLA_OK) cJSON_AddStringToObject(root, "error", nabla_last_error(ctx));
    int jrc = cli_json_print(root);
    if (!rc) rc = jrc;
  } else {
    printf("device   %s\n", device);
    printf("cache    %s\n", dir ? cache : "off (NABLACL_CACHE_DIR=off): results not stored");
    printf("\n%-10s %-7s %-30s %10s %10s  %-6s %s\n", "kernel", "class", "parameters", "ms", "default", "source",
           "stored");
    for (int i = 0; i < ui.rows; i++) printf("%s\n", ui.table[i]);
    printf("\n%d tuned, %d cached, %d skipped, %d stored in %.1f s\n", sum.results, sum.cached, sum.skipped,
           sum.stored, sum.seconds);
  }
  if (sum.interrupted) {
    cli_warn("interrupted: finished results are stored; run the same command again to resume");
    rc = 130;
  } else if (dir && sum.results > sum.stored) {
    cli_warn("%d results could not be written to %s", sum.results - sum.stored, cache);
  }
done:
  cJSON_Delete(ui.measurements);
  cJSON_Delete(ui.winners);
  cJSON_Delete(ui.skipped);
  nabla_context_destroy(ctx);
  return rc;
}
