/* Kernel sources embedded at build time by cmake/embed_kernels.cmake. */
#ifndef NABLA_KERNELS_H
#define NABLA_KERNELS_H
#include <stddef.h>

typedef struct {
  const char *name;   /* file name without .cl, e.g. "attention" */
  const char *text;   /* NUL-terminated source */
  size_t size;        /* bytes, without the NUL */
} nabla_kernel_source;

extern const nabla_kernel_source nabla_kernel_sources[];
extern const size_t nabla_kernel_source_count;

#endif
