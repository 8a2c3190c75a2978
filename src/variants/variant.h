/*
 * Kernel variants: several implementations of the attention stage (and of the mask build's
 * reduced map), chosen per device and problem. The list is registry.h; each variant's host code
 * is one file under src/variants/ exposing one operations table (nabla_variant_ops below).
 * docs/architecture.md spells out the contract and how to add a variant; docs/variants.md
 * describes the variants themselves.
 *
 * Probes: a variant that needs a device feature compiles and runs a tiny kernel once per device
 * (probe.h) and compares its output with values computed on the host. The verdict is kept in
 * the context and in the disk cache (namespace "probes", keyed by the device key), so a device
 * is probed once per driver. A probe checks the vendor before anything is compiled, so no
 * foreign compiler ever sees vendor assembly. Any failure (build, launch, wrong result) means
 * "unsupported".
 *
 * Choice, first match: nabla_variant_force on the context; the context's knob VARIANT
 * (NABLACL_VARIANT, knobs.h); the tuned VARIANT parameter; automatic = the variants whose `automatic` test accepts the
 * device, highest rank first, the first that is eligible for the problem and usable, else
 * portable. A requested variant that is unsupported, ineligible for the problem or broken falls
 * back to portable; the context's variant note says why.
 */
#ifndef NABLA_VARIANTS_VARIANT_H
#define NABLA_VARIANTS_VARIANT_H

#include "internal.h"
#include "registry.h"
#include "tune.h"

/* The pipeline stages a variant has a kernel for. A kernel of one stage that fails to build
 * leaves the variant to the other: the tensor-core map and attention are separate programs. */
enum { NABLA_STAGE_ATTENTION = 1, NABLA_STAGE_MAP = 2 };

/* One attention launch as the variant's operations see it. attention.c fills the problem and
 * the kernel's inputs; `prepare` builds the program and may stage k and v elsewhere (replacing
 * them), consume the wait list and set `extra` (up to two additional kernel arguments). */
typedef struct {
  int id;
  const nabla_shape *shape;
  nabla_dtype dtype;
  int dense;                      /* no mask: every block pair */
  const nabla_params *params;     /* the attention stage's tuned parameters (may be NULL) */
  cl_mem q, k, v, o, block_start, row_ptr, col_idx;
  cl_uint num_wait;
  const cl_event *wait;
  cl_int seq, blocks;             /* S and Nb, kernel arguments */
  cl_float scale_log2;            /* log2(e) / sqrt(head_dim) */
  cl_program program;             /* set by prepare */
  cl_mem extra[2];                /* set by prepare: more arguments of the kernel (each may be */
  int extras;                     /* NULL), and how many */
} nabla_variant_call;

/* A kernel source of a variant (cl/<name>.cl) and the cl/ files put before it, after
 * cl/common.cl; `after_build` (may be NULL) turns a program built from source into the one to
 * use (nvidia-wgmma: rebuilt from its PTX for sm_90a). */
typedef struct {
  const char *name;
  const char *prelude[3];         /* NULL-terminated */
  nabla_status (*after_build)(nabla_context *ctx, cl_program built, const char *name,
                              const char *options, cl_program *out);
} nabla_kernel_source_desc;

/* The reduced-map GEMM of the mask build, for a variant that has one (stages & NABLA_STAGE_MAP). */
typedef struct {
  const char *program, *kernel;
  /* Whether the kernel handles this shape. */
  int (*eligible)(const nabla_shape *shape);
  /* A device condition beyond the probe (NULL: none). */
  int (*ready)(nabla_context *ctx, int id);
  void (*options)(int id, const nabla_shape *shape, char *buf, size_t len);
} nabla_variant_map_ops;

typedef struct nabla_variant_ops {
  unsigned stages;                /* NABLA_STAGE_* it has kernels for */
  /* Automatic choice: variants whose `automatic` accepts the device are tried by `rank`, highest
   * first. rank 0 (or automatic NULL): never chosen automatically. */
  int rank;
  int (*automatic)(const nabla_device_caps *caps);
  /* The variant whose map kernel the mask build uses when this one is asked for (itself when it
   * has one); NABLA_VARIANT_PORTABLE for the plain map. */
  int map_with;
  /* Whether the kernel handles this problem; else the reason into why. NULL: every problem. */
  int (*eligible)(const nabla_shape *shape, nabla_dtype dtype, char *why, size_t len);
  /* Runs the capability probe once per context and records the verdict in pr (probed,
   * supported, why). NULL: runs wherever OpenCL C does. */
  void (*probe)(nabla_context *ctx, int id, nabla_variant_probe *pr);
  const char *program;            /* the attention program (cl/<program>.cl); kernel "attention" */
  /* Build options of the attention program for this call. */
  void (*options)(nabla_context *ctx, const nabla_variant_call *call, char *buf, size_t len);
  /* Builds call->program, and with enqueue set enqueues what the kernel needs first (staging
   * into the workspace). Fails before enqueueing anything but workspace writes. NULL: builds
   * `program` with `options`. */
  nabla_status (*prepare)(nabla_context *ctx, nabla_variant_call *call, int enqueue);
  /* The launch's global and local sizes (3 dimensions); may query the built kernel. */
  nabla_status (*work_sizes)(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                             size_t global[3], size_t local[3]);
  /* Kernel sources of the variant (attention, map, probes) with their preludes; NULL-named end. */
  const nabla_kernel_source_desc *sources;
  nabla_variant_map_ops map;      /* used when stages has NABLA_STAGE_MAP */
  /* Frees what the variant keeps in the context beyond its probe verdict (NULL: nothing). */
  void (*release)(nabla_context *ctx);
} nabla_variant_ops;

/* Calls every variant's release as the context ends. */
void nabla_variants_release(nabla_context *ctx);

/* The operations table of a variant id (NULL if unknown). */
const nabla_variant_ops *nabla_variant_ops_of(int id);

/* The description of a kernel source (its preludes, its after-build step) when a variant owns
 * it; NULL for the stages every variant shares (cl/common.cl is their only prelude). */
const nabla_kernel_source_desc *nabla_kernel_source_find(const char *name);

/* Whether the device can run a variant at all (runs its probe once). On 0, `why` (may be NULL)
 * receives the reason. */
int nabla_variant_probe_run(nabla_context *ctx, int id, char *why, size_t why_len);

/* Whether `stage` may use the variant on this context: its probe passed and that stage's kernel
 * has not failed here (nabla_variant_mark_broken). On 0, `why` (may be NULL) says why. */
int nabla_variant_usable(nabla_context *ctx, int id, int stage, char *why, size_t why_len);

/* Marks a variant unusable for `stage` (one NABLA_STAGE_* value) on this context (its kernel did
 * not build), with the reason, which nabla_variant_usable gives for that stage alone. */
void nabla_variant_mark_broken(nabla_context *ctx, int id, int stage, const char *why);

/* The attention variant to launch for a problem; never fails. Writes the reason of a fallback
 * (or "") to note. */
int nabla_attention_variant_choose(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                   const nabla_params *params, char *note, size_t note_len);

/* The variant whose reduced-map kernel the mask build uses: the `map_with` of a forced or
 * knob VARIANT choice (not the tuned attention VARIANT), or automatically the first
 * automatic variant's with a usable map kernel; a test aid's without fallback; else
 * NABLA_VARIANT_PORTABLE (cl/map.cl). */
int nabla_map_variant_choose(nabla_context *ctx, const nabla_shape *shape);

/* Builds call->program with the variant's prepare (enqueue 0: nothing is enqueued). */
nabla_status nabla_variant_prepare(nabla_context *ctx, nabla_variant_call *call, int enqueue);

/* The eligibility shared by the matrix-engine kernels (nvidia-mma, amd-*, intel-dpas): f16 or
 * bf16 storage and a head dim that is a multiple of 16 up to 128; else the reason into why. */
int nabla_variant_eligible_16x16(const nabla_shape *shape, nabla_dtype dtype, char *why, size_t len);

/* The attention kernel's arguments for a call: q, k, v, o, block_start, row_ptr, col_idx, S,
 * Nb, scale_log2, then the call's extras. Returns the count (at most 12). */
size_t nabla_variant_args(const nabla_variant_call *call, nabla_kernel_arg args[12]);

/* The operations tables, one per file under src/variants/ (the list's fourth column). */
#define NABLA_VARIANT_DECLARE_(id, e, name, ops, aid) extern const nabla_variant_ops ops;
NABLA_VARIANT_LIST(NABLA_VARIANT_DECLARE_)

#endif
