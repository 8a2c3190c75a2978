/* sm_90a programs from OpenCL C on NVIDIA: the PTX rewrite (see ptxpatch.h). */
#include "ptxpatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First occurrence of needle (n bytes) in hay[0, len), or NULL. */
static const char *find(const char *hay, size_t len, const char *needle, size_t n) {
  for (size_t i = 0; i + n <= len; i++)
    if (hay[i] == needle[0] && memcmp(hay + i, needle, n) == 0) return hay + i;
  return NULL;
}

/* The decimal number at *p (none: 0), *p moved past its digits but not beyond end. */
static int read_number(const char **p, const char *end) {
  int n = 0;
  while (*p < end && **p >= '0' && **p <= '9') n = 10 * n + (*(*p)++ - '0');
  return n;
}

int nabla_ptx_sm90a(const char *ptx, size_t len, char **out, size_t *out_len, char *why, size_t why_len) {
  static const char target[] = ".target sm_90";
  const size_t tn = sizeof target - 1, mn = sizeof NABLA_PTX_MARK - 1;
  *out = NULL;
  *out_len = 0;
  while (len && ptx[len - 1] == '\0') len--;
  const char *t = find(ptx, len, target, tn);
  if (!t) {
    const char *any = find(ptx, len, ".target ", 8);
    int shown = 0;
    if (any) while (any + 8 + shown < ptx + len && shown < 16 && any[8 + shown] > ' ' && any[8 + shown] != ',') shown++;
    snprintf(why, why_len, "wgmma needs PTX for sm_90 (Hopper); the compiler's PTX targets %.*s",
             any ? shown : 7, any ? any + 8 : "unknown");
    return 0;
  }
  const char after = t + tn < ptx + len ? t[tn] : '\n';
  const int raise = after != 'a'; /* already sm_90a: only the marks go */
  if ((after >= '0' && after <= '9') || (after >= 'b' && after <= 'z') || after == '_') {
    snprintf(why, why_len, "wgmma needs PTX for sm_90 (Hopper), not %.8s", t + 8);
    return 0;
  }
  size_t marks = 0;
  for (const char *m = find(ptx, len, NABLA_PTX_MARK, mn); m;
       m = find(m + mn, len - (size_t)(m + mn - ptx), NABLA_PTX_MARK, mn))
    marks++;
  if (!marks) {
    snprintf(why, why_len, "the PTX holds no %s-marked instruction", NABLA_PTX_MARK);
    return 0;
  }
  /* The PTX ISA version, raised to 8.3 when lower: the tensor-map instructions need it (wgmma
   * itself needs 8.0, so the compiler's PTX is at least that where wgmma builds at all). */
  static const char version[] = ".version ", v83[] = "8.3";
  const size_t vn = sizeof version - 1;
  const char *v = find(ptx, len, version, vn), *vend = v ? v + vn : NULL;
  int major = 0, minor = 0;
  if (v) {
    major = read_number(&vend, ptx + len);
    if (vend < ptx + len && *vend == '.') vend++;
    minor = read_number(&vend, ptx + len);
  }
  const int old_version = v && (major < 8 || (major == 8 && minor < 3));
  const size_t vlen = old_version ? (size_t)(vend - (v + vn)) : 0; /* the digits replaced */
  size_t n = len - marks * mn + (size_t)raise - vlen + (old_version ? sizeof v83 - 1 : 0);
  char *r = malloc(n + 1);
  if (!r) {
    snprintf(why, why_len, "out of memory");
    return 0;
  }
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    if (i + mn <= len && memcmp(ptx + i, NABLA_PTX_MARK, mn) == 0) {
      i += mn;
    } else if (old_version && ptx + i == v + vn) {
      memcpy(r + o, v83, sizeof v83 - 1);
      o += sizeof v83 - 1;
      i += vlen;
    } else if (raise && ptx + i == t) {
      memcpy(r + o, target, tn);
      o += tn;
      r[o++] = 'a';
      i += tn;
    } else {
      r[o++] = ptx[i++];
    }
  }
  r[o] = '\0';
  *out = r;
  *out_len = o + 1; /* the NUL included, as the compiler's own binary */
  return 1;
}

nabla_status nabla_program_sm90a(nabla_context *ctx, cl_program built, const char *name,
                                 const char *options, cl_program *out) {
  nabla_status st = NABLA_OK;
  char *ptx = NULL, *patched = NULL, why[256] = "";
  size_t size = 0, plen = 0;
  cl_program prog = NULL;
  TRY_CL(st, ctx, clGetProgramInfo(built, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL));
  if (!size || !(ptx = malloc(size))) {
    st = nabla_fail(ctx, NABLA_OUT_OF_MEMORY, "no PTX for kernel \"%s\" (%zu bytes)", name, size);
    goto done;
  }
  unsigned char *bins[1] = {(unsigned char *)ptx};
  TRY_CL(st, ctx, clGetProgramInfo(built, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL));
  if (!nabla_ptx_sm90a(ptx, size, &patched, &plen, why, sizeof why)) {
    st = nabla_fail(ctx, NABLA_UNSUPPORTED, "kernel \"%s\": %s", name, why);
    goto done;
  }
  cl_int rc = CL_SUCCESS, bin_rc = CL_SUCCESS;
  const unsigned char *pbins[1] = {(const unsigned char *)patched};
  prog = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &plen, pbins, &bin_rc, &rc);
  if (rc != CL_SUCCESS || bin_rc != CL_SUCCESS) {
    st = nabla_fail(ctx, NABLA_BUILD, "kernel \"%s\": the sm_90a PTX is refused (%s)", name,
                    nabla_cl_error_name(rc != CL_SUCCESS ? rc : bin_rc));
    goto done;
  }
  rc = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
  if (rc != CL_SUCCESS) {
    char log[2000] = "";
    clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
    log[sizeof log - 1] = '\0';
    st = nabla_fail(ctx, NABLA_BUILD, "kernel \"%s\": the sm_90a PTX does not build (%s): %s", name,
                    nabla_cl_error_name(rc), log);
    goto done;
  }
  *out = prog;
  prog = NULL;
done:
  if (prog) clReleaseProgram(prog);
  free(ptx);
  free(patched);
  return st;
}
