/*
 * Sparse-attention configuration strings (the reference's --sparse_algo) <-> nabla_algo.
 *
 *   text   := "" | "dense" | nabla | sta | nabla "_" sta
 *   nabla  := "nabla-" number        number: decimal, finite, in (0, 1]
 *   sta    := "sta-" int "-" int "-" int   each int >= 1
 *
 * Parsing is strict (no whitespace, no hex or inf) and independent of the C locale's decimal
 * point; formatting prints the shortest threshold that parses back to the same double.
 */
#include <ctype.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nablacl.h"

#define ALGO_SYNTAX \
  "expected dense, nabla-<thr>, sta-<wT>-<wH>-<wW> or nabla-<thr>_sta-<wT>-<wH>-<wW>"

#define ALGO_FAIL(...)                                            \
  do {                                                            \
    if (err && err_len) snprintf(err, err_len, __VA_ARGS__);      \
    return NABLA_INVALID_ARGUMENT;                                \
  } while (0)

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Decimal number: [+-] digits [. digits] [(e|E) [+-] digits], at least one mantissa digit. */
static int is_decimal(const char *s, size_t n) {
  size_t i = 0, digits = 0;
  if (i < n && (s[i] == '+' || s[i] == '-')) i++;
  for (; i < n && is_digit(s[i]); i++) digits++;
  if (i < n && s[i] == '.') {
    i++;
    for (; i < n && is_digit(s[i]); i++) digits++;
  }
  if (digits == 0) return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    size_t exp_digits = 0;
    for (; i < n && is_digit(s[i]); i++) exp_digits++;
    if (exp_digits == 0) return 0;
  }
  return i == n;
}

/* strtod of a validated decimal of n chars, with '.' replaced by the locale's decimal point. */
static double parse_decimal(const char *s, size_t n) {
  const char *point = localeconv()->decimal_point;
  size_t plen = point && point[0] ? strlen(point) : 1;
  char buf[128];
  size_t o = 0;
  for (size_t i = 0; i < n && o + plen + 1 < sizeof buf; i++) {
    if (s[i] == '.' && point && point[0]) {
      memcpy(buf + o, point, plen);
      o += plen;
    } else {
      buf[o++] = s[i];
    }
  }
  buf[o] = '\0';
  return strtod(buf, NULL);
}

/* Parses a window size: digits only, >= 1, fits an int. 0 ok, else a message in err. */
static int parse_window(const char *s, size_t n, const char *text, int *out, char *err,
                        size_t err_len) {
  int value = 0, ok = n > 0;
  for (size_t i = 0; i < n && ok; i++) {
    if (!is_digit(s[i])) ok = 0;
  }
  if (!ok) {
    if (err && err_len)
      snprintf(err, err_len, "bad STA window \"%.*s\" in \"%s\": not a positive integer", (int)n, s,
               text);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    int d = s[i] - '0';
    if (value > (INT_MAX - d) / 10) {
      if (err && err_len)
        snprintf(err, err_len, "STA window \"%.*s\" in \"%s\" is too large", (int)n, s, text);
      return -1;
    }
    value = value * 10 + d;
  }
  if (value < 1) {
    if (err && err_len)
      snprintf(err, err_len, "STA window \"%.*s\" in \"%s\" must be >= 1", (int)n, s, text);
    return -1;
  }
  *out = value;
  return 0;
}

/* One "_"-separated part [s, s+n) of text. */
static nabla_status parse_part(const char *s, size_t n, const char *text, nabla_algo *a, char *err,
                               size_t err_len) {
  if (n >= 6 && memcmp(s, "nabla-", 6) == 0) {
    if (a->nabla) ALGO_FAIL("duplicate part \"%.*s\" in \"%s\"", (int)n, s, text);
    if (a->sta) ALGO_FAIL("part \"%.*s\" in \"%s\" must come before the sta part", (int)n, s, text);
    const char *num = s + 6;
    size_t len = n - 6;
    if (!is_decimal(num, len) || len >= 100)
      ALGO_FAIL("bad threshold \"%.*s\" in \"%s\": expected a decimal number in (0, 1]", (int)len,
                num, text);
    double thr = parse_decimal(num, len);
    if (!isfinite(thr) || !(thr > 0.0 && thr <= 1.0))
      ALGO_FAIL("bad threshold \"%.*s\" in \"%s\": must be in (0, 1]", (int)len, num, text);
    a->nabla = 1;
    a->thr = thr;
    return NABLA_OK;
  }
  if (n >= 4 && memcmp(s, "sta-", 4) == 0) {
    if (a->sta) ALGO_FAIL("duplicate part \"%.*s\" in \"%s\"", (int)n, s, text);
    int w[3];
    const char *field = s + 4, *end = s + n;
    for (int f = 0; f < 3; f++) {
      const char *dash = field;
      while (dash < end && *dash != '-') dash++;
      if ((f < 2 && dash == end) || (f == 2 && dash != end))
        ALGO_FAIL("bad STA part \"%.*s\" in \"%s\": expected sta-<wT>-<wH>-<wW> with three "
                  "integers >= 1", (int)n, s, text);
      if (parse_window(field, (size_t)(dash - field), text, &w[f], err, err_len) != 0)
        return NABLA_INVALID_ARGUMENT;
      field = dash + 1;
    }
    a->sta = 1;
    a->sta_t = w[0];
    a->sta_h = w[1];
    a->sta_w = w[2];
    return NABLA_OK;
  }
  if (n == 0) ALGO_FAIL("empty part in \"%s\": %s", text, ALGO_SYNTAX);
  ALGO_FAIL("unknown part \"%.*s\" in \"%s\": %s", (int)n, s, text, ALGO_SYNTAX);
}

nabla_status nabla_algo_parse(const char *text, nabla_algo *out, char *err, size_t err_len) {
  if (err && err_len) err[0] = '\0';
  if (!out) ALGO_FAIL("output algorithm is NULL");
  if (!text) ALGO_FAIL("algorithm text is NULL");
  nabla_algo a = {0, 0.0, 0, 0, 0, 0};
  for (const char *c = text; *c; c++) {
    if (isspace((unsigned char)*c)) ALGO_FAIL("whitespace in \"%s\" is not allowed", text);
  }
  if (text[0] != '\0' && strcmp(text, "dense") != 0) {
    const char *part = text;
    int parts = 0;
    for (;;) {
      const char *sep = strchr(part, '_');
      size_t n = sep ? (size_t)(sep - part) : strlen(part);
      if (++parts > 2)
        ALGO_FAIL("unexpected part \"%.*s\" in \"%s\": %s", (int)n, part, text, ALGO_SYNTAX);
      nabla_status st = parse_part(part, n, text, &a, err, err_len);
      if (st != NABLA_OK) return st;
      if (!sep) break;
      part = sep + 1;
    }
  }
  *out = a;
  return NABLA_OK;
}

/* Shortest "%.Ng" of x that strtod reads back exactly, with a '.' decimal point. */
static void format_double(double x, char *buf, size_t len) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) break;
  }
  const char *point = localeconv()->decimal_point;
  if (point && point[0] && strcmp(point, ".") != 0) {
    char *at = strstr(buf, point);
    if (at) {
      size_t plen = strlen(point);
      *at = '.';
      memmove(at + 1, at + plen, strlen(at + plen) + 1);
    }
  }
}

int nabla_algo_format(const nabla_algo *algo, char *buf, size_t len) {
  if (!buf) len = 0;
  if (len) buf[0] = '\0';
  if (!algo) return -1;
  if (!algo->nabla && !algo->sta) return snprintf(buf, len, "dense");
  char thr[64] = "";
  if (algo->nabla) format_double(algo->thr, thr, sizeof thr);
  if (algo->nabla && algo->sta)
    return snprintf(buf, len, "nabla-%s_sta-%d-%d-%d", thr, algo->sta_t, algo->sta_h, algo->sta_w);
  if (algo->nabla) return snprintf(buf, len, "nabla-%s", thr);
  return snprintf(buf, len, "sta-%d-%d-%d", algo->sta_t, algo->sta_h, algo->sta_w);
}
