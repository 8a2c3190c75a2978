/*
 * Hopper's sm_90a instructions (wgmma) from OpenCL C on NVIDIA.
 *
 * NVIDIA's OpenCL compiler emits PTX for .target sm_90 and offers no way to ask for sm_90a,
 * the target wgmma needs; it does accept PTX back as a program binary. So a kernel writes each
 * sm_90a-only instruction as a PTX comment that begins with NABLA_PTX_MARK (cl/wgmma.cl), is
 * built from source once, and its PTX is then rewritten (the marks removed, the target raised to
 * sm_90a) and built again from that binary. The program cache keeps the rewritten binary.
 */
#ifndef NABLA_PTXPATCH_H
#define NABLA_PTXPATCH_H

#include <stddef.h>

#include "internal.h"

#define NABLA_PTX_MARK "//@wg "

/* Rewrites PTX text (len bytes, a trailing NUL allowed): every NABLA_PTX_MARK removed,
 * ".target sm_90" raised to ".target sm_90a" and a ".version" below 8.3 raised to 8.3. Returns 1 and a malloc'd result (*out, *out_len,
 * NUL-terminated) on success; 0 with a reason in why when the text is no sm_90 PTX, holds no
 * mark, or memory runs out. */
int nabla_ptx_sm90a(const char *ptx, size_t len, char **out, size_t *out_len, char *why, size_t why_len);

/* The sm_90a program of `built` (a program built from source with the marks): its PTX
 * rewritten and built from binary with `options`. NABLA_UNSUPPORTED when the device's PTX is not
 * sm_90 (wgmma exists on Hopper only), NABLA_BUILD when the rewritten PTX does not build. */
nabla_status nabla_program_sm90a(nabla_context *ctx, cl_program built, const char *name,
                                 const char *options, cl_program *out);

#endif
