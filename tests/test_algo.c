/* Configuration strings <-> nabla_algo (host only). */
#include <locale.h>
#include <string.h>

#include "testutil.h"

static nabla_algo parse_ok(const char *text) {
  nabla_algo a;
  char err[256] = "";
  memset(&a, 0x5a, sizeof a);
  nabla_status st = nabla_algo_parse(text, &a, err, sizeof err);
  if (st != NABLA_OK) fail_msg("\"%s\" rejected: %s", text, err);
  return a;
}

/* The text must be rejected with a message containing every needle; *out stays untouched. */
static void parse_bad(const char *text, const char *needle1, const char *needle2) {
  nabla_algo a = {1, 0.25, 1, 7, 7, 7};
  char err[512] = "";
  assert_int_equal(nabla_algo_parse(text, &a, err, sizeof err), NABLA_INVALID_ARGUMENT);
  if (!strstr(err, needle1)) fail_msg("\"%s\": message \"%s\" lacks \"%s\"", text, err, needle1);
  if (needle2 && !strstr(err, needle2))
    fail_msg("\"%s\": message \"%s\" lacks \"%s\"", text, err, needle2);
  assert_int_equal(a.nabla, 1);
  assert_true(a.thr == 0.25);
  assert_int_equal(a.sta_t, 7);
  /* err may be NULL */
  assert_int_equal(nabla_algo_parse(text, &a, NULL, 0), NABLA_INVALID_ARGUMENT);
}

static void test_forms(void **state) {
  (void)state;
  nabla_algo a = parse_ok("");
  assert_int_equal(a.nabla, 0);
  assert_int_equal(a.sta, 0);
  a = parse_ok("dense");
  assert_int_equal(a.nabla, 0);
  assert_int_equal(a.sta, 0);

  a = parse_ok("nabla-0.7");
  assert_int_equal(a.nabla, 1);
  assert_true(a.thr == 0.7);
  assert_int_equal(a.sta, 0);

  a = parse_ok("sta-11-5-5");
  assert_int_equal(a.nabla, 0);
  assert_int_equal(a.sta, 1);
  assert_int_equal(a.sta_t, 11);
  assert_int_equal(a.sta_h, 5);
  assert_int_equal(a.sta_w, 5);

  a = parse_ok("nabla-0.6_sta-11-3-3");
  assert_int_equal(a.nabla, 1);
  assert_true(a.thr == 0.6);
  assert_int_equal(a.sta, 1);
  assert_int_equal(a.sta_t, 11);
  assert_int_equal(a.sta_h, 3);
  assert_int_equal(a.sta_w, 3);

  assert_true(parse_ok("nabla-1").thr == 1.0);
  assert_true(parse_ok("nabla-1.0").thr == 1.0);
  assert_true(parse_ok("nabla-.5").thr == 0.5);
  assert_true(parse_ok("nabla-5e-1").thr == 0.5);
  assert_true(parse_ok("nabla-0.001").thr == 0.001);
  assert_int_equal(parse_ok("sta-1-1-1").sta_w, 1);
  assert_int_equal(parse_ok("sta-007-3-3").sta_t, 7);
}

static void test_round_trip(void **state) {
  (void)state;
  static const char *canonical[] = {"dense",      "nabla-0.7",          "nabla-0.6",
                                    "nabla-0.2",  "nabla-1",            "nabla-0.123456789",
                                    "sta-11-3-3", "nabla-0.6_sta-11-3-3", "sta-3-3-3",
                                    "nabla-0.05_sta-1-2-3"};
  for (size_t i = 0; i < sizeof canonical / sizeof *canonical; i++) {
    nabla_algo a = parse_ok(canonical[i]);
    char buf[64];
    int n = nabla_algo_format(&a, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(canonical[i]));
    assert_string_equal(buf, canonical[i]);
    nabla_algo b = parse_ok(buf);
    assert_int_equal(a.nabla, b.nabla);
    assert_true(a.thr == b.thr);
    assert_int_equal(a.sta, b.sta);
    assert_int_equal(a.sta_t, b.sta_t);
    assert_int_equal(a.sta_h, b.sta_h);
    assert_int_equal(a.sta_w, b.sta_w);
  }
  /* Thresholds without a short decimal form round-trip exactly too. */
  nabla_algo a = {1, 0.1 + 0.2, 0, 0, 0, 0};
  char buf[64];
  nabla_algo_format(&a, buf, sizeof buf);
  assert_true(parse_ok(buf).thr == a.thr);
  a.thr = 1.0 / 3.0;
  nabla_algo_format(&a, buf, sizeof buf);
  assert_true(parse_ok(buf).thr == a.thr);
  /* "" parses to dense, which formats as "dense" */
  a = parse_ok("");
  nabla_algo_format(&a, buf, sizeof buf);
  assert_string_equal(buf, "dense");
}

static void test_format_snprintf_like(void **state) {
  (void)state;
  nabla_algo a = {1, 0.6, 1, 11, 3, 3};
  assert_int_equal(nabla_algo_format(&a, NULL, 0), 20);
  char small[8];
  assert_int_equal(nabla_algo_format(&a, small, sizeof small), 20);
  assert_string_equal(small, "nabla-0");
  assert_int_equal(nabla_algo_format(NULL, small, sizeof small), -1);
  assert_string_equal(small, "");
}

static void test_errors(void **state) {
  (void)state;
  parse_bad("nabla-0", "\"0\"", "(0, 1]");
  parse_bad("nabla-1.5", "bad threshold \"1.5\" in \"nabla-1.5\": must be in (0, 1]", NULL);
  parse_bad("nabla--0.1", "\"-0.1\"", "(0, 1]");
  parse_bad("nabla-", "bad threshold \"\"", "\"nabla-\"");
  parse_bad("nabla-abc", "\"abc\"", NULL);
  parse_bad("nabla-0.7x", "\"0.7x\"", NULL);
  parse_bad("nabla-inf", "\"inf\"", NULL);
  parse_bad("nabla-nan", "\"nan\"", NULL);
  parse_bad("nabla-0x1p-1", "\"0x1p-1\"", NULL);
  parse_bad("nabla-1e400", "\"1e400\"", "(0, 1]");
  parse_bad("nabla-1e-400", "\"1e-400\"", "(0, 1]");
  parse_bad("nabla-1.0000001", "\"1.0000001\"", NULL);
  parse_bad("nabla-0.5e", "\"0.5e\"", NULL);
  parse_bad("sta-1-2", "\"sta-1-2\"", NULL);
  parse_bad("sta-1-2-3-4", "\"sta-1-2-3-4\"", NULL);
  parse_bad("sta-0-3-3", "STA window \"0\" in \"sta-0-3-3\" must be >= 1", NULL);
  parse_bad("sta-3-3-0", "\"0\"", ">= 1");
  parse_bad("sta-a-3-3", "\"a\"", NULL);
  parse_bad("sta-+3-3-3", "\"+3\"", NULL);
  parse_bad("sta--1-3-3", "sta--1-3-3", NULL);
  parse_bad("sta-99999999999-3-3", "\"99999999999\"", "too large");
  parse_bad("sta-3-3-3x", "\"3x\"", NULL);
  parse_bad("nabla-0.7_sta-11-3", "\"sta-11-3\"", NULL);
  parse_bad("foo", "unknown part \"foo\"", NULL);
  parse_bad("nabla-0.7_foo", "unknown part \"foo\" in \"nabla-0.7_foo\"", NULL);
  parse_bad("Nabla-0.7", "\"Nabla-0.7\"", NULL);
  parse_bad("nabla", "\"nabla\"", NULL);
  parse_bad("dense_sta-1-1-1", "\"dense\"", NULL);
  parse_bad(" nabla-0.7", "whitespace", "\" nabla-0.7\"");
  parse_bad("nabla-0.7 ", "whitespace", NULL);
  parse_bad("nabla-0.7\n", "whitespace", NULL);
  parse_bad("nabla- 0.7", "whitespace", NULL);
  parse_bad("nabla-0.7_", "empty part", "\"nabla-0.7_\"");
  parse_bad("_sta-1-1-1", "empty part", NULL);
  parse_bad("nabla-0.7_sta-11-3-3_sta-1-1-1", "\"sta-1-1-1\"", NULL);
  parse_bad("nabla-0.7_nabla-0.5", "duplicate part \"nabla-0.5\"", NULL);
  parse_bad("sta-1-1-1_sta-3-3-3", "duplicate part \"sta-3-3-3\"", NULL);
  parse_bad("sta-11-3-3_nabla-0.7", "\"nabla-0.7\"", NULL);

  nabla_algo a;
  char err[64];
  assert_int_equal(nabla_algo_parse(NULL, &a, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "NULL"));
  assert_int_equal(nabla_algo_parse("dense", NULL, err, sizeof err), NABLA_INVALID_ARGUMENT);
}

static void test_locale_independent(void **state) {
  (void)state;
  /* A comma-decimal locale must not change the syntax; skip quietly when none is installed. */
  static const char *locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "ru_RU.UTF-8"};
  const char *set = NULL;
  for (size_t i = 0; i < sizeof locales / sizeof *locales && !set; i++)
    set = setlocale(LC_NUMERIC, locales[i]);
  if (!set) skip();
  nabla_algo a = parse_ok("nabla-0.7");
  char buf[32];
  nabla_algo_format(&a, buf, sizeof buf);
  setlocale(LC_NUMERIC, "C");
  assert_true(a.thr == 0.7);
  assert_string_equal(buf, "nabla-0.7");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forms),  cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_format_snprintf_like), cmocka_unit_test(test_errors),
      cmocka_unit_test(test_locale_independent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
