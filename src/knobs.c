/* The knob table, the environment read at context creation, and nabla_knob_set / _get. */
#include "knobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

_Static_assert(NABLA_VARIANT_COUNT <= 32, "a knob's readers are bits of an unsigned");

#define V(id) (1u << NABLA_VARIANT_##id)
#define TENSOR_CORES (V(NVIDIA_MMA) | V(MMA_EMULATED) | V(NVIDIA_WGMMA) | V(WGMMA_EMULATED))

typedef struct {
  const char *name;     /* what nabla_knob_set takes */
  const char *env;      /* the environment variable read at context creation */
  int lo, hi;           /* a whole decimal number in [lo, hi] (VARIANT: a variant name) */
  int fallback;         /* the value when not set (NABLA_KNOB_UNSET: the reader's own default) */
  const char *unset;    /* what "not set" means, in words */
  unsigned readers;     /* bit per variant id that reads it (0: the choice of variant) */
  const char *help;
} knob_desc;

static const knob_desc knob_table[NABLA_KNOB_COUNT] = {
    [NABLA_KNOB_VARIANT] = {"VARIANT", "NABLACL_VARIANT", NABLA_VARIANT_AUTO, NABLA_VARIANT_COUNT - 1,
                            NABLA_VARIANT_AUTO, "auto", 0,
                            "the attention variant to use (after nabla_variant_force, before the tuned VARIANT)"},
    [NABLA_KNOB_MMA_LAZY_RESCALE] = {"MMA_LAZY_RESCALE", "NABLACL_MMA_LAZY_RESCALE", 0, 15, NABLA_KNOB_UNSET,
                                     "12 for nvidia-wgmma, 0 for nvidia-mma", TENSOR_CORES,
                                     "softmax maxima threshold (log2 units): a row's reference maximum moves only "
                                     "when a block exceeds it by more; 0 follows every increase"},
    [NABLA_KNOB_WG_BULK] = {"WG_BULK", "NABLACL_WG_BULK", 0, 2, 2, "2", V(NVIDIA_WGMMA) | V(WGMMA_EMULATED),
                            "K/V staging: 2 tensor copies, 1 bulk copies of tile images packed first, 0 rows; "
                            "one that cannot be had falls back to the next"},
    [NABLA_KNOB_MMA_QPW] = {"MMA_QPW", "NABLACL_MMA_QPW", 1, 2, NABLA_KNOB_UNSET,
                            "2 for nvidia-mma on dense attention, else 1", TENSOR_CORES,
                            "query blocks per work-group"},
    [NABLA_KNOB_MMA_SMEM] = {"MMA_SMEM", "NABLACL_MMA_SMEM", 0, 1, 1, "1", V(NVIDIA_MMA) | V(MMA_EMULATED),
                             "0 turns the ldmatrix/cp.async path of the mma kernel off"},
    [NABLA_KNOB_MMA_MAXRREG] = {"MMA_MAXRREG", "NABLACL_MMA_MAXRREG", 0, 255, 0, "0, no cap",
                                V(NVIDIA_MMA) | V(NVIDIA_WGMMA),
                                "register cap of the tensor-core kernels (64..255; below 64 no cap)"},
    [NABLA_KNOB_INTEL_DPAS_SG16] = {"INTEL_DPAS_SG16", "NABLACL_INTEL_DPAS_SG16", 0, 1, 0, "0",
                                    V(INTEL_DPAS_EMULATED),
                                    "1: the emulated intel-dpas kernel takes Xe-HPC's layout (sub-groups of 16, "
                                    "8-row tiles) instead of Xe-HPG's (8, 4-row tiles)"},
    [NABLA_KNOB_WG_SPLIT] = {"WG_SPLIT", "NABLACL_WG_SPLIT", 1, 2, NABLA_KNOB_UNSET,
                             "2 where one head's K and V pass 40 MiB, else 1", V(NVIDIA_WGMMA) | V(WGMMA_EMULATED),
                             "work-groups per query block, each with its half of the key blocks (2 needs MMA_QPW 1)"},
};

/* The knob of a name, with or without the NABLACL_ prefix; -1 if none. */
static int knob_find(const char *name) {
  if (!name) return -1;
  if (strncmp(name, "NABLACL_", 8) == 0) name += 8;
  for (int i = 0; i < NABLA_KNOB_COUNT; i++)
    if (strcmp(knob_table[i].name, name) == 0) return i;
  return -1;
}

/* Parses `text` for knob i into *value; 0 and the valid values in words (why) if it is none. */
static int knob_parse(int i, const char *text, int *value, char *why, size_t len) {
  const knob_desc *k = &knob_table[i];
  if (i == NABLA_KNOB_VARIANT) {
    int id = nabla_variant_id(text);
    if (id == -2) {
      snprintf(why, len, "no variant; valid: %s", NABLA_VARIANT_NAMES);
      return 0;
    }
    *value = id;
    return 1;
  }
  char *end = NULL;
  long v = strtol(text, &end, 10);
  if (!*text || *end || v < k->lo || v > k->hi) {
    snprintf(why, len, "not a whole number in %d..%d (unset: %s)", k->lo, k->hi, k->unset);
    return 0;
  }
  *value = (int)v;
  return 1;
}

nabla_status nabla_knobs_from_env(nabla_context *ctx, char *err, size_t err_len) {
  char why[256];
  for (int i = 0; i < NABLA_KNOB_COUNT; i++) {
    const char *env = getenv(knob_table[i].env);
    ctx->knobs[i] = knob_table[i].fallback;
    if (!env || !*env) continue; /* an empty variable is an unset one */
    if (!knob_parse(i, env, &ctx->knobs[i], why, sizeof why)) {
      if (err && err_len) snprintf(err, err_len, "%s=%.64s: %s", knob_table[i].env, env, why);
      return NABLA_INVALID_ARGUMENT;
    }
  }
  return NABLA_OK;
}

/* The knob names, space-separated, for messages. */
static void knob_names(char *buf, size_t len) {
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < NABLA_KNOB_COUNT && off < len; i++) {
    int n = snprintf(buf + off, len - off, "%s%s", i ? " " : "", knob_table[i].name);
    if (n < 0) break;
    off += (size_t)n;
  }
}

nabla_status nabla_knob_set(nabla_context *ctx, const char *name, const char *value) {
  char why[256];
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  int i = knob_find(name);
  if (i < 0) {
    knob_names(why, sizeof why);
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "unknown knob \"%.64s\" (%s)", name ? name : "(null)", why);
  }
  int v = knob_table[i].fallback;
  if (value && *value && !knob_parse(i, value, &v, why, sizeof why))
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "knob %s=%.64s: %s", knob_table[i].name, value, why);
  ctx->knobs[i] = v;
  return NABLA_OK;
}

nabla_status nabla_knob_get(nabla_context *ctx, const char *name, char *buf, size_t len) {
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  int i = knob_find(name);
  char names[256];
  if (i < 0) {
    knob_names(names, sizeof names);
    return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "unknown knob \"%.64s\" (%s)", name ? name : "(null)", names);
  }
  if (!buf || !len) return nabla_fail(ctx, NABLA_INVALID_ARGUMENT, "buf is NULL or len is 0");
  const int v = ctx->knobs[i];
  int n = v == NABLA_KNOB_UNSET         ? snprintf(buf, len, "%s", "")
          : i == NABLA_KNOB_VARIANT     ? snprintf(buf, len, "%s", nabla_variant_name(v))
                                        : snprintf(buf, len, "%d", v);
  if (n < 0 || (size_t)n >= len) return nabla_fail(ctx, NABLA_BUFFER_TOO_SMALL, "knob value needs %d bytes", n + 1);
  return NABLA_OK;
}

nabla_status nabla_knob_describe(int index, char *buf, size_t len) {
  if (index < 0 || index >= NABLA_KNOB_COUNT) return NABLA_NOT_FOUND;
  if (!buf || !len) return NABLA_INVALID_ARGUMENT;
  const knob_desc *k = &knob_table[index];
  char range[64], readers[256] = "";
  if (index == NABLA_KNOB_VARIANT) snprintf(range, sizeof range, "a variant name");
  else snprintf(range, sizeof range, "%d..%d", k->lo, k->hi);
  size_t off = 0;
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++)
    if (k->readers & (1u << id)) {
      int n = snprintf(readers + off, sizeof readers - off, "%s%s", off ? ", " : "", nabla_variant_name(id));
      if (n < 0 || (size_t)n >= sizeof readers - off) break;
      off += (size_t)n;
    }
  int n = snprintf(buf, len, "%s\t%s\t%s\tunset: %s\tread by: %s\t%s", k->name, k->env, range, k->unset,
                   readers[0] ? readers : "the variant choice", k->help);
  return n < 0 || (size_t)n >= len ? NABLA_BUFFER_TOO_SMALL : NABLA_OK;
}
