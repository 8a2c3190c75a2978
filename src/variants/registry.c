/* The variant registry: names and ids from the list (registry.h), the operations tables, probe
 * verdicts and broken stages on the context, the choice of a variant, and the public variant
 * calls. Nothing here knows a particular variant: each one's file says what it needs. */
#include <stdio.h>
#include <string.h>

#include "variant.h"

_Static_assert(NABLA_VARIANT_COUNT <= NABLA_VARIANT_SLOTS, "one probe slot per variant (internal.h)");
_Static_assert(NABLA_VARIANT_CANDIDATE_COUNT <= NABLA_MAX_CANDIDATES, "VARIANT's candidates fit a tunable (tune.h)");

#define NAME_(id, e, name, ops, aid) [id] = name,
static const char *const variant_names[NABLA_VARIANT_COUNT] = {NABLA_VARIANT_LIST(NAME_)};
#define OPS_(id, e, name, ops, aid) [id] = &ops,
static const nabla_variant_ops *const variant_ops[NABLA_VARIANT_COUNT] = {NABLA_VARIANT_LIST(OPS_)};
#define AID_(id, e, name, ops, aid) [id] = aid,
static const int variant_test_aid[NABLA_VARIANT_COUNT] = {NABLA_VARIANT_LIST(AID_)};

const char *nabla_variant_name(int id) {
  if (id == NABLA_VARIANT_AUTO) return "auto";
  return id >= 0 && id < NABLA_VARIANT_COUNT ? variant_names[id] : NULL;
}

int nabla_variant_id(const char *name) {
  if (!name || !*name || strcmp(name, "auto") == 0) return NABLA_VARIANT_AUTO;
  for (int i = 0; i < NABLA_VARIANT_COUNT; i++)
    if (strcmp(name, variant_names[i]) == 0) return i;
  return -2;
}

int nabla_variant_test_aid(int id) { return id >= 0 && id < NABLA_VARIANT_COUNT && variant_test_aid[id]; }

const nabla_variant_ops *nabla_variant_ops_of(int id) {
  return id >= 0 && id < NABLA_VARIANT_COUNT ? variant_ops[id] : NULL;
}

void nabla_variants_release(nabla_context *ctx) {
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++)
    if (variant_ops[id]->release) variant_ops[id]->release(ctx);
}

const nabla_kernel_source_desc *nabla_kernel_source_find(const char *name) {
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++)
    for (const nabla_kernel_source_desc *d = variant_ops[id]->sources; d && d->name; d++)
      if (strcmp(d->name, name) == 0) return d;
  return NULL;
}

/* ---- probes and broken stages ------------------------------------------------------------ */

int nabla_variant_probe_run(nabla_context *ctx, int id, char *why, size_t why_len) {
  if (why && why_len) why[0] = '\0';
  if (id < 0 || id >= NABLA_VARIANT_COUNT) {
    if (why && why_len) snprintf(why, why_len, "unknown variant");
    return 0;
  }
  nabla_variant_probe *pr = &ctx->variants.probe[id];
  if (!pr->probed) {
    if (variant_ops[id]->probe) variant_ops[id]->probe(ctx, id, pr);
    else pr->probed = pr->supported = 1; /* runs wherever OpenCL C does */
  }
  if (!pr->supported && why && why_len) snprintf(why, why_len, "%s", pr->why);
  return pr->supported;
}

/* The slot of a stage's reason in broken_why. */
static int stage_slot(int stage) { return stage == NABLA_STAGE_MAP; }

int nabla_variant_usable(nabla_context *ctx, int id, int stage, char *why, size_t why_len) {
  if (!nabla_variant_probe_run(ctx, id, why, why_len)) return 0;
  const nabla_variant_probe *pr = &ctx->variants.probe[id];
  if (!(pr->broken & (unsigned)stage)) return 1;
  if (why && why_len) snprintf(why, why_len, "%s", pr->broken_why[stage_slot(stage)]);
  return 0;
}

void nabla_variant_mark_broken(nabla_context *ctx, int id, int stage, const char *why) {
  if (id < 0 || id >= NABLA_VARIANT_COUNT || id == NABLA_VARIANT_PORTABLE) return;
  if (stage != NABLA_STAGE_ATTENTION && stage != NABLA_STAGE_MAP) return;
  nabla_variant_probe *pr = &ctx->variants.probe[id];
  pr->broken |= (unsigned)stage;
  snprintf(pr->broken_why[stage_slot(stage)], sizeof pr->broken_why[0], "%s", why ? why : "failed");
}

int nabla_variant_tunable_allowed(nabla_context *ctx, int value) {
  return value < 0 || nabla_variant_usable(ctx, value, NABLA_STAGE_ATTENTION, NULL, 0);
}

/* ---- the choice -------------------------------------------------------------------------- */

/* The variant asked for, first match: forced on the context, the knob VARIANT (NABLACL_VARIANT),
 * the tuned VARIANT (params may be NULL); else NABLA_VARIANT_AUTO. */
static int requested_variant(const nabla_context *ctx, const nabla_params *params, const char **source) {
  const int knob = ctx->knobs[NABLA_KNOB_VARIANT];
  *source = "automatic";
  if (ctx->variants.forced) {
    *source = "forced";
    return ctx->variants.forced - 1;
  }
  if (knob >= 0 && knob < NABLA_VARIANT_COUNT) {
    *source = "NABLACL_VARIANT";
    return knob;
  }
  int p = params ? nabla_params_get(params, "VARIANT", NABLA_VARIANT_AUTO) : NABLA_VARIANT_AUTO;
  if (p >= 0 && p < NABLA_VARIANT_COUNT) {
    *source = "tuned";
    return p;
  }
  return NABLA_VARIANT_AUTO;
}

/* The variants the automatic choice tries on this device, highest rank first; returns how many. */
static int automatic_order(const nabla_context *ctx, int order[NABLA_VARIANT_COUNT]) {
  int n = 0;
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++) {
    const nabla_variant_ops *ops = variant_ops[id];
    if (ops->rank <= 0 || !ops->automatic || !ops->automatic(&ctx->caps)) continue;
    int at = n++;
    for (; at > 0 && variant_ops[order[at - 1]]->rank < ops->rank; at--) order[at] = order[at - 1];
    order[at] = id;
  }
  return n;
}

/* Whether a variant can take the problem on this context; else the reason into why. */
static int takes(nabla_context *ctx, int id, const nabla_shape *shape, nabla_dtype dtype, char *why, size_t len) {
  const nabla_variant_ops *ops = variant_ops[id];
  if (ops->eligible && !ops->eligible(shape, dtype, why, len)) return 0;
  return nabla_variant_usable(ctx, id, NABLA_STAGE_ATTENTION, why, len);
}

int nabla_attention_variant_choose(nabla_context *ctx, const nabla_shape *shape, nabla_dtype dtype,
                                   const nabla_params *params, char *note, size_t note_len) {
  note[0] = '\0';
  const char *source = "automatic";
  char why[384] = "";
  int want = requested_variant(ctx, params, &source);
  if (want == NABLA_VARIANT_PORTABLE) return NABLA_VARIANT_PORTABLE;
  if (want != NABLA_VARIANT_AUTO) {
    if (takes(ctx, want, shape, dtype, why, sizeof why)) return want;
    snprintf(note, note_len, "%s (%s) unavailable: %s; using portable", variant_names[want], source, why);
    return NABLA_VARIANT_PORTABLE;
  }
  /* Automatic: a device none of whose variants applies is no fallback worth a note; one whose
   * variants all fail gets the last one's reason. */
  int order[NABLA_VARIANT_COUNT];
  const int n = automatic_order(ctx, order);
  for (int i = 0; i < n; i++)
    if (takes(ctx, order[i], shape, dtype, why, sizeof why)) return order[i];
  if (n > 0)
    snprintf(note, note_len, "%s (%s) unavailable: %s; using portable", variant_names[order[n - 1]], source, why);
  return NABLA_VARIANT_PORTABLE;
}

/* Whether variant id's map kernel may run this shape here. */
static int map_takes(nabla_context *ctx, int id, const nabla_shape *shape) {
  const nabla_variant_ops *ops = variant_ops[id];
  if (!(ops->stages & NABLA_STAGE_MAP) || (ops->map.eligible && !ops->map.eligible(shape))) return 0;
  if (nabla_variant_test_aid(id)) return 1; /* forced emulations run as they are */
  return nabla_variant_usable(ctx, id, NABLA_STAGE_MAP, NULL, 0) && (!ops->map.ready || ops->map.ready(ctx, id));
}

int nabla_map_variant_choose(nabla_context *ctx, const nabla_shape *shape) {
  const char *source = NULL;
  int want = requested_variant(ctx, NULL, &source);
  if (want >= 0) {
    int id = variant_ops[want]->map_with;
    return id != NABLA_VARIANT_PORTABLE && map_takes(ctx, id, shape) ? id : NABLA_VARIANT_PORTABLE;
  }
  int order[NABLA_VARIANT_COUNT];
  const int n = automatic_order(ctx, order);
  for (int i = 0; i < n; i++) {
    int id = variant_ops[order[i]]->map_with;
    if (id != NABLA_VARIANT_PORTABLE && map_takes(ctx, id, shape)) return id;
  }
  return NABLA_VARIANT_PORTABLE;
}

/* ---- launch helpers ---------------------------------------------------------------------- */

/* Builds (or finds) the variant's program; a kernel whose local memory does not fit the device
 * makes the variant ineligible for the problem (NABLA_UNSUPPORTED, with the figures) before its
 * launch could fail with a bare CL_OUT_OF_RESOURCES. */
nabla_status nabla_variant_prepare(nabla_context *ctx, nabla_variant_call *call, int enqueue) {
  const nabla_variant_ops *ops = variant_ops[call->id];
  nabla_status st = NABLA_OK;
  cl_kernel kernel = NULL;
  if (ops->prepare) {
    TRY(st, ops->prepare(ctx, call, enqueue));
  } else {
    char options[512];
    ops->options(ctx, call, options, sizeof options);
    TRY(st, nabla_program_get(ctx, ops->program, options, &call->program));
  }
  TRY(st, nabla_kernel_create(ctx, call->program, "attention", &kernel));
  TRY(st, nabla_kernel_local_fits(ctx, kernel, nabla_variant_name(call->id)));
done:
  if (kernel) clReleaseKernel(kernel);
  return st;
}

size_t nabla_variant_args(const nabla_variant_call *call, nabla_kernel_arg args[12]) {
  size_t n = 0;
  args[n++] = NABLA_ARG(call->q);
  args[n++] = NABLA_ARG(call->k);
  args[n++] = NABLA_ARG(call->v);
  args[n++] = NABLA_ARG(call->o);
  args[n++] = NABLA_ARG(call->block_start);
  args[n++] = NABLA_ARG(call->row_ptr);
  args[n++] = NABLA_ARG(call->col_idx);
  args[n++] = NABLA_ARG(call->seq);
  args[n++] = NABLA_ARG(call->blocks);
  args[n++] = NABLA_ARG(call->scale_log2);
  for (int i = 0; i < call->extras; i++) args[n++] = NABLA_ARG(call->extra[i]);
  return n;
}

/* ---- public API -------------------------------------------------------------------------- */

int nabla_variant_eligible_16x16(const nabla_shape *shape, nabla_dtype dtype, char *why, size_t len) {
  if (dtype != NABLA_F16 && dtype != NABLA_BF16) {
    snprintf(why, len, "needs f16 or bf16 storage, not %s", nabla_dtype_name(dtype));
    return 0;
  }
  if (shape->head_dim % 16 != 0 || shape->head_dim > 128) {
    snprintf(why, len, "needs head_dim a multiple of 16 up to 128, not %d", shape->head_dim);
    return 0;
  }
  return 1;
}

const char *nabla_variant_names(void) { return NABLA_VARIANT_NAMES; }

int nabla_variant_supported(nabla_context *ctx, const char *variant) {
  if (!ctx || !variant) return 0;
  int id = nabla_variant_id(variant);
  char why[384];
  if (id < 0) {
    snprintf(ctx->variants.note, sizeof ctx->variants.note, "\"%.64s\" is no variant", variant);
    return 0;
  }
  int ok = nabla_variant_usable(ctx, id, NABLA_STAGE_ATTENTION, why, sizeof why);
  if (ok) ctx->variants.note[0] = '\0';
  else snprintf(ctx->variants.note, sizeof ctx->variants.note, "%s: %s", variant, why);
  return ok;
}

nabla_status nabla_variant_list(nabla_context *ctx, char *buf, size_t len) {
  if (!ctx || !buf || !len) return NABLA_INVALID_ARGUMENT;
  buf[0] = '\0';
  size_t off = 0;
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++) {
    if (variant_test_aid[id]) continue; /* test aids, not device capabilities */
    if (!nabla_variant_usable(ctx, id, NABLA_STAGE_ATTENTION, NULL, 0)) continue;
    int n = snprintf(buf + off, len - off, "%s%s", off ? " " : "", variant_names[id]);
    if (n < 0 || (size_t)n >= len - off) return NABLA_BUFFER_TOO_SMALL;
    off += (size_t)n;
  }
  return NABLA_OK;
}

nabla_status nabla_variant_force(nabla_context *ctx, const char *variant) {
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  int id = nabla_variant_id(variant);
  if (id == -2)
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "unknown variant \"%.64s\" (%s)", variant, NABLA_VARIANT_NAMES);
  ctx->variants.forced = id == NABLA_VARIANT_AUTO ? 0 : id + 1;
  return NABLA_OK;
}

const char *nabla_variant_note(const nabla_context *ctx) { return ctx ? ctx->variants.note : ""; }

const char *nabla_variant_last(const nabla_context *ctx) { return ctx ? ctx->variants.last : ""; }
