/* What every variant probe shares: one launch of a probe kernel with host buffers, the probe
 * verdict's disk cache, and the context's error kept out of it. A probe compares a tiny
 * kernel's output with values computed on the host (see nabla_variant_ops.probe). */
#ifndef NABLA_VARIANTS_PROBE_H
#define NABLA_VARIANTS_PROBE_H

#include "internal.h"

typedef enum { NABLA_PROBE_PASS = 1, NABLA_PROBE_FAIL = 0, NABLA_PROBE_ERROR = -1 } nabla_probe_verdict;

/* Builds `kernel` of the probe program `program` with `options`, binds `nbuf` (<= 8) buffers of
 * bytes[i] (initialised from host[i] unless readback[i]), runs one work-group of `items`
 * work-items and reads the buffers flagged in `readback` back into host[i]. A compiler that
 * rejects the program gives NABLA_PROBE_FAIL (it will keep rejecting it), anything transient
 * NABLA_PROBE_ERROR; why says what happened. */
nabla_probe_verdict nabla_probe_launch(nabla_context *ctx, const char *program, const char *options,
                                       const char *kernel, size_t items, int nbuf, const size_t *bytes,
                                       void **host, const int *readback, char *why, size_t why_len);

/* The cached verdict text of variant id into text (NUL-terminated, cut to len - 1); 0 when there
 * is none, caching is off or kernels are read from NABLACL_KERNEL_DIR. The key holds the device
 * and a hash of every embedded kernel source, so a library with other probes asks again. */
int nabla_probe_cache_get(nabla_context *ctx, int id, char *text, size_t len);
/* Stores the verdict text of variant id (best effort: a failure means no caching). */
void nabla_probe_cache_put(nabla_context *ctx, int id, const char *text);
/* The reason after "why=" in a cached verdict, into pr->why. */
void nabla_probe_cache_why(const char *text, nabla_variant_probe *pr);

/* A failed probe is no error of the caller's call: a probe saves the context's error first and
 * restores it after. */
typedef struct {
  char error[NABLA_ERR_LEN];
} nabla_probe_saved;
void nabla_probe_save(const nabla_context *ctx, nabla_probe_saved *saved);
void nabla_probe_restore(nabla_context *ctx, const nabla_probe_saved *saved);

#endif
