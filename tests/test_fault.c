/*
 * Failure injection: clEnqueueNDRangeKernel and clSetKernelArg are wrapped (-Wl,--wrap) so that
 * the next launches, or argument settings, fail. A variant whose launch fails once falls back to
 * the portable kernel for that call only; when the portable launch fails too, the call reports
 * the failure and the context stays usable. The first failing code is the one reported.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define CTX_OR_SKIP(state)        \
  nabla_context *ctx = *(state); \
  if (!ctx) skip()

static int fail_launches; /* the next this many launches fail (the test's injection knobs) */
static int fail_rows;      /* every launch shaped like the cpu-rows kernel's fails */
static cl_int arg_failures[2]; /* the next clSetKernelArg calls return these, in order (0: none) */

cl_int __real_clSetKernelArg(cl_kernel k, cl_uint index, size_t size, const void *value);
cl_int __wrap_clSetKernelArg(cl_kernel k, cl_uint index, size_t size, const void *value) {
  if (arg_failures[0] != CL_SUCCESS) {
    cl_int rc = arg_failures[0];
    arg_failures[0] = arg_failures[1], arg_failures[1] = CL_SUCCESS;
    return rc;
  }
  return __real_clSetKernelArg(k, index, size, value);
}

cl_int __real_clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *offset,
                                     const size_t *global, const size_t *local, cl_uint num_wait,
                                     const cl_event *wait, cl_event *event);
cl_int __wrap_clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *offset,
                                     const size_t *global, const size_t *local, cl_uint num_wait,
                                     const cl_event *wait, cl_event *event) {
  if (fail_launches > 0) {
    fail_launches--;
    return CL_OUT_OF_RESOURCES;
  }
  /* cpu-rows: 3-D, one work-group of 64 along dimension 0 (the portable kernel's are 128). */
  if (fail_rows && dim == 3 && local && local[0] == 64 && global[0] == 64) return CL_OUT_OF_RESOURCES;
  return __real_clEnqueueNDRangeKernel(q, k, dim, offset, global, local, num_wait, wait, event);
}

static cl_ulong fake_local; /* when set, every kernel reports this CL_KERNEL_LOCAL_MEM_SIZE */

cl_int __real_clGetKernelWorkGroupInfo(cl_kernel k, cl_device_id d, cl_kernel_work_group_info what, size_t size,
                                       void *value, size_t *ret);
cl_int __wrap_clGetKernelWorkGroupInfo(cl_kernel k, cl_device_id d, cl_kernel_work_group_info what, size_t size,
                                       void *value, size_t *ret) {
  if (fake_local && what == CL_KERNEL_LOCAL_MEM_SIZE && size >= sizeof(cl_ulong) && value) {
    char name[64] = "";
    clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
    /* The tensor-core kernels claim more than the device has (as the emulated ones do on a
     * 32 KB device such as oclgrind's); the portable ones stay as they are. */
    int mma = 0;
    cl_program prog = NULL;
    char opts[1024] = "";
    if (clGetKernelInfo(k, CL_KERNEL_PROGRAM, sizeof prog, &prog, NULL) == CL_SUCCESS)
      clGetProgramBuildInfo(prog, d, CL_PROGRAM_BUILD_OPTIONS, sizeof opts, opts, NULL);
    mma = strstr(opts, "NABLA_NO_PTX") != NULL;
    if (mma) {
      *(cl_ulong *)value = fake_local;
      if (ret) *ret = sizeof(cl_ulong);
      return CL_SUCCESS;
    }
  }
  return __real_clGetKernelWorkGroupInfo(k, d, what, size, value, ret);
}

/* Dense attention of a small f32 problem with `fail` launches failing first. On success the
 * output is checked against the float64 reference (tu_attend_vs_reference, which fails the test
 * on an error); `expect_error` runs it on zeros instead and returns the call's status. */
static nabla_status attend_once(nabla_context *ctx, int fail, int expect_error) {
  const nabla_shape s = {1, 2, 256, 64, 0, 0, 0};
  nabla_status st = NABLA_OK;
  fail_launches = fail;
  if (!expect_error) {
    double err = tu_attend_vs_reference(ctx, &s, NABLA_F32, -1.0, 1.0, 11);
    if (!(err <= 1e-4)) fail_msg("%s: max abs error %.3g", nabla_variant_last(ctx), err);
  } else {
    const size_t n = 2 * 256 * 64;
    double *zeros = calloc(n, sizeof *zeros);
    cl_mem x = tu_buffer_from(ctx, zeros, n, NABLA_F32), o = tu_buffer_from(ctx, zeros, n, NABLA_F32);
    st = nabla_attend(ctx, &s, NABLA_F32, NULL, x, x, x, o, 0, NULL, NULL);
    clReleaseMemObject(x), clReleaseMemObject(o);
    free(zeros);
  }
  fail_launches = 0;
  return st;
}

static void test_transient_launch_failure(void **state) {
  CTX_OR_SKIP(state);
  assert_int_equal(nabla_variant_force(ctx, "cpu-rows"), NABLA_OK);
  assert_int_equal(attend_once(ctx, 0, 0), NABLA_OK);
  assert_string_equal(nabla_variant_last(ctx), "cpu-rows");
  /* One refused launch: this call runs the portable kernel and says why ... */
  assert_int_equal(attend_once(ctx, 1, 0), NABLA_OK);
  assert_string_equal(nabla_variant_last(ctx), "portable");
  if (!strstr(nabla_variant_note(ctx), "on this call")) fail_msg("note: %s", nabla_variant_note(ctx));
  /* ... and the next call has its variant back. */
  assert_int_equal(attend_once(ctx, 0, 0), NABLA_OK);
  assert_string_equal(nabla_variant_last(ctx), "cpu-rows");
  assert_true(nabla_variant_supported(ctx, "cpu-rows"));
  /* Both launches refused: the call fails with the reason, and the context still works. */
  assert_int_equal(attend_once(ctx, 2, 1), NABLA_OPENCL);
  assert_non_null(strstr(nabla_last_error(ctx), "CL_OUT_OF_RESOURCES"));
  assert_int_equal(attend_once(ctx, 0, 0), NABLA_OK);
  assert_string_equal(nabla_variant_last(ctx), "cpu-rows");
  assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
}

/* Two argument settings refused: each kernel stops at its first failure and reports that code
 * (OR-ing -38 and -51 would report -55, CL_INVALID_WORK_ITEM_SIZE). The variant takes the
 * first, the portable retry the second, so the call fails naming it, and the note the first. */
static void test_first_argument_error_reported(void **state) {
  CTX_OR_SKIP(state);
  assert_int_equal(nabla_variant_force(ctx, "cpu-rows"), NABLA_OK);
  assert_int_equal(attend_once(ctx, 0, 0), NABLA_OK); /* programs built first */
  arg_failures[0] = CL_INVALID_MEM_OBJECT, arg_failures[1] = CL_INVALID_ARG_SIZE;
  nabla_status st = attend_once(ctx, 0, 1);
  arg_failures[0] = arg_failures[1] = CL_SUCCESS;
  assert_int_equal(st, NABLA_OPENCL);
  const char *note = nabla_variant_note(ctx), *err = nabla_last_error(ctx);
  if (!strstr(note, "setting argument 0 of the attention kernel failed: CL_INVALID_MEM_OBJECT") ||
      !strstr(err, "setting argument 0 of the attention kernel failed: CL_INVALID_ARG_SIZE"))
    fail_msg("note: %s; error: %s", note, err);
  assert_int_equal(attend_once(ctx, 0, 0), NABLA_OK); /* and nothing stays broken */
  assert_string_equal(nabla_variant_last(ctx), "cpu-rows");
  assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
}

typedef struct {
  int seen;          /* the VARIANT=3 (cpu-rows) candidate was reported, */
  int state;         /* with this state, */
  char note[512];    /* and this note */
} tune_watch;

static int watch_rows(const nabla_tune_report *r, void *user) {
  tune_watch *w = user;
  if (r->event == NABLA_TUNE_CANDIDATE && strstr(r->params, "VARIANT=3")) {
    w->seen = 1;
    w->state = (int)r->state;
    snprintf(w->note, sizeof w->note, "%s", r->note);
  }
  return 0;
}

/* A tuning candidate whose variant falls back at run time is not timed as if it had run: the
 * cpu-rows candidate, its launches refused, is unfit (not "measured" with the portable time). */
/* A variant whose kernel needs more local memory than the device has is not eligible: the
 * portable kernel runs (no raw CL_OUT_OF_RESOURCES from the launch), and the note gives the
 * figures; the mask build's tensor-core map falls back the same way. */
static void test_local_memory_misfit(void **state) {
  CTX_OR_SKIP(state);
  cl_ulong device_local = 0;
  assert_int_equal(clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_LOCAL_MEM_SIZE, sizeof device_local,
                                   &device_local, NULL), CL_SUCCESS);
  const nabla_shape s = {1, 2, 256, 64, 1, 16, 16};
  static const char *const forced[] = {"nvidia-mma-emulated", "nvidia-wgmma-emulated"};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(nabla_variant_force(ctx, forced[i]), NABLA_OK);
    fake_local = device_local + 1;
    char name[32];
    assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_F16, name, sizeof name), NABLA_OK);
    assert_string_equal(name, "portable");
    if (!strstr(nabla_variant_note(ctx), "is not eligible") || !strstr(nabla_variant_note(ctx), "bytes of local memory"))
      fail_msg("note: %s", nabla_variant_note(ctx));
    double err = tu_attend_vs_reference(ctx, &s, NABLA_F16, 0.5, 1.0, 5);
    assert_string_equal(nabla_variant_last(ctx), "portable");
    if (!(err <= tu_tolerance(NABLA_F16))) fail_msg("max abs error %.3g", err);
    /* The mask build's reduced map: tensor-core (emulated) kernel refused, portable used. */
    const size_t n = 2 * 256 * 64;
    double *x = calloc(n, sizeof *x);
    uint64_t seed = 3;
    tu_fill_normal(x, n, &seed, 1.0);
    cl_mem q = tu_buffer_from(ctx, x, n, NABLA_F16);
    nabla_algo algo;
    char err_text[128];
    assert_int_equal(nabla_algo_parse("nabla-0.5", &algo, err_text, sizeof err_text), NABLA_OK);
    nabla_mask *mask = NULL;
    nabla_status st = nabla_mask_build(ctx, &algo, &s, NABLA_F16, q, q, &mask, 0, NULL, NULL);
    if (st != NABLA_OK) fail_msg("mask build: %s: %s", nabla_status_str(st), nabla_last_error(ctx));
    nabla_mask_release(mask);
    clReleaseMemObject(q);
    free(x);
    fake_local = 0;
    /* With the figures honest again, the variant runs. */
    err = tu_attend_vs_reference(ctx, &s, NABLA_F16, 0.5, 1.0, 5);
    assert_string_equal(nabla_variant_last(ctx), forced[i]);
    assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
  }
}

static void test_tuner_rejects_fallback(void **state) {
  CTX_OR_SKIP(state);
  if (!nabla_variant_supported(ctx, "cpu-rows")) skip();
  tu_env cache = tu_env_save("NABLACL_CACHE_DIR");
  setenv("NABLACL_CACHE_DIR", "off", 1); /* nothing of this run is stored */
  nabla_context *c = tu_context();
  assert_non_null(c);
  nabla_tune_options o;
  nabla_tune_options_init(&o);
  o.dtype = NABLA_F32;
  o.kernels = "attention";
  o.target_ms = 5;
  tune_watch w = {0, -1, ""};
  nabla_tune_summary sum;
  fail_rows = 1;
  nabla_status st = nabla_tune(c, &o, watch_rows, &w, &sum);
  fail_rows = 0;
  nabla_context_destroy(c);
  tu_env_restore(&cache);
  assert_int_equal(st, NABLA_OK);
  assert_true(w.seen);
  if (w.state != NABLA_TUNE_UNFIT || !strstr(w.note, "ran as portable"))
    fail_msg("cpu-rows candidate: state %d, note '%s'", w.state, w.note);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transient_launch_failure),
      cmocka_unit_test(test_first_argument_error_reported),
      cmocka_unit_test(test_tuner_rejects_fallback),
      cmocka_unit_test(test_local_memory_misfit),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
