/*
 * The kernel variants of the attention stage: the one list every name, id and help text is made
 * from. A row is X(id, ENUM, "name", ops, test_aid):
 *   id        stable: it is the value of the tunable VARIANT and is kept in tuning caches, so a
 *             new variant takes the next free number and no id is ever reused;
 *   ENUM      NABLA_VARIANT_<ENUM>;
 *   "name"    what nabla_variant_force, NABLACL_VARIANT and `nablacl bench --variant` take;
 *   ops       the variant's operations table (variant.h), defined in its own file under
 *             src/variants/;
 *   test_aid  1 for an emulation that only runs when forced (it checks a kernel's logic on any
 *             device), else 0; test aids are no VARIANT candidates and are not listed as device
 *             capabilities.
 * docs/architecture.md says how to add a variant; docs/variants.md describes each.
 *
 * This header is a leaf (the tuning code includes it for VARIANT's candidates); the operations
 * tables and the choice are in variant.h.
 */
#ifndef NABLA_VARIANTS_REGISTRY_H
#define NABLA_VARIANTS_REGISTRY_H

#include "internal.h"

#define NABLA_VARIANT_LIST(X)                                                          \
  X(0, PORTABLE, "portable", nabla_variant_portable, 0)                                 \
  X(1, NVIDIA_MMA, "nvidia-mma", nabla_variant_nvidia_mma, 0)                           \
  X(2, MMA_EMULATED, "nvidia-mma-emulated", nabla_variant_nvidia_mma_emulated, 1)       \
  X(3, CPU_ROWS, "cpu-rows", nabla_variant_cpu_rows, 0)                                 \
  X(4, NVIDIA_WGMMA, "nvidia-wgmma", nabla_variant_nvidia_wgmma, 0)                     \
  X(5, WGMMA_EMULATED, "nvidia-wgmma-emulated", nabla_variant_nvidia_wgmma_emulated, 1) \
  X(6, INTEL_DPAS, "intel-dpas", nabla_variant_intel_dpas, 0)                           \
  X(7, INTEL_DPAS_EMULATED, "intel-dpas-emulated", nabla_variant_intel_dpas_emulated, 1)

#define NABLA_VARIANT_ENUM_(id, e, name, ops, aid) NABLA_VARIANT_##e = id,
#define NABLA_VARIANT_ONE_(id, e, name, ops, aid) +1
enum {
  NABLA_VARIANT_AUTO = -1,
  NABLA_VARIANT_LIST(NABLA_VARIANT_ENUM_)
  NABLA_VARIANT_COUNT = 0 NABLA_VARIANT_LIST(NABLA_VARIANT_ONE_)
};

/* The values of the tunable VARIANT: -1 (automatic), then every variant but the test aids, and
 * its help text ("-1 automatic, 0 portable, ..."). */
#define NABLA_VARIANT_CAND_0(id) , id
#define NABLA_VARIANT_CAND_1(id)
#define NABLA_VARIANT_CAND_(id, e, name, ops, aid) NABLA_VARIANT_CAND_##aid(id)
#define NABLA_VARIANT_CANDIDATES NABLA_VARIANT_AUTO NABLA_VARIANT_LIST(NABLA_VARIANT_CAND_)
#define NABLA_VARIANT_NCAND_(id, e, name, ops, aid) +(1 - (aid))
#define NABLA_VARIANT_CANDIDATE_COUNT (1 NABLA_VARIANT_LIST(NABLA_VARIANT_NCAND_))
#define NABLA_VARIANT_HELP_0(id, name) ", " #id " " name
#define NABLA_VARIANT_HELP_1(id, name)
#define NABLA_VARIANT_HELP_(id, e, name, ops, aid) NABLA_VARIANT_HELP_##aid(id, name)
#define NABLA_VARIANT_CANDIDATE_HELP "-1 automatic" NABLA_VARIANT_LIST(NABLA_VARIANT_HELP_)

/* Every name, "auto" first, comma-separated: for messages and help. */
#define NABLA_VARIANT_NAME_(id, e, name, ops, aid) ", " name
#define NABLA_VARIANT_NAMES "auto" NABLA_VARIANT_LIST(NABLA_VARIANT_NAME_)

/* Name of a variant id ("portable", ...); "auto" for NABLA_VARIANT_AUTO, NULL if unknown. */
const char *nabla_variant_name(int id);
/* Id of a name (case-sensitive; "auto" and "" are NABLA_VARIANT_AUTO); -2 if unknown. */
int nabla_variant_id(const char *name);
/* Whether a variant is a test aid (the list's last column); 0 for unknown ids. */
int nabla_variant_test_aid(int id);
/* Availability of a VARIANT value on the context's device (the tunable's `allowed`): -1 always,
 * a variant where it is usable for attention (its probe passed). */
int nabla_variant_tunable_allowed(nabla_context *ctx, int value);

#endif
