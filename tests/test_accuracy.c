/*
 * Accuracy of the attention kernels where rounding, not the algorithm, decides: rows dominated
 * by one key, the case where a kernel that rounds P to the storage type for its P.V product but
 * normalizes by the sum of unrounded P moves the output by up to a storage ulp. Every variant
 * that runs here (the tensor-core kernels emulated on any device, for real on NVIDIA) must
 * return the dominant key's value itself.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "testutil.h"

enum { D = 64, S = 128, NB = 2 };

/* The scaled logit (log2 units, as the kernels' online softmax sees it) of the dominant key over
 * the first block's maximum: 2^d lies just under half a storage ulp above a power of two (2^10),
 * so rounding it to the storage type is off by nearly half an ulp, and it stays under the lazy
 * rescale threshold (12), so a kernel with lazy maxima keeps the first block's reference. */
static double dominant_logit(nabla_dtype dtype) {
  const int bits = dtype == NABLA_F16 ? 10 : 7; /* stored fraction bits */
  return 10.0 + log2(1.0 + 0.95 * ldexp(1.0, -bits - 1));
}

/* Q: every row all ones. K: key 0 (block 0) zeros (logit 0), key 64 (block 1) with components
 * summing to the dominant logit, every other key at logit -512 / sqrt(D) x log2(e) (weight ~2^-92).
 * V: keys 0 and 64 share one vector; the rest is noise that must not show. */
static void dominant_inputs(nabla_dtype dtype, double *q, double *k, double *v, double *u) {
  uint64_t seed = 17;
  const double scale_log2 = 1.4426950408889634 / sqrt((double)D);
  for (int i = 0; i < S * D; i++) q[i] = 1.0, k[i] = -8.0;
  tu_fill_normal(v, (size_t)S * D, &seed, 1.0);
  for (int c = 0; c < D; c++) k[c] = 0.0;
  double remaining = dominant_logit(dtype) / scale_log2;
  for (int c = 0; c < D; c++) { /* the raw dot product, exact in the storage type and in fp32 */
    double part = remaining;
    tu_quantize(&part, 1, dtype);
    k[64 * D + c] = c < 4 ? part : 0.0;
    if (c < 4) remaining -= part;
  }
  for (int c = 0; c < D; c++) u[c] = (c & 1 ? -1.0 : 1.0) * (1.96875 - 0.0625 * (c % 5));
  memcpy(&v[0], u, sizeof(double) * D);
  memcpy(&v[64 * D], u, sizeof(double) * D);
}

/* Runs the dominant-key case on `variant` (skipped quietly where it cannot run) and checks that
 * every output row equals the shared value vector to within a tiny fraction of an ulp. */
static void check_variant(nabla_context *ctx, const char *variant, nabla_dtype dtype) {
  if (!nabla_variant_supported(ctx, variant)) return;
  assert_int_equal(nabla_variant_force(ctx, variant), NABLA_OK);
  const nabla_shape s = {1, 1, S, D, 0, 0, 0};
  double *q = malloc(sizeof(double) * S * D), *k = malloc(sizeof(double) * S * D);
  double *v = malloc(sizeof(double) * S * D), u[D];
  uint8_t bitmap[NB * NB];
  assert_non_null(q), assert_non_null(k), assert_non_null(v);
  memset(bitmap, 1, sizeof bitmap);
  dominant_inputs(dtype, q, k, v, u);
  double err = tu_attend_inputs_vs_reference(ctx, &s, dtype, q, k, v, bitmap, 0);
  if (strcmp(nabla_variant_last(ctx), variant) != 0)
    fail_msg("ran %s, expected %s (%s)", nabla_variant_last(ctx), variant, nabla_variant_note(ctx));
  if (!(err <= 1e-5))
    fail_msg("%s %s: a row dominated by one key is off by %.3g (the dominant weight was rounded "
             "without its normalizer)", variant, nabla_dtype_name(dtype), err);
  free(q), free(k), free(v);
  assert_int_equal(nabla_variant_force(ctx, "auto"), NABLA_OK);
}

static void test_dominant_key(void **state) {
  nabla_context *ctx = *state;
  if (!ctx) skip();
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++) { /* every variant of the registry */
    check_variant(ctx, nabla_variant_name(id), NABLA_BF16);
    check_variant(ctx, nabla_variant_name(id), NABLA_F16);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_dominant_key)};
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
