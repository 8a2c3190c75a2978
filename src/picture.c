/*
 * The picture of a block mask: one (batch, head) of a host bitmap drawn as RGB pixels, with
 * each row's kept count as a bar beside it. Host only; the CLI writes it as PNG and the Python
 * package returns it as an array, so both show the same pixels.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nablacl.h"

static const uint8_t kept_rgb[3] = {31, 78, 161};     /* kept block */
static const uint8_t empty_rgb[3] = {255, 255, 255};  /* dropped block, gap */
static const uint8_t bar_rgb[3] = {230, 120, 30};     /* kept count */
static const uint8_t track_rgb[3] = {225, 225, 225};  /* the bar's full length (Nb blocks) */

static nabla_status fail(char *err, size_t err_len, const char *fmt, ...) {
  if (err && err_len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  return NABLA_INVALID_ARGUMENT;
}

static void put(uint8_t *rgb, int width, int x, int y, const uint8_t c[3]) {
  memcpy(rgb + 3 * ((size_t)y * (size_t)width + (size_t)x), c, 3);
}

/* The picture's geometry for nb blocks and a cell size (already resolved). */
static void geometry(int nb, int cell, int *grid_px, int *gap, int *bar, int *width) {
  *grid_px = nb * cell;
  *gap = 2 * cell > 4 ? 2 * cell : 4;
  *bar = *grid_px / 4 > 32 ? *grid_px / 4 : 32;
  *width = *grid_px + *gap + *bar;
}

nabla_status nabla_mask_picture(const nabla_shape *shape, const uint8_t *bitmap, int batch,
                                int head, int cell, uint8_t *rgb, size_t cap, int *width,
                                int *height, char *err, size_t err_len) {
  char why[256];
  if (err && err_len) err[0] = '\0';
  if (!shape || !bitmap || !width || !height)
    return fail(err, err_len, "shape, bitmap, width and height must not be NULL");
  if (nabla_shape_check(shape, why, sizeof why) != NABLA_OK)
    return fail(err, err_len, "invalid shape: %s", why);
  if (batch < 0 || batch >= shape->batch)
    return fail(err, err_len, "batch %d is outside 0..%d", batch, shape->batch - 1);
  if (head < 0 || head >= shape->heads)
    return fail(err, err_len, "head %d is outside 0..%d", head, shape->heads - 1);
  if (cell < 0 || cell > 64) return fail(err, err_len, "cell %d is outside 0..64 pixels", cell);
  const int nb = nabla_shape_blocks(shape);
  if (cell == 0) cell = 512 / nb > 8 ? 8 : (512 / nb < 1 ? 1 : 512 / nb);
  if ((long long)nb * cell > 16384)
    return fail(err, err_len, "%d blocks of %d pixels exceed 16384 pixels", nb, cell);
  int grid_px, gap, bar, w;
  geometry(nb, cell, &grid_px, &gap, &bar, &w);
  *width = w;
  *height = grid_px;
  if (!rgb) return NABLA_OK;
  if (cap < (size_t)w * (size_t)grid_px * 3) return NABLA_BUFFER_TOO_SMALL;

  const uint8_t *rows = bitmap + ((size_t)batch * shape->heads + (size_t)head) * (size_t)nb * nb;
  for (int i = 0; i < nb; i++) {
    const uint8_t *row = rows + (size_t)i * nb;
    int kept = 0;
    for (int j = 0; j < nb; j++) kept += row[j] != 0;
    /* Rounded to the nearest pixel; a row that keeps any block never shows an empty bar. */
    int len = (int)(((long long)kept * bar * 2 + nb) / (2LL * nb));
    if (kept > 0 && len == 0) len = 1;
    for (int y = i * cell; y < (i + 1) * cell; y++) {
      for (int j = 0; j < nb; j++)
        for (int x = j * cell; x < (j + 1) * cell; x++)
          put(rgb, w, x, y, row[j] ? kept_rgb : empty_rgb);
      for (int x = grid_px; x < grid_px + gap; x++) put(rgb, w, x, y, empty_rgb);
      for (int x = 0; x < bar; x++) put(rgb, w, grid_px + gap + x, y, x < len ? bar_rgb : track_rgb);
    }
  }
  return NABLA_OK;
}
