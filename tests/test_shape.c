/* Shapes: validation messages, block counts and the tile-order block layout (host only). */
#include <limits.h>
#include <string.h>

#include "testutil.h"

static nabla_shape video(int t, int h, int w) {
  nabla_shape s = {1, 2, t * h * w, 64, t, h, w};
  return s;
}

static nabla_shape plain(int seq) {
  nabla_shape s = {1, 2, seq, 64, 0, 0, 0};
  return s;
}

static void expect_invalid(nabla_shape s, const char *needle) {
  char err[256];
  assert_int_equal(nabla_shape_check(&s, err, sizeof err), NABLA_INVALID_ARGUMENT);
  if (!strstr(err, needle)) fail_msg("message \"%s\" lacks \"%s\"", err, needle);
  assert_int_equal(nabla_shape_blocks(&s), 0);
  int32_t starts[8];
  assert_int_equal(nabla_shape_block_starts(&s, starts, 8), NABLA_INVALID_ARGUMENT);
}

static void expect_starts(nabla_shape s, const int32_t *want, int n) {
  int32_t got[64];
  assert_true(n <= 64);
  assert_int_equal(nabla_shape_check(&s, NULL, 0), NABLA_OK);
  assert_int_equal(nabla_shape_blocks(&s), n - 1);
  assert_int_equal(nabla_shape_block_starts(&s, got, (size_t)n), NABLA_OK);
  for (int i = 0; i < n; i++) {
    if (got[i] != want[i]) fail_msg("block_start[%d] = %d, want %d", i, got[i], want[i]);
  }
  assert_int_equal(nabla_shape_block_starts(&s, got, (size_t)n - 1), NABLA_BUFFER_TOO_SMALL);
  assert_int_equal(nabla_shape_block_starts(&s, NULL, (size_t)n), NABLA_INVALID_ARGUMENT);
}

static void test_dtypes(void **state) {
  (void)state;
  assert_string_equal(nabla_dtype_name(NABLA_F32), "f32");
  assert_string_equal(nabla_dtype_name(NABLA_F16), "f16");
  assert_string_equal(nabla_dtype_name(NABLA_BF16), "bf16");
  assert_int_equal(nabla_dtype_size(NABLA_F32), 4);
  assert_int_equal(nabla_dtype_size(NABLA_F16), 2);
  assert_int_equal(nabla_dtype_size(NABLA_BF16), 2);
  assert_int_equal(nabla_dtype_size((nabla_dtype)7), 0);
  assert_string_equal(nabla_dtype_name((nabla_dtype)7), "unknown");
}

static void test_valid(void **state) {
  (void)state;
  char err[256] = "junk";
  nabla_shape wan = {1, 40, 75600, 128, 21, 45, 80};
  assert_int_equal(nabla_shape_check(&wan, err, sizeof err), NABLA_OK);
  assert_string_equal(err, "");
  assert_int_equal(nabla_shape_blocks(&wan), 1260);
  nabla_shape wan_crop = {2, 40, 67200, 128, 21, 40, 80};
  assert_int_equal(nabla_shape_blocks(&wan_crop), 1050);
  nabla_shape small = {1, 12, 24192, 128, 21, 24, 48};
  assert_int_equal(nabla_shape_blocks(&small), 378);
  nabla_shape one = {1, 1, 1, 8, 0, 0, 0};
  assert_int_equal(nabla_shape_blocks(&one), 1);
  nabla_shape d256 = {1, 1, 64, 256, 1, 8, 8};
  assert_int_equal(nabla_shape_blocks(&d256), 1);
  assert_int_equal(nabla_shape_blocks(NULL), 0);
  /* err may be NULL or empty */
  assert_int_equal(nabla_shape_check(&wan, NULL, 0), NABLA_OK);
  assert_int_equal(nabla_shape_check(&wan, err, 0), NABLA_OK);
}

static void test_invalid(void **state) {
  (void)state;
  nabla_shape s = plain(128);
  s.batch = 0;
  expect_invalid(s, "batch 0");
  s = plain(128);
  s.heads = -3;
  expect_invalid(s, "heads -3");
  s = plain(0);
  expect_invalid(s, "seq 0");
  s = plain(128);
  s.head_dim = 20;
  expect_invalid(s, "head_dim 20 is not a multiple of 8");
  s.head_dim = 0;
  expect_invalid(s, "head_dim 0");
  s.head_dim = 264;
  expect_invalid(s, "head_dim 264");
  s.head_dim = 4;
  expect_invalid(s, "head_dim 4");
  s = video(3, 12, 20);
  s.seq = 700;
  expect_invalid(s, "grid 3x12x20 = 720 tokens but seq is 700");
  s = video(3, 12, 20);
  s.grid_t = 0;
  expect_invalid(s, "grid 0x12x20");
  s = video(3, 12, 20);
  s.grid_w = -20;
  expect_invalid(s, "grid 3x12x-20");
  /* grid product overflowing int32 must not wrap around to seq */
  s = video(1, 1, 1);
  s.grid_t = 65536;
  s.grid_h = 65536;
  s.grid_w = 1;
  s.seq = 1;
  expect_invalid(s, "= 4294967296 tokens but seq is 1");
  /* element count too large to address */
  s = plain(INT_MAX);
  s.batch = INT_MAX;
  s.heads = INT_MAX;
  s.head_dim = 256;
  expect_invalid(s, "too large");
  /* block pairs beyond the int32 CSR range */
  s = plain(64 * 8000);
  s.heads = 40;
  expect_invalid(s, "int32");

  char err[64];
  assert_int_equal(nabla_shape_check(NULL, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "NULL"));
  /* a short buffer truncates, never overflows */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  s = plain(128);
  s.head_dim = 20;
  assert_int_equal(nabla_shape_check(&s, tiny, 5), NABLA_INVALID_ARGUMENT);
  assert_int_equal(strlen(tiny), 4);
  assert_int_equal(tiny[5], 'x');
}

static void test_block_starts(void **state) {
  (void)state;
  /* 3x12x20: tiles per frame 64 64 32 | 32 32 16 (240 tokens) */
  static const int32_t g3x12x20[] = {0,   64,  128, 160, 192, 224, 240, 304, 368, 400,
                                     432, 464, 480, 544, 608, 640, 672, 704, 720};
  expect_starts(video(3, 12, 20), g3x12x20, 19);
  /* 2x9x13: 64 40 | 8 5 (117 tokens) */
  static const int32_t g2x9x13[] = {0, 64, 104, 112, 117, 181, 221, 229, 234};
  expect_starts(video(2, 9, 13), g2x9x13, 9);
  /* 16x16: all full tiles */
  static const int32_t g16x16[] = {0, 64, 128, 192, 256};
  expect_starts(video(1, 16, 16), g16x16, 5);
  static const int32_t p130[] = {0, 64, 128, 130};
  expect_starts(plain(130), p130, 4);
  static const int32_t p64[] = {0, 64};
  expect_starts(plain(64), p64, 2);
  static const int32_t g1x1x1[] = {0, 1};
  expect_starts(video(1, 1, 1), g1x1x1, 2);
}

static void test_wan_layout(void **state) {
  (void)state;
  nabla_shape wan = {1, 40, 75600, 128, 21, 45, 80};
  int nb = nabla_shape_blocks(&wan);
  assert_int_equal(nb, 1260);
  int32_t *starts = malloc(sizeof(int32_t) * (size_t)(nb + 1));
  assert_non_null(starts);
  assert_int_equal(nabla_shape_block_starts(&wan, starts, (size_t)nb + 1), NABLA_OK);
  assert_int_equal(starts[nb], 75600);
  /* Hb = 6, Wb = 10: tile rows 0..4 hold 64-token tiles, row 5 holds 5x8 = 40-token tiles */
  for (int i = 0; i < nb; i++) {
    int hb = i / 10 % 6;
    assert_int_equal(starts[i + 1] - starts[i], hb == 5 ? 40 : 64);
  }
  free(starts);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dtypes),      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_valid),       cmocka_unit_test(test_block_starts),
      cmocka_unit_test(test_wan_layout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
