/*
 * nablacl devices [--json] — lists every OpenCL device in NABLACL_DEVICE index order.
 *
 * The default device is the one nabla_context_create opens with no selector (the library's own
 * rule, nabla_device_choose): NABLACL_DEVICE when set, else the first GPU, accelerator, CPU.
 */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

static const char usage[] = "nablacl devices [--json]";

static const cli_option options[] = {
  {"--json", NULL, "print one JSON object {\"devices\": [...]}"},
};
enum { OPT_JSON, OPT_COUNT };

/* Index of the device a context without selector would open (the library's rule), or -1. */
static int default_device(void) {
  int index = -1;
  return nabla_device_choose(NULL, &index, NULL, 0) == NABLA_OK ? index : -1;
}

/* Space-separated attention variants the device supports (a context is opened to probe them;
 * the verdicts are cached on disk), or "?" when no context can be opened. */
static void device_variants(const nabla_device_info *d, char *buf, size_t len) {
  char sel[16];
  nabla_context *ctx = NULL;
  snprintf(sel, sizeof sel, "%d", d->index);
  snprintf(buf, len, "?");
  if (nabla_context_create(&ctx, sel, NULL, 0) != NABLA_OK) return;
  if (nabla_variant_list(ctx, buf, len) != NABLA_OK) snprintf(buf, len, "?");
  nabla_context_destroy(ctx);
}

static cJSON *device_json(const nabla_device_info *d, int is_default) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddNumberToObject(o, "index", d->index);
  cJSON_AddBoolToObject(o, "default", is_default);
  cJSON_AddStringToObject(o, "platform", d->platform);
  cJSON_AddStringToObject(o, "name", d->name);
  cJSON_AddStringToObject(o, "vendor", d->vendor);
  cJSON_AddStringToObject(o, "driver", d->driver);
  cJSON_AddStringToObject(o, "opencl_c", d->opencl_c);
  cJSON_AddStringToObject(o, "type", d->type);
  cJSON_AddNumberToObject(o, "compute_units", d->compute_units);
  cJSON_AddNumberToObject(o, "global_mem", (double)d->global_mem);
  cJSON_AddNumberToObject(o, "local_mem", (double)d->local_mem);
  cJSON_AddBoolToObject(o, "fp16", d->fp16);
  cJSON_AddBoolToObject(o, "fp64", d->fp64);
  cJSON_AddBoolToObject(o, "subgroups", d->subgroups);
  char variants[256];
  device_variants(d, variants, sizeof variants);
  cJSON *list = cJSON_AddArrayToObject(o, "variants");
  for (char *tok = strtok(variants, " "); list && tok; tok = strtok(NULL, " "))
    cJSON_AddItemToArray(list, cJSON_CreateString(tok));
  return o;
}

static int print_json(const nabla_device_info *devs, size_t count, int def) {
  cJSON *root = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(root, "devices");
  if (!list) {
    cJSON_Delete(root);
    cli_error("out of memory");
    return CLI_EXIT_RUNTIME;
  }
  for (size_t i = 0; i < count; i++) cJSON_AddItemToArray(list, device_json(&devs[i], (int)i == def));
  return cli_json_print(root);
}

static void print_human(const nabla_device_info *devs, size_t count, int def) {
  if (count == 0) printf("no OpenCL devices found\n");
  for (size_t i = 0; i < count; i++) {
    const nabla_device_info *d = &devs[i];
    printf("%s[%d] %s  (%s)\n", (int)i == def ? "*" : " ", d->index, d->name, d->type);
    printf("      platform   %s\n", d->platform);
    printf("      vendor     %s, driver %s, %s\n", d->vendor, d->driver, d->opencl_c);
    printf("      compute    %u units, global %.1f GiB, local %.0f KiB\n", d->compute_units,
           (double)d->global_mem / (1024.0 * 1024 * 1024), (double)d->local_mem / 1024.0);
    printf("      features   fp16 %s, fp64 %s, subgroups %s\n", d->fp16 ? "yes" : "no",
           d->fp64 ? "yes" : "no", d->subgroups ? "yes" : "no");
    char variants[256];
    device_variants(d, variants, sizeof variants);
    printf("      variants   %s\n", variants);
  }
  if (count) printf("* default device (NABLACL_DEVICE, else first GPU, accelerator, CPU: Intel's runtime, PoCL, other)\n");
  const char *sel = getenv("NABLACL_DEVICE");
  if (count && def < 0 && sel && *sel)
    printf("  NABLACL_DEVICE=%s matches no device: other commands will refuse to run\n", sel);
}

int cmd_devices(int argc, char **argv) {
  const char *values[OPT_COUNT];
  int rc = cli_parse(argc, argv, usage, options, OPT_COUNT, values);
  if (rc != CLI_PARSED) return rc == CLI_HELP_SHOWN ? CLI_EXIT_OK : rc;
  size_t cap = 0, count = 0;
  nabla_status st = nabla_devices_list(NULL, 0, &cap);
  if (st != NABLA_OK && st != NABLA_NO_DEVICE) {
    cli_lib_error(NULL, st, "listing OpenCL devices");
    return CLI_EXIT_RUNTIME;
  }
  nabla_device_info *devs = calloc(cap ? cap : 1, sizeof *devs);
  if (!devs) {
    cli_error("out of memory");
    return CLI_EXIT_RUNTIME;
  }
  st = cap ? nabla_devices_list(devs, cap, &count) : NABLA_OK;
  if (st != NABLA_OK) {
    cli_lib_error(NULL, st, "listing OpenCL devices");
    rc = CLI_EXIT_RUNTIME;
    goto done;
  }
  if (count > cap) count = cap;   /* a device appeared between the two calls */
  int def = default_device();
  if (values[OPT_JSON]) rc = print_json(devs, count, def);
  else print_human(devs, count, def);
done:
  free(devs);
  return rc;
}
