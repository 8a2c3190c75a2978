"""cffi (ABI mode) declarations of the C API and the few OpenCL calls the package makes itself.

The declarations mirror include/nablacl.h; tests/test_binding.py checks every declared function
resolves in the loaded library. The shared library is found, first match:
NABLACL_LIBRARY (a path), the copy installed beside this package by ``pip install .``, then the
system's (``ctypes.util.find_library("nablacl")``). libOpenCL.so.1 is the ICD loader.
"""
from __future__ import annotations

import ctypes.util
import os
from typing import Any

import cffi

ffi = cffi.FFI()

ffi.cdef(
    r"""
typedef int32_t cl_int;
typedef uint32_t cl_uint;
typedef uint64_t cl_ulong;
typedef cl_ulong cl_bitfield;
typedef cl_bitfield cl_mem_flags;
typedef cl_uint cl_mem_info;
typedef cl_uint cl_device_info;
typedef cl_uint cl_buffer_create_type;
typedef struct _cl_context *cl_context;
typedef struct _cl_device_id *cl_device_id;
typedef struct _cl_command_queue *cl_command_queue;
typedef struct _cl_mem *cl_mem;
typedef struct _cl_event *cl_event;

typedef enum {
  NABLA_OK = 0, NABLA_INVALID_ARGUMENT = -1, NABLA_OUT_OF_MEMORY = -2, NABLA_OPENCL = -3,
  NABLA_BUILD = -4, NABLA_UNSUPPORTED = -5, NABLA_NO_DEVICE = -6, NABLA_BUFFER_TOO_SMALL = -7,
  NABLA_IO = -8, NABLA_NOT_FOUND = -9
} nabla_status;

typedef enum { NABLA_F32 = 0, NABLA_F16 = 1, NABLA_BF16 = 2 } nabla_dtype;
typedef enum { NABLA_RASTER_TO_TILE = 0, NABLA_TILE_TO_RASTER = 1 } nabla_reorder_dir;

typedef struct {
  int index;
  char platform[128];
  char name[128];
  char vendor[128];
  char driver[64];
  char opencl_c[64];
  char type[16];
  unsigned compute_units;
  uint64_t global_mem;
  uint64_t local_mem;
  int fp16;
  int fp64;
  int subgroups;
} nabla_device_info;

typedef struct { int batch, heads, seq, head_dim; int grid_t, grid_h, grid_w; } nabla_shape;
typedef struct { int nabla; double thr; int sta; int sta_t, sta_h, sta_w; } nabla_algo;
typedef struct nabla_context nabla_context;
typedef struct nabla_mask nabla_mask;

unsigned nabla_version(void);
const char *nabla_version_string(void);
const char *nabla_status_str(nabla_status status);
nabla_status nabla_devices_list(nabla_device_info *out, size_t cap, size_t *count);

nabla_status nabla_context_create(nabla_context **out, const char *selector, char *err, size_t err_len);
nabla_status nabla_context_create_from_cl(nabla_context **out, cl_context cl_ctx, cl_device_id device,
                                          cl_command_queue queue, char *err, size_t err_len);
void nabla_context_destroy(nabla_context *ctx);
nabla_status nabla_context_trim(nabla_context *ctx, size_t *freed);
const char *nabla_last_error(const nabla_context *ctx);
cl_context nabla_context_cl_context(const nabla_context *ctx);
cl_device_id nabla_context_device(const nabla_context *ctx);
cl_command_queue nabla_context_queue(const nabla_context *ctx);
const char *nabla_context_cache_dir(const nabla_context *ctx);
const char *nabla_context_device_key(const nabla_context *ctx);

const char *nabla_dtype_name(nabla_dtype dtype);
size_t nabla_dtype_size(nabla_dtype dtype);
int nabla_shape_blocks(const nabla_shape *shape);
nabla_status nabla_shape_check(const nabla_shape *shape, char *err, size_t err_len);
nabla_status nabla_shape_block_starts(const nabla_shape *shape, int32_t *block_start, size_t cap);
nabla_status nabla_algo_parse(const char *text, nabla_algo *out, char *err, size_t err_len);
int nabla_algo_format(const nabla_algo *algo, char *buf, size_t len);

nabla_status nabla_reorder(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                           nabla_reorder_dir dir, cl_mem src, cl_mem dst, cl_uint num_wait,
                           const cl_event *wait, cl_event *done);

nabla_status nabla_mask_build(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                              nabla_dtype dtype, cl_mem q, cl_mem k, nabla_mask **out,
                              cl_uint num_wait, const cl_event *wait, cl_event *done);
nabla_status nabla_mask_build_from_means(nabla_context *ctx, const nabla_algo *algo,
                                         const nabla_shape *shape, cl_mem q_means, cl_mem k_means,
                                         nabla_mask **out, cl_uint num_wait, const cl_event *wait,
                                         cl_event *done);
nabla_status nabla_mask_from_bitmap(nabla_context *ctx, const nabla_shape *shape,
                                    const uint8_t *bitmap, nabla_mask **out);
void nabla_mask_release(nabla_mask *mask);
nabla_status nabla_mask_stats(nabla_context *ctx, const nabla_mask *mask, int64_t *kept, double *density);
nabla_status nabla_mask_buffers(const nabla_mask *mask, cl_mem *row_ptr, cl_mem *col_idx);
nabla_status nabla_mask_read_csr(nabla_context *ctx, const nabla_mask *mask, int32_t *row_ptr,
                                 size_t row_ptr_cap, int32_t *col_idx, size_t col_idx_cap);
nabla_status nabla_mask_read_bitmap(nabla_context *ctx, const nabla_mask *mask, uint8_t *bitmap, size_t cap);
nabla_status nabla_mask_read_flex(nabla_context *ctx, const nabla_mask *mask, int32_t *kv_num_blocks,
                                  size_t num_cap, int32_t *kv_indices, size_t idx_cap);
nabla_status nabla_mask_write_flex(nabla_context *ctx, const nabla_mask *mask, cl_mem kv_num_blocks,
                                   cl_mem kv_indices, cl_uint num_wait, const cl_event *wait, cl_event *done);

nabla_status nabla_attend(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                          const nabla_mask *mask, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                          cl_uint num_wait, const cl_event *wait, cl_event *done);
nabla_status nabla_attention(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *shape,
                             nabla_dtype dtype, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                             cl_uint num_wait, const cl_event *wait, cl_event *done);

nabla_status nabla_profile_enable(nabla_context *ctx, int on);
nabla_status nabla_profile_report(nabla_context *ctx, char *buf, size_t len);

int nabla_variant_supported(nabla_context *ctx, const char *variant);
nabla_status nabla_variant_list(nabla_context *ctx, char *buf, size_t len);
nabla_status nabla_variant_force(nabla_context *ctx, const char *variant);
nabla_status nabla_attention_variant(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                     char *buf, size_t len);
const char *nabla_variant_note(const nabla_context *ctx);
const char *nabla_variant_last(const nabla_context *ctx);

nabla_status nabla_mask_picture(const nabla_shape *shape, const uint8_t *bitmap, int batch, int head,
                                int cell, uint8_t *rgb, size_t cap, int *width, int *height,
                                char *err, size_t err_len);

const char *nabla_variant_names(void);
nabla_status nabla_knob_set(nabla_context *ctx, const char *name, const char *value);
nabla_status nabla_knob_get(nabla_context *ctx, const char *name, char *buf, size_t len);
nabla_status nabla_knob_describe(int index, char *buf, size_t len);

uint16_t nabla_f32_to_bf16(float x);
float nabla_bf16_to_f32(uint16_t b);

void nabla_ref_reorder(const nabla_shape *shape, nabla_reorder_dir dir, const double *src, double *dst);
nabla_status nabla_ref_mask(const nabla_shape *shape, const nabla_algo *algo, const double *q,
                            const double *k, uint8_t *bitmap, uint8_t *near, double eps);
int64_t nabla_ref_csr(const nabla_shape *shape, const uint8_t *bitmap, int32_t *row_ptr, int32_t *col_idx);
void nabla_ref_attention_sparse(const nabla_shape *shape, const double *q, const double *k,
                                const double *v, const int32_t *row_ptr, const int32_t *col_idx,
                                double *out);
void nabla_ref_attention_dense(const nabla_shape *shape, const double *q, const double *k,
                               const double *v, double *out);

/* Interop: external memory */
typedef enum { NABLA_HANDLE_OPAQUE_FD = 1, NABLA_HANDLE_DMA_BUF = 2, NABLA_HANDLE_SYNC_FD = 3 } nabla_handle_type;
typedef struct {
  unsigned memory;
  unsigned semaphore;
  int has_uuid;
  uint8_t uuid[16];
  char missing[256];
} nabla_interop_caps;
nabla_status nabla_interop_caps_query(nabla_context *ctx, nabla_interop_caps *caps);
typedef struct {
  nabla_handle_type type;
  int fd;
  uint64_t size;
  uint64_t offset;
  uint64_t bytes;
  cl_device_id device;
  const uint8_t *device_uuid;
} nabla_external_memory;
typedef struct nabla_semaphore nabla_semaphore;
nabla_status nabla_import_memory(nabla_context *ctx, const nabla_external_memory *memory, cl_mem *out);
nabla_status nabla_external_begin(nabla_context *ctx, cl_uint num_sems, nabla_semaphore *const *wait_sems,
                                  cl_uint num_tensors, const cl_mem *tensors, cl_uint num_wait,
                                  const cl_event *wait, cl_event *done);
nabla_status nabla_external_end(nabla_context *ctx, cl_uint num_tensors, const cl_mem *tensors,
                                cl_uint num_sems, nabla_semaphore *const *signal_sems, cl_uint num_wait,
                                const cl_event *wait, cl_event *done);

/* OpenCL (the ICD loader) */
cl_mem clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size, void *host_ptr, cl_int *errcode_ret);
cl_int clRetainMemObject(cl_mem memobj);
cl_int clReleaseMemObject(cl_mem memobj);
cl_int clGetMemObjectInfo(cl_mem memobj, cl_mem_info param_name, size_t param_value_size,
                          void *param_value, size_t *param_value_size_ret);
cl_int clGetDeviceInfo(cl_device_id device, cl_device_info param_name, size_t param_value_size,
                       void *param_value, size_t *param_value_size_ret);
cl_int clEnqueueWriteBuffer(cl_command_queue queue, cl_mem buffer, cl_uint blocking, size_t offset,
                            size_t size, const void *ptr, cl_uint num_wait, const cl_event *wait,
                            cl_event *event);
cl_int clEnqueueReadBuffer(cl_command_queue queue, cl_mem buffer, cl_uint blocking, size_t offset,
                           size_t size, void *ptr, cl_uint num_wait, const cl_event *wait,
                           cl_event *event);
cl_int clEnqueueCopyBuffer(cl_command_queue queue, cl_mem src, cl_mem dst, size_t src_offset,
                           size_t dst_offset, size_t size, cl_uint num_wait, const cl_event *wait,
                           cl_event *event);
cl_int clFinish(cl_command_queue queue);
cl_int clWaitForEvents(cl_uint num_events, const cl_event *events);
cl_int clRetainEvent(cl_event event);
cl_int clReleaseEvent(cl_event event);
"""
)

CL_SUCCESS = 0
CL_MEM_READ_WRITE = 1 << 0
CL_MEM_SIZE = 0x1102
CL_MEM_CONTEXT = 0x1106


def _open_nablacl() -> Any:
    path = os.environ.get("NABLACL_LIBRARY")
    if path:
        return ffi.dlopen(path)
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libnablacl.so")
    if os.path.exists(here):
        return ffi.dlopen(here)
    found = ctypes.util.find_library("nablacl")
    if not found:
        raise OSError(
            "libnablacl.so not found: install the package with `pip install .`, install the C "
            "library (`cmake --install build`), or set NABLACL_LIBRARY to its path"
        )
    return ffi.dlopen(found)


def _open_opencl() -> Any:
    try:
        return ffi.dlopen("libOpenCL.so.1")
    except OSError:
        found = ctypes.util.find_library("OpenCL")
        if not found:
            raise
        return ffi.dlopen(found)


lib: Any = _open_nablacl()
cl: Any = _open_opencl()


def string(ptr: Any) -> str:
    """A C string as str ("" for NULL)."""
    return "" if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")
