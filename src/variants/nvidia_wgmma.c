/* nvidia-wgmma (cl/attention_wgmma.cl): Hopper's warpgroup MMA (wgmma, sm_90a), built through
 * the PTX rewrite of ptxpatch.h; NVIDIA sm_90 devices whose probe (cl/probe_wgmma.cl) passes,
 * fp16/bf16, head_dim 64 or 128. Its K and V blocks are staged by tensor copies (tensor maps,
 * tensormap.h), bulk copies of tile images packed first, or rows (the knob WG_BULK). The emulated
 * twin nvidia-wgmma-emulated runs the same kernel with wgmma emulated, on any device, only when
 * forced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvidia.h"
#include "probe.h"
#include "ptxpatch.h"
#include "tensormap.h"

/* ---- the probe ------------------------------------------------------------------------------ */

/* Small integers again (-4..4): exact in fp16/bf16 and in every fp32 sum. The multipliers are
 * prime to 9, so every row and every column differs from the rows and columns 1..8 away: a
 * misplaced row or 16-byte chunk (swizzle, descriptor strides) changes the products. */
static int wmat(int which, int r, int c) { return (r * (2 + 3 * which) + c * (4 + 3 * which) + which) % 9 - 4; }

static uint16_t to16(int fp16, float x) { return fp16 ? nabla_f32_to_f16(x) : nabla_f32_to_bf16(x); }

/* Runs cl/probe_wgmma.cl for one 16-bit type (emulated: with NABLA_NO_PTX) and checks its three
 * products (see that file) against the host, bit for bit. */
static nabla_probe_verdict probe_wgmma_dtype(nabla_context *ctx, nabla_dtype dtype, int emulated, char *why,
                                       size_t why_len) {
  const int fp16 = dtype == NABLA_F16, rows_kept = 61;
  uint16_t *a = malloc(64 * 128 * 2), *b = malloc(64 * 128 * 2), *p = malloc(64 * 64 * 2);
  float *d1 = malloc(64 * 64 * 4), *d2 = malloc(64 * 128 * 4), *d3 = malloc(64 * 64 * 4);
  nabla_probe_verdict v = NABLA_PROBE_ERROR;
  if (!a || !b || !p || !d1 || !d2 || !d3) {
    snprintf(why, why_len, "out of memory");
    goto done;
  }
  for (int r = 0; r < 64; r++)
    for (int c = 0; c < 128; c++) {
      a[r * 128 + c] = to16(fp16, (float)wmat(0, r, c));
      b[r * 128 + c] = to16(fp16, (float)wmat(1, r, c));
      if (c < 64) p[r * 64 + c] = to16(fp16, (float)wmat(2, r, c));
    }
  char options[96];
  snprintf(options, sizeof options, "%s%s", nabla_dtype_define(dtype), emulated ? " -DNABLA_NO_PTX" : "");
  size_t bytes[6] = {64 * 128 * 2, 64 * 128 * 2, 64 * 64 * 2, 64 * 64 * 4, 64 * 128 * 4, 64 * 64 * 4};
  void *host[6] = {a, b, p, d1, d2, d3};
  int readback[6] = {0, 0, 0, 1, 1, 1};
  v = nabla_probe_launch(ctx, "probe_wgmma", options, "probe_wgmma", 128, 6, bytes, host, readback, why, why_len);
  if (v != NABLA_PROBE_PASS) goto done;
  for (int m = 0; m < 64 && v == NABLA_PROBE_PASS; m++)
    for (int n = 0; n < 128 && v == NABLA_PROBE_PASS; n++) {
      float want1 = 0.0f, want2 = 0.5f;
      for (int k = 0; k < 128 && n < 64; k++)
        want1 += n < rows_kept ? (float)(wmat(0, m, k) * wmat(1, n, k)) : 0.0f;
      for (int k = 0; k < rows_kept; k++) want2 += (float)(wmat(2, m, k) * wmat(1, k, n));
      const char *what = NULL;
      float got = 0.0f, want = 0.0f;
      if (n < 64 && d1[m * 64 + n] != want1) what = "m64n64k16 (K-major B)", got = d1[m * 64 + n], want = want1;
      else if (d2[m * 128 + n] != want2) what = "m64n128k16 (MN-major B)", got = d2[m * 128 + n], want = want2;
      else if (n < 64 && d3[m * 64 + n] != want2) what = "m64n64k16 (MN-major B)", got = d3[m * 64 + n], want = want2;
      if (what) {
        snprintf(why, why_len, "wgmma %s %s gave D[%d][%d] = %g, expected %g", what, fp16 ? "f16" : "bf16",
                 m, n, (double)got, (double)want);
        v = NABLA_PROBE_FAIL;
      }
    }
done:
  free(a), free(b), free(p), free(d1), free(d2), free(d3);
  return v;
}

static nabla_probe_verdict probe_wgmma_both(nabla_context *ctx, int emulated, char *why, size_t why_len) {
  nabla_probe_verdict v = probe_wgmma_dtype(ctx, NABLA_BF16, emulated, why, why_len);
  return v == NABLA_PROBE_PASS ? probe_wgmma_dtype(ctx, NABLA_F16, emulated, why, why_len) : v;
}

/* The real wgmma: NVIDIA, the nvidia-mma probe with cp.async passed, then probe_wgmma (whose
 * build fails on a device whose PTX is not sm_90). Verdicts cached like nvidia-mma's. */
static void probe_nvidia_wgmma(nabla_context *ctx, int id, nabla_variant_probe *pr) {
  char text[512], why[384] = "";
  int ok = -1, used = 0;
  nabla_probe_saved saved;
  nabla_probe_save(ctx, &saved);
  pr->probed = 1;
  pr->supported = 0;
  if (ctx->caps.vendor != NABLA_VENDOR_NVIDIA) {
    snprintf(pr->why, sizeof pr->why, "not an NVIDIA device");
  } else if (!nabla_variant_probe_run(ctx, NABLA_VARIANT_NVIDIA_MMA, why, sizeof why) ||
             !(ctx->variants.probe[NABLA_VARIANT_NVIDIA_MMA].features & NABLA_MMA_FEATURE_SMEM)) {
    snprintf(pr->why, sizeof pr->why, "needs nvidia-mma with cp.async: %.300s", why[0] ? why : "cp.async probe failed");
  } else if (nabla_probe_cache_get(ctx, NABLA_VARIANT_NVIDIA_WGMMA, text, sizeof text) &&
             sscanf(text, "wgmma=%d%n", &ok, &used) == 1 && (ok == 0 || ok == 1)) {
    pr->supported = ok;
    nabla_probe_cache_why(text + used, pr);
  } else {
    nabla_probe_verdict v = probe_wgmma_both(ctx, 0, why, sizeof why);
    pr->supported = v == NABLA_PROBE_PASS;
    snprintf(pr->why, sizeof pr->why, "%s", v == NABLA_PROBE_PASS ? "" : why);
    if (v != NABLA_PROBE_ERROR) {
      snprintf(text, sizeof text, "wgmma=%d why=%s", pr->supported, pr->why);
      nabla_probe_cache_put(ctx, NABLA_VARIANT_NVIDIA_WGMMA, text);
    }
  }
  nabla_probe_restore(ctx, &saved);
}

/* The emulation runs the same probe kernel with every wgmma emulated: it checks, on any device,
 * that the emulation agrees with the host's reading of the layouts (kept for the context). */
static void probe_wgmma_emulated(nabla_context *ctx, int id, nabla_variant_probe *pr) {
  char why[384] = "";
  nabla_probe_saved saved;
  nabla_probe_save(ctx, &saved);
  pr->probed = 1;
  pr->supported = probe_wgmma_both(ctx, 1, why, sizeof why) == NABLA_PROBE_PASS;
  snprintf(pr->why, sizeof pr->why, "%s", why);
  nabla_probe_restore(ctx, &saved);
}

/* ---- knobs and options ------------------------------------------------------------------- */

/* Tensor copies by default: they spare the tile images' pack (a pass over K and V, 0.8 ms for
 * the Wan 14B shape on the H200) and its 2 x K's size of device memory, and were 5-8 % faster on
 * the STA mask and level on random 10 % there; both bulk paths are about twice as fast as rows
 * staged by cp.async (docs/notes/2026-12-wgmma-staging.md). */
int nabla_attention_wgmma_staging(const nabla_context *ctx) {
  const int v = ctx->knobs[NABLA_KNOB_WG_BULK];
  return v >= NABLA_WG_ROWS && v <= NABLA_WG_TENSOR ? v : NABLA_WG_TENSOR;
}

/* WG_SPLIT 2's workspace (cl/attention_wgmma.cl): a counter per row, padded to 64, then a
 * partial of (head_dim / 2 + 4) x 128 floats per row, the size of O in fp32 and a little more.
 * *counters: the bytes of the counters. */
static size_t split_bytes(const nabla_shape *shape, size_t *counters) {
  const size_t rows = (size_t)shape->batch * shape->heads * (size_t)nabla_shape_blocks(shape);
  const size_t base = (rows + 63) / 64 * 64, slot = ((size_t)shape->head_dim / 2 + 4) * 128;
  if (counters) *counters = rows * sizeof(cl_int);
  return (base + rows * slot) * sizeof(float);
}

/* Two work-groups per query block keep the ones in flight on half of a head's keys. At 121
 * frames (31x40x80: one head's K and V 51 MB, L2 50 MB) the same work with each row's blocks drawn
 * from half of the keys took 41.3 ms against 52.5 ms from all of them (H100), and the split kernel
 * gained 4 % (random 10 %, nabla-0.7) and 8 % (dense); at 81 frames (34 MB) it lost 3 % on random
 * 10 % (H200; docs/benchmarks.md). Hence the threshold between the two. On the H100 at 121 frames
 * it gains 6-12 % from 10 % density but loses up to 13 % on very sparse masks (1.4 %), whose
 * density the host does not know here: NABLACL_WG_SPLIT=1 is the way out there. */
int nabla_attention_wgmma_split(const nabla_context *ctx, int id, const nabla_shape *shape, int dense) {
  if (nabla_attention_mma_qpw(ctx, id, dense) != 1) return 1;
  const int v = ctx->knobs[NABLA_KNOB_WG_SPLIT];
  if (v == 1 || v == 2) return v;
  const size_t kv = 2 * (size_t)shape->seq * (size_t)shape->head_dim * 2; /* bytes of one (b, h) */
  return kv > NABLA_WG_SPLIT_BYTES && split_bytes(shape, NULL) <= ctx->caps.max_alloc ? 2 : 1;
}

void nabla_attention_wgmma_options(const nabla_context *ctx, int id, const nabla_shape *shape, nabla_dtype dtype,
                                   int dense, int staging, char *buf, size_t len) {
  char cap[64];
  nabla_mma_maxrreg_options(ctx, id, cap, sizeof cap);
  snprintf(buf, len,
           "%s -DHEAD_DIM=%d -DNABLA_DENSE=%d -DMMA_QPW=%d -DWG_BULK=%d -DMMA_LAZY_RESCALE=%d -DWG_SPLIT=%d%s%s",
           nabla_dtype_define(dtype), shape->head_dim, dense, nabla_attention_mma_qpw(ctx, id, dense), staging,
           nabla_mma_lazy_rescale(ctx, 12), nabla_attention_wgmma_split(ctx, id, shape, dense),
           id == NABLA_VARIANT_WGMMA_EMULATED ? " -DNABLA_NO_PTX" : "", cap);
}

/* Builds (or finds) the wgmma attention program for the problem with `staging`. */
static nabla_status wgmma_program(nabla_context *ctx, int variant, const nabla_shape *shape, int staging,
                                  nabla_dtype dtype, int dense, const nabla_params *params, cl_program *prog) {
  char options[320];
  nabla_attention_wgmma_options(ctx, variant, shape, dtype, dense, staging, options, sizeof options);
  return nabla_program_get(ctx, "attention_wgmma", options, prog);
}

/* ---- staging -------------------------------------------------------------------------------- */

/* The context's tile-image workspace for k and v: one 64-row tile of head_dim x 128 bytes per
 * block and (b, h), as the wgmma kernel's bulk copies read them. */
static nabla_status tile_images(nabla_context *ctx, const nabla_shape *shape, cl_mem img[2]) {
  nabla_status st = NABLA_OK;
  const size_t bytes = (size_t)shape->batch * shape->heads * (size_t)nabla_shape_blocks(shape) * 64 *
                       (size_t)shape->head_dim * 2;
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_KTILES, bytes, "K tile images", &img[0]));
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_VTILES, bytes, "V tile images", &img[1]));
done:
  if (st != NABLA_OK) { /* half of the images is of no use: give the memory back */
    nabla_workspace_free(ctx, NABLA_WS_KTILES);
    nabla_workspace_free(ctx, NABLA_WS_VTILES);
  }
  return st;
}

/* What the wgmma kernel reads K and V through: the caller's buffers, or the tile images that
 * replace them, and the tensor maps. The wait list goes to the first command enqueued (the queue
 * is in order, so every later one waits too). */
typedef struct {
  cl_mem k, v, maps, block_start;
  cl_uint num_wait;
  const cl_event *wait;
} wg_inputs;

/* NABLA_WG_IMAGES: enqueues pack_tiles (cl/attention_wgmma.cl) from in->k and in->v into the
 * context's tile images and points in->k and in->v at them. */
static nabla_status pack_tiles(nabla_context *ctx, cl_program prog, const nabla_shape *shape, wg_inputs *in) {
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  cl_mem img[2] = {NULL, NULL};
  cl_int S = shape->seq, Nb = nabla_shape_blocks(shape);
  size_t global[3] = {64 * (size_t)shape->head_dim / 8, (size_t)Nb, (size_t)shape->batch * shape->heads};
  size_t local[3] = {64, 1, 1};
  TRY(st, tile_images(ctx, shape, img));
  TRY(st, nabla_kernel_create(ctx, prog, "pack_tiles", &kernel));
  for (int i = 0; i < 2; i++) {
    cl_mem src = i ? in->v : in->k;
    TRY(st, NABLA_SET_ARGS(ctx, kernel, "pack_tiles", NABLA_ARG(src), NABLA_ARG(img[i]),
                           NABLA_ARG(in->block_start), NABLA_ARG(S), NABLA_ARG(Nb)));
    cl_event *slot = nabla_profile_slot(ctx, "attention-pack");
    TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 3, NULL, global, local, i ? 0 : in->num_wait,
                                           i ? NULL : in->wait, NABLA_EVENT_OUT(slot, NULL)));
  }
  in->k = img[0], in->v = img[1], in->num_wait = 0, in->wait = NULL;
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

/* The rows of K and V seen as [B H S][head_dim] matrices, the tensor maps' dimension 1. */
static uint64_t tensor_rows(const nabla_shape *shape) {
  return (uint64_t)shape->batch * shape->heads * (uint64_t)shape->seq;
}

/* NABLA_WG_TENSOR: the tensor map template for K and V seen as [B H S][head_dim] matrices
 * (tensormap.h), or, emulated, none (the emulation copies from k and v itself: the maps stay
 * zero). */
static nabla_status tensor_map(nabla_context *ctx, int variant, const nabla_shape *shape,
                               unsigned char map[NABLA_TMAP_BYTES]) {
  const uint64_t rows = tensor_rows(shape);
  memset(map, 0, NABLA_TMAP_BYTES);
  if (rows > 0x7FFFFFFFu) /* the copies' row coordinate is a signed 32-bit integer */
    return nabla_fail(ctx, NABLA_UNSUPPORTED, "tensor copies address rows by 32-bit coordinates, not %llu rows",
                      (unsigned long long)rows);
  if (variant == NABLA_VARIANT_WGMMA_EMULATED) return NABLA_OK;
  return nabla_tensor_map_template(ctx, shape->head_dim, map);
}

/* NABLA_WG_TENSOR: fills the context's two maps with the template and enqueues tmap_bind, which
 * points them at in->k and in->v (OpenCL tells only the device where a buffer lives) and sets
 * their row count. */
static nabla_status bind_tensor_maps(nabla_context *ctx, int variant, cl_program prog, const nabla_shape *shape,
                                     wg_inputs *in) {
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  cl_mem maps = NULL;
  _Alignas(8) unsigned char map[NABLA_TMAP_BYTES];
  const size_t one = 1;
  TRY(st, tensor_map(ctx, variant, shape, map));
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_TMAPS, 2 * NABLA_TMAP_BYTES, "tensor maps", &maps));
  TRY(st, nabla_kernel_create(ctx, prog, "tmap_bind", &kernel));
  const cl_uint rows = (cl_uint)tensor_rows(shape); /* < 2^31: tensor_map checked */
  TRY(st, NABLA_SET_ARGS(ctx, kernel, "tmap_bind", NABLA_ARG(in->k), NABLA_ARG(in->v), NABLA_ARG(maps), NABLA_ARG(rows)));
  /* The pattern is copied at the call, so the map on the stack may go. */
  TRY_CL(st, ctx, clEnqueueFillBuffer(ctx->queue, maps, map, NABLA_TMAP_BYTES, 0, 2 * NABLA_TMAP_BYTES,
                                      in->num_wait, in->wait, NULL));
  in->num_wait = 0, in->wait = NULL;
  cl_event *slot = nabla_profile_slot(ctx, "attention-maps");
  TRY_CL(st, ctx, clEnqueueNDRangeKernel(ctx->queue, kernel, 1, NULL, &one, &one, 0, NULL, NABLA_EVENT_OUT(slot, NULL)));
  in->maps = maps;
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

/* The wgmma kernel's program with `staging`, and, when in is given, what that staging enqueues
 * first (the pack or the maps). */
static nabla_status wgmma_prepare(nabla_context *ctx, int variant, int staging, const nabla_shape *shape,
                                  nabla_dtype dtype, int dense, const nabla_params *params, wg_inputs *in,
                                  cl_program *prog) {
  nabla_status st = NABLA_OK;
  if (staging == NABLA_WG_TENSOR && !in) { /* a map that cannot be had is known before the build */
    unsigned char map[NABLA_TMAP_BYTES];
    TRY(st, tensor_map(ctx, variant, shape, map));
  }
  TRY(st, wgmma_program(ctx, variant, shape, staging, dtype, dense, params, prog));
  if (in && staging == NABLA_WG_IMAGES) TRY(st, pack_tiles(ctx, *prog, shape, in));
  if (in && staging == NABLA_WG_TENSOR) TRY(st, bind_tensor_maps(ctx, variant, *prog, shape, in));
done:
  return st;
}

/* The wgmma kernel's staging and program: the one asked for (nabla_attention_wgmma_staging), or
 * the next one down where it cannot be had, with the reason in the variant note and the error
 * cleared. Rows staged need nothing but the program; its failure is returned. A failed step
 * enqueues nothing, or only a pack or maps that write the workspace alone. */
static nabla_status wgmma_staging(nabla_context *ctx, int variant, const nabla_shape *shape, nabla_dtype dtype,
                                  int dense, const nabla_params *params, wg_inputs *in, int *staging,
                                  cl_program *prog) {
  static const char *const off[] = {"", "bulk copies off, rows staged", "tensor copies off, tile images"};
  nabla_variant_probe *vp = &ctx->variants.probe[variant];
  int mode = nabla_attention_wgmma_staging(ctx);
  for (; mode > NABLA_WG_ROWS; mode--) {
    wg_inputs attempt = in ? *in : (wg_inputs){0};
    nabla_status st = NABLA_OK;
    if (vp->prepare_off & (1u << mode)) {
      snprintf(ctx->variants.note, sizeof ctx->variants.note, "%s: %s: its build failed before on this context",
               nabla_variant_name(variant), off[mode]);
      continue;
    }
    st = wgmma_prepare(ctx, variant, mode, shape, dtype, dense, params, in ? &attempt : NULL, prog);
    if (st == NABLA_OK) {
      if (in) *in = attempt;
      break;
    }
    if (st == NABLA_BUILD) vp->prepare_off |= 1u << mode; /* a compiler failure does not pass */
    snprintf(ctx->variants.note, sizeof ctx->variants.note, "%s: %s: %.400s", nabla_variant_name(variant),
             off[mode], ctx->error);
    nabla_clear_error(ctx);
  }
  *staging = mode;
  return mode == NABLA_WG_ROWS ? wgmma_program(ctx, variant, shape, mode, dtype, dense, params, prog) : NABLA_OK;
}

/* WG_SPLIT 2: the context's split workspace (split_bytes), its counters zeroed first in the queue
 * (the wait list goes to that fill when no staging took it). */
static nabla_status split_workspace(nabla_context *ctx, nabla_variant_call *call, cl_mem *out) {
  nabla_status st = NABLA_OK;
  size_t counters = 0;
  const size_t bytes = split_bytes(call->shape, &counters);
  const cl_int zero = 0;
  TRY(st, nabla_workspace_get(ctx, NABLA_WS_SPLIT, bytes, "split partials", out));
  TRY_CL(st, ctx, clEnqueueFillBuffer(ctx->queue, *out, &zero, sizeof zero, 0, counters, call->num_wait,
                                      call->wait, NULL));
  call->num_wait = 0, call->wait = NULL;
done:
  return st;
}

/* The operations' prepare: the staging and program (wgmma_staging); with enqueue, what the
 * staging enqueues first, K and V replaced by the staged copies, and the kernel's last two
 * arguments: the tensor maps and the split workspace (NULL without WG_SPLIT 2). */
static nabla_status wgmma_prepare_call(nabla_context *ctx, nabla_variant_call *call, int enqueue) {
  wg_inputs in = {call->k, call->v, NULL, call->block_start, call->num_wait, call->wait};
  int staging = NABLA_WG_ROWS;
  nabla_status st = wgmma_staging(ctx, call->id, call->shape, call->dtype, call->dense, call->params,
                                  enqueue ? &in : NULL, &staging, &call->program);
  if (st == NABLA_OK && enqueue) {
    call->k = in.k, call->v = in.v, call->num_wait = in.num_wait, call->wait = in.wait;
    call->extra[0] = in.maps, call->extra[1] = NULL, call->extras = 2;
    if (nabla_attention_wgmma_split(ctx, call->id, call->shape, call->dense) == 2)
      st = split_workspace(ctx, call, &call->extra[1]);
  }
  return st;
}

/* nabla_mma_work_sizes, with WG_SPLIT work-groups per query block. */
static nabla_status wgmma_work_sizes(nabla_context *ctx, const nabla_variant_call *call, cl_kernel kernel,
                                     size_t global[3], size_t local[3]) {
  nabla_status st = nabla_mma_work_sizes(ctx, call, kernel, global, local);
  global[0] *= (size_t)nabla_attention_wgmma_split(ctx, call->id, call->shape, call->dense);
  return st;
}

static void wgmma_options(nabla_context *ctx, const nabla_variant_call *call, char *buf, size_t len) {
  nabla_attention_wgmma_options(ctx, call->id, call->shape, call->dtype, call->dense,
                                nabla_attention_wgmma_staging(ctx), buf, len);
}

static int wgmma_eligible(const nabla_shape *shape, nabla_dtype dtype, char *why, size_t len) {
  return nabla_mma_eligible(shape, dtype, 1, why, len);
}

/* The marked sm_90a instructions are comments in a program built from source: on NVIDIA (and
 * not emulated) it is rebuilt from the rewritten PTX. */
static nabla_status wgmma_after_build(nabla_context *ctx, cl_program built, const char *name, const char *options,
                                      cl_program *out) {
  if (ctx->caps.vendor != NABLA_VENDOR_NVIDIA || strstr(options, "NABLA_NO_PTX")) {
    *out = built;
    return NABLA_OK;
  }
  nabla_status st = nabla_program_sm90a(ctx, built, name, options, out);
  clReleaseProgram(built);
  return st;
}

/* ---- the operations tables ------------------------------------------------------------------ */

static const nabla_kernel_source_desc wgmma_sources[] = {
    {"attention_wgmma", {"mma", "wgmma", NULL}, wgmma_after_build},
    {"probe_wgmma", {"mma", "wgmma", NULL}, wgmma_after_build},
    {NULL, {NULL}, NULL},
};

const nabla_variant_ops nabla_variant_nvidia_wgmma = {
    .stages = NABLA_STAGE_ATTENTION,
    .rank = 20,
    .automatic = nabla_nvidia_automatic,
    .map_with = NABLA_VARIANT_NVIDIA_MMA,
    .eligible = wgmma_eligible,
    .probe = probe_nvidia_wgmma,
    .program = "attention_wgmma",
    .options = wgmma_options,
    .prepare = wgmma_prepare_call,
    .work_sizes = wgmma_work_sizes,
    .sources = wgmma_sources,
    .release = nabla_cuda_driver_release,
};

const nabla_variant_ops nabla_variant_nvidia_wgmma_emulated = {
    .stages = NABLA_STAGE_ATTENTION,
    .map_with = NABLA_VARIANT_MMA_EMULATED,
    .eligible = wgmma_eligible,
    .probe = probe_wgmma_emulated,
    .program = "attention_wgmma",
    .options = wgmma_options,
    .prepare = wgmma_prepare_call,
    .work_sizes = wgmma_work_sizes,
};
