/* cli_outputs.c — the commands' output files (see cli_outputs.h). */
#define _XOPEN_SOURCE 700 /* realpath */
#include "cli_outputs.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_common.h"

/* What a path names: the file replaced or created there once symbolic links are followed. */
typedef struct {
  int exists;
  dev_t dev;
  ino_t ino;
  char *name; /* the resolved path (directory resolved, base name appended when missing) */
} file_id;

static char *dir_of(const char *path) {
  char *dir = strdup(path);
  if (!dir) return NULL;
  char *slash = strrchr(dir, '/');
  if (!slash) strcpy(dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  return dir;
}

/* Resolves `path`: 0, or -1 with errno (ENOENT for a link to a missing file, or a missing
 * directory). */
static int identify(const char *path, file_id *id) {
  struct stat sb;
  memset(id, 0, sizeof *id);
  if (stat(path, &sb) == 0) { /* exists (links followed) */
    id->exists = 1;
    id->dev = sb.st_dev;
    id->ino = sb.st_ino;
    id->name = realpath(path, NULL);
    return id->name ? 0 : -1;
  }
  if (errno != ENOENT || lstat(path, &sb) == 0) { /* a dangling link is ENOENT with an lstat */
    errno = ENOENT;
    return -1;
  }
  char *dir = dir_of(path), *real = dir ? realpath(dir, NULL) : NULL;
  const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  if (real) {
    size_t n = strlen(real) + strlen(base) + 2;
    id->name = malloc(n);
    if (id->name) snprintf(id->name, n, "%s%s%s", real, strcmp(real, "/") ? "/" : "", base);
  }
  free(dir);
  free(real);
  return id->name ? 0 : -1;
}

static int same_file(const file_id *a, const file_id *b) {
  if (a->exists && b->exists) return a->dev == b->dev && a->ino == b->ino;
  return !a->exists && !b->exists && strcmp(a->name, b->name) == 0;
}

int cli_check_output_path(const char *opt, const char *path) {
  struct stat st;
  if (!*path) {
    cli_error("%s: empty path", opt);
    return CLI_EXIT_USAGE;
  }
  if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode) && stat(path, &st) != 0) {
    cli_error("%s %s: is a symbolic link to a missing file", opt, path);
    return CLI_EXIT_USAGE;
  }
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    cli_error("%s %s: is a directory", opt, path);
    return CLI_EXIT_USAGE;
  }
  if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
    cli_error("%s %s: is not a regular file (a device, FIFO or socket is never replaced)", opt, path);
    return CLI_EXIT_USAGE;
  }
  /* The directory that will hold the temp and the result: the link target's, if a link. */
  file_id id;
  char *dir = NULL;
  int rc = 0;
  if (identify(path, &id) == 0) dir = dir_of(id.name);
  else dir = dir_of(path);
  if (!dir) {
    cli_error("out of memory");
    free(id.name);
    return CLI_EXIT_RUNTIME;
  }
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    cli_error("%s %s: directory '%s' does not exist", opt, path, dir);
    rc = CLI_EXIT_USAGE;
  } else if (access(dir, W_OK) != 0) {
    cli_error("%s %s: directory '%s' is not writable", opt, path, dir);
    rc = CLI_EXIT_USAGE;
  }
  free(dir);
  free(id.name);
  return rc;
}

int cli_check_distinct(const cli_named_file *outputs, int n_outputs, const cli_named_file *inputs,
                       int n_inputs) {
  const int n = n_outputs + n_inputs;
  file_id *ids = calloc((size_t)(n > 0 ? n : 1), sizeof *ids);
  int rc = 0;
  if (!ids) {
    cli_error("out of memory");
    return CLI_EXIT_RUNTIME;
  }
  for (int i = 0; i < n && !rc; i++) {
    const cli_named_file *f = i < n_outputs ? &outputs[i] : &inputs[i - n_outputs];
    /* An input that cannot be resolved fails later with its own message; it clashes with
     * nothing here. */
    if (f->path && identify(f->path, &ids[i]) != 0) {
      free(ids[i].name);
      ids[i].name = NULL;
    }
  }
  for (int i = 0; i < n_outputs && !rc; i++)
    for (int j = i + 1; j < n && !rc; j++) {
      if (!ids[i].name || !ids[j].name || !same_file(&ids[i], &ids[j])) continue;
      /* Two outputs: the later option is the one at fault; else the output. */
      const cli_named_file *a = &outputs[i], *b = j < n_outputs ? &outputs[j] : &inputs[j - n_outputs];
      if (j < n_outputs) cli_error("%s %s: same file as %s %s", b->opt, b->path, a->opt, a->path);
      else cli_error("%s %s: same file as %s %s", a->opt, a->path, b->opt, b->path);
      rc = CLI_EXIT_USAGE;
    }
  for (int i = 0; i < n; i++) free(ids[i].name);
  free(ids);
  return rc;
}

int cli_outputs_add(cli_outputs *set, const char *opt, const char *path, npy_dtype dtype,
                    int ndim, const size_t *shape, const void *data) {
  char err[512];
  file_id id;
  if (set->count == CLI_MAX_OUTPUTS) {
    cli_error("too many output files");
    return CLI_EXIT_RUNTIME;
  }
  /* A symbolic link is followed: the temp goes beside the file it names and replaces that. */
  char *target = identify(path, &id) == 0 ? id.name : strdup(path), *temp = NULL;
  if (!target || npy_write_temp(target, dtype, ndim, shape, data, &temp, err, sizeof err) != 0) {
    cli_error("%s %s: %s", opt, path, target ? err : "out of memory");
    free(target);
    return CLI_EXIT_RUNTIME;
  }
  set->target[set->count] = target;
  set->temp[set->count] = temp;
  set->count++;
  return 0;
}

char *cli_output_target(const char *path) {
  file_id id;
  return identify(path, &id) == 0 ? id.name : strdup(path);
}

int cli_outputs_adopt(cli_outputs *set, const char *opt, const char *path, char *temp) {
  char *target = set->count < CLI_MAX_OUTPUTS ? cli_output_target(path) : NULL;
  if (!target) {
    cli_error("%s %s: %s", opt, path, set->count < CLI_MAX_OUTPUTS ? "out of memory" : "too many output files");
    unlink(temp);
    free(temp);
    return CLI_EXIT_RUNTIME;
  }
  set->target[set->count] = target;
  set->temp[set->count] = temp;
  set->count++;
  return 0;
}

/* The previous file at a target, kept under "<temp>.prev" until the commit is complete: a hard
 * link (the target never goes missing), else, where the file system has none, a rename. */
static int keep_previous(const char *target, const char *temp, char **backup) {
  struct stat sb;
  *backup = NULL;
  if (lstat(target, &sb) != 0) return errno == ENOENT ? 0 : -1;
  if (!S_ISREG(sb.st_mode)) {
    errno = EEXIST; /* something else appeared there since the check */
    return -1;
  }
  size_t n = strlen(temp) + 6;
  char *name = malloc(n);
  if (!name) return -1;
  snprintf(name, n, "%s.prev", temp);
  if (link(target, name) != 0 && rename(target, name) != 0) {
    free(name);
    return -1;
  }
  *backup = name;
  return 0;
}

int cli_outputs_commit(cli_outputs *set) {
  char *backup[CLI_MAX_OUTPUTS] = {NULL};
  int rc = 0, renamed = 0;
  for (int i = 0; i < set->count && !rc; i++)
    if (keep_previous(set->target[i], set->temp[i], &backup[i]) != 0) {
      cli_error("cannot write %s: %s", set->target[i],
                errno == EEXIST ? "it is no longer a regular file" : strerror(errno));
      rc = CLI_EXIT_RUNTIME;
    }
  for (; renamed < set->count && !rc; renamed++)
    if (rename(set->temp[renamed], set->target[renamed]) != 0) {
      cli_error("cannot write %s: %s", set->target[renamed], strerror(errno));
      rc = CLI_EXIT_RUNTIME;
      break;
    }
  for (int i = 0; i < set->count; i++) {
    if (rc && i < renamed) { /* all or nothing: put back what was there */
      if (backup[i] ? rename(backup[i], set->target[i]) != 0 : unlink(set->target[i]) != 0)
        cli_error("could not restore %s: %s", set->target[i], strerror(errno));
    } else if (rc && backup[i]) {
      /* Not renamed over: a link aside is dropped, a file moved aside goes back. */
      struct stat sb;
      if (lstat(set->target[i], &sb) == 0) unlink(backup[i]);
      else rename(backup[i], set->target[i]);
    } else if (backup[i]) {
      unlink(backup[i]);
    }
    free(backup[i]);
    if (i < renamed && !rc) {
      free(set->temp[i]);
      set->temp[i] = NULL;
    }
  }
  return rc;
}

void cli_outputs_discard(cli_outputs *set) {
  for (int i = 0; i < set->count; i++) {
    if (set->temp[i]) unlink(set->temp[i]);
    free(set->temp[i]);
    free(set->target[i]);
  }
  memset(set, 0, sizeof *set);
}
