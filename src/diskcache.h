/*
 * diskcache — the versioned on-disk store behind the program-binary, tuning, probe and
 * tensor-map caches.
 *
 * Layout: <root>/v<NABLA_DISKCACHE_SCHEMA>/<ns>/<hash>.bin where <ns> is a namespace made only
 * of [a-z0-9_-] ("programs", "tuning",
 * "tuning-progress", "probes", "tensormaps") and <hash> is 32 hex digits of a hash of the
 * entry's key text. The key text is also stored inside the file and compared on read, so a hash
 * collision is a miss, never a wrong hit. Files are written to a unique temp name in the same
 * directory and renamed into place (atomic on POSIX). Every file carries a header with magic,
 * schema, lengths and a checksum of key + payload; anything that does not verify, and any file
 * not owned by the effective user, is a miss. Directories are created 0700, files 0600.
 * The full format is in docs/cache-format.md.
 *
 * Nothing here prints, exits or aborts. An unwritable directory only makes puts fail with
 * NABLA_IO, which callers ignore (a cache is an optimisation).
 */
#ifndef NABLA_DISKCACHE_H
#define NABLA_DISKCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "nablacl.h"

#define NABLA_DISKCACHE_SCHEMA 1

/**
 * Resolves the cache root: NABLACL_CACHE_DIR, else $XDG_CACHE_HOME/nablacl, else
 * $HOME/.cache/nablacl. Writes "" (and returns 0) when NABLACL_CACHE_DIR is "off" or no
 * location is known; returns 1 when a root was written. Does not create directories.
 * An empty variable counts as unset, a relative XDG_CACHE_HOME is ignored (XDG spec), and a
 * root that does not fit in `len` bytes is "" (0) rather than truncated.
 */
int nabla_diskcache_root(char *out, size_t len);

/**
 * Whether `root` may hold this user's cache: 0 when it does not exist yet (the first write
 * creates it, mode 0700) or is a directory owned by the effective user and writable by neither
 * its group nor others; else 1 with the reason in `why`. Another user able to write there could
 * plant entries (program binaries carry native code), so such a root is not used at all.
 */
int nabla_diskcache_root_check(const char *root, char *why, size_t len);

/** Removes the entry of `key` (a missing one is fine): NABLA_OK, NABLA_IO, or
 * NABLA_INVALID_ARGUMENT as for get. */
nabla_status nabla_diskcache_remove(const char *root, const char *ns, const char *key);

/**
 * Reads the entry of `key` in namespace `ns`. On a hit returns NABLA_OK with a malloc'd copy of
 * the payload in *data (caller frees) and its size in *len. A missing, truncated, corrupt or
 * foreign file returns NABLA_NOT_FOUND. Bad arguments (NULL, invalid ns) NABLA_INVALID_ARGUMENT.
 * A root of "" (caching off) is a bad argument. On a hit *data is non-NULL even for a 0-byte
 * payload; otherwise *data is NULL and *len 0.
 */
nabla_status nabla_diskcache_get(const char *root, const char *ns, const char *key, void **data,
                                 size_t *len);

/**
 * Stores `data` under `key` atomically, creating directories as needed. NABLA_IO on failure.
 * NABLA_INVALID_ARGUMENT as for get, and for NULL data with len > 0, a key over 16 MiB or a
 * payload over 1 GiB. Concurrent puts of one key are safe: the last rename wins.
 */
nabla_status nabla_diskcache_put(const char *root, const char *ns, const char *key,
                                 const void *data, size_t len);

/** Callback of nabla_diskcache_foreach: one valid entry (payload not NUL-terminated). */
typedef void (*nabla_diskcache_visit)(const char *key, const void *data, size_t len,
                                      time_t mtime, void *user);

/** Visits every valid entry of `ns` (invalid files are skipped). Missing dir = zero entries. */
nabla_status nabla_diskcache_foreach(const char *root, const char *ns,
                                     nabla_diskcache_visit visit, void *user);

/**
 * Removes every entry file of every namespace of the current schema, and temp files at least
 * a minute old (younger ones may belong to a writer in flight). Keeps the directories.
 */
nabla_status nabla_diskcache_clear(const char *root);

/** 64-bit FNV-1a style hash, used for keys and the device identity. */
uint64_t nabla_hash64(const void *data, size_t len, uint64_t seed);

#endif
