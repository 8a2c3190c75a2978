/*
 * Tests of the CLI's output files (tools/cli_outputs.c compiled in, the .npy library linked): targets
 * that are not regular files are refused, symbolic links are followed, the same file named
 * twice is refused, and a commit that fails half-way puts the user's previous files back.
 */
#include "../tools/cli_outputs.c"
#include "npy.h"

#include <dirent.h>
#include <stdarg.h>

#include "testutil.h"

static char last_error[4096];
static int errors;

/* The commands' message function, captured (cli_common.c is not linked here). */
void cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  errors++;
}

static int setup(void **state) {
  char *dir = malloc(4096);
  if (!dir || tu_temp_dir(dir, 4096, "cli-outputs") != 0) return -1;
  *state = dir;
  return 0;
}

static int teardown(void **state) {
  tu_remove_tree(*state);
  free(*state);
  return 0;
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  if (d) closedir(d);
  return n;
}

static void expect_text(const char *path, const char *text) {
  size_t len = 0;
  unsigned char *got = tu_slurp(path, &len);
  if (len != strlen(text) || memcmp(got, text, len) != 0) fail_msg("%s holds '%.*s', not '%s'", path, (int)len, got, text);
  free(got);
}

static void add_array(cli_outputs *set, const char *path) {
  const size_t shape[1] = {4};
  const int32_t data[4] = {1, 2, 3, 4};
  assert_int_equal(cli_outputs_add(set, "--out", path, NPY_I32, 1, shape, data), 0);
}

static void expect_array(const char *path) {
  npy_array a;
  char err[256];
  if (npy_read(path, &a, err, sizeof err) != 0) fail_msg("%s: %s", path, err);
  assert_int_equal(a.count, 4);
  assert_int_equal(((int32_t *)a.data)[3], 4);
  npy_free(&a);
}

/* A rename that fails after others succeeded: every previous file is back, nothing is left over. */
static void test_failed_commit_keeps_previous_files(void **state) {
  const char *dir = *state;
  char a[4200], b[4200], c[4200];
  tu_pathf(a, sizeof a, "%s/a.npy", dir);
  tu_pathf(b, sizeof b, "%s/b.npy", dir);
  tu_pathf(c, sizeof c, "%s/c.npy", dir);
  tu_spit(a, "old a", 5);
  tu_spit(c, "old c", 5);
  for (int failing = 1; failing < 3; failing++) {
    cli_outputs set;
    memset(&set, 0, sizeof set);
    add_array(&set, a);
    add_array(&set, b);
    add_array(&set, c);
    unlink(set.temp[failing]); /* its rename fails */
    errors = 0;
    assert_int_equal(cli_outputs_commit(&set), CLI_EXIT_RUNTIME);
    assert_int_equal(errors, 1);
    cli_outputs_discard(&set);
    expect_text(a, "old a");
    expect_text(c, "old c");
    assert_int_equal(access(b, F_OK), -1);
    assert_int_equal(count_entries(dir), 2);
  }
  /* And a commit that works replaces them all and leaves no kept copies behind. */
  cli_outputs set;
  memset(&set, 0, sizeof set);
  add_array(&set, a);
  add_array(&set, b);
  assert_int_equal(cli_outputs_commit(&set), 0);
  cli_outputs_discard(&set);
  expect_array(a);
  expect_array(b);
  assert_int_equal(count_entries(dir), 3);
}

/* Device nodes, FIFOs, directories and dangling links are refused; links are followed. */
static void test_targets_and_links(void **state) {
  const char *dir = *state;
  char fifo[4200], real[4200], link_path[4200], dangling[4200], sub[4200];
  tu_pathf(fifo, sizeof fifo, "%s/fifo.npy", dir);
  tu_pathf(real, sizeof real, "%s/real.npy", dir);
  tu_pathf(link_path, sizeof link_path, "%s/link.npy", dir);
  tu_pathf(dangling, sizeof dangling, "%s/dangling.npy", dir);
  tu_pathf(sub, sizeof sub, "%s/sub", dir);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  assert_int_equal(mkdir(sub, 0700), 0);
  assert_int_equal(cli_check_output_path("--out", fifo), CLI_EXIT_USAGE);
  assert_non_null(strstr(last_error, "not a regular file"));
  assert_int_equal(cli_check_output_path("--out", "/dev/null"), CLI_EXIT_USAGE);
  assert_int_equal(cli_check_output_path("--out", sub), CLI_EXIT_USAGE);
  assert_int_equal(symlink("missing.npy", dangling), 0);
  assert_int_equal(cli_check_output_path("--out", dangling), CLI_EXIT_USAGE);
  assert_non_null(strstr(last_error, "symbolic link to a missing file"));

  tu_spit(real, "old", 3);
  assert_int_equal(symlink("real.npy", link_path), 0);
  assert_int_equal(cli_check_output_path("--out", link_path), 0);
  cli_outputs set;
  memset(&set, 0, sizeof set);
  add_array(&set, link_path);
  assert_int_equal(cli_outputs_commit(&set), 0);
  cli_outputs_discard(&set);
  struct stat sb;
  assert_int_equal(lstat(link_path, &sb), 0);
  assert_true(S_ISLNK(sb.st_mode)); /* the link stays, */
  expect_array(real);               /* the file it names is replaced */
}

/* Two outputs, or an output and an input, naming one file (directly, through a link, a hard
 * link or another spelling of a name still to be created) are refused. */
static void test_same_file_twice(void **state) {
  const char *dir = *state;
  char q[4200], alias[4200], hard[4200], out[4200], out2[4200], other[4200];
  tu_pathf(q, sizeof q, "%s/q.npy", dir);
  tu_pathf(alias, sizeof alias, "%s/alias.npy", dir);
  tu_pathf(hard, sizeof hard, "%s/hard.npy", dir);
  tu_pathf(out, sizeof out, "%s/P_kv_indices.npy", dir);
  tu_pathf(out2, sizeof out2, "%s/./sub/../P_kv_indices.npy", dir);
  tu_pathf(other, sizeof other, "%s/O.npy", dir);
  tu_spit(q, "q", 1);
  assert_int_equal(symlink("q.npy", alias), 0);
  assert_int_equal(link(q, hard), 0);
  char sub[4200];
  tu_pathf(sub, sizeof sub, "%s/sub", dir);
  assert_int_equal(mkdir(sub, 0700), 0);
  const cli_named_file inputs[] = {{"--q", q}, {"--k", NULL}};
  const cli_named_file distinct[] = {{"--out", other}, {"--csr-out", out}};
  assert_int_equal(cli_check_distinct(distinct, 2, inputs, 2), 0);
  const cli_named_file *clashes[] = {
      (const cli_named_file[]){{"--out", out}, {"--csr-out", out2}},
      (const cli_named_file[]){{"--out", other}, {"--mask-out", q}},
      (const cli_named_file[]){{"--out", alias}, {"--mask-out", NULL}},
      (const cli_named_file[]){{"--out", hard}, {"--mask-out", other}},
  };
  for (size_t i = 0; i < sizeof clashes / sizeof *clashes; i++) {
    last_error[0] = '\0';
    assert_int_equal(cli_check_distinct(clashes[i], 2, inputs, 2), CLI_EXIT_USAGE);
    if (!strstr(last_error, "same file as")) fail_msg("case %zu: '%s'", i, last_error);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_failed_commit_keeps_previous_files, setup, teardown),
    cmocka_unit_test_setup_teardown(test_targets_and_links, setup, teardown),
    cmocka_unit_test_setup_teardown(test_same_file_twice, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
