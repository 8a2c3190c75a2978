/*
 * Kernel sources and program cache.
 *
 * A program is the common prelude (cl/common.cl, then the files a variant lists for its stages,
 * e.g. cl/mma.cl) followed by one stage file (cl/<name>.cl), built with the given options. Programs live in the context
 * for its lifetime (in-memory slots keyed by name + options) and their binaries in the disk
 * cache under namespace "programs", keyed by the device description, the options and a hash of
 * the exact source bytes, so any change of source, options, driver or device is a miss. A binary that fails to load or build
 * is treated as a miss and rebuilt from source. A variant's stage may have an after-build step
 * (nvidia-wgmma's rebuild from its PTX rewritten for sm_90a); the cache keeps what it gives.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskcache.h"
#include "internal.h"
#include "kernels.h"
#include "variant.h"

const char *nabla_dtype_define(nabla_dtype dtype) {
  switch (dtype) {
    case NABLA_F32: return "-DNABLA_DTYPE=0";
    case NABLA_F16: return "-DNABLA_DTYPE=1";
    case NABLA_BF16: return "-DNABLA_DTYPE=2";
  }
  return "-DNABLA_DTYPE=0";
}

static const nabla_kernel_source *embedded(const char *name) {
  for (size_t i = 0; i < nabla_kernel_source_count; i++)
    if (strcmp(nabla_kernel_sources[i].name, name) == 0) return &nabla_kernel_sources[i];
  return NULL;
}

/* Reads <dir>/<name>.cl into a malloc'd string; NULL if absent. */
static char *read_override(const char *dir, const char *name) {
  char path[NABLA_PATH_LEN + 64];
  snprintf(path, sizeof path, "%s/%s.cl", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *text = NULL;
  long size = -1;
  if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
  if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1))) {
    if (fread(text, 1, (size_t)size, f) != (size_t)size) {
      free(text);
      text = NULL;
    } else {
      text[size] = '\0';
    }
  }
  fclose(f);
  return text;
}

/* Source of a stage: prelude (cl/common.cl, then the files the variant owning the stage lists,
 * see variants/variant.h) + stage text, malloc'd. */
static nabla_status stage_source(nabla_context *ctx, const char *name, char **out) {
  const nabla_kernel_source_desc *desc = nabla_kernel_source_find(name);
  const char *parts[5];
  int nparts = 0;
  parts[nparts++] = "common";
  for (int i = 0; desc && i < 3 && desc->prelude[i]; i++) parts[nparts++] = desc->prelude[i];
  parts[nparts++] = name;
  char *texts[5] = {NULL, NULL, NULL, NULL, NULL};
  nabla_status st = NABLA_OK;
  size_t total = 0;
  for (int i = 0; i < nparts; i++) {
    if (ctx->kernel_dir[0]) texts[i] = read_override(ctx->kernel_dir, parts[i]);
    if (!texts[i]) {
      const nabla_kernel_source *src = embedded(parts[i]);
      if (!src) {
        st = nabla_fail(ctx, NABLA_NOT_FOUND, "no kernel source named \"%s\"", parts[i]);
        goto done;
      }
      texts[i] = strdup(src->text);
    }
    if (!texts[i]) {
      st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory reading kernel %s", parts[i]);
      goto done;
    }
    total += strlen(texts[i]) + 1;
  }
  *out = malloc(total + 1);
  if (!*out) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  size_t off = 0;
  for (int i = 0; i < nparts; i++) off += (size_t)snprintf(*out + off, total + 1 - off, "%s\n", texts[i]);
done:
  for (int i = 0; i < 5; i++) free(texts[i]);
  return st;
}

static nabla_status build_log_error(nabla_context *ctx, cl_program prog, const char *name,
                                    const char *options, cl_int rc) {
  char log[3000] = "";
  size_t len = 0;
  clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, &len);
  log[sizeof log - 1] = '\0';
  return nabla_fail(ctx, NABLA_BUILD, "building kernel \"%s\" with \"%s\" failed (%s): %s", name,
                    options, nabla_cl_error_name(rc), log);
}

/*
 * A cached binary is framed by a record of our own: "NCLBIN1\0", the binary's length (u64 LE)
 * and nabla_hash64 of the binary seeded with the hash of the cache key (u64 LE), then the
 * binary. The entry's checksum already detects accidents; this second check, made before the
 * bytes reach the driver's loader (which may trust them: PoCL's crashed on a truncated
 * binary whose entry checksum had been recomputed), also refuses a payload cut, padded or
 * swapped in by anything that rewrote the entry without knowing this layout.
 */
#define BIN_MAGIC "NCLBIN1"
#define BIN_HEADER 24u

static uint64_t load_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void store_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t binary_hash(const void *bin, size_t len, const char *key) {
  return nabla_hash64(bin, len, nabla_hash64(key, strlen(key), 0x6e61626c6162696eull /* "nablabin" */));
}

const unsigned char *nabla_program_unframe(const void *payload, size_t len, const char *key, size_t *bin_len) {
  const unsigned char *p = payload;
  if (len < BIN_HEADER || memcmp(p, BIN_MAGIC, 8) != 0) return NULL;
  const uint64_t n = load_u64(p + 8);
  if (n == 0 || n != len - BIN_HEADER || load_u64(p + 16) != binary_hash(p + BIN_HEADER, (size_t)n, key))
    return NULL;
  *bin_len = (size_t)n;
  return p + BIN_HEADER;
}

static nabla_status try_binary(nabla_context *ctx, const void *bin, size_t len, const char *options,
                               cl_program *out) {
  cl_int rc = CL_SUCCESS, bin_status = CL_SUCCESS;
  const unsigned char *bins[1] = {bin};
  cl_program prog = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &len, bins, &bin_status, &rc);
  if (rc != CL_SUCCESS || bin_status != CL_SUCCESS) {
    if (prog) clReleaseProgram(prog);
    return NABLA_NOT_FOUND;
  }
  if (clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL) != CL_SUCCESS) {
    clReleaseProgram(prog);
    return NABLA_NOT_FOUND;
  }
  *out = prog;
  return NABLA_OK;
}

static void store_binary(nabla_context *ctx, cl_program prog, const char *key) {
  size_t size = 0;
  if (!ctx->cache_root[0]) return;
  if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS || !size) return;
  if (size > SIZE_MAX - BIN_HEADER) return;
  unsigned char *framed = malloc(BIN_HEADER + size);
  if (!framed) return;
  unsigned char *bins[1] = {framed + BIN_HEADER};
  if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == CL_SUCCESS) {
    memcpy(framed, BIN_MAGIC, 8);
    store_u64(framed + 8, size);
    store_u64(framed + 16, binary_hash(framed + BIN_HEADER, size, key));
    nabla_diskcache_put(ctx->cache_root, "programs", key, framed, BIN_HEADER + size); /* failure = no caching */
  }
  free(framed);
}

static nabla_status build_program(nabla_context *ctx, const char *name, const char *options,
                                  cl_program *out) {
  nabla_status st = NABLA_OK;
  char *source = NULL, *key = NULL;
  void *bin = NULL;
  size_t bin_len = 0;
  cl_program prog = NULL;
  cl_int rc = CL_SUCCESS;
  TRY(st, stage_source(ctx, name, &source));
  if (ctx->program_hook) ctx->program_hook(ctx->program_hook_user, name, options, source);
  size_t slen = strlen(source);
  size_t klen = strlen(ctx->device_desc) + strlen(options) + strlen(name) + 96;
  key = malloc(klen);
  if (!key) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  snprintf(key, klen, "%s\n%s\n%s\n%016llx%016llx", ctx->device_desc, name, options,
           (unsigned long long)nabla_hash64(source, slen, 11),
           (unsigned long long)nabla_hash64(source, slen, 12));
  if (ctx->cache_root[0] && nabla_diskcache_get(ctx->cache_root, "programs", key, &bin, &bin_len) == NABLA_OK) {
    size_t inner_len = 0;
    const unsigned char *inner = nabla_program_unframe(bin, bin_len, key, &inner_len);
    if (inner && try_binary(ctx, inner, inner_len, options, &prog) == NABLA_OK) {
      *out = prog;
      goto done;
    }
    /* Refused before or by the driver: removed, so that a rebuild that fails too leaves no bad
     * entry behind (one that works replaces it). */
    nabla_diskcache_remove(ctx->cache_root, "programs", key);
  }
  const char *srcs[1] = {source};
  prog = clCreateProgramWithSource(ctx->cl_ctx, 1, srcs, &slen, &rc);
  if (rc != CL_SUCCESS) {
    st = nabla_fail(ctx, NABLA_OPENCL, "clCreateProgramWithSource failed: %s", nabla_cl_error_name(rc));
    goto done;
  }
  rc = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
  if (rc != CL_SUCCESS) {
    st = build_log_error(ctx, prog, name, options, rc);
    clReleaseProgram(prog);
    goto done;
  }
  const nabla_kernel_source_desc *desc = nabla_kernel_source_find(name);
  if (desc && desc->after_build) { /* e.g. nvidia-wgmma's rebuild from rewritten PTX */
    cl_program final = NULL;
    st = desc->after_build(ctx, prog, name, options, &final); /* takes prog */
    if (st != NABLA_OK) goto done;
    prog = final;
  }
  store_binary(ctx, prog, key);
  *out = prog;
done:
  free(source);
  free(key);
  free(bin);
  return st;
}

/* Releases a slot's kernels, program and key. */
static void slot_release(nabla_program_slot *slot) {
  for (int k = 0; k < slot->kernel_count; k++) clReleaseKernel(slot->kernel[k]);
  clReleaseProgram(slot->program);
  free(slot->key);
}

nabla_status nabla_program_get(nabla_context *ctx, const char *name, const char *options,
                               cl_program *out) {
  nabla_status st = NABLA_OK;
  char slot_key[1024];
  snprintf(slot_key, sizeof slot_key, "%s\n%s", name, options);
  for (int i = 0; i < ctx->program_count; i++)
    if (strcmp(ctx->programs[i].key, slot_key) == 0) {
      *out = ctx->programs[i].program;
      return NABLA_OK;
    }
  cl_program prog = NULL;
  TRY(st, build_program(ctx, name, options, &prog));
  if (ctx->program_count == NABLA_MAX_PROGRAMS) {
    /* Full: drop the oldest slot. Kernels handed out from it keep the program alive. */
    slot_release(&ctx->programs[0]);
    memmove(ctx->programs, ctx->programs + 1, sizeof ctx->programs[0] * (NABLA_MAX_PROGRAMS - 1));
    ctx->program_count--;
  }
  char *k = strdup(slot_key);
  if (!k) {
    clReleaseProgram(prog);
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  ctx->programs[ctx->program_count] = (nabla_program_slot){.key = k, .program = prog};
  ctx->program_count++;
  *out = prog;
done:
  return st;
}

/* Kernel objects are kept with their program: creating one anew for every enqueue cost host
 * time between the mask build's kernels, which the device spent idle (H100: about 0.07 ms
 * between the five kernels of a build). */
nabla_status nabla_kernel_create(nabla_context *ctx, cl_program program, const char *kernel,
                                 cl_kernel *out) {
  cl_int rc = CL_SUCCESS;
  nabla_program_slot *slot = NULL;
  for (int i = 0; i < ctx->program_count && !slot; i++)
    if (ctx->programs[i].program == program) slot = &ctx->programs[i];
  if (slot)
    for (int k = 0; k < slot->kernel_count; k++)
      if (strcmp(slot->kernel_name[k], kernel) == 0) {
        clRetainKernel(slot->kernel[k]);
        *out = slot->kernel[k];
        return NABLA_OK;
      }
  *out = clCreateKernel(program, kernel, &rc);
  if (rc != CL_SUCCESS)
    return nabla_fail(ctx, NABLA_OPENCL, "clCreateKernel(%s) failed: %s", kernel, nabla_cl_error_name(rc));
  if (slot && slot->kernel_count < NABLA_SLOT_KERNELS && strlen(kernel) < sizeof slot->kernel_name[0] &&
      clRetainKernel(*out) == CL_SUCCESS) {
    strcpy(slot->kernel_name[slot->kernel_count], kernel);
    slot->kernel[slot->kernel_count++] = *out;
  }
  return NABLA_OK;
}

nabla_status nabla_kernel_local_fits(nabla_context *ctx, cl_kernel kernel, const char *what) {
  cl_ulong local = 0;
  cl_int rc = clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
  if (rc != CL_SUCCESS)
    return nabla_fail(ctx, NABLA_OPENCL, "CL_KERNEL_LOCAL_MEM_SIZE of %s: %s", what, nabla_cl_error_name(rc));
  if (local > ctx->caps.local_mem)
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "%s needs %llu bytes of local memory, the device has %llu", what,
                      (unsigned long long)local, (unsigned long long)ctx->caps.local_mem);
  return NABLA_OK;
}

nabla_status nabla_set_args(nabla_context *ctx, cl_kernel kernel, const char *name, const nabla_kernel_arg *args,
                            size_t count) {
  for (size_t i = 0; i < count; i++) {
    const cl_int rc = clSetKernelArg(kernel, (cl_uint)i, args[i].size, args[i].value);
    if (rc != CL_SUCCESS)
      return nabla_fail(ctx, NABLA_OPENCL, "setting argument %zu of %s failed: %s (%d)", i, name,
                        nabla_cl_error_name(rc), (int)rc);
  }
  return NABLA_OK;
}

void nabla_programs_release(nabla_context *ctx) {
  for (int i = 0; i < ctx->program_count; i++) slot_release(&ctx->programs[i]);
  ctx->program_count = 0;
}

double nabla_event_ms(cl_event first, cl_event last) {
  cl_ulong t0 = 0, t1 = 0;
  if (!first || !last ||
      clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL) != CL_SUCCESS ||
      clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) != CL_SUCCESS)
    return -1.0;
  return (double)(t1 - t0) * 1e-6;
}
