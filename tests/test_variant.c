/*
 * Kernel variants: probes, names, forcing and fallback, and the mma attention kernel against the
 * float64 reference. On every device the "nvidia-mma-emulated" variant runs the mma kernel's
 * fragment logic with PTX emulated in local memory; on NVIDIA devices whose probe passes the
 * real "nvidia-mma" kernel is checked too (with and without the ldmatrix/cp.async path, and
 * with one and two query blocks per work-group).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "kernels.h"
#include "nvidia.h"
#include "intel_dpas.h"
#include "variant.h"

/* Sets a knob on a context (value NULL: its default); a refusal fails the test. */
#define KNOB(c, name, value) assert_int_equal(nabla_knob_set((c), (name), (value)), NABLA_OK)

#define CTX_OR_SKIP(state)        \
  nabla_context *ctx = *(state); \
  if (!ctx) skip()


static int is_nvidia(nabla_context *ctx) {
  char vendor[256] = "";
  clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_VENDOR, sizeof vendor - 1, vendor, NULL);
  return strstr(vendor, "NVIDIA") != NULL;
}

static int is_cpu(nabla_context *ctx) {
  cl_device_type type = 0;
  clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_TYPE, sizeof type, &type, NULL);
  return (type & CL_DEVICE_TYPE_CPU) != 0;
}

/* Device vs reference (tu_attend_vs_reference) with the context's current variant setting;
 * checks that `expect` was the variant used, and not with its bulk copies silently off.
 * q_scale sets the logits' spread: 1.5 is ordinary; 16 makes rows whose maxima jump by more than
 * the tensor-core kernels' lazy-rescale threshold from block to block, and others that creep up
 * under it. */
static void run_case_q(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, double density,
                       double q_scale, uint64_t seed, const char *expect) {
  double err = tu_attend_vs_reference(ctx, &s, dtype, density, q_scale, seed), tol = tu_tolerance(dtype);
  if (strcmp(nabla_variant_last(ctx), expect) != 0)
    fail_msg("ran %s, expected %s (%s)", nabla_variant_last(ctx), expect, nabla_variant_note(ctx));
  if (strstr(nabla_variant_note(ctx), "copies off")) /* wgmma fell back to slower staging */
    fail_msg("%s", nabla_variant_note(ctx));
  if (getenv("NABLACL_TEST_VERBOSE"))
    print_message("  %s B%d H%d S%d D%d %s density %.2f: max abs error %.3g\n", expect, s.batch,
                  s.heads, s.seq, s.head_dim, nabla_dtype_name(dtype), density, err);
  if (!(err <= tol))
    fail_msg("%s B%d H%d S%d D%d grid %dx%dx%d %s density %.2f: max abs error %.3g > %.3g", expect,
             s.batch, s.heads, s.seq, s.head_dim, s.grid_t, s.grid_h, s.grid_w,
             nabla_dtype_name(dtype), density, err, tol);
}

/* run_case_q with ordinary logits. */
static void run_case(nabla_context *ctx, nabla_shape s, nabla_dtype dtype, double density,
                     uint64_t seed, const char *expect) {
  run_case_q(ctx, s, dtype, density, 1.5, seed, expect);
}

/* Every mma case: ragged grids, several head dims, batch > 1, empty rows, dense. */
static void run_mma_cases(nabla_context *ctx, const char *variant, int big) {
  const nabla_shape shapes[] = {
      {2, 2, 720, 64, 3, 12, 20},  /* ragged 8x8 tiles, batch 2 */
      {1, 3, 234, 32, 2, 9, 13},   /* ragged, 2 k-steps */
      {1, 2, 200, 48, 0, 0, 0},    /* plain sequence, ragged last block, odd k-steps */
      {1, 1, 130, 16, 0, 0, 0},    /* one k-step */
      {1, 2, 300, 128, 3, 10, 10}, /* the Wan head dim */
  };
  const nabla_dtype dts[] = {NABLA_BF16, NABLA_F16};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (int d = 0; d < 2; d++) run_case(ctx, shapes[i], dts[d], 0.4, 100 + 10 * i + d, variant);
  run_case(ctx, shapes[0], NABLA_BF16, -1.0, 7, variant);
  run_case(ctx, shapes[4], NABLA_F16, -1.0, 8, variant);
  run_case_q(ctx, shapes[0], NABLA_F16, 0.6, 16.0, 6, variant); /* huge logits */
  if (big) {
    nabla_shape wan = {1, 4, 3600, 128, 4, 30, 30};
    run_case(ctx, wan, NABLA_BF16, 0.1, 9, variant);
    run_case(ctx, wan, NABLA_BF16, -1.0, 10, variant);
  }
}

/* The registry's list and tables agree (a new variant's row and file are checked here): names
 * round-trip and are unique, every table can build and size a launch, the VARIANT tunable offers
 * every variant but the test aids, and every kernel source a variant lists, with its preludes,
 * is embedded. */
static int embedded(const char *name) {
  for (size_t i = 0; i < nabla_kernel_source_count; i++)
    if (strcmp(nabla_kernel_sources[i].name, name) == 0) return 1;
  return 0;
}

static void test_registry_tables(void **state) {
  (void)state;
  const nabla_kernel_space *att = nabla_kernel_space_find("attention");
  const nabla_tunable *tv = NULL;
  assert_non_null(att);
  for (int i = 0; i < NABLA_MAX_PARAMS && att->params[i].name; i++)
    if (strcmp(att->params[i].name, "VARIANT") == 0) tv = &att->params[i];
  assert_non_null(tv);
  assert_int_equal(tv->candidates[0], NABLA_VARIANT_AUTO);
  int offered = 1;
  for (int id = 0; id < NABLA_VARIANT_COUNT; id++) {
    const char *name = nabla_variant_name(id);
    const nabla_variant_ops *ops = nabla_variant_ops_of(id);
    assert_non_null(name);
    assert_non_null(ops);
    assert_int_equal(nabla_variant_id(name), id);
    assert_non_null(strstr(nabla_variant_names(), name));
    if (!ops->program || !ops->options || !ops->work_sizes || !(ops->stages & NABLA_STAGE_ATTENTION))
      fail_msg("%s: program, options, work_sizes and the attention stage are required", name);
    if (!embedded(ops->program)) fail_msg("%s: no cl/%s.cl", name, ops->program);
    if ((ops->stages & NABLA_STAGE_MAP) && (!ops->map.program || !ops->map.kernel || !ops->map.options))
      fail_msg("%s: a map stage without its program, kernel or options", name);
    if (!nabla_variant_ops_of(ops->map_with)) fail_msg("%s: map_with is no variant", name);
    if (ops->map_with != NABLA_VARIANT_PORTABLE && !(nabla_variant_ops_of(ops->map_with)->stages & NABLA_STAGE_MAP))
      fail_msg("%s: map_with names a variant without a map kernel", name);
    for (const nabla_kernel_source_desc *d = ops->sources; d && d->name; d++) {
      if (!embedded(d->name)) fail_msg("%s: no cl/%s.cl", name, d->name);
      for (int p = 0; p < 3 && d->prelude[p]; p++)
        if (!embedded(d->prelude[p])) fail_msg("%s: no prelude cl/%s.cl", name, d->prelude[p]);
    }
    int listed = 0;
    for (int c = 0; c < tv->count; c++) listed |= tv->candidates[c] == id;
    assert_int_equal(listed, !nabla_variant_test_aid(id));
    if (listed && !strstr(tv->help, name)) fail_msg("VARIANT's help \"%s\" lacks %s", tv->help, name);
    offered += listed;
    for (int other = 0; other < id; other++) assert_string_not_equal(nabla_variant_name(other), name);
  }
  assert_int_equal(tv->count, offered);
  assert_null(nabla_variant_name(NABLA_VARIANT_COUNT));
  assert_int_equal(nabla_variant_id("wgma"), -2);
}

static void test_names_and_force(void **state) {
  CTX_OR_SKIP(state);
  assert_int_equal(nabla_variant_force(ctx, "no-such-variant"), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_variant_supported(ctx, "no-such-variant"), 0);
  assert_int_equal(nabla_variant_supported(NULL, "portable"), 0);
  assert_int_equal(nabla_variant_supported(ctx, "portable"), 1);
  assert_int_equal(nabla_variant_supported(ctx, "nvidia-mma-emulated"), 1);
  char buf[128];
  assert_int_equal(nabla_variant_list(ctx, buf, sizeof buf), NABLA_OK);
  assert_non_null(strstr(buf, "portable"));
  assert_null(strstr(buf, "emulated"));
  assert_int_equal(nabla_variant_list(ctx, buf, 3), NABLA_BUFFER_TOO_SMALL);

  nabla_shape s = {1, 2, 256, 64, 0, 0, 0};
  assert_int_equal(nabla_variant_force(ctx, "portable"), NABLA_OK);
  assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "portable");
  assert_int_equal(nabla_variant_force(ctx, "nvidia-mma-emulated"), NABLA_OK);
  assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "nvidia-mma-emulated");
  assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_BF16, buf, 4), NABLA_BUFFER_TOO_SMALL);
  /* Ineligible problems fall back, with a note. */
  assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_F32, buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "portable");
  assert_non_null(strstr(nabla_variant_note(ctx), "f32"));
  nabla_shape d8 = {1, 1, 130, 8, 0, 0, 0};
  assert_int_equal(nabla_attention_variant(ctx, &d8, NABLA_F16, buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "portable");
  assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
  assert_int_equal(nabla_variant_force(ctx, "auto"), NABLA_OK);
  /* Automatic choice never picks the emulation. */
  assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
  assert_null(strstr(buf, "emulated"));
}

static void test_probe_by_vendor(void **state) {
  CTX_OR_SKIP(state);
  int mma = nabla_variant_supported(ctx, "nvidia-mma");
  if (!is_nvidia(ctx)) {
    assert_int_equal(mma, 0);
    assert_non_null(strstr(nabla_variant_note(ctx), "not an NVIDIA device"));
  } else {
    print_message("nvidia-mma probe: %s%s\n", mma ? "supported" : "unsupported: ",
                  mma ? "" : nabla_variant_note(ctx));
  }
  char buf[128];
  nabla_shape s = {1, 2, 256, 64, 0, 0, 0};
  assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
  /* The automatic choice: Hopper's wgmma, else mma.sync where the probes passed, the
   * row-shaped kernel on CPUs. */
  int wg = nabla_variant_supported(ctx, "nvidia-wgmma");
  if (!is_nvidia(ctx)) {
    assert_int_equal(wg, 0);
    assert_non_null(strstr(nabla_variant_note(ctx), "not an NVIDIA device"));
  }
  assert_string_equal(buf, wg ? "nvidia-wgmma" : mma ? "nvidia-mma" : is_cpu(ctx) ? "cpu-rows" : "portable");
  /* Asking twice gives the same verdict (memoized, and cached on disk). */
  assert_int_equal(nabla_variant_supported(ctx, "nvidia-mma"), mma);
  /* Intel's matrix engines: Intel GPUs only (Intel's CPU runtime is no GPU). */
  int dpas = nabla_variant_supported(ctx, "intel-dpas");
  cl_device_type type = 0;
  clGetDeviceInfo(nabla_context_device(ctx), CL_DEVICE_TYPE, sizeof type, &type, NULL);
  if (!(type & CL_DEVICE_TYPE_GPU)) {
    assert_int_equal(dpas, 0);
    assert_non_null(strstr(nabla_variant_note(ctx), "not an Intel GPU"));
  } else {
    print_message("intel-dpas probe: %s%s\n", dpas ? "supported" : "unsupported: ", dpas ? "" : nabla_variant_note(ctx));
  }
}

static void test_knob_forces_and_falls_back(void **state) {
  CTX_OR_SKIP(state);
  char buf[128];
  nabla_shape s = {1, 2, 256, 64, 0, 0, 0};
  assert_int_equal(nabla_knob_set(ctx, "VARIANT", "portable"), NABLA_OK);
  assert_int_equal(nabla_attention_variant(ctx, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "portable");
  /* A misspelt name is refused with the valid ones, and the knob keeps its value. */
  assert_int_equal(nabla_knob_set(ctx, "VARIANT", "wgma"), NABLA_INVALID_ARGUMENT);
  assert_non_null(strstr(nabla_last_error(ctx), "wgma"));
  assert_non_null(strstr(nabla_last_error(ctx), nabla_variant_names()));
  assert_int_equal(nabla_knob_get(ctx, "NABLACL_VARIANT", buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "portable");
  assert_int_equal(nabla_knob_set(ctx, "VARIANT", "nvidia-mma"), NABLA_OK);
  if (!nabla_variant_supported(ctx, "nvidia-mma")) {
    /* Asked for but impossible: attention still works, through portable. */
    run_case(ctx, s, NABLA_BF16, 0.5, 3, "portable");
    assert_non_null(strstr(nabla_variant_note(ctx), "unavailable"));
  }
  assert_int_equal(nabla_knob_set(ctx, "VARIANT", NULL), NABLA_OK);
  assert_int_equal(nabla_knob_get(ctx, "VARIANT", buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "auto");
}

/* The environment is read when a context is created: a misspelt variant or a knob out of range
 * fails the creation with a message naming the variable and the valid values; a good value is
 * the new context's. */
static void test_knobs_from_environment(void **state) {
  CTX_OR_SKIP(state);
  static const struct {
    const char *var, *value, *want;
  } bad[] = {{"NABLACL_VARIANT", "wgma", "NABLACL_VARIANT=wgma: no variant; valid: auto, portable, "},
             {"NABLACL_MMA_QPW", "3", "NABLACL_MMA_QPW=3: not a whole number in 1..2"},
             {"NABLACL_MMA_LAZY_RESCALE", "8x", "NABLACL_MMA_LAZY_RESCALE=8x: not a whole number in 0..15"},
             {"NABLACL_WG_BULK", "-1", "NABLACL_WG_BULK=-1"},
             {"NABLACL_MMA_SMEM", "2", "NABLACL_MMA_SMEM=2"},
             {"NABLACL_MMA_MAXRREG", "300", "NABLACL_MMA_MAXRREG=300"}};
  char err[512], buf[64];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tu_env saved = tu_env_save(bad[i].var);
    nabla_context *c = NULL;
    setenv(bad[i].var, bad[i].value, 1);
    err[0] = '\0';
    assert_int_equal(nabla_context_create(&c, NULL, err, sizeof err), NABLA_INVALID_ARGUMENT);
    assert_null(c);
    if (!strstr(err, bad[i].want)) fail_msg("%s=%s: \"%s\" lacks \"%s\"", bad[i].var, bad[i].value, err, bad[i].want);
    setenv(bad[i].var, "", 1); /* empty is unset */
    assert_int_equal(nabla_context_create(&c, NULL, err, sizeof err), NABLA_OK);
    nabla_context_destroy(c);
    c = NULL;
    tu_env_restore(&saved);
  }
  tu_env saved = tu_env_save("NABLACL_MMA_QPW");
  setenv("NABLACL_MMA_QPW", "2", 1);
  nabla_context *c = tu_context();
  assert_non_null(c);
  tu_env_restore(&saved);
  assert_int_equal(nabla_knob_get(c, "MMA_QPW", buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "2");
  assert_int_equal(nabla_knob_get(c, "MMA_LAZY_RESCALE", buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, ""); /* the kernels' own default */
  assert_int_equal(nabla_knob_set(c, "NO_SUCH_KNOB", "1"), NABLA_INVALID_ARGUMENT);
  assert_non_null(strstr(nabla_last_error(c), "MMA_MAXRREG"));
  assert_int_equal(nabla_knob_get(c, "WG_BULK", buf, 1), NABLA_BUFFER_TOO_SMALL);
  nabla_context_destroy(c);
  /* Every knob describes itself, with its variable. */
  int count = 0;
  while (nabla_knob_describe(count, err, sizeof err) == NABLA_OK) {
    assert_non_null(strstr(err, "NABLACL_"));
    count++;
  }
  assert_int_equal(count, NABLA_KNOB_COUNT);
}

/* A kernel that does not build costs its variant that stage alone, with that stage's reason:
 * the tensor-core map and the attention are separate programs, and nvidia-wgmma's probe needs
 * nvidia-mma's capability, not its map. Checked on contexts of their own (breakage lasts for a
 * context's life): with the emulated variant, which every device probes, through the accessors
 * and the attention choice (the emulated map is a test aid that ignores breakage); on NVIDIA,
 * with nvidia-mma's real map and attention choices too. */
static void test_broken_is_per_stage(void **state) {
  CTX_OR_SKIP(state);
  const int id = NABLA_VARIANT_MMA_EMULATED;
  const nabla_shape s = {1, 2, 256, 64, 0, 0, 0};
  char why[384], buf[64];
  nabla_context *own = tu_context();
  assert_non_null(own);
  assert_true(nabla_variant_usable(own, id, NABLA_STAGE_ATTENTION, why, sizeof why));
  assert_true(nabla_variant_usable(own, id, NABLA_STAGE_MAP, why, sizeof why));
  nabla_variant_mark_broken(own, id, NABLA_STAGE_MAP, "map: no build");
  assert_false(nabla_variant_usable(own, id, NABLA_STAGE_MAP, why, sizeof why));
  assert_string_equal(why, "map: no build");
  assert_true(nabla_variant_usable(own, id, NABLA_STAGE_ATTENTION, why, sizeof why));
  assert_true(nabla_variant_probe_run(own, id, NULL, 0));
  assert_true(nabla_variant_supported(own, "nvidia-mma-emulated"));
  assert_int_equal(nabla_variant_force(own, "nvidia-mma-emulated"), NABLA_OK);
  assert_int_equal(nabla_attention_variant(own, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "nvidia-mma-emulated");
  nabla_variant_mark_broken(own, id, NABLA_STAGE_ATTENTION, "attention: no build");
  assert_int_equal(nabla_attention_variant(own, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
  assert_string_equal(buf, "portable");
  assert_non_null(strstr(nabla_variant_note(own), "attention: no build"));
  assert_false(nabla_variant_supported(own, "nvidia-mma-emulated"));
  assert_non_null(strstr(nabla_variant_note(own), "attention: no build"));
  assert_false(nabla_variant_usable(own, id, NABLA_STAGE_MAP, why, sizeof why)); /* each its own */
  assert_string_equal(why, "map: no build");
  nabla_context_destroy(own);

  if (is_nvidia(ctx) && nabla_variant_probe_run(ctx, NABLA_VARIANT_NVIDIA_MMA, NULL, 0)) {
    own = tu_context(); /* the map broken before anything else asked for nvidia-mma */
    assert_non_null(own);
    nabla_variant_mark_broken(own, NABLA_VARIANT_NVIDIA_MMA, NABLA_STAGE_MAP, "map: no build");
    /* wgmma's probe (a no on a GPU before Hopper either way) */
    assert_int_equal(nabla_variant_usable(own, NABLA_VARIANT_NVIDIA_WGMMA, NABLA_STAGE_ATTENTION, NULL, 0),
                     nabla_variant_probe_run(ctx, NABLA_VARIANT_NVIDIA_WGMMA, NULL, 0));
    assert_int_equal(nabla_variant_force(own, "nvidia-mma"), NABLA_OK); /* over NABLACL_VARIANT */
    assert_int_equal(nabla_map_variant_choose(own, &s), NABLA_VARIANT_PORTABLE);
    assert_int_equal(nabla_attention_variant(own, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
    assert_string_equal(buf, "nvidia-mma");
    nabla_context_destroy(own);
  }
}

/* The emulation is slow: a selection that still covers every path of the kernel. */
static void test_emulated_matches_reference(void **state) {
  CTX_OR_SKIP(state);
  const char *emu = "nvidia-mma-emulated";
  const nabla_shape ragged = {2, 2, 720, 64, 3, 12, 20}, odd = {1, 3, 234, 32, 2, 9, 13};
  const nabla_shape seq48 = {1, 2, 200, 48, 0, 0, 0}, d16 = {1, 1, 130, 16, 0, 0, 0};
  const nabla_shape d128 = {1, 2, 300, 128, 3, 10, 10};
  assert_int_equal(nabla_variant_force(ctx, emu), NABLA_OK);
  KNOB(ctx, "MMA_QPW", "1");
  run_case(ctx, ragged, NABLA_BF16, 0.4, 1, emu);
  run_case(ctx, odd, NABLA_F16, 0.4, 2, emu);
  run_case(ctx, seq48, NABLA_BF16, 0.5, 3, emu);
  run_case(ctx, d16, NABLA_F16, -1.0, 4, emu);
  run_case(ctx, d128, NABLA_F16, 0.3, 5, emu);
  run_case_q(ctx, ragged, NABLA_F16, 0.6, 16.0, 10, emu); /* huge logits */
  KNOB(ctx, "MMA_LAZY_RESCALE", "8"); /* lazy row maxima */
  run_case_q(ctx, ragged, NABLA_F16, 0.6, 16.0, 11, emu);
  run_case(ctx, d128, NABLA_BF16, 0.5, 12, emu);
  KNOB(ctx, "MMA_LAZY_RESCALE", NULL);
  KNOB(ctx, "MMA_SMEM", "0"); /* plain local loads instead of (emulated) ldmatrix */
  run_case(ctx, odd, NABLA_BF16, 0.4, 6, emu);
  run_case(ctx, seq48, NABLA_F16, -1.0, 7, emu);
  KNOB(ctx, "MMA_SMEM", NULL);
  KNOB(ctx, "MMA_QPW", "2"); /* two query blocks share the staged K/V */
  run_case(ctx, odd, NABLA_F16, 0.4, 8, emu); /* odd block count: a missing second block */
  run_case(ctx, seq48, NABLA_BF16, -1.0, 9, emu);
  KNOB(ctx, "MMA_QPW", NULL);
  assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
}

/* A ragged block's tile must not carry its neighbours' rows into the result: tensor copies
 * fetch whole 64-row boxes. Head 0 keeps only its last block (4 rows, followed by head 1's),
 * head 1 only a middle one (16 rows); every other key is NaN and every other value +Inf, which a
 * key not masked or a value not zeroed turns into NaN. */
static void run_poisoned_tails(nabla_context *ctx, nabla_dtype dtype, int head_dim, const char *expect) {
  const nabla_shape s = {1, 2, 300, head_dim, 3, 10, 10}; /* per frame blocks of 64, 16, 16, 4 rows */
  const int nb = nabla_shape_blocks(&s), kept[2] = {nb - 1, 5};
  int32_t starts[64];
  assert_int_equal(nabla_shape_block_starts(&s, starts, 64), NABLA_OK);
  const size_t n = (size_t)s.heads * s.seq * head_dim;
  double *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
  uint8_t *bitmap = calloc((size_t)s.heads * nb * nb, 1);
  assert_true(q && k && v && bitmap);
  uint64_t seed = 77;
  tu_fill_normal(q, n, &seed, 1.5);
  tu_fill_normal(k, n, &seed, 1.0);
  tu_fill_normal(v, n, &seed, 1.0);
  for (int h = 0; h < s.heads; h++) {
    for (int r = 0; r < nb; r++) bitmap[((size_t)h * nb + r) * nb + kept[h]] = 1;
    for (int i = 0; i < s.seq; i++)
      if (i < starts[kept[h]] || i >= starts[kept[h] + 1])
        for (int d = 0; d < head_dim; d++) {
          k[((size_t)h * s.seq + i) * head_dim + d] = NAN;
          v[((size_t)h * s.seq + i) * head_dim + d] = INFINITY;
        }
  }
  double err = tu_attend_inputs_vs_reference(ctx, &s, dtype, q, k, v, bitmap, 0);
  if (strcmp(nabla_variant_last(ctx), expect) != 0 || strstr(nabla_variant_note(ctx), "copies off"))
    fail_msg("ran %s, expected %s (%s)", nabla_variant_last(ctx), expect, nabla_variant_note(ctx));
  if (!(err <= tu_tolerance(dtype)))
    fail_msg("%s poisoned tails D%d %s: max abs error %.3g", expect, head_dim, nabla_dtype_name(dtype), err);
  free(q), free(k), free(v), free(bitmap);
}

/* The variant a forced AMD twin must run as: itself, unless the device has less local memory
 * than the AMD kernel's layout (64 KiB LDS on the GPUs; NVIDIA offers 48 KiB), where the twin is
 * not eligible and the portable kernel runs with that reason in the note. */
static const char *amd_twin_expect(nabla_context *ctx, const char *emu, const nabla_shape *s, nabla_dtype dtype) {
  char ran[64];
  assert_int_equal(nabla_attention_variant(ctx, s, dtype, ran, sizeof ran), NABLA_OK);
  if (strcmp(ran, emu) == 0) return emu;
  if (ctx->caps.local_mem >= 65536 || !strstr(nabla_variant_note(ctx), "bytes of local memory"))
    fail_msg("%s D%d: %s instead (%s)", emu, s->head_dim, ran, nabla_variant_note(ctx));
  return "portable";
}

/* The AMD matrix-core kernel with MFMA (64-wide waves) and WMMA (32-wide) emulated: ragged
 * grids, batch 2, head dims 16 to 128, both 16-bit types, dense, empty rows, huge logits. */
static void test_amd_emulated_matches_reference(void **state) {
  CTX_OR_SKIP(state);
  const char *emus[2] = {"amd-mfma-emulated", "amd-wmma-emulated"};
  const nabla_shape ragged = {2, 2, 720, 64, 3, 12, 20}, odd = {1, 3, 234, 32, 2, 9, 13};
  const nabla_shape seq48 = {1, 2, 200, 48, 0, 0, 0}, d16 = {1, 1, 130, 16, 0, 0, 0};
  const nabla_shape d128 = {2, 1, 300, 128, 3, 10, 10};
  for (int i = 0; i < 2; i++) {
    if (!nabla_variant_supported(ctx, emus[i])) fail_msg("%s probe: %s", emus[i], nabla_variant_note(ctx));
    assert_int_equal(nabla_variant_force(ctx, emus[i]), NABLA_OK);
    const nabla_dtype d128_type = i ? NABLA_F16 : NABLA_BF16;
    run_case(ctx, ragged, i ? NABLA_F16 : NABLA_BF16, 0.4, 31 + i, emus[i]);
    run_case(ctx, odd, i ? NABLA_BF16 : NABLA_F16, 0.4, 33 + i, emus[i]);
    run_case(ctx, seq48, NABLA_BF16, -1.0, 35 + i, emus[i]);
    run_case(ctx, d16, NABLA_F16, 0.5, 37 + i, emus[i]);
    run_case(ctx, d128, d128_type, 0.3, 39 + i, amd_twin_expect(ctx, emus[i], &d128, d128_type));
    run_case_q(ctx, ragged, NABLA_F16, 0.6, 16.0, 41 + i, emus[i]); /* huge logits */
  }
  assert_int_equal(nabla_variant_force(ctx, "auto"), NABLA_OK);
}

/* The same twins on a device with NVIDIA's 48 KiB of local memory: wmma's D = 128 layout needs
 * more, so it falls back to portable with the figures in the note; what fits still runs. */
static void test_amd_emulated_small_local_memory(void **state) {
  CTX_OR_SKIP(state);
  (void)ctx;
  nabla_context *own = tu_context();
  assert_non_null(own);
  own->caps.local_mem = 49152;
  const nabla_shape d128 = {1, 1, 300, 128, 3, 10, 10}, d64 = {1, 2, 720, 64, 3, 12, 20};
  char ran[64];
  assert_int_equal(nabla_variant_force(own, "amd-wmma-emulated"), NABLA_OK);
  assert_int_equal(nabla_attention_variant(own, &d128, NABLA_F16, ran, sizeof ran), NABLA_OK);
  assert_string_equal(ran, "portable");
  if (!strstr(nabla_variant_note(own), "the device has 49152")) fail_msg("note: %s", nabla_variant_note(own));
  run_case(own, d128, NABLA_F16, 0.3, 61, "portable");
  run_case(own, d64, NABLA_BF16, 0.4, 62, "amd-wmma-emulated");
  nabla_context_destroy(own);
}

/* A simulated AMD GPU (the context's capabilities replaced): the automatic choice asks for the
 * target's matrix cores, whose probe fails on this device, so the portable kernel runs with the
 * probe's reason in the note; RDNA2 has none to ask for. The portable kernel then runs with the
 * AMD defaults (work-groups of 256, TILE_D=8 TILE_V=4) and must still match the reference. */
static void test_simulated_amd(void **state) {
  CTX_OR_SKIP(state);
  (void)ctx;
  const char *archs[3] = {"gfx90a", "gfx1100", "gfx1030"};
  const nabla_shape s = {2, 2, 720, 64, 3, 12, 20}, d128 = {1, 2, 300, 128, 3, 10, 10};
  for (int i = 0; i < 3; i++) {
    nabla_context *own = tu_context();
    assert_non_null(own);
    own->caps.vendor = NABLA_VENDOR_AMD;
    own->caps.is_cpu = 0, own->caps.is_gpu = 1, own->caps.max_wg = 256, own->caps.local_mem = 65536;
    snprintf(own->caps.arch, sizeof own->caps.arch, "%s", archs[i]);
    char buf[64];
    assert_int_equal(nabla_attention_variant(own, &s, NABLA_BF16, buf, sizeof buf), NABLA_OK);
    assert_string_equal(buf, "portable");
    if (i < 2) {
      assert_non_null(strstr(nabla_variant_note(own), i ? "amd-wmma" : "amd-mfma"));
      assert_non_null(strstr(nabla_variant_note(own), "probe"));
    } else {
      assert_string_equal(nabla_variant_note(own), "");
    }
    assert_false(nabla_variant_supported(own, "amd-mfma"));
    char cfg[128];
    assert_int_equal(nabla_config_describe(own, "attention", &s, NABLA_BF16, cfg, sizeof cfg), NABLA_OK);
    assert_non_null(strstr(cfg, "TILE_D=8 TILE_V=4"));
    assert_non_null(strstr(cfg, "default-gpu-amd"));
    run_case(own, s, NABLA_BF16, 0.4, 51 + i, "portable");
    run_case(own, d128, NABLA_F16, -1.0, 54 + i, "portable");
    nabla_context_destroy(own);
  }
}

/* The wgmma kernel's logic, emulated: its probe kernel must agree with the host (the same
 * check the real probe makes on a Hopper GPU), then ragged blocks, both head dims, batch > 1,
 * empty rows and dense. */
static void test_wgmma_emulated_matches_reference(void **state) {
  CTX_OR_SKIP(state);
  const char *emu = "nvidia-wgmma-emulated";
  if (!nabla_variant_supported(ctx, emu)) fail_msg("%s probe: %s", emu, nabla_variant_note(ctx));
  const nabla_shape ragged = {2, 1, 300, 64, 3, 10, 10}, seq = {1, 2, 200, 128, 0, 0, 0};
  assert_int_equal(nabla_variant_force(ctx, emu), NABLA_OK);
  run_poisoned_tails(ctx, NABLA_F16, 64, emu); /* tensor copies, the default */
  run_poisoned_tails(ctx, NABLA_BF16, 128, emu);
  run_case(ctx, ragged, NABLA_BF16, 0.4, 11, emu);
  /* Tile images (K and V, one 64-row tile per block and (b, h)) are the context's until
   * nabla_context_trim gives them back; the next call packs into new ones. */
  KNOB(ctx, "WG_BULK", "1");
  run_poisoned_tails(ctx, NABLA_BF16, 64, emu);
  run_case(ctx, ragged, NABLA_BF16, 0.4, 11, emu);
  size_t freed = 0, images = 2 * (size_t)ragged.batch * ragged.heads * nabla_shape_blocks(&ragged) * 64 *
                                 ragged.head_dim * 2;
  assert_int_equal(nabla_context_trim(ctx, &freed), NABLA_OK);
  assert_true(freed >= images);
  assert_int_equal(nabla_context_trim(ctx, &freed), NABLA_OK);
  assert_int_equal(freed, 0);
  run_case(ctx, ragged, NABLA_BF16, 0.4, 11, emu);
  run_case(ctx, seq, NABLA_F16, -1.0, 25, emu);
  KNOB(ctx, "WG_BULK", NULL);
  run_case(ctx, seq, NABLA_F16, 0.5, 12, emu);
  run_case(ctx, ragged, NABLA_F16, -1.0, 13, emu);
  run_case(ctx, seq, NABLA_BF16, -1.0, 14, emu);
  KNOB(ctx, "MMA_LAZY_RESCALE", "0"); /* running row maxima */
  run_case_q(ctx, ragged, NABLA_F16, 0.7, 16.0, 22, emu); /* huge logits */
  run_case(ctx, seq, NABLA_BF16, -1.0, 24, emu);
  KNOB(ctx, "MMA_LAZY_RESCALE", "8");
  run_case_q(ctx, ragged, NABLA_F16, 0.7, 16.0, 26, emu);
  KNOB(ctx, "MMA_LAZY_RESCALE", NULL); /* the default, lazy maxima (tau = 12), from here on */
  run_case_q(ctx, ragged, NABLA_F16, 0.7, 16.0, 23, emu);
  run_case_q(ctx, seq, NABLA_F16, 0.5, 16.0, 27, emu);
  KNOB(ctx, "MMA_QPW", "2"); /* two query blocks (warpgroups) share the staged K/V */
  const nabla_shape odd = {2, 1, 260, 64, 0, 0, 0}; /* 5 blocks: a missing second block */
  run_case(ctx, odd, NABLA_F16, 0.4, 16, emu);
  run_case(ctx, odd, NABLA_BF16, -1.0, 17, emu);
  run_case(ctx, seq, NABLA_BF16, 0.5, 18, emu);
  KNOB(ctx, "MMA_QPW", NULL);
  /* Two work-groups per query block, one per half of the key blocks, merged through the split
   * workspace: rows kept in both halves, in one, none (density 0.15 on 12 blocks), dense, a
   * single block, maxima that differ wildly between the halves; then the workspace given back. */
  KNOB(ctx, "WG_SPLIT", "2");
  const nabla_shape one = {1, 2, 50, 64, 0, 0, 0};
  run_poisoned_tails(ctx, NABLA_BF16, 128, emu);
  run_case(ctx, ragged, NABLA_BF16, 0.4, 31, emu);
  run_case(ctx, ragged, NABLA_F16, 0.15, 32, emu);
  run_case(ctx, seq, NABLA_F16, -1.0, 33, emu);
  run_case(ctx, one, NABLA_BF16, -1.0, 34, emu);
  run_case_q(ctx, ragged, NABLA_F16, 0.7, 16.0, 35, emu);
  KNOB(ctx, "WG_BULK", "0");
  run_case(ctx, seq, NABLA_BF16, 0.5, 36, emu);
  KNOB(ctx, "WG_BULK", NULL);
  assert_int_equal(nabla_context_trim(ctx, &freed), NABLA_OK);
  assert_true(freed >= (size_t)seq.heads * nabla_shape_blocks(&seq) * (64 + 4) * 128 * sizeof(float));
  KNOB(ctx, "WG_SPLIT", NULL);
  KNOB(ctx, "WG_BULK", "0"); /* rows staged from K and V */
  run_poisoned_tails(ctx, NABLA_F16, 128, emu);
  run_case(ctx, ragged, NABLA_BF16, 0.4, 19, emu);
  run_case(ctx, seq, NABLA_F16, -1.0, 20, emu);
  KNOB(ctx, "MMA_QPW", "2");
  run_case(ctx, odd, NABLA_BF16, 0.4, 21, emu);
  KNOB(ctx, "MMA_QPW", NULL);
  KNOB(ctx, "WG_BULK", NULL);
  /* Head dims other than 64 and 128 are not the wgmma kernel's: portable, with a note. */
  const nabla_shape d32 = {1, 1, 130, 32, 0, 0, 0};
  run_case(ctx, d32, NABLA_BF16, 0.5, 15, "portable");
  assert_non_null(strstr(nabla_variant_note(ctx), "head_dim 64 or 128"));
  assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
}

/* Intel's matrix-engine kernel, emulated (cl/dpas.cl: on real sub-groups where the device has
 * them, else through local memory): its probe must agree with the host (the check the real
 * probe makes on an Intel GPU), then the cases of run_dpas_cases, half in each layout (sub-groups
 * of 8 with 4-row tiles, dg2's; 16 with 8-row tiles, pvc's); on an Intel GPU whose probe passes,
 * the real kernel on all of them. */
/* Cases of the matrix-engine kernel; `half` picks one of two halves that together cover every
 * path (ragged, batch 2, D 48/64/128, f16/bf16, sparse, dense, huge logits, poisoned tails)
 * with three builds each (the emulation compiles slowly on PoCL). */
static void run_dpas_cases(nabla_context *ctx, const char *variant, int half) {
  const nabla_shape ragged = {2, 1, 300, 64, 3, 10, 10}, seq = {1, 2, 200, 128, 0, 0, 0};
  const nabla_shape d48 = {1, 1, 130, 48, 0, 0, 0};
  if (half == 0) {
    run_case(ctx, ragged, NABLA_BF16, 0.4, 31, variant);
    run_case(ctx, seq, NABLA_F16, -1.0, 32, variant);
    run_poisoned_tails(ctx, NABLA_F16, 64, variant);
  } else {
    run_case(ctx, ragged, NABLA_F16, -1.0, 33, variant);
    run_case(ctx, seq, NABLA_BF16, 0.5, 34, variant);
    run_poisoned_tails(ctx, NABLA_BF16, 128, variant);
    run_case_q(ctx, d48, NABLA_BF16, 0.7, 16.0, 35, variant); /* huge logits, 3 k-steps */
  }
}

static void test_intel_dpas_matches_reference(void **state) {
  CTX_OR_SKIP(state);
  const char *emu = "intel-dpas-emulated";
  static const char *const layouts[] = {"0", "1"};
  for (int i = 0; i < 2; i++) {
    /* The probe verdict is the context's: a fresh context per layout. */
    nabla_context *own = tu_context();
    assert_non_null(own);
    KNOB(own, "INTEL_DPAS_SG16", layouts[i]);
    /* The knob picks the layout; real sub-groups where the device has them (Intel's CPU
     * runtime), else local memory (PoCL). */
    const nabla_intel_dpas_config cfg = nabla_intel_dpas_config_for(own, NABLA_VARIANT_INTEL_DPAS_EMULATED);
    assert_int_equal(cfg.sg, i ? 16 : 8);
    assert_int_equal(cfg.m, i ? 8 : 4);
    assert_int_equal(cfg.large_grf, 0);
    size_t sizes[8], bytes = 0;
    int runs = clGetDeviceInfo(nabla_context_device(own), 0x4108 /* CL_DEVICE_SUB_GROUP_SIZES_INTEL */,
                               sizeof sizes, sizes, &bytes) == CL_SUCCESS;
    int has = 0;
    for (size_t k = 0; runs && k < bytes / sizeof sizes[0]; k++) has |= sizes[k] == (size_t)cfg.sg;
    assert_int_equal(cfg.mode, has ? 1 : 2);
    if (!nabla_variant_supported(own, emu)) fail_msg("%s probe (INTEL_DPAS_SG16=%s): %s", emu, layouts[i],
                                                     nabla_variant_note(own));
    assert_int_equal(nabla_variant_force(own, emu), NABLA_OK);
    run_dpas_cases(own, emu, i);
    /* Head dims that are no multiple of 16, and fp32: portable, with a note. */
    const nabla_shape d40 = {1, 1, 130, 40, 0, 0, 0};
    run_case(own, d40, NABLA_BF16, 0.5, 36, "portable");
    assert_non_null(strstr(nabla_variant_note(own), "multiple of 16"));
    nabla_context_destroy(own);
  }
  if (nabla_variant_supported(ctx, "intel-dpas")) {
    assert_int_equal(nabla_variant_force(ctx, "intel-dpas"), NABLA_OK);
    run_dpas_cases(ctx, "intel-dpas", 0);
    run_dpas_cases(ctx, "intel-dpas", 1);
    assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
  }
}

static void test_nvidia_wgmma_matches_reference(void **state) {
  CTX_OR_SKIP(state);
  if (!nabla_variant_supported(ctx, "nvidia-wgmma")) {
    print_message("%s\n", nabla_variant_note(ctx));
    skip();
  }
  assert_int_equal(nabla_variant_force(ctx, "nvidia-wgmma"), NABLA_OK);
  const nabla_shape shapes[] = {
      {2, 2, 720, 64, 3, 12, 20},  /* ragged 8x8 tiles, batch 2 */
      {1, 2, 200, 64, 0, 0, 0},    /* plain sequence, ragged last block */
      {1, 3, 260, 128, 0, 0, 0},   /* 5 blocks: with two per work-group, a missing one */
      {1, 2, 300, 128, 3, 10, 10}, /* the Wan head dim */
      {1, 4, 3600, 128, 4, 30, 30},
  };
  const nabla_dtype dts[] = {NABLA_BF16, NABLA_F16};
  static const char *const stagings[] = {"0", "1", "2"}; /* rows, tile images, tensor copies */
  for (int bulk = 0; bulk <= 2; bulk++)
    for (int qpw = 1; qpw <= 2; qpw++) {
      KNOB(ctx, "WG_BULK", stagings[bulk]);
      KNOB(ctx, "MMA_QPW", qpw == 1 ? "1" : "2");
      print_message("nvidia-wgmma staging %d qpw %d\n", bulk, qpw);
      run_poisoned_tails(ctx, NABLA_BF16, 128, "nvidia-wgmma");
      run_poisoned_tails(ctx, NABLA_F16, 64, "nvidia-wgmma");
      for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int d = 0; d < 2; d++) {
          run_case(ctx, shapes[i], dts[d], i == 4 ? 0.1 : 0.4, 200 + 10 * i + d, "nvidia-wgmma");
          run_case(ctx, shapes[i], dts[d], -1.0, 300 + 10 * i + d, "nvidia-wgmma");
        }
    }
  KNOB(ctx, "MMA_QPW", NULL);
  KNOB(ctx, "WG_SPLIT", "2"); /* two work-groups per query block, merged through the workspace */
  for (int bulk = 0; bulk <= 2; bulk++) {
    KNOB(ctx, "WG_BULK", stagings[bulk]);
    print_message("nvidia-wgmma staging %d, two halves of the keys\n", bulk);
    run_poisoned_tails(ctx, NABLA_BF16, 128, "nvidia-wgmma");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
      run_case(ctx, shapes[i], NABLA_BF16, i == 4 ? 0.1 : 0.4, 500 + 10 * i, "nvidia-wgmma");
      run_case(ctx, shapes[i], NABLA_F16, -1.0, 600 + 10 * i, "nvidia-wgmma");
      run_case_q(ctx, shapes[i], NABLA_F16, 0.3, 16.0, 700 + 10 * i, "nvidia-wgmma");
    }
  }
  KNOB(ctx, "WG_SPLIT", NULL);
  KNOB(ctx, "WG_BULK", NULL);
  print_message("nvidia-wgmma huge logits, running and lazy maxima\n");
  for (int lazy = 0; lazy <= 2; lazy++) { /* running maxima, tau = 8, the default */
    if (lazy < 2) KNOB(ctx, "MMA_LAZY_RESCALE", lazy ? "8" : "0");
    else KNOB(ctx, "MMA_LAZY_RESCALE", NULL);
    run_case_q(ctx, shapes[0], NABLA_F16, 0.6, 16.0, 400 + lazy, "nvidia-wgmma");
    run_case_q(ctx, shapes[4], NABLA_F16, 0.1, 16.0, 410 + lazy, "nvidia-wgmma");
    run_case(ctx, shapes[3], NABLA_BF16, -1.0, 420 + lazy, "nvidia-wgmma");
  }
  KNOB(ctx, "MMA_LAZY_RESCALE", NULL);
  assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
}

/* Tensor copies with a tensor map template from the disk cache: a context that finds it there
 * never opens the CUDA driver, and its maps still take each problem's row count (three shapes,
 * two head dims); with the cache off, the driver encodes it. */
static void test_nvidia_wgmma_tensor_map_cache(void **state) {
  CTX_OR_SKIP(state);
  if (!nabla_variant_supported(ctx, "nvidia-wgmma")) skip();
  const nabla_shape small = {1, 2, 300, 128, 3, 10, 10}, other = {2, 3, 720, 64, 3, 12, 20};
  char dir[512];
  if (tu_temp_dir(dir, sizeof dir, "nablacl-tmaps") != 0) fail_msg("no temporary directory");
  tu_env cache = tu_env_save("NABLACL_CACHE_DIR");
  for (int round = 0; round < 3; round++) { /* fills the cache, finds it, cache off */
    setenv("NABLACL_CACHE_DIR", round < 2 ? dir : "off", 1);
    nabla_context *c = tu_context();
    assert_non_null(c);
    KNOB(c, "WG_BULK", "2");
    assert_int_equal(nabla_variant_force(c, "nvidia-wgmma"), NABLA_OK);
    run_case(c, small, NABLA_BF16, 0.4, 500 + round, "nvidia-wgmma");
    run_case(c, other, NABLA_F16, 0.4, 510 + round, "nvidia-wgmma");
    run_case(c, small, NABLA_F16, -1.0, 520 + round, "nvidia-wgmma");
    if (c->cuda.tried != (round != 1))
      fail_msg("round %d: the CUDA driver was %sopened", round, c->cuda.tried ? "" : "not ");
    nabla_context_destroy(c);
  }
  tu_env_restore(&cache);
  tu_remove_tree(dir);
}

static void test_nvidia_mma_matches_reference(void **state) {
  CTX_OR_SKIP(state);
  if (!nabla_variant_supported(ctx, "nvidia-mma")) skip();
  assert_int_equal(nabla_variant_force(ctx, "nvidia-mma"), NABLA_OK);
  for (int smem = 1; smem >= 0; smem--)
    for (int qpw = 1; qpw <= 2; qpw++) {
      KNOB(ctx, "MMA_SMEM", smem ? "1" : "0");
      KNOB(ctx, "MMA_QPW", qpw == 1 ? "1" : "2");
      print_message("nvidia-mma smem %d qpw %d\n", smem, qpw);
      run_mma_cases(ctx, "nvidia-mma", smem);
    }
  KNOB(ctx, "MMA_SMEM", NULL);
  KNOB(ctx, "MMA_QPW", NULL);
  KNOB(ctx, "MMA_MAXRREG", "168"); /* a register cap (spills) must not change results */
  print_message("nvidia-mma maxrregcount 168\n");
  run_mma_cases(ctx, "nvidia-mma", 0);
  KNOB(ctx, "MMA_MAXRREG", NULL);
  assert_int_equal(nabla_variant_force(ctx, NULL), NABLA_OK);
}

/* The knobs in the build options: the lazy-rescale threshold is 12 for the wgmma kernel and 0
 * for the mma kernel unless MMA_LAZY_RESCALE says 0..15; the wgmma staging is tensor copies
 * unless WG_BULK names another; MMA_SMEM 0 turns the mma kernel's ldmatrix/cp.async path off;
 * MMA_QPW and the register cap MMA_MAXRREG (below 64: no cap). Values out of range are refused
 * and leave the knob as it was. */
static void test_knobs_in_options(void **state) {
  CTX_OR_SKIP(state);
  const nabla_shape s = {1, 2, 300, 128, 3, 10, 10};
  const char *lazy[] = {NULL, "0", "3", "15"};
  const int wg[] = {12, 0, 3, 15}, mma[] = {0, 0, 3, 15};
  char buf[512], want[64];
  for (size_t i = 0; i < sizeof lazy / sizeof lazy[0]; i++) {
    KNOB(ctx, "MMA_LAZY_RESCALE", lazy[i]);
    nabla_attention_wgmma_options(ctx, NABLA_VARIANT_WGMMA_EMULATED, &s, NABLA_BF16, 0, NABLA_WG_TENSOR, buf, sizeof buf);
    snprintf(want, sizeof want, "-DMMA_LAZY_RESCALE=%d ", wg[i]);
    if (!strstr(buf, want)) fail_msg("knob %s: wgmma options \"%s\" lack %s", lazy[i] ? lazy[i] : "unset", buf, want);
    nabla_attention_mma_options(ctx, NABLA_VARIANT_MMA_EMULATED, &s, NABLA_BF16, 0, buf, sizeof buf);
    snprintf(want, sizeof want, "-DMMA_LAZY_RESCALE=%d ", mma[i]);
    if (!strstr(buf, want)) fail_msg("knob %s: mma options \"%s\" lack %s", lazy[i] ? lazy[i] : "unset", buf, want);
  }
  const char *refused[] = {"16", "-1", "8x", " ", "1.5"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    assert_int_equal(nabla_knob_set(ctx, "MMA_LAZY_RESCALE", refused[i]), NABLA_INVALID_ARGUMENT);
    assert_non_null(strstr(nabla_last_error(ctx), "0..15"));
    assert_int_equal(nabla_knob_get(ctx, "MMA_LAZY_RESCALE", buf, sizeof buf), NABLA_OK);
    assert_string_equal(buf, "15"); /* unchanged */
  }
  KNOB(ctx, "MMA_LAZY_RESCALE", NULL);
  const char *staging_knobs[] = {NULL, "0", "1", "2"};
  const int staging[] = {NABLA_WG_TENSOR, NABLA_WG_ROWS, NABLA_WG_IMAGES, NABLA_WG_TENSOR};
  for (size_t i = 0; i < sizeof staging_knobs / sizeof staging_knobs[0]; i++) {
    KNOB(ctx, "WG_BULK", staging_knobs[i]);
    assert_int_equal(nabla_attention_wgmma_staging(ctx), staging[i]);
    nabla_attention_wgmma_options(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &s, NABLA_BF16, 0, staging[i], buf, sizeof buf);
    snprintf(want, sizeof want, "-DWG_BULK=%d ", staging[i]);
    if (!strstr(buf, want)) fail_msg("wgmma options \"%s\" lack %s", buf, want);
  }
  assert_int_equal(nabla_knob_set(ctx, "WG_BULK", "3"), NABLA_INVALID_ARGUMENT);
  KNOB(ctx, "WG_BULK", NULL);
  const char *smem_knobs[] = {NULL, "0", "1"};
  const int smem[] = {1, 0, 1};
  for (size_t i = 0; i < sizeof smem_knobs / sizeof smem_knobs[0]; i++) {
    KNOB(ctx, "MMA_SMEM", smem_knobs[i]);
    nabla_attention_mma_options(ctx, NABLA_VARIANT_MMA_EMULATED, &s, NABLA_BF16, 0, buf, sizeof buf);
    snprintf(want, sizeof want, "-DMMA_SMEM_PTX=%d ", smem[i]);
    if (!strstr(buf, want)) fail_msg("mma options \"%s\" lack %s", buf, want);
  }
  KNOB(ctx, "MMA_SMEM", NULL);
  /* Query blocks per work-group: the knob, else 2 for mma.sync on dense attention, else 1. */
  assert_int_equal(nabla_attention_mma_qpw(ctx, NABLA_VARIANT_NVIDIA_WGMMA, 1), 1);
  assert_int_equal(nabla_attention_mma_qpw(ctx, NABLA_VARIANT_NVIDIA_MMA, 1), 2);
  assert_int_equal(nabla_attention_mma_qpw(ctx, NABLA_VARIANT_NVIDIA_MMA, 0), 1);
  KNOB(ctx, "MMA_QPW", "2");
  assert_int_equal(nabla_attention_mma_qpw(ctx, NABLA_VARIANT_NVIDIA_WGMMA, 0), 2);
  KNOB(ctx, "MMA_QPW", "1");
  assert_int_equal(nabla_attention_mma_qpw(ctx, NABLA_VARIANT_NVIDIA_MMA, 1), 1);
  assert_int_equal(nabla_knob_set(ctx, "MMA_QPW", "3"), NABLA_INVALID_ARGUMENT);
  KNOB(ctx, "MMA_QPW", NULL);
  /* Key halves: the knob, else 2 where one head's K and V pass 40 MiB (121 frames of Wan's
   * 40x80 latents: 49 MiB; 81 frames: 33 MiB); never with two query blocks a work-group. */
  const nabla_shape f121 = {1, 40, 31 * 40 * 80, 128, 31, 40, 80}, f81 = {1, 40, 21 * 40 * 80, 128, 21, 40, 80};
  const uint64_t max_alloc = ctx->caps.max_alloc; /* the rule as on a GPU with room for it */
  ctx->caps.max_alloc = (uint64_t)1 << 40;
  assert_int_equal(nabla_attention_wgmma_split(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f121, 0), 2);
  assert_int_equal(nabla_attention_wgmma_split(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f121, 1), 2);
  assert_int_equal(nabla_attention_wgmma_split(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f81, 0), 1);
  ctx->caps.max_alloc = (uint64_t)1 << 30; /* a workspace that cannot be had (2.2 GB): no split */
  assert_int_equal(nabla_attention_wgmma_split(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f121, 0), 1);
  ctx->caps.max_alloc = (uint64_t)1 << 40;
  nabla_attention_wgmma_options(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f121, NABLA_BF16, 0, NABLA_WG_TENSOR, buf, sizeof buf);
  if (!strstr(buf, "-DWG_SPLIT=2")) fail_msg("wgmma options \"%s\" lack -DWG_SPLIT=2", buf);
  KNOB(ctx, "WG_SPLIT", "2");
  assert_int_equal(nabla_attention_wgmma_split(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f81, 0), 2);
  KNOB(ctx, "MMA_QPW", "2");
  assert_int_equal(nabla_attention_wgmma_split(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f121, 0), 1);
  KNOB(ctx, "MMA_QPW", NULL);
  KNOB(ctx, "WG_SPLIT", "1");
  assert_int_equal(nabla_attention_wgmma_split(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &f121, 0), 1);
  assert_int_equal(nabla_knob_set(ctx, "WG_SPLIT", "3"), NABLA_INVALID_ARGUMENT);
  KNOB(ctx, "WG_SPLIT", NULL);
  ctx->caps.max_alloc = max_alloc;
  const char *caps[] = {"168", "0", "63"};
  const char *cap[] = {"-cl-nv-maxrregcount=168", NULL, NULL};
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
    KNOB(ctx, "MMA_MAXRREG", caps[i]);
    nabla_attention_wgmma_options(ctx, NABLA_VARIANT_NVIDIA_WGMMA, &s, NABLA_BF16, 0, NABLA_WG_TENSOR, buf, sizeof buf);
    if (cap[i] ? !strstr(buf, cap[i]) : strstr(buf, "maxrregcount") != NULL)
      fail_msg("MMA_MAXRREG=%s: options \"%s\"", caps[i], buf);
    nabla_attention_wgmma_options(ctx, NABLA_VARIANT_WGMMA_EMULATED, &s, NABLA_BF16, 0, NABLA_WG_TENSOR, buf, sizeof buf);
    assert_null(strstr(buf, "maxrregcount")); /* never on the emulation */
  }
  assert_int_equal(nabla_knob_set(ctx, "MMA_MAXRREG", "300"), NABLA_INVALID_ARGUMENT);
  KNOB(ctx, "MMA_MAXRREG", NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registry_tables),
      cmocka_unit_test(test_names_and_force),
      cmocka_unit_test(test_probe_by_vendor),
      cmocka_unit_test(test_knob_forces_and_falls_back),
      cmocka_unit_test(test_knobs_from_environment),
      cmocka_unit_test(test_knobs_in_options),
      cmocka_unit_test(test_broken_is_per_stage),
      cmocka_unit_test(test_emulated_matches_reference),
      cmocka_unit_test(test_nvidia_mma_matches_reference),
      cmocka_unit_test(test_wgmma_emulated_matches_reference),
      cmocka_unit_test(test_nvidia_wgmma_matches_reference),
      cmocka_unit_test(test_amd_emulated_matches_reference),
      cmocka_unit_test(test_amd_emulated_small_local_memory),
      cmocka_unit_test(test_simulated_amd),
      cmocka_unit_test(test_nvidia_wgmma_tensor_map_cache),
      cmocka_unit_test(test_intel_dpas_matches_reference),
  };
  return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
