/*
 * CUDA memory in nablacl without copies (NVIDIA only; exit 77, with the reason, elsewhere).
 *
 * Q, K, V and O are allocated with the CUDA driver's virtual-memory API (cuMemCreate with a
 * POSIX file descriptor handle), exported as file descriptors (cuMemExportToShareableHandle)
 * and imported with nabla_import_memory. CUDA writes the inputs, nablacl builds the NABLA mask
 * and attends between nabla_external_begin and nabla_external_end, and CUDA reads O back: it
 * must match the float64 reference on the mask nablacl chose, and be bit-identical to the same
 * calls on OpenCL-allocated buffers. V lives at an offset inside a larger allocation (a
 * sub-buffer). Bad input on the real driver (a closed fd, another GPU's UUID, an ordinary
 * buffer handed to begin) is refused with its status.
 *
 * `cuda_import --bench [--repeat N]` times the Wan 2.1 14B attention (B=1 H=40 grid 21x40x80
 * D=128 bf16, random block mask of density 0.1 as `nablacl bench --density 0.1`) on imported
 * buffers (acquired and released around each call) and on OpenCL-allocated ones, in
 * alternating rounds, and prints one JSON line: median kernel time by event profiling, and the
 * host wall time per call including the acquisition and release.
 *
 * libcuda.so.1 is opened at run time (dlopen), as the library's tensor-map code does: nothing
 * links against CUDA.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nablacl.h"

#define SKIP 77
#ifndef CL_MEM_PROPERTIES /* OpenCL 3.0; the build targets 1.2 */
#define CL_MEM_PROPERTIES 0x110A
#endif

/* ---- the CUDA driver API calls used (cuda.h); enums are int-sized, results 0 on success ---- */

typedef unsigned long long cu_ptr;    /* CUdeviceptr */
typedef unsigned long long cu_handle; /* CUmemGenericAllocationHandle */
typedef struct {
  int type, id; /* CUmemLocation */
} cu_location;
typedef struct { /* CUmemAllocationProp */
  int type;
  int requested_handle_types;
  cu_location location;
  void *win32_metadata;
  struct {
    unsigned char compression_type, gpu_direct_rdma_capable;
    unsigned short usage;
    unsigned char reserved[4];
  } alloc_flags;
} cu_alloc_prop;
typedef struct { /* CUmemAccessDesc */
  cu_location location;
  int flags;
} cu_access_desc;
enum {
  CU_MEM_ALLOCATION_TYPE_PINNED = 1,
  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1,
  CU_MEM_LOCATION_TYPE_DEVICE = 1,
  CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3,
  CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0,
};

typedef struct {
  void *lib;
  int (*init)(unsigned);
  int (*device_count)(int *);
  int (*device_get)(int *, int);
  int (*device_uuid)(unsigned char *, int);
  int (*primary_retain)(void **, int);
  int (*primary_release)(int);
  int (*ctx_set_current)(void *);
  int (*ctx_synchronize)(void);
  int (*granularity)(size_t *, const cu_alloc_prop *, int);
  int (*mem_create)(cu_handle *, size_t, const cu_alloc_prop *, unsigned long long);
  int (*mem_export)(void *, cu_handle, int, unsigned long long);
  int (*mem_release)(cu_handle);
  int (*address_reserve)(cu_ptr *, size_t, size_t, cu_ptr, unsigned long long);
  int (*address_free)(cu_ptr, size_t);
  int (*mem_map)(cu_ptr, size_t, size_t, cu_handle, unsigned long long);
  int (*mem_unmap)(cu_ptr, size_t);
  int (*set_access)(cu_ptr, size_t, const cu_access_desc *, size_t);
  int (*htod)(cu_ptr, const void *, size_t);
  int (*dtoh)(void *, cu_ptr, size_t);
  int dev;
  void *ctx;
} cuda_api;

/* The function `name` into *fn (a function pointer of fn_size bytes); 0 if absent. */
static int sym(void *lib, const char *name, void *fn, size_t fn_size) {
  void *p = dlsym(lib, name);
  memcpy(fn, &p, fn_size); /* POSIX: a dlsym result converts to a function pointer */
  return p != NULL;
}
#define SYM(cu, field, name) sym((cu)->lib, name, &(cu)->field, sizeof (cu)->field)

/* Opens the driver and makes current the primary context of the GPU whose UUID is `uuid`.
 * Returns 0, or SKIP with the reason in why. */
static int cuda_open(cuda_api *cu, const uint8_t uuid[16], char *why, size_t len) {
  memset(cu, 0, sizeof *cu);
  cu->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!cu->lib) return snprintf(why, len, "no CUDA driver (libcuda.so.1)"), SKIP;
  if (!SYM(cu, init, "cuInit") || !SYM(cu, device_count, "cuDeviceGetCount") || !SYM(cu, device_get, "cuDeviceGet") ||
      !(SYM(cu, device_uuid, "cuDeviceGetUuid_v2") || SYM(cu, device_uuid, "cuDeviceGetUuid")) ||
      !SYM(cu, primary_retain, "cuDevicePrimaryCtxRetain") ||
      !SYM(cu, primary_release, "cuDevicePrimaryCtxRelease_v2") || !SYM(cu, ctx_set_current, "cuCtxSetCurrent") ||
      !SYM(cu, ctx_synchronize, "cuCtxSynchronize") || !SYM(cu, granularity, "cuMemGetAllocationGranularity") ||
      !SYM(cu, mem_create, "cuMemCreate") || !SYM(cu, mem_export, "cuMemExportToShareableHandle") ||
      !SYM(cu, mem_release, "cuMemRelease") || !SYM(cu, address_reserve, "cuMemAddressReserve") ||
      !SYM(cu, address_free, "cuMemAddressFree") || !SYM(cu, mem_map, "cuMemMap") || !SYM(cu, mem_unmap, "cuMemUnmap") ||
      !SYM(cu, set_access, "cuMemSetAccess") || !SYM(cu, htod, "cuMemcpyHtoD_v2") || !SYM(cu, dtoh, "cuMemcpyDtoH_v2"))
    return snprintf(why, len, "the CUDA driver lacks the virtual-memory calls"), SKIP;
  int n = 0, rc = cu->init(0);
  if (rc || (rc = cu->device_count(&n)) != 0) return snprintf(why, len, "cuInit failed (CUresult %d)", rc), SKIP;
  for (int i = 0; i < n; i++) {
    unsigned char u[16];
    int dev = 0;
    if (cu->device_get(&dev, i) == 0 && cu->device_uuid(u, dev) == 0 && memcmp(u, uuid, 16) == 0) {
      cu->dev = dev;
      if ((rc = cu->primary_retain(&cu->ctx, dev)) != 0)
        return snprintf(why, len, "cuDevicePrimaryCtxRetain failed (CUresult %d)", rc), SKIP;
      cu->ctx_set_current(cu->ctx);
      return 0;
    }
  }
  return snprintf(why, len, "no CUDA device has the OpenCL device's UUID"), SKIP;
}

static void cuda_close(cuda_api *cu) {
  if (cu->ctx) cu->primary_release(cu->dev);
  if (cu->lib) dlclose(cu->lib);
}

/* One exportable allocation, mapped read-write at ptr. */
typedef struct {
  cu_handle handle;
  cu_ptr ptr;
  size_t size; /* rounded up to the allocation granularity */
} cuda_buffer;

#define CU_CHECK(call)                                                   \
  do {                                                                   \
    int rc_ = (call);                                                    \
    if (rc_) {                                                           \
      fprintf(stderr, "%s:%d: %s failed (CUresult %d)\n", __FILE__, __LINE__, #call, rc_); \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

static cuda_buffer cuda_alloc(cuda_api *cu, size_t bytes) {
  cu_alloc_prop prop;
  memset(&prop, 0, sizeof prop);
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.requested_handle_types = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  prop.location = (cu_location){CU_MEM_LOCATION_TYPE_DEVICE, cu->dev};
  size_t gran = 0;
  CU_CHECK(cu->granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
  cuda_buffer b = {0, 0, (bytes + gran - 1) / gran * gran};
  CU_CHECK(cu->mem_create(&b.handle, b.size, &prop, 0));
  CU_CHECK(cu->address_reserve(&b.ptr, b.size, 0, 0, 0));
  CU_CHECK(cu->mem_map(b.ptr, b.size, 0, b.handle, 0));
  const cu_access_desc access = {{CU_MEM_LOCATION_TYPE_DEVICE, cu->dev}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  CU_CHECK(cu->set_access(b.ptr, b.size, &access, 1));
  return b;
}

/* A new file descriptor for the allocation (the caller owns it until an import consumes it). */
static int cuda_export(cuda_api *cu, const cuda_buffer *b) {
  int fd = -1;
  CU_CHECK(cu->mem_export(&fd, b->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
  return fd;
}

static void cuda_free(cuda_api *cu, cuda_buffer *b) {
  cu->mem_unmap(b->ptr, b->size);
  cu->address_free(b->ptr, b->size);
  cu->mem_release(b->handle);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static int failures;
#define EXPECT(cond, ...)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      failures++;                                           \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
      fprintf(stderr, __VA_ARGS__);                         \
      fputc('\n', stderr);                                  \
    }                                                       \
  } while (0)

static void lib_check(nabla_context *ctx, nabla_status st, const char *what) {
  if (st != NABLA_OK) {
    fprintf(stderr, "%s: %s: %s\n", what, nabla_status_str(st), nabla_last_error(ctx));
    exit(1);
  }
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uniform(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (double)(rng >> 11) * 0x1.0p-53;
}
static double normal(void) {
  double u = uniform() + 0x1.0p-54, v = uniform();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Random bf16 values N(0, scale²) and their exact doubles (x may be NULL). */
static void fill_bf16(uint16_t *bits, double *x, size_t n, double scale) {
  for (size_t i = 0; i < n; i++) {
    bits[i] = nabla_f32_to_bf16((float)(normal() * scale));
    if (x) x[i] = nabla_bf16_to_f32(bits[i]);
  }
}

static nabla_external_memory desc_of(int fd, size_t size, size_t offset, size_t bytes, const uint8_t *uuid) {
  nabla_external_memory m;
  memset(&m, 0, sizeof m);
  m.type = NABLA_HANDLE_OPAQUE_FD;
  m.fd = fd;
  m.size = size;
  m.offset = offset;
  m.bytes = bytes;
  m.device_uuid = uuid;
  return m;
}

static cl_mem import(nabla_context *ctx, cuda_api *cu, const cuda_buffer *b, size_t offset, size_t bytes,
                     const uint8_t *uuid) {
  int fd = cuda_export(cu, b);
  nabla_external_memory m = desc_of(fd, b->size, offset, bytes, uuid);
  cl_mem out = NULL;
  lib_check(ctx, nabla_import_memory(ctx, &m, &out), "nabla_import_memory");
  EXPECT(fcntl(fd, F_GETFD) == -1, "a successful import consumes the caller's fd");
  return out;
}

static cl_mem cl_buffer(nabla_context *ctx, size_t bytes, const void *data) {
  cl_int rc = CL_SUCCESS;
  cl_mem b = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &rc);
  if (rc != CL_SUCCESS) fprintf(stderr, "clCreateBuffer(%zu) failed: %d\n", bytes, rc), exit(1);
  if (data && clEnqueueWriteBuffer(nabla_context_queue(ctx), b, CL_TRUE, 0, bytes, data, 0, NULL, NULL) != CL_SUCCESS)
    fprintf(stderr, "clEnqueueWriteBuffer failed\n"), exit(1);
  return b;
}

static int count_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 4096; fd++) n += fcntl(fd, F_GETFD) != -1;
  return n;
}

/* ---- correctness ------------------------------------------------------------------------- */

/* Mask build + attention on q, k, v -> o between begin and end (when `imported`), then clFinish;
 * the mask is handed back. */
static nabla_mask *run_nabla(nabla_context *ctx, const nabla_algo *algo, const nabla_shape *s, cl_mem q, cl_mem k,
                             cl_mem v, cl_mem o, int imported) {
  cl_mem t[4] = {q, k, v, o};
  nabla_mask *mask = NULL;
  if (imported) lib_check(ctx, nabla_external_begin(ctx, 0, NULL, 4, t, 0, NULL, NULL), "nabla_external_begin");
  lib_check(ctx, nabla_mask_build(ctx, algo, s, NABLA_BF16, q, k, &mask, 0, NULL, NULL), "nabla_mask_build");
  lib_check(ctx, nabla_attend(ctx, s, NABLA_BF16, mask, q, k, v, o, 0, NULL, NULL), "nabla_attend");
  if (imported) lib_check(ctx, nabla_external_end(ctx, 4, t, 0, NULL, 0, NULL, NULL), "nabla_external_end");
  clFinish(nabla_context_queue(ctx));
  return mask;
}

static int correctness(nabla_context *ctx, cuda_api *cu, const uint8_t uuid[16]) {
  const nabla_shape s = {1, 2, 3 * 16 * 16, 64, 3, 16, 16};
  const size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim, bytes = n * 2;
  const int nb = nabla_shape_blocks(&s), rows = s.batch * s.heads * nb;
  nabla_algo algo;
  lib_check(ctx, nabla_algo_parse("nabla-0.7", &algo, NULL, 0), "nabla_algo_parse");
  uint16_t *hq = malloc(bytes), *hk = malloc(bytes), *hv = malloc(bytes), *ho = malloc(bytes), *ho_cl = malloc(bytes);
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
  double *ref = malloc(n * sizeof *ref);
  int32_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr), *col_idx = malloc((size_t)rows * nb * sizeof *col_idx);
  fill_bf16(hq, q, n, 1.0);
  fill_bf16(hk, k, n, 1.0);
  fill_bf16(hv, v, n, 1.0);
  memset(ho, 0xff, bytes);
  const int fds_before = count_fds();

  /* V sits behind the first 64 KiB-aligned slot of a larger allocation: a sub-buffer. */
  const size_t v_offset = (bytes + 65535) / 65536 * 65536;
  cuda_buffer cq = cuda_alloc(cu, bytes), ck = cuda_alloc(cu, bytes), cv = cuda_alloc(cu, v_offset + bytes),
              co = cuda_alloc(cu, bytes);
  CU_CHECK(cu->htod(cq.ptr, hq, bytes));
  CU_CHECK(cu->htod(ck.ptr, hk, bytes));
  CU_CHECK(cu->htod(cv.ptr + v_offset, hv, bytes));
  CU_CHECK(cu->htod(co.ptr, ho, bytes));
  CU_CHECK(cu->ctx_synchronize()); /* the copies are done before OpenCL reads */
  cl_mem iq = import(ctx, cu, &cq, 0, bytes, uuid), ik = import(ctx, cu, &ck, 0, 0, uuid),
         iv = import(ctx, cu, &cv, v_offset, bytes, uuid), io = import(ctx, cu, &co, 0, bytes, NULL);

  nabla_mask *mask = run_nabla(ctx, &algo, &s, iq, ik, iv, io, 1);
  CU_CHECK(cu->dtoh(ho, co.ptr, bytes));
  char variant[32];
  snprintf(variant, sizeof variant, "%s", nabla_variant_last(ctx));

  /* The float64 reference on the mask nablacl chose. */
  int64_t kept = 0;
  double density = 0;
  lib_check(ctx, nabla_mask_stats(ctx, mask, &kept, &density), "nabla_mask_stats");
  lib_check(ctx, nabla_mask_read_csr(ctx, mask, row_ptr, rows + 1, col_idx, (size_t)rows * nb), "nabla_mask_read_csr");
  nabla_ref_attention_sparse(&s, q, k, v, row_ptr, col_idx, ref);
  double err = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)nabla_bf16_to_f32(ho[i]) - ref[i]);
    if (!(d <= err)) err = d; /* NaN counts */
  }
  EXPECT(err <= 3e-2, "imported O differs from the float64 reference by %g", err);
  EXPECT(density > 0 && density < 1, "the nabla-0.7 mask kept %g of the blocks", density);

  /* The same calls on OpenCL-allocated buffers give the same bits. */
  cl_mem bq = cl_buffer(ctx, bytes, hq), bk = cl_buffer(ctx, bytes, hk), bv = cl_buffer(ctx, bytes, hv),
         bo = cl_buffer(ctx, bytes, NULL);
  nabla_mask *mask_cl = run_nabla(ctx, &algo, &s, bq, bk, bv, bo, 0);
  clEnqueueReadBuffer(nabla_context_queue(ctx), bo, CL_TRUE, 0, bytes, ho_cl, 0, NULL, NULL);
  EXPECT(memcmp(ho, ho_cl, bytes) == 0, "imported and OpenCL-allocated buffers give different outputs");

  /* One-shot on the imported buffers, after CUDA cleared O. */
  memset(ho, 0, bytes);
  CU_CHECK(cu->htod(co.ptr, ho, bytes));
  CU_CHECK(cu->ctx_synchronize());
  cl_mem t[4] = {iq, ik, iv, io};
  lib_check(ctx, nabla_external_begin(ctx, 0, NULL, 4, t, 0, NULL, NULL), "nabla_external_begin");
  lib_check(ctx, nabla_attention(ctx, &algo, &s, NABLA_BF16, iq, ik, iv, io, 0, NULL, NULL), "nabla_attention");
  lib_check(ctx, nabla_external_end(ctx, 4, t, 0, NULL, 0, NULL, NULL), "nabla_external_end");
  clFinish(nabla_context_queue(ctx));
  CU_CHECK(cu->dtoh(ho, co.ptr, bytes));
  EXPECT(memcmp(ho, ho_cl, bytes) == 0, "one-shot attention on imported buffers differs");

  /* Bad input on the real driver. */
  int fd = cuda_export(cu, &cq);
  close(fd);
  nabla_external_memory m = desc_of(fd, cq.size, 0, 0, NULL);
  cl_mem out = NULL;
  EXPECT(nabla_import_memory(ctx, &m, &out) == NABLA_INVALID_ARGUMENT && !out, "a closed fd: %s", nabla_last_error(ctx));
  uint8_t other[16];
  memcpy(other, uuid, 16);
  other[15] ^= 0x5a;
  fd = cuda_export(cu, &cq);
  m = desc_of(fd, cq.size, 0, 0, other);
  EXPECT(nabla_import_memory(ctx, &m, &out) == NABLA_INVALID_ARGUMENT && !out, "another GPU's UUID: %s",
         nabla_last_error(ctx));
  EXPECT(fcntl(fd, F_GETFD) != -1, "a refused import leaves the fd open");
  m = desc_of(fd, cq.size, 100, 0, NULL); /* misaligned sub-buffer */
  EXPECT(nabla_import_memory(ctx, &m, &out) == NABLA_INVALID_ARGUMENT && !out, "a misaligned offset: %s",
         nabla_last_error(ctx));
  /* Opaque FDs do not tell their size: a size past the allocation is the driver's to refuse. */
  m = desc_of(fd, cq.size * 2, 0, 0, NULL);
  nabla_status oversize = nabla_import_memory(ctx, &m, &out);
  EXPECT(oversize != NABLA_OK && !out, "an import of twice the allocation's size was accepted");
  printf("oversized opaque-fd import (%zu bytes of %zu): %s: %s\n", cq.size * 2, cq.size, nabla_status_str(oversize),
         nabla_last_error(ctx));
  if (out) clReleaseMemObject(out);
  else close(fd);
  /* A buffer that was not imported: OpenCL does not tell, the driver's acquisition judges. */
  size_t props_len = 0;
  clGetMemObjectInfo(iq, CL_MEM_PROPERTIES, 0, NULL, &props_len);
  nabla_status plain = nabla_external_begin(ctx, 0, NULL, 1, &bq, 0, NULL, NULL);
  printf("an OpenCL buffer handed to begin: %s%s%s (an import lists %zu bytes of creation properties)\n",
         nabla_status_str(plain), plain ? ": " : "", plain ? nabla_last_error(ctx) : "", props_len);
  if (plain == NABLA_OK) lib_check(ctx, nabla_external_end(ctx, 1, &bq, 0, NULL, 0, NULL, NULL), "nabla_external_end");
  clFinish(nabla_context_queue(ctx));

  nabla_mask_release(mask);
  nabla_mask_release(mask_cl);
  cl_mem all[] = {iq, ik, iv, io, bq, bk, bv, bo};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) clReleaseMemObject(all[i]);
  clFinish(nabla_context_queue(ctx));
  cuda_free(cu, &cq), cuda_free(cu, &ck), cuda_free(cu, &cv), cuda_free(cu, &co);
  const int fds_after = count_fds();
  printf("correctness: B=%d H=%d S=%d D=%d bf16 nabla-0.7 density %.3f variant %s max err %.3g; "
         "open fds before %d after %d\n",
         s.batch, s.heads, s.seq, s.head_dim, density, variant, err, fds_before, fds_after);
  free(hq), free(hk), free(hv), free(ho), free(ho_cl), free(q), free(k), free(v), free(ref), free(row_ptr),
      free(col_idx);
  return failures ? 1 : 0;
}

/* ---- timing ------------------------------------------------------------------------------- */

static double event_ms(cl_event first, cl_event last) {
  cl_ulong t0 = 0, t1 = 0;
  clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
  clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
  return (double)(t1 - t0) * 1e-6;
}

/* Host wall clock: with the acquisition and release, per call, as the caller sees it. */
static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One timed attention (its kernels' time); imported tensors are acquired before and released
 * after it, as an engine would around each call. */
static double timed_attend(nabla_context *ctx, const nabla_shape *s, const nabla_mask *mask, cl_mem *t,
                           int imported) {
  cl_event a = NULL;
  if (imported) lib_check(ctx, nabla_external_begin(ctx, 0, NULL, 4, t, 0, NULL, NULL), "nabla_external_begin");
  lib_check(ctx, nabla_attend(ctx, s, NABLA_BF16, mask, t[0], t[1], t[2], t[3], 0, NULL, &a), "nabla_attend");
  if (imported) lib_check(ctx, nabla_external_end(ctx, 4, t, 0, NULL, 0, NULL, NULL), "nabla_external_end");
  clFinish(nabla_context_queue(ctx));
  const double ms = event_ms(a, a);
  clReleaseEvent(a);
  return ms;
}

static double median(double *x, int n) {
  qsort(x, (size_t)n, sizeof *x, cmp_double);
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static int bench(nabla_context *ctx, cuda_api *cu, const uint8_t uuid[16], int repeat) {
  const nabla_shape s = {1, 40, 21 * 40 * 80, 128, 21, 40, 80};
  const size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim, bytes = n * 2;
  const int nb = nabla_shape_blocks(&s);
  const size_t rows = (size_t)s.batch * s.heads * nb;
  uint16_t *h = malloc(bytes);
  uint8_t *bm = malloc(rows * nb);
  /* The random mask of `nablacl bench --density 0.1`: diagonal kept. */
  uint64_t x = 0x853c49e6748fea9bull;
  for (size_t r = 0; r < rows; r++)
    for (int j = 0; j < nb; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      bm[r * nb + j] = (j == (int)(r % (size_t)nb)) || (double)(x >> 11) * 0x1.0p-53 < 0.1;
    }
  nabla_mask *mask = NULL;
  lib_check(ctx, nabla_mask_from_bitmap(ctx, &s, bm, &mask), "nabla_mask_from_bitmap");
  int64_t kept = 0;
  double density = 0;
  lib_check(ctx, nabla_mask_stats(ctx, mask, &kept, &density), "nabla_mask_stats");

  /* One set of values serves Q, K and V: the timing does not depend on them. */
  for (size_t i = 0; i < n; i++) h[i] = nabla_f32_to_bf16((float)(uniform() * 4.0 - 2.0));
  cuda_buffer cb[4];
  cl_mem imp[4], own[4];
  for (int i = 0; i < 4; i++) {
    cb[i] = cuda_alloc(cu, bytes);
    if (i < 3) CU_CHECK(cu->htod(cb[i].ptr, h, bytes));
    own[i] = cl_buffer(ctx, bytes, i < 3 ? h : NULL);
  }
  CU_CHECK(cu->ctx_synchronize());
  for (int i = 0; i < 4; i++) imp[i] = import(ctx, cu, &cb[i], 0, bytes, uuid);

  /* Warm both (builds, clocks), then alternate rounds so that both see the same clocks. */
  double t_imp[512], t_own[512], wall_imp = 0, wall_own = 0;
  if (repeat > 512 / 4) repeat = 512 / 4;
  for (int i = 0; i < 10; i++) {
    timed_attend(ctx, &s, mask, imp, 1);
    timed_attend(ctx, &s, mask, own, 0);
  }
  int ni = 0, no = 0;
  for (int round = 0; round < 4; round++) {
    double t0 = now_ms();
    for (int i = 0; i < repeat; i++) t_imp[ni++] = timed_attend(ctx, &s, mask, imp, 1);
    double t1 = now_ms();
    for (int i = 0; i < repeat; i++) t_own[no++] = timed_attend(ctx, &s, mask, own, 0);
    wall_imp += t1 - t0;
    wall_own += now_ms() - t1;
  }
  char variant[32], dev[128] = "";
  snprintf(variant, sizeof variant, "%s", nabla_variant_last(ctx));
  clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_NAME, sizeof dev, dev, NULL);
  const double m_imp = median(t_imp, ni), m_own = median(t_own, no);
  const double flops = 4.0 * 64 * 64 * s.head_dim * (double)kept; /* blocks are full: 67200 = 1050 x 64 */
  printf("{\"device\": \"%s\", \"shape\": \"B=1 H=40 grid 21x40x80 D=128 bf16\", \"density\": %.4f, "
         "\"variant\": \"%s\", \"runs\": %d, \"imported_ms\": %.3f, \"opencl_ms\": %.3f, "
         "\"imported_wall_ms_per_call\": %.3f, \"opencl_wall_ms_per_call\": %.3f, "
         "\"imported_tflops\": %.1f, \"opencl_tflops\": %.1f}\n",
         dev, density, variant, ni, m_imp, m_own, wall_imp / ni, wall_own / no, flops / m_imp * 1e-9,
         flops / m_own * 1e-9);
  nabla_mask_release(mask);
  for (int i = 0; i < 4; i++) {
    clReleaseMemObject(imp[i]);
    clReleaseMemObject(own[i]);
  }
  clFinish(nabla_context_queue(ctx));
  for (int i = 0; i < 4; i++) cuda_free(cu, &cb[i]);
  free(h);
  free(bm);
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  int do_bench = 0, repeat = 10;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--bench")) do_bench = 1;
    else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
    else return fprintf(stderr, "usage: cuda_import [--bench [--repeat N]]\n"), 2;
  }
  if (repeat < 1) repeat = 1;
  char err[512] = "";
  nabla_context *ctx = NULL;
  if (nabla_context_create(&ctx, NULL, err, sizeof err) != NABLA_OK)
    return printf("SKIP: no OpenCL device: %s\n", err), SKIP;
  nabla_interop_caps caps;
  lib_check(ctx, nabla_interop_caps_query(ctx, &caps), "nabla_interop_caps_query");
  if (!(caps.memory & NABLA_HANDLE_BIT(NABLA_HANDLE_OPAQUE_FD)) || !caps.has_uuid) {
    printf("SKIP: the OpenCL device cannot import opaque-fd memory or tell its UUID (lacks %s)\n", caps.missing);
    nabla_context_destroy(ctx);
    return SKIP;
  }
  cuda_api cu;
  int rc = cuda_open(&cu, caps.uuid, err, sizeof err);
  if (rc == SKIP) printf("SKIP: %s\n", err);
  else rc = do_bench ? bench(ctx, &cu, caps.uuid, repeat) : correctness(ctx, &cu, caps.uuid);
  nabla_context_destroy(ctx);
  cuda_close(&cu);
  if (rc == 0) printf("cuda_import: %s\n", do_bench ? "timed" : "passed");
  return rc;
}
