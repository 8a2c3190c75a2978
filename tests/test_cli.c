/*
 * Tests of the `nablacl` tool, run as a separate process like a script would: bad arguments
 * fail with one "nablacl: ..." line and leave no output behind; good runs write .npy files of
 * the documented shapes and dtypes; --json output parses.
 *
 * The binary is $NABLACL_TEST_HELPER_DIR/../tools/nablacl (the tests' build dir is
 * NABLACL_TEST_HELPER_DIR); every test skips when it is missing.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "npy.h"

#ifdef NABLACL_HAVE_PNG
#include <png.h>
#endif

#define B_ 1
#define H_ 2
#define T_ 2
#define HT_ 16
#define WT_ 16
#define S_ (T_ * HT_ * WT_)
#define D_ 32
#define NB_ 8

typedef struct {
  char bin[1024];
  char dir[1024];       /* scratch root */
  char in[1100];        /* inputs */
  char out[1100];       /* outputs: must stay empty after every failure */
  int have_device;
} fixture;

typedef struct {
  int status;           /* exit code, or -1 when killed */
  char *out, *err;
} result;

/* ---- helpers ---------------------------------------------------------------------------- */

static void result_free(result *r) {
  free(r->out);
  free(r->err);
}

/* Runs the tool with argv (NULL-terminated, without the program name). */
static result run_tool(const fixture *fx, const char *const *args) {
  char out_path[4300], err_path[4300];
  snprintf(out_path, sizeof out_path, "%s/stdout.txt", fx->dir);
  snprintf(err_path, sizeof err_path, "%s/stderr.txt", fx->dir);
  const char *argv[64];
  int n = 0;
  argv[n++] = fx->bin;
  while (args[n - 1] && n < 63) {
    argv[n] = args[n - 1];
    n++;
  }
  argv[n] = NULL;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) _exit(126);
    dup2(o, 1);
    dup2(e, 2);
    execv(fx->bin, (char *const *)argv);
    _exit(127);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  size_t n_out, n_err;
  result r = {WIFEXITED(status) ? WEXITSTATUS(status) : -1, (char *)tu_slurp(out_path, &n_out),
              (char *)tu_slurp(err_path, &n_err)};
  return r;
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  if (!d) return -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static const char *in_path(const fixture *fx, const char *name, char *buf, size_t len) {
  snprintf(buf, len, "%s/%s", fx->in, name);
  return buf;
}

static const char *out_path(const fixture *fx, const char *name, char *buf, size_t len) {
  snprintf(buf, len, "%s/%s", fx->out, name);
  return buf;
}

static void write_input(const fixture *fx, const char *name, npy_dtype dtype, size_t seq,
                        const double *x) {
  char path[1400], err[256];
  size_t shape[4] = {B_, H_, seq, D_}, n = (size_t)B_ * H_ * seq * D_;
  nabla_dtype storage = dtype == NPY_F32 ? NABLA_F32 : dtype == NPY_F16 ? NABLA_F16 : NABLA_BF16;
  void *data = tu_pack(x, n, storage);
  assert_non_null(data);
  if (npy_write(in_path(fx, name, path, sizeof path), dtype, 4, shape, data, err, sizeof err) != 0)
    fail_msg("writing %s: %s", name, err);
  free(data);
}

/* An f32 input whose header text `from` is overwritten by `to` (same length). */
static void write_patched(const fixture *fx, const char *name, size_t S, const double *x, const char *from,
                          const char *to) {
  char path[1400], head[128];
  write_input(fx, name, NPY_F32, S, x);
  FILE *f = fopen(in_path(fx, name, path, sizeof path), "r+b");
  assert_non_null(f);
  assert_int_equal(fread(head, 1, sizeof head, f), sizeof head);
  char *at = strstr(head + 10, from);
  assert_non_null(at);
  assert_int_equal(strlen(from), strlen(to));
  fseek(f, at - head, SEEK_SET);
  fwrite(to, 1, strlen(to), f);
  fclose(f);
}

/* Inputs: video-like Q/K/V of every dtype in tile and raster order, and broken variants. */
static void write_inputs(const fixture *fx) {
  nabla_shape s = {B_, H_, S_, D_, T_, HT_, WT_};
  size_t n = (size_t)B_ * H_ * S_ * D_;
  double *x[3], *raster = malloc(n * sizeof(double));
  uint64_t seed = 42;
  const char *names[3] = {"q", "k", "v"};
  char name[64];
  for (int i = 0; i < 3; i++) {
    x[i] = malloc(n * sizeof(double));
    tu_fill_video_like(&s, raster, &seed, i < 2 ? 1.0 : 0.5);
    nabla_ref_reorder(&s, NABLA_RASTER_TO_TILE, raster, x[i]);
    snprintf(name, sizeof name, "%s_f32.npy", names[i]);
    write_input(fx, name, NPY_F32, S_, x[i]);
    snprintf(name, sizeof name, "%s_f16.npy", names[i]);
    write_input(fx, name, NPY_F16, S_, x[i]);
    snprintf(name, sizeof name, "%s_bf16_raster.npy", names[i]);
    write_input(fx, name, NPY_U16, S_, raster);
    snprintf(name, sizeof name, "%s_bf16.npy", names[i]);
    write_input(fx, name, NPY_U16, S_, x[i]);
  }
  write_input(fx, "k_short.npy", NPY_F32, S_ - 64, x[1]);
  /* Non-finite inputs: a NaN value, an infinite key (its block's pooled logits are ±Inf/NaN). */
  x[2][5 * D_ + 3] = NAN;
  write_input(fx, "v_nan.npy", NPY_F32, S_, x[2]);
  x[1][70 * D_ + 1] = INFINITY;
  write_input(fx, "k_inf.npy", NPY_F32, S_, x[1]);
  /* Valid files but for one header field: fortran_order True, and float64 (numpy's default
   * dtype, refused before its data is read). */
  write_patched(fx, "fortran.npy", S_, x[0], "False", "True ");
  write_patched(fx, "f8.npy", S_, x[0], "<f4", "<f8");
  for (int i = 0; i < 3; i++) free(x[i]);
  free(raster);
}

static int group_setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  const char *helper = getenv("NABLACL_TEST_HELPER_DIR");
  snprintf(fx->bin, sizeof fx->bin, "%s/../tools/nablacl", helper ? helper : ".");
  if (tu_temp_dir(fx->dir, sizeof fx->dir, "cli-test") != 0) return -1;
  snprintf(fx->in, sizeof fx->in, "%s/in", fx->dir);
  snprintf(fx->out, sizeof fx->out, "%s/out", fx->dir);
  mkdir(fx->in, 0777);
  mkdir(fx->out, 0777);
  nabla_context *ctx = tu_context();
  fx->have_device = ctx != NULL;
  nabla_context_destroy(ctx);
  *state = fx;
  if (access(fx->bin, X_OK) != 0) {
    print_message("%s not built: skipping CLI tests\n", fx->bin);
    return 0;
  }
  write_inputs(fx);
  return 0;
}

static int group_teardown(void **state) {
  fixture *fx = *state;
  tu_remove_tree(fx->dir);
  free(fx);
  return 0;
}

static void need_binary(const fixture *fx) {
  if (access(fx->bin, X_OK) != 0) skip();
}

static void need_device(const fixture *fx) {
  need_binary(fx);
  if (!fx->have_device) skip();
}

static void empty_out_dir(const fixture *fx) {
  DIR *d = opendir(fx->out);
  struct dirent *e;
  char p[1400];
  while (d && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", fx->out, e->d_name);
    unlink(p);
  }
  if (d) closedir(d);
}

/* A failure: the expected exit code, exactly one "nablacl: " line mentioning `needle` on
 * stderr, and nothing in the output directory. */
static void expect_failure(const fixture *fx, int code, const char *needle, const char *const *args) {
  empty_out_dir(fx);
  result r = run_tool(fx, args);
  size_t len = strlen(r.err);
  if (r.status != code || strncmp(r.err, "nablacl: ", 9) != 0 || len == 0 ||
      strchr(r.err, '\n') != r.err + len - 1 || !strstr(r.err, needle))
    fail_msg("%s ...: exit %d (want %d), stderr '%s' (want one line with '%s')", args[0],
             r.status, code, r.err, needle);
  if (count_entries(fx->out) != 0) fail_msg("'%s' left files in the output directory", needle);
  result_free(&r);
}

/* Standard run arguments over the f32 tile-order inputs; `extra` is appended. */
typedef struct {
  char q[1400], k[1400], v[1400], o[1400], m[1400], p[1400];
} run_paths;

static void default_paths(const fixture *fx, run_paths *p, const char *dtype_suffix) {
  char name[64];
  snprintf(name, sizeof name, "q_%s.npy", dtype_suffix);
  in_path(fx, name, p->q, sizeof p->q);
  snprintf(name, sizeof name, "k_%s.npy", dtype_suffix);
  in_path(fx, name, p->k, sizeof p->k);
  snprintf(name, sizeof name, "v_%s.npy", dtype_suffix);
  in_path(fx, name, p->v, sizeof p->v);
  out_path(fx, "O.npy", p->o, sizeof p->o);
  out_path(fx, "M.npy", p->m, sizeof p->m);
  out_path(fx, "P", p->p, sizeof p->p);
}

/* ---- tests: no device needed ------------------------------------------------------------ */

static void test_help_and_version(void **state) {
  fixture *fx = *state;
  need_binary(fx);
  const char *v[] = {"--version", NULL};
  result r = run_tool(fx, v);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, nabla_version_string()));
  result_free(&r);
  const char *h[] = {"--help", NULL};
  r = run_tool(fx, h);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "devices"));
  assert_non_null(strstr(r.out, "demo"));
  result_free(&r);
  const char *rh[] = {"run", "--help", NULL};
  r = run_tool(fx, rh);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "--mask-out"));
  result_free(&r);
  const char *mh[] = {"help", "mask", NULL};
  r = run_tool(fx, mh);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "--csr-out"));
  result_free(&r);
  const char *none[] = {NULL};
  r = run_tool(fx, none);
  assert_int_equal(r.status, 2);
  result_free(&r);
}

static void test_bad_arguments(void **state) {
  fixture *fx = *state;
  need_binary(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  char k_short[1400], fortran[1400], f8[1400], missing[1400], qb[1400], kb[1400], vb[1400], nodir[1400];
  in_path(fx, "k_short.npy", k_short, sizeof k_short);
  in_path(fx, "f8.npy", f8, sizeof f8);
  in_path(fx, "fortran.npy", fortran, sizeof fortran);
  in_path(fx, "nope.npy", missing, sizeof missing);
  in_path(fx, "q_bf16.npy", qb, sizeof qb);
  in_path(fx, "k_bf16.npy", kb, sizeof kb);
  in_path(fx, "v_bf16.npy", vb, sizeof vb);
  snprintf(nodir, sizeof nodir, "%s/no/such/dir/O.npy", fx->out);
#define RUN(...) ((const char *const[]){"run", "--q", p.q, "--k", p.k, "--v", p.v, __VA_ARGS__, NULL})
  expect_failure(fx, 2, "unknown command", (const char *const[]){"frobnicate", NULL});
  expect_failure(fx, 2, "--frobnicate", RUN("--algo", "nabla-0.7", "--frobnicate", "--out", p.o));
  expect_failure(fx, 2, "--algo", RUN("--algo", "nabla-x", "--out", p.o, "--mask-out", p.m));
  expect_failure(fx, 2, "--algo", RUN("--algo", "nabla-1.5", "--out", p.o));
  expect_failure(fx, 2, "--algo", RUN("--out", p.o));
  expect_failure(fx, 2, "--grid 3,12,20 has 720 tokens but Q has S=512",
                 RUN("--algo", "nabla-0.7", "--grid", "3,12,20", "--out", p.o));
  expect_failure(fx, 2, "--grid", RUN("--algo", "nabla-0.7", "--grid", "2,16", "--out", p.o));
  expect_failure(fx, 2, "--grid", RUN("--algo", "nabla-0.7", "--grid", "0,16,32", "--out", p.o));
  expect_failure(fx, 2, "--algo", RUN("--algo", "sta-3-3-3", "--out", p.o));
  expect_failure(fx, 2, "--order", RUN("--algo", "nabla-0.7", "--order", "diagonal", "--out", p.o));
  expect_failure(fx, 2, "--out", RUN("--algo", "nabla-0.7", "--out", fx->out));
  expect_failure(fx, 2, "--out", RUN("--algo", "nabla-0.7", "--out", nodir));
  expect_failure(fx, 2, "--out", RUN("--algo", "nabla-0.7", "--mask-out", p.m, "--out"));
  expect_failure(fx, 2, "--csr-out", RUN("--algo", "nabla-0.7", "--csr-out", nodir));
  expect_failure(fx, 2, "--algo", RUN("--algo", "nabla-0.7", "--algo", "dense"));
  expect_failure(fx, 2, "--dtype", RUN("--algo", "nabla-0.7", "--dtype", "bf16", "--out", p.o));
  expect_failure(fx, 2, "--dtype", RUN("--algo", "nabla-0.7", "--dtype", "f8", "--out", p.o));
  expect_failure(fx, 2, "unexpected argument", RUN("--algo", "nabla-0.7", "stray", "--out", p.o));
  expect_failure(fx, 2, "--warmup-ms", RUN("--algo", "nabla-0.7", "--warmup-ms", "-1", "--out", p.o));
  expect_failure(fx, 2, "--warmup-ms", RUN("--algo", "nabla-0.7", "--warmup-ms", "1s", "--out", p.o));
#undef RUN
  const char *const *cases[] = {
    (const char *const[]){"run", "--q", p.q, "--k", k_short, "--v", p.v, "--algo", "nabla-0.7",
                          "--out", p.o, NULL},
    (const char *const[]){"run", "--q", missing, "--k", p.k, "--v", p.v, "--algo", "nabla-0.7",
                          "--out", p.o, NULL},
    (const char *const[]){"run", "--q", fortran, "--k", p.k, "--v", p.v, "--algo", "nabla-0.7",
                          "--out", p.o, NULL},
    (const char *const[]){"run", "--q", p.q, "--k", p.k, "--v", f8, "--algo", "nabla-0.7",
                          "--out", p.o, NULL},
    (const char *const[]){"run", "--q", qb, "--k", kb, "--v", vb, "--algo", "nabla-0.7", "--out",
                          p.o, NULL},
    (const char *const[]){"run", "--q", qb, "--k", p.k, "--v", p.v, "--algo", "nabla-0.7",
                          "--dtype", "bf16", "--out", p.o, NULL},
  };
  const char *needles[] = {"--k", "--q", "Fortran", "unsupported dtype '<f8' (Q, K and V: '<f4', '<f2', or '<u2' holding bf16)",
                           "--dtype bf16", "--k"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    expect_failure(fx, 2, needles[i], cases[i]);
#define MASK(...) ((const char *const[]){"mask", "--q", p.q, "--k", p.k, __VA_ARGS__, NULL})
  expect_failure(fx, 2, "--k", (const char *const[]){"mask", "--q", p.q, "--algo", "nabla-0.7", "--mask-out", p.m, NULL});
  expect_failure(fx, 2, "--v", MASK("--v", p.v, "--algo", "nabla-0.7", "--mask-out", p.m));
  expect_failure(fx, 2, "--algo", MASK("--algo", "sta-3-3-3", "--mask-out", p.m));
  expect_failure(fx, 2, "--csr-out", MASK("--algo", "nabla-0.7", "--csr-out", nodir));
  expect_failure(fx, 2, "--mask-out", MASK("--algo", "nabla-0.7", "--mask-out", fx->out));
  expect_failure(fx, 2, "--repeat", MASK("--algo", "nabla-0.7", "--repeat", "0", "--mask-out", p.m));
  expect_failure(fx, 2, "--k", (const char *const[]){"mask", "--q", p.q, "--k", k_short, "--algo", "nabla-0.7",
                                                    "--mask-out", p.m, NULL});
#undef MASK
  expect_failure(fx, 2, "--dim", (const char *const[]){"demo", "--dim", "60", NULL});
  expect_failure(fx, 2, "--heads", (const char *const[]){"demo", "--heads", "0", NULL});
  expect_failure(fx, 2, "--json", (const char *const[]){"devices", "--json=1", NULL});
  expect_failure(fx, 2, "--warmup-ms", (const char *const[]){"bench", "--warmup-ms", "-5", NULL});
  expect_failure(fx, 2, "--warmup-ms", (const char *const[]){"bench", "--warmup-ms", "600001", NULL});
}

/* Hostile files: an input whose header claims far more than the file holds, outputs that are
 * not regular files, and outputs that are the same file as another output or an input. All
 * are refused before any work with one line naming the file. */
static void test_hostile_files(void **state) {
  fixture *fx = *state;
  need_binary(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  /* 136 bytes claiming 4e12 bytes of data: refused as truncated, nothing of that size asked for
   * (the sanitized build aborted on the allocation, the release build blamed memory). */
  char claim[1400], special[1400], fifo[1500], idx[1400], link_q[1500];
  in_path(fx, "claim.npy", claim, sizeof claim);
  FILE *f = fopen(claim, "wb");
  assert_non_null(f);
  char head[128];
  const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1000, 1000000, 1000), }";
  memset(head, ' ', sizeof head);
  memcpy(head, "\x93NUMPY\x01\x00\x76\x00", 10);
  memcpy(head + 10, dict, strlen(dict));
  head[127] = '\n';
  fwrite(head, 1, sizeof head, f);
  fwrite("12345678", 1, 8, f);
  fclose(f);
#define RUN(...) ((const char *const[]){"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.7", __VA_ARGS__, NULL})
  expect_failure(fx, 2, "claim.npy: truncated data: the header's shape needs 4000000000000 bytes, the file holds 8",
                 (const char *const[]){"run", "--q", claim, "--k", claim, "--v", claim, "--algo", "nabla-0.7",
                                       "--out", p.o, NULL});
  /* Outputs that are not regular files are never replaced (as root, /dev/null became a file). */
  snprintf(special, sizeof special, "%s/special", fx->dir);
  mkdir(special, 0777);
  snprintf(fifo, sizeof fifo, "%s/fifo.npy", special);
  assert_true(mkfifo(fifo, 0600) == 0 || errno == EEXIST);
  expect_failure(fx, 2, "is not a regular file", RUN("--out", fifo));
  expect_failure(fx, 2, "is not a regular file", RUN("--out", "/dev/null"));
  expect_failure(fx, 2, "is not a regular file", RUN("--out", p.o, "--mask-out", fifo));
  /* The same file twice: --csr-out's indices file is --out, an output is an input (also
   * through a symbolic link). */
  out_path(fx, "P_kv_indices.npy", idx, sizeof idx);
  expect_failure(fx, 2, "same file as --out", RUN("--out", idx, "--csr-out", p.p));
  expect_failure(fx, 2, "same file as --q", RUN("--out", p.q));
  snprintf(link_q, sizeof link_q, "%s/link_q.npy", special);
  assert_true(symlink(p.q, link_q) == 0 || errno == EEXIST);
  expect_failure(fx, 2, "same file as --q", RUN("--out", link_q));
  expect_failure(fx, 2, "same file as --k",
                 ((const char *const[]){"mask", "--q", p.q, "--k", p.k, "--algo", "nabla-0.7", "--mask-out", p.k, NULL}));
#undef RUN
}

/* An output through a symbolic link replaces the file the link names; the link stays. */
static void test_output_through_link(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  char dir[1400], real[1500], link_o[1500];
  snprintf(dir, sizeof dir, "%s/linked", fx->dir);
  mkdir(dir, 0777);
  snprintf(real, sizeof real, "%s/real.npy", dir);
  snprintf(link_o, sizeof link_o, "%s/link.npy", dir);
  tu_spit(real, "previous", 8);
  unlink(link_o);
  assert_int_equal(symlink("real.npy", link_o), 0);
  result r = run_tool(fx, (const char *const[]){"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.7",
                                                "--out", link_o, NULL});
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  result_free(&r);
  struct stat sb;
  assert_int_equal(lstat(link_o, &sb), 0);
  assert_true(S_ISLNK(sb.st_mode));
  npy_array o;
  char err[256] = "";
  if (npy_read(real, &o, err, sizeof err) != 0) fail_msg("%s: %s", real, err);
  assert_int_equal(o.count, (size_t)B_ * H_ * S_ * D_);
  npy_free(&o);
  assert_int_equal(count_entries(dir), 2);
}

/* A cache directory others can write is not used; the tool says so once, as a warning, and
 * the run succeeds. */
static void test_cache_refused_warns_once(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  char shared[1400];
  snprintf(shared, sizeof shared, "%s/shared-cache", fx->dir);
  mkdir(shared, 0777);
  assert_int_equal(chmod(shared, 0777), 0);
  tu_env saved = tu_env_save("NABLACL_CACHE_DIR");
  setenv("NABLACL_CACHE_DIR", shared, 1);
  result r = run_tool(fx, (const char *const[]){"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.7",
                                                "--out", p.o, NULL});
  tu_env_restore(&saved);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  const char *w = strstr(r.err, "nablacl: warning: disk cache off: cache directory");
  if (!w || !strstr(w, "writable by others") || strstr(w + 20, "disk cache off") || strchr(r.err, '\n') != r.err + strlen(r.err) - 1)
    fail_msg("stderr '%s' (want one warning line)", r.err);
  assert_int_equal(count_entries(shared), 0); /* nothing written there */
  result_free(&r);
  empty_out_dir(fx);
}

/* ---- tests: device ---------------------------------------------------------------------- */

static void test_devices_json(void **state) {
  fixture *fx = *state;
  need_device(fx);
  const char *args[] = {"devices", "--json", NULL};
  result r = run_tool(fx, args);
  assert_int_equal(r.status, 0);
  cJSON *root = cJSON_Parse(r.out);
  assert_non_null(root);
  cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "devices");
  assert_true(cJSON_IsArray(list));
  assert_true(cJSON_GetArraySize(list) >= 1);
  int defaults = 0;
  for (int i = 0; i < cJSON_GetArraySize(list); i++) {
    cJSON *d = cJSON_GetArrayItem(list, i);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(d, "name")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(d, "compute_units")));
    defaults += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "default"));
  }
  assert_int_equal(defaults, 1);
  cJSON_Delete(root);
  result_free(&r);
}

/* A selector that matches no device is a bad invocation (exit 2) naming where it came from;
 * `devices` still lists, with no default and a warning. */
static void test_device_selectors(void **state) {
  fixture *fx = *state;
  need_device(fx);
  expect_failure(fx, 2, "--device no-such-device", (const char *const[]){"demo", "--device", "no-such-device", NULL});
  expect_failure(fx, 2, "--device 999", (const char *const[]){"bench", "--device", "999", NULL});
  setenv("NABLACL_DEVICE", "no-such-device", 1);
  expect_failure(fx, 2, "NABLACL_DEVICE=no-such-device", (const char *const[]){"demo", NULL});
  result r = run_tool(fx, (const char *const[]){"devices", NULL});
  unsetenv("NABLACL_DEVICE");
  assert_int_equal(r.status, 0);
  if (strchr(r.out, '*') != strrchr(r.out, '*') || !strstr(r.out, "NABLACL_DEVICE=no-such-device matches no device"))
    fail_msg("devices with a selector matching nothing: '%s'", r.out);
  result_free(&r);
}

/* A knob out of range or a misspelt variant in the environment is a bad invocation: exit 2, one
 * line naming the variable and the valid values. */
static void test_bad_knobs(void **state) {
  fixture *fx = *state;
  need_device(fx);
  setenv("NABLACL_VARIANT", "wgma", 1);
  expect_failure(fx, 2, "NABLACL_VARIANT=wgma: no variant; valid: auto, portable", (const char *const[]){"demo", NULL});
  unsetenv("NABLACL_VARIANT");
  setenv("NABLACL_MMA_QPW", "3", 1);
  expect_failure(fx, 2, "NABLACL_MMA_QPW=3: not a whole number in 1..2", (const char *const[]){"bench", NULL});
  unsetenv("NABLACL_MMA_QPW");
}

static void expect_npy(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
                       npy_array *out) {
  char err[256] = "";
  if (npy_read(path, out, err, sizeof err) != 0) fail_msg("%s: %s", path, err);
  assert_int_equal(out->dtype, dtype);
  assert_int_equal(out->ndim, ndim);
  for (int i = 0; i < ndim; i++) assert_int_equal(out->shape[i], shape[i]);
}

static double json_number(cJSON *o, const char *key) {
  cJSON *item = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsNumber(item)) fail_msg("JSON lacks number '%s'", key);
  return item->valuedouble;
}

/* The mask, the FlexAttention export and blocks_kept agree with each other. */
static void check_mask_files(const run_paths *p, double kept) {
  size_t mshape[4] = {B_, H_, NB_, NB_};
  npy_array m, num, idx;
  char num_path[1500], idx_path[1500];
  snprintf(num_path, sizeof num_path, "%s_kv_num_blocks.npy", p->p);
  snprintf(idx_path, sizeof idx_path, "%s_kv_indices.npy", p->p);
  expect_npy(p->m, NPY_U8, 4, mshape, &m);
  expect_npy(num_path, NPY_I32, 3, mshape, &num);
  expect_npy(idx_path, NPY_I32, 4, mshape, &idx);
  const uint8_t *bits = m.data;
  const int32_t *n = num.data, *ix = idx.data;
  long total = 0;
  for (int row = 0; row < B_ * H_ * NB_; row++) {
    int c = 0;
    for (int j = 0; j < NB_; j++)
      if (bits[row * NB_ + j]) assert_int_equal(ix[row * NB_ + c++], j);
    assert_int_equal(n[row], c);
    assert_true(c >= 1);
    total += c;
  }
  assert_int_equal(total, (long)kept);
  npy_free(&m);
  npy_free(&num);
  npy_free(&idx);
}

static void test_good_run(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  empty_out_dir(fx);
  const char *args[] = {"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.5",
                        "--grid", "2,16,16", "--out", p.o, "--mask-out", p.m, "--csr-out", p.p,
                        "--check", "--json", NULL};
  result r = run_tool(fx, args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  cJSON *root = cJSON_Parse(r.out);
  assert_non_null(root);
  double density = json_number(root, "density"), kept = json_number(root, "blocks_kept");
  json_number(root, "mask_ms");
  json_number(root, "attn_ms");
  assert_true(density > 0.0 && density <= 1.0);
  assert_true(fabs(density - kept / (B_ * H_ * NB_ * NB_)) < 1e-9);
  cJSON *check = cJSON_GetObjectItemCaseSensitive(root, "check");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(check, "ok")));
  size_t oshape[4] = {B_, H_, S_, D_};
  npy_array o;
  expect_npy(p.o, NPY_F32, 4, oshape, &o);
  npy_free(&o);
  check_mask_files(&p, kept);
  assert_int_equal(count_entries(fx->out), 4);   /* O, M, two CSR files; no temps */
  cJSON_Delete(root);
  result_free(&r);
}

/* --check with non-finite inputs: they reach the output in the same places as in the float64
 * reference (and the mask keeps every block of an infinite key's rows), so the check passes;
 * each verdict is on its own line. */
static void test_check_non_finite(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  char v_nan[1400], k_inf[1400];
  in_path(fx, "v_nan.npy", v_nan, sizeof v_nan);
  in_path(fx, "k_inf.npy", k_inf, sizeof k_inf);
  const char *const cases[2][2] = {{p.k, v_nan}, {k_inf, p.v}};
  for (int c = 0; c < 2; c++) {
    const char *args[] = {"run", "--q", p.q, "--k", cases[c][0], "--v", cases[c][1], "--algo", "nabla-0.5",
                          "--grid", "2,16,16", "--check", NULL};
    result r = run_tool(fx, args);
    if (r.status != 0 || !strstr(r.out, "(tolerance ") || !strstr(r.out, "): ok\n") ||
        !strstr(r.out, "unexplained: ok\n"))
      fail_msg("case %d: exit %d, stdout '%s', stderr '%s'", c, r.status, r.out, r.err);
    result_free(&r);
  }
}

/* --mask-in: the attention uses the caller's mask, which --csr-out / --mask-out echo back. */
static void test_mask_in(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  char mask_path[1400], bad_path[1400], err[256];
  uint8_t bits[B_ * H_ * NB_ * NB_];
  long kept = 0;
  for (int i = 0; i < B_ * H_ * NB_ * NB_; i++) {
    int row = i / NB_, j = i % NB_;
    bits[i] = (j == row % NB_) || (j == (row * 3 + 1) % NB_); /* diagonal + one other block */
    kept += bits[i];
  }
  size_t mshape[4] = {B_, H_, NB_, NB_}, bad_shape[4] = {B_, H_, NB_, NB_ - 1};
  assert_int_equal(npy_write(in_path(fx, "mask_in.npy", mask_path, sizeof mask_path), NPY_U8, 4, mshape, bits, err, sizeof err), 0);
  assert_int_equal(npy_write(in_path(fx, "mask_bad.npy", bad_path, sizeof bad_path), NPY_U8, 4, bad_shape, bits, err, sizeof err), 0);
  const char *bad[] = {"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.5", "--grid", "2,16,16",
                       "--out", p.o, "--mask-in", bad_path, NULL};
  expect_failure(fx, 2, "--mask-in", bad);
  empty_out_dir(fx);
  const char *args[] = {"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.5", "--grid", "2,16,16",
                        "--mask-in", mask_path, "--out", p.o, "--mask-out", p.m, "--csr-out", p.p,
                        "--repeat", "2", "--check", "--json", NULL};
  result r = run_tool(fx, args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  cJSON *root = cJSON_Parse(r.out);
  assert_non_null(root);
  cJSON *check = cJSON_GetObjectItemCaseSensitive(root, "check");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(check, "ok")));
  check_mask_files(&p, (double)kept);
  npy_array m;
  expect_npy(p.m, NPY_U8, 4, mshape, &m);
  assert_memory_equal(m.data, bits, sizeof bits);
  npy_free(&m);
  cJSON_Delete(root);
  result_free(&r);
}

/* bf16 in raster order gives the raster reorder of the tile-order run, bit for bit. */
static void test_raster_bf16_matches_tile(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p, pr;
  default_paths(fx, &p, "bf16");
  default_paths(fx, &pr, "bf16_raster");
  char o_tile[1400], o_raster[1400];
  out_path(fx, "tile.npy", o_tile, sizeof o_tile);
  out_path(fx, "raster.npy", o_raster, sizeof o_raster);
  empty_out_dir(fx);
  const char *tile[] = {"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.7_sta-1-3-3",
                        "--grid", "2,16,16", "--dtype", "bf16", "--out", o_tile, NULL};
  const char *raster[] = {"run", "--q", pr.q, "--k", pr.k, "--v", pr.v, "--algo",
                          "nabla-0.7_sta-1-3-3", "--grid", "2,16,16", "--dtype", "bf16",
                          "--order", "raster", "--out", o_raster, "--check", NULL};
  result r = run_tool(fx, tile);
  if (r.status != 0) fail_msg("tile run: exit %d: %s", r.status, r.err);
  result_free(&r);
  r = run_tool(fx, raster);
  if (r.status != 0) fail_msg("raster run: exit %d: %s", r.status, r.err);
  assert_non_null(strstr(r.out, "density"));
  result_free(&r);
  size_t shape[4] = {B_, H_, S_, D_}, n = (size_t)B_ * H_ * S_ * D_;
  npy_array a, b;
  expect_npy(o_tile, NPY_U16, 4, shape, &a);
  expect_npy(o_raster, NPY_U16, 4, shape, &b);
  nabla_shape s = {B_, H_, S_, D_, T_, HT_, WT_};
  double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *z = malloc(n * sizeof *z);
  tu_unpack(a.data, n, NABLA_BF16, x);
  tu_unpack(b.data, n, NABLA_BF16, y);
  nabla_ref_reorder(&s, NABLA_TILE_TO_RASTER, x, z);
  assert_true(tu_max_abs_diff(z, y, n) == 0.0);
  free(x);
  free(y);
  free(z);
  npy_free(&a);
  npy_free(&b);
}

/* mask: the same block mask as run's for the same inputs, exports that agree with each other,
 * per-head and per-row figures that match the exported bitmap, and raster-order inputs that
 * give the tile-order mask. */
static void test_mask_command(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p, pr;
  default_paths(fx, &p, "bf16");
  default_paths(fx, &pr, "bf16_raster");
  char run_mask[1400], raster_mask[1400];
  out_path(fx, "run_mask.npy", run_mask, sizeof run_mask);
  out_path(fx, "raster_mask.npy", raster_mask, sizeof raster_mask);
  empty_out_dir(fx);
  const char *algo = "nabla-0.6_sta-1-3-3";
  const char *by_run[] = {"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", algo, "--grid", "2,16,16",
                          "--dtype", "bf16", "--mask-out", run_mask, NULL};
  result r = run_tool(fx, by_run);
  if (r.status != 0) fail_msg("run: exit %d: %s", r.status, r.err);
  result_free(&r);
  const char *by_mask[] = {"mask", "--q", p.q, "--k", p.k, "--algo", algo, "--grid", "2,16,16",
                           "--dtype", "bf16", "--mask-out", p.m, "--csr-out", p.p, "--repeat", "2",
                           "--check", "--json", NULL};
  r = run_tool(fx, by_mask);
  if (r.status != 0) fail_msg("mask: exit %d: %s", r.status, r.err);
  cJSON *root = cJSON_Parse(r.out);
  assert_non_null(root);
  double kept = json_number(root, "blocks_kept"), density = json_number(root, "density");
  json_number(root, "mask_ms");
  assert_true(fabs(density - kept / (B_ * H_ * NB_ * NB_)) < 1e-9);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "check"), "ok")));
  check_mask_files(&p, kept);
  size_t mshape[4] = {B_, H_, NB_, NB_};
  npy_array m, mr;
  expect_npy(p.m, NPY_U8, 4, mshape, &m);
  expect_npy(run_mask, NPY_U8, 4, mshape, &mr);
  assert_memory_equal(m.data, mr.data, m.count);
  /* The spreads, recomputed from the bitmap. */
  const uint8_t *bits = m.data;
  double hmin = 1, hmax = 0, rmin = NB_, rmax = 0;
  for (int h = 0; h < B_ * H_; h++) {
    int hk = 0;
    for (int i = 0; i < NB_; i++) {
      int rk = 0;
      for (int j = 0; j < NB_; j++) rk += bits[(h * NB_ + i) * NB_ + j];
      rmin = fmin(rmin, rk), rmax = fmax(rmax, rk), hk += rk;
    }
    hmin = fmin(hmin, (double)hk / (NB_ * NB_)), hmax = fmax(hmax, (double)hk / (NB_ * NB_));
  }
  cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_density");
  cJSON *rb = cJSON_GetObjectItemCaseSensitive(root, "row_blocks");
  assert_true(fabs(json_number(hd, "min") - hmin) < 1e-12 && fabs(json_number(hd, "max") - hmax) < 1e-12);
  assert_true(json_number(rb, "min") == rmin && json_number(rb, "max") == rmax);
  assert_true(fabs(json_number(rb, "mean") - kept / (B_ * H_ * NB_)) < 1e-9);
  cJSON_Delete(root);
  result_free(&r);
  const char *raster[] = {"mask", "--q", pr.q, "--k", pr.k, "--algo", algo, "--grid", "2,16,16",
                          "--dtype", "bf16", "--order", "raster", "--mask-out", raster_mask, NULL};
  r = run_tool(fx, raster);
  if (r.status != 0) fail_msg("raster mask: exit %d: %s", r.status, r.err);
  assert_non_null(strstr(r.out, "per head"));
  npy_array mra;
  expect_npy(raster_mask, NPY_U8, 4, mshape, &mra);
  assert_memory_equal(mra.data, m.data, m.count);
  assert_int_equal(count_entries(fx->out), 5); /* M, two CSR files, run's and raster's masks */
  npy_free(&m);
  npy_free(&mr);
  npy_free(&mra);
  result_free(&r);
}

/* The AMD matrix-core kernel with its matrix instructions emulated, chosen through
 * NABLACL_VARIANT, passes --check: batch 2, a ragged 3x9x13 grid, head dims 64 and 128, f16 and
 * bf16 (each variant gets two of the four combinations, the two variants all four). */
static void test_amd_emulated_check(void **state) {
  fixture *fx = *state;
  need_device(fx);
  const struct {
    const char *variant;
    npy_dtype dtype;
    int d;
  } cases[] = {{"amd-mfma-emulated", NPY_F16, 64}, {"amd-mfma-emulated", NPY_U16, 128},
               {"amd-wmma-emulated", NPY_U16, 64}, {"amd-wmma-emulated", NPY_F16, 128}};
  const size_t B = 2, H = 2, S = 3 * 9 * 13;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const size_t n = B * H * S * (size_t)cases[c].d, shape[4] = {B, H, S, (size_t)cases[c].d};
    const nabla_dtype storage = cases[c].dtype == NPY_F16 ? NABLA_F16 : NABLA_BF16;
    char paths[3][1400], err[256];
    const char *names[3] = {"amd_q.npy", "amd_k.npy", "amd_v.npy"};
    double *x = malloc(n * sizeof(double));
    uint64_t seed = 900 + c;
    assert_non_null(x);
    for (int i = 0; i < 3; i++) {
      tu_fill_normal(x, n, &seed, 1.0);
      void *data = tu_pack(x, n, storage);
      assert_non_null(data);
      if (npy_write(out_path(fx, names[i], paths[i], sizeof paths[i]), cases[c].dtype, 4, shape, data, err,
                    sizeof err) != 0)
        fail_msg("writing %s: %s", names[i], err);
      free(data);
    }
    free(x);
    const char *args[] = {"run", "--q", paths[0], "--k", paths[1], "--v", paths[2], "--algo", "nabla-0.5",
                          "--grid", "3,9,13", "--dtype", storage == NABLA_F16 ? "f16" : "bf16", "--check",
                          "--json", NULL};
    setenv("NABLACL_VARIANT", cases[c].variant, 1);
    result r = run_tool(fx, args);
    unsetenv("NABLACL_VARIANT");
    if (r.status != 0) fail_msg("%s: exit %d: %s", cases[c].variant, r.status, r.err);
    cJSON *root = cJSON_Parse(r.out);
    assert_non_null(root);
    const cJSON *variant = cJSON_GetObjectItemCaseSensitive(root, "variant");
    if (!cJSON_IsString(variant) || strcmp(variant->valuestring, cases[c].variant) != 0)
      fail_msg("ran %s, expected %s", cJSON_IsString(variant) ? variant->valuestring : "?", cases[c].variant);
    cJSON *check = cJSON_GetObjectItemCaseSensitive(root, "check");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(check, "ok")));
    cJSON_Delete(root);
    result_free(&r);
    empty_out_dir(fx);
  }
}

#ifdef NABLACL_HAVE_PNG
/* Decodes an 8-bit RGB PNG; the caller frees *rgb. */
static void read_png(const char *path, uint8_t **rgb, int *w, int *h) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path)) fail_msg("%s: %s", path, img.message);
  img.format = PNG_FORMAT_RGB;
  *w = (int)img.width;
  *h = (int)img.height;
  *rgb = malloc(PNG_IMAGE_SIZE(img));
  assert_non_null(*rgb);
  if (!png_image_finish_read(&img, NULL, *rgb, 0, NULL)) fail_msg("%s: %s", path, img.message);
}
#endif

/* --png: the picture of the chosen head decodes to the library's pixels of the --mask-out
 * bitmap; bad picture options fail before any output. */
static void test_mask_png(void **state) {
  fixture *fx = *state;
  run_paths p;
  default_paths(fx, &p, "bf16");
  char png[1400];
  out_path(fx, "mask.png", png, sizeof png);
  const char *grid = "2,16,16", *algo = "nabla-0.5";
#ifndef NABLACL_HAVE_PNG
  need_binary(fx);
  const char *without[] = {"mask", "--q", p.q, "--k", p.k, "--algo", algo, "--grid", grid, "--dtype",
                           "bf16", "--png", png, NULL};
  expect_failure(fx, 2, "built without libpng", without);
#else
  need_binary(fx);
  const char *bad_head[] = {"mask", "--q", p.q, "--k", p.k, "--algo", algo, "--grid", grid, "--dtype",
                            "bf16", "--png", png, "--png-head", "2", NULL};
  expect_failure(fx, 2, "--png-head", bad_head);
  const char *bad_cell[] = {"mask", "--q", p.q, "--k", p.k, "--algo", algo, "--grid", grid, "--dtype",
                            "bf16", "--png", png, "--png-cell", "0", NULL};
  expect_failure(fx, 2, "--png-cell", bad_cell);
  const char *no_png[] = {"mask", "--q", p.q, "--k", p.k, "--algo", algo, "--grid", grid, "--dtype",
                          "bf16", "--png-head", "1", NULL};
  expect_failure(fx, 2, "need --png", no_png);
  need_device(fx);
  empty_out_dir(fx);
  const char *good[] = {"mask", "--q", p.q, "--k", p.k, "--algo", algo, "--grid", grid, "--dtype", "bf16",
                        "--mask-out", p.m, "--png", png, "--png-head", "1", "--png-cell", "3", NULL};
  result r = run_tool(fx, good);
  if (r.status != 0) fail_msg("mask --png: exit %d: %s", r.status, r.err);
  result_free(&r);
  size_t mshape[4] = {B_, H_, NB_, NB_};
  npy_array m;
  expect_npy(p.m, NPY_U8, 4, mshape, &m);
  uint8_t *pix = NULL;
  int w = 0, h = 0;
  read_png(png, &pix, &w, &h);
  /* Geometry: 8 blocks of 3 px, a 6 px gap, a 32 px bar. */
  assert_int_equal(h, NB_ * 3);
  assert_int_equal(w, NB_ * 3 + 6 + 32);
  const nabla_shape shape = {B_, H_, S_, D_, T_, HT_, WT_};
  size_t bytes = (size_t)w * h * 3;
  uint8_t *want = malloc(bytes);
  assert_non_null(want);
  int w2 = 0, h2 = 0;
  assert_int_equal(nabla_mask_picture(&shape, m.data, 0, 1, 3, want, bytes, &w2, &h2, NULL, 0), NABLA_OK);
  assert_memory_equal(pix, want, bytes);
  /* Independently of the library: a kept block is blue, a dropped one white. */
  const uint8_t *bits = (const uint8_t *)m.data + (size_t)NB_ * NB_;  /* head 1 */
  for (int i = 0; i < NB_; i++)
    for (int j = 0; j < NB_; j++) {
      const uint8_t *px = pix + ((size_t)(i * 3 + 1) * w + (size_t)(j * 3 + 1)) * 3;
      assert_int_equal(px[0], bits[i * NB_ + j] ? 31 : 255);
    }
  free(want);
  free(pix);
  npy_free(&m);
  assert_int_equal(count_entries(fx->out), 2);
#endif
}

/* A plain sequence in fp16, dense, human output. */
static void test_plain_sequence_f16(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p;
  default_paths(fx, &p, "f16");
  empty_out_dir(fx);
  const char *args[] = {"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "dense", "--out",
                        p.o, "--check", NULL};
  result r = run_tool(fx, args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  assert_non_null(strstr(r.out, "100.00 %"));
  size_t shape[4] = {B_, H_, S_, D_};
  npy_array o;
  expect_npy(p.o, NPY_F16, 4, shape, &o);
  npy_free(&o);
  result_free(&r);
}

static void test_demo_small(void **state) {
  fixture *fx = *state;
  need_device(fx);
  const char *args[] = {"demo", "--grid", "2,16,24", "--heads", "2", "--dim", "32", "--dtype",
                        "f16", "--json", NULL};
  result r = run_tool(fx, args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  cJSON *root = cJSON_Parse(r.out);
  assert_non_null(root);
  double density = json_number(root, "density");
  assert_true(density > 0.0 && density < 1.0);
  json_number(root, "dense_ms");
  json_number(root, "max_abs_err_vs_dense");
  cJSON *ref = cJSON_GetObjectItemCaseSensitive(root, "reference");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ref, "ok")));
  cJSON_Delete(root);
  result_free(&r);
}

/* run_tool, and the wall time it took in *ms. */
static result run_tool_timed(const fixture *fx, const char *const *args, double *ms) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  result r = run_tool(fx, args);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *ms = 1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec);
  return r;
}

/* run --warmup-ms warms attention for at least that long before timing it. */
static void test_run_warmup(void **state) {
  fixture *fx = *state;
  need_device(fx);
  run_paths p;
  default_paths(fx, &p, "f32");
  const char *args[] = {"run", "--q", p.q, "--k", p.k, "--v", p.v, "--algo", "nabla-0.5",
                        "--grid", "2,16,16", "--warmup-ms", "500", NULL};
  double wall_ms = 0.0;
  result r = run_tool_timed(fx, args, &wall_ms);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  assert_true(wall_ms >= 500.0);
  result_free(&r);
}

/* bench --json reports every figure, and --warmup-ms warms each of the three figures (mask
 * build, sparse and dense attention) for at least that long before timing it. */
/* Without --warmup-ms every figure gets one untimed run, not seconds of warm-up: the field was
 * left uninitialized and `bench` on PoCL spent about 33 s warming up each of its three figures. */
static void test_bench_default_warmup(void **state) {
  fixture *fx = *state;
  need_device(fx);
  const char *args[] = {"bench", "--grid", "2,8,8", "--heads", "1", "--dim", "32", "--repeat", "1", "--json", NULL};
  double wall_ms = 0.0;
  result r = run_tool_timed(fx, args, &wall_ms);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  cJSON *root = cJSON_Parse(r.out);
  assert_non_null(root);
  cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
  assert_int_equal((int)json_number(cfg, "warmup_ms"), 0);
  /* Kernel builds are cached by now; the figures themselves take milliseconds. */
  if (wall_ms > 15000.0) fail_msg("bench took %.0f ms", wall_ms);
  print_message("bench without --warmup-ms: %.0f ms wall\n", wall_ms);
  cJSON_Delete(root);
  result_free(&r);
}

static void test_bench_warmup(void **state) {
  fixture *fx = *state;
  need_device(fx);
  const char *args[] = {"bench", "--grid", "2,8,8", "--heads", "1", "--dim", "32", "--repeat", "2",
                        "--warmup-ms", "400", "--json", NULL};
  double wall_ms = 0.0;
  result r = run_tool_timed(fx, args, &wall_ms);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  assert_true(wall_ms >= 3 * 400.0);
  cJSON *root = cJSON_Parse(r.out);
  assert_non_null(root);
  assert_true(json_number(root, "mask_ms") > 0.0);
  assert_true(json_number(root, "sparse_ms") > 0.0);
  assert_true(json_number(root, "dense_ms") > 0.0);
  cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
  assert_int_equal((int)json_number(cfg, "warmup_ms"), 400);
  assert_int_equal((int)json_number(cfg, "repeat"), 2);
  cJSON_Delete(root);
  result_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_help_and_version),
    cmocka_unit_test(test_bad_arguments),
    cmocka_unit_test(test_hostile_files),
    cmocka_unit_test(test_output_through_link),
    cmocka_unit_test(test_cache_refused_warns_once),
    cmocka_unit_test(test_devices_json),
    cmocka_unit_test(test_device_selectors),
    cmocka_unit_test(test_bad_knobs),
    cmocka_unit_test(test_good_run),
    cmocka_unit_test(test_mask_in),
    cmocka_unit_test(test_check_non_finite),
    cmocka_unit_test(test_raster_bf16_matches_tile),
    cmocka_unit_test(test_mask_command),
    cmocka_unit_test(test_mask_png),
    cmocka_unit_test(test_plain_sequence_f16),
    cmocka_unit_test(test_amd_emulated_check),
    cmocka_unit_test(test_demo_small),
    cmocka_unit_test(test_run_warmup),
    cmocka_unit_test(test_bench_warmup),
    cmocka_unit_test(test_bench_default_warmup),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
