/*
 * diskcache.c — the versioned on-disk store. The format is specified in diskcache.h and in full
 * in docs/cache-format.md; keep the three in step.
 *
 * Every file operation on an entry goes through a directory fd or an O_NOFOLLOW open, and every
 * entry file is opened O_NONBLOCK and checked to be a regular file, so a symlink, a FIFO or a
 * directory planted at an entry's path is a miss, never a hang or a read of something else.
 */
#include "diskcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ---- format constants (see docs/cache-format.md) ---------------------------------------- */

#define HEADER_SIZE 32u
#define MAX_KEY_LEN ((uint64_t)16 << 20)     /* 16 MiB */
#define MAX_PAYLOAD_LEN ((uint64_t)1 << 30)  /* 1 GiB */
#define NS_MAX_LEN 32u
#define HASH_HEX_LEN 32u                     /* file name: 32 hex digits + ".bin" */
#define ENTRY_NAME_LEN (HASH_HEX_LEN + 4u)
#define TMP_MARK ".tmp."
#define TMP_STALE_SECONDS 60                 /* younger temp files belong to a writer in flight */
#define TMP_OPEN_ATTEMPTS 16

/* Seeds of nabla_hash64: the two halves of the file name and the checksum chain. */
#define NAME_SEED_HI UINT64_C(0x6e61626c61636c31) /* "nablacl1" */
#define NAME_SEED_LO UINT64_C(0x6e61626c61636c32) /* "nablacl2" */
#define CHECKSUM_SEED UINT64_C(0x6e61626c6173756d) /* "nablasum" */

static const unsigned char kMagic[8] = {'N', 'A', 'B', 'L', 'A', 'C', 'L', '\0'};

/* ---- hashing ----------------------------------------------------------------------------- */

/* splitmix64 finalizer: spreads every input bit over the whole word. */
static uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= UINT64_C(0xbf58476d1ce4e5b9);
  z ^= z >> 27;
  z *= UINT64_C(0x94d049bb133111eb);
  z ^= z >> 31;
  return z;
}

uint64_t nabla_hash64(const void *data, size_t len, uint64_t seed) {
  const unsigned char *p = data;
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ mix64(seed + UINT64_C(0x9e3779b97f4a7c15));
  if (!p) len = 0;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= UINT64_C(0x100000001b3);
  }
  return mix64(h);
}

static uint64_t entry_checksum(const void *key, size_t key_len, const void *payload, size_t len) {
  return nabla_hash64(payload, len, nabla_hash64(key, key_len, CHECKSUM_SEED));
}

/* "<32 hex>.bin" into out[ENTRY_NAME_LEN + 1]. */
static void entry_name(const char *key, size_t key_len, char *out) {
  snprintf(out, ENTRY_NAME_LEN + 1, "%016" PRIx64 "%016" PRIx64 ".bin",
           nabla_hash64(key, key_len, NAME_SEED_HI), nabla_hash64(key, key_len, NAME_SEED_LO));
}

/* ---- small helpers ----------------------------------------------------------------------- */

static int ns_valid(const char *ns) {
  size_t n = 0;
  if (!ns) return 0;
  for (; ns[n]; n++) {
    char c = ns[n];
    if (n >= NS_MAX_LEN) return 0;
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
  }
  return n > 0;
}

static int root_valid(const char *root) { return root && root[0]; }

static int is_entry_name(const char *name) {
  if (strlen(name) != ENTRY_NAME_LEN || strcmp(name + HASH_HEX_LEN, ".bin") != 0) return 0;
  for (size_t i = 0; i < HASH_HEX_LEN; i++) {
    char c = name[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
  }
  return 1;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

__attribute__((format(printf, 1, 2))) static char *path_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

static void store_u32le(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void store_u64le(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t load_u32le(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint64_t load_u64le(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* 1 when exactly len bytes were read; a short file, an error or EOF gives 0. */
static int read_full(int fd, void *buf, size_t len) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    p += n;
    len -= (size_t)n;
  }
  return 1;
}

static int write_full(int fd, const void *buf, size_t len) {
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    p += n;
    len -= (size_t)n;
  }
  return 1;
}

/* mkdir -p with mode 0700 (the cache is private to its user); 1 when `path` ends up being a
 * directory. */
static int make_dirs(const char *path) {
  int ok = 0;
  struct stat sb;
  char *buf = malloc(strlen(path) + 1);
  if (!buf) goto done;
  strcpy(buf, path);
  for (char *p = buf + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    /* Another process may create the same directory at the same moment: EEXIST is fine, and
     * any other error only matters if the directory is not there afterwards. */
    if (mkdir(buf, 0700) != 0 && errno != EEXIST && (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode)))
      goto done;
    *p = saved;
    if (saved == '\0') break;
  }
  ok = stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode);
done:
  free(buf);
  return ok;
}

/*
 * Reads and fully verifies the entry open on `fd`. With want_key, the stored key must equal it
 * (the caller's name already matched); without, the stored key is handed out in *key_out.
 * NABLA_NOT_FOUND for anything that does not verify, NABLA_OUT_OF_MEMORY when a verified-size
 * buffer cannot be allocated.
 */
static nabla_status read_entry(int fd, const char *want_key, size_t want_len, char **key_out,
                               void **data_out, size_t *len_out, time_t *mtime_out) {
  nabla_status st = NABLA_NOT_FOUND;
  unsigned char header[HEADER_SIZE];
  char *key = NULL;
  unsigned char *payload = NULL;
  struct stat sb;
  /* Only this user's files: one planted by anybody else is a miss, whatever it holds. */
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_uid != geteuid()) goto done;
  if (sb.st_size < (off_t)HEADER_SIZE ||
      (uint64_t)sb.st_size > HEADER_SIZE + MAX_KEY_LEN + MAX_PAYLOAD_LEN)
    goto done;
  if (!read_full(fd, header, HEADER_SIZE) || memcmp(header, kMagic, sizeof kMagic) != 0) goto done;
  uint32_t schema = load_u32le(header + 8);
  uint64_t key_len = load_u32le(header + 12);
  uint64_t payload_len = load_u64le(header + 16);
  uint64_t checksum = load_u64le(header + 24);
  if (schema != NABLA_DISKCACHE_SCHEMA || key_len > MAX_KEY_LEN || payload_len > MAX_PAYLOAD_LEN ||
      HEADER_SIZE + key_len + payload_len != (uint64_t)sb.st_size)
    goto done;
  if (want_key && key_len != want_len) goto done;

  key = malloc((size_t)key_len + 1);
  if (!key) {
    st = NABLA_OUT_OF_MEMORY;
    goto done;
  }
  if (!read_full(fd, key, (size_t)key_len)) goto done;
  key[key_len] = '\0';
  /* Keys are C strings: an embedded NUL can only come from a foreign or corrupt file. */
  if (memchr(key, '\0', (size_t)key_len)) goto done;
  if (want_key && memcmp(key, want_key, (size_t)key_len) != 0) goto done;

  payload = malloc(payload_len ? (size_t)payload_len : 1);
  if (!payload) {
    st = NABLA_OUT_OF_MEMORY;
    goto done;
  }
  if (!read_full(fd, payload, (size_t)payload_len)) goto done;
  if (entry_checksum(key, (size_t)key_len, payload, (size_t)payload_len) != checksum) goto done;

  *data_out = payload;
  *len_out = (size_t)payload_len;
  payload = NULL;
  if (key_out) {
    *key_out = key;
    key = NULL;
  }
  if (mtime_out) *mtime_out = sb.st_mtime;
  st = NABLA_OK;
done:
  free(key);
  free(payload);
  return st;
}

/* Creates "<final>.tmp.<pid>.<16 hex>" exclusively; returns its fd (or -1) and its name. */
static int open_temp(const char *final, char **tmp_out) {
  long pid = (long)getpid();
  *tmp_out = NULL;
  for (unsigned attempt = 0; attempt < TMP_OPEN_ATTEMPTS; attempt++) {
    /* No global counter (no mutable globals): the time, this thread's stack address and the
     * attempt make the name unique between threads; the pid between processes. O_EXCL makes
     * a clash a retry, never a shared file. */
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t salt[4] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)(uintptr_t)&ts,
                        attempt};
    char *tmp = path_printf("%s" TMP_MARK "%ld.%016" PRIx64, final, pid,
                            nabla_hash64(salt, sizeof salt, (uint64_t)pid));
    if (!tmp) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
      *tmp_out = tmp;
      return fd;
    }
    int err = errno;
    free(tmp);
    if (err != EEXIST) {
      errno = err;
      return -1;
    }
  }
  errno = EEXIST;
  return -1;
}

/* ---- public ------------------------------------------------------------------------------ */

int nabla_diskcache_root(char *out, size_t len) {
  const char *env;
  int n;
  if (!out || len == 0) return 0;
  out[0] = '\0';
  if ((env = getenv("NABLACL_CACHE_DIR")) && env[0]) {
    if (strcmp(env, "off") == 0) return 0;
    n = snprintf(out, len, "%s", env);
  } else if ((env = getenv("XDG_CACHE_HOME")) && env[0] == '/') {
    /* The XDG spec says to ignore a relative XDG_CACHE_HOME. */
    n = snprintf(out, len, "%s/nablacl", env);
  } else if ((env = getenv("HOME")) && env[0]) {
    n = snprintf(out, len, "%s/.cache/nablacl", env);
  } else {
    return 0;
  }
  if (n < 0 || (size_t)n >= len) {
    out[0] = '\0';
    return 0;
  }
  return 1;
}

int nabla_diskcache_root_check(const char *root, char *why, size_t len) {
  struct stat sb;
  if (!root_valid(root)) {
    if (why && len) snprintf(why, len, "no cache directory");
    return 1;
  }
  if (stat(root, &sb) != 0) {
    if (errno == ENOENT) return 0; /* created 0700 by the first write */
    if (why && len) snprintf(why, len, "cache directory %s: %s", root, strerror(errno));
    return 1;
  }
  if (!S_ISDIR(sb.st_mode)) {
    if (why && len) snprintf(why, len, "cache directory %s is not a directory", root);
    return 1;
  }
  if (sb.st_uid != geteuid()) {
    if (why && len)
      snprintf(why, len, "cache directory %s is owned by uid %ld, not by this user (uid %ld)", root,
               (long)sb.st_uid, (long)geteuid());
    return 1;
  }
  if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
    if (why && len)
      snprintf(why, len, "cache directory %s is writable by %s (mode %03o; chmod go-w to use it)", root,
               (sb.st_mode & S_IWOTH) ? "others" : "its group", (unsigned)(sb.st_mode & 0777));
    return 1;
  }
  return 0;
}

nabla_status nabla_diskcache_remove(const char *root, const char *ns, const char *key) {
  char name[ENTRY_NAME_LEN + 1];
  if (!root_valid(root) || !ns_valid(ns) || !key) return NABLA_INVALID_ARGUMENT;
  entry_name(key, strlen(key), name);
  char *path = path_printf("%s/v%d/%s/%s", root, NABLA_DISKCACHE_SCHEMA, ns, name);
  if (!path) return NABLA_OUT_OF_MEMORY;
  nabla_status st = unlink(path) == 0 || errno == ENOENT ? NABLA_OK : NABLA_IO;
  free(path);
  return st;
}

nabla_status nabla_diskcache_get(const char *root, const char *ns, const char *key, void **data,
                                 size_t *len) {
  nabla_status st = NABLA_NOT_FOUND;
  char name[ENTRY_NAME_LEN + 1];
  char *path = NULL;
  int fd = -1;
  size_t key_len;
  if (data) *data = NULL;
  if (len) *len = 0;
  if (!root_valid(root) || !ns_valid(ns) || !key || !data || !len) return NABLA_INVALID_ARGUMENT;
  key_len = strlen(key);
  if (key_len > MAX_KEY_LEN) goto done; /* could never have been stored */
  entry_name(key, key_len, name);
  path = path_printf("%s/v%d/%s/%s", root, NABLA_DISKCACHE_SCHEMA, ns, name);
  if (!path) {
    st = NABLA_OUT_OF_MEMORY;
    goto done;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) goto done;
  st = read_entry(fd, key, key_len, NULL, data, len, NULL);
done:
  if (fd >= 0) close(fd);
  free(path);
  return st;
}

nabla_status nabla_diskcache_put(const char *root, const char *ns, const char *key,
                                 const void *data, size_t len) {
  nabla_status st = NABLA_IO;
  char name[ENTRY_NAME_LEN + 1];
  unsigned char header[HEADER_SIZE];
  char *dir = NULL, *final = NULL, *tmp = NULL;
  int fd = -1, rc;
  size_t key_len;
  if (!root_valid(root) || !ns_valid(ns) || !key || (!data && len > 0))
    return NABLA_INVALID_ARGUMENT;
  key_len = strlen(key);
  if (key_len > MAX_KEY_LEN || (uint64_t)len > MAX_PAYLOAD_LEN) return NABLA_INVALID_ARGUMENT;

  entry_name(key, key_len, name);
  dir = path_printf("%s/v%d/%s", root, NABLA_DISKCACHE_SCHEMA, ns);
  final = dir ? path_printf("%s/%s", dir, name) : NULL;
  if (!final) {
    st = NABLA_OUT_OF_MEMORY;
    goto done;
  }
  memcpy(header, kMagic, sizeof kMagic);
  store_u32le(header + 8, NABLA_DISKCACHE_SCHEMA);
  store_u32le(header + 12, (uint32_t)key_len);
  store_u64le(header + 16, (uint64_t)len);
  store_u64le(header + 24, entry_checksum(key, key_len, data, len));

  /* Try the common case (directory exists) first; create it only when it is missing. */
  fd = open_temp(final, &tmp);
  if (fd < 0 && errno == ENOENT && make_dirs(dir)) fd = open_temp(final, &tmp);
  if (fd < 0) goto done;
  if (!write_full(fd, header, HEADER_SIZE) || !write_full(fd, key, key_len) ||
      !write_full(fd, data, len))
    goto done;
  /* No fsync: after a crash a half-written entry fails its checksum and is a miss, which is
   * all a cache needs; syncing every put would cost more than the compile it saves. */
  rc = close(fd);
  fd = -1;
  if (rc != 0) goto done;
  if (rename(tmp, final) != 0) goto done;
  st = NABLA_OK;
done:
  if (fd >= 0) close(fd);
  if (tmp && st != NABLA_OK) unlink(tmp);
  free(tmp);
  free(final);
  free(dir);
  return st;
}

/* The next entry of a listing, or NULL at its end; a read error also ends it, with *st set to
 * NABLA_IO. */
static struct dirent *next_entry(DIR *d, nabla_status *st) {
  errno = 0;
  struct dirent *e = readdir(d);
  if (!e && errno) *st = NABLA_IO;
  return e;
}

/* Opens a directory for listing. A missing directory is not an error: NABLA_OK, *out NULL. */
static nabla_status open_listing(const char *dir, DIR **out) {
  *out = NULL;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return (errno == ENOENT || errno == ENOTDIR) ? NABLA_OK : NABLA_IO;
  *out = fdopendir(fd);
  if (*out) return NABLA_OK;
  close(fd);
  return NABLA_IO;
}

nabla_status nabla_diskcache_foreach(const char *root, const char *ns,
                                     nabla_diskcache_visit visit, void *user) {
  nabla_status st = NABLA_OK;
  char *dir = NULL, *key = NULL;
  void *data = NULL;
  DIR *d = NULL;
  if (!root_valid(root) || !ns_valid(ns) || !visit) return NABLA_INVALID_ARGUMENT;
  dir = path_printf("%s/v%d/%s", root, NABLA_DISKCACHE_SCHEMA, ns);
  if (!dir) {
    st = NABLA_OUT_OF_MEMORY;
    goto done;
  }
  st = open_listing(dir, &d);
  if (!d) goto done;
  for (struct dirent *e; (e = next_entry(d, &st));) {
    if (!is_entry_name(e->d_name)) continue; /* temp files, strangers */
    int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) continue;
    size_t len = 0;
    time_t mtime = 0;
    nabla_status rs = read_entry(fd, NULL, 0, &key, &data, &len, &mtime);
    close(fd);
    if (rs == NABLA_OUT_OF_MEMORY) {
      st = rs;
      goto done;
    }
    if (rs != NABLA_OK) continue;
    /* A valid file under another key's name (copied or renamed by hand) is not an entry:
     * get() could never find it under the key it holds. */
    char expect[ENTRY_NAME_LEN + 1];
    entry_name(key, strlen(key), expect);
    if (strcmp(expect, e->d_name) == 0) visit(key, data, len, mtime, user);
    free(key);
    free(data);
    key = NULL;
    data = NULL;
  }
done:
  free(key);
  free(data);
  if (d) closedir(d);
  free(dir);
  return st;
}

/* Clears one namespace directory; takes ownership of nfd. */
static nabla_status clear_namespace(int nfd, time_t now) {
  nabla_status st = NABLA_OK;
  DIR *d = fdopendir(nfd);
  if (!d) {
    close(nfd);
    return NABLA_IO;
  }
  for (struct dirent *e; (e = next_entry(d, &st));) {
    const char *name = e->d_name;
    int is_tmp = strstr(name, ".bin" TMP_MARK) != NULL;
    if (!is_tmp && !ends_with(name, ".bin")) continue;
    struct stat sb;
    if (fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(sb.st_mode)) continue;
    if (is_tmp && now - sb.st_mtime < TMP_STALE_SECONDS) continue; /* a writer in flight */
    if (unlinkat(dirfd(d), name, 0) != 0 && errno != ENOENT) st = NABLA_IO;
  }
  closedir(d);
  return st;
}

nabla_status nabla_diskcache_clear(const char *root) {
  nabla_status st = NABLA_OK;
  char *vdir = NULL;
  DIR *d = NULL;
  time_t now = time(NULL);
  if (!root_valid(root)) return NABLA_INVALID_ARGUMENT;
  vdir = path_printf("%s/v%d", root, NABLA_DISKCACHE_SCHEMA);
  if (!vdir) {
    st = NABLA_OUT_OF_MEMORY;
    goto done;
  }
  st = open_listing(vdir, &d);
  if (!d) goto done;
  for (struct dirent *e; (e = next_entry(d, &st));) {
    if (!ns_valid(e->d_name)) continue; /* ".", "..", strangers */
    /* O_NOFOLLOW: a symlinked "namespace" is not ours to empty. */
    int nfd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (nfd < 0) continue;
    if (clear_namespace(nfd, now) != NABLA_OK) st = NABLA_IO;
  }
done:
  if (d) closedir(d);
  free(vdir);
  return st;
}
