/* Context creation, device selection, borrowed OpenCL objects, device key, cache location. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define CTX_OR_SKIP(state) \
  nabla_context *ctx = *(state); \
  if (!ctx) skip()

#define ERR_CAP 8192

static cl_device_id first_listed_device(nabla_device_info *info) {
  size_t n = 0;
  assert_int_equal(nabla_devices_list(info, 1, &n), NABLA_OK);
  assert_true(n >= 1);
  /* The same enumeration order as the library: platform order, then CL_DEVICE_TYPE_ALL order. */
  cl_platform_id plats[32];
  cl_uint np = 0;
  assert_int_equal(clGetPlatformIDs(32, plats, &np), CL_SUCCESS);
  for (cl_uint p = 0; p < np; p++) {
    cl_uint nd = 0;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0) continue;
    cl_device_id dev = NULL;
    cl_uint one = 1;
    assert_int_equal(clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, one, &dev, NULL), CL_SUCCESS);
    return dev;
  }
  fail_msg("no OpenCL device although nabla_devices_list found one");
  return NULL;
}

/* Creates a context through NABLACL_DEVICE=value (selector NULL). */
static nabla_status create_with_env(const char *value, nabla_context **out, char *err) {
  tu_env saved = tu_env_save("NABLACL_DEVICE");
  setenv("NABLACL_DEVICE", value, 1);
  nabla_status st = nabla_context_create(out, NULL, err, ERR_CAP);
  tu_env_restore(&saved);
  return st;
}

/* Device name of a context's device. */
static void device_name(nabla_context *ctx, char *out, size_t len) {
  memset(out, 0, len);
  assert_int_equal(clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_NAME, len - 1, out, NULL), CL_SUCCESS);
  size_t n = strlen(out);
  while (n > 0 && out[n - 1] == ' ') out[--n] = '\0';
}

/* Middle part of `s` (drop a quarter at each end when long enough) with its case flipped. */
static void middle_flipped(const char *s, char *out, size_t len) {
  size_t n = strlen(s), from = n >= 8 ? n / 4 : 0, to = n >= 8 ? n - n / 4 : n;
  size_t o = 0;
  for (size_t i = from; i < to && o + 1 < len; i++) {
    unsigned char c = (unsigned char)s[i];
    out[o++] = (char)(isupper(c) ? tolower(c) : islower(c) ? toupper(c) : c);
  }
  out[o] = '\0';
}

/* ---- selection ---------------------------------------------------------------------------- */

static void test_default_selection(void **state) {
  CTX_OR_SKIP(state);
  tu_env saved = tu_env_save("NABLACL_DEVICE");
  unsetenv("NABLACL_DEVICE");
  nabla_context *c = NULL;
  char err[ERR_CAP] = "";
  nabla_status st = nabla_context_create(&c, NULL, err, sizeof err);
  tu_env_restore(&saved);
  if (st != NABLA_OK) fail_msg("default selection: %s", err);
  assert_non_null(c);
  assert_non_null(nabla_context_cl_context(c));
  assert_non_null(nabla_context_device(c));
  assert_non_null(nabla_context_queue(c));
  assert_string_equal(nabla_last_error(c), "");
  /* Default rule: a GPU when there is one. */
  size_t n = 0;
  assert_int_equal(nabla_devices_list(NULL, 0, &n), NABLA_OK);
  nabla_device_info *infos = calloc(n, sizeof *infos);
  assert_int_equal(nabla_devices_list(infos, n, &n), NABLA_OK);
  int any_gpu = 0;
  for (size_t i = 0; i < n; i++) any_gpu |= strcmp(infos[i].type, "GPU") == 0;
  cl_device_type t = 0;
  assert_int_equal(clGetDeviceInfo(nabla_context_device(c), CL_DEVICE_TYPE, sizeof t, &t, NULL), CL_SUCCESS);
  if (any_gpu) assert_true(t & CL_DEVICE_TYPE_GPU);
  /* "" behaves as NULL. */
  nabla_context *c2 = NULL;
  saved = tu_env_save("NABLACL_DEVICE");
  unsetenv("NABLACL_DEVICE");
  st = nabla_context_create(&c2, "", err, sizeof err);
  tu_env_restore(&saved);
  assert_int_equal(st, NABLA_OK);
  assert_ptr_equal(nabla_context_device(c2), nabla_context_device(c));
  nabla_context_destroy(c2);
  nabla_context_destroy(c);
  free(infos);
}

/* The selection rule on a made-up list (no OpenCL): PoCL's CPU device name holds the CPU's
 * vendor, so a vendor word must find the vendor's platform first, and CPUs rank by runtime. */
static void test_pick_rule_on_fake_list(void **state) {
  (void)state;
  const nabla_device_desc devs[] = {
      {CL_DEVICE_TYPE_CPU, "Portable Computing Language", "POCL", "pthread-skylake-avx512-Intel(R) Xeon(R) Processor"},
      {CL_DEVICE_TYPE_CPU, "Oclgrind", "oclg", "Oclgrind Simulator"},
      {CL_DEVICE_TYPE_CPU, "Intel(R) OpenCL", "INTEL", "Intel(R) Xeon(R) Processor"},
      {CL_DEVICE_TYPE_GPU, "Intel(R) OpenCL Graphics", "INTEL", "Intel(R) Arc(TM) A770 Graphics"},
      {CL_DEVICE_TYPE_GPU, "Intel(R) OpenCL Graphics", "INTEL", "Intel(R) Data Center GPU Max 1100"},
  };
  const size_t n = sizeof devs / sizeof devs[0];
  assert_int_equal(nabla_device_pick(devs, n, NULL), 3);          /* first GPU */
  assert_int_equal(nabla_device_pick(devs, 3, NULL), 2);          /* CPUs only: Intel's runtime */
  assert_int_equal(nabla_device_pick(devs, 2, ""), 0);            /* then PoCL, before others */
  assert_int_equal(nabla_device_pick(devs + 1, 1, NULL), 0);      /* an unknown CPU still serves */
  assert_int_equal(nabla_device_pick(devs, 0, NULL), -1);
  assert_int_equal(nabla_device_pick(devs, n, "intel"), 2);       /* platform before PoCL's device */
  assert_int_equal(nabla_device_pick(devs, n, "INTEL(r) opencl"), 2); /* whole name beats substring */
  assert_int_equal(nabla_device_pick(devs, n, "graphics"), 3);    /* the platform's first device */
  assert_int_equal(nabla_device_pick(devs, n, "pocl"), 0);        /* ICD suffix */
  assert_int_equal(nabla_device_pick(devs, n, "platform:portable"), 0);
  assert_int_equal(nabla_device_pick(devs, n, "platform:Xeon"), -1); /* device names not looked at */
  assert_int_equal(nabla_device_pick(devs, n, "device:intel"), 0);   /* platform names not looked at */
  assert_int_equal(nabla_device_pick(devs, n, "device:max"), 4);
  assert_int_equal(nabla_device_pick(devs, n, "xeon"), 0);        /* no platform: first device name */
  assert_int_equal(nabla_device_pick(devs, n, "4"), 4);
  assert_int_equal(nabla_device_pick(devs, n, "5"), -1);
  assert_int_equal(nabla_device_pick(devs, n, "platform:"), -1);
  assert_int_equal(nabla_device_pick(devs, n, "device:"), -1);
  assert_int_equal(nabla_device_pick(devs, n, "-1"), -1);
  assert_int_equal(nabla_device_pick(devs, n, "nvidia"), -1);
  assert_true(nabla_device_preference(&devs[3]) < nabla_device_preference(&devs[2]));
  assert_true(nabla_device_preference(&devs[2]) < nabla_device_preference(&devs[0]));
  assert_true(nabla_device_preference(&devs[0]) < nabla_device_preference(&devs[1]));
}

/* On the real list: the default device ranks best, and nabla_device_choose names it. */
static void test_default_is_best_ranked(void **state) {
  CTX_OR_SKIP(state);
  size_t n = 0;
  assert_int_equal(nabla_devices_list(NULL, 0, &n), NABLA_OK);
  nabla_device_info *infos = calloc(n, sizeof *infos);
  nabla_device_desc *desc = calloc(n, sizeof *desc);
  assert_non_null(infos);
  assert_non_null(desc);
  assert_int_equal(nabla_devices_list(infos, n, &n), NABLA_OK);
  for (size_t i = 0; i < n; i++) {
    desc[i].type = strcmp(infos[i].type, "GPU") == 0           ? CL_DEVICE_TYPE_GPU
                   : strcmp(infos[i].type, "ACCELERATOR") == 0 ? CL_DEVICE_TYPE_ACCELERATOR
                   : strcmp(infos[i].type, "CPU") == 0         ? CL_DEVICE_TYPE_CPU
                                                               : CL_DEVICE_TYPE_CUSTOM;
    snprintf(desc[i].platform, sizeof desc[i].platform, "%s", infos[i].platform);
    snprintf(desc[i].name, sizeof desc[i].name, "%s", infos[i].name);
  }
  tu_env saved = tu_env_save("NABLACL_DEVICE");
  unsetenv("NABLACL_DEVICE");
  int index = -2;
  char err[ERR_CAP] = "";
  nabla_status st = nabla_device_choose(NULL, &index, err, sizeof err);
  tu_env_restore(&saved);
  if (st != NABLA_OK) fail_msg("nabla_device_choose: %s", err);
  assert_true(index >= 0 && (size_t)index < n);
  for (size_t i = 0; i < n; i++)
    assert_true(nabla_device_preference(&desc[index]) <= nabla_device_preference(&desc[i]));
  assert_int_equal(nabla_device_choose("0", &index, err, sizeof err), NABLA_OK);
  assert_int_equal(index, 0);
  assert_int_equal(nabla_device_choose("zz-none-zz", &index, err, sizeof err), NABLA_NO_DEVICE);
  assert_int_equal(index, -1);
  assert_non_null(strstr(err, "zz-none-zz"));
  assert_int_equal(nabla_device_choose(NULL, NULL, NULL, 0), NABLA_INVALID_ARGUMENT);
  free(desc);
  free(infos);
}

static void test_env_by_index(void **state) {
  CTX_OR_SKIP(state);
  nabla_device_info info;
  cl_device_id first = first_listed_device(&info);
  nabla_context *c = NULL;
  char err[ERR_CAP] = "";
  if (create_with_env("0", &c, err) != NABLA_OK) fail_msg("NABLACL_DEVICE=0: %s", err);
  assert_ptr_equal(nabla_context_device(c), first);
  nabla_context_destroy(c);
  /* An explicit selector wins over the environment. */
  tu_env saved = tu_env_save("NABLACL_DEVICE");
  setenv("NABLACL_DEVICE", "no-such-device-anywhere", 1);
  c = NULL;
  nabla_status st = nabla_context_create(&c, "0", err, sizeof err);
  tu_env_restore(&saved);
  if (st != NABLA_OK) fail_msg("selector \"0\": %s", err);
  assert_ptr_equal(nabla_context_device(c), first);
  nabla_context_destroy(c);
}

static void test_env_by_name_substring(void **state) {
  CTX_OR_SKIP(state);
  nabla_device_info info;
  cl_device_id first = first_listed_device(&info);
  char sel[256];
  middle_flipped(info.name, sel, sizeof sel);
  assert_true(strlen(sel) > 0);
  nabla_context *c = NULL;
  char err[ERR_CAP] = "";
  if (create_with_env(sel, &c, err) != NABLA_OK) fail_msg("NABLACL_DEVICE=\"%s\": %s", sel, err);
  /* Device 0's name contains the selector and nothing comes before device 0. */
  char name[256];
  device_name(c, name, sizeof name);
  assert_string_equal(name, info.name);
  assert_ptr_equal(nabla_context_device(c), first);
  nabla_context_destroy(c);
}

static void test_env_by_platform_substring(void **state) {
  CTX_OR_SKIP(state);
  nabla_device_info info;
  cl_device_id first = first_listed_device(&info);
  char sel[256];
  middle_flipped(info.platform, sel, sizeof sel);
  assert_true(strlen(sel) > 0);
  nabla_context *c = NULL;
  char err[ERR_CAP] = "";
  if (create_with_env(sel, &c, err) != NABLA_OK) fail_msg("NABLACL_DEVICE=\"%s\": %s", sel, err);
  cl_platform_id plat = NULL;
  assert_int_equal(clGetDeviceInfo(nabla_context_device(c), CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL),
                   CL_SUCCESS);
  char pname[256] = "";
  assert_int_equal(clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof pname - 1, pname, NULL), CL_SUCCESS);
  assert_string_equal(pname, info.platform);
  assert_ptr_equal(nabla_context_device(c), first); /* the platform's first device */
  nabla_context_destroy(c);
}

static void test_no_match_names_devices(void **state) {
  CTX_OR_SKIP(state);
  nabla_device_info info;
  first_listed_device(&info);
  nabla_context *c = (nabla_context *)&info; /* must be overwritten with NULL */
  char err[ERR_CAP] = "";
  assert_int_equal(create_with_env("zz-no-such-device-zz", &c, err), NABLA_NO_DEVICE);
  assert_null(c);
  if (!strstr(err, info.name)) fail_msg("error does not name the device \"%s\": %s", info.name, err);
  assert_non_null(strstr(err, "zz-no-such-device-zz"));

  /* Direct selector, same result; a short err buffer is truncated, never overrun. */
  char small[24];
  memset(small, 'x', sizeof small);
  c = (nabla_context *)&info;
  assert_int_equal(nabla_context_create(&c, "zz-no-such-device-zz", small, 16), NABLA_NO_DEVICE);
  assert_null(c);
  assert_true(strlen(small) < 16);
  for (size_t i = 16; i < sizeof small; i++) assert_int_equal(small[i], 'x');
  /* err may be NULL. */
  assert_int_equal(nabla_context_create(&c, "zz-no-such-device-zz", NULL, 0), NABLA_NO_DEVICE);
  assert_null(c);
}

static void test_index_out_of_range(void **state) {
  CTX_OR_SKIP(state);
  size_t n = 0;
  assert_int_equal(nabla_devices_list(NULL, 0, &n), NABLA_OK);
  char sel[32];
  snprintf(sel, sizeof sel, "%zu", n);
  nabla_context *c = NULL;
  char err[ERR_CAP] = "";
  assert_int_equal(create_with_env(sel, &c, err), NABLA_NO_DEVICE);
  assert_null(c);
  assert_true(strlen(err) > 0);
  assert_int_equal(nabla_context_create(&c, "100000", err, sizeof err), NABLA_NO_DEVICE);
  assert_null(c);
}

static void test_devices_list(void **state) {
  CTX_OR_SKIP(state);
  size_t n = 0;
  assert_int_equal(nabla_devices_list(NULL, 0, &n), NABLA_OK);
  assert_true(n >= 1);
  nabla_device_info *infos = calloc(n + 1, sizeof *infos);
  size_t m = 0;
  assert_int_equal(nabla_devices_list(infos, n + 1, &m), NABLA_OK);
  assert_int_equal(m, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(infos[i].index, (int)i);
    assert_true(strlen(infos[i].name) > 0);
    assert_true(strlen(infos[i].platform) > 0);
    assert_true(strlen(infos[i].type) > 0);
    assert_true(infos[i].compute_units >= 1);
    assert_true(infos[i].global_mem > 0);
  }
  /* A short array gets the first entries and still the full count. */
  nabla_device_info one;
  assert_int_equal(nabla_devices_list(&one, 1, &m), NABLA_OK);
  assert_int_equal(m, n);
  assert_string_equal(one.name, infos[0].name);
  assert_int_equal(nabla_devices_list(NULL, 0, NULL), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_devices_list(NULL, 1, &m), NABLA_INVALID_ARGUMENT);
  free(infos);
}

/* ---- borrowed OpenCL objects -------------------------------------------------------------- */

static cl_uint context_refs(cl_context c) {
  cl_uint r = 0;
  assert_int_equal(clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof r, &r, NULL), CL_SUCCESS);
  return r;
}

static cl_uint queue_refs(cl_command_queue q) {
  cl_uint r = 0;
  assert_int_equal(clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof r, &r, NULL), CL_SUCCESS);
  return r;
}

/* The driver may drop the references of finished commands on its own threads shortly after
 * clFinish returns (PoCL does): wait up to 5 s for the counts to settle at the expected values. */
static int refs_settle(cl_context c, cl_uint want_c, cl_command_queue q, cl_uint want_q) {
  struct timespec pause = {0, 10000000};
  for (int i = 0; i < 500; i++) {
    if (context_refs(c) == want_c && queue_refs(q) == want_q) return 1;
    nanosleep(&pause, NULL);
  }
  return 0;
}

static void test_create_from_cl(void **state) {
  CTX_OR_SKIP(state);
  cl_device_id dev = nabla_context_device(ctx);
  cl_int rc = CL_SUCCESS;
  cl_context mine = clCreateContext(NULL, 1, &dev, NULL, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_command_queue q = clCreateCommandQueue(mine, dev, 0, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_uint ctx_refs0 = context_refs(mine), q_refs0 = queue_refs(q);

  nabla_context *c = NULL;
  char err[ERR_CAP] = "";
  if (nabla_context_create_from_cl(&c, mine, dev, q, err, sizeof err) != NABLA_OK)
    fail_msg("create_from_cl: %s", err);
  assert_ptr_equal(nabla_context_cl_context(c), mine);
  assert_ptr_equal(nabla_context_device(c), dev);
  assert_ptr_equal(nabla_context_queue(c), q);
  assert_true(context_refs(mine) >= ctx_refs0);
  assert_true(queue_refs(q) >= q_refs0);
  assert_string_equal(nabla_context_device_key(c), nabla_context_device_key(ctx));
  /* Profiling needs a profiling queue: the borrowed one has none, the library's own has. */
  assert_int_equal(nabla_profile_enable(c, 1), NABLA_UNSUPPORTED);
  assert_non_null(strstr(nabla_last_error(c), "CL_QUEUE_PROFILING_ENABLE"));
  assert_int_equal(nabla_profile_enable(c, 0), NABLA_OK);
  assert_int_equal(nabla_profile_enable(ctx, 1), NABLA_OK);
  assert_int_equal(nabla_profile_enable(ctx, 0), NABLA_OK);

  /* An operation runs on the caller's queue; a video reorder also builds a program in it. */
  nabla_shape s = {1, 1, 2 * 9 * 13, 8, 2, 9, 13};
  size_t n = (size_t)s.seq * s.head_dim;
  double *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref);
  uint64_t seed = 1;
  tu_fill_normal(x, n, &seed, 1.0);
  tu_quantize(x, n, NABLA_F32);
  nabla_ref_reorder(&s, NABLA_RASTER_TO_TILE, x, ref);
  cl_mem src = tu_buffer_from(c, x, n, NABLA_F32);
  cl_mem dst = clCreateBuffer(mine, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_event done = NULL;
  if (nabla_reorder(c, &s, NABLA_F32, NABLA_RASTER_TO_TILE, src, dst, 0, NULL, &done) != NABLA_OK)
    fail_msg("reorder on a borrowed context: %s", nabla_last_error(c));
  cl_command_queue event_queue = NULL;
  assert_int_equal(clGetEventInfo(done, CL_EVENT_COMMAND_QUEUE, sizeof event_queue, &event_queue, NULL),
                   CL_SUCCESS);
  assert_ptr_equal(event_queue, q);
  assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
  clReleaseEvent(done);

  nabla_context_destroy(c);
  /* Still the caller's and still usable ... */
  float *back = malloc(n * sizeof *back);
  assert_int_equal(clEnqueueReadBuffer(q, dst, CL_TRUE, 0, n * sizeof(float), back, 0, NULL, NULL), CL_SUCCESS);
  for (size_t i = 0; i < n; i++) assert_true(back[i] == (float)ref[i]);
  clReleaseMemObject(src);
  clReleaseMemObject(dst);
  assert_int_equal(clFinish(q), CL_SUCCESS);
  /* ... with exactly the caller's references: the library kept none (nor did its programs). */
  if (!refs_settle(mine, ctx_refs0, q, q_refs0))
    fail_msg("references left behind: context %u (was %u), queue %u (was %u)", context_refs(mine), ctx_refs0,
             queue_refs(q), q_refs0);

  assert_int_equal(clReleaseCommandQueue(q), CL_SUCCESS);
  assert_int_equal(clReleaseContext(mine), CL_SUCCESS);
  free(x), free(ref), free(back);
}

static void test_borrowed_objects_released_after_pipeline(void **state) {
  CTX_OR_SKIP(state);
  /* Every OpenCL object the library makes (buffers, programs, kernels, events) holds a
   * reference on its context or queue: after a full pipeline (pool, map, select with STA,
   * CSR, attention) and nabla_context_destroy, the caller's counts are back where they were. */
  cl_device_id dev = nabla_context_device(ctx);
  cl_int rc = CL_SUCCESS;
  cl_context mine = clCreateContext(NULL, 1, &dev, NULL, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_command_queue q = clCreateCommandQueue(mine, dev, CL_QUEUE_PROFILING_ENABLE, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_uint ctx_refs0 = context_refs(mine), q_refs0 = queue_refs(q);

  nabla_context *c = NULL;
  char err[ERR_CAP] = "";
  if (nabla_context_create_from_cl(&c, mine, dev, q, err, sizeof err) != NABLA_OK)
    fail_msg("create_from_cl: %s", err);
  nabla_shape s = {1, 2, 2 * 16 * 24, 16, 2, 16, 24};
  size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim;
  double *x = malloc(n * sizeof *x);
  uint64_t seed = 11;
  tu_fill_video_like(&s, x, &seed, 1.0);
  cl_mem dq = tu_buffer_from(c, x, n, NABLA_F16), dk = tu_buffer_from(c, x, n, NABLA_F16);
  cl_mem dv = tu_buffer_from(c, x, n, NABLA_F16), dout = tu_buffer_from(c, x, n, NABLA_F16);
  nabla_algo algo;
  assert_int_equal(nabla_algo_parse("nabla-0.5_sta-3-1-1", &algo, NULL, 0), NABLA_OK);
  cl_event done = NULL;
  if (nabla_attention(c, &algo, &s, NABLA_F16, dq, dk, dv, dout, 0, NULL, &done) != NABLA_OK)
    fail_msg("attention: %s", nabla_last_error(c));
  assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
  clReleaseEvent(done);
  /* The mask on its own, read back, then released. */
  nabla_mask *mask = NULL;
  assert_int_equal(nabla_mask_build(c, &algo, &s, NABLA_F16, dq, dk, &mask, 0, NULL, NULL), NABLA_OK);
  int64_t kept = 0;
  assert_int_equal(nabla_mask_stats(c, mask, &kept, NULL), NABLA_OK);
  assert_true(kept > 0);
  assert_int_equal(nabla_attend(c, &s, NABLA_F16, mask, dq, dk, dv, dout, 0, NULL, NULL), NABLA_OK);
  assert_int_equal(nabla_attend(c, &s, NABLA_F16, NULL, dq, dk, dv, dout, 0, NULL, NULL), NABLA_OK);
  nabla_mask_release(mask);
  nabla_context_destroy(c);
  clReleaseMemObject(dq), clReleaseMemObject(dk), clReleaseMemObject(dv), clReleaseMemObject(dout);
  assert_int_equal(clFinish(q), CL_SUCCESS);
  if (!refs_settle(mine, ctx_refs0, q, q_refs0))
    fail_msg("references left behind: context %u (was %u), queue %u (was %u)", context_refs(mine), ctx_refs0,
             queue_refs(q), q_refs0);
  clReleaseCommandQueue(q);
  clReleaseContext(mine);
  free(x);
}

static void test_create_from_cl_errors(void **state) {
  CTX_OR_SKIP(state);
  cl_device_id dev = nabla_context_device(ctx);
  cl_int rc = CL_SUCCESS;
  cl_context a = clCreateContext(NULL, 1, &dev, NULL, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_context b = clCreateContext(NULL, 1, &dev, NULL, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_command_queue qb = clCreateCommandQueue(b, dev, 0, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_uint a0 = context_refs(a), b0 = context_refs(b), q0 = queue_refs(qb);

  nabla_context *c = (nabla_context *)&a;
  char err[ERR_CAP] = "";
  /* A queue of another context. */
  assert_int_equal(nabla_context_create_from_cl(&c, a, dev, qb, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_null(c);
  assert_true(strlen(err) > 0);
  /* NULL arguments. */
  err[0] = '\0';
  assert_int_equal(nabla_context_create_from_cl(NULL, b, dev, qb, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_true(strlen(err) > 0);
  c = (nabla_context *)&a;
  assert_int_equal(nabla_context_create_from_cl(&c, NULL, dev, qb, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_null(c);
  c = (nabla_context *)&a;
  assert_int_equal(nabla_context_create_from_cl(&c, b, NULL, qb, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_null(c);
  c = (nabla_context *)&a;
  assert_int_equal(nabla_context_create_from_cl(&c, b, dev, NULL, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_null(c);
  assert_int_equal(nabla_context_create_from_cl(&c, b, dev, NULL, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_context_create(NULL, NULL, err, sizeof err), NABLA_INVALID_ARGUMENT);
  /* Failures take no references. */
  assert_int_equal(context_refs(a), a0);
  assert_int_equal(context_refs(b), b0);
  assert_int_equal(queue_refs(qb), q0);

  clReleaseCommandQueue(qb);
  clReleaseContext(b);
  clReleaseContext(a);
}

static void test_destroy_null_and_accessors(void **state) {
  (void)state;
  nabla_context_destroy(NULL);
  assert_int_equal(nabla_context_trim(NULL, NULL), NABLA_INVALID_ARGUMENT);
  assert_null(nabla_context_cl_context(NULL));
  assert_null(nabla_context_device(NULL));
  assert_null(nabla_context_queue(NULL));
  assert_null(nabla_context_cache_dir(NULL));
  assert_non_null(nabla_last_error(NULL));
}

/* ---- identity and cache location ---------------------------------------------------------- */

static void test_device_key(void **state) {
  CTX_OR_SKIP(state);
  const char *key = nabla_context_device_key(ctx);
  assert_non_null(key);
  assert_int_equal(strlen(key), 32);
  for (size_t i = 0; i < 32; i++) assert_true(isxdigit((unsigned char)key[i]));
  nabla_context *c = NULL;
  char err[ERR_CAP];
  cl_device_id dev = nabla_context_device(ctx);
  /* A second context on the same device: the same key. */
  char index_sel[32] = "";
  size_t n = 0;
  assert_int_equal(nabla_devices_list(NULL, 0, &n), NABLA_OK);
  for (size_t i = 0; i < n && !index_sel[0]; i++) {
    char sel[32];
    snprintf(sel, sizeof sel, "%zu", i);
    assert_int_equal(nabla_context_create(&c, sel, err, sizeof err), NABLA_OK);
    if (nabla_context_device(c) == dev) snprintf(index_sel, sizeof index_sel, "%s", sel);
    nabla_context_destroy(c);
    c = NULL;
  }
  assert_true(index_sel[0] != '\0');
  for (int round = 0; round < 2; round++) {
    assert_int_equal(nabla_context_create(&c, index_sel, err, sizeof err), NABLA_OK);
    assert_string_equal(nabla_context_device_key(c), key);
    nabla_context_destroy(c);
    c = NULL;
  }
}

static void test_cache_dir_env(void **state) {
  CTX_OR_SKIP(state);
  tu_env cache = tu_env_save("NABLACL_CACHE_DIR"), xdg = tu_env_save("XDG_CACHE_HOME");
  char dir[1024];
  assert_int_equal(tu_temp_dir(dir, sizeof dir, "context-cache"), 0);
  char err[ERR_CAP];
  nabla_context *c = NULL;

  setenv("NABLACL_CACHE_DIR", dir, 1);
  assert_int_equal(nabla_context_create(&c, NULL, err, sizeof err), NABLA_OK);
  assert_non_null(nabla_context_cache_dir(c));
  assert_string_equal(nabla_context_cache_dir(c), dir);
  nabla_context_destroy(c);

  setenv("NABLACL_CACHE_DIR", "off", 1);
  assert_int_equal(nabla_context_create(&c, NULL, err, sizeof err), NABLA_OK);
  assert_null(nabla_context_cache_dir(c));
  nabla_context_destroy(c);

  /* Unset: $XDG_CACHE_HOME/nablacl (nothing is created by creating a context). */
  unsetenv("NABLACL_CACHE_DIR");
  setenv("XDG_CACHE_HOME", dir, 1);
  assert_int_equal(nabla_context_create(&c, NULL, err, sizeof err), NABLA_OK);
  char expect[1100];
  snprintf(expect, sizeof expect, "%s/nablacl", dir);
  assert_non_null(nabla_context_cache_dir(c));
  assert_string_equal(nabla_context_cache_dir(c), expect);
  nabla_context_destroy(c);
  assert_int_equal(access(expect, F_OK), -1);

  tu_env_restore(&cache);
  tu_env_restore(&xdg);
  assert_int_equal(rmdir(dir), 0);
}

/* NABLACL_KERNEL_DIR that is not a directory fails context creation, naming it (a typo must not
 * silently run the embedded kernels); a directory is taken. */
static void test_kernel_dir_env(void **state) {
  CTX_OR_SKIP(state);
  tu_env kdir = tu_env_save("NABLACL_KERNEL_DIR");
  char dir[1024], file[1100], err[ERR_CAP];
  assert_int_equal(tu_temp_dir(dir, sizeof dir, "context-kdir"), 0);
  snprintf(file, sizeof file, "%s/not-a-dir", dir);
  tu_spit(file, "x", 1);
  const char *bad[] = {"/nonexistent/nablacl-kernels", file};
  nabla_context *c = NULL;
  for (int i = 0; i < 2; i++) {
    setenv("NABLACL_KERNEL_DIR", bad[i], 1);
    err[0] = '\0';
    assert_int_equal(nabla_context_create(&c, NULL, err, sizeof err), NABLA_INVALID_ARGUMENT);
    assert_null(c);
    assert_non_null(strstr(err, "NABLACL_KERNEL_DIR"));
    assert_non_null(strstr(err, bad[i]));
  }
  setenv("NABLACL_KERNEL_DIR", dir, 1); /* empty: every source falls back to the embedded copy */
  assert_int_equal(nabla_context_create(&c, NULL, err, sizeof err), NABLA_OK);
  nabla_context_destroy(c);
  tu_env_restore(&kdir);
  tu_remove_tree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_destroy_null_and_accessors),
      cmocka_unit_test(test_default_selection),
      cmocka_unit_test(test_pick_rule_on_fake_list),
      cmocka_unit_test(test_default_is_best_ranked),
      cmocka_unit_test(test_env_by_index),
      cmocka_unit_test(test_env_by_name_substring),
      cmocka_unit_test(test_env_by_platform_substring),
      cmocka_unit_test(test_no_match_names_devices),
      cmocka_unit_test(test_index_out_of_range),
      cmocka_unit_test(test_devices_list),
      cmocka_unit_test(test_create_from_cl),
      cmocka_unit_test(test_borrowed_objects_released_after_pipeline),
      cmocka_unit_test(test_create_from_cl_errors),
      cmocka_unit_test(test_device_key),
      cmocka_unit_test(test_cache_dir_env),
      cmocka_unit_test(test_kernel_dir_env),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
