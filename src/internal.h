/* Private declarations shared by the library's modules. */
#ifndef NABLA_INTERNAL_H
#define NABLA_INTERNAL_H

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "nablacl.h"

#define NABLA_ERR_LEN 4096
#define NABLA_MIN_WORK_GROUP 256 /* the largest fixed work-group of the kernels (csr.cl, map.cl) */
#define NABLA_PATH_LEN 4096
#define NABLA_MAX_PROGRAMS 64

/* Evaluates a status expression and jumps to the function's `done` label on failure. */
#define TRY(st, expr)              \
  do {                             \
    (st) = (expr);                 \
    if ((st) != NABLA_OK) goto done; \
  } while (0)

/* Checks an OpenCL return code; records which call failed. */
#define TRY_CL(st, ctx, call)                                                    \
  do {                                                                           \
    cl_int cl_rc_ = (call);                                                      \
    if (cl_rc_ != CL_SUCCESS) {                                                  \
      (st) = nabla_fail((ctx), NABLA_OPENCL, "%s failed: %s (%d)", #call,        \
                        nabla_cl_error_name(cl_rc_), (int)cl_rc_);               \
      goto done;                                                                 \
    }                                                                            \
  } while (0)

/* A kernel argument: its size and where its value is (NABLA_ARG(x) for a variable x). */
typedef struct {
  size_t size;
  const void *value;
} nabla_kernel_arg;
#define NABLA_ARG(x) ((nabla_kernel_arg){sizeof(x), (const void *)&(x)})

/* NABLA_SET_ARGS(ctx, kernel, name, NABLA_ARG(a), NABLA_ARG(b), ...) sets the arguments 0, 1, ...
 * of `kernel`, counted by the compiler; nabla_set_args takes an array and its length. */
#define NABLA_SET_ARGS(ctx, kernel, name, ...)                                          \
  nabla_set_args((ctx), (kernel), (name), (const nabla_kernel_arg[]){__VA_ARGS__},      \
                 sizeof((const nabla_kernel_arg[]){__VA_ARGS__}) / sizeof(nabla_kernel_arg))

typedef struct {
  int fp16, fp64, subgroups;
  int is_cpu, is_gpu;
  int vendor;  /* NABLA_VENDOR_* */
  size_t max_wg;
  uint64_t local_mem, global_mem, max_alloc;
  unsigned compute_units;
  char arch[32]; /* AMD: the gfx target from CL_DEVICE_NAME ("gfx90a", ...); "" elsewhere */
} nabla_device_caps;

enum { NABLA_VENDOR_OTHER = 0, NABLA_VENDOR_NVIDIA, NABLA_VENDOR_AMD, NABLA_VENDOR_INTEL, NABLA_VENDOR_POCL };

/* Kernel variants (variants/): the verdict of a variant's capability probe on this device. */
typedef struct {
  int probed;       /* the probe ran, or its cached verdict was read */
  int supported;
  unsigned features; /* what else the probe found, bits its variant defines (nvidia-mma:
                       NABLA_MMA_FEATURE_SMEM) */
  unsigned broken;  /* NABLA_STAGE_* bits: that stage's kernel of the variant did not build on
                       this context, so the stage does not use the variant again */
  unsigned prepare_off; /* bit m: the variant's preparation mode m did not build here, so it
                       is not tried again (nvidia-wgmma: its NABLA_WG_* staging) */
  char why[384];    /* why it is unsupported */
  char broken_why[2][384]; /* why it broke, per stage (attention, map) */
} nabla_variant_probe;

#define NABLA_VARIANT_SLOTS 16 /* at least NABLA_VARIANT_COUNT (variants/registry.h) */

typedef struct {
  nabla_variant_probe probe[NABLA_VARIANT_SLOTS];
  int forced;       /* 0 automatic, else 1 + a variant id (nabla_variant_force) */
  char last[32];    /* variant of the last attention launch */
  char note[512];   /* why the last choice is not the requested or preferred variant ("" if it is) */
} nabla_variant_state;

/* Knobs (knobs.c): developer settings a context holds, read from the environment at its
 * creation; NABLA_KNOB_UNSET lets the reader pick its default. */
typedef enum {
  NABLA_KNOB_VARIANT = 0,        /* a variant id, or NABLA_VARIANT_AUTO (-1) */
  NABLA_KNOB_MMA_LAZY_RESCALE,
  NABLA_KNOB_WG_BULK,
  NABLA_KNOB_MMA_QPW,
  NABLA_KNOB_MMA_SMEM,
  NABLA_KNOB_MMA_MAXRREG,
  NABLA_KNOB_INTEL_DPAS_SG16,
  NABLA_KNOB_WG_SPLIT,
  NABLA_KNOB_COUNT
} nabla_knob_id;
#define NABLA_KNOB_UNSET INT_MIN

#define NABLA_SLOT_KERNELS 4 /* kernel objects kept per program */

typedef struct {
  char *key;        /* stage name + '\n' + build options */
  cl_program program;
  int kernel_count;
  char kernel_name[NABLA_SLOT_KERNELS][32];
  cl_kernel kernel[NABLA_SLOT_KERNELS];
} nabla_program_slot;

#define NABLA_PROFILE_MAX 64

typedef struct {
  int on, count;
  const char *stage[NABLA_PROFILE_MAX];
  cl_event event[NABLA_PROFILE_MAX];
} nabla_profile;

/* Scratch device buffers of the mask build (and of the wgmma kernel's tile images), grown on
 * demand and kept for the next call. The queue is in order, so a later call's kernels run after
 * the earlier ones that used them. */
typedef enum {
  NABLA_WS_POOLED = 0,
  NABLA_WS_MAP,
  NABLA_WS_GROUPS,
  NABLA_WS_KTILES,
  NABLA_WS_VTILES,
  NABLA_WS_TMAPS, /* the wgmma kernel's two tensor maps (tensormap.h) */
  NABLA_WS_SPLIT, /* the wgmma kernel's row counters and partials (WG_SPLIT 2) */
  NABLA_WS_COUNT
} nabla_workspace_slot;
typedef struct {
  cl_mem mem[NABLA_WS_COUNT];
  size_t bytes[NABLA_WS_COUNT];
  cl_mem starts;       /* block layout of the last shape asked for (nabla_block_starts_buffer) */
  int starts_shape[4]; /* its seq, grid_t, grid_h, grid_w */
} nabla_workspace;

/* The CUDA driver library, opened on NVIDIA for the wgmma kernel's tensor maps (tensormap.c):
 * it encodes a map template per head dim once (then the disk cache has it), with the device's
 * primary CUDA context retained only around the call. Function pointers are held as void *
 * (dlsym's type). */
typedef struct {
  int tried;          /* opened (or failed to) once */
  void *lib;          /* dlopen handle of libcuda.so.1, or NULL */
  void *encode, *push, *pop, *retain, *release; /* cuTensorMapEncodeTiled, cuCtxPush/PopCurrent, cuDevicePrimaryCtxRetain/Release */
  int dev;            /* CUdevice */
  unsigned char tmpl[2][128]; /* map templates for head dim 64 and 128 (tensormap.h), */
  int have[2];        /* 1 once known, -1 once the encoder refused it, */
  char refused[2][160]; /* and what it said then */
  char why[160];      /* why there is no driver, when not */
} nabla_cuda_driver;

/* CLBlast, opened at run time for the reduced map's batched GEMM (blas.c). */
typedef struct {
  int tried;                /* opened (or failed to) once */
  void *lib;                /* dlopen handle of libclblast.so.1, or NULL */
  unsigned char gemm[sizeof(void (*)(void))]; /* CLBlastSgemmStridedBatched */
  char why[128];            /* why there is none, when not */
} nabla_blas;

/* blas.c: whether CLBlast could be opened (once per context; the reason in ctx->blas.why), */
int nabla_blas_available(nabla_context *ctx);
/* enqueues logits[z] = scale * qp[z] kp[z]ᵀ for z < BH over the pooled rows (as cl/map.cl reads
 * them), map rows ld floats apart, */
nabla_status nabla_blas_map(nabla_context *ctx, cl_mem pooled, cl_mem logits, int Nb, int ld, int D, int BH,
                            float scale, cl_event *event);
/* and clears CLBlast's program cache and closes it when the context goes. */
void nabla_blas_release(nabla_context *ctx);

struct nabla_context {
  cl_context cl_ctx;
  cl_device_id device;
  cl_command_queue queue;
  nabla_device_caps caps;
  char device_key[33];            /* 32 hex digits */
  char device_desc[1600];          /* platform | device | driver | versions (hashed into the key) */
  char cache_root[NABLA_PATH_LEN];/* "" when the disk cache is off */
  char cache_note[NABLA_PATH_LEN + 160]; /* why it is off although a root was set ("" if not) */
  char kernel_dir[NABLA_PATH_LEN];/* "" unless NABLACL_KERNEL_DIR */
  nabla_program_slot programs[NABLA_MAX_PROGRAMS];
  int program_count;
  struct nabla_tuning *tuning;    /* lazily loaded tuned parameters (tune.c) */
  nabla_variant_state variants;   /* kernel variant probes and choice (variants/) */
  int knobs[NABLA_KNOB_COUNT];    /* developer settings (knobs.c) */
  nabla_profile profile;
  nabla_workspace workspace;      /* scratch buffers reused across calls (workspace.c) */
  nabla_cuda_driver cuda;         /* for tensor maps (variants/tensormap.c) */
  nabla_blas blas;                /* CLBlast for the reduced map (blas.c) */
  /* Developer hook (tests/kernel_dump.c, the AMD compile gate): when set, called with every
   * program's stage name, build options and complete source just before it is built. */
  void (*program_hook)(void *user, const char *name, const char *options, const char *source);
  void *program_hook_user;
  char error[NABLA_ERR_LEN];
};

/* workspace.c: a new read-write buffer (bytes above the device's max allocation are refused
 * first; 0 bytes gives a 4-byte buffer), */
nabla_status nabla_buffer_new(nabla_context *ctx, size_t bytes, const char *what, cl_mem *out);
/* and a buffer of at least `bytes` for `slot`, owned by the context (not retained for the
 * caller; valid until the next call for the same slot or the context's end). */
nabla_status nabla_workspace_get(nabla_context *ctx, nabla_workspace_slot slot, size_t bytes,
                                 const char *what, cl_mem *out);
/* Frees one slot's buffer (commands already enqueued keep it alive until they finish). */
void nabla_workspace_free(nabla_context *ctx, nabla_workspace_slot slot);
void nabla_workspace_release(nabla_context *ctx);

/* status.c */
nabla_status nabla_fail(nabla_context *ctx, nabla_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *nabla_cl_error_name(cl_int err);
void nabla_clear_error(nabla_context *ctx);

/* profile.c: an event slot for a kernel of `stage` when profiling is on, else `fallback`
 * (the caller's event pointer or NULL). When both are wanted the caller's event is retained. */
cl_event *nabla_profile_slot(nabla_context *ctx, const char *stage);
void nabla_profile_release(nabla_context *ctx);
/* The event pointer to pass to an enqueue that also has a caller's `done` event. */
#define NABLA_EVENT_OUT(slot, done) ((done) ? (done) : (slot))
/* After such an enqueue: the profile slot shares the caller's event. */
void nabla_profile_share(cl_event *slot, cl_event *done);

/* device.c */
nabla_status nabla_device_caps_query(nabla_context *ctx);
/* One device as selection sees it. */
typedef struct {
  cl_device_type type;
  char platform[256]; /* CL_PLATFORM_NAME */
  char suffix[32];    /* CL_PLATFORM_ICD_SUFFIX_KHR ("POCL", "INTEL", ...), "" if none */
  char name[256];     /* CL_DEVICE_NAME */
} nabla_device_desc;
/* The default rule's rank of a device, lower first: GPU 0, accelerator 1, then CPUs by the
 * runtime's measured speed (Intel's CPU runtime 2, PoCL 3, any other 4), anything else 6. */
int nabla_device_preference(const nabla_device_desc *d);
/* Position in devs[0..n) that `selector` names (NULL or "": the default rule, the lowest
 * preference, first in order on ties); -1 when none. Selectors: an index; "platform:TEXT"
 * (platform names: the whole name, else a substring, else the ICD suffix; that platform's
 * first device); "device:TEXT" (device name substring); plain TEXT: as platform:TEXT, else as
 * device:TEXT. All case-insensitive. */
int nabla_device_pick(const nabla_device_desc *devs, size_t n, const char *selector);
/* Picks a device by selector (NULL: NABLACL_DEVICE, else nabla_device_pick's default rule). */
nabla_status nabla_device_select(const char *selector, cl_platform_id *plat, cl_device_id *dev,
                                 char *err, size_t err_len);
nabla_status nabla_device_string(cl_device_id dev, cl_device_info what, char *out, size_t len);
/* 1 if the device lists `ext` among its extensions. */
int nabla_device_has_extension(cl_device_id dev, const char *ext);

/* program.c: builds (or loads) stage `name` with `options`; the program stays owned by ctx. */
nabla_status nabla_program_get(nabla_context *ctx, const char *name, const char *options,
                               cl_program *out);
/* A kernel of a program from nabla_program_get; caller releases it. The context keeps one
 * object per program and name and hands it out again (retained): set every argument before
 * each enqueue. */
nabla_status nabla_kernel_create(nabla_context *ctx, cl_program program, const char *kernel,
                                 cl_kernel *out);
void nabla_programs_release(nabla_context *ctx);
/* The binary inside a cached `programs` payload of cache key `key` (docs/cache-format.md), or
 * NULL when its frame does not verify. */
const unsigned char *nabla_program_unframe(const void *payload, size_t len, const char *key, size_t *bin_len);
/* NABLA_UNSUPPORTED (with the figures, `what` naming the kernel) when the kernel's local memory
 * (CL_KERNEL_LOCAL_MEM_SIZE) exceeds the device's: checked before a launch that would fail with
 * a bare CL_OUT_OF_RESOURCES. */
nabla_status nabla_kernel_local_fits(nabla_context *ctx, cl_kernel kernel, const char *what);
/* Sets arguments 0..count-1 of `kernel` (`name` in the message) from args. The first refusal
 * stops the run and is reported with its code and the argument's index (OR-ing the codes of
 * several would make up a different one). */
nabla_status nabla_set_args(nabla_context *ctx, cl_kernel kernel, const char *name, const nabla_kernel_arg *args,
                            size_t count);

/* Common build options of a storage dtype (-DNABLA_DTYPE=...). */
const char *nabla_dtype_define(nabla_dtype dtype);

/* Profiling helper: milliseconds between start of `first` and end of `last`. */
double nabla_event_ms(cl_event first, cl_event last);

/* Argument checks shared by the operations (no enqueue happens before these pass). */
/* A caller's cl_mem: not NULL, valid, of this context, at least `need` bytes (`layout` names
 * what it must hold, e.g. "[2,4,5] int32", in the message). */
nabla_status nabla_check_buffer(nabla_context *ctx, const char *what, cl_mem buf, size_t need,
                                const char *layout);
nabla_status nabla_check_tensor(nabla_context *ctx, const char *what, cl_mem buf,
                                const nabla_shape *shape, nabla_dtype dtype);
nabla_status nabla_check_common(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                cl_uint num_wait, const cl_event *wait);

/* Mask internals (mask.c) used by attention.c. */
struct nabla_mask {
  nabla_shape shape;
  int nblocks;
  cl_mem block_start;  /* int32 [Nb + 1] */
  cl_mem bitmap;       /* uchar [B*H*Nb*Nb] */
  cl_mem row_ptr;      /* int32 [B*H*Nb + 1] */
  cl_mem col_idx;      /* int32 [B*H*Nb*Nb] capacity */
  cl_context cl_ctx;
};

/* mask.c, for tests: pools q and k and computes the reduced map (the variant
 * nabla_map_variant_choose picks, variants/variant.h; or with blas CLBlast's GEMM), read back into
 * logits ([B H][Nb][Nb], scaled by 1/sqrt(D)). */
nabla_status nabla_reduced_map_read(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                    cl_mem q, cl_mem k, int blas, float *logits);
/* The block layout of a shape on the device (int32, nb + 1 token offsets), retained for the
 * caller, who releases it. The context keeps the last layout it uploaded and hands it out
 * again for shapes with the same seq and grid: uploading it is host work that a mask build
 * would otherwise do before its first kernel. */
nabla_status nabla_block_starts_buffer(nabla_context *ctx, const nabla_shape *shape, cl_mem *out);

#endif
