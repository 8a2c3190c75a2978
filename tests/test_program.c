/*
 * Program binary cache through the public API (src/program.c over src/diskcache.c): misses,
 * hits, damaged entries, an unwritable cache, concurrent writers in separate processes, and the
 * NABLACL_KERNEL_DIR override.
 *
 * A hit is recognised without timing: on a miss the library stores the freshly built binary
 * (write to a temp file, rename over the entry), which gives the entry a new inode; on a hit it
 * writes nothing. Timings are printed, never asserted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "diskcache.h"
#include "ptxpatch.h"
#include "testutil.h"

#define PATH_CAP 4096
#define MAX_ENTRIES 64
#define ERR_CAP 8192
#define CHILDREN 4

/* The operation that compiles a program: a reorder of a small ragged video. */
static const nabla_shape kShape = {1, 2, 2 * 9 * 13, 8, 2, 9, 13};

/* ---- filesystem helpers ------------------------------------------------------------------ */

/* snprintf into a PATH_CAP buffer; a path that does not fit fails the test. */
#define pathf(out, ...) tu_pathf((out), PATH_CAP, __VA_ARGS__)

static void *read_file(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) fail_msg("open %s: %s", path, strerror(errno));
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  long size = ftell(fp);
  assert_true(size >= 0);
  rewind(fp);
  void *data = malloc((size_t)size + 1);
  assert_int_equal(fread(data, 1, (size_t)size, fp), (size_t)size);
  fclose(fp);
  *len = (size_t)size;
  return data;
}

static void write_file(const char *path, const void *data, size_t len) {
  FILE *fp = fopen(path, "wb");
  if (!fp) fail_msg("create %s: %s", path, strerror(errno));
  assert_int_equal(fwrite(data, 1, len, fp), len);
  assert_int_equal(fclose(fp), 0);
}

static void append_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "ab");
  if (!fp) fail_msg("append %s: %s", path, strerror(errno));
  assert_true(fputs(text, fp) >= 0);
  assert_int_equal(fclose(fp), 0);
}

/* The files of <root>/v1/programs: entries (*.bin) with their inodes, and leftover temp files. */
typedef struct {
  int count, temps, others;
  char name[MAX_ENTRIES][64];
  ino_t ino[MAX_ENTRIES];
} listing;

static void programs_dir(const char *root, char *out) {
  pathf(out, "%s/v%d/programs", root, NABLA_DISKCACHE_SCHEMA);
}

static listing list_programs(const char *root) {
  listing l;
  memset(&l, 0, sizeof l);
  char dir[PATH_CAP];
  programs_dir(root, dir);
  DIR *d = opendir(dir);
  if (!d) return l;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    size_t n = strlen(e->d_name);
    if (strstr(e->d_name, ".tmp.")) {
      l.temps++;
    } else if (n > 4 && strcmp(e->d_name + n - 4, ".bin") == 0 && l.count < MAX_ENTRIES && n < 64) {
      char path[PATH_CAP];
      struct stat sb;
      pathf(path, "%s/%s", dir, e->d_name);
      assert_int_equal(stat(path, &sb), 0);
      snprintf(l.name[l.count], sizeof l.name[0], "%.63s", e->d_name);
      l.ino[l.count++] = sb.st_ino;
    } else {
      l.others++;
    }
  }
  closedir(d);
  return l;
}

static ino_t listed_ino(const listing *l, const char *name) {
  for (int i = 0; i < l->count; i++)
    if (strcmp(l->name[i], name) == 0) return l->ino[i];
  return 0;
}

static void count_valid(const char *key, const void *data, size_t len, time_t mtime, void *user) {
  (void)key, (void)data, (void)len, (void)mtime;
  ++*(int *)user;
}

/* Entries of `programs` that verify (header, key, checksum). */
static int valid_entries(const char *root) {
  int n = 0;
  assert_int_equal(nabla_diskcache_foreach(root, "programs", count_valid, &n), NABLA_OK);
  return n;
}

/* ---- the operation (no cmocka asserts: also runs in child processes) ---------------------- */

/* Runs the reorder on a fresh context's queue and checks it bit for bit; 0 on success. */
static int run_reorder(nabla_context *ctx, nabla_dtype dtype, double *ms, char *why, size_t why_len) {
  const nabla_shape *s = &kShape;
  size_t n = (size_t)s->batch * s->heads * s->seq * s->head_dim, bytes = n * nabla_dtype_size(dtype);
  double *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref);
  void *x_bits = NULL, *ref_bits = NULL, *got = malloc(bytes);
  cl_mem src = NULL, dst = NULL;
  int bad = 1;
  uint64_t seed = 1234 + (uint64_t)dtype;
  cl_int rc = CL_SUCCESS;
  if (!x || !ref || !got) {
    snprintf(why, why_len, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) x[i] = tu_rand_normal(&seed);
  tu_quantize(x, n, dtype);
  nabla_ref_reorder(s, NABLA_RASTER_TO_TILE, x, ref);
  x_bits = tu_pack(x, n, dtype);
  ref_bits = tu_pack(ref, n, dtype);
  src = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, x_bits, &rc);
  if (rc == CL_SUCCESS) dst = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &rc);
  if (rc != CL_SUCCESS) {
    snprintf(why, why_len, "clCreateBuffer failed (%d)", (int)rc);
    goto done;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  nabla_status st = nabla_reorder(ctx, s, dtype, NABLA_RASTER_TO_TILE, src, dst, 0, NULL, NULL);
  if (st != NABLA_OK) {
    snprintf(why, why_len, "nabla_reorder: %s: %s", nabla_status_str(st), nabla_last_error(ctx));
    goto done;
  }
  clFinish(nabla_context_queue(ctx));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (ms) *ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
  rc = clEnqueueReadBuffer(nabla_context_queue(ctx), dst, CL_TRUE, 0, bytes, got, 0, NULL, NULL);
  if (rc != CL_SUCCESS || memcmp(got, ref_bits, bytes) != 0) {
    snprintf(why, why_len, "reorder result differs from the reference (read %d)", (int)rc);
    goto done;
  }
  bad = 0;
done:
  if (src) clReleaseMemObject(src);
  if (dst) clReleaseMemObject(dst);
  free(x), free(ref), free(x_bits), free(ref_bits), free(got);
  return bad;
}

/* A fresh context (the environment as it is now) runs the op; fails the test on any error. */
static double fresh_run(nabla_dtype dtype) {
  nabla_context *ctx = NULL;
  char err[ERR_CAP];
  if (nabla_context_create(&ctx, NULL, err, sizeof err) != NABLA_OK) fail_msg("context: %s", err);
  double ms = -1;
  char why[ERR_CAP];
  if (run_reorder(ctx, dtype, &ms, why, sizeof why) != 0) fail_msg("%s", why);
  nabla_context_destroy(ctx);
  return ms;
}

/* ---- fixture: a fresh cache dir per test, NABLACL_CACHE_DIR pointing at it ---------------- */

typedef tu_dir fixture; /* dir, and root: NABLACL_CACHE_DIR */

static int setup(void **state) {
  nabla_context *probe = tu_context();
  if (!probe) {
    print_message("no OpenCL device: skipping device tests\n");
    *state = NULL;
    return 0;
  }
  nabla_context_destroy(probe);
  return tu_dir_setup_cache(state);
}


#define FIX_OR_SKIP(state) \
  fixture *f = *(state);   \
  if (!f) skip()

/* ---- tests -------------------------------------------------------------------------------- */

static void test_miss_then_hit(void **state) {
  FIX_OR_SKIP(state);
  assert_int_equal(list_programs(f->root).count, 0);
  double miss = fresh_run(NABLA_F32);
  listing a = list_programs(f->root);
  assert_int_equal(a.count, 1);
  assert_int_equal(a.temps, 0);
  assert_int_equal(valid_entries(f->root), 1);
  double hit = fresh_run(NABLA_F32);
  listing b = list_programs(f->root);
  assert_int_equal(b.count, 1);
  assert_true(b.ino[0] == a.ino[0]); /* not rewritten: it was a hit */
  print_message("reorder first call: %.1f ms with a cold cache (miss), %.1f ms with a warm one (hit)\n",
                miss, hit);
  /* Another storage size is another program (-DELEM=ushort): a second entry. */
  fresh_run(NABLA_F16);
  assert_int_equal(list_programs(f->root).count, 2);
  assert_int_equal(valid_entries(f->root), 2);
}

/* Damages the single entry with `damage`, then checks: a fresh context still gets correct
 * results, the entry is rewritten (other bytes) and valid, and the next context hits it. */
typedef void (*damage_fn)(const char *path);

static void check_recovers(fixture *f, damage_fn damage, const char *what) {
  fresh_run(NABLA_F32);
  listing before = list_programs(f->root);
  assert_int_equal(before.count, 1);
  char dir[PATH_CAP], path[PATH_CAP];
  programs_dir(f->root, dir);
  pathf(path, "%s/%s", dir, before.name[0]);
  size_t good_len = 0, bad_len = 0;
  void *good = read_file(path, &good_len);
  damage(path);
  void *bad = read_file(path, &bad_len);
  assert_true(bad_len != good_len || memcmp(good, bad, good_len) != 0);

  fresh_run(NABLA_F32);
  listing after = list_programs(f->root);
  assert_int_equal(after.count, 1);
  assert_int_equal(after.temps, 0);
  assert_int_equal(valid_entries(f->root), 1);
  /* Rewritten: the bytes differ from the damaged ones. (Not the inode: a file system may hand
   * the removed entry's inode number to its replacement, as the GPU host's did.) */
  size_t new_len = 0;
  void *rewritten = read_file(path, &new_len);
  if (new_len == bad_len && memcmp(rewritten, bad, bad_len) == 0)
    fail_msg("%s: the damaged entry was not rewritten", what);
  print_message("%s: entry rewritten, %s the original bytes\n", what,
                new_len == good_len && memcmp(rewritten, good, good_len) == 0 ? "identical to" : "differs from");
  /* ... and it is a hit now. */
  fresh_run(NABLA_F32);
  listing hit = list_programs(f->root);
  assert_true(listed_ino(&hit, before.name[0]) == listed_ino(&after, before.name[0]));
  free(good), free(bad), free(rewritten);
}

/* Flips 16 payload bytes in the middle (the header and key stay intact). */
static void damage_payload(const char *path) {
  size_t len = 0;
  unsigned char *data = read_file(path, &len);
  assert_true(len > 32);
  uint32_t key_len = (uint32_t)data[12] | (uint32_t)data[13] << 8 | (uint32_t)data[14] << 16 |
                     (uint32_t)data[15] << 24;
  size_t start = 32 + key_len;
  assert_true(start + 16 <= len);
  size_t mid = start + (len - start) / 2;
  if (mid + 16 > len) mid = len - 16;
  for (size_t i = mid; i < mid + 16; i++) data[i] ^= 0x5A;
  int fd = open(path, O_WRONLY); /* in place: same inode, same size */
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, data + mid, 16, (off_t)mid), 16);
  close(fd);
  free(data);
}

static void damage_truncate(const char *path) {
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(truncate(path, sb.st_size / 2), 0);
}

static void damage_foreign(const char *path) {
  unsigned char junk[4096];
  uint64_t seed = 99;
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)tu_rand_u64(&seed);
  write_file(path, junk, sizeof junk);
}

static void damage_empty(const char *path) { write_file(path, "", 0); }

static void damage_header_only(const char *path) {
  size_t len = 0;
  void *data = read_file(path, &len);
  write_file(path, data, 32); /* a header that promises a key and payload that are not there */
  free(data);
}

/* The cache key stored in an entry's bytes (its length at byte 12, little-endian; the key from
 * byte 32), as a string the caller frees. */
static char *entry_key(const unsigned char *data) {
  uint32_t key_len = (uint32_t)data[12] | (uint32_t)data[13] << 8 | (uint32_t)data[14] << 16 |
                     (uint32_t)data[15] << 24;
  char *key = malloc(key_len + 1);
  assert_non_null(key);
  memcpy(key, data + 32, key_len);
  key[key_len] = '\0';
  return key;
}

/* A well-formed entry (correct key and checksum) whose payload is not a binary the driver
 * accepts: clCreateProgramWithBinary / clBuildProgram must fail and the library rebuild. */
static void damage_bad_binary(const char *path) {
  size_t len = 0;
  unsigned char *data = read_file(path, &len);
  char *key = entry_key(data);
  const char *root = getenv("NABLACL_CACHE_DIR");
  unsigned char junk[2048];
  uint64_t seed = 7;
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)tu_rand_u64(&seed);
  assert_int_equal(nabla_diskcache_put(root, "programs", key, junk, sizeof junk), NABLA_OK);
  void *stored = NULL;
  size_t stored_len = 0;
  assert_int_equal(nabla_diskcache_get(root, "programs", key, &stored, &stored_len), NABLA_OK);
  assert_int_equal(stored_len, sizeof junk);
  free(stored);
  free(key);
  free(data);
}

/* The entry's payload cut in half and stored again under the same key, so that the entry's
 * checksum matches: PoCL's binary loader crashed on such a binary (SIGSEGV on every later run).
 * It must be refused before it reaches the driver, removed and rebuilt. */
static void damage_truncated_rechecksummed(const char *path) {
  size_t len = 0;
  unsigned char *data = read_file(path, &len);
  char *key = entry_key(data);
  const char *root = getenv("NABLACL_CACHE_DIR");
  void *payload = NULL;
  size_t payload_len = 0;
  assert_int_equal(nabla_diskcache_get(root, "programs", key, &payload, &payload_len), NABLA_OK);
  assert_true(payload_len > 64);
  assert_int_equal(nabla_diskcache_put(root, "programs", key, payload, payload_len / 2), NABLA_OK);
  free(payload);
  free(key);
  free(data);
}


static void test_truncated_binary(void **state) {
  FIX_OR_SKIP(state);
  check_recovers(f, damage_truncated_rechecksummed, "truncated binary, checksum recomputed");
}

/* An entry another user owns is not read, whatever it holds (as root: chown to nobody), and is
 * replaced by one of this user's. */
static void test_foreign_owner_entry(void **state) {
  FIX_OR_SKIP(state);
  if (geteuid() != 0) skip(); /* only root can give a file away */
  fresh_run(NABLA_F32);
  listing before = list_programs(f->root);
  assert_int_equal(before.count, 1);
  char dir[PATH_CAP], path[PATH_CAP];
  programs_dir(f->root, dir);
  pathf(path, "%s/%s", dir, before.name[0]);
  assert_int_equal(chown(path, 65534, 65534), 0);
  assert_int_equal(valid_entries(f->root), 0); /* not listed either */
  fresh_run(NABLA_F32);
  listing after = list_programs(f->root);
  assert_int_equal(after.count, 1);
  assert_true(after.ino[0] != before.ino[0]);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_uid, geteuid());
  assert_int_equal(valid_entries(f->root), 1);
}

static void expect_mode(const char *path, unsigned mode) {
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  if ((sb.st_mode & 0777) != mode) fail_msg("%s: mode %03o, expected %03o", path, (unsigned)(sb.st_mode & 0777), mode);
}

/* Directories are made 0700 and files 0600 whatever the umask; a root that is another user's,
 * or writable by its group or others, is not used at all (the context says why, once). */
static void test_cache_root_private(void **state) {
  FIX_OR_SKIP(state);
  mode_t old_umask = umask(0);
  fresh_run(NABLA_F32);
  umask(old_umask);
  char dir[PATH_CAP], path[PATH_CAP];
  listing l = list_programs(f->root);
  assert_int_equal(l.count, 1);
  programs_dir(f->root, dir);
  pathf(path, "%s/%s", dir, l.name[0]);
  expect_mode(f->root, 0700);
  expect_mode(dir, 0700);
  expect_mode(path, 0600);

  static const struct {
    unsigned mode;
    const char *why;
  } open_roots[] = {{0777, "writable by others"}, {0770, "writable by its group"}, {0702, "writable by others"}};
  for (size_t i = 0; i < sizeof open_roots / sizeof *open_roots; i++) {
    assert_int_equal(chmod(f->root, open_roots[i].mode), 0);
    assert_int_equal(unlink(path), 0);
    nabla_context *ctx = NULL;
    char err[ERR_CAP], why[ERR_CAP];
    assert_int_equal(nabla_context_create(&ctx, NULL, err, sizeof err), NABLA_OK);
    assert_null(nabla_context_cache_dir(ctx));
    if (!strstr(nabla_context_cache_note(ctx), open_roots[i].why))
      fail_msg("mode %03o: note '%s'", open_roots[i].mode, nabla_context_cache_note(ctx));
    if (run_reorder(ctx, NABLA_F32, NULL, why, sizeof why) != 0) fail_msg("%s", why);
    nabla_context_destroy(ctx);
    assert_int_equal(list_programs(f->root).count, 0); /* nothing read or written there */
    assert_int_equal(chmod(f->root, 0700), 0);
    fresh_run(NABLA_F32);
  }
  /* Another user's root: as root, give it away; otherwise "/" is one. */
  const char *foreign = f->root;
  if (geteuid() == 0) assert_int_equal(chown(f->root, 65534, 65534), 0);
  else foreign = "/";
  tu_env saved = tu_env_save("NABLACL_CACHE_DIR");
  setenv("NABLACL_CACHE_DIR", foreign, 1);
  nabla_context *ctx = NULL;
  char err[ERR_CAP];
  assert_int_equal(nabla_context_create(&ctx, NULL, err, sizeof err), NABLA_OK);
  assert_null(nabla_context_cache_dir(ctx));
  assert_non_null(strstr(nabla_context_cache_note(ctx), "not by this user"));
  nabla_context_destroy(ctx);
  tu_env_restore(&saved);
  if (geteuid() == 0) assert_int_equal(chown(f->root, 0, 0), 0);
  /* Switched off on purpose: no note. */
  setenv("NABLACL_CACHE_DIR", "off", 1);
  assert_int_equal(nabla_context_create(&ctx, NULL, err, sizeof err), NABLA_OK);
  assert_string_equal(nabla_context_cache_note(ctx), "");
  nabla_context_destroy(ctx);
  setenv("NABLACL_CACHE_DIR", f->root, 1);
}

static void test_corrupt_payload(void **state) {
  FIX_OR_SKIP(state);
  check_recovers(f, damage_payload, "corrupt payload");
}

static void test_truncated_entry(void **state) {
  FIX_OR_SKIP(state);
  check_recovers(f, damage_truncate, "truncated entry");
  check_recovers(f, damage_header_only, "header only");
  check_recovers(f, damage_empty, "empty file");
}

static void test_foreign_file(void **state) {
  FIX_OR_SKIP(state);
  check_recovers(f, damage_foreign, "foreign file");
}

static void test_valid_entry_bad_binary(void **state) {
  FIX_OR_SKIP(state);
  check_recovers(f, damage_bad_binary, "well-formed entry with a junk binary");
}

static void test_unwritable_cache(void **state) {
  FIX_OR_SKIP(state);
  /* mkdir fails even for root: a path component is a regular file. */
  char file[PATH_CAP], root[PATH_CAP];
  pathf(file, "%s/not-a-dir", f->dir);
  write_file(file, "x", 1);
  pathf(root, "%s/cache", file);
  setenv("NABLACL_CACHE_DIR", root, 1);
  nabla_context *ctx = NULL;
  char err[ERR_CAP], why[ERR_CAP];
  assert_int_equal(nabla_context_create(&ctx, NULL, err, sizeof err), NABLA_OK);
  /* A root that cannot be a directory is off from the start, and the context says why. */
  assert_null(nabla_context_cache_dir(ctx));
  assert_non_null(strstr(nabla_context_cache_note(ctx), "disk cache off"));
  if (run_reorder(ctx, NABLA_F32, NULL, why, sizeof why) != 0) fail_msg("%s", why);
  if (run_reorder(ctx, NABLA_BF16, NULL, why, sizeof why) != 0) fail_msg("%s", why);
  assert_string_equal(nabla_last_error(ctx), "");
  nabla_context_destroy(ctx);
  struct stat sb;
  assert_int_equal(stat(file, &sb), 0);
  assert_true(S_ISREG(sb.st_mode) && sb.st_size == 1);
  /* Caching off altogether works too. */
  setenv("NABLACL_CACHE_DIR", "off", 1);
  fresh_run(NABLA_F32);
  setenv("NABLACL_CACHE_DIR", f->root, 1);
  assert_int_equal(list_programs(f->root).count, 0);
}

static void test_concurrent_writers(void **state) {
  FIX_OR_SKIP(state);
  /* Separate processes (fork + exec of this executable: an OpenCL runtime does not survive a
   * bare fork), all starting on the same empty cache at once. */
  pid_t pids[CHILDREN];
  for (int i = 0; i < CHILDREN; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      execl("/proc/self/exe", "test_program", "--child", (char *)NULL);
      _exit(127);
    }
  }
  for (int i = 0; i < CHILDREN; i++) {
    int status = 0;
    assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("child %d failed (status 0x%x)", i, status);
  }
  listing after = list_programs(f->root);
  assert_int_equal(after.count, 2); /* one program per storage size */
  assert_int_equal(after.temps, 0);
  assert_int_equal(after.others, 0);
  assert_int_equal(valid_entries(f->root), 2);
  /* Each entry loads: a fresh context hits both (nothing rewritten). */
  fresh_run(NABLA_F32);
  fresh_run(NABLA_F16);
  listing again = list_programs(f->root);
  assert_int_equal(again.count, 2);
  for (int i = 0; i < 2; i++) assert_true(listed_ino(&again, after.name[i]) == after.ino[i]);
}

/* Child of test_concurrent_writers: both programs, results checked; exit status says. */
static int child_main(void) {
  nabla_context *ctx = NULL;
  char err[ERR_CAP];
  if (nabla_context_create(&ctx, NULL, err, sizeof err) != NABLA_OK) {
    fprintf(stderr, "child: %s\n", err);
    return 1;
  }
  int bad = 0;
  nabla_dtype dts[3] = {NABLA_F32, NABLA_F16, NABLA_BF16}; /* bf16 shares the f16 program */
  for (int i = 0; i < 3 && !bad; i++) {
    bad = run_reorder(ctx, dts[i], NULL, err, sizeof err);
    if (bad) fprintf(stderr, "child: %s\n", err);
  }
  nabla_context_destroy(ctx);
  return bad;
}

/* Copies the .cl files of <source tree>/cl to `dst`; 0 when the source tree is not where it was built. */
static int copy_kernels(const char *dst) {
  char src_dir[PATH_CAP];
  pathf(src_dir, "%s", __FILE__);
  char *slash = strrchr(src_dir, '/');
  if (!slash) return 0;
  *slash = '\0';
  char tmp[PATH_CAP];
  pathf(tmp, "%s/../cl", src_dir);
  pathf(src_dir, "%s", tmp);
  DIR *d = opendir(src_dir);
  if (!d) return 0;
  int copied = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n < 4 || strcmp(e->d_name + n - 3, ".cl") != 0) continue;
    char from[PATH_CAP], to[PATH_CAP];
    pathf(from, "%s/%s", src_dir, e->d_name);
    pathf(to, "%s/%s", dst, e->d_name);
    size_t len = 0;
    void *text = read_file(from, &len);
    write_file(to, text, len);
    free(text);
    copied++;
  }
  closedir(d);
  return copied;
}

static void test_kernel_dir_override(void **state) {
  FIX_OR_SKIP(state);
  char kdir[PATH_CAP], path[PATH_CAP];
  pathf(kdir, "%s/kernels", f->dir);
  assert_int_equal(mkdir(kdir, 0755), 0);
  if (copy_kernels(kdir) == 0) {
    print_message("cl/ sources not found next to %s: skipping\n", __FILE__);
    skip();
  }
  fresh_run(NABLA_F32);
  listing base = list_programs(f->root);
  assert_int_equal(base.count, 1);

  /* The same bytes from the override directory: the same key, a hit. */
  setenv("NABLACL_KERNEL_DIR", kdir, 1);
  fresh_run(NABLA_F32);
  listing same = list_programs(f->root);
  assert_int_equal(same.count, 1);
  assert_true(same.ino[0] == base.ino[0]);

  /* A trivial edit of the stage file is a new source: a new entry. */
  pathf(path, "%s/reorder.cl", kdir);
  append_file(path, "\n/* touched by test_program */\n");
  fresh_run(NABLA_F32);
  assert_int_equal(list_programs(f->root).count, 2);
  /* So is an edit of the common prelude. */
  pathf(path, "%s/common.cl", kdir);
  append_file(path, "\n/* touched by test_program */\n");
  fresh_run(NABLA_F32);
  assert_int_equal(list_programs(f->root).count, 3);
  assert_int_equal(valid_entries(f->root), 3);

  /* A broken stage: NABLA_BUILD with the compiler's log in the last error; nothing cached. */
  pathf(path, "%s/reorder.cl", kdir);
  const char *broken =
      "__kernel void reorder(__global uint *x) { x[0] = nabla_broken_identifier + 1; }\n";
  write_file(path, broken, strlen(broken));
  nabla_context *ctx = NULL;
  char err[ERR_CAP];
  assert_int_equal(nabla_context_create(&ctx, NULL, err, sizeof err), NABLA_OK);
  size_t n = (size_t)kShape.batch * kShape.heads * kShape.seq * kShape.head_dim;
  cl_int rc = CL_SUCCESS;
  cl_mem src = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, n * 4, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem dst = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, n * 4, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_event done = NULL;
  nabla_status st = nabla_reorder(ctx, &kShape, NABLA_F32, NABLA_RASTER_TO_TILE, src, dst, 0, NULL, &done);
  assert_int_equal(st, NABLA_BUILD);
  assert_null(done);
  const char *msg = nabla_last_error(ctx);
  if (!strstr(msg, "nabla_broken_identifier")) fail_msg("the build log is not in the error: %s", msg);
  if (!strstr(msg, "reorder")) fail_msg("the error does not name the stage: %s", msg);
  clReleaseMemObject(src);
  clReleaseMemObject(dst);
  nabla_context_destroy(ctx);
  assert_int_equal(list_programs(f->root).count, 3);

  /* A directory without the file falls back to the embedded source (a hit on the first entry). */
  assert_int_equal(unlink(path), 0);
  pathf(path, "%s/common.cl", kdir);
  assert_int_equal(unlink(path), 0);
  fresh_run(NABLA_F32);
  listing fallback = list_programs(f->root);
  assert_int_equal(fallback.count, 3);
  assert_true(listed_ino(&fallback, base.name[0]) == base.ino[0]);
  unsetenv("NABLACL_KERNEL_DIR");
}

/* The sm_90a rewrite of the wgmma kernels' PTX (ptxpatch.h), on texts shaped like NVIDIA's. */
static void test_ptx_sm90a_rewrite(void **state) {
  (void)state;
  char *out = NULL, why[256];
  size_t n = 0;
  const char ptx[] = ".version 9.0\n.target sm_90\n.address_size 64\n\t// begin inline asm\n"
                     "\t//@wg wgmma.fence.sync.aligned;\n\t// end inline asm\n"
                     "\t{ setp.ne.b32 p, %r1, 0;\n//@wg wgmma.commit_group.sync.aligned;\n}\n";
  assert_int_equal(nabla_ptx_sm90a(ptx, sizeof ptx, &out, &n, why, sizeof why), 1); /* NUL included */
  assert_string_equal(out, ".version 9.0\n.target sm_90a\n.address_size 64\n\t// begin inline asm\n"
                           "\twgmma.fence.sync.aligned;\n\t// end inline asm\n"
                           "\t{ setp.ne.b32 p, %r1, 0;\nwgmma.commit_group.sync.aligned;\n}\n");
  assert_int_equal(n, strlen(out) + 1);
  free(out);
  /* Already sm_90a, or with a trailing target option: only the marks change, or the target. */
  const char a[] = ".target sm_90a\n//@wg wgmma.fence.sync.aligned;";
  assert_int_equal(nabla_ptx_sm90a(a, strlen(a), &out, &n, why, sizeof why), 1);
  assert_string_equal(out, ".target sm_90a\nwgmma.fence.sync.aligned;");
  free(out);
  /* An ISA version below 8.3 (the tensor-map instructions') is raised; 8.3 and later stay. */
  const char *versions[][2] = {{".version 8.0\n.target sm_90\n//@wg x;", ".version 8.3\n.target sm_90a\nx;"},
                               {".version 7.10\n.target sm_90\n//@wg x;", ".version 8.3\n.target sm_90a\nx;"},
                               {".version 8.3\n.target sm_90\n//@wg x;", ".version 8.3\n.target sm_90a\nx;"},
                               {".version 8.10\n.target sm_90\n//@wg x;", ".version 8.10\n.target sm_90a\nx;"},
                               {".version 10.0\n.target sm_90\n//@wg x;", ".version 10.0\n.target sm_90a\nx;"}};
  for (int i = 0; i < 5; i++) {
    assert_int_equal(nabla_ptx_sm90a(versions[i][0], strlen(versions[i][0]), &out, &n, why, sizeof why), 1);
    assert_string_equal(out, versions[i][1]);
    assert_int_equal(n, strlen(out) + 1);
    free(out);
  }
  const char dbg[] = ".target sm_90, debug\n//@wg x;";
  assert_int_equal(nabla_ptx_sm90a(dbg, strlen(dbg), &out, &n, why, sizeof why), 1);
  assert_string_equal(out, ".target sm_90a, debug\nx;");
  free(out);
  /* Other targets (no wgmma there) and unmarked PTX are refused, with the reason. */
  const char *bad[] = {".target sm_80\n//@wg x;", ".target sm_100\n//@wg x;", ".target sm_90\nmov.u32 %r1, 0;",
                       ".target sm_900\n//@wg x;"};
  const char *reason[] = {"sm_80", "sm_100", "no //@wg", "sm_900"};
  for (int i = 0; i < 4; i++) {
    out = (char *)1;
    assert_int_equal(nabla_ptx_sm90a(bad[i], strlen(bad[i]), &out, &n, why, sizeof why), 0);
    assert_null(out);
    if (!strstr(why, reason[i])) fail_msg("case %d: \"%s\" does not name %s", i, why, reason[i]);
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--child") == 0) return child_main();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_miss_then_hit, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_payload, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_truncated_entry, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_foreign_file, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_valid_entry_bad_binary, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_unwritable_cache, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_truncated_binary, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_foreign_owner_entry, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_cache_root_private, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_kernel_dir_override, setup, tu_dir_teardown),
      cmocka_unit_test(test_ptx_sm90a_rewrite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
