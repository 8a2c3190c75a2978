/*
 * External memory and semaphores: argument checks (every device) and, where the device lacks
 * the extensions (PoCL), NABLA_UNSUPPORTED naming the missing one. A refused call leaves the
 * caller's file descriptor open and enqueues nothing. The imports themselves run on NVIDIA in
 * the cuda_import test and the Vulkan example.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static int fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

/* A regular file of `bytes` bytes, unlinked: an open descriptor whose size lseek tells. */
static int sized_fd(off_t bytes) {
  char path[] = "/tmp/nabla-interop-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  assert_int_equal(ftruncate(fd, bytes), 0);
  return fd;
}

/* A descriptor number that is not open. */
static int closed_fd(void) {
  int fd = sized_fd(16);
  close(fd);
  return fd;
}

static int device_imports_memory(nabla_context *ctx) {
  nabla_interop_caps caps;
  assert_int_equal(nabla_interop_caps_query(ctx, &caps), NABLA_OK);
  return caps.memory != 0;
}

static nabla_external_memory memory_desc(int fd, uint64_t size) {
  nabla_external_memory m;
  memset(&m, 0, sizeof m);
  m.type = NABLA_HANDLE_OPAQUE_FD;
  m.fd = fd;
  m.size = size;
  return m;
}

/* A refused import: the status, a message containing `needle`, *out NULL, the fd still open. */
static void expect_refused(nabla_context *ctx, const nabla_external_memory *m, nabla_status want,
                           const char *needle) {
  cl_mem out = (cl_mem)(uintptr_t)1;
  assert_int_equal(nabla_import_memory(ctx, m, &out), want);
  assert_null(out);
  if (!strstr(nabla_last_error(ctx), needle)) fail_msg("error \"%s\" lacks \"%s\"", nabla_last_error(ctx), needle);
  if (m && m->fd >= 0 && m->fd < 1024 && want != NABLA_INVALID_ARGUMENT) assert_true(fd_is_open(m->fd));
}

static void test_caps(void **state) {
  nabla_context *ctx = *state;
  if (!ctx) skip();
  nabla_interop_caps caps;
  assert_int_equal(nabla_interop_caps_query(ctx, NULL), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_interop_caps_query(ctx, &caps), NABLA_OK);
  if (caps.memory == 0) assert_non_null(strstr(caps.missing, "cl_khr_external_memory"));
  if (caps.semaphore == 0) assert_non_null(strstr(caps.missing, "semaphore"));
  assert_int_equal(caps.memory & ~(NABLA_HANDLE_BIT(NABLA_HANDLE_OPAQUE_FD) | NABLA_HANDLE_BIT(NABLA_HANDLE_DMA_BUF)), 0);
  assert_int_equal(caps.semaphore & ~(NABLA_HANDLE_BIT(NABLA_HANDLE_OPAQUE_FD) | NABLA_HANDLE_BIT(NABLA_HANDLE_SYNC_FD)),
                   0);
}

static void test_unsupported_names_extension(void **state) {
  nabla_context *ctx = *state;
  if (!ctx) skip();
  if (device_imports_memory(ctx)) skip(); /* the NVIDIA tests cover the imports */
  int fd = sized_fd(1 << 16);
  nabla_external_memory m = memory_desc(fd, 1 << 16);
  expect_refused(ctx, &m, NABLA_UNSUPPORTED, "cl_khr_external_memory");
  m.type = NABLA_HANDLE_DMA_BUF;
  expect_refused(ctx, &m, NABLA_UNSUPPORTED, "cl_khr_external_memory");
  nabla_semaphore *sem = (nabla_semaphore *)(uintptr_t)1;
  assert_int_equal(nabla_import_semaphore(ctx, NABLA_HANDLE_OPAQUE_FD, fd, &sem), NABLA_UNSUPPORTED);
  assert_null(sem);
  assert_non_null(strstr(nabla_last_error(ctx), "cl_khr_semaphore"));
  assert_true(fd_is_open(fd));
  close(fd);
}

static void test_bad_memory_arguments(void **state) {
  nabla_context *ctx = *state;
  if (!ctx) skip();
  int fd = sized_fd(4096);
  nabla_external_memory m = memory_desc(fd, 4096);
  cl_mem out = NULL;
  assert_int_equal(nabla_import_memory(NULL, &m, &out), NABLA_INVALID_ARGUMENT);
  expect_refused(ctx, NULL, NABLA_INVALID_ARGUMENT, "NULL");
  assert_int_equal(nabla_import_memory(ctx, &m, NULL), NABLA_INVALID_ARGUMENT);

  m.type = NABLA_HANDLE_SYNC_FD; /* a semaphore handle */
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "not a memory handle");
  m = memory_desc(closed_fd(), 4096);
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "not an open file descriptor");
  m = memory_desc(-1, 4096);
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "not an open file descriptor");
  m = memory_desc(fd, 0);
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "size is 0");
  m = memory_desc(fd, 4096);
  m.offset = 4096;
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "past the allocation");
  m.offset = 1024;
  m.bytes = 3073;
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "run past the allocation");
  m.offset = UINT64_MAX - 8; /* no wrap-around */
  m.bytes = 64;
  m.size = UINT64_MAX;
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "run past the allocation");
  /* A dma_buf tells its size: claiming more than it holds is caught before the driver. */
  m = memory_desc(fd, 8192);
  m.type = NABLA_HANDLE_DMA_BUF;
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "holds 4096 bytes");
  assert_true(fd_is_open(fd));
  close(fd);
}

/* A device that is not the context's: a sub-device where the driver partitions, else none. */
static void test_foreign_device(void **state) {
  nabla_context *ctx = *state;
  if (!ctx) skip();
  cl_device_id dev = nabla_context_device(ctx), sub[2] = {NULL, NULL};
  cl_uint units = 0, made = 0;
  clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
  const cl_device_partition_property props[] = {CL_DEVICE_PARTITION_EQUALLY, units > 1 ? units / 2 : 1, 0};
  if (units < 2 || clCreateSubDevices(dev, props, 2, sub, &made) != CL_SUCCESS || made == 0) skip();
  int fd = sized_fd(4096);
  nabla_external_memory m = memory_desc(fd, 4096);
  m.device = sub[0];
  expect_refused(ctx, &m, NABLA_INVALID_ARGUMENT, "is not this context's device");
  assert_true(fd_is_open(fd));
  close(fd);
  for (cl_uint i = 0; i < made; i++) clReleaseDevice(sub[i]);
}

static void test_bad_semaphore_arguments(void **state) {
  nabla_context *ctx = *state;
  if (!ctx) skip();
  int fd = sized_fd(16);
  nabla_semaphore *sem = (nabla_semaphore *)(uintptr_t)1;
  assert_int_equal(nabla_import_semaphore(ctx, NABLA_HANDLE_DMA_BUF, fd, &sem), NABLA_INVALID_ARGUMENT);
  assert_null(sem);
  assert_non_null(strstr(nabla_last_error(ctx), "not a semaphore handle"));
  assert_int_equal(nabla_import_semaphore(ctx, NABLA_HANDLE_OPAQUE_FD, closed_fd(), &sem), NABLA_INVALID_ARGUMENT);
  assert_non_null(strstr(nabla_last_error(ctx), "not an open file descriptor"));
  assert_int_equal(nabla_import_semaphore(ctx, NABLA_HANDLE_OPAQUE_FD, fd, NULL), NABLA_INVALID_ARGUMENT);
  assert_true(fd_is_open(fd));
  close(fd);
  nabla_semaphore_release(NULL);
}

/* begin / end refuse before enqueuing: a marker after the refused call completes while the
 * gate in its wait list is still pending. */
static void test_begin_end_refused(void **state) {
  nabla_context *ctx = *state;
  if (!ctx) skip();
  cl_int rc = CL_SUCCESS;
  cl_context clctx = nabla_context_cl_context(ctx);
  cl_mem plain = clCreateBuffer(clctx, CL_MEM_READ_WRITE, 256, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_event gate = clCreateUserEvent(clctx, &rc), done = NULL, marker = NULL;
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem foreign = NULL;
  if (!device_imports_memory(ctx)) {
    assert_int_equal(nabla_external_begin(ctx, 0, NULL, 1, &plain, 1, &gate, &done), NABLA_UNSUPPORTED);
    assert_non_null(strstr(nabla_last_error(ctx), "cl_khr_external_memory"));
    assert_int_equal(nabla_external_end(ctx, 1, &plain, 0, NULL, 1, &gate, &done), NABLA_UNSUPPORTED);
  } else { /* a buffer of another cl_context */
    cl_device_id dev = nabla_context_device(ctx);
    cl_context other = clCreateContext(NULL, 1, &dev, NULL, NULL, &rc);
    assert_int_equal(rc, CL_SUCCESS);
    foreign = clCreateBuffer(other, CL_MEM_READ_WRITE, 256, NULL, &rc);
    clReleaseContext(other);
    assert_int_equal(nabla_external_begin(ctx, 0, NULL, 1, &foreign, 1, &gate, &done), NABLA_INVALID_ARGUMENT);
    assert_non_null(strstr(nabla_last_error(ctx), "another cl_context"));
    assert_int_equal(nabla_external_end(ctx, 1, &foreign, 0, NULL, 1, &gate, &done), NABLA_INVALID_ARGUMENT);
  }
  assert_int_equal(nabla_external_begin(ctx, 0, NULL, 0, NULL, 1, &gate, &done), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_external_begin(ctx, 0, NULL, 1, NULL, 1, &gate, &done), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_external_end(ctx, 1, &plain, 0, NULL, 1, NULL, &done), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_external_begin(NULL, 0, NULL, 1, &plain, 0, NULL, NULL), NABLA_INVALID_ARGUMENT);
  assert_null(done);
  assert_int_equal(clEnqueueMarkerWithWaitList(nabla_context_queue(ctx), 0, NULL, &marker), CL_SUCCESS);
  assert_int_equal(clWaitForEvents(1, &marker), CL_SUCCESS); /* would hang if a command waited on the gate */
  clSetUserEventStatus(gate, CL_COMPLETE);
  clReleaseEvent(marker);
  clReleaseEvent(gate);
  clReleaseMemObject(plain);
  if (foreign) clReleaseMemObject(foreign);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_caps),
      cmocka_unit_test(test_unsupported_names_extension),
      cmocka_unit_test(test_bad_memory_arguments),
      cmocka_unit_test(test_foreign_device),
      cmocka_unit_test(test_bad_semaphore_arguments),
      cmocka_unit_test(test_begin_end_refused),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
