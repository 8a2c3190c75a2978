/* Host-only tests of the on-disk store (src/diskcache.c); no OpenCL device needed. */
#include "testutil.h"

#include "diskcache.h"

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

#define PATH_CAP 4096
#define HEADER 32

/* Every test gets a fresh directory (tu_dir); `root` inside it does not exist until a put
 * creates it. */
typedef tu_dir fixture;

/* ---- filesystem helpers ------------------------------------------------------------------ */

/* snprintf into a PATH_CAP buffer; a path that does not fit fails the test. */
#define pathf(out, ...) tu_pathf((out), PATH_CAP, __VA_ARGS__)


static void ns_dir(const fixture *f, const char *ns, char *out) {
  pathf(out, "%s/v%d/%s", f->root, NABLA_DISKCACHE_SCHEMA, ns);
}

/* Names in `dir` containing `substr` (NULL: all but . and ..); the first match goes to `first`. */
static int count_names(const char *dir, const char *substr, char *first) {
  int n = 0;
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (substr && !strstr(e->d_name, substr)) continue;
    if (n == 0 && first) pathf(first, "%s/%s", dir, e->d_name);
    n++;
  }
  closedir(d);
  return n;
}

/* Path of the only entry file of `ns` (asserts there is exactly one). */
static void only_entry(const fixture *f, const char *ns, char *out) {
  char dir[PATH_CAP];
  ns_dir(f, ns, dir);
  assert_int_equal(count_names(dir, ".bin", out), 1);
}

/* Path of the entry file of `ns` other than `known` (asserts there are exactly two). */
static void other_entry(const fixture *f, const char *ns, const char *known, char *out) {
  char dir[PATH_CAP];
  ns_dir(f, ns, dir);
  assert_int_equal(count_names(dir, ".bin", NULL), 2);
  DIR *d = opendir(dir);
  assert_non_null(d);
  struct dirent *e;
  out[0] = '\0';
  while ((e = readdir(d))) {
    char p[PATH_CAP];
    pathf(p, "%s/%s", dir, e->d_name);
    if (strstr(e->d_name, ".bin") && strcmp(p, known) != 0) pathf(out, "%s", p);
  }
  closedir(d);
  assert_true(out[0] != '\0');
}


static void fill_random(unsigned char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(tu_rand_u64(&seed) >> 56);
}

static void expect_hit(const char *root, const char *ns, const char *key, const void *want,
                       size_t want_len) {
  void *data = NULL;
  size_t len = 12345;
  assert_int_equal(nabla_diskcache_get(root, ns, key, &data, &len), NABLA_OK);
  assert_non_null(data);
  assert_int_equal(len, want_len);
  if (want_len) assert_memory_equal(data, want, want_len);
  free(data);
}

static void expect_miss(const char *root, const char *ns, const char *key) {
  void *data = (void *)1;
  size_t len = 12345;
  assert_int_equal(nabla_diskcache_get(root, ns, key, &data, &len), NABLA_NOT_FOUND);
  assert_null(data);
  assert_int_equal(len, 0);
}

/* ---- foreach collection ------------------------------------------------------------------ */

#define MAX_SEEN 64

typedef struct {
  int count;
  char *keys[MAX_SEEN];
  unsigned char *data[MAX_SEEN];
  size_t len[MAX_SEEN];
  time_t mtime[MAX_SEEN];
} seen_set;

static void collect(const char *key, const void *data, size_t len, time_t mtime, void *user) {
  seen_set *s = user;
  if (s->count >= MAX_SEEN) {
    s->count++;
    return;
  }
  int i = s->count++;
  s->keys[i] = strdup(key);
  s->data[i] = malloc(len + 1);
  if (s->data[i] && len) memcpy(s->data[i], data, len);
  s->len[i] = len;
  s->mtime[i] = mtime;
}

static void seen_free(seen_set *s) {
  for (int i = 0; i < s->count && i < MAX_SEEN; i++) {
    free(s->keys[i]);
    free(s->data[i]);
  }
  memset(s, 0, sizeof *s);
}

static int seen_find(const seen_set *s, const char *key) {
  for (int i = 0; i < s->count && i < MAX_SEEN; i++)
    if (s->keys[i] && !strcmp(s->keys[i], key)) return i;
  return -1;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_hash64(void **state) {
  (void)state;
  const char *s = "nablacl";
  uint64_t a = nabla_hash64(s, strlen(s), 0);
  assert_true(a == nabla_hash64(s, strlen(s), 0));
  assert_true(a != nabla_hash64(s, strlen(s), 1));
  assert_true(a != nabla_hash64(s, strlen(s) - 1, 0));
  assert_true(nabla_hash64("ab", 2, 0) != nabla_hash64("ba", 2, 0));
  assert_true(nabla_hash64(NULL, 0, 7) == nabla_hash64("", 0, 7));
  assert_true(nabla_hash64("", 0, 7) != nabla_hash64("", 0, 8));
  /* The hash names and checksums every file: a change of these values needs a schema bump. */
  assert_true(nabla_hash64("", 0, 0) == UINT64_C(0xaebe53f85cdc3c4c));
  assert_true(nabla_hash64("nablacl", 7, 0) == UINT64_C(0x1feecbacebcf3c4a));
  assert_true(nabla_hash64("nablacl", 7, 42) == UINT64_C(0xf8cf90fecab826d7));
}

static void test_miss_on_empty(void **state) {
  fixture *f = *state;
  expect_miss(f->root, "programs", "anything");
  seen_set seen = {0};
  assert_int_equal(nabla_diskcache_foreach(f->root, "programs", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 0);
  assert_int_equal(nabla_diskcache_clear(f->root), NABLA_OK);
  struct stat sb;
  assert_int_not_equal(stat(f->root, &sb), 0); /* reads and clear create nothing */
  /* An existing but empty store is a miss too. */
  assert_int_equal(mkdir(f->root, 0755), 0);
  expect_miss(f->root, "programs", "anything");
}

static void test_round_trip(void **state) {
  fixture *f = *state;
  const char *hello = "hello, cache";
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "k1", hello, strlen(hello)), NABLA_OK);
  expect_hit(f->root, "programs", "k1", hello, strlen(hello));

  /* Zero-byte payload: a hit with a non-NULL (freeable) pointer and length 0. */
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "empty", NULL, 0), NABLA_OK);
  expect_hit(f->root, "programs", "empty", NULL, 0);

  /* Empty key is a key like any other. */
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "", "e", 1), NABLA_OK);
  expect_hit(f->root, "programs", "", "e", 1);

  size_t big_len = 5u << 20;
  unsigned char *big = malloc(big_len);
  assert_non_null(big);
  fill_random(big, big_len, 99);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "big", big, big_len), NABLA_OK);
  expect_hit(f->root, "programs", "big", big, big_len);
  free(big);

  /* Namespaces are separate stores. */
  assert_int_equal(nabla_diskcache_put(f->root, "tuning", "k1", "{}", 2), NABLA_OK);
  expect_hit(f->root, "tuning", "k1", "{}", 2);
  expect_hit(f->root, "programs", "k1", hello, strlen(hello));
  expect_miss(f->root, "probes", "k1");
  expect_miss(f->root, "programs", "k2");

  /* Layout: <root>/v<schema>/<ns>/<32 hex>.bin, nothing else, no temp files left. */
  char dir[PATH_CAP], path[PATH_CAP];
  ns_dir(f, "programs", dir);
  assert_int_equal(count_names(dir, NULL, NULL), 4);
  assert_int_equal(count_names(dir, ".tmp.", NULL), 0);
  only_entry(f, "tuning", path);
  const char *base = strrchr(path, '/') + 1;
  assert_int_equal(strlen(base), 36);
  assert_string_equal(base + 32, ".bin");
  for (int i = 0; i < 32; i++) assert_non_null(strchr("0123456789abcdef", base[i]));
}

static void test_overwrite(void **state) {
  fixture *f = *state;
  assert_int_equal(nabla_diskcache_put(f->root, "tuning", "key", "first value", 11), NABLA_OK);
  assert_int_equal(nabla_diskcache_put(f->root, "tuning", "key", "2nd", 3), NABLA_OK);
  expect_hit(f->root, "tuning", "key", "2nd", 3);
  assert_int_equal(nabla_diskcache_put(f->root, "tuning", "key", "a longer third value", 20),
                   NABLA_OK);
  expect_hit(f->root, "tuning", "key", "a longer third value", 20);
  char dir[PATH_CAP];
  ns_dir(f, "tuning", dir);
  assert_int_equal(count_names(dir, NULL, NULL), 1);
}

static void test_corrupt_file(void **state) {
  fixture *f = *state;
  const char *key = "corrupt-me";
  unsigned char payload[300];
  fill_random(payload, sizeof payload, 5);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", key, payload, sizeof payload),
                   NABLA_OK);
  char path[PATH_CAP];
  only_entry(f, "programs", path);
  size_t n;
  unsigned char *orig = tu_slurp(path, &n);
  size_t klen = strlen(key);
  assert_int_equal(n, HEADER + klen + sizeof payload);

  /* One flipped byte anywhere (magic, schema, lengths, checksum, key, payload) is a miss. */
  size_t offsets[] = {0, 7, 8, 12, 16, 23, 24, 31, HEADER, HEADER + klen - 1, HEADER + klen,
                      HEADER + klen + 150, n - 1};
  for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
    unsigned char *bad = malloc(n);
    assert_non_null(bad);
    memcpy(bad, orig, n);
    bad[offsets[i]] ^= 0x20;
    tu_spit(path, bad, n);
    expect_miss(f->root, "programs", key);
    free(bad);
  }
  /* A put repairs the entry. */
  assert_int_equal(nabla_diskcache_put(f->root, "programs", key, payload, sizeof payload),
                   NABLA_OK);
  expect_hit(f->root, "programs", key, payload, sizeof payload);
  free(orig);
}

static void test_truncated_file(void **state) {
  fixture *f = *state;
  const char *key = "truncate-me";
  unsigned char payload[100];
  fill_random(payload, sizeof payload, 6);
  assert_int_equal(nabla_diskcache_put(f->root, "probes", key, payload, sizeof payload), NABLA_OK);
  char path[PATH_CAP];
  only_entry(f, "probes", path);
  size_t n;
  unsigned char *orig = tu_slurp(path, &n);
  size_t klen = strlen(key);
  off_t cuts[] = {0, 1, 7, 8, 12, 16, 31, HEADER, (off_t)(HEADER + klen - 1),
                  (off_t)(HEADER + klen), (off_t)(HEADER + klen + 1), (off_t)n - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    tu_spit(path, orig, n);
    assert_int_equal(truncate(path, cuts[i]), 0);
    expect_miss(f->root, "probes", key);
  }
  /* A trailing extra byte is as wrong as a missing one. */
  unsigned char *longer = malloc(n + 1);
  assert_non_null(longer);
  memcpy(longer, orig, n);
  longer[n] = 0;
  tu_spit(path, longer, n + 1);
  expect_miss(f->root, "probes", key);
  tu_spit(path, orig, n);
  expect_hit(f->root, "probes", key, payload, sizeof payload);
  free(longer);
  free(orig);
}

static void test_foreign_file(void **state) {
  fixture *f = *state;
  const char *key = "foreign";
  assert_int_equal(nabla_diskcache_put(f->root, "programs", key, "payload", 7), NABLA_OK);
  char path[PATH_CAP];
  only_entry(f, "programs", path);
  size_t n;
  unsigned char *orig = tu_slurp(path, &n);

  size_t sizes[] = {0, 1, 31, 32, 33, 100, 4096};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *junk = malloc(sizes[i] + 1);
    assert_non_null(junk);
    fill_random(junk, sizes[i], 1000 + i);
    tu_spit(path, junk, sizes[i]);
    expect_miss(f->root, "programs", key);
    /* Garbage that starts with the right magic. */
    if (sizes[i] >= 8) {
      memcpy(junk, "NABLACL", 8);
      tu_spit(path, junk, sizes[i]);
      expect_miss(f->root, "programs", key);
    }
    free(junk);
  }

  unsigned char *bad = malloc(n);
  assert_non_null(bad);
  /* Wrong magic, otherwise valid (the checksum does not cover the header). */
  memcpy(bad, orig, n);
  memcpy(bad, "NABLACX", 8);
  tu_spit(path, bad, n);
  expect_miss(f->root, "programs", key);
  /* Another schema, otherwise valid. */
  for (uint32_t schema = 0; schema < 4; schema++) {
    if (schema == NABLA_DISKCACHE_SCHEMA) continue;
    memcpy(bad, orig, n);
    bad[8] = (unsigned char)schema;
    tu_spit(path, bad, n);
    expect_miss(f->root, "programs", key);
  }
  /* Absurd lengths must neither crash nor allocate. */
  memcpy(bad, orig, n);
  memset(bad + 12, 0xff, 4);
  tu_spit(path, bad, n);
  expect_miss(f->root, "programs", key);
  memcpy(bad, orig, n);
  memset(bad + 16, 0xff, 8);
  tu_spit(path, bad, n);
  expect_miss(f->root, "programs", key);
  free(bad);

  /* A directory, a FIFO (must not block) or a symlink at the entry path. */
  assert_int_equal(unlink(path), 0);
  assert_int_equal(mkdir(path, 0755), 0);
  expect_miss(f->root, "programs", key);
  assert_int_equal(rmdir(path), 0);
  assert_int_equal(mkfifo(path, 0644), 0);
  alarm(30); /* a blocking open of the FIFO would hang: let SIGALRM fail the test instead */
  expect_miss(f->root, "programs", key);
  alarm(0);
  assert_int_equal(unlink(path), 0);
  char real[PATH_CAP];
  pathf(real, "%s/real.bin", f->dir);
  tu_spit(real, orig, n);
  assert_int_equal(symlink(real, path), 0);
  expect_miss(f->root, "programs", key);
  assert_int_equal(unlink(path), 0);

  /* After all of that, a put works again. */
  assert_int_equal(nabla_diskcache_put(f->root, "programs", key, "payload", 7), NABLA_OK);
  expect_hit(f->root, "programs", key, "payload", 7);
  free(orig);
}

static void test_key_mismatch(void **state) {
  fixture *f = *state;
  char path_a[PATH_CAP], path_b[PATH_CAP];
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "key A", "AAAA", 4), NABLA_OK);
  only_entry(f, "programs", path_a);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "key B", "BBBB", 4), NABLA_OK);
  other_entry(f, "programs", path_a, path_b);

  size_t n;
  unsigned char *a = tu_slurp(path_a, &n);
  tu_spit(path_b, a, n); /* a valid file, under the wrong name */
  free(a);
  expect_miss(f->root, "programs", "key B");
  expect_hit(f->root, "programs", "key A", "AAAA", 4);

  /* foreach does not report A twice. */
  seen_set seen = {0};
  assert_int_equal(nabla_diskcache_foreach(f->root, "programs", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 1);
  assert_string_equal(seen.keys[0], "key A");
  seen_free(&seen);
}

static void test_hostile_namespaces(void **state) {
  fixture *f = *state;
  char hundred[101];
  memset(hundred, 'a', 100);
  hundred[100] = '\0';
  const char *bad[] = {"../x", "a/b", "", ".", "..", "Programs", "UPPER", "a b", "a.b", "/abs",
                       "x\n", hundred, "a\\b", NULL};
  seen_set seen = {0};
  for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
    void *data = (void *)1;
    size_t len = 7;
    assert_int_equal(nabla_diskcache_put(f->root, bad[i], "k", "v", 1), NABLA_INVALID_ARGUMENT);
    assert_int_equal(nabla_diskcache_get(f->root, bad[i], "k", &data, &len),
                     NABLA_INVALID_ARGUMENT);
    assert_null(data);
    assert_int_equal(len, 0);
    assert_int_equal(nabla_diskcache_foreach(f->root, bad[i], collect, &seen),
                     NABLA_INVALID_ARGUMENT);
  }
  assert_int_equal(seen.count, 0);

  /* Other bad arguments. */
  void *data = NULL;
  size_t len = 0;
  assert_int_equal(nabla_diskcache_put(NULL, "programs", "k", "v", 1), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_put("", "programs", "k", "v", 1), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", NULL, "v", 1), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "k", NULL, 1), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_get(NULL, "programs", "k", &data, &len), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_get("", "programs", "k", &data, &len), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_get(f->root, "programs", NULL, &data, &len),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_get(f->root, "programs", "k", NULL, &len),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_get(f->root, "programs", "k", &data, NULL),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_foreach(f->root, "programs", NULL, NULL),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_foreach(NULL, "programs", collect, &seen),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_clear(NULL), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_diskcache_clear(""), NABLA_INVALID_ARGUMENT);

  /* Nothing was created anywhere. */
  assert_int_equal(count_names(f->dir, NULL, NULL), 0);
  char up[PATH_CAP];
  pathf(up, "%s/x", f->dir);
  struct stat sb;
  assert_int_not_equal(lstat(up, &sb), 0);

  /* The edges of the valid set work. */
  const char *good[] = {"a", "0", "programs", "tuning", "probes", "a-b_c9",
                        "abcdefghijklmnopqrstuvwxyz012345"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    assert_int_equal(nabla_diskcache_put(f->root, good[i], "k", good[i], strlen(good[i])),
                     NABLA_OK);
    expect_hit(f->root, good[i], "k", good[i], strlen(good[i]));
  }
  char thirty_three[34];
  memset(thirty_three, 'z', 33);
  thirty_three[33] = '\0';
  assert_int_equal(nabla_diskcache_put(f->root, thirty_three, "k", "v", 1), NABLA_INVALID_ARGUMENT);
}

/* Walks `dir` recursively; counts regular files; fails on any file outside <root>/v1/<ns>/. */
static int count_files_checked(const char *dir, int depth, const char *root_dir) {
  int n = 0;
  DIR *d = opendir(dir);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[PATH_CAP];
    pathf(p, "%s/%s", dir, e->d_name);
    struct stat sb;
    assert_int_equal(lstat(p, &sb), 0);
    if (S_ISDIR(sb.st_mode)) {
      assert_true(depth < 3);
      n += count_files_checked(p, depth + 1, root_dir);
    } else {
      /* depth 3 = <dir>/root/v1/<ns>/<file> */
      assert_int_equal(depth, 3);
      assert_int_equal(strncmp(p, root_dir, strlen(root_dir)), 0);
      assert_int_equal(strlen(e->d_name), 36);
      assert_true(S_ISREG(sb.st_mode));
      n++;
    }
  }
  closedir(d);
  return n;
}

static void test_hostile_keys(void **state) {
  fixture *f = *state;
  char binary[256];
  for (int i = 0; i < 255; i++) binary[i] = (char)(i + 1);
  binary[255] = '\0';
  size_t long_len = 10 * 1024;
  char *long_key = malloc(long_len + 1);
  assert_non_null(long_key);
  for (size_t i = 0; i < long_len; i++) long_key[i] = "../"[i % 3];
  long_key[long_len] = '\0';
  const char *keys[] = {"../../etc/passwd", "/etc/passwd", "..", ".", "a/b\\c", "x\ny\tz",
                        "../../../../../../../../tmp/escape", "*", "%s%s%n", binary, long_key};
  size_t nkeys = sizeof keys / sizeof keys[0];
  for (size_t i = 0; i < nkeys; i++) {
    char payload[32];
    int plen = snprintf(payload, sizeof payload, "payload-%zu", i);
    assert_int_equal(nabla_diskcache_put(f->root, "programs", keys[i], payload, (size_t)plen),
                     NABLA_OK);
  }
  for (size_t i = 0; i < nkeys; i++) {
    char payload[32];
    int plen = snprintf(payload, sizeof payload, "payload-%zu", i);
    expect_hit(f->root, "programs", keys[i], payload, (size_t)plen);
  }
  /* Exactly one file per key, all inside <root>/v1/programs; nothing beside the root. */
  char root_ns[PATH_CAP];
  ns_dir(f, "programs", root_ns);
  assert_int_equal(count_names(f->dir, NULL, NULL), 1);
  assert_int_equal(count_files_checked(f->dir, 0, root_ns), (int)nkeys);

  seen_set seen = {0};
  assert_int_equal(nabla_diskcache_foreach(f->root, "programs", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, (int)nkeys);
  for (size_t i = 0; i < nkeys; i++) assert_true(seen_find(&seen, keys[i]) >= 0);
  seen_free(&seen);
  free(long_key);
}

static void test_unwritable(void **state) {
  fixture *f = *state;
  char root[PATH_CAP], file[PATH_CAP], dir[PATH_CAP], path[PATH_CAP];
  seen_set seen = {0};

  /* A root below a regular file: mkdir fails for everyone, root included. */
  pathf(file, "%s/plain-file", f->dir);
  tu_spit(file, "x", 1);
  pathf(root, "%s/sub/cache", file);
  assert_int_equal(nabla_diskcache_put(root, "programs", "k", "v", 1), NABLA_IO);
  expect_miss(root, "programs", "k");
  assert_int_equal(nabla_diskcache_foreach(root, "programs", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 0);
  assert_int_equal(nabla_diskcache_clear(root), NABLA_OK);

  /* The namespace directory is a regular file. */
  assert_int_equal(nabla_diskcache_put(f->root, "tuning", "k", "v", 1), NABLA_OK);
  ns_dir(f, "programs", dir);
  tu_spit(dir, "x", 1);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "k", "v", 1), NABLA_IO);
  expect_miss(f->root, "programs", "k");
  assert_int_equal(unlink(dir), 0);

  /* The rename fails (a non-empty directory sits at the entry path): no temp file is left. */
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "k", "v", 1), NABLA_OK);
  only_entry(f, "programs", path);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(mkdir(path, 0755), 0);
  char inner[PATH_CAP];
  pathf(inner, "%s/keep", path);
  tu_spit(inner, "x", 1);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "k", "v", 1), NABLA_IO);
  expect_miss(f->root, "programs", "k");
  assert_int_equal(count_names(dir, ".tmp.", NULL), 0);
  tu_remove_tree(path);

  if (geteuid() == 0) {
    print_message("running as root: skipping the chmod 0500 checks (root ignores modes)\n");
    return;
  }
  /* A read-only root: nothing can be created beneath it. */
  pathf(root, "%s/readonly", f->dir);
  assert_int_equal(mkdir(root, 0755), 0);
  assert_int_equal(chmod(root, 0500), 0);
  assert_int_equal(nabla_diskcache_put(root, "programs", "k", "v", 1), NABLA_IO);
  expect_miss(root, "programs", "k");
  assert_int_equal(chmod(root, 0700), 0);

  /* A read-only namespace directory: the put fails, the old entry stays readable. */
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "k", "old", 3), NABLA_OK);
  assert_int_equal(chmod(dir, 0500), 0);
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "k", "new", 3), NABLA_IO);
  expect_hit(f->root, "programs", "k", "old", 3);
  assert_int_equal(chmod(dir, 0700), 0);
}

/* ---- concurrency --------------------------------------------------------------------------- */

#define WRITERS 8
#define ITERS 200
#define SLOTS 5            /* distinct keys per writer */
#define SLOT_EVERY 10      /* a distinct-key put every this many iterations */
#define SELF_SEED UINT64_C(0x5e1f)

static void distinct_key(char *out, size_t cap, int writer, int slot) {
  snprintf(out, cap, "distinct/w%d/s%d", writer, slot);
}

/* [writer u32][iter u32][pattern ...][hash of everything before u64], all little-endian. */
static size_t make_payload(unsigned char *buf, int writer, int iter) {
  uint64_t r = nabla_hash64(&iter, sizeof iter, (uint64_t)writer);
  size_t len = 16 + (size_t)(r % 40000);
  for (int i = 0; i < 4; i++) {
    buf[i] = (unsigned char)((unsigned)writer >> (8 * i));
    buf[4 + i] = (unsigned char)((unsigned)iter >> (8 * i));
  }
  for (size_t i = 8; i < len - 8; i++) buf[i] = (unsigned char)(writer * 37 + iter * 11 + (int)i);
  uint64_t h = nabla_hash64(buf, len - 8, SELF_SEED);
  for (int i = 0; i < 8; i++) buf[len - 8 + i] = (unsigned char)(h >> (8 * i));
  return len;
}

/* 1 when the payload is one that make_payload wrote; its writer and iteration go out. */
static int payload_ok(const unsigned char *buf, size_t len, int *writer, int *iter) {
  if (len < 16) return 0;
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = (h << 8) | buf[len - 8 + i];
  if (h != nabla_hash64(buf, len - 8, SELF_SEED)) return 0;
  unsigned w = 0, it = 0;
  for (int i = 3; i >= 0; i--) {
    w = (w << 8) | buf[i];
    it = (it << 8) | buf[4 + i];
  }
  if (w >= WRITERS || it >= ITERS) return 0;
  for (size_t i = 8; i < len - 8; i++)
    if (buf[i] != (unsigned char)((int)w * 37 + (int)it * 11 + (int)i)) return 0;
  *writer = (int)w;
  *iter = (int)it;
  return 1;
}

/* Runs in a forked child: returns the exit code (0 = all well). */
static int writer_main(const char *root, int writer) {
  unsigned char *buf = malloc(40000 + 16);
  if (!buf) return 2;
  int rc = 0;
  for (int iter = 0; iter < ITERS && rc == 0; iter++) {
    size_t len = make_payload(buf, writer, iter);
    if (nabla_diskcache_put(root, "programs", "shared", buf, len) != NABLA_OK) rc = 3;
    if (iter % SLOT_EVERY == 0) {
      char key[64];
      distinct_key(key, sizeof key, writer, (iter / SLOT_EVERY) % SLOTS);
      if (nabla_diskcache_put(root, "programs", key, buf, len) != NABLA_OK) rc = 4;
      /* Only this writer writes this key, so it must read back exactly what it wrote. */
      void *back = NULL;
      size_t back_len = 0;
      if (nabla_diskcache_get(root, "programs", key, &back, &back_len) != NABLA_OK ||
          back_len != len || memcmp(back, buf, len) != 0)
        rc = 5;
      free(back);
    }
  }
  free(buf);
  return rc;
}

/* One get of `key` by the reader; returns 1 when it saw something wrong. `*published` turns 1 on
 * the first hit: from then on, since each put renames a complete file over the old one, a miss
 * would mean a reader saw a half-written or missing entry. */
static int check_hit(const char *root, const char *key, int want_writer, int *published,
                     int *hits) {
  void *data = NULL;
  size_t len = 0;
  int w = -1, it = -1, bad = 0;
  nabla_status st = nabla_diskcache_get(root, "programs", key, &data, &len);
  if (st == NABLA_OK) {
    (*hits)++;
    *published = 1;
    if (!payload_ok(data, len, &w, &it) || (want_writer >= 0 && w != want_writer)) bad = 1;
  } else if (st != NABLA_NOT_FOUND || *published) {
    bad = 1;
  }
  free(data);
  return bad;
}

static void test_concurrent_writers(void **state) {
  fixture *f = *state;
  pid_t pids[WRITERS];
  int exited[WRITERS] = {0}, codes[WRITERS] = {0};
  fflush(NULL);
  for (int w = 0; w < WRITERS; w++) {
    pids[w] = fork();
    assert_true(pids[w] >= 0);
    if (pids[w] == 0) _exit(writer_main(f->root, w));
  }

  /* Read while they write: every hit must be one complete payload. */
  int alive = WRITERS, hits = 0, bad = 0, shared_published = 0;
  int published[WRITERS][SLOTS] = {{0}};
  uint64_t seed = 17;
  while (alive > 0) {
    bad += check_hit(f->root, "shared", -1, &shared_published, &hits);
    int w = (int)(tu_rand_u64(&seed) % WRITERS), slot = (int)(tu_rand_u64(&seed) % SLOTS);
    char key[64];
    distinct_key(key, sizeof key, w, slot);
    bad += check_hit(f->root, key, w, &published[w][slot], &hits);
    for (int i = 0; i < WRITERS; i++) {
      int status = 0;
      if (exited[i] || waitpid(pids[i], &status, WNOHANG) != pids[i]) continue;
      exited[i] = 1;
      codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
      alive--;
    }
  }
  for (int i = 0; i < WRITERS; i++) assert_int_equal(codes[i], 0);
  assert_int_equal(bad, 0);
  shared_published = 1; /* every writer is done: it must be there now */
  bad += check_hit(f->root, "shared", -1, &shared_published, &hits);
  assert_int_equal(bad, 0);
  assert_true(hits > 0);

  char dir[PATH_CAP];
  ns_dir(f, "programs", dir);
  assert_int_equal(count_names(dir, ".tmp.", NULL), 0);
  assert_int_equal(count_names(dir, NULL, NULL), 1 + WRITERS * SLOTS);

  /* foreach: exactly the written keys, each with a verified payload; each distinct key holds
   * its writer's last write of that slot. */
  seen_set seen = {0};
  assert_int_equal(nabla_diskcache_foreach(f->root, "programs", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 1 + WRITERS * SLOTS);
  int i = seen_find(&seen, "shared"), w, it;
  assert_true(i >= 0);
  assert_true(payload_ok(seen.data[i], seen.len[i], &w, &it));
  for (int wr = 0; wr < WRITERS; wr++)
    for (int slot = 0; slot < SLOTS; slot++) {
      char key[64];
      distinct_key(key, sizeof key, wr, slot);
      i = seen_find(&seen, key);
      assert_true(i >= 0);
      assert_true(payload_ok(seen.data[i], seen.len[i], &w, &it));
      assert_int_equal(w, wr);
      int last = 0;
      for (int iter = 0; iter < ITERS; iter++)
        if (iter % SLOT_EVERY == 0 && (iter / SLOT_EVERY) % SLOTS == slot) last = iter;
      assert_int_equal(it, last);
    }
  seen_free(&seen);

  assert_int_equal(nabla_diskcache_clear(f->root), NABLA_OK);
  assert_int_equal(count_names(dir, NULL, NULL), 0);
  assert_int_equal(nabla_diskcache_foreach(f->root, "programs", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 0);
  expect_miss(f->root, "programs", "shared");
}

/* ---- foreach and clear ------------------------------------------------------------------- */

static void test_foreach_and_clear(void **state) {
  fixture *f = *state;
  time_t before = time(NULL);
  const char *pkeys[] = {"p1", "p2", "p3"};
  for (int i = 0; i < 3; i++)
    assert_int_equal(nabla_diskcache_put(f->root, "programs", pkeys[i], pkeys[i], 2), NABLA_OK);
  assert_int_equal(nabla_diskcache_put(f->root, "tuning", "t1", "{\"a\":1}", 7), NABLA_OK);
  assert_int_equal(nabla_diskcache_put(f->root, "tuning", "t2", "", 0), NABLA_OK);

  char pdir[PATH_CAP], tdir[PATH_CAP], p[PATH_CAP];
  ns_dir(f, "programs", pdir);
  ns_dir(f, "tuning", tdir);
  /* Strangers: an invalid *.bin, a fresh and a stale temp file, a subdirectory, a README. */
  pathf(p, "%s/0123456789abcdef0123456789abcdef.bin", pdir);
  tu_spit(p, "garbage", 7);
  char fresh_tmp[PATH_CAP], stale_tmp[PATH_CAP];
  pathf(fresh_tmp, "%s/00000000000000000000000000000000.bin.tmp.1.ab", pdir);
  tu_spit(fresh_tmp, "partial", 7);
  pathf(stale_tmp, "%s/00000000000000000000000000000001.bin.tmp.2.cd", tdir);
  tu_spit(stale_tmp, "partial", 7);
  struct timespec old[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
  assert_int_equal(utimensat(AT_FDCWD, stale_tmp, old, 0), 0);
  pathf(p, "%s/subdir.bin", pdir);
  assert_int_equal(mkdir(p, 0755), 0);
  pathf(p, "%s/README", pdir);
  tu_spit(p, "keep", 4);

  seen_set seen = {0};
  assert_int_equal(nabla_diskcache_foreach(f->root, "programs", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 3);
  for (int i = 0; i < 3; i++) {
    int j = seen_find(&seen, pkeys[i]);
    assert_true(j >= 0);
    assert_int_equal(seen.len[j], 2);
    assert_memory_equal(seen.data[j], pkeys[i], 2);
    assert_true(seen.mtime[j] >= before - 5 && seen.mtime[j] <= time(NULL) + 5);
  }
  seen_free(&seen);
  assert_int_equal(nabla_diskcache_foreach(f->root, "tuning", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 2);
  assert_true(seen_find(&seen, "t1") >= 0 && seen_find(&seen, "t2") >= 0);
  seen_free(&seen);
  assert_int_equal(nabla_diskcache_foreach(f->root, "probes", collect, &seen), NABLA_OK);
  assert_int_equal(seen.count, 0);

  /* Things clear must not touch: another schema's files, files beside the namespaces. */
  char other[PATH_CAP], beside[PATH_CAP];
  pathf(other, "%s/v0/programs", f->root);
  pathf(p, "%s/v0", f->root);
  assert_int_equal(mkdir(p, 0755), 0);
  assert_int_equal(mkdir(other, 0755), 0);
  pathf(other, "%s/v0/programs/old.bin", f->root);
  tu_spit(other, "old", 3);
  pathf(beside, "%s/v%d/note.bin", f->root, NABLA_DISKCACHE_SCHEMA);
  tu_spit(beside, "note", 4);

  assert_int_equal(nabla_diskcache_clear(f->root), NABLA_OK);
  for (int i = 0; i < 3; i++) expect_miss(f->root, "programs", pkeys[i]);
  expect_miss(f->root, "tuning", "t1");
  struct stat sb;
  assert_int_equal(count_names(pdir, ".bin", NULL), 2); /* subdir.bin and the fresh temp */
  assert_int_equal(lstat(fresh_tmp, &sb), 0);           /* a writer may still be on it */
  assert_int_not_equal(lstat(stale_tmp, &sb), 0);
  assert_int_equal(count_names(tdir, NULL, NULL), 0);
  assert_int_equal(lstat(other, &sb), 0);
  assert_int_equal(lstat(beside, &sb), 0);
  assert_int_equal(lstat(f->root, &sb), 0);
  pathf(p, "%s/README", pdir);
  assert_int_equal(lstat(p, &sb), 0);

  /* Puts work after a clear; clearing twice is fine. */
  assert_int_equal(nabla_diskcache_put(f->root, "programs", "p1", "p1", 2), NABLA_OK);
  expect_hit(f->root, "programs", "p1", "p1", 2);
  assert_int_equal(nabla_diskcache_clear(f->root), NABLA_OK);
  assert_int_equal(nabla_diskcache_clear(f->root), NABLA_OK);
  expect_miss(f->root, "programs", "p1");
}

/* ---- root resolution --------------------------------------------------------------------- */


static void test_root_env(void **state) {
  (void)state;
  tu_env saved[3];
  saved[0] = tu_env_save("NABLACL_CACHE_DIR");
  saved[1] = tu_env_save("XDG_CACHE_HOME");
  saved[2] = tu_env_save("HOME");
  char out[256];

  setenv("NABLACL_CACHE_DIR", "off", 1);
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  setenv("HOME", "/home/u", 1);
  memset(out, 'x', sizeof out);
  assert_int_equal(nabla_diskcache_root(out, sizeof out), 0);
  assert_string_equal(out, "");

  setenv("NABLACL_CACHE_DIR", "/explicit/dir", 1);
  assert_int_equal(nabla_diskcache_root(out, sizeof out), 1);
  assert_string_equal(out, "/explicit/dir");

  setenv("NABLACL_CACHE_DIR", "", 1); /* empty = unset */
  assert_int_equal(nabla_diskcache_root(out, sizeof out), 1);
  assert_string_equal(out, "/xdg/nablacl");

  unsetenv("NABLACL_CACHE_DIR");
  assert_int_equal(nabla_diskcache_root(out, sizeof out), 1);
  assert_string_equal(out, "/xdg/nablacl");

  setenv("XDG_CACHE_HOME", "relative/xdg", 1); /* the XDG spec: ignore relative paths */
  assert_int_equal(nabla_diskcache_root(out, sizeof out), 1);
  assert_string_equal(out, "/home/u/.cache/nablacl");

  unsetenv("XDG_CACHE_HOME");
  assert_int_equal(nabla_diskcache_root(out, sizeof out), 1);
  assert_string_equal(out, "/home/u/.cache/nablacl");

  unsetenv("HOME");
  memset(out, 'x', sizeof out);
  assert_int_equal(nabla_diskcache_root(out, sizeof out), 0);
  assert_string_equal(out, "");

  /* Too small a buffer is no root rather than a truncated one. */
  setenv("NABLACL_CACHE_DIR", "/a/rather/long/cache/directory", 1);
  char small[8];
  assert_int_equal(nabla_diskcache_root(small, sizeof small), 0);
  assert_string_equal(small, "");
  assert_int_equal(nabla_diskcache_root(NULL, 0), 0);
  assert_int_equal(nabla_diskcache_root(out, 0), 0);

  for (int i = 0; i < 3; i++) tu_env_restore(&saved[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hash64),
      cmocka_unit_test(test_root_env),
      cmocka_unit_test_setup_teardown(test_miss_on_empty, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_round_trip, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_overwrite, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_file, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_truncated_file, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_foreign_file, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_key_mismatch, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_hostile_namespaces, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_hostile_keys, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_unwritable, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_foreach_and_clear, tu_dir_setup, tu_dir_teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_writers, tu_dir_setup, tu_dir_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
