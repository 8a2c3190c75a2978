/*
 * Tunable parameters of the kernels and their lookup.
 *
 * Each kernel declares its tunables (name, candidates, the value of the reference
 * configuration) in a const table. Lookup order for a (device, kernel, dtype, head dim, shape
 * class): the on-disk tuning cache (namespace "tuning"), else built-in defaults for the device
 * type (CPU / NVIDIA / AMD / Intel / other GPU), else the reference values, which equal the
 * `#ifndef` defaults in the .cl file.
 */
#ifndef NABLA_TUNE_H
#define NABLA_TUNE_H

#include "internal.h"

#define NABLA_MAX_PARAMS 6
#define NABLA_MAX_CANDIDATES 8

typedef struct {
  const char *name;                    /* the -D macro */
  int reference;                       /* value of the reference configuration */
  int candidates[NABLA_MAX_CANDIDATES];/* 0-terminated */
} nabla_tunable;

typedef struct {
  const char *kernel;                  /* stage name: "attention", "select", ... */
  nabla_tunable params[NABLA_MAX_PARAMS];
} nabla_kernel_space;

typedef struct {
  int count;
  const char *names[NABLA_MAX_PARAMS];
  int values[NABLA_MAX_PARAMS];
  char origin[24];                     /* "tuned", "default-gpu-nvidia", "reference", ... */
} nabla_params;

/* The tunable space of a kernel, or NULL. */
const nabla_kernel_space *nabla_kernel_space_find(const char *kernel);

/* Shape class of a problem for the tuning key ("small", "medium", "large"). */
const char *nabla_shape_class(const nabla_shape *shape);

/* Parameters to use for a kernel on this context's device. Never fails: falls back to defaults. */
void nabla_params_lookup(nabla_context *ctx, const char *kernel, nabla_dtype dtype, int head_dim,
                         const char *shape_class, nabla_params *out);

/* Appends " -DNAME=value" for each parameter to buf. */
void nabla_params_options(const nabla_params *params, char *buf, size_t len);

/* Parameter value by name (or `fallback`). */
int nabla_params_get(const nabla_params *params, const char *name, int fallback);

/* Tuning-cache key of a lookup (also the stored entry's key). */
void nabla_tuning_key(const nabla_context *ctx, const char *kernel, nabla_dtype dtype,
                      int head_dim, const char *shape_class, char *buf, size_t len);

/* Per-context memo of cache lookups; freed with the context. */
struct nabla_tuning;
void nabla_tuning_free(struct nabla_tuning *tuning);
/* Drops memoized lookups so a fresh tuning result is seen (used by the tuner). */
void nabla_tuning_forget(nabla_context *ctx);

/* Attention / mask build with explicit kernel parameters (what the tuner measures). The public
 * calls look the parameters up and call these. */
nabla_status nabla_attend_params(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                 const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                                 const nabla_params *params, cl_uint num_wait, const cl_event *wait,
                                 cl_event *done_event);
nabla_status nabla_mask_build_params(nabla_context *ctx, const nabla_algo *algo,
                                     const nabla_shape *shape, nabla_dtype dtype, cl_mem q,
                                     cl_mem k, const nabla_params *select, nabla_mask **out,
                                     cl_uint num_wait, const cl_event *wait, cl_event *done_event);

#endif
