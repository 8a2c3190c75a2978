/* nabla_mask_write_flex: FlexAttention's layout expanded on the device, against the float64
 * reference's CSR of the same block bitmap, and its argument checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define CTX_OR_SKIP(state) \
  nabla_context *ctx = *(state); \
  if (!ctx) skip()

#define SENTINEL 0x5a5a5a5a

typedef struct {
  size_t rows, nb;
  cl_mem num, idx; /* device outputs */
  int32_t *dev_num, *dev_idx;
} flex_out;

/* Device outputs for a mask of `s`, pre-filled with SENTINEL so that a missed write shows. */
static flex_out flex_new(nabla_context *ctx, const nabla_shape *s) {
  flex_out f;
  cl_int rc = CL_SUCCESS;
  f.nb = (size_t)nabla_shape_blocks(s);
  f.rows = (size_t)s->batch * s->heads * f.nb;
  f.dev_num = malloc(f.rows * sizeof *f.dev_num);
  f.dev_idx = malloc(f.rows * f.nb * sizeof *f.dev_idx);
  assert_non_null(f.dev_num);
  assert_non_null(f.dev_idx);
  f.num = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, f.rows * sizeof(int32_t), NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  f.idx = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, f.rows * f.nb * sizeof(int32_t), NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_int pattern = SENTINEL;
  cl_command_queue q = nabla_context_queue(ctx);
  assert_int_equal(clEnqueueFillBuffer(q, f.num, &pattern, sizeof pattern, 0, f.rows * sizeof(int32_t), 0, NULL, NULL), CL_SUCCESS);
  assert_int_equal(clEnqueueFillBuffer(q, f.idx, &pattern, sizeof pattern, 0, f.rows * f.nb * sizeof(int32_t), 0, NULL, NULL),
                   CL_SUCCESS);
  assert_int_equal(clFinish(q), CL_SUCCESS);
  return f;
}

static void flex_read(nabla_context *ctx, flex_out *f) {
  cl_command_queue q = nabla_context_queue(ctx);
  assert_int_equal(clEnqueueReadBuffer(q, f->num, CL_TRUE, 0, f->rows * sizeof(int32_t), f->dev_num, 0, NULL, NULL),
                   CL_SUCCESS);
  assert_int_equal(clEnqueueReadBuffer(q, f->idx, CL_TRUE, 0, f->rows * f->nb * sizeof(int32_t), f->dev_idx, 0, NULL, NULL),
                   CL_SUCCESS);
}

static void flex_free(flex_out *f) {
  clReleaseMemObject(f->num);
  clReleaseMemObject(f->idx);
  free(f->dev_num);
  free(f->dev_idx);
}

/* The device's flex layout equals the expansion of the reference CSR of `bitmap`, every entry
 * written (no SENTINEL left). */
static void expect_layout_of(const nabla_shape *s, const uint8_t *bitmap, const flex_out *f, const char *what) {
  int32_t *row_ptr = malloc((f->rows + 1) * sizeof *row_ptr), *col_idx = malloc(f->rows * f->nb * sizeof *col_idx);
  assert_non_null(row_ptr);
  assert_non_null(col_idx);
  nabla_ref_csr(s, bitmap, row_ptr, col_idx);
  for (size_t r = 0; r < f->rows; r++) {
    int32_t n = row_ptr[r + 1] - row_ptr[r];
    if (f->dev_num[r] != n) fail_msg("%s: kv_num_blocks[%zu] = %d, the reference keeps %d", what, r, f->dev_num[r], n);
    for (size_t j = 0; j < f->nb; j++) {
      int32_t want = (int32_t)j < n ? col_idx[row_ptr[r] + j] : 0, got = f->dev_idx[r * f->nb + j];
      if (got != want) fail_msg("%s: kv_indices[%zu][%zu] = %d, want %d", what, r, j, got, want);
    }
  }
  free(row_ptr);
  free(col_idx);
}

/* One bitmap through nabla_mask_from_bitmap and nabla_mask_write_flex, compared with the
 * reference; nabla_mask_read_flex must give the same. */
static void check_bitmap(nabla_context *ctx, const nabla_shape *s, const uint8_t *bitmap, const char *what) {
  nabla_mask *mask = NULL;
  assert_int_equal(nabla_mask_from_bitmap(ctx, s, bitmap, &mask), NABLA_OK);
  flex_out f = flex_new(ctx, s);
  cl_event done = NULL;
  if (nabla_mask_write_flex(ctx, mask, f.num, f.idx, 0, NULL, &done) != NABLA_OK)
    fail_msg("%s: nabla_mask_write_flex: %s", what, nabla_last_error(ctx));
  assert_non_null(done);
  assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
  clReleaseEvent(done);
  flex_read(ctx, &f);
  expect_layout_of(s, bitmap, &f, what);
  int32_t *num = malloc(f.rows * sizeof *num), *idx = malloc(f.rows * f.nb * sizeof *idx);
  assert_int_equal(nabla_mask_read_flex(ctx, mask, num, f.rows, idx, f.rows * f.nb), NABLA_OK);
  assert_memory_equal(num, f.dev_num, f.rows * sizeof *num);
  assert_memory_equal(idx, f.dev_idx, f.rows * f.nb * sizeof *idx);
  free(num), free(idx);
  flex_free(&f);
  nabla_mask_release(mask);
}

/* Random densities and adversarial rows (empty, full, first or last block alone, alternating)
 * on a ragged video grid, batch 2 with several heads, a plain sequence with a short last block,
 * a single block, and rows longer than a work-group's stride. */
static void test_random_and_adversarial(void **state) {
  CTX_OR_SKIP(state);
  const nabla_shape shapes[] = {
      {1, 2, 300, 8, 3, 10, 10},  /* ragged 8x8 tiles at the grid's edges */
      {2, 3, 1024, 16, 4, 16, 16}, /* batch 2, 3 heads */
      {1, 1, 200, 16, 0, 0, 0},   /* plain sequence, 4 blocks, the last one short */
      {1, 1, 64, 8, 0, 0, 0},     /* one block */
      {1, 2, 4800, 8, 3, 40, 40}, /* 75 blocks per row: more than CSR_TPR columns per work-item */
  };
  uint64_t seed = 11;
  char what[128];
  for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
    const nabla_shape *s = &shapes[c];
    size_t nb = (size_t)nabla_shape_blocks(s), rows = (size_t)s->batch * s->heads * nb, cells = rows * nb;
    uint8_t *bitmap = malloc(cells);
    assert_non_null(bitmap);
    const double densities[] = {0.0, 0.05, 0.5, 0.95, 1.0};
    for (size_t d = 0; d < sizeof densities / sizeof *densities; d++) {
      for (size_t i = 0; i < cells; i++) bitmap[i] = tu_rand_uniform(&seed) < densities[d];
      snprintf(what, sizeof what, "shape %zu, density %.2f", c, densities[d]);
      check_bitmap(ctx, s, bitmap, what);
    }
    /* Row r: by r % 5 empty, full, the first block alone, the last block alone, every other. */
    for (size_t r = 0; r < rows; r++)
      for (size_t j = 0; j < nb; j++) {
        uint8_t *b = &bitmap[r * nb + j];
        switch (r % 5) {
          case 0: *b = 0; break;
          case 1: *b = 1; break;
          case 2: *b = j == 0; break;
          case 3: *b = j == nb - 1; break;
          default: *b = (j + r) % 2; break;
        }
      }
    snprintf(what, sizeof what, "shape %zu, adversarial rows", c);
    check_bitmap(ctx, s, bitmap, what);
    free(bitmap);
  }
}

/* Masks from the build (NABLA, STA, both, dense): the flex layout equals the CSR read back, and
 * for STA and dense, whose masks are exact, the float64 reference's mask. */
static void test_built_masks(void **state) {
  CTX_OR_SKIP(state);
  const nabla_shape s = {2, 2, 1200, 16, 3, 20, 20};
  const char *algos[] = {"nabla-0.5", "sta-3-3-3", "nabla-0.3_sta-1-3-3", "dense"};
  size_t n = (size_t)s.batch * s.heads * s.seq * s.head_dim;
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k);
  uint64_t seed = 21;
  tu_fill_normal(q, n, &seed, 2.0);
  tu_fill_normal(k, n, &seed, 2.0);
  cl_mem dq = tu_buffer_from(ctx, q, n, NABLA_F32), dk = tu_buffer_from(ctx, k, n, NABLA_F32);
  for (size_t a = 0; a < sizeof algos / sizeof *algos; a++) {
    nabla_algo algo;
    char err[128];
    assert_int_equal(nabla_algo_parse(algos[a], &algo, err, sizeof err), NABLA_OK);
    nabla_mask *mask = NULL;
    assert_int_equal(nabla_mask_build(ctx, &algo, &s, NABLA_F32, dq, dk, &mask, 0, NULL, NULL), NABLA_OK);
    flex_out f = flex_new(ctx, &s);
    /* No event, no wait: queue order alone puts the expansion after the build. */
    assert_int_equal(nabla_mask_write_flex(ctx, mask, f.num, f.idx, 0, NULL, NULL), NABLA_OK);
    flex_read(ctx, &f);
    size_t cells = f.rows * f.nb;
    uint8_t *bitmap = malloc(cells);
    assert_int_equal(nabla_mask_read_bitmap(ctx, mask, bitmap, cells), NABLA_OK);
    expect_layout_of(&s, bitmap, &f, algos[a]);
    /* The CSR read back, directly. */
    int32_t *row_ptr = malloc((f.rows + 1) * sizeof *row_ptr), *col_idx = malloc(cells * sizeof *col_idx);
    assert_int_equal(nabla_mask_read_csr(ctx, mask, row_ptr, f.rows + 1, col_idx, cells), NABLA_OK);
    for (size_t r = 0; r < f.rows; r++) {
      assert_int_equal(f.dev_num[r], row_ptr[r + 1] - row_ptr[r]);
      assert_memory_equal(f.dev_idx + r * f.nb, col_idx + row_ptr[r], (size_t)f.dev_num[r] * sizeof(int32_t));
    }
    if (!algo.nabla) {
      uint8_t *ref = malloc(cells);
      assert_int_equal(nabla_ref_mask(&s, &algo, NULL, NULL, ref, NULL, 0.0), NABLA_OK);
      expect_layout_of(&s, ref, &f, algos[a]);
      free(ref);
    }
    free(bitmap), free(row_ptr), free(col_idx);
    flex_free(&f);
    nabla_mask_release(mask);
  }
  clReleaseMemObject(dq), clReleaseMemObject(dk);
  free(q), free(k);
}

/* The wait list holds the kernel back; `done` completes after it; profiling names the stage. */
static void test_wait_list_event_and_profile(void **state) {
  CTX_OR_SKIP(state);
  const nabla_shape s = {1, 2, 640, 8, 1, 8, 80};
  size_t nb = (size_t)nabla_shape_blocks(&s), rows = 2 * nb, cells = rows * nb;
  uint8_t *bitmap = malloc(cells);
  uint64_t seed = 3;
  for (size_t i = 0; i < cells; i++) bitmap[i] = tu_rand_uniform(&seed) < 0.4;
  nabla_mask *mask = NULL;
  assert_int_equal(nabla_mask_from_bitmap(ctx, &s, bitmap, &mask), NABLA_OK);
  flex_out f = flex_new(ctx, &s);
  cl_int rc = CL_SUCCESS;
  cl_event gate = clCreateUserEvent(nabla_context_cl_context(ctx), &rc), done = NULL;
  assert_int_equal(rc, CL_SUCCESS);
  assert_int_equal(nabla_profile_enable(ctx, 1), NABLA_OK);
  assert_int_equal(nabla_mask_write_flex(ctx, mask, f.num, f.idx, 1, &gate, &done), NABLA_OK);
  assert_int_equal(clFlush(nabla_context_queue(ctx)), CL_SUCCESS);
  cl_int status = CL_COMPLETE;
  assert_int_equal(clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL), CL_SUCCESS);
  assert_true(status > CL_COMPLETE); /* queued or submitted, not run: the gate is closed */
  assert_int_equal(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
  assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
  char report[512];
  assert_int_equal(nabla_profile_report(ctx, report, sizeof report), NABLA_OK);
  if (!strstr(report, "flex ")) fail_msg("the profile does not name the flex stage: %s", report);
  assert_int_equal(nabla_profile_enable(ctx, 0), NABLA_OK);
  flex_read(ctx, &f);
  expect_layout_of(&s, bitmap, &f, "after a wait list");
  clReleaseEvent(done), clReleaseEvent(gate);
  flex_free(&f);
  nabla_mask_release(mask);
  free(bitmap);
}

/* Every refusal: its status, a message naming the problem, `done` untouched and nothing
 * written to the outputs. */
static void test_argument_errors(void **state) {
  CTX_OR_SKIP(state);
  const nabla_shape s = {1, 2, 640, 8, 1, 8, 80};
  size_t nb = (size_t)nabla_shape_blocks(&s), rows = 2 * nb, cells = rows * nb;
  uint8_t *bitmap = calloc(cells, 1);
  for (size_t r = 0; r < rows; r++) bitmap[r * nb + r % nb] = 1;
  nabla_mask *mask = NULL;
  assert_int_equal(nabla_mask_from_bitmap(ctx, &s, bitmap, &mask), NABLA_OK);
  flex_out f = flex_new(ctx, &s);
  cl_context clc = nabla_context_cl_context(ctx);
  cl_int rc = CL_SUCCESS;
  cl_mem small_num = clCreateBuffer(clc, CL_MEM_READ_WRITE, rows * 4 - 1, NULL, &rc);
  cl_mem small_idx = clCreateBuffer(clc, CL_MEM_READ_WRITE, cells * 4 - 4, NULL, &rc);
  cl_mem ro_idx = clCreateBuffer(clc, CL_MEM_READ_ONLY, cells * 4, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  /* One buffer holding both outputs, once overlapping and once apart (sub-buffer offsets follow
   * the device's base address alignment). */
  cl_uint align_bits = 0;
  assert_int_equal(clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits,
                                   &align_bits, NULL), CL_SUCCESS);
  size_t align = align_bits / 8, num_span = (rows * 4 + align - 1) / align * align;
  cl_mem both = clCreateBuffer(clc, CL_MEM_READ_WRITE, num_span + cells * 4, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_buffer_region r_num = {0, rows * 4}, r_idx = {num_span, cells * 4}, r_over = {0, cells * 4};
  cl_mem sub_num = clCreateSubBuffer(both, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r_num, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem sub_idx = clCreateSubBuffer(both, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r_idx, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem sub_over = clCreateSubBuffer(both, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r_over, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  /* Another context: its buffers and its masks are foreign here. */
  nabla_context *other = tu_context();
  assert_non_null(other);
  cl_mem foreign = clCreateBuffer(nabla_context_cl_context(other), CL_MEM_READ_WRITE, cells * 4, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  nabla_mask *foreign_mask = NULL;
  assert_int_equal(nabla_mask_from_bitmap(other, &s, bitmap, &foreign_mask), NABLA_OK);
  cl_mem own_ptr = NULL, own_idx = NULL;
  assert_int_equal(nabla_mask_buffers(mask, &own_ptr, &own_idx), NABLA_OK);
  cl_event null_event = NULL;

  struct {
    const nabla_mask *mask;
    cl_mem num, idx;
    cl_uint num_wait;
    const cl_event *wait;
    nabla_status want;
    const char *says;
  } cases[] = {
      {NULL, f.num, f.idx, 0, NULL, NABLA_INVALID_ARGUMENT, "mask is NULL"},
      {foreign_mask, f.num, f.idx, 0, NULL, NABLA_INVALID_ARGUMENT, "another cl_context"},
      {mask, NULL, f.idx, 0, NULL, NABLA_INVALID_ARGUMENT, "kv_num_blocks is NULL"},
      {mask, f.num, NULL, 0, NULL, NABLA_INVALID_ARGUMENT, "kv_indices is NULL"},
      {mask, small_num, f.idx, 0, NULL, NABLA_BUFFER_TOO_SMALL, "kv_num_blocks holds"},
      {mask, f.num, small_idx, 0, NULL, NABLA_BUFFER_TOO_SMALL, "kv_indices holds"},
      {mask, f.num, foreign, 0, NULL, NABLA_INVALID_ARGUMENT, "kv_indices belongs to another cl_context"},
      {mask, f.num, ro_idx, 0, NULL, NABLA_INVALID_ARGUMENT, "kv_indices was created CL_MEM_READ_ONLY"},
      {mask, f.idx, f.idx, 0, NULL, NABLA_INVALID_ARGUMENT, "overlap"},
      {mask, sub_num, sub_over, 0, NULL, NABLA_INVALID_ARGUMENT, "overlap"},
      {mask, f.num, own_idx, 0, NULL, NABLA_INVALID_ARGUMENT, "kv_indices is one of the mask's own buffers"},
      {mask, own_ptr, f.idx, 0, NULL, NABLA_INVALID_ARGUMENT, "kv_num_blocks is one of the mask's own buffers"},
      {mask, f.num, f.idx, 1, NULL, NABLA_INVALID_ARGUMENT, "wait list"},
      {mask, f.num, f.idx, 1, &null_event, NABLA_INVALID_ARGUMENT, "wait[0] is NULL"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    cl_event done = NULL;
    nabla_status st = nabla_mask_write_flex(ctx, cases[c].mask, cases[c].num, cases[c].idx, cases[c].num_wait,
                                            cases[c].wait, &done);
    if (st != cases[c].want)
      fail_msg("case %zu: status %d, want %d (%s)", c, (int)st, (int)cases[c].want, nabla_last_error(ctx));
    if (!strstr(nabla_last_error(ctx), cases[c].says))
      fail_msg("case %zu: the message \"%s\" does not say \"%s\"", c, nabla_last_error(ctx), cases[c].says);
    assert_null(done);
  }
  assert_int_equal(nabla_mask_write_flex(NULL, mask, f.num, f.idx, 0, NULL, NULL), NABLA_INVALID_ARGUMENT);
  /* Nothing was enqueued: the outputs still hold the sentinel. */
  flex_read(ctx, &f);
  for (size_t i = 0; i < rows; i++) assert_int_equal(f.dev_num[i], SENTINEL);
  for (size_t i = 0; i < cells; i++) assert_int_equal(f.dev_idx[i], SENTINEL);
  /* Apart in one buffer is fine. */
  assert_int_equal(nabla_mask_write_flex(ctx, mask, sub_num, sub_idx, 0, NULL, NULL), NABLA_OK);
  clReleaseMemObject(f.num), clReleaseMemObject(f.idx);
  f.num = sub_num, f.idx = sub_idx;
  flex_read(ctx, &f);
  expect_layout_of(&s, bitmap, &f, "sub-buffers of one buffer");
  flex_free(&f);
  clReleaseMemObject(sub_over), clReleaseMemObject(both);
  clReleaseMemObject(small_num), clReleaseMemObject(small_idx), clReleaseMemObject(ro_idx), clReleaseMemObject(foreign);
  nabla_mask_release(foreign_mask);
  nabla_mask_release(mask);
  nabla_context_destroy(other);
  free(bitmap);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_and_adversarial),
      cmocka_unit_test(test_built_masks),
      cmocka_unit_test(test_wait_list_event_and_profile),
      cmocka_unit_test(test_argument_errors),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
