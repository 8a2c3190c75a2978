/* Status map and version (src/status.c); host only. */
#include <stdio.h>
#include <string.h>

#include "testutil.h"

typedef struct {
  const char *name;
  int code;
  const char *text;
} status_row;

static const status_row kRows[] = {
#define ROW_(name, code, text) {#name, code, text},
    NABLA_STATUS_MAP(ROW_)
#undef ROW_
};
#define NROWS (sizeof kRows / sizeof kRows[0])

static void test_codes_distinct_texts_nonempty(void **state) {
  (void)state;
  assert_true(NROWS >= 2);
  assert_int_equal(kRows[0].code, NABLA_OK);
  for (size_t i = 0; i < NROWS; i++) {
    assert_non_null(kRows[i].text);
    assert_true(strlen(kRows[i].text) > 0);
    for (size_t j = i + 1; j < NROWS; j++) {
      if (kRows[i].code == kRows[j].code)
        fail_msg("%s and %s share code %d", kRows[i].name, kRows[j].name, kRows[i].code);
      if (strcmp(kRows[i].text, kRows[j].text) == 0)
        fail_msg("%s and %s share the text \"%s\"", kRows[i].name, kRows[j].name, kRows[i].text);
    }
  }
}

static void test_status_str_matches_map(void **state) {
  (void)state;
  for (size_t i = 0; i < NROWS; i++)
    assert_string_equal(nabla_status_str((nabla_status)kRows[i].code), kRows[i].text);
  /* Errors are negative, success is zero. */
  for (size_t i = 1; i < NROWS; i++) assert_true(kRows[i].code < 0);
}

static void test_unknown_status(void **state) {
  (void)state;
  int unknown[] = {1, 7, -1000, 12345, -100};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    int known = 0;
    for (size_t j = 0; j < NROWS; j++) known |= kRows[j].code == unknown[i];
    if (known) continue;
    assert_string_equal(nabla_status_str((nabla_status)unknown[i]), "unknown status");
  }
}

static void test_version(void **state) {
  (void)state;
  assert_int_equal(nabla_version(), NABLA_VERSION_NUMBER);
  assert_int_equal(NABLA_VERSION_NUMBER,
                   NABLA_VERSION_MAJOR * 10000 + NABLA_VERSION_MINOR * 100 + NABLA_VERSION_PATCH);
  char expect[64];
  snprintf(expect, sizeof expect, "%d.%d.%d", NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR,
           NABLA_VERSION_PATCH);
  assert_non_null(nabla_version_string());
  assert_string_equal(nabla_version_string(), expect);
  /* The string is static: the same pointer every time. */
  assert_ptr_equal(nabla_version_string(), nabla_version_string());
}

static void test_last_error_null_context(void **state) {
  (void)state;
  assert_non_null(nabla_last_error(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_codes_distinct_texts_nonempty),
      cmocka_unit_test(test_status_str_matches_map),
      cmocka_unit_test(test_unknown_status),
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_last_error_null_context),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
