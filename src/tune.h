/*
 * Tunable parameters of the kernels and their lookup.
 *
 * Each kernel declares its tunables in a const table (nabla_kernel_space): for every parameter
 * the -D macro, the candidates, the value of the reference configuration (equal to the
 * `#ifndef` default in the .cl file) and an optional per-value availability test; for the
 * whole configuration a resource constraint (local memory, divisibility, work-group limits)
 * checked before anything is built, and a check of the built kernel (CL_KERNEL_WORK_GROUP_SIZE,
 * CL_KERNEL_LOCAL_MEM_SIZE). The tuner (tuner.c) walks these spaces; the lookup below applies
 * the same rules to whatever it reads, so a cache entry can never select a configuration the
 * device cannot run.
 *
 * Lookup order for a (device, kernel, dtype, head dim, shape class): the on-disk tuning cache
 * (namespace "tuning"), else built-in defaults for the device type (CPU / NVIDIA / AMD /
 * Intel / other GPU), else the reference values. The format of a tuning entry is in
 * docs/cache-format.md ("Tuning entries"), the spaces in docs/tuning.md.
 */
#ifndef NABLA_TUNE_H
#define NABLA_TUNE_H

#include "internal.h"

#define NABLA_MAX_PARAMS 6
#define NABLA_MAX_CANDIDATES 12
#define NABLA_TUNING_SCHEMA 2        /* "schema" of a tuning entry's JSON; bump on any change
                                      * (2: attention gained VARIANT) */
#define NABLA_TUNING_NS "tuning"
#define NABLA_TUNING_PROGRESS_NS "tuning-progress"

typedef struct {
  int count;
  const char *names[NABLA_MAX_PARAMS];
  int values[NABLA_MAX_PARAMS];
  char origin[24];                     /* "tuned", "default-gpu-nvidia", "reference", ... */
} nabla_params;

/* Availability of one value of a tunable on a device (e.g. a tensor-core variant only where
 * the probe passed; the context is not const so a probe can run and be remembered); 1 =
 * allowed. */
typedef int (*nabla_tunable_allowed)(nabla_context *ctx, int value);

typedef struct {
  const char *name;                    /* the -D macro */
  int reference;                       /* value of the reference configuration */
  int count;                           /* number of candidates */
  int candidates[NABLA_MAX_CANDIDATES];/* any ints (0 and negatives included) */
  nabla_tunable_allowed allowed;       /* NULL: every candidate is available everywhere */
  const char *help;                    /* one line for docs and `nablacl tune --json` */
} nabla_tunable;

typedef struct nabla_kernel_space {
  const char *kernel;                  /* stage name: "attention", "select", ... */
  nabla_tunable params[NABLA_MAX_PARAMS];
  /* Constraint on a whole configuration before building (local memory, divisibility, work-group
   * limits). Returns 1 when it can run; else 0 and a reason in why[0..len). NULL: none. */
  int (*fits)(nabla_context *ctx, int head_dim, const nabla_params *params, char *why, size_t len);
  /* Builds the kernel the stage launches for `params` (the program stays in the context, so the
   * launch that follows finds it built) and gives the work-group size it launches with. */
  nabla_status (*build)(nabla_context *ctx, nabla_dtype dtype, int head_dim,
                        const nabla_params *params, cl_kernel *kernel, size_t *work_group);
  const char *constraints;             /* the constraints in words (docs, --json) */
} nabla_kernel_space;

/* The tunable space of a kernel, or NULL. */
const nabla_kernel_space *nabla_kernel_space_find(const char *kernel);
/* The i-th tunable space (NULL past the end). */
const nabla_kernel_space *nabla_kernel_space_at(size_t i);

/* Shape class of a problem for the tuning key ("small", "medium", "large"). */
const char *nabla_shape_class(const nabla_shape *shape);

/* The reference configuration of a space (origin "reference"). */
void nabla_params_reference(const nabla_kernel_space *space, nabla_params *out);
/* The built-in default of the context's device class, or the reference when none applies or it
 * does not fit (origin "default-<class>" or "reference"). */
void nabla_params_builtin(nabla_context *ctx, const nabla_kernel_space *space, int head_dim,
                          nabla_params *out);
/*
 * 1 when `params` is a configuration of `space` that this device may run at `head_dim`: the
 * same names in the same order, every value one of its tunable's candidates and allowed, and
 * the space's constraint met. Otherwise 0 and the reason in why (may be NULL).
 */
int nabla_params_valid(nabla_context *ctx, const nabla_kernel_space *space, int head_dim,
                       const nabla_params *params, char *why, size_t len);

/* Parameters to use for a kernel on this context's device. Never fails: falls back to defaults. */
void nabla_params_lookup(nabla_context *ctx, const char *kernel, nabla_dtype dtype, int head_dim,
                         const char *shape_class, nabla_params *out);

/* Appends " -DNAME=value" for each parameter to buf. */
void nabla_params_options(const nabla_params *params, char *buf, size_t len);

/* "NAME=value NAME=value" (no origin). */
void nabla_params_text(const nabla_params *params, char *buf, size_t len);

/* Parameter value by name (or `fallback`). */
int nabla_params_get(const nabla_params *params, const char *name, int fallback);

/* Tuning-cache key of a lookup (also the stored entry's key). */
void nabla_tuning_key(const nabla_context *ctx, const char *kernel, nabla_dtype dtype,
                      int head_dim, const char *shape_class, char *buf, size_t len);

/*
 * Reads and validates the tuning entry of a key: JSON with "schema" == NABLA_TUNING_SCHEMA, the
 * same kernel, dtype and head dim, and a "params" object holding exactly the space's tunables
 * with valid values (nabla_params_valid). Returns 1 and fills `out` (origin "tuned"); `ms` and
 * `full` (may be NULL) receive the stored time and whether a --full run made it. Anything else
 * is a miss (0): absent, unreadable, corrupt, foreign, other schema, out-of-space values.
 */
int nabla_tuning_load(nabla_context *ctx, const nabla_kernel_space *space, nabla_dtype dtype,
                      int head_dim, const char *shape_class, nabla_params *out, double *ms,
                      int *full);

/*
 * Builds a stage's kernel with `params` (space->build) and checks it against the device:
 * CL_KERNEL_WORK_GROUP_SIZE >= the launch size and CL_KERNEL_LOCAL_MEM_SIZE within the device's
 * local memory. NABLA_UNSUPPORTED (with the reason in the context's error) when it does not
 * fit; NABLA_BUILD / NABLA_OPENCL as the build fails.
 */
nabla_status nabla_params_build_check(nabla_context *ctx, const nabla_kernel_space *space,
                                      nabla_dtype dtype, int head_dim, const nabla_params *params);

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
