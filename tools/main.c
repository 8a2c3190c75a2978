/*
 * nablacl — command-line front end of the nablacl library.
 *
 *   nablacl <command> [options]      run a command (each takes --help)
 *   nablacl --help | --version
 *
 * Each command lives in tools/cmd_<name>.c; adding one is one line in the table below.
 */
#include <stdio.h>
#include <string.h>

#include "cli_common.h"

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} cli_command;

static const cli_command commands[] = {
  {"devices", cmd_devices, "list OpenCL devices and their capabilities"},
  {"run", cmd_run, "run NABLA attention on Q/K/V .npy files (optionally check in float64)"},
  {"mask", cmd_mask, "build the NABLA block mask of Q/K .npy files; export it for FlexAttention"},
  {"demo", cmd_demo, "generate a video-like problem; compare sparse vs dense attention"},
  {"bench", cmd_bench, "time mask build, sparse and dense attention (median, event profiling)"},
  {"tune", cmd_tune, "autotune the kernels for a device; results go to the tuning cache"},
  {"cache", cmd_cache, "show the cache directory, list its entries or clear it"},
};

static void print_usage(FILE *out) {
  fprintf(out,
          "usage: nablacl <command> [options]\n"
          "       nablacl --help | --version\n\n"
          "NABLA block-sparse attention on any OpenCL device (library %s).\n\ncommands:\n",
          nabla_version_string());
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(out,
          "\n'nablacl <command> --help' describes a command's options.\n"
          "Exit status: 0 success, 1 runtime failure, 2 bad invocation (tune: 130 when interrupted).\n"
          "Environment: NABLACL_DEVICE (index, platform or device name substring, platform:NAME),\n"
          "             NABLACL_CACHE_DIR (dir or 'off'), NABLACL_VARIANT (force an attention kernel),\n"
          "             NABLACL_KERNEL_DIR (load .cl sources from a directory); the tensor-core\n"
          "             kernels' overrides are in the README.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_usage(stderr);
    return CLI_EXIT_USAGE;
  }
  const char *name = argv[1];
  if (strcmp(name, "help") == 0 && argc > 2) {   /* "nablacl help run" = "nablacl run --help" */
    char *help_argv[] = {argv[2], "--help", NULL};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
      if (strcmp(argv[2], commands[i].name) == 0) return commands[i].run(2, help_argv);
    name = argv[2];
  } else if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
    print_usage(stdout);
    return CLI_EXIT_OK;
  }
  if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
    printf("nablacl %s\n", nabla_version_string());
    return CLI_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(name, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
  cli_error("unknown command '%s' (see 'nablacl --help')", name);
  return CLI_EXIT_USAGE;
}
