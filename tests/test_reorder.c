/* Device raster <-> tile reorder (src/reorder.c, cl/reorder.cl) against the float64 reference. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define CTX_OR_SKIP(state) \
  nabla_context *ctx = *(state); \
  if (!ctx) skip()

static const nabla_dtype kDtypes[] = {NABLA_F32, NABLA_F16, NABLA_BF16};

static size_t elems(const nabla_shape *s) {
  return (size_t)s->batch * s->heads * s->seq * s->head_dim;
}

static void *read_bytes(nabla_context *ctx, cl_mem buf, size_t bytes) {
  void *host = malloc(bytes);
  assert_non_null(host);
  assert_int_equal(clEnqueueReadBuffer(nabla_context_queue(ctx), buf, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                   CL_SUCCESS);
  return host;
}

static cl_mem empty_buffer(nabla_context *ctx, size_t bytes) {
  cl_int rc = CL_SUCCESS;
  cl_mem b = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  /* Poison: a position the kernel forgets shows up as a mismatch. */
  unsigned char pattern = 0xA5;
  assert_int_equal(clEnqueueFillBuffer(nabla_context_queue(ctx), b, &pattern, 1, 0, bytes, 0, NULL, NULL),
                   CL_SUCCESS);
  return b;
}

static void reorder_ok(nabla_context *ctx, const nabla_shape *s, nabla_dtype dtype, nabla_reorder_dir dir,
                       cl_mem src, cl_mem dst) {
  cl_event done = NULL;
  nabla_status st = nabla_reorder(ctx, s, dtype, dir, src, dst, 0, NULL, &done);
  if (st != NABLA_OK) fail_msg("nabla_reorder: %s", nabla_last_error(ctx));
  assert_non_null(done);
  assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
  clReleaseEvent(done);
}

/* Both directions against the reference, bit-exact, and the round trip back to the input. */
static void check_shape(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, uint64_t seed) {
  size_t n = elems(&s), bytes = n * nabla_dtype_size(dtype);
  double *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref);
  assert_non_null(x);
  assert_non_null(ref);
  tu_fill_normal(x, n, &seed, 1.0);
  tu_quantize(x, n, dtype);
  void *x_bits = tu_pack(x, n, dtype);

  cl_mem src = tu_buffer_from(ctx, x, n, dtype), tile = empty_buffer(ctx, bytes), back = empty_buffer(ctx, bytes);
  reorder_ok(ctx, &s, dtype, NABLA_RASTER_TO_TILE, src, tile);
  nabla_ref_reorder(&s, NABLA_RASTER_TO_TILE, x, ref);
  void *ref_bits = tu_pack(ref, n, dtype), *got = read_bytes(ctx, tile, bytes);
  if (memcmp(got, ref_bits, bytes) != 0)
    fail_msg("raster->tile %s B%d H%d grid %dx%dx%d D%d differs from the reference", nabla_dtype_name(dtype),
             s.batch, s.heads, s.grid_t, s.grid_h, s.grid_w, s.head_dim);
  free(got);
  free(ref_bits);

  /* Round trip is the identity, bit for bit. */
  reorder_ok(ctx, &s, dtype, NABLA_TILE_TO_RASTER, tile, back);
  got = read_bytes(ctx, back, bytes);
  if (memcmp(got, x_bits, bytes) != 0)
    fail_msg("round trip %s grid %dx%dx%d is not the identity", nabla_dtype_name(dtype), s.grid_t, s.grid_h,
             s.grid_w);
  free(got);

  /* tile->raster on its own input (x read as tile order) against the reference too. */
  reorder_ok(ctx, &s, dtype, NABLA_TILE_TO_RASTER, src, back);
  nabla_ref_reorder(&s, NABLA_TILE_TO_RASTER, x, ref);
  ref_bits = tu_pack(ref, n, dtype);
  got = read_bytes(ctx, back, bytes);
  if (memcmp(got, ref_bits, bytes) != 0)
    fail_msg("tile->raster %s grid %dx%dx%d differs from the reference", nabla_dtype_name(dtype), s.grid_t,
             s.grid_h, s.grid_w);
  free(got);
  free(ref_bits);

  clReleaseMemObject(src);
  clReleaseMemObject(tile);
  clReleaseMemObject(back);
  free(x_bits);
  free(x);
  free(ref);
}

static void test_ragged_grids_all_dtypes(void **state) {
  CTX_OR_SKIP(state);
  const nabla_shape shapes[] = {
      {2, 2, 3 * 12 * 20, 16, 3, 12, 20},
      {2, 3, 2 * 9 * 13, 8, 2, 9, 13},
      {2, 1, 1 * 7 * 5, 24, 1, 7, 5},
      {2, 2, 2 * 16 * 16, 8, 2, 16, 16}, /* multiples of 8: no ragged tile */
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (size_t d = 0; d < 3; d++) check_shape(ctx, shapes[i], kDtypes[d], 100 + 10 * i + d);
}

static void test_wan_grid_uncropped(void **state) {
  CTX_OR_SKIP(state);
  /* Wan 1280x720: 21x45x80, the ragged bottom tile row holds 5 token rows. */
  nabla_shape s = {2, 1, 21 * 45 * 80, 8, 21, 45, 80};
  for (size_t d = 0; d < 3; d++) check_shape(ctx, s, kDtypes[d], 200 + d);
}

static void test_tile_formula_full_tiles(void **state) {
  CTX_OR_SKIP(state);
  /* Multiples of 8: f = block*64 + 8*gh + gw exactly (docs/algorithm.md §0), checked without the reference.
   * Each token carries its raster index in every component. */
  nabla_shape s = {1, 1, 2 * 16 * 24, 8, 2, 16, 24};
  size_t n = elems(&s);
  double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
  for (size_t i = 0; i < n; i++) x[i] = (double)(i / 8);
  cl_mem src = tu_buffer_from(ctx, x, n, NABLA_F32), dst = empty_buffer(ctx, n * 4);
  reorder_ok(ctx, &s, NABLA_F32, NABLA_RASTER_TO_TILE, src, dst);
  tu_buffer_read(ctx, dst, n, NABLA_F32, y);
  int Hb = 2, Wb = 3;
  for (int t = 0; t < 2; t++)
    for (int h = 0; h < 16; h++)
      for (int w = 0; w < 24; w++) {
        int raster = (t * 16 + h) * 24 + w;
        int block = (t * Hb + h / 8) * Wb + w / 8;
        int f = block * 64 + 8 * (h % 8) + (w % 8);
        for (int d = 0; d < 8; d++) assert_true(y[(size_t)f * 8 + d] == (double)raster);
      }
  clReleaseMemObject(src);
  clReleaseMemObject(dst);
  free(x);
  free(y);
}

static void test_plain_sequence_is_copy(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {2, 3, 150, 16, 0, 0, 0};
  size_t n = elems(&s);
  double *x = malloc(n * sizeof *x);
  uint64_t seed = 77;
  tu_fill_normal(x, n, &seed, 1.0);
  for (size_t d = 0; d < 3; d++) {
    nabla_dtype dt = kDtypes[d];
    size_t bytes = n * nabla_dtype_size(dt);
    void *bits = tu_pack(x, n, dt);
    cl_mem src = tu_buffer_from(ctx, x, n, dt);
    for (int dir = 0; dir < 2; dir++) {
      cl_mem dst = empty_buffer(ctx, bytes);
      reorder_ok(ctx, &s, dt, (nabla_reorder_dir)dir, src, dst);
      void *got = read_bytes(ctx, dst, bytes);
      assert_memory_equal(got, bits, bytes);
      free(got);
      clReleaseMemObject(dst);
    }
    clReleaseMemObject(src);
    free(bits);
  }
  free(x);
}

static void test_wait_list_and_larger_buffers(void **state) {
  CTX_OR_SKIP(state);
  /* The op waits for a user event; buffers larger than needed are fine (only the prefix moves). */
  nabla_shape s = {1, 2, 2 * 9 * 13, 8, 2, 9, 13};
  size_t n = elems(&s), bytes = n * 4;
  double *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref);
  uint64_t seed = 5;
  tu_fill_normal(x, n, &seed, 1.0);
  tu_quantize(x, n, NABLA_F32);
  cl_int rc = CL_SUCCESS;
  cl_mem src = tu_buffer_from(ctx, x, n, NABLA_F32), dst = empty_buffer(ctx, bytes + 64);
  cl_event gate = clCreateUserEvent(nabla_context_cl_context(ctx), &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_event done = NULL;
  assert_int_equal(nabla_reorder(ctx, &s, NABLA_F32, NABLA_RASTER_TO_TILE, src, dst, 1, &gate, &done), NABLA_OK);
  assert_non_null(done);
  assert_int_equal(clFlush(nabla_context_queue(ctx)), CL_SUCCESS);
  assert_int_equal(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
  assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
  cl_int exec = -1;
  assert_int_equal(clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL), CL_SUCCESS);
  assert_int_equal(exec, CL_COMPLETE);
  nabla_ref_reorder(&s, NABLA_RASTER_TO_TILE, x, ref);
  unsigned char *got = read_bytes(ctx, dst, bytes + 64);
  float *ref_bits = tu_pack(ref, n, NABLA_F32);
  assert_memory_equal(got, ref_bits, bytes);
  for (size_t i = bytes; i < bytes + 64; i++) assert_int_equal(got[i], 0xA5); /* tail untouched */
  clReleaseEvent(done);
  clReleaseEvent(gate);
  clReleaseMemObject(src);
  clReleaseMemObject(dst);
  free(got), free(ref_bits), free(x), free(ref);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ragged_grids_all_dtypes),
      cmocka_unit_test(test_wan_grid_uncropped),
      cmocka_unit_test(test_tile_formula_full_tiles),
      cmocka_unit_test(test_plain_sequence_is_copy),
      cmocka_unit_test(test_wait_list_and_larger_buffers),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
