/*
 * nablacl cache path|list|clear — where the on-disk caches are, what they hold, emptying them.
 *
 *   path    the cache root (NABLACL_CACHE_DIR, $XDG_CACHE_HOME/nablacl or ~/.cache/nablacl)
 *   list    every valid entry: kind, device, kernel, parameters, time, date
 *   clear   removes every entry (program binaries, tuning results and checkpoints, probe
 *           verdicts, tensor map templates)
 *
 * No OpenCL device is needed. Invalid or foreign files in the directory are skipped.
 */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

static const char usage[] =
    "nablacl cache path|list|clear [--json]\n\n"
    "  path    print the cache directory ('off' when caching is disabled)\n"
    "  list    every valid entry: kind, device, kernel, parameters, time, date\n"
    "  clear   remove every entry (program binaries, tuning results and checkpoints,\n"
    "          probe verdicts, tensor map templates)";

static const cli_option options[] = {
    {"--json", NULL, "print one JSON object"},
};
enum { O_JSON, O_COUNT };

/* The device name out of a description "platform|version|name|vendor|driver|version". */
static void device_name(const char *desc, char *buf, size_t len) {
  const char *s = desc;
  for (int i = 0; i < 2 && s; i++) {
    s = strchr(s, '|');
    if (s) s++;
  }
  if (!s) s = desc;
  size_t n = strcspn(s, "|");
  if (n >= len) n = len - 1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (!buf[0]) snprintf(buf, len, "-");
}

typedef struct {
  int json, count;
  cJSON *list;
} list_state;

/* Counts entries (for clear's report). */
static int count_entry(const nabla_cache_entry *e, void *user) {
  (void)e;
  ++*(int *)user;
  return 0;
}

static int on_entry(const nabla_cache_entry *e, void *user) {
  list_state *s = user;
  s->count++;
  if (s->json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "kind", e->kind);
    cJSON_AddStringToObject(o, "device", e->device);
    cJSON_AddStringToObject(o, "kernel", e->kernel);
    cJSON *params = strcmp(e->kind, "tuning") == 0 ? cJSON_Parse(e->params) : NULL;
    if (params) cJSON_AddItemToObject(o, "params", params);
    else cJSON_AddStringToObject(o, "params", e->params);
    if (*e->dtype) cJSON_AddStringToObject(o, "dtype", e->dtype);
    if (e->head_dim) cJSON_AddNumberToObject(o, "head_dim", e->head_dim);
    if (*e->shape_class) cJSON_AddStringToObject(o, "shape_class", e->shape_class);
    if (e->ms >= 0) cJSON_AddNumberToObject(o, "ms", e->ms);
    else cJSON_AddNullToObject(o, "ms");
    cJSON_AddStringToObject(o, "date", e->date);
    cJSON_AddNumberToObject(o, "bytes", (double)e->bytes);
    cJSON_AddStringToObject(o, "key", e->key);
    cJSON_AddItemToArray(s->list, o);
    return 0;
  }
  char dev[128], kernel[96], ms[32] = "-";
  device_name(e->device, dev, sizeof dev);
  if (*e->dtype) snprintf(kernel, sizeof kernel, "%s %s d%d %s", e->kernel, e->dtype, e->head_dim, e->shape_class);
  else snprintf(kernel, sizeof kernel, "%s", *e->kernel ? e->kernel : "-");
  if (e->ms >= 0) snprintf(ms, sizeof ms, "%.3f ms", e->ms);
  printf("%-16s %-28s %-28s %-40s %12s  %s\n", e->kind, dev, kernel, *e->params ? e->params : "-", ms, e->date);
  return 0;
}

int cmd_cache(int argc, char **argv) {
  /* The subcommand is the first argument; options follow it (or precede --help). */
  const char *sub = argc > 1 && strncmp(argv[1], "-", 1) != 0 ? argv[1] : NULL;
  char **rest = malloc(sizeof *rest * (size_t)(argc + 1));
  int nrest = 0, rc = 0;
  if (!rest) {
    cli_error("out of memory");
    return CLI_EXIT_RUNTIME;
  }
  rest[nrest++] = argv[0];
  for (int i = sub ? 2 : 1; i < argc; i++) rest[nrest++] = argv[i];
  rest[nrest] = NULL;
  const char *v[O_COUNT] = {0};
  rc = cli_parse(nrest, rest, usage, options, O_COUNT, v);
  free(rest);
  if (rc == CLI_HELP_SHOWN) return CLI_EXIT_OK;
  if (rc) return rc;
  if (!sub || (strcmp(sub, "path") && strcmp(sub, "list") && strcmp(sub, "clear"))) {
    if (sub) cli_error("unknown cache command '%s' (path, list or clear)", sub);
    else cli_error("missing cache command (path, list or clear); see 'nablacl cache --help'");
    return CLI_EXIT_USAGE;
  }
  int json = v[O_JSON] != NULL;
  char dir[4096];
  nabla_status st = nabla_cache_dir(dir, sizeof dir);
  if (st == NABLA_BUFFER_TOO_SMALL) {
    cli_error("the cache directory path is too long");
    return CLI_EXIT_RUNTIME;
  }
  int off = st == NABLA_NOT_FOUND;

  if (strcmp(sub, "path") == 0) {
    if (json) {
      cJSON *root = cJSON_CreateObject();
      if (off) cJSON_AddNullToObject(root, "path");
      else cJSON_AddStringToObject(root, "path", dir);
      cJSON_AddBoolToObject(root, "enabled", !off);
      return cli_json_print(root);
    }
    printf("%s\n", off ? "off" : dir);
    return CLI_EXIT_OK;
  }
  if (off) {
    cli_error("caching is off (NABLACL_CACHE_DIR=off, or no HOME)");
    return CLI_EXIT_RUNTIME;
  }
  if (strcmp(sub, "clear") == 0) {
    int entries = 0;
    if (nabla_cache_list(dir, count_entry, &entries) != NABLA_OK) entries = -1; /* unknown */
    st = nabla_cache_clear(dir);
    if (st != NABLA_OK) {
      cli_error("clearing %s: %s (some files could not be removed)", dir, nabla_status_str(st));
      return CLI_EXIT_RUNTIME;
    }
    if (json) {
      cJSON *root = cJSON_CreateObject();
      cJSON_AddStringToObject(root, "path", dir);
      cJSON_AddBoolToObject(root, "cleared", 1);
      if (entries >= 0) cJSON_AddNumberToObject(root, "entries_removed", entries);
      return cli_json_print(root);
    }
    if (entries >= 0) printf("cleared %s: %d entr%s removed\n", dir, entries, entries == 1 ? "y" : "ies");
    else printf("cleared %s\n", dir);
    return CLI_EXIT_OK;
  }
  list_state s = {json, 0, json ? cJSON_CreateArray() : NULL};
  if (!json)
    printf("%-16s %-28s %-28s %-40s %12s  %s\n", "kind", "device", "kernel", "parameters", "time", "date");
  st = nabla_cache_list(dir, on_entry, &s);
  if (st != NABLA_OK) {
    cJSON_Delete(s.list);
    cli_error("listing %s: %s", dir, nabla_status_str(st));
    return CLI_EXIT_RUNTIME;
  }
  if (json) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", dir);
    cJSON_AddItemToObject(root, "entries", s.list);
    return cli_json_print(root);
  }
  printf("%d entries in %s\n", s.count, dir);
  return CLI_EXIT_OK;
}
