/* Host fp32 <-> fp16 / bf16 conversions against known bit patterns (host only). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "testutil.h"

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static uint32_t to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

#define EXPECT_F16(x, bits) assert_int_equal(nabla_f32_to_f16(x), (bits))
#define EXPECT_BF16(x, bits) assert_int_equal(nabla_f32_to_bf16(x), (bits))

static void test_f16_known(void **state) {
  (void)state;
  EXPECT_F16(0.0f, 0x0000);
  EXPECT_F16(-0.0f, 0x8000);
  EXPECT_F16(1.0f, 0x3c00);
  EXPECT_F16(-2.0f, 0xc000);
  EXPECT_F16(0.5f, 0x3800);
  EXPECT_F16(65504.0f, 0x7bff);
  EXPECT_F16(65519.99f, 0x7bff);    /* below the midpoint to infinity */
  EXPECT_F16(65520.0f, 0x7c00);     /* midpoint 65504..65536 ties to even: infinity */
  EXPECT_F16(-65520.0f, 0xfc00);
  EXPECT_F16(1e6f, 0x7c00);
  EXPECT_F16(INFINITY, 0x7c00);
  EXPECT_F16(-INFINITY, 0xfc00);
  EXPECT_F16(0x1p-14f, 0x0400);     /* smallest normal */
  EXPECT_F16(0x1p-24f, 0x0001);     /* smallest subnormal */
  EXPECT_F16(-0x1p-24f, 0x8001);
  EXPECT_F16(0x1p-25f, 0x0000);     /* half of it ties to even: zero */
  EXPECT_F16(0x1.000002p-25f, 0x0001);  /* just above the midpoint */
  EXPECT_F16(0x1.8p-24f, 0x0002);   /* 1.5 ulp ties to even: 2 */
  EXPECT_F16(0x1.4p-23f, 0x0002);   /* 2.5 ulp ties to even: 2 */
  EXPECT_F16(0x1.ffcp-15f, 0x0400); /* 1023.5 ulp ties to even: the smallest normal */
  EXPECT_F16(0x1.ff8p-15f, 0x03ff); /* largest subnormal */
  EXPECT_F16(1e-8f, 0x0000);
  EXPECT_F16(1e-7f, 0x0002);        /* 1e-7 / 2^-24 = 1.68 */
  EXPECT_F16(from_bits(0x00000001u), 0x0000);  /* f32 subnormal */
  /* ties in the normal range: 1 + 2^-11 -> 1.0 (even); 1 + 3*2^-11 -> 1 + 2^-9 (even) */
  EXPECT_F16(1.0f + 0x1p-11f, 0x3c00);
  EXPECT_F16(1.0f + 3 * 0x1p-11f, 0x3c02);
  EXPECT_F16(1.0f + 0x1p-11f + 0x1p-23f, 0x3c01);
  EXPECT_F16(2047.0f, 0x67ff);
  EXPECT_F16(2049.0f, 0x6800);      /* tie: 2048 (even) */
  EXPECT_F16(2051.0f, 0x6802);      /* tie: 2052 (even) */
  EXPECT_F16(0.1f, 0x2e66);
  EXPECT_F16(3.14159265f, 0x4248);

  /* NaN stays NaN, quiet, sign kept */
  uint16_t n = nabla_f32_to_f16(NAN);
  assert_int_equal(n & 0x7c00, 0x7c00);
  assert_int_not_equal(n & 0x03ff, 0);
  assert_int_equal(n & 0x0200, 0x0200);
  uint16_t sn = nabla_f32_to_f16(from_bits(0xff800001u));  /* signalling, payload in low bits */
  assert_int_equal(sn & 0xfe00, 0xfe00);
  assert_true(isnan(nabla_f16_to_f32(sn)));

  assert_true(nabla_f16_to_f32(0x3c00) == 1.0f);
  assert_true(nabla_f16_to_f32(0xc000) == -2.0f);
  assert_true(nabla_f16_to_f32(0x7bff) == 65504.0f);
  assert_true(nabla_f16_to_f32(0x0001) == 0x1p-24f);
  assert_true(nabla_f16_to_f32(0x03ff) == 0x1.ff8p-15f);
  assert_true(nabla_f16_to_f32(0x7c00) == INFINITY);
  assert_true(nabla_f16_to_f32(0xfc00) == -INFINITY);
  assert_int_equal(to_bits(nabla_f16_to_f32(0x8000)), 0x80000000u);
  assert_true(isnan(nabla_f16_to_f32(0x7e00)));
  assert_true(isnan(nabla_f16_to_f32(0x7c01)));
}

static void test_f16_exhaustive(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 0x10000u; h++) {
    float f = nabla_f16_to_f32((uint16_t)h);
    int is_nan = (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu);
    if (is_nan) {
      assert_true(isnan(f));
      uint16_t back = nabla_f32_to_f16(f);
      assert_int_equal(back, (uint16_t)(h | 0x0200u));  /* quieted, payload and sign kept */
      continue;
    }
    if (nabla_f32_to_f16(f) != h) fail_msg("f16 0x%04x -> %a -> 0x%04x", h, (double)f, nabla_f32_to_f16(f));
    /* The midpoint to the next magnitude up ties to the even neighbour. */
    if ((h & 0x7fffu) < 0x7bffu) {
      float next = nabla_f16_to_f32((uint16_t)(h + 1));
      float mid = (float)(((double)f + (double)next) / 2);  /* exact in f32 */
      uint16_t even = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
      if (nabla_f32_to_f16(mid) != even)
        fail_msg("midpoint %a of 0x%04x rounds to 0x%04x", (double)mid, h, nabla_f32_to_f16(mid));
    }
  }
}

static void test_f16_vs_double_rounding(void **state) {
  (void)state;
  /* Random floats across the f16 range: the result is a nearest f16 (checked in double). */
  uint64_t seed = 42;
  for (int i = 0; i < 200000; i++) {
    double mag = ldexp(tu_rand_uniform(&seed), (int)(tu_rand_u64(&seed) % 46) - 28);
    float x = (float)((tu_rand_u64(&seed) & 1) ? -mag : mag);
    uint16_t h = nabla_f32_to_f16(x);
    double got = nabla_f16_to_f32(h);
    if (isinf(got)) {
      assert_true(fabs((double)x) >= 65520.0);
      continue;
    }
    /* no f16 of the same sign is nearer to x */
    uint16_t lo = (uint16_t)(h & 0x7fffu), sign = (uint16_t)(h & 0x8000u);
    double err = fabs(got - (double)x);
    if (lo > 0) assert_true(err <= fabs((double)nabla_f16_to_f32((uint16_t)(sign | (lo - 1))) - (double)x));
    if (lo < 0x7bff) assert_true(err <= fabs((double)nabla_f16_to_f32((uint16_t)(sign | (lo + 1))) - (double)x));
  }
}

static void test_bf16_known(void **state) {
  (void)state;
  EXPECT_BF16(0.0f, 0x0000);
  EXPECT_BF16(-0.0f, 0x8000);
  EXPECT_BF16(1.0f, 0x3f80);
  EXPECT_BF16(-2.0f, 0xc000);
  EXPECT_BF16(3.0f, 0x4040);
  EXPECT_BF16(INFINITY, 0x7f80);
  EXPECT_BF16(-INFINITY, 0xff80);
  EXPECT_BF16(FLT_MAX, 0x7f80);          /* rounds past the largest bf16 */
  EXPECT_BF16(from_bits(0x7f7f7fffu), 0x7f7f);
  EXPECT_BF16(from_bits(0x7f7f8000u), 0x7f80);  /* tie to even: overflow to infinity */
  EXPECT_BF16(from_bits(0x3f808000u), 0x3f80);  /* 1 + 2^-8: tie, even is 1.0 */
  EXPECT_BF16(from_bits(0x3f818000u), 0x3f82);  /* 1 + 3*2^-8: tie, even is 1 + 2^-6 */
  EXPECT_BF16(from_bits(0x3f808001u), 0x3f81);  /* just above the tie */
  EXPECT_BF16(from_bits(0x3f807fffu), 0x3f80);  /* just below the tie */
  EXPECT_BF16(from_bits(0x00000001u), 0x0000);  /* tiny subnormal */
  EXPECT_BF16(from_bits(0x00018000u), 0x0002);  /* subnormal tie to even */
  EXPECT_BF16(0.1f, 0x3dcd);

  uint16_t n = nabla_f32_to_bf16(from_bits(0x7f800001u));  /* signalling NaN, low payload */
  assert_int_equal(n & 0x7f80, 0x7f80);
  assert_int_equal(n & 0x0040, 0x0040);
  uint16_t neg = nabla_f32_to_bf16(from_bits(0xffc00000u));
  assert_int_equal(neg, 0xffc0);
  assert_true(isnan(nabla_bf16_to_f32(n)));

  assert_true(nabla_bf16_to_f32(0x3f80) == 1.0f);
  assert_true(nabla_bf16_to_f32(0xc000) == -2.0f);
  assert_int_equal(to_bits(nabla_bf16_to_f32(0x1234)), 0x12340000u);
  for (uint32_t b = 0; b < 0x10000u; b++) {
    float f = nabla_bf16_to_f32((uint16_t)b);
    if (isnan(f)) continue;
    assert_int_equal(nabla_f32_to_bf16(f), b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_f16_known),
      cmocka_unit_test(test_f16_exhaustive),
      cmocka_unit_test(test_f16_vs_double_rounding),
      cmocka_unit_test(test_bf16_known),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
