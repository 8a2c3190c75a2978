/*
 * nablacl.h — NABLA block-sparse attention on any OpenCL 1.2+ device.
 *
 * Overview
 * --------
 * NABLA (arXiv 2507.13546) speeds up video diffusion transformers by attending only to the
 * 64-token blocks that matter. For each (batch, head):
 *
 *   pool Q and K per block  ->  reduced map  softmax(q̄ k̄ᵀ / sqrt(D))  ->  per row keep the
 *   smallest top set of blocks whose mass exceeds thr (CDF rule)  ->  OR a sliding-tile (STA)
 *   window  ->  CSR mask  ->  block-sparse flash attention over the kept key blocks.
 *
 * Tensors are caller-owned `cl_mem` buffers holding [B, H, S, D] contiguous rows in one of three
 * storage types (fp32, fp16, bf16 as 16-bit words); arithmetic is fp32. Video tokens are expected
 * in *tile order* (every block is one 8x8 spatial tile of one frame, ragged at the grid's edges);
 * `nabla_reorder` converts from and to raster order.
 *
 * Every operation is enqueued asynchronously on the context's command queue, after the optional
 * wait list, and can hand back an event that completes when its last command does (the caller
 * releases it; on failure `*done` is left as it was, so initialise it to NULL). Arguments are
 * validated before anything is enqueued or written. An output handle (`nabla_mask **out`) is
 * NULL after any failure.
 *
 * Errors: functions return a `nabla_status`; the context keeps a human-readable message for the
 * last failure (`nabla_last_error`). No function of the library exits, aborts or prints.
 *
 * Thread safety: a context is used by one thread at a time; use one context per thread. The
 * on-disk caches are safe to share between threads and processes.
 *
 * Environment: NABLACL_DEVICE (index, or case-insensitive substring of the device or platform
 * name), NABLACL_CACHE_DIR (directory, or "off"), NABLACL_KERNEL_DIR (load .cl sources from a
 * directory; development), and the knobs NABLACL_VARIANT, NABLACL_WG_BULK,
 * NABLACL_MMA_LAZY_RESCALE, NABLACL_MMA_QPW, NABLACL_MMA_SMEM, NABLACL_MMA_MAXRREG (see
 * nabla_knob_set), read when a context is created.
 */
#ifndef NABLACL_H
#define NABLACL_H

#include <stddef.h>
#include <stdint.h>

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ==== The stable core ======================================================================
 * Version, status, devices, contexts, shapes and algorithms, reordering, masks, attention and
 * host conversions: what an application needs. Names ending in an underscore (and NABLA_API) are
 * this header's own machinery, not API.
 * ========================================================================================== */

/* ---- Version ---------------------------------------------------------------------------- */

#define NABLA_VERSION_MAJOR 0
#define NABLA_VERSION_MINOR 1
#define NABLA_VERSION_PATCH 0
#define NABLA_VERSION_NUMBER \
  (NABLA_VERSION_MAJOR * 10000 + NABLA_VERSION_MINOR * 100 + NABLA_VERSION_PATCH)

#if defined(NABLA_STATIC_DEFINE)
#define NABLA_API
#elif defined(_WIN32)
#define NABLA_API __declspec(dllimport)
#else
#define NABLA_API __attribute__((visibility("default")))
#endif

/** Runtime version as NABLA_VERSION_NUMBER (e.g. 100 for 0.1.0). */
NABLA_API unsigned nabla_version(void);
/** Runtime version as "MAJOR.MINOR.PATCH"; a static string. */
NABLA_API const char *nabla_version_string(void);

/* ---- Status ----------------------------------------------------------------------------- */

/* One list makes the enum and its text. Codes are stable once released. */
#define NABLA_STATUS_MAP(X)                                                         \
  X(OK, 0, "success")                                                               \
  X(INVALID_ARGUMENT, -1, "invalid argument")                                       \
  X(OUT_OF_MEMORY, -2, "out of memory")                                             \
  X(OPENCL, -3, "OpenCL call failed")                                               \
  X(BUILD, -4, "kernel build failed; see the build log")                            \
  X(UNSUPPORTED, -5, "device lacks a feature")                                      \
  X(NO_DEVICE, -6, "no matching OpenCL device")                                     \
  X(BUFFER_TOO_SMALL, -7, "buffer too small")                                       \
  X(IO, -8, "file input/output failed")                                             \
  X(NOT_FOUND, -9, "not found")

typedef enum {
#define NABLA_STATUS_ENUM_(name, code, text) NABLA_##name = code,
  NABLA_STATUS_MAP(NABLA_STATUS_ENUM_)
#undef NABLA_STATUS_ENUM_
} nabla_status;

/** Static text for a status; "unknown status" for a code not in the map. */
NABLA_API const char *nabla_status_str(nabla_status status);

/* ---- Devices ---------------------------------------------------------------------------- */

typedef struct {
  int index;                /* position in the NABLACL_DEVICE enumeration order */
  char platform[128];
  char name[128];
  char vendor[128];
  char driver[64];
  char opencl_c[64];        /* CL_DEVICE_OPENCL_C_VERSION */
  char type[16];            /* "GPU", "CPU", "ACCELERATOR", "OTHER" */
  unsigned compute_units;
  uint64_t global_mem;
  uint64_t local_mem;
  int fp16;                 /* cl_khr_fp16 advertised (not needed: half storage always works) */
  int fp64;
  int subgroups;            /* cl_khr_subgroups or cl_intel_subgroups */
} nabla_device_info;

/**
 * Lists every OpenCL device of every platform in the order NABLACL_DEVICE indexes them.
 * Writes up to `cap` entries to `out` (may be NULL when cap is 0) and the total to `*count`.
 */
NABLA_API nabla_status nabla_devices_list(nabla_device_info *out, size_t cap, size_t *count);

/**
 * The index (as nabla_devices_list numbers them) of the device nabla_context_create would open
 * with `selector` (same rules; NULL or "" uses NABLACL_DEVICE, else the default rule), into
 * `*index`. NABLA_NO_DEVICE when nothing matches, with the message in err[0..err_len) (err may
 * be NULL).
 */
NABLA_API nabla_status nabla_device_choose(const char *selector, int *index, char *err, size_t err_len);

/* ---- Context ---------------------------------------------------------------------------- */

typedef struct nabla_context nabla_context;

/**
 * Creates a context that owns an OpenCL context and an in-order, profiling-enabled queue on the
 * device picked by `selector`: an index; "platform:TEXT" (the first device of the platform whose
 * name is TEXT, else contains it, else whose ICD suffix is TEXT, e.g. "pocl"); "device:TEXT" (the
 * first device whose name contains it); plain TEXT tries the platform names first, then the
 * device names (PoCL's CPU device name holds the CPU's, e.g. "Intel(R) Xeon(R)": "intel" means
 * Intel's platform). All case-insensitive. NULL or "" uses NABLACL_DEVICE, else the first GPU,
 * else the first accelerator, else a CPU, Intel's CPU runtime before PoCL before any other (the
 * order of their measured speed, docs/api.md). On failure `*out` is NULL and, when `err` is not NULL, a message is
 * written to err[0..err_len): NABLA_NO_DEVICE names the available devices;
 * NABLA_INVALID_ARGUMENT means NABLACL_KERNEL_DIR is set but is not a directory.
 */
NABLA_API nabla_status nabla_context_create(nabla_context **out, const char *selector, char *err,
                                            size_t err_len);

/**
 * Creates a context on the caller's OpenCL objects, which stay the caller's: they are retained
 * here and released by nabla_context_destroy. `queue` must belong to `cl_ctx` and `device`, and
 * be in-order (the library relies on queue order between its kernels; an out-of-order queue is
 * NABLA_INVALID_ARGUMENT); profiling on the queue is needed only by the tuner and benchmarks.
 */
NABLA_API nabla_status nabla_context_create_from_cl(nabla_context **out, cl_context cl_ctx,
                                                    cl_device_id device, cl_command_queue queue,
                                                    char *err, size_t err_len);

/** Destroys a context (NULL is allowed) after finishing its queue. */
NABLA_API void nabla_context_destroy(nabla_context *ctx);

/**
 * Gives back the context's scratch device buffers: the mask build's workspace and the
 * nvidia-wgmma kernel's two tensor maps or, where it packs K and V instead, its tile images (2 x
 * the size of K), and at long sequences its key-half partials (the size of O in fp32). Later
 * calls allocate them again.
 * Commands already enqueued keep what they use until they finish. `freed` (may be NULL)
 * receives the bytes released.
 */
NABLA_API nabla_status nabla_context_trim(nabla_context *ctx, size_t *freed);

/** Text of the last failure on this context ("" if none). Valid until the next call. */
NABLA_API const char *nabla_last_error(const nabla_context *ctx);

NABLA_API cl_context nabla_context_cl_context(const nabla_context *ctx);
NABLA_API cl_device_id nabla_context_device(const nabla_context *ctx);
NABLA_API cl_command_queue nabla_context_queue(const nabla_context *ctx);

/** Directory of the on-disk caches for this context, or NULL when caching is off. */
NABLA_API const char *nabla_context_cache_dir(const nabla_context *ctx);

/**
 * Why the disk cache is off for this context although a directory was configured, "" when it is
 * on or switched off on purpose (NABLACL_CACHE_DIR=off). A cache directory that is not owned by
 * the user, or that its group or others can write, is never used (docs/cache-format.md). The
 * library does not print it; an application may show it once.
 */
NABLA_API const char *nabla_context_cache_note(const nabla_context *ctx);

/** Hex identity of the device (hash of platform/device/driver/version strings). */
NABLA_API const char *nabla_context_device_key(const nabla_context *ctx);

/* ---- Shapes, types, algorithms ---------------------------------------------------------- */

typedef enum { NABLA_F32 = 0, NABLA_F16 = 1, NABLA_BF16 = 2 } nabla_dtype;

/** "f32", "f16", "bf16"; "unknown" for anything else. */
NABLA_API const char *nabla_dtype_name(nabla_dtype dtype);
/** Bytes per element: 4 or 2; 0 for an unknown dtype. */
NABLA_API size_t nabla_dtype_size(nabla_dtype dtype);

#define NABLA_BLOCK 64      /* tokens per block (queries and keys) */
#define NABLA_TILE 8        /* spatial tile edge of a video block */
#define NABLA_MAX_HEAD_DIM 256

/**
 * One attention call: Q, K, V and O are [batch, heads, seq, head_dim].
 * Video: grid_t * grid_h * grid_w == seq (tokens), each block is an 8x8 tile (ragged at the
 * right and bottom edges). Plain sequence: all three grid fields 0, blocks are 64 consecutive
 * tokens (the last one ragged).
 */
typedef struct {
  int batch, heads, seq, head_dim;
  int grid_t, grid_h, grid_w;
} nabla_shape;

/** Number of blocks of a shape (ceil(seq/64) for plain sequences); 0 if the shape is invalid. */
NABLA_API int nabla_shape_blocks(const nabla_shape *shape);

/**
 * Checks a shape: positive sizes, head_dim a multiple of 8 up to 256, grid consistent with seq.
 * Writes the reason to err when invalid.
 */
NABLA_API nabla_status nabla_shape_check(const nabla_shape *shape, char *err, size_t err_len);

/**
 * Start offsets of the blocks in tile order: block_start[0..nblocks] (nblocks + 1 entries,
 * block_start[nblocks] == seq). `cap` is the number of ints available.
 */
NABLA_API nabla_status nabla_shape_block_starts(const nabla_shape *shape, int32_t *block_start,
                                                size_t cap);

/** Sparse-attention configuration. Dense when neither part is enabled (thr is then unused). Compare
 * two configurations field by field (the struct has padding). */
typedef struct {
  int nabla;          /* 1: keep the CDF top set of each row */
  double thr;         /* mass retained, in (0, 1] */
  int sta;            /* 1: OR a sliding-tile window (video grids only) */
  int sta_t, sta_h, sta_w;  /* window sizes in tiles, >= 1 */
} nabla_algo;

/**
 * Parses "nabla-0.7", "sta-11-3-3", "nabla-0.6_sta-11-3-3", "dense" or "" (dense). On error
 * returns NABLA_INVALID_ARGUMENT and writes a message naming the bad part to err.
 */
NABLA_API nabla_status nabla_algo_parse(const char *text, nabla_algo *out, char *err,
                                        size_t err_len);
/** Formats an algorithm in the parse syntax; returns the length it needed (snprintf-like), or -1
 * for a NULL algo. thr is printed in the shortest form that parses back exactly. */
NABLA_API int nabla_algo_format(const nabla_algo *algo, char *buf, size_t len);

/* ---- Reorder ---------------------------------------------------------------------------- */

typedef enum { NABLA_RASTER_TO_TILE = 0, NABLA_TILE_TO_RASTER = 1 } nabla_reorder_dir;

/**
 * Copies a video tensor between raster and tile token order (src and dst distinct, both
 * [B,H,S,D] of `dtype`). Plain sequences are copied unchanged.
 */
NABLA_API nabla_status nabla_reorder(nabla_context *ctx, const nabla_shape *shape,
                                     nabla_dtype dtype, nabla_reorder_dir dir, cl_mem src,
                                     cl_mem dst, cl_uint num_wait, const cl_event *wait,
                                     cl_event *done);

/* ---- Masks ------------------------------------------------------------------------------ */

/** A block mask on the device: CSR per (b, h) row of query blocks. */
typedef struct nabla_mask nabla_mask;

/**
 * Builds the mask of `algo` from Q and K (tile order). Dense algorithms give an all-kept mask.
 * `*out` is owned by the caller (nabla_mask_release) and usable once `done` completes (or after
 * clFinish on the context's queue).
 */
NABLA_API nabla_status nabla_mask_build(nabla_context *ctx, const nabla_algo *algo,
                                        const nabla_shape *shape, nabla_dtype dtype, cl_mem q,
                                        cl_mem k, nabla_mask **out, cl_uint num_wait,
                                        const cl_event *wait, cl_event *done);

/**
 * Makes a mask from a host block bitmap [B, H, Nb, Nb] (1 = kept). Blocking upload; used for
 * externally computed masks, random-density benchmarks and tests.
 */
NABLA_API nabla_status nabla_mask_from_bitmap(nabla_context *ctx, const nabla_shape *shape,
                                              const uint8_t *bitmap, nabla_mask **out);

/** Releases a mask (NULL allowed). */
NABLA_API void nabla_mask_release(nabla_mask *mask);

/** Number of kept blocks and the density kept / (B*H*Nb*Nb). Blocking. */
NABLA_API nabla_status nabla_mask_stats(nabla_context *ctx, const nabla_mask *mask,
                                        int64_t *kept, double *density);

/** Device buffers of the CSR (row_ptr[B*H*Nb + 1], col_idx), owned by the mask. */
NABLA_API nabla_status nabla_mask_buffers(const nabla_mask *mask, cl_mem *row_ptr,
                                          cl_mem *col_idx);

/**
 * Reads the mask back as CSR. row_ptr needs B*H*Nb + 1 ints; col_idx needs `kept` ints
 * (nabla_mask_stats). Blocking.
 */
NABLA_API nabla_status nabla_mask_read_csr(nabla_context *ctx, const nabla_mask *mask,
                                           int32_t *row_ptr, size_t row_ptr_cap,
                                           int32_t *col_idx, size_t col_idx_cap);

/** Reads the mask as a dense block bitmap [B, H, Nb, Nb] of 0/1 bytes. Blocking. */
NABLA_API nabla_status nabla_mask_read_bitmap(nabla_context *ctx, const nabla_mask *mask,
                                              uint8_t *bitmap, size_t cap);

/**
 * Reads the mask in FlexAttention's layout: kv_num_blocks [B,H,Nb] and kv_indices [B,H,Nb,Nb]
 * (each row's kept key blocks ascending, the rest of the row zero). Blocking; written on the
 * device first (nabla_mask_write_flex into temporary buffers of those sizes), then read.
 */
NABLA_API nabla_status nabla_mask_read_flex(nabla_context *ctx, const nabla_mask *mask,
                                            int32_t *kv_num_blocks, size_t num_cap,
                                            int32_t *kv_indices, size_t idx_cap);

/**
 * Draws the block mask of one (batch, head) of a host bitmap [B, H, Nb, Nb] (non-zero = kept)
 * as RGB pixels (3 bytes each, rows top to bottom): block (i, j) is a `cell` x `cell` square at
 * column j, row i, dark blue (31,78,161) when kept, white when not; then a white gap of
 * max(4, 2*cell) pixels; then per block row a bar of max(32, Nb*cell/4) pixels whose orange
 * (230,120,30) part is the row's kept count in proportion to Nb (rounded, at least one pixel
 * when the row keeps any), on grey (225,225,225). `cell` 0 picks max(1, min(8, 512 / Nb)).
 * `*width` and `*height` receive the size; `rgb` NULL asks for the size alone, otherwise it needs
 * width * height * 3 bytes (`cap`), else NABLA_BUFFER_TOO_SMALL. Host only: no context; bad
 * arguments return NABLA_INVALID_ARGUMENT with the reason in err (may be NULL).
 */
NABLA_API nabla_status nabla_mask_picture(const nabla_shape *shape, const uint8_t *bitmap,
                                          int batch, int head, int cell, uint8_t *rgb,
                                          size_t cap, int *width, int *height, char *err,
                                          size_t err_len);

/* ---- Attention -------------------------------------------------------------------------- */

/**
 * Block-sparse attention O = softmax(Q Kᵀ / sqrt(D)) V over the kept key blocks of each query
 * block; `mask` NULL means dense attention. All tensors [B,H,S,D] of `dtype`, tile order.
 */
NABLA_API nabla_status nabla_attend(nabla_context *ctx, const nabla_shape *shape,
                                    nabla_dtype dtype, const nabla_mask *mask, cl_mem q,
                                    cl_mem k, cl_mem v, cl_mem o, cl_uint num_wait,
                                    const cl_event *wait, cl_event *done);

/** One-shot: builds the mask of `algo`, attends with it and releases it. */
NABLA_API nabla_status nabla_attention(nabla_context *ctx, const nabla_algo *algo,
                                       const nabla_shape *shape, nabla_dtype dtype, cl_mem q,
                                       cl_mem k, cl_mem v, cl_mem o, cl_uint num_wait,
                                       const cl_event *wait, cl_event *done);

/* ---- Interop: external memory and semaphores -------------------------------------------- */
/*
 * Zero-copy tensors from a renderer or an engine (Vulkan, CUDA, ...): a buffer the other API
 * exported as a file descriptor becomes a `cl_mem` that the rest of this API takes like any
 * other tensor, and semaphores the other API exported order its work against ours on the
 * device, without host round trips (docs/embedding.md). Needs OpenCL 3.0 with
 * cl_khr_external_memory plus cl_khr_external_memory_opaque_fd or _dma_buf (memory), and
 * cl_khr_semaphore + cl_khr_external_semaphore plus _opaque_fd or _sync_fd (semaphores);
 * where one is absent the call returns NABLA_UNSUPPORTED and the last-error text names it.
 *
 * File descriptors: on NABLA_OK the descriptor passed in is consumed; the caller must not use
 * or close it (the OpenCL extensions transfer its ownership to the implementation on a
 * successful import, as Vulkan does). On any failure it is untouched and stays the caller's to
 * close. The payload stays alive while the returned object (or a tensor cut from it) lives,
 * whatever the exporting API does with its own handle.
 *
 * Ordering, per call sequence on the context's queue:
 *   nabla_external_begin  (wait on the other API's semaphores, acquire the imported tensors)
 *   any nablacl calls on those tensors (mask build, attention, one-shot, reorder)
 *   nabla_external_end    (release the tensors, signal semaphores for the other API, flush)
 * All of it is enqueued; nothing blocks the host. Arguments are checked before anything is
 * enqueued.
 */

/** Kinds of external handle (memory: OPAQUE_FD, DMA_BUF; semaphores: OPAQUE_FD, SYNC_FD). */
typedef enum {
  NABLA_HANDLE_OPAQUE_FD = 1, /* Vulkan VK_EXTERNAL_*_HANDLE_TYPE_OPAQUE_FD_BIT, CUDA
                                 CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR */
  NABLA_HANDLE_DMA_BUF = 2,   /* a Linux dma_buf (memory only) */
  NABLA_HANDLE_SYNC_FD = 3    /* a Linux sync file (semaphores only; copy transference) */
} nabla_handle_type;

#define NABLA_HANDLE_BIT(type) (1u << (unsigned)(type))

/** What the context's device can import. */
typedef struct {
  unsigned memory;      /* NABLA_HANDLE_BIT(t) for each memory handle type t it imports */
  unsigned semaphore;   /* NABLA_HANDLE_BIT(t) for each binary-semaphore handle type */
  int has_uuid;         /* 1 when the device reports its UUID (cl_khr_device_uuid) */
  uint8_t uuid[16];     /* equals Vulkan's VkPhysicalDeviceIDProperties::deviceUUID and
                           CUDA's cuDeviceGetUuid for the same GPU */
  char missing[256];    /* space-separated extensions absent for the full set; "" if none */
} nabla_interop_caps;

/** Fills `caps` for the context's device. Never NABLA_UNSUPPORTED: absent features are 0. */
NABLA_API nabla_status nabla_interop_caps_query(nabla_context *ctx, nabla_interop_caps *caps);

/** An external allocation, or the tensor within it. */
typedef struct {
  nabla_handle_type type;    /* NABLA_HANDLE_OPAQUE_FD or NABLA_HANDLE_DMA_BUF */
  int fd;                    /* consumed on success (see above) */
  uint64_t size;             /* bytes of the whole exported allocation, as the exporter made it */
  uint64_t offset;           /* where the tensor starts in it: a multiple of the device's base
                                address alignment (CL_DEVICE_MEM_BASE_ADDR_ALIGN / 8) */
  uint64_t bytes;            /* the tensor's bytes; 0 means size - offset */
  cl_device_id device;       /* the device the allocation lives on (CL_MEM_DEVICE_HANDLE_LIST
                                of the import); NULL: the context's device. Another device is
                                NABLA_INVALID_ARGUMENT */
  const uint8_t *device_uuid;/* 16 bytes, or NULL: when given, the context's device must report
                                this UUID (a GPU of another vendor or slot is refused) */
} nabla_external_memory;

/**
 * Makes a read-write `cl_mem` of `bytes` bytes from an external allocation; the caller releases
 * it with clReleaseMemObject (the payload is freed when both sides have let go). With an offset,
 * or fewer bytes than the allocation, it is a sub-buffer of the imported whole. Errors, before
 * anything is imported: NABLA_INVALID_ARGUMENT for a NULL, a handle type that is no memory
 * handle, a descriptor that is not open, a size of 0 or a region past the allocation's end (a
 * dma_buf's real size is checked too), a misaligned offset, a foreign device or UUID;
 * NABLA_UNSUPPORTED naming the missing extension; a size the driver refuses is NABLA_OPENCL.
 * `*out` is NULL after any failure.
 */
NABLA_API nabla_status nabla_import_memory(nabla_context *ctx, const nabla_external_memory *memory,
                                           cl_mem *out);

/** A binary semaphore imported from another API. */
typedef struct nabla_semaphore nabla_semaphore;

/**
 * Imports a binary semaphore exported as `fd` (NABLA_HANDLE_OPAQUE_FD: reference transference,
 * waits and signals are shared with the exporter's semaphore; NABLA_HANDLE_SYNC_FD: a copy of
 * one signal). `*out` is the caller's (nabla_semaphore_release), usable with this context only.
 * NABLA_INVALID_ARGUMENT for a memory handle type or a descriptor that is not open;
 * NABLA_UNSUPPORTED naming the missing extension.
 */
NABLA_API nabla_status nabla_import_semaphore(nabla_context *ctx, nabla_handle_type type, int fd,
                                              nabla_semaphore **out);

/** Releases a semaphore (NULL allowed) once the commands that use it are done with it. */
NABLA_API void nabla_semaphore_release(nabla_semaphore *semaphore);

/**
 * Enqueues, after the wait list: a wait on each semaphore in `wait_sems` (each must have a
 * signal submitted by the other API, as binary semaphores require), then the acquisition of
 * each imported tensor in `tensors` (a sub-buffer acquires its allocation). Either count may be
 * 0, not both. `done` completes with the last command. Errors before anything is enqueued:
 * NABLA_INVALID_ARGUMENT for a NULL, a semaphore or a tensor of another context;
 * NABLA_UNSUPPORTED naming the missing extension. Whether a tensor was imported at all is the
 * driver's to judge (OpenCL does not report it portably): pass only nabla_import_memory's.
 */
NABLA_API nabla_status nabla_external_begin(nabla_context *ctx, cl_uint num_sems,
                                            nabla_semaphore *const *wait_sems, cl_uint num_tensors,
                                            const cl_mem *tensors, cl_uint num_wait,
                                            const cl_event *wait, cl_event *done);

/**
 * Enqueues, after the wait list: the release of each tensor back to the other API, then a
 * signal of each semaphore in `signal_sems`, and flushes the queue so that the other API's
 * waits can be satisfied. Checks as nabla_external_begin.
 */
NABLA_API nabla_status nabla_external_end(nabla_context *ctx, cl_uint num_tensors,
                                          const cl_mem *tensors, cl_uint num_sems,
                                          nabla_semaphore *const *signal_sems, cl_uint num_wait,
                                          const cl_event *wait, cl_event *done);

/* ---- Host conversions ------------------------------------------------------------------- */

/** fp32 -> fp16 / bf16 bits (round to nearest even) and back; for host-side I/O. */
NABLA_API uint16_t nabla_f32_to_f16(float x);
NABLA_API float nabla_f16_to_f32(uint16_t h);
NABLA_API uint16_t nabla_f32_to_bf16(float x);
NABLA_API float nabla_bf16_to_f32(uint16_t b);

/* ==== Advanced ==============================================================================
 * Kernel configuration, the mask in FlexAttention's layout on the device, tuning and the on-disk
 * caches, profiling, kernel variants, knobs and the float64 reference: for measuring, tuning and
 * testing the library itself, and for handing masks to other frameworks. Stable too, but an
 * application that only attends needs none of it.
 * ========================================================================================== */

/* ---- Kernel configuration ------------------------------------------------------------- */

/**
 * Describes the kernel parameters used on this context for `stage` ("attention" or "select")
 * at this shape and dtype, e.g. "TILE_D=16 TILE_V=16 VARIANT=-1 (tuned)"; the part in
 * parentheses says where they came from: "tuned" (the on-disk tuning cache), "default-<class>"
 * (built-in defaults of the device class) or "reference" (the kernel's own defaults).
 */
NABLA_API nabla_status nabla_config_describe(nabla_context *ctx, const char *stage,
                                             const nabla_shape *shape, nabla_dtype dtype,
                                             char *buf, size_t len);

/* ---- Masks from block means, and mask export -------------------------------------------- */

/**
 * nabla_mask_build from the block means of Q and K instead of Q and K: `q_means` and `k_means`
 * are fp32 [B, H, Nb, D] (tile-order block i's mean over its tokens: 64, fewer in ragged edge
 * blocks; nabla_shape_block_starts), on this context. The same mask as from Q and K up to the
 * rounding of the means, for callers that pool where Q and K already are (nablacl.torch pools
 * in PyTorch and hands over Nb * D floats a head instead of copying S * D values). Dense and
 * pure STA algorithms read neither buffer. The selection's tuned parameters are those of f32.
 */
NABLA_API nabla_status nabla_mask_build_from_means(nabla_context *ctx, const nabla_algo *algo,
                                                   const nabla_shape *shape, cl_mem q_means,
                                                   cl_mem k_means, nabla_mask **out,
                                                   cl_uint num_wait, const cl_event *wait,
                                                   cl_event *done);


/**
 * Writes the mask in FlexAttention's layout into caller-owned device buffers of this context:
 * `kv_num_blocks` int32 [B,H,Nb] (each row's kept count) and `kv_indices` int32 [B,H,Nb,Nb]
 * (each row's kept key blocks ascending, the rest of the row zero), what nabla_mask_read_flex
 * reads. One kernel, enqueued after the wait list (and after the mask's build, by queue order);
 * nothing is read back. NABLA_BUFFER_TOO_SMALL for a buffer under its size; NABLA_INVALID_ARGUMENT
 * for a NULL, foreign-context, read-only or overlapping buffer, or one of the mask's own.
 */
NABLA_API nabla_status nabla_mask_write_flex(nabla_context *ctx, const nabla_mask *mask,
                                             cl_mem kv_num_blocks, cl_mem kv_indices,
                                             cl_uint num_wait, const cl_event *wait,
                                             cl_event *done);

/* ---- Tuning and caches ------------------------------------------------------------------ */
/*
 * The tuner measures every configuration of a kernel's tunables on this context's device,
 * checks each one's output against the kernel's reference configuration before timing it, and
 * stores the fastest per (device, kernel, dtype, head dim, shape class) in the on-disk tuning
 * cache, where nabla_attend / nabla_mask_build find it (see docs/tuning.md). Each finished
 * result is stored at once, and per-configuration measurements are checkpointed, so an
 * interrupted run resumes where it stopped. The context's queue must have profiling enabled.
 */

typedef struct {
  nabla_dtype dtype;        /* storage type to tune for */
  int head_dim;             /* multiple of 8 up to NABLA_MAX_HEAD_DIM; 0 means 64 */
  int full;                 /* 0 quick: the "small" shape class, the default configuration and
                               its neighbours (one tunable changed), short timing; 1: every shape
                               class that fits the device, every configuration, longer timing */
  int force;                /* 1: retune results already in the cache (else they are kept) */
  const char *kernels;      /* comma-separated stages ("attention,select"); NULL or "": all */
  const nabla_shape *shape; /* NULL: a representative problem per shape class; else time on
                               this shape (head_dim taken from it) for its class only */
  double target_ms;         /* time each configuration until this much; 0: 200 quick, 1000 full */
  int max_reps;             /* most timed runs per configuration; 0: 50 */
  int max_candidates;       /* measure at most this many configurations per kernel (the
                               reference and the device default first); 0: all */
  double max_run_ms;        /* skip a shape class whose reference run takes (or, predicted from
                               the check problem, would take) longer; 0: 5000 */
} nabla_tune_options;

/** Fills `options` with the defaults: bf16, head dim 64, quick, everything else 0 (defaults). */
NABLA_API void nabla_tune_options_init(nabla_tune_options *options);

typedef enum {
  NABLA_TUNE_CANDIDATE = 0, /* one configuration measured, rejected, failed or skipped */
  NABLA_TUNE_RESULT = 1,    /* a (kernel, shape class) is finished: the winner */
  NABLA_TUNE_CACHED = 2,    /* a (kernel, shape class) already in the cache: its stored winner */
  NABLA_TUNE_SKIPPED = 3    /* a (kernel, shape class) not tuned (too big or slow, or failed) */
} nabla_tune_event;

typedef enum {
  NABLA_TUNE_MEASURED = 0,  /* correct; `ms` is its median */
  NABLA_TUNE_REJECTED = 1,  /* output differs from the reference configuration's: never chosen */
  NABLA_TUNE_FAILED = 2,    /* build or launch failed */
  NABLA_TUNE_UNFIT = 3      /* excluded by a constraint (local memory, work-group size, ...) */
} nabla_tune_state;

/** One report of the tuner. Pointers are valid during the callback only. */
typedef struct {
  nabla_tune_event event;
  const char *kernel;       /* "attention", "select" */
  const char *shape_class;  /* "small", "medium", "large" */
  nabla_dtype dtype;
  int head_dim;
  const nabla_shape *shape; /* the timed problem */
  int param_count;          /* the configuration (candidate, or the winner) */
  const char *const *param_names;
  const int *param_values;
  const char *params;       /* the same as "NAME=value NAME=value" */
  nabla_tune_state state;   /* CANDIDATE: what happened */
  int is_reference;         /* CANDIDATE: the reference configuration */
  int is_default;           /* CANDIDATE: the device's built-in default configuration */
  int resumed;              /* CANDIDATE: taken from an interrupted run's checkpoint */
  int reps;                 /* CANDIDATE: timed runs behind `ms` */
  double ms;                /* median ms (CANDIDATE measured; RESULT/CACHED: the winner's) */
  double reference_ms;      /* RESULT: the reference configuration's median */
  double default_ms;        /* RESULT: the built-in default configuration's median */
  double max_error;         /* CANDIDATE: max |output - reference output| (select: rows that
                               differ beyond rounding) */
  int candidates;           /* RESULT: configurations measured */
  int stored;               /* RESULT: written to the cache */
  const char *note;         /* why rejected / failed / unfit / skipped; "" otherwise */
  int done, total;          /* progress: configurations handled / planned in this run */
} nabla_tune_report;

/** Receives reports; returning non-zero stops the tuner after the current configuration. */
typedef int (*nabla_tune_callback)(const nabla_tune_report *report, void *user);

typedef struct {
  int results;              /* (kernel, shape class) pairs tuned in this run */
  int stored;               /* of which written to the cache */
  int cached;               /* already in the cache, kept */
  int skipped;              /* too big, too slow or failed */
  int interrupted;          /* the callback asked to stop; rerun to resume */
  double seconds;           /* wall time of the run */
} nabla_tune_summary;

/**
 * Tunes the kernels on ctx's device as `options` say (NULL: nabla_tune_options_init). Reports
 * go to `callback` (may be NULL); `summary` (may be NULL) gets the totals. Results are usable
 * even when the cache is off or unwritable (then nothing is stored). Returns NABLA_OK when every
 * requested (kernel, shape class) was tuned, found in the cache or deliberately skipped, or the
 * callback stopped the run; a failure of a kernel's reference configuration returns its status
 * after the remaining kernels were tried. Invalid options: NABLA_INVALID_ARGUMENT.
 */
NABLA_API nabla_status nabla_tune(nabla_context *ctx, const nabla_tune_options *options,
                                  nabla_tune_callback callback, void *user,
                                  nabla_tune_summary *summary);

/**
 * Writes the cache root (NABLACL_CACHE_DIR, else $XDG_CACHE_HOME/nablacl, else
 * ~/.cache/nablacl) to buf. NABLA_NOT_FOUND when caching is off (buf gets ""),
 * NABLA_BUFFER_TOO_SMALL when it does not fit.
 */
NABLA_API nabla_status nabla_cache_dir(char *buf, size_t len);

/** One valid entry of the on-disk caches. Pointers are valid during the callback only. */
typedef struct {
  const char *kind;         /* the namespace: "programs", "tuning", "tuning-progress", ... */
  const char *key;          /* the full key text */
  const char *device;       /* device description "platform|version|name|vendor|driver|version" */
  const char *kernel;       /* stage name ("" when unknown) */
  const char *params;       /* tuning: the parameters as JSON; programs: the build options */
  const char *dtype;        /* tuning: "f32", "f16", "bf16"; else "" */
  int head_dim;             /* tuning; else 0 */
  const char *shape_class;  /* tuning; else "" */
  double ms;                /* tuning: the winner's median time; else -1 */
  const char *date;         /* tuning: when tuned; else the file's mtime (UTC, ISO 8601) */
  size_t bytes;             /* payload size */
} nabla_cache_entry;

/** Receives entries; returning non-zero stops the walk. */
typedef int (*nabla_cache_visit)(const nabla_cache_entry *entry, void *user);

/**
 * Visits every valid entry of every namespace under the cache root `dir` (NULL: nabla_cache_dir).
 * Invalid, foreign and temporary files are skipped. A missing directory has no entries
 * (NABLA_OK); caching off with dir NULL is NABLA_NOT_FOUND.
 */
NABLA_API nabla_status nabla_cache_list(const char *dir, nabla_cache_visit visit, void *user);

/**
 * Removes every entry (program binaries, tuning results and checkpoints, variant probe
 * verdicts, tensor map templates) under `dir` (NULL: nabla_cache_dir). Directories and foreign files stay. Caching off with dir NULL:
 * NABLA_NOT_FOUND; a file that cannot be removed: NABLA_IO.
 */
NABLA_API nabla_status nabla_cache_clear(const char *dir);

/* ---- Profiling -------------------------------------------------------------------------- */

/**
 * Turns per-stage profiling on or off for this context (off by default). While on, every
 * kernel the library enqueues is recorded. Turning it on needs a queue with
 * CL_QUEUE_PROFILING_ENABLE (nabla_context_create's has it): NABLA_UNSUPPORTED otherwise.
 */
NABLA_API nabla_status nabla_profile_enable(nabla_context *ctx, int on);

/**
 * Waits for the recorded kernels, writes "stage ms" lines (summed per stage, in first-enqueue
 * order, e.g. "pool 0.412\nmap 0.950\n...") to buf and forgets them.
 */
NABLA_API nabla_status nabla_profile_report(nabla_context *ctx, char *buf, size_t len);

/* ---- Variants --------------------------------------------------------------------------- */
/*
 * A stage can have several implementations ("variants"); the library picks one per device and
 * problem, and "portable" (OpenCL C, every device and dtype) is always there as the fallback.
 * nabla_variant_names lists them all; docs/variants.md says what each needs and does (the
 * tensor-core kernels for NVIDIA, "cpu-rows" for CPUs, emulated twins that run a vendor kernel's
 * logic on any device when forced, as a test aid). A variant that needs a device feature runs a
 * probe: it compiles and runs a tiny kernel once per device (the first time it is needed; this
 * blocks), and its verdict is kept in the disk cache. Choice, first match: nabla_variant_force;
 * NABLACL_VARIANT; the tuned VARIANT parameter; else the fastest eligible variant. A requested
 * variant that cannot run falls back to portable, and nabla_variant_note says why. The reduced
 * map of nabla_mask_build follows the same request (not the tuned VARIANT): on tensor cores where
 * the requested (or automatic) variant has a map kernel that can run, else fp32 FMA.
 */

/** Every variant name, "auto" first, comma-separated (a static string): what
 * nabla_variant_force and NABLACL_VARIANT accept. */
NABLA_API const char *nabla_variant_names(void);

/** 1 if the device can run `variant` (runs its probe when not yet known), else 0; on 0,
 * nabla_variant_note says why. Never fails; unknown names and NULL give 0. */
NABLA_API int nabla_variant_supported(nabla_context *ctx, const char *variant);

/** Writes the space-separated names of the variants this device supports, e.g.
 * "portable nvidia-mma" (the emulation, a test aid, is not listed). Probes as needed. */
NABLA_API nabla_status nabla_variant_list(nabla_context *ctx, char *buf, size_t len);

/** Forces a variant for this context's later calls; NULL or "auto" restores the automatic
 * choice. NABLA_INVALID_ARGUMENT for an unknown name. A forced variant that cannot run on a
 * problem still falls back to portable (see nabla_variant_note). */
NABLA_API nabla_status nabla_variant_force(nabla_context *ctx, const char *variant);

/**
 * Names the attention variant the next nabla_attend with a mask on this shape and dtype would
 * use ("portable", "nvidia-mma", ...). Runs the probe and builds that (sparse) kernel if needed,
 * so its build failure is already accounted for; dense attention (mask NULL) builds another
 * program, and a launch can still fall back (nabla_variant_last then says what ran).
 * NABLA_BUFFER_TOO_SMALL when the name does not fit.
 */
NABLA_API nabla_status nabla_attention_variant(nabla_context *ctx, const nabla_shape *shape,
                                               nabla_dtype dtype, char *buf, size_t len);

/** Why the last variant decision (nabla_attend, nabla_attention_variant,
 * nabla_variant_supported) did not get the requested or preferred variant; "" if it did. */
NABLA_API const char *nabla_variant_note(const nabla_context *ctx);

/** Variant used by the last attention launch on this context ("" before the first). */
NABLA_API const char *nabla_variant_last(const nabla_context *ctx);

/* ---- Knobs ------------------------------------------------------------------------------ */
/*
 * Developer settings of the kernels, held by the context: VARIANT, MMA_LAZY_RESCALE, WG_BULK,
 * MMA_QPW, MMA_SMEM, MMA_MAXRREG (nabla_knob_describe says what each does and takes; README.md
 * and docs/variants.md too). nabla_context_create reads each from the environment variable
 * NABLACL_<name> once; a value out of range, or an unknown variant name, fails the creation
 * (NABLA_INVALID_ARGUMENT, the message lists the valid values). Knobs change build options, so
 * a context's programs are built anew for other values.
 */

/** Sets a knob on this context; name with or without "NABLACL_"; value NULL or "" restores its
 * default. NABLA_INVALID_ARGUMENT (the message lists the valid names or values) for an unknown
 * knob or a value out of range. */
NABLA_API nabla_status nabla_knob_set(nabla_context *ctx, const char *name, const char *value);

/** The knob's value on this context as text: the value set, else its default where the knob has
 * one (WG_BULK: "2"), else "" (the kernels choose, e.g. MMA_QPW by mask kind).
 * NABLA_INVALID_ARGUMENT for an unknown knob, NABLA_BUFFER_TOO_SMALL when it does not fit. */
NABLA_API nabla_status nabla_knob_get(nabla_context *ctx, const char *name, char *buf, size_t len);

/** One line about knob `index` (0, 1, ...): name, variable, range, default, the variants that
 * read it and what it does, tab-separated. NABLA_NOT_FOUND past the last knob. */
NABLA_API nabla_status nabla_knob_describe(int index, char *buf, size_t len);

/* ---- Float64 reference ------------------------------------------------------------------ */
/*
 * Plain-C float64 versions of every stage: the oracle of the tests and of `nablacl run --check`.
 * Tensors are double [B,H,S,D]; bitmaps are uint8 [B,H,Nb,Nb]; block layout as
 * nabla_shape_block_starts. Shapes must be valid (nabla_shape_check); no allocation failure is
 * possible except where a status is returned.
 */

/** Raster <-> tile order on the host. */
NABLA_API void nabla_ref_reorder(const nabla_shape *shape, nabla_reorder_dir dir,
                                 const double *src, double *dst);
/** Block means: pooled [B,H,Nb,D]. */
NABLA_API void nabla_ref_pool(const nabla_shape *shape, const double *x, double *pooled);
/** Reduced map softmax_j(q̄_i·k̄_j / sqrt(D)): probs [B,H,Nb,Nb]. A row with a NaN or ±Inf logit
 * is all NaN (nabla_ref_select then keeps every block of it, as the device does). */
NABLA_API void nabla_ref_map_softmax(const nabla_shape *shape, const double *q_pooled,
                                     const double *k_pooled, double *probs);
/**
 * CDF selection: keeps block j of a row iff the mass of blocks with strictly larger probability
 * is <= thr. Sets bitmap (overwrites). When `near` is not NULL, near[row] = 1 marks the rows an
 * fp32 implementation may legitimately decide differently: a block's mass above (or above plus
 * its own) within `eps` of thr, a group of equal probabilities straddling the cut, or two
 * probabilities on either side of the cut within a relative `eps` of each other. thr >= 1 keeps
 * everything and flags nothing.
 */
NABLA_API void nabla_ref_select(const nabla_shape *shape, const double *probs, double thr,
                                uint8_t *bitmap, uint8_t *near, double eps);
/** ORs the STA window (tile units, truncated at borders) into bitmap. Video shapes only. */
NABLA_API void nabla_ref_sta(const nabla_shape *shape, int wt, int wh, int ww, uint8_t *bitmap);
/** Full mask of an algorithm from Q and K (double, tile order). Dense sets every block; q and k
 * may be NULL for dense and pure-STA algorithms. */
NABLA_API nabla_status nabla_ref_mask(const nabla_shape *shape, const nabla_algo *algo,
                                      const double *q, const double *k, uint8_t *bitmap,
                                      uint8_t *near, double eps);
/** CSR of a bitmap: row_ptr [B*H*Nb + 1], col_idx [kept] ascending per row (NULL: only count).
 * Returns kept, or -1 for bad arguments. */
NABLA_API int64_t nabla_ref_csr(const nabla_shape *shape, const uint8_t *bitmap,
                                int32_t *row_ptr, int32_t *col_idx);
/** Block-sparse attention over a CSR mask (row_ptr/col_idx as nabla_ref_csr). */
NABLA_API void nabla_ref_attention_sparse(const nabla_shape *shape, const double *q,
                                          const double *k, const double *v,
                                          const int32_t *row_ptr, const int32_t *col_idx,
                                          double *out);
/** Dense attention. */
NABLA_API void nabla_ref_attention_dense(const nabla_shape *shape, const double *q,
                                         const double *k, const double *v, double *out);

#ifdef __cplusplus
}
#endif
#endif /* NABLACL_H */
