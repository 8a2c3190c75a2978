/* Shapes and storage types: validation, block counts and the tile-order block layout (docs/algorithm.md §0). */
#include <stdint.h>
#include <stdio.h>

#include "nablacl.h"

const char *nabla_dtype_name(nabla_dtype dtype) {
  switch (dtype) {
    case NABLA_F32: return "f32";
    case NABLA_F16: return "f16";
    case NABLA_BF16: return "bf16";
  }
  return "unknown";
}

size_t nabla_dtype_size(nabla_dtype dtype) {
  switch (dtype) {
    case NABLA_F32: return 4;
    case NABLA_F16:
    case NABLA_BF16: return 2;
  }
  return 0;
}

/* Largest element count of one [B,H,S,D] tensor: its fp32 byte size must fit size_t and int64. */
#define NABLA_MAX_BYTES ((uint64_t)(SIZE_MAX < INT64_MAX ? SIZE_MAX : INT64_MAX))

static int ceil_div(int a, int b) { return (int)(((int64_t)a + b - 1) / b); }

/* Blocks of a shape whose fields are already known to be sane (positive, grid consistent). */
static int64_t blocks_unchecked(const nabla_shape *s) {
  if (s->grid_t == 0) return ceil_div(s->seq, NABLA_BLOCK);
  return (int64_t)s->grid_t * ceil_div(s->grid_h, NABLA_TILE) * ceil_div(s->grid_w, NABLA_TILE);
}

/* a * b saturating at UINT64_MAX (operands are non-negative). */
static uint64_t mul_sat(uint64_t a, uint64_t b) {
  if (a != 0 && b > UINT64_MAX / a) return UINT64_MAX;
  return a * b;
}

#define SHAPE_FAIL(...)                                 \
  do {                                                  \
    if (err && err_len) snprintf(err, err_len, __VA_ARGS__); \
    return NABLA_INVALID_ARGUMENT;                      \
  } while (0)

nabla_status nabla_shape_check(const nabla_shape *s, char *err, size_t err_len) {
  if (err && err_len) err[0] = '\0';
  if (!s) SHAPE_FAIL("shape is NULL");
  if (s->batch < 1) SHAPE_FAIL("batch %d must be >= 1", s->batch);
  if (s->heads < 1) SHAPE_FAIL("heads %d must be >= 1", s->heads);
  if (s->seq < 1) SHAPE_FAIL("seq %d must be >= 1", s->seq);
  if (s->head_dim < 8 || s->head_dim > NABLA_MAX_HEAD_DIM)
    SHAPE_FAIL("head_dim %d must be in [8, %d]", s->head_dim, NABLA_MAX_HEAD_DIM);
  if (s->head_dim % 8 != 0) SHAPE_FAIL("head_dim %d is not a multiple of 8", s->head_dim);

  int plain = s->grid_t == 0 && s->grid_h == 0 && s->grid_w == 0;
  int video = s->grid_t >= 1 && s->grid_h >= 1 && s->grid_w >= 1;
  if (!plain && !video)
    SHAPE_FAIL("grid %dx%dx%d: give all three sizes >= 1 (video) or all 0 (plain sequence)",
               s->grid_t, s->grid_h, s->grid_w);
  if (video) {
    uint64_t tokens = mul_sat(mul_sat((uint64_t)s->grid_t, (uint64_t)s->grid_h), (uint64_t)s->grid_w);
    if (tokens != (uint64_t)s->seq)
      SHAPE_FAIL("grid %dx%dx%d = %llu tokens but seq is %d", s->grid_t, s->grid_h, s->grid_w,
                 (unsigned long long)tokens, s->seq);
  }

  uint64_t bh = (uint64_t)s->batch * (uint64_t)s->heads;  /* < 2^62 */
  uint64_t elems = mul_sat(mul_sat(bh, (uint64_t)s->seq), (uint64_t)s->head_dim);
  if (elems > NABLA_MAX_BYTES / 4)
    SHAPE_FAIL("batch*heads*seq*head_dim = %d*%d*%d*%d elements is too large to address",
               s->batch, s->heads, s->seq, s->head_dim);
  /* The CSR (row_ptr / col_idx) and the bitmap are indexed with int32. */
  uint64_t nb = (uint64_t)blocks_unchecked(s);
  uint64_t pairs = mul_sat(mul_sat(bh, nb), nb);
  if (pairs > INT32_MAX)
    SHAPE_FAIL("batch*heads*blocks^2 = %d*%d*%llu^2 block pairs exceed the int32 mask index range",
               s->batch, s->heads, (unsigned long long)nb);
  return NABLA_OK;
}

int nabla_shape_blocks(const nabla_shape *shape) {
  if (nabla_shape_check(shape, NULL, 0) != NABLA_OK) return 0;
  return (int)blocks_unchecked(shape);
}

nabla_status nabla_shape_block_starts(const nabla_shape *s, int32_t *block_start, size_t cap) {
  if (!block_start || nabla_shape_check(s, NULL, 0) != NABLA_OK) return NABLA_INVALID_ARGUMENT;
  int nb = (int)blocks_unchecked(s);
  if (cap < (size_t)nb + 1) return NABLA_BUFFER_TOO_SMALL;

  if (s->grid_t == 0) {
    for (int i = 0; i < nb; i++) block_start[i] = i * NABLA_BLOCK;
    block_start[nb] = s->seq;
    return NABLA_OK;
  }
  int hb_count = ceil_div(s->grid_h, NABLA_TILE), wb_count = ceil_div(s->grid_w, NABLA_TILE);
  int32_t pos = 0;
  int id = 0;
  for (int t = 0; t < s->grid_t; t++)
    for (int hb = 0; hb < hb_count; hb++) {
      int th = s->grid_h - NABLA_TILE * hb < NABLA_TILE ? s->grid_h - NABLA_TILE * hb : NABLA_TILE;
      for (int wb = 0; wb < wb_count; wb++) {
        int tw = s->grid_w - NABLA_TILE * wb < NABLA_TILE ? s->grid_w - NABLA_TILE * wb : NABLA_TILE;
        block_start[id++] = pos;
        pos += th * tw;
      }
    }
  block_start[nb] = pos;  /* == seq, checked by nabla_shape_check */
  return NABLA_OK;
}
