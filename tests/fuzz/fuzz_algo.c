/*
 * libFuzzer harness: the algorithm strings (nabla_algo_parse / nabla_algo_format). Any text is
 * parsed; one that parses must format to a text that parses back to the same configuration.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nablacl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const nabla_algo *a, const nabla_algo *b) {
  return a->nabla == b->nabla && a->sta == b->sta && (!a->nabla || a->thr == b->thr) &&
         (!a->sta || (a->sta_t == b->sta_t && a->sta_h == b->sta_h && a->sta_w == b->sta_w));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1), err[256], buf[256];
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  nabla_algo a, b;
  if (nabla_algo_parse(text, &a, err, sizeof err) == NABLA_OK) {
    int n = nabla_algo_format(&a, buf, sizeof buf);
    if (n < 0 || (size_t)n >= sizeof buf) abort();
    if (nabla_algo_parse(buf, &b, err, sizeof err) != NABLA_OK || !same(&a, &b)) abort();
  } else if (!err[0]) {
    abort(); /* a refusal always says why */
  }
  free(text);
  return 0;
}
