/*
 * Host conversions between fp32 and the 16-bit storage types, bit-exact and independent of any
 * compiler half type. Rounding is to nearest, ties to even; NaNs stay NaN (made quiet, sign and
 * leading payload bits kept).
 */
#include <stdint.h>
#include <string.h>

#include "nablacl.h"

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float f32_from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* mant >> shift rounded to nearest even (1 <= shift <= 31). */
static uint32_t shift_rne(uint32_t mant, unsigned shift) {
  uint32_t kept = mant >> shift;
  uint32_t rest = mant & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (kept & 1u))) kept++;
  return kept;
}

uint16_t nabla_f32_to_f16(float x) {
  uint32_t u = f32_bits(x);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t mag = u & 0x7fffffffu;
  if (mag >= 0x7f800000u) {
    if (mag == 0x7f800000u) return sign | 0x7c00u;
    return (uint16_t)(sign | 0x7e00u | ((mag >> 13) & 0x03ffu));  /* quiet NaN */
  }
  int exp = (int)(mag >> 23) - 127 + 15;  /* biased f16 exponent */
  if (exp >= 31) return sign | 0x7c00u;
  if (exp <= 0) {
    /* Subnormal result: value / 2^-24 = mant >> (14 - exp). A carry into 0x0400 gives the
     * smallest normal, which is right. */
    unsigned shift = (unsigned)(14 - exp);
    if (shift > 24) return sign;  /* below 2^-25: rounds to zero */
    uint32_t mant = (mag & 0x007fffffu) | 0x00800000u;
    return (uint16_t)(sign | shift_rne(mant, shift));
  }
  /* Normal: a carry out of the mantissa bumps the exponent (up to infinity), as it should. */
  uint32_t bits = ((uint32_t)exp << 10) | ((mag >> 13) & 0x03ffu);
  uint32_t rest = mag & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (bits & 1u))) bits++;
  return (uint16_t)(sign | bits);
}

float nabla_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x03ffu;
  if (exp == 0) {
    float v = (float)mant * 0x1p-24f;  /* exact: mant < 2^10 */
    return sign ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0u));
  return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t nabla_f32_to_bf16(float x) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);  /* quiet NaN */
  /* Adding 0x7fff plus the kept lsb rounds to nearest even; overflow carries into infinity. */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float nabla_bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }
