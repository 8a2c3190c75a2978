/*
 * The public face of the on-disk caches: where they are, what they hold, clearing them.
 * The store itself is diskcache.c; this file only reads entries back for people (namespace
 * by namespace, decoding what each kind of key and payload means).
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "diskcache.h"
#include "internal.h"
#include "tune.h"

nabla_status nabla_cache_dir(char *buf, size_t len) {
  char root[NABLA_PATH_LEN];
  if (!buf || !len) return NABLA_INVALID_ARGUMENT;
  buf[0] = '\0';
  if (!nabla_diskcache_root(root, sizeof root)) return NABLA_NOT_FOUND;
  if (strlen(root) >= len) return NABLA_BUFFER_TOO_SMALL;
  snprintf(buf, len, "%s", root);
  return NABLA_OK;
}

/* The root to use: `dir`, else the default one. 0 when caching is off. */
static int resolve_root(const char *dir, char *root, size_t len) {
  if (dir) {
    if (!*dir || strlen(dir) >= len) return 0;
    snprintf(root, len, "%s", dir);
    return 1;
  }
  return nabla_diskcache_root(root, len);
}

/* A namespace directory name as diskcache accepts it: 1-32 of [a-z0-9_-]. */
static int ns_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 32) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
      return 0;
  return 1;
}

static int cmp_names(const void *a, const void *b) { return strcmp(a, b); }

#define MAX_NAMESPACES 64

typedef struct {
  nabla_cache_visit visit;
  void *user;
  const char *ns;
  int stopped;
} walk_state;

static void iso_date(time_t t, char *buf, size_t len) {
  struct tm tm;
  if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(buf, len, "unknown");
}

static const char *json_str(const cJSON *obj, const char *name) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(item) && item->valuestring ? item->valuestring : "";
}

/* Line `n` (0-based) of a key, copied to buf (truncated). */
static void key_line(const char *key, int n, char *buf, size_t len) {
  const char *s = key;
  for (int i = 0; i < n && s; i++) {
    s = strchr(s, '\n');
    if (s) s++;
  }
  buf[0] = '\0';
  if (!s) return;
  size_t l = strcspn(s, "\n");
  if (l >= len) l = len - 1;
  memcpy(buf, s, l);
  buf[l] = '\0';
}

static void visit_entry(const char *key, const void *data, size_t len, time_t mtime, void *user) {
  walk_state *w = user;
  if (w->stopped) return;
  nabla_cache_entry e;
  char date[32], device[1600] = "", kernel[64] = "", params[1024] = "", text[96];
  char *params_json = NULL;
  cJSON *root = NULL;
  memset(&e, 0, sizeof e);
  iso_date(mtime, date, sizeof date);
  e.kind = w->ns;
  e.key = key;
  e.ms = -1.0;
  e.bytes = len;
  e.dtype = e.shape_class = "";
  if (strcmp(w->ns, NABLA_TUNING_NS) == 0 || strcmp(w->ns, NABLA_TUNING_PROGRESS_NS) == 0) {
    root = cJSON_ParseWithLength(data, len);
    snprintf(device, sizeof device, "%s", json_str(root, "device"));
    snprintf(kernel, sizeof kernel, "%s", json_str(root, "kernel"));
    if (strcmp(w->ns, NABLA_TUNING_NS) == 0) {
      const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "params");
      const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "ms");
      const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
      if (cJSON_IsObject(p)) params_json = cJSON_PrintUnformatted(p);
      if (cJSON_IsNumber(ms)) e.ms = ms->valuedouble;
      if (cJSON_IsNumber(hd)) e.head_dim = hd->valueint;
      e.dtype = json_str(root, "dtype");
      e.shape_class = json_str(root, "shape_class");
      if (*json_str(root, "date")) snprintf(date, sizeof date, "%s", json_str(root, "date"));
    } else {
      const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "candidates");
      if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "complete")))
        snprintf(text, sizeof text, "checkpoint: complete");
      else
        snprintf(text, sizeof text, "checkpoint: %d configurations", cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0);
      snprintf(params, sizeof params, "%s", text);
    }
  } else if (strchr(key, '\n')) {
    /* programs (and similar): device description, stage, build options, source hash */
    key_line(key, 0, device, sizeof device);
    key_line(key, 1, kernel, sizeof kernel);
    key_line(key, 2, params, sizeof params);
  }
  e.device = device;
  e.kernel = kernel;
  e.params = params_json ? params_json : params;
  e.date = date;
  if (w->visit(&e, w->user)) w->stopped = 1;
  cJSON_free(params_json);
  cJSON_Delete(root);
}

nabla_status nabla_cache_list(const char *dir, nabla_cache_visit visit, void *user) {
  char root[NABLA_PATH_LEN], path[NABLA_PATH_LEN + 32];
  char (*names)[40] = NULL;
  int count = 0;
  nabla_status st = NABLA_OK;
  if (!visit) return NABLA_INVALID_ARGUMENT;
  if (!resolve_root(dir, root, sizeof root)) return dir ? NABLA_INVALID_ARGUMENT : NABLA_NOT_FOUND;
  snprintf(path, sizeof path, "%s/v%d", root, NABLA_DISKCACHE_SCHEMA);
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return NABLA_OK; /* nothing stored yet (or not a directory): no entries */
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return NABLA_IO;
  }
  names = calloc(MAX_NAMESPACES, sizeof *names);
  if (!names) {
    closedir(d);
    return NABLA_OUT_OF_MEMORY;
  }
  struct dirent *de;
  while ((de = readdir(d)) && count < MAX_NAMESPACES) {
    struct stat sb;
    if (!ns_name_ok(de->d_name)) continue;
    if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(sb.st_mode)) continue;
    memcpy(names[count++], de->d_name, strlen(de->d_name) + 1); /* <= 32 bytes (ns_name_ok) */
  }
  closedir(d);
  qsort(names, (size_t)count, sizeof names[0], cmp_names);
  walk_state w = {visit, user, NULL, 0};
  for (int i = 0; i < count && !w.stopped; i++) {
    w.ns = names[i];
    nabla_status rs = nabla_diskcache_foreach(root, names[i], visit_entry, &w);
    if (rs != NABLA_OK && st == NABLA_OK) st = rs;
  }
  free(names);
  return st;
}

nabla_status nabla_cache_clear(const char *dir) {
  char root[NABLA_PATH_LEN];
  if (!resolve_root(dir, root, sizeof root)) return dir ? NABLA_INVALID_ARGUMENT : NABLA_NOT_FOUND;
  return nabla_diskcache_clear(root);
}
