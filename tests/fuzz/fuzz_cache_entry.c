/*
 * libFuzzer harness: every reader of disk-cache entries. The first input byte picks a namespace
 * (programs, tuning, tuning-progress, probes, tensormaps) and a mode; the rest is
 *   mode 0: a whole entry file, planted at the entry's path: nabla_diskcache_get,
 *           nabla_diskcache_foreach and nabla_cache_list must treat anything that does not verify
 *           as a miss (docs/cache-format.md);
 *   mode 1: a payload, stored properly under a real key, so the readers behind the file checks
 *           run on it: the programs frame (nabla_program_unframe) and the listing's parse of
 *           keys and tuning JSON (nabla_cache_list).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diskcache.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const namespaces[] = {"programs", "tuning", "tuning-progress", "probes", "tensormaps"};

static void visit(const char *key, const void *payload, size_t len, time_t mtime, void *user) {
  (void)payload, (void)mtime;
  if (!key) abort();
  *(size_t *)user += len;
}

static int list_visit(const nabla_cache_entry *e, void *user) {
  (void)user;
  if (!e || !e->key || !e->device || !e->kernel || !e->params) abort();
  return 0;
}

static char root[96];

static void write_file(const char *path, const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fwrite(data, 1, size, f);
  fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const char *ns = namespaces[(data[0] >> 1) % 5];
  const int payload_mode = data[0] & 1;
  const char *key = "device description\nstage\n-DNABLA_DTYPE=1 -DHEAD_DIM=64\n0123456789abcdef";
  char dir[160], path[256];
  if (!root[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%.40s/fuzz_cache.%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    mkdir(root, 0700);
  }
  snprintf(dir, sizeof dir, "%s/v%d/%s", root, NABLA_DISKCACHE_SCHEMA, ns);
  char name[40];
  snprintf(name, sizeof name, "%016" PRIx64 "%016" PRIx64 ".bin",
           nabla_hash64(key, strlen(key), UINT64_C(0x6e61626c61636c31)),
           nabla_hash64(key, strlen(key), UINT64_C(0x6e61626c61636c32)));
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (payload_mode) {
    if (nabla_diskcache_put(root, ns, key, data + 1, size - 1) != NABLA_OK) return 0;
  } else {
    char v[128];
    snprintf(v, sizeof v, "%s/v%d", root, NABLA_DISKCACHE_SCHEMA);
    mkdir(v, 0700);
    mkdir(dir, 0700);
    write_file(path, data + 1, size - 1);
  }
  void *got = NULL;
  size_t len = 0, seen = 0;
  if (nabla_diskcache_get(root, ns, key, &got, &len) == NABLA_OK) {
    if (!got) abort();
    size_t bin_len = 0;
    const unsigned char *bin = nabla_program_unframe(got, len, key, &bin_len);
    if (bin && (bin < (const unsigned char *)got || bin + bin_len > (const unsigned char *)got + len)) abort();
    free(got);
  }
  nabla_diskcache_foreach(root, ns, visit, &seen);
  nabla_cache_list(root, list_visit, NULL);
  unlink(path);
  return 0;
}
