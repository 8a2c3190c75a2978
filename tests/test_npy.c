/* Tests of the CLI's .npy reader/writer (tools/npy.c, the nabla_npy library). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "npy.h"

/* The reader's allocations are watched (-Wl,--wrap=malloc,--wrap=realloc for this test): a
 * header's claim must be checked against the file before anything of its size is requested. */
static size_t largest_request;
void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n) {
  if (n > largest_request) largest_request = n;
  return __real_malloc(n);
}
void *__wrap_realloc(void *p, size_t n) {
  if (n > largest_request) largest_request = n;
  return __real_realloc(p, n);
}
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------------------- */

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

/* The test's private directory (tu_dir). */
static const char *test_dir(void **state) { return ((tu_dir *)*state)->dir; }


static char *join_path(const char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  assert_non_null(p);
  sprintf(p, "%s/%s", dir, name);
  return p;
}

/* Writes raw bytes: a prelude of the given version, a header text (padded to 64), data. */
static void write_raw(const char *path, int major, const char *dict, const void *data,
                      size_t bytes, int pad) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  size_t prelude = major == 1 ? 10 : 12, len = strlen(dict) + 1;
  if (pad) len = (prelude + len + 63) / 64 * 64 - prelude;
  unsigned char pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
  for (size_t i = 0; i < prelude - 8; i++) pre[8 + i] = (unsigned char)(len >> (8 * i));
  fwrite(pre, 1, prelude, f);
  fwrite(dict, 1, strlen(dict), f);
  for (size_t i = strlen(dict); i + 1 < len; i++) fputc(' ', f);
  fputc('\n', f);
  if (bytes) fwrite(data, 1, bytes, f);
  fclose(f);
}

static void expect_read_error_rc(const char *path, const char *needle, int rc) {
  npy_array a;
  char err[512] = "";
  assert_int_equal(npy_read(path, &a, err, sizeof err), rc);
  assert_null(a.data);
  if (!strstr(err, needle)) fail_msg("error '%s' lacks '%s'", err, needle);
}

static void expect_read_error(const char *path, const char *needle) { expect_read_error_rc(path, needle, -1); }

/* ---- tests ------------------------------------------------------------------------------ */

static void test_round_trip_every_dtype(void **state) {
  const npy_dtype dtypes[] = {NPY_F32, NPY_F16, NPY_U16, NPY_U8, NPY_I32};
  const size_t shape[4] = {2, 3, 5, 7};
  char *path = join_path(test_dir(state), "x.npy");
  for (size_t t = 0; t < sizeof dtypes / sizeof dtypes[0]; t++)
    for (int ndim = 0; ndim <= 4; ndim++) {
      size_t count = 1, size = npy_dtype_size(dtypes[t]);
      for (int i = 0; i < ndim; i++) count *= shape[i];
      unsigned char *data = malloc(count * size);
      assert_non_null(data);
      for (size_t i = 0; i < count * size; i++) data[i] = (unsigned char)(i * 37 + t);
      char err[256] = "";
      assert_int_equal(npy_write(path, dtypes[t], ndim, shape, data, err, sizeof err), 0);
      npy_array a;
      assert_int_equal(npy_read(path, &a, err, sizeof err), 0);
      assert_int_equal(a.dtype, dtypes[t]);
      assert_int_equal(a.ndim, ndim);
      assert_int_equal(a.count, count);
      for (int i = 0; i < ndim; i++) assert_int_equal(a.shape[i], shape[i]);
      assert_memory_equal(a.data, data, count * size);
      npy_free(&a);
      free(data);
    }
  assert_int_equal(count_entries(test_dir(state)), 1);   /* no temp files left behind */
  free(path);
}

static void test_header_is_padded_to_64(void **state) {
  char *path = join_path(test_dir(state), "pad.npy");
  const size_t shape[1] = {3};
  const float data[3] = {1.0f, 2.0f, 3.0f};
  assert_int_equal(npy_write(path, NPY_F32, 1, shape, data, NULL, 0), 0);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  unsigned char buf[256];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
  size_t hlen = buf[8] | (size_t)buf[9] << 8;
  assert_int_equal((10 + hlen) % 64, 0);
  assert_int_equal(n, 10 + hlen + sizeof data);
  assert_int_equal(buf[10 + hlen - 1], '\n');
  assert_memory_equal(buf + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 57);
  assert_memory_equal(buf + 10 + hlen, data, sizeof data);
  free(path);
}

static void test_reads_version_2_and_3(void **state) {
  char *path = join_path(test_dir(state), "v2.npy");
  const uint16_t data[6] = {1, 2, 3, 4, 5, 6};
  for (int major = 2; major <= 3; major++) {
    write_raw(path, major, "{\"descr\": \"<u2\", \"fortran_order\": False, \"shape\": (2, 3)}",
              data, sizeof data, 1);
    npy_array a;
    char err[256] = "";
    assert_int_equal(npy_read(path, &a, err, sizeof err), 0);
    assert_int_equal(a.dtype, NPY_U16);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 3);
    assert_memory_equal(a.data, data, sizeof data);
    npy_free(&a);
  }
  free(path);
}

static void test_accepts_header_variants(void **state) {
  npy_array a;
  char err[256] = "";
  memset(&a, 0, sizeof a);
  const char *ok[] = {
    "{'shape': (4L, 2L), 'fortran_order': False, 'descr': '|u1'}",
    "{ 'descr' : '<u1' , 'fortran_order' : False , 'shape' : ( 4 , 2 , ) , }",
    "{'descr': '<i4', 'fortran_order': False, 'shape': (), }",
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    memset(&a, 0, sizeof a);
    if (npy_parse_header(ok[i], strlen(ok[i]), &a, err, sizeof err) != 0)
      fail_msg("'%s' rejected: %s", ok[i], err);
  }
  assert_int_equal(a.ndim, 0);
  assert_int_equal(a.count, 1);
  (void)state;
}

static void test_rejects_bad_files(void **state) {
  char *path = join_path(test_dir(state), "bad.npy");
  const float data[4] = {0};
  FILE *f = fopen(path, "wb");
  fputs("PK\x03\x04 this is a zip, not an npy", f);
  fclose(f);
  expect_read_error(path, "bad magic");
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data, 16, 1);
  expect_read_error(path, "Fortran");
  write_raw(path, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }", data, 16, 1);
  expect_read_error(path, "big-endian");
  write_raw(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", data, 16, 1);
  expect_read_error_rc(path, "unsupported dtype '<f8'", NPY_EDTYPE);
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", data, 12, 1);
  expect_read_error(path, "truncated");
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data, 16, 1);
  expect_read_error(path, "longer");
  write_raw(path, 1, "{'descr': '<f4', 'shape': (4,), }", data, 16, 1);
  expect_read_error(path, "fortran_order");
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, x), }", data, 16, 1);
  expect_read_error(path, "shape");
  write_raw(path, 7, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data, 16, 1);
  expect_read_error(path, "version");
  f = fopen(path, "wb");
  fwrite("\x93NUMPY\x01\x00\x40\x00{'descr'", 1, 17, f);   /* header cut short */
  fclose(f);
  expect_read_error(path, "truncated");
  free(path);
  char *missing = join_path(test_dir(state), "does-not-exist.npy");
  expect_read_error(missing, "cannot open");
  free(missing);
}

static void test_failed_write_leaves_nothing(void **state) {
  const size_t shape[2] = {2, 2};
  const int32_t data[4] = {1, 2, 3, 4};
  char err[256] = "";
  char *nodir = join_path(test_dir(state), "no-such-dir/out.npy");
  assert_int_equal(npy_write(nodir, NPY_I32, 2, shape, data, err, sizeof err), -1);
  assert_true(strlen(err) > 0);
  char *sub = join_path(test_dir(state), "sub");
  assert_int_equal(mkdir(sub, 0777), 0);
  int before = count_entries(test_dir(state));
  /* The target is a directory: the temp file is written, the rename fails, the temp goes. */
  assert_int_equal(npy_write(sub, NPY_I32, 2, shape, data, err, sizeof err), -1);
  assert_int_equal(count_entries(test_dir(state)), before);
  assert_int_equal(count_entries(sub), 0);
  free(nodir);
  free(sub);
}

static void test_write_temp_then_rename(void **state) {
  const size_t shape[1] = {4};
  const uint8_t data[4] = {1, 0, 1, 1}, other[4] = {9, 9, 9, 9};
  char *path = join_path(test_dir(state), "m.npy");
  assert_int_equal(npy_write(path, NPY_U8, 1, shape, other, NULL, 0), 0);
  char *temp = NULL;
  assert_int_equal(npy_write_temp(path, NPY_U8, 1, shape, data, &temp, NULL, 0), 0);
  assert_non_null(temp);
  npy_array a;
  assert_int_equal(npy_read(path, &a, NULL, 0), 0);   /* target untouched until the rename */
  assert_memory_equal(a.data, other, 4);
  npy_free(&a);
  assert_int_equal(rename(temp, path), 0);
  assert_int_equal(npy_read(path, &a, NULL, 0), 0);
  assert_memory_equal(a.data, data, 4);
  npy_free(&a);
  assert_int_equal(count_entries(test_dir(state)), 1);
  free(temp);
  free(path);
}

static void test_header_of_max_dims(void **state) {
  /* Eight dimensions still fit a 1.0 header (2.0 is only for enormous ones), padded so that the
   * data starts on a 64-byte boundary. */
  size_t shape[NPY_MAX_DIMS];
  float one = 1.0f;
  for (int i = 0; i < NPY_MAX_DIMS; i++) shape[i] = 1;
  char *path = join_path(test_dir(state), "dims.npy");
  char err[256] = "";
  assert_int_equal(npy_write(path, NPY_F32, NPY_MAX_DIMS, shape, &one, err, sizeof err), 0);
  unsigned char h[10];
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fread(h, 1, sizeof h, f), sizeof h);
  fclose(f);
  assert_int_equal(h[6], 1);
  assert_int_equal((10 + (h[8] | h[9] << 8)) % 64, 0);
  free(path);
}

/* A 136-byte file claiming 10^12 elements, and one claiming 3 GiB: refused as truncated (not
 * "out of memory", and not an allocator abort under ASan) with nothing of that size requested. */
static void test_claims_checked_before_allocating(void **state) {
  char *path = join_path(test_dir(state), "claim.npy");
  static const char *const dicts[] = {
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1024, 1024, 256), }"};
  for (int i = 0; i < 2; i++) {
    const float data[2] = {1.0f, 2.0f};
    write_raw(path, 1, dicts[i], data, sizeof data, 1);
    largest_request = 0;
    expect_read_error(path, "truncated data: the header's shape needs");
    if (largest_request > 4096) fail_msg("%s: requested %zu bytes before refusing", dicts[i], largest_request);
    /* npy_open alone reads the header and allocates nothing for the data. */
    npy_reader r;
    char err[256] = "";
    assert_int_equal(npy_open(path, &r, err, sizeof err), -1);
    assert_null(r.file);
  }
  /* A claim the file holds is opened without reading the data, then read. */
  const float data[6] = {1, 2, 3, 4, 5, 6};
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data, sizeof data, 1);
  npy_reader r;
  npy_array a;
  char err[256] = "";
  largest_request = 0;
  assert_int_equal(npy_open(path, &r, err, sizeof err), 0);
  assert_int_equal(r.array.count, 6);
  assert_null(r.array.data);
  assert_int_equal(npy_read_data(&r, &a, err, sizeof err), 0);
  assert_true(largest_request >= sizeof data); /* the watch sees the reader's allocations */
  assert_null(r.file);
  assert_memory_equal(a.data, data, sizeof data);
  npy_free(&a);
  /* One byte too many is refused before reading too. */
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", data, sizeof data, 1);
  expect_read_error(path, "longer than the header's shape says");
  free(path);
}

/* A stream (a pipe) has no size to check: its data is read in bounded chunks, so a false claim
 * fails at the stream's end. */
static void test_stream_claim_is_bounded(void **state) {
  char *path = join_path(test_dir(state), "fifo.npy");
  assert_int_equal(mkfifo(path, 0600), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    const float data[2] = {1.0f, 2.0f};
    write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }", data,
              sizeof data, 1);
    _exit(0);
  }
  largest_request = 0;
  expect_read_error(path, "truncated data: expected 4000000000000 bytes, found 8");
  assert_true(largest_request <= ((size_t)64 << 20));
  int status = 0;
  waitpid(pid, &status, 0);
  free(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_round_trip_every_dtype, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test_setup_teardown(test_header_is_padded_to_64, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test_setup_teardown(test_reads_version_2_and_3, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test(test_accepts_header_variants),
    cmocka_unit_test_setup_teardown(test_rejects_bad_files, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test_setup_teardown(test_failed_write_leaves_nothing, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test_setup_teardown(test_write_temp_then_rename, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test_setup_teardown(test_header_of_max_dims, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test_setup_teardown(test_claims_checked_before_allocating, tu_dir_setup, tu_dir_teardown),
    cmocka_unit_test_setup_teardown(test_stream_claim_is_bounded, tu_dir_setup, tu_dir_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
