/* The mask picture: geometry, every pixel of a known bitmap, bar lengths, argument errors
 * (host only). */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const uint8_t KEPT[3] = {31, 78, 161}, WHITE[3] = {255, 255, 255};
static const uint8_t BAR[3] = {230, 120, 30}, TRACK[3] = {225, 225, 225};

static const uint8_t *pixel(const uint8_t *rgb, int w, int x, int y) {
  return rgb + 3 * ((size_t)y * w + x);
}

static void expect_color(const uint8_t *px, const uint8_t *want, int x, int y) {
  if (memcmp(px, want, 3) != 0)
    fail_msg("pixel (%d, %d) is %d,%d,%d, want %d,%d,%d", x, y, px[0], px[1], px[2], want[0],
             want[1], want[2]);
}

/* Two heads of 10 blocks (a plain sequence of 640 tokens): head 1 draws row i with i kept
 * blocks, row 9 with all ten; every pixel is checked. */
static void test_pixels_and_bars(void **state) {
  (void)state;
  enum { NB = 10, CELL = 3 };
  nabla_shape s = {1, 2, NB * 64, 64, 0, 0, 0};
  uint8_t bits[2 * NB * NB];
  memset(bits, 0, sizeof bits);
  for (int i = 0; i < NB; i++)
    for (int j = 0; j < (i == NB - 1 ? NB : i); j++) bits[NB * NB + i * NB + (NB - 1 - j)] = 1;
  int w = 0, h = 0;
  assert_int_equal(nabla_mask_picture(&s, bits, 0, 1, CELL, NULL, 0, &w, &h, NULL, 0), NABLA_OK);
  const int grid = NB * CELL, gap = 6, bar = 32;
  assert_int_equal(h, grid);
  assert_int_equal(w, grid + gap + bar);
  uint8_t *rgb = malloc((size_t)w * h * 3);
  assert_non_null(rgb);
  assert_int_equal(nabla_mask_picture(&s, bits, 0, 1, CELL, rgb, (size_t)w * h * 3 - 1, &w, &h, NULL, 0),
                   NABLA_BUFFER_TOO_SMALL);
  assert_int_equal(nabla_mask_picture(&s, bits, 0, 1, CELL, rgb, (size_t)w * h * 3, &w, &h, NULL, 0), NABLA_OK);
  for (int y = 0; y < h; y++) {
    int row = y / CELL, kept = row == NB - 1 ? NB : row;
    int len = (kept * bar * 2 + NB) / (2 * NB);
    if (kept && !len) len = 1;
    for (int x = 0; x < w; x++) {
      const uint8_t *want;
      if (x < grid) want = bits[NB * NB + row * NB + x / CELL] ? KEPT : WHITE;
      else if (x < grid + gap) want = WHITE;
      else want = x - grid - gap < len ? BAR : TRACK;
      expect_color(pixel(rgb, w, x, y), want, x, y);
    }
  }
  /* Row 0 keeps nothing: no orange; row 9 keeps all: orange to the end. */
  expect_color(pixel(rgb, w, grid + gap, 0), TRACK, grid + gap, 0);
  expect_color(pixel(rgb, w, w - 1, grid - 1), BAR, w - 1, grid - 1);
  free(rgb);
}

/* Automatic cell size: 8 px for few blocks, 1 px for Wan's 1,050, the 16384 px limit. */
static void test_automatic_cell(void **state) {
  (void)state;
  int w = 0, h = 0;
  uint8_t one = 1;
  nabla_shape few = {1, 1, 64, 64, 0, 0, 0};
  assert_int_equal(nabla_mask_picture(&few, &one, 0, 0, 0, NULL, 0, &w, &h, NULL, 0), NABLA_OK);
  assert_int_equal(h, 8);
  assert_int_equal(w, 8 + 16 + 32);
  nabla_shape wan = {1, 40, 21 * 40 * 80, 128, 21, 40, 80};
  assert_int_equal(nabla_mask_picture(&wan, &one, 0, 0, 0, NULL, 0, &w, &h, NULL, 0), NABLA_OK);
  assert_int_equal(h, 1050);
  assert_int_equal(w, 1050 + 4 + 262);
  char err[256];
  assert_int_equal(nabla_mask_picture(&wan, &one, 0, 0, 16, NULL, 0, &w, &h, err, sizeof err),
                   NABLA_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "16384"));
}

static void expect_refused(const nabla_shape *s, const uint8_t *bits, int b, int hd, int cell,
                           const char *needle) {
  char err[256] = "";
  int w = 0, h = 0;
  assert_int_equal(nabla_mask_picture(s, bits, b, hd, cell, NULL, 0, &w, &h, err, sizeof err),
                   NABLA_INVALID_ARGUMENT);
  if (!strstr(err, needle)) fail_msg("message \"%s\" lacks \"%s\"", err, needle);
}

static void test_arguments(void **state) {
  (void)state;
  uint8_t bits[4] = {1, 0, 0, 1};
  nabla_shape s = {1, 1, 128, 64, 0, 0, 0};
  nabla_shape bad = {1, 1, 128, 12, 0, 0, 0};
  expect_refused(&s, NULL, 0, 0, 0, "NULL");
  expect_refused(&bad, bits, 0, 0, 0, "invalid shape");
  expect_refused(&s, bits, 1, 0, 0, "batch 1 is outside 0..0");
  expect_refused(&s, bits, 0, -1, 0, "head -1 is outside 0..0");
  expect_refused(&s, bits, 0, 0, 65, "cell 65");
  int w, h;
  assert_int_equal(nabla_mask_picture(&s, bits, 0, 0, 0, NULL, 0, NULL, &h, NULL, 0), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_mask_picture(&s, bits, 0, 0, 0, NULL, 0, &w, &h, NULL, 0), NABLA_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_pixels_and_bars),
    cmocka_unit_test(test_automatic_cell),
    cmocka_unit_test(test_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
