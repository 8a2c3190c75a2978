/*
 * libFuzzer harness: the CLI's .npy reader (tools/npy.c). Each input is a whole file: its
 * header is parsed alone (npy_parse_header on the text after the prelude) and the file is read
 * through npy_read from a scratch file, as the CLI reads its inputs. No input may crash, leak or
 * allocate more than the file holds (ASan's allocator limit catches a believed claim).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../tools/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  npy_array a;
  if (size > 10) { /* the dictionary after a 1.0 prelude */
    memset(&a, 0, sizeof a);
    npy_parse_header((const char *)data + 10, size - 10, &a, err, sizeof err);
  }
  char path[4200];
  const char *tmp = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/fuzz_npy.%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  fwrite(data, 1, size, f);
  fclose(f);
  if (npy_read(path, &a, err, sizeof err) == 0) {
    /* A file that reads must say what it holds: count elements of the dtype's size. */
    if (!a.data || a.count * npy_dtype_size(a.dtype) > size) abort();
    npy_free(&a);
  }
  unlink(path);
  return 0;
}
