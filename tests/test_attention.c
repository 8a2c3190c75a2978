/* Device attention (sparse with a given mask, and dense) against the float64 reference, with the
 * kernel NABLACL_VARIANT names (CTest: portable, and cpu-rows) or else the automatic choice. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Device vs reference on random inputs and a random mask of `density` (dense when < 0). */
static void run_case_tol(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, double density,
                         double logit_scale, uint64_t seed, double tol) {
  double err = tu_attend_vs_reference(ctx, &s, dtype, density, logit_scale, seed);
  /* CTest runs this file once per kernel through NABLACL_VARIANT: no silent fallback. */
  const char *want = getenv("NABLACL_VARIANT");
  if (want && *want && strcmp(nabla_variant_last(ctx), want) != 0)
    fail_msg("NABLACL_VARIANT=%s but %s ran: %s", want, nabla_variant_last(ctx), nabla_variant_note(ctx));
  if (!(err <= tol))
    fail_msg("B%d H%d S%d D%d grid %dx%dx%d %s density %.2f: max abs error %.3g > %.3g", s.batch,
             s.heads, s.seq, s.head_dim, s.grid_t, s.grid_h, s.grid_w, nabla_dtype_name(dtype),
             density, err, tol);
}

static void run_case(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, double density,
                     double logit_scale, uint64_t seed) {
  run_case_tol(ctx, s, dtype, density, logit_scale, seed, tu_tolerance(dtype));
}

#define CTX_OR_SKIP(state) \
  nabla_context *ctx = *(state); \
  if (!ctx) skip()

static void test_sparse_head_dims_f32(void **state) {
  CTX_OR_SKIP(state);
  int dims[] = {32, 48, 64, 128};
  for (int i = 0; i < 4; i++) {
    nabla_shape s = {1, 2, 200, dims[i], 0, 0, 0}; /* plain sequence, ragged last block */
    run_case(ctx, s, NABLA_F32, 0.5, 1.0, 11 + i);
  }
}

static void test_sparse_ragged_grids_all_dtypes(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape grids[] = {{1, 2, 720, 64, 3, 12, 20}, {3, 1, 234, 32, 2, 9, 13}};
  nabla_dtype dts[] = {NABLA_F32, NABLA_F16, NABLA_BF16};
  for (int g = 0; g < 2; g++)
    for (int d = 0; d < 3; d++) run_case(ctx, grids[g], dts[d], 0.4, 1.0, 100 + g * 3 + d);
}

static void test_dense_matches_reference(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {2, 2, 300, 64, 3, 10, 10};
  run_case(ctx, s, NABLA_F32, -1.0, 1.0, 7);
  run_case(ctx, s, NABLA_BF16, -1.0, 1.0, 8);
  nabla_shape s2 = {1, 1, 256, 128, 0, 0, 0};
  run_case(ctx, s2, NABLA_F16, -1.0, 1.0, 9);
}

static void test_huge_logits(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape s = {1, 2, 192, 64, 0, 0, 0};
  /* Logits in the hundreds: exp must not overflow. fp32 rounding of a logit of magnitude ~300
   * is ~3e-5 relative, so the output tolerance grows with the logit scale (conditioning). */
  run_case_tol(ctx, s, NABLA_F32, 0.6, 40.0, 21, 4e-4);
  run_case_tol(ctx, s, NABLA_BF16, 0.6, 40.0, 22, 6e-2);
}

static void test_head_dim_256_and_8(void **state) {
  CTX_OR_SKIP(state);
  nabla_shape a = {1, 1, 130, 256, 0, 0, 0}, b = {1, 1, 130, 8, 0, 0, 0};
  run_case(ctx, a, NABLA_F32, 0.7, 1.0, 31);
  run_case(ctx, b, NABLA_F32, 0.7, 1.0, 32);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sparse_head_dims_f32),
      cmocka_unit_test(test_sparse_ragged_grids_all_dtypes),
      cmocka_unit_test(test_dense_matches_reference),
      cmocka_unit_test(test_huge_logits),
      cmocka_unit_test(test_head_dim_256_and_8),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
