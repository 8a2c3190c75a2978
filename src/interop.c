/* External memory and semaphores: tensors and synchronisation shared with Vulkan, CUDA and
 * other APIs through file descriptors (cl_khr_external_memory, cl_khr_external_semaphore). */

/* The import needs OpenCL 3.0's clCreateBufferWithProperties and CL_MEM_PROPERTIES, which the
 * headers hide below a 3.0 target; the rest of the library targets 1.2. */
#undef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 300

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CL/cl_ext.h>

#include "internal.h"

/* Weak: an OpenCL loader older than 3.0 lacks it, and the library must still load there. */
#pragma weak clCreateBufferWithProperties

/* Names of the final extension text; headers before 2023 spell the memory one without MEM_. */
#ifndef CL_MEM_DEVICE_HANDLE_LIST_KHR
#define CL_MEM_DEVICE_HANDLE_LIST_KHR 0x2051
#define CL_MEM_DEVICE_HANDLE_LIST_END_KHR 0
#endif
#ifndef CL_DEVICE_UUID_KHR /* cl_khr_device_uuid */
#define CL_DEVICE_UUID_KHR 0x106A
#endif

struct nabla_semaphore {
  cl_semaphore_khr sem;
  cl_context cl_ctx;
  clReleaseSemaphoreKHR_fn release;
};

/* The extension entry points of the context's platform; NULL where absent. */
typedef struct {
  clCreateSemaphoreWithPropertiesKHR_fn create_sem;
  clReleaseSemaphoreKHR_fn release_sem;
  clEnqueueWaitSemaphoresKHR_fn wait_sems;
  clEnqueueSignalSemaphoresKHR_fn signal_sems;
  clEnqueueAcquireExternalMemObjectsKHR_fn acquire;
  clEnqueueReleaseExternalMemObjectsKHR_fn release;
} interop_fns;

static void *platform_fn(cl_platform_id plat, const char *name) {
  return plat ? clGetExtensionFunctionAddressForPlatform(plat, name) : NULL;
}

static void load_fns(const nabla_context *ctx, interop_fns *f) {
  cl_platform_id plat = NULL;
  memset(f, 0, sizeof *f);
  if (clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL) != CL_SUCCESS) return;
  /* POSIX: the data pointer converts to a function pointer; memcpy keeps ISO C quiet. */
  void *p;
#define LOAD_(field, name) (p = platform_fn(plat, name), memcpy(&f->field, &p, sizeof f->field))
  LOAD_(create_sem, "clCreateSemaphoreWithPropertiesKHR");
  LOAD_(release_sem, "clReleaseSemaphoreKHR");
  LOAD_(wait_sems, "clEnqueueWaitSemaphoresKHR");
  LOAD_(signal_sems, "clEnqueueSignalSemaphoresKHR");
  LOAD_(acquire, "clEnqueueAcquireExternalMemObjectsKHR");
  LOAD_(release, "clEnqueueReleaseExternalMemObjectsKHR");
#undef LOAD_
}

/* Whether the list query `what` of the device holds `value` (a cl_uint list). */
static int device_lists(cl_device_id dev, cl_device_info what, cl_uint value) {
  size_t len = 0;
  cl_uint list[32];
  if (clGetDeviceInfo(dev, what, 0, NULL, &len) != CL_SUCCESS || len == 0 || len > sizeof list) return 0;
  if (clGetDeviceInfo(dev, what, len, list, NULL) != CL_SUCCESS) return 0;
  for (size_t i = 0; i < len / sizeof list[0]; i++)
    if (list[i] == value) return 1;
  return 0;
}

static const char *memory_ext(nabla_handle_type t) {
  return t == NABLA_HANDLE_OPAQUE_FD ? "cl_khr_external_memory_opaque_fd" : "cl_khr_external_memory_dma_buf";
}
static cl_uint memory_cl_type(nabla_handle_type t) {
  return t == NABLA_HANDLE_OPAQUE_FD ? CL_EXTERNAL_MEMORY_HANDLE_OPAQUE_FD_KHR : CL_EXTERNAL_MEMORY_HANDLE_DMA_BUF_KHR;
}
static const char *semaphore_ext(nabla_handle_type t) {
  return t == NABLA_HANDLE_OPAQUE_FD ? "cl_khr_external_semaphore_opaque_fd" : "cl_khr_external_semaphore_sync_fd";
}
static cl_uint semaphore_cl_type(nabla_handle_type t) {
  return t == NABLA_HANDLE_OPAQUE_FD ? CL_SEMAPHORE_HANDLE_OPAQUE_FD_KHR : CL_SEMAPHORE_HANDLE_SYNC_FD_KHR;
}

/* The first extension (or entry point) missing to import memory of type t; NULL if none. */
static const char *memory_missing(const nabla_context *ctx, nabla_handle_type t) {
  if (!nabla_device_has_extension(ctx->device, "cl_khr_external_memory")) return "cl_khr_external_memory";
  if (!nabla_device_has_extension(ctx->device, memory_ext(t)) ||
      !device_lists(ctx->device, CL_DEVICE_EXTERNAL_MEMORY_IMPORT_HANDLE_TYPES_KHR, memory_cl_type(t)))
    return memory_ext(t);
  return NULL;
}

static const char *semaphore_missing(const nabla_context *ctx, nabla_handle_type t) {
  if (!nabla_device_has_extension(ctx->device, "cl_khr_semaphore")) return "cl_khr_semaphore";
  if (!nabla_device_has_extension(ctx->device, "cl_khr_external_semaphore")) return "cl_khr_external_semaphore";
  if (!nabla_device_has_extension(ctx->device, semaphore_ext(t)) ||
      !device_lists(ctx->device, CL_DEVICE_SEMAPHORE_IMPORT_HANDLE_TYPES_KHR, semaphore_cl_type(t)))
    return semaphore_ext(t);
  return NULL;
}

static void append_missing(char *buf, size_t len, const char *ext) {
  if (!ext || strstr(buf, ext)) return;
  size_t n = strlen(buf);
  snprintf(buf + n, len - n, "%s%s", n ? " " : "", ext);
}

nabla_status nabla_interop_caps_query(nabla_context *ctx, nabla_interop_caps *caps) {
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  if (!caps) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "caps is NULL");
  memset(caps, 0, sizeof *caps);
  const nabla_handle_type mem_types[] = {NABLA_HANDLE_OPAQUE_FD, NABLA_HANDLE_DMA_BUF};
  const nabla_handle_type sem_types[] = {NABLA_HANDLE_OPAQUE_FD, NABLA_HANDLE_SYNC_FD};
  for (size_t i = 0; i < 2; i++) {
    const char *m = memory_missing(ctx, mem_types[i]);
    if (!m) caps->memory |= NABLA_HANDLE_BIT(mem_types[i]);
    append_missing(caps->missing, sizeof caps->missing, m);
    m = semaphore_missing(ctx, sem_types[i]);
    if (!m) caps->semaphore |= NABLA_HANDLE_BIT(sem_types[i]);
    append_missing(caps->missing, sizeof caps->missing, m);
  }
  if (nabla_device_has_extension(ctx->device, "cl_khr_device_uuid") &&
      clGetDeviceInfo(ctx->device, CL_DEVICE_UUID_KHR, sizeof caps->uuid, caps->uuid, NULL) == CL_SUCCESS)
    caps->has_uuid = 1;
  else
    append_missing(caps->missing, sizeof caps->missing, "cl_khr_device_uuid");
  return NABLA_OK;
}

/* A descriptor the process has open (a closed or never-opened one is refused up front: the
 * driver's own answer to it is not specified). */
static int fd_open(int fd) { return fd >= 0 && fcntl(fd, F_GETFD) != -1; }

/* Duplicates fd for the import, so that a failure after the import (the sub-buffer) leaves the
 * caller's descriptor as it was; on success the caller's is closed (ownership moved). */
static nabla_status dup_fd(nabla_context *ctx, int fd, int *out) {
  *out = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (*out < 0) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "cannot duplicate fd %d: %s", fd, strerror(errno));
  return NABLA_OK;
}

static void uuid_hex(const uint8_t *u, char out[33]) {
  for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", u[i]);
}

/* Everything about an import that can be checked without touching the driver. */
static nabla_status check_memory(nabla_context *ctx, const nabla_external_memory *m, uint64_t *bytes) {
  if (m->type != NABLA_HANDLE_OPAQUE_FD && m->type != NABLA_HANDLE_DMA_BUF)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "handle type %d is not a memory handle (use NABLA_HANDLE_OPAQUE_FD or NABLA_HANDLE_DMA_BUF)",
                      (int)m->type);
  if (!fd_open(m->fd))
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "fd %d is not an open file descriptor", m->fd);
  if (m->size == 0) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "the allocation's size is 0");
  if (m->offset >= m->size)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "offset %llu is past the allocation's %llu bytes",
                      (unsigned long long)m->offset, (unsigned long long)m->size);
  *bytes = m->bytes ? m->bytes : m->size - m->offset;
  if (*bytes > m->size - m->offset)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "%llu bytes at offset %llu run past the allocation's %llu bytes",
                      (unsigned long long)*bytes, (unsigned long long)m->offset, (unsigned long long)m->size);
  if (m->size > SIZE_MAX) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "size does not fit size_t");
  if (m->type == NABLA_HANDLE_DMA_BUF) { /* a dma_buf tells its size */
    off_t end = lseek(m->fd, 0, SEEK_END);
    lseek(m->fd, 0, SEEK_SET);
    if (end > 0 && (uint64_t)end < m->size)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "the dma_buf holds %lld bytes, not the %llu given as its size",
                        (long long)end, (unsigned long long)m->size);
  }
  if (m->device && m->device != ctx->device) {
    char name[128] = "", mine[128] = "";
    nabla_device_string(m->device, CL_DEVICE_NAME, name, sizeof name);
    nabla_device_string(ctx->device, CL_DEVICE_NAME, mine, sizeof mine);
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "the allocation's device (%s) is not this context's device (%s)",
                      name[0] ? name : "not a valid cl_device_id", mine);
  }
  return NABLA_OK;
}

nabla_status nabla_import_memory(nabla_context *ctx, const nabla_external_memory *m, cl_mem *out) {
  nabla_status st = NABLA_OK;
  cl_mem whole = NULL, part = NULL;
  int fd = -1;
  uint64_t bytes = 0;
  if (out) *out = NULL;
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  if (!m || !out) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "memory and out must not be NULL");
  TRY(st, check_memory(ctx, m, &bytes));
  const char *missing = memory_missing(ctx, m->type);
  if (missing) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "the device cannot import %s memory: it lacks %s",
                    m->type == NABLA_HANDLE_OPAQUE_FD ? "opaque-fd" : "dma_buf", missing);
    goto done;
  }
  if (!clCreateBufferWithProperties) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "the OpenCL loader lacks clCreateBufferWithProperties (OpenCL 3.0)");
    goto done;
  }
  if (m->device_uuid) {
    nabla_interop_caps caps;
    TRY(st, nabla_interop_caps_query(ctx, &caps));
    char want[33], have[33];
    uuid_hex(m->device_uuid, want);
    if (!caps.has_uuid) {
      st = nabla_fail(ctx, NABLA_UNSUPPORTED, "the device cannot tell its UUID (cl_khr_device_uuid) to match %s", want);
      goto done;
    }
    uuid_hex(caps.uuid, have);
    if (memcmp(caps.uuid, m->device_uuid, 16) != 0) {
      st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "the allocation's device (UUID %s) is not this context's device (UUID %s)",
                      want, have);
      goto done;
    }
  }
  cl_uint align_bits = 0;
  TRY_CL(st, ctx, clGetDeviceInfo(ctx->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL));
  const uint64_t align = align_bits / 8 ? align_bits / 8 : 1;
  if (m->offset % align) {
    st = nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "offset %llu is not a multiple of the device's %llu-byte base address alignment",
                    (unsigned long long)m->offset, (unsigned long long)align);
    goto done;
  }
  TRY(st, dup_fd(ctx, m->fd, &fd));
  const cl_mem_properties props[] = {(cl_mem_properties)memory_cl_type(m->type),
                                     (cl_mem_properties)fd,
                                     CL_MEM_DEVICE_HANDLE_LIST_KHR,
                                     (cl_mem_properties)(uintptr_t)ctx->device,
                                     CL_MEM_DEVICE_HANDLE_LIST_END_KHR,
                                     0};
  cl_int rc = CL_SUCCESS;
  whole = clCreateBufferWithProperties(ctx->cl_ctx, props, CL_MEM_READ_WRITE, (size_t)m->size, NULL, &rc);
  if (rc != CL_SUCCESS || !whole) {
    whole = NULL;
    st = nabla_fail(ctx, NABLA_OPENCL, "clCreateBufferWithProperties refused the %llu-byte %s import: %s (%d)",
                    (unsigned long long)m->size, m->type == NABLA_HANDLE_OPAQUE_FD ? "opaque-fd" : "dma_buf",
                    nabla_cl_error_name(rc), (int)rc);
    goto done;
  }
  fd = -1; /* the implementation's now */
  if (m->offset == 0 && bytes == m->size) {
    part = whole;
    whole = NULL;
  } else {
    /* A sub-buffer keeps its parent alive (a buffer is not deleted before its sub-buffers). */
    const cl_buffer_region region = {(size_t)m->offset, (size_t)bytes};
    part = clCreateSubBuffer(whole, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &rc);
    if (rc != CL_SUCCESS || !part) {
      part = NULL;
      st = nabla_fail(ctx, NABLA_OPENCL, "clCreateSubBuffer of %llu bytes at %llu in the import failed: %s (%d)",
                      (unsigned long long)bytes, (unsigned long long)m->offset, nabla_cl_error_name(rc), (int)rc);
      goto done;
    }
  }
  close(m->fd); /* ownership moved on success, as the extension specifies */
  *out = part;
  part = NULL;
done:
  if (fd >= 0) close(fd);
  if (part) clReleaseMemObject(part);
  if (whole) clReleaseMemObject(whole);
  return st;
}

nabla_status nabla_import_semaphore(nabla_context *ctx, nabla_handle_type type, int fd, nabla_semaphore **out) {
  nabla_status st = NABLA_OK;
  nabla_semaphore *s = NULL;
  int dup = -1;
  interop_fns f;
  if (out) *out = NULL;
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  if (!out) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "out is NULL");
  if (type != NABLA_HANDLE_OPAQUE_FD && type != NABLA_HANDLE_SYNC_FD)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT,
                      "handle type %d is not a semaphore handle (use NABLA_HANDLE_OPAQUE_FD or NABLA_HANDLE_SYNC_FD)", (int)type);
  if (!fd_open(fd)) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "fd %d is not an open file descriptor", fd);
  const char *missing = semaphore_missing(ctx, type);
  if (missing)
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "the device cannot import %s semaphores: it lacks %s",
                      type == NABLA_HANDLE_OPAQUE_FD ? "opaque-fd" : "sync-fd", missing);
  load_fns(ctx, &f);
  if (!f.create_sem || !f.release_sem)
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "the platform does not give clCreateSemaphoreWithPropertiesKHR (cl_khr_semaphore)");
  s = calloc(1, sizeof *s);
  if (!s) return nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
  TRY(st, dup_fd(ctx, fd, &dup));
  const cl_semaphore_properties_khr props[] = {CL_SEMAPHORE_TYPE_KHR, CL_SEMAPHORE_TYPE_BINARY_KHR,
                                               (cl_semaphore_properties_khr)semaphore_cl_type(type),
                                               (cl_semaphore_properties_khr)dup, 0};
  cl_int rc = CL_SUCCESS;
  s->sem = f.create_sem(ctx->cl_ctx, props, &rc);
  if (rc != CL_SUCCESS || !s->sem) {
    s->sem = NULL;
    st = nabla_fail(ctx, NABLA_OPENCL, "clCreateSemaphoreWithPropertiesKHR refused the %s semaphore: %s (%d)",
                    type == NABLA_HANDLE_OPAQUE_FD ? "opaque-fd" : "sync-fd", nabla_cl_error_name(rc), (int)rc);
    goto done;
  }
  dup = -1; /* the implementation's now */
  s->cl_ctx = ctx->cl_ctx;
  s->release = f.release_sem;
  clRetainContext(s->cl_ctx);
  close(fd);
  *out = s;
  s = NULL;
done:
  if (dup >= 0) close(dup);
  free(s);
  return st;
}

void nabla_semaphore_release(nabla_semaphore *s) {
  if (!s) return;
  if (s->sem) s->release(s->sem);
  if (s->cl_ctx) clReleaseContext(s->cl_ctx);
  free(s);
}

/* The tensors' allocations (a sub-buffer stands for its parent, as only whole imports can be
 * acquired), each once, into roots[0..*count); every one checked to belong to ctx. Whether a
 * buffer came from an external handle cannot be told portably (NVIDIA's driver does not list
 * it in CL_MEM_PROPERTIES): the driver's acquisition is the judge of that. */
static nabla_status tensor_roots(nabla_context *ctx, cl_uint n, const cl_mem *tensors, cl_mem *roots,
                                 cl_uint *count) {
  *count = 0;
  for (cl_uint i = 0; i < n; i++) {
    cl_context owner = NULL;
    cl_mem parent = NULL;
    if (!tensors[i]) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "tensors[%u] is NULL", i);
    if (clGetMemObjectInfo(tensors[i], CL_MEM_CONTEXT, sizeof owner, &owner, NULL) != CL_SUCCESS ||
        clGetMemObjectInfo(tensors[i], CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) != CL_SUCCESS)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "tensors[%u] is not a valid cl_mem", i);
    if (owner != ctx->cl_ctx)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "tensors[%u] belongs to another cl_context", i);
    cl_mem root = parent ? parent : tensors[i];
    int seen = 0;
    for (cl_uint j = 0; j < *count; j++) seen |= roots[j] == root;
    if (!seen) roots[(*count)++] = root;
  }
  return NABLA_OK;
}

/* Checks shared by begin and end; on success f holds the entry points and roots the tensors'
 * allocations (malloc'd, the caller frees). */
static nabla_status check_sync(nabla_context *ctx, cl_uint num_sems, nabla_semaphore *const *sems,
                               cl_uint num_tensors, const cl_mem *tensors, cl_uint num_wait, const cl_event *wait,
                               interop_fns *f, cl_mem **roots, cl_uint *num_roots) {
  *roots = NULL;
  *num_roots = 0;
  if (num_sems == 0 && num_tensors == 0)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "neither semaphores nor tensors given");
  if ((num_sems > 0) != (sems != NULL) || (num_tensors > 0) != (tensors != NULL))
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "a count and its array disagree (one is 0, the other not)");
  if ((num_wait > 0) != (wait != NULL))
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "wait list: num_wait is %u but wait is %s", num_wait,
                      wait ? "not NULL" : "NULL");
  for (cl_uint i = 0; i < num_wait; i++)
    if (!wait[i]) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "wait[%u] is NULL", i);
  load_fns(ctx, f);
  if (num_sems && (!nabla_device_has_extension(ctx->device, "cl_khr_semaphore") || !f->wait_sems || !f->signal_sems))
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "the device lacks cl_khr_semaphore (semaphore waits and signals)");
  if (num_tensors && (!nabla_device_has_extension(ctx->device, "cl_khr_external_memory") || !f->acquire || !f->release))
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "the device lacks cl_khr_external_memory (acquire and release)");
  for (cl_uint i = 0; i < num_sems; i++) {
    if (!sems[i]) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "semaphore %u is NULL", i);
    if (sems[i]->cl_ctx != ctx->cl_ctx)
      return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "semaphore %u was imported on another context", i);
  }
  if (num_tensors) {
    *roots = malloc(num_tensors * sizeof **roots);
    if (!*roots) return nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    nabla_status st = tensor_roots(ctx, num_tensors, tensors, *roots, num_roots);
    if (st != NABLA_OK) {
      free(*roots);
      *roots = NULL;
    }
    return st;
  }
  return NABLA_OK;
}

/* The semaphores' OpenCL objects. */
static cl_semaphore_khr *cl_sems(nabla_semaphore *const *sems, cl_uint n) {
  cl_semaphore_khr *out = malloc((n ? n : 1) * sizeof *out);
  if (out)
    for (cl_uint i = 0; i < n; i++) out[i] = sems[i]->sem;
  return out;
}

nabla_status nabla_external_begin(nabla_context *ctx, cl_uint num_sems, nabla_semaphore *const *wait_sems,
                                  cl_uint num_tensors, const cl_mem *tensors, cl_uint num_wait, const cl_event *wait,
                                  cl_event *done) {
  nabla_status st = NABLA_OK;
  interop_fns f;
  cl_mem *roots = NULL;
  cl_uint num_roots = 0;
  cl_semaphore_khr *sems = NULL;
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  TRY(st, check_sync(ctx, num_sems, wait_sems, num_tensors, tensors, num_wait, wait, &f, &roots, &num_roots));
  if (!(sems = cl_sems(wait_sems, num_sems))) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  if (num_sems) {
    /* The queue is in order: the acquisition below starts after the waits. */
    TRY_CL(st, ctx, f.wait_sems(ctx->queue, num_sems, sems, NULL, num_wait, wait, num_roots ? NULL : done));
    num_wait = 0;
    wait = NULL;
  }
  if (num_roots) TRY_CL(st, ctx, f.acquire(ctx->queue, num_roots, roots, num_wait, wait, done));
done:
  free(sems);
  free(roots);
  return st;
}

nabla_status nabla_external_end(nabla_context *ctx, cl_uint num_tensors, const cl_mem *tensors, cl_uint num_sems,
                                nabla_semaphore *const *signal_sems, cl_uint num_wait, const cl_event *wait,
                                cl_event *done) {
  nabla_status st = NABLA_OK;
  interop_fns f;
  cl_mem *roots = NULL;
  cl_uint num_roots = 0;
  cl_semaphore_khr *sems = NULL;
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  nabla_clear_error(ctx);
  TRY(st, check_sync(ctx, num_sems, signal_sems, num_tensors, tensors, num_wait, wait, &f, &roots, &num_roots));
  if (!(sems = cl_sems(signal_sems, num_sems))) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  if (num_roots) {
    TRY_CL(st, ctx, f.release(ctx->queue, num_roots, roots, num_wait, wait, num_sems ? NULL : done));
    num_wait = 0;
    wait = NULL;
  }
  if (num_sems) TRY_CL(st, ctx, f.signal_sems(ctx->queue, num_sems, sems, NULL, num_wait, wait, done));
  /* The other API may wait on these signals only once they are submitted to the device. */
  TRY_CL(st, ctx, clFlush(ctx->queue));
done:
  free(sems);
  free(roots);
  return st;
}
