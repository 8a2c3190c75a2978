/*
 * Bad input is refused before anything is enqueued or written (docs/api.md, Attention).
 *
 * Every failing call gets: an output buffer pre-filled with a sentinel (checked unchanged after
 * clFinish), a wait list holding one user event (the gate) that is still pending, a `done`
 * event pointer that must stay NULL, a mask out pointer that must stay NULL, and must leave a
 * non-empty last error. Whether anything was enqueued is seen through the in-order queue: a
 * marker enqueued after the failed call completes while the gate is still pending only if no
 * command waits on the gate (test_gate_detects_enqueue shows the probe works on this driver).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#define SENTINEL 0xA5

typedef struct {
  nabla_context *ctx;
  nabla_shape shape;  /* a valid video shape */
  size_t bytes;       /* f32 bytes of one tensor of `shape` */
  cl_mem q, k, v, o;  /* f32, o holds the sentinel */
  cl_mem small;       /* half the size */
  cl_event gate;      /* pending user event, completed and replaced by finish_case */
} fixture;

static cl_mem make_buffer(nabla_context *ctx, size_t bytes, int fill) {
  cl_int rc = CL_SUCCESS;
  cl_mem b = clCreateBuffer(nabla_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  unsigned char pattern = (unsigned char)fill;
  assert_int_equal(clEnqueueFillBuffer(nabla_context_queue(ctx), b, &pattern, 1, 0, bytes, 0, NULL, NULL),
                   CL_SUCCESS);
  return b;
}

static cl_event new_gate(nabla_context *ctx) {
  cl_int rc = CL_SUCCESS;
  cl_event e = clCreateUserEvent(nabla_context_cl_context(ctx), &rc);
  assert_int_equal(rc, CL_SUCCESS);
  return e;
}

static int setup(void **state) {
  tu_group_setup(state);
  nabla_context *ctx = *state;
  if (!ctx) return 0;
  fixture *f = calloc(1, sizeof *f);
  f->ctx = ctx;
  f->shape = (nabla_shape){1, 2, 2 * 8 * 12, 16, 2, 8, 12};
  f->bytes = (size_t)1 * 2 * 192 * 16 * 4;
  f->q = make_buffer(ctx, f->bytes, 0x3c);
  f->k = make_buffer(ctx, f->bytes, 0x3c);
  f->v = make_buffer(ctx, f->bytes, 0x3c);
  f->o = make_buffer(ctx, f->bytes, SENTINEL);
  f->small = make_buffer(ctx, f->bytes / 2, SENTINEL);
  f->gate = new_gate(ctx);
  assert_int_equal(clFinish(nabla_context_queue(ctx)), CL_SUCCESS);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (!f) return 0;
  clSetUserEventStatus(f->gate, CL_COMPLETE);
  clReleaseEvent(f->gate);
  clReleaseMemObject(f->q), clReleaseMemObject(f->k), clReleaseMemObject(f->v);
  clReleaseMemObject(f->o), clReleaseMemObject(f->small);
  nabla_context_destroy(f->ctx);
  free(f);
  return 0;
}

#define FIX_OR_SKIP(state) \
  fixture *f = *(state);   \
  if (!f) skip()

static void check_sentinel(nabla_context *ctx, cl_mem buf, const char *what, int line) {
  size_t size = 0;
  assert_int_equal(clGetMemObjectInfo(buf, CL_MEM_SIZE, sizeof size, &size, NULL), CL_SUCCESS);
  unsigned char *host = malloc(size);
  assert_int_equal(clEnqueueReadBuffer(nabla_context_queue(ctx), buf, CL_TRUE, 0, size, host, 0, NULL, NULL),
                   CL_SUCCESS);
  for (size_t i = 0; i < size; i++)
    if (host[i] != SENTINEL) fail_msg("line %d: %s byte %zu was written (0x%02x)", line, what, i, host[i]);
  free(host);
}

/* 1 when a marker enqueued now completes within `seconds` while the gate is still pending. */
static int queue_drains_before_gate(fixture *f, double seconds) {
  cl_event marker = NULL;
  assert_int_equal(clEnqueueMarkerWithWaitList(nabla_context_queue(f->ctx), 0, NULL, &marker), CL_SUCCESS);
  assert_int_equal(clFlush(nabla_context_queue(f->ctx)), CL_SUCCESS);
  cl_int status = CL_QUEUED;
  struct timespec pause = {0, 2000000};
  for (double waited = 0; waited < seconds; waited += 0.002) {
    assert_int_equal(clGetEventInfo(marker, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL),
                     CL_SUCCESS);
    if (status == CL_COMPLETE) break;
    nanosleep(&pause, NULL);
  }
  clReleaseEvent(marker);
  return status == CL_COMPLETE;
}

/* Completes the gate (releasing anything behind it), drains the queue, makes a new gate. */
static void open_gate(fixture *f) {
  assert_int_equal(clSetUserEventStatus(f->gate, CL_COMPLETE), CL_SUCCESS);
  assert_int_equal(clFinish(nabla_context_queue(f->ctx)), CL_SUCCESS);
  clReleaseEvent(f->gate);
  f->gate = new_gate(f->ctx);
}

/*
 * After a call that must fail: status, message, no event, nothing queued behind the gate, and
 * once the gate is open and the queue drained, the sentinel buffers are untouched.
 */
static void finish_case(fixture *f, nabla_status got, nabla_status want, cl_event done, int line) {
  if (got != want) {
    open_gate(f); /* what the call enqueued may then run: the teardown must not wait forever */
    if (done) clReleaseEvent(done);
    fail_msg("line %d: got %s (%d), want %s (%d); last error: %s", line, nabla_status_str(got), (int)got,
             nabla_status_str(want), (int)want, nabla_last_error(f->ctx));
  }
  if (strlen(nabla_last_error(f->ctx)) == 0) fail_msg("line %d: empty last error", line);
  if (done) fail_msg("line %d: a done event was returned by a failing call", line);
  int drained = queue_drains_before_gate(f, 5.0);
  open_gate(f);
  if (!drained) fail_msg("line %d: a failing call enqueued work (it waited on the wait list)", line);
  check_sentinel(f->ctx, f->o, "o", line);
  check_sentinel(f->ctx, f->small, "small", line);
}

/* attend / attention / reorder with the fixture's buffers, a pending wait list and a done event. */
#define EXPECT_ATTEND(want, shape_ptr, dtype, mask, q_, k_, v_, o_)                                  \
  do {                                                                                              \
    cl_event done_ = NULL;                                                                          \
    nabla_status st_ = nabla_attend(f->ctx, shape_ptr, dtype, mask, q_, k_, v_, o_, 1, &f->gate, &done_); \
    finish_case(f, st_, want, done_, __LINE__);                                                     \
  } while (0)

#define EXPECT_ATTENTION(want, algo_ptr, shape_ptr, dtype, q_, k_, v_, o_)                          \
  do {                                                                                              \
    cl_event done_ = NULL;                                                                          \
    nabla_status st_ =                                                                              \
        nabla_attention(f->ctx, algo_ptr, shape_ptr, dtype, q_, k_, v_, o_, 1, &f->gate, &done_);   \
    finish_case(f, st_, want, done_, __LINE__);                                                     \
  } while (0)

#define EXPECT_MASK(want, algo_ptr, shape_ptr, dtype, q_, k_)                                        \
  do {                                                                                              \
    cl_event done_ = NULL;                                                                          \
    nabla_mask *m_ = (nabla_mask *)&done_; /* a stale handle: a failure must set it to NULL */     \
    nabla_status st_ =                                                                              \
        nabla_mask_build(f->ctx, algo_ptr, shape_ptr, dtype, q_, k_, &m_, 1, &f->gate, &done_);     \
    if (m_) fail_msg("line %d: the mask handle is not NULL after a failing build", __LINE__);       \
    finish_case(f, st_, want, done_, __LINE__);                                                     \
  } while (0)

#define EXPECT_REORDER(want, shape_ptr, dtype, dir, src, dst)                                        \
  do {                                                                                              \
    cl_event done_ = NULL;                                                                          \
    nabla_status st_ = nabla_reorder(f->ctx, shape_ptr, dtype, dir, src, dst, 1, &f->gate, &done_);  \
    finish_case(f, st_, want, done_, __LINE__);                                                     \
  } while (0)

static const nabla_algo kNabla = {1, 0.5, 0, 0, 0, 0};
static const nabla_algo kSta = {0, 0.0, 1, 3, 3, 3};
static const nabla_algo kBoth = {1, 0.5, 1, 3, 3, 3};

/* The probe of finish_case: a valid call behind the gate keeps a later marker pending. */
static void test_gate_detects_enqueue(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape plain = {1, 2, 192, 16, 0, 0, 0};
  cl_int rc = CL_SUCCESS;
  cl_mem dst = clCreateBuffer(nabla_context_cl_context(f->ctx), CL_MEM_READ_WRITE, f->bytes, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_event done = NULL;
  assert_int_equal(nabla_reorder(f->ctx, &plain, NABLA_F32, NABLA_RASTER_TO_TILE, f->q, dst, 1, &f->gate, &done),
                   NABLA_OK);
  assert_non_null(done);
  int drained = queue_drains_before_gate(f, 0.2);
  open_gate(f);
  assert_false(drained);
  clReleaseEvent(done);
  clReleaseMemObject(dst);
}

/* ---- NULL arguments ----------------------------------------------------------------------- */

static void test_null_context(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  nabla_mask *m = NULL;
  cl_event done = NULL;
  assert_int_equal(nabla_attend(NULL, s, NABLA_F32, NULL, f->q, f->k, f->v, f->o, 0, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_attention(NULL, &kNabla, s, NABLA_F32, f->q, f->k, f->v, f->o, 0, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_attention(NULL, &kSta, s, NABLA_F32, f->q, f->k, f->v, f->o, 0, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_attention(NULL, NULL, s, NABLA_F32, f->q, f->k, f->v, f->o, 0, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_mask_build(NULL, &kNabla, s, NABLA_F32, f->q, f->k, &m, 0, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_reorder(NULL, s, NABLA_F32, NABLA_RASTER_TO_TILE, f->q, f->o, 0, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  uint8_t bitmap[1] = {1};
  assert_int_equal(nabla_mask_from_bitmap(NULL, s, bitmap, &m), NABLA_INVALID_ARGUMENT);
  assert_null(m);
  assert_null(done);
  assert_int_equal(clFinish(nabla_context_queue(f->ctx)), CL_SUCCESS);
  check_sentinel(f->ctx, f->o, "o", __LINE__);
}

static void test_null_shape_and_tensors(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, NULL, NABLA_F32, NULL, f->q, f->k, f->v, f->o);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, NULL, f->k, f->v, f->o);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->q, NULL, f->v, f->o);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->q, f->k, NULL, f->o);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->q, f->k, f->v, NULL);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, NULL, s, NABLA_F32, f->q, f->k, f->v, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kNabla, NULL, NABLA_F32, f->q, f->k, f->v, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kNabla, s, NABLA_F32, NULL, f->k, f->v, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kNabla, s, NABLA_F32, f->q, NULL, f->v, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kNabla, s, NABLA_F32, f->q, f->k, NULL, f->o);
  /* Pure STA reads neither Q nor K for the mask, but attention still does. */
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kSta, s, NABLA_F32, NULL, f->k, f->v, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kSta, s, NABLA_F32, f->q, NULL, f->v, f->o);
  EXPECT_MASK(NABLA_INVALID_ARGUMENT, NULL, s, NABLA_F32, f->q, f->k);
  EXPECT_MASK(NABLA_INVALID_ARGUMENT, &kNabla, NULL, NABLA_F32, f->q, f->k);
  EXPECT_MASK(NABLA_INVALID_ARGUMENT, &kNabla, s, NABLA_F32, NULL, f->k);
  EXPECT_MASK(NABLA_INVALID_ARGUMENT, &kNabla, s, NABLA_F32, f->q, NULL);
  EXPECT_REORDER(NABLA_INVALID_ARGUMENT, NULL, NABLA_F32, NABLA_RASTER_TO_TILE, f->q, f->o);
  EXPECT_REORDER(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NABLA_RASTER_TO_TILE, NULL, f->o);
  EXPECT_REORDER(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NABLA_RASTER_TO_TILE, f->q, NULL);
  /* mask_from_bitmap: no shape or no bitmap leaves a NULL handle. */
  nabla_mask *m = (nabla_mask *)&f->gate;
  const uint8_t one = 1;
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, NULL, &one, &m), NABLA_INVALID_ARGUMENT);
  assert_null(m);
  m = (nabla_mask *)&f->gate;
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, s, NULL, &m), NABLA_INVALID_ARGUMENT);
  assert_null(m);
  /* mask_build with out NULL. */
  cl_event done = NULL;
  assert_int_equal(nabla_mask_build(f->ctx, &kNabla, s, NABLA_F32, f->q, f->k, NULL, 1, &f->gate, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
}

/* ---- sizes, types, shapes ----------------------------------------------------------------- */

static void test_buffer_too_small(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  EXPECT_ATTEND(NABLA_BUFFER_TOO_SMALL, s, NABLA_F32, NULL, f->q, f->k, f->v, f->small);
  EXPECT_ATTEND(NABLA_BUFFER_TOO_SMALL, s, NABLA_F32, NULL, f->small, f->k, f->v, f->o);
  EXPECT_ATTEND(NABLA_BUFFER_TOO_SMALL, s, NABLA_F32, NULL, f->q, f->small, f->v, f->o);
  EXPECT_ATTEND(NABLA_BUFFER_TOO_SMALL, s, NABLA_F32, NULL, f->q, f->k, f->small, f->o);
  EXPECT_ATTENTION(NABLA_BUFFER_TOO_SMALL, &kNabla, s, NABLA_F32, f->q, f->k, f->v, f->small);
  EXPECT_ATTENTION(NABLA_BUFFER_TOO_SMALL, &kNabla, s, NABLA_F32, f->small, f->k, f->v, f->o);
  EXPECT_ATTENTION(NABLA_BUFFER_TOO_SMALL, &kSta, s, NABLA_F32, f->small, f->k, f->v, f->o);
  EXPECT_MASK(NABLA_BUFFER_TOO_SMALL, &kNabla, s, NABLA_F32, f->q, f->small);
  EXPECT_REORDER(NABLA_BUFFER_TOO_SMALL, s, NABLA_F32, NABLA_RASTER_TO_TILE, f->q, f->small);
  EXPECT_REORDER(NABLA_BUFFER_TOO_SMALL, s, NABLA_F32, NABLA_TILE_TO_RASTER, f->small, f->o);
  /* The dtype enters the size: f16 of batch 2 needs exactly f->bytes, which q, k, v have. */
  nabla_shape twice = *s;
  twice.batch = 2;
  EXPECT_ATTEND(NABLA_BUFFER_TOO_SMALL, &twice, NABLA_F16, NULL, f->q, f->k, f->v, f->small);
}

static void test_bad_dtype(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  nabla_dtype bad[] = {(nabla_dtype)3, (nabla_dtype)-1, (nabla_dtype)100};
  for (size_t i = 0; i < 3; i++) {
    EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, bad[i], NULL, f->q, f->k, f->v, f->o);
    EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kNabla, s, bad[i], f->q, f->k, f->v, f->o);
    EXPECT_MASK(NABLA_INVALID_ARGUMENT, &kNabla, s, bad[i], f->q, f->k);
    EXPECT_REORDER(NABLA_INVALID_ARGUMENT, s, bad[i], NABLA_RASTER_TO_TILE, f->q, f->o);
  }
  EXPECT_REORDER(NABLA_INVALID_ARGUMENT, s, NABLA_F32, (nabla_reorder_dir)2, f->q, f->o);
}

static void test_bad_shapes(void **state) {
  FIX_OR_SKIP(state);
  const nabla_shape *s = &f->shape;
  nabla_shape bad[10];
  int nbad = 0;
  nabla_shape b = *s;
  b.grid_w = 11;  /* grid does not match S */
  bad[nbad++] = b;
  b = *s;
  b.grid_t = 0;   /* half a grid */
  bad[nbad++] = b;
  b = *s;
  b.head_dim = 20; /* not a multiple of 8 */
  bad[nbad++] = b;
  b = *s;
  b.head_dim = 264; /* above 256 */
  bad[nbad++] = b;
  b = *s;
  b.head_dim = 0;
  bad[nbad++] = b;
  b = *s;
  b.batch = -1;
  bad[nbad++] = b;
  b = *s;
  b.heads = 0;
  bad[nbad++] = b;
  b = *s;
  b.seq = -192;
  bad[nbad++] = b;
  for (int i = 0; i < nbad; i++) {
    EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, &bad[i], NABLA_F32, NULL, f->q, f->k, f->v, f->o);
    EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kNabla, &bad[i], NABLA_F32, f->q, f->k, f->v, f->o);
    EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kSta, &bad[i], NABLA_F32, f->q, f->k, f->v, f->o);
    EXPECT_MASK(NABLA_INVALID_ARGUMENT, &kNabla, &bad[i], NABLA_F32, f->q, f->k);
    EXPECT_REORDER(NABLA_INVALID_ARGUMENT, &bad[i], NABLA_F32, NABLA_RASTER_TO_TILE, f->q, f->o);
    nabla_mask *m = NULL;
    uint8_t bitmap[64] = {0};
    assert_int_equal(nabla_mask_from_bitmap(f->ctx, &bad[i], bitmap, &m), NABLA_INVALID_ARGUMENT);
    assert_null(m);
    assert_true(strlen(nabla_last_error(f->ctx)) > 0);
  }
}

/* ---- algorithms --------------------------------------------------------------------------- */

static void test_bad_algo_values(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  double thrs[] = {0.0, 1.5, NAN, -0.5, INFINITY};
  for (size_t i = 0; i < sizeof thrs / sizeof thrs[0]; i++) {
    nabla_algo a = {1, thrs[i], 0, 0, 0, 0};
    EXPECT_MASK(NABLA_INVALID_ARGUMENT, &a, s, NABLA_F32, f->q, f->k);
    EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &a, s, NABLA_F32, f->q, f->k, f->v, f->o);
    a.sta = 1, a.sta_t = a.sta_h = a.sta_w = 3;
    EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &a, s, NABLA_F32, f->q, f->k, f->v, f->o);
  }
  int windows[][3] = {{0, 3, 3}, {3, 0, 3}, {3, 3, 0}, {-1, 1, 1}};
  for (size_t i = 0; i < 4; i++) {
    nabla_algo a = {0, 0.0, 1, windows[i][0], windows[i][1], windows[i][2]};
    EXPECT_MASK(NABLA_INVALID_ARGUMENT, &a, s, NABLA_F32, f->q, f->k);
    EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &a, s, NABLA_F32, f->q, f->k, f->v, f->o);
    a.nabla = 1, a.thr = 0.5;
    EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &a, s, NABLA_F32, f->q, f->k, f->v, f->o);
  }
  /* STA on a plain sequence (same element count as the fixture's tensors). */
  nabla_shape plain = {1, 2, 192, 16, 0, 0, 0};
  EXPECT_MASK(NABLA_INVALID_ARGUMENT, &kSta, &plain, NABLA_F32, f->q, f->k);
  EXPECT_MASK(NABLA_INVALID_ARGUMENT, &kBoth, &plain, NABLA_F32, f->q, f->k);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kSta, &plain, NABLA_F32, f->q, f->k, f->v, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kBoth, &plain, NABLA_F32, f->q, f->k, f->v, f->o);
}

/* ---- wait lists, aliasing, masks ---------------------------------------------------------- */

static void test_wait_list_inconsistent(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  cl_event done = NULL, null_event = NULL;
  nabla_mask *m = NULL;
  /* num_wait 1 with a NULL list; a list with num_wait 0; a NULL entry. */
  assert_int_equal(nabla_attend(f->ctx, s, NABLA_F32, NULL, f->q, f->k, f->v, f->o, 1, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
  assert_int_equal(nabla_attend(f->ctx, s, NABLA_F32, NULL, f->q, f->k, f->v, f->o, 0, &f->gate, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
  assert_int_equal(nabla_attend(f->ctx, s, NABLA_F32, NULL, f->q, f->k, f->v, f->o, 1, &null_event, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
  assert_int_equal(nabla_attention(f->ctx, &kNabla, s, NABLA_F32, f->q, f->k, f->v, f->o, 2, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
  assert_int_equal(nabla_attention(f->ctx, &kSta, s, NABLA_F32, f->q, f->k, f->v, f->o, 1, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
  assert_int_equal(nabla_mask_build(f->ctx, &kSta, s, NABLA_F32, NULL, NULL, &m, 1, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  assert_null(m);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
  assert_int_equal(nabla_reorder(f->ctx, s, NABLA_F32, NABLA_RASTER_TO_TILE, f->q, f->o, 1, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
  /* Plain sequences take the copy path: same checks. */
  nabla_shape plain = {1, 2, 192, 16, 0, 0, 0};
  assert_int_equal(nabla_reorder(f->ctx, &plain, NABLA_F32, NABLA_RASTER_TO_TILE, f->q, f->o, 1, NULL, &done),
                   NABLA_INVALID_ARGUMENT);
  finish_case(f, NABLA_INVALID_ARGUMENT, NABLA_INVALID_ARGUMENT, done, __LINE__);
}

static void test_aliasing(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  /* o is the sentinel buffer, so aliasing it as q/k/v keeps the sentinel check meaningful. */
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->o, f->k, f->v, f->o);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->q, f->o, f->v, f->o);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->q, f->k, f->o, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kNabla, s, NABLA_F32, f->o, f->k, f->v, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kSta, s, NABLA_F32, f->q, f->k, f->o, f->o);
  EXPECT_ATTENTION(NABLA_INVALID_ARGUMENT, &kBoth, s, NABLA_F32, f->q, f->o, f->v, f->o);
  EXPECT_REORDER(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NABLA_RASTER_TO_TILE, f->o, f->o);
  nabla_shape plain = {1, 2, 192, 16, 0, 0, 0};
  EXPECT_REORDER(NABLA_INVALID_ARGUMENT, &plain, NABLA_F32, NABLA_TILE_TO_RASTER, f->o, f->o);
  /* Sub-buffers of one parent: the same bytes under two handles, or a shifted overlap. */
  cl_uint align_bits = 0;
  assert_int_equal(clGetDeviceInfo(nabla_context_device(f->ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN,
                                   sizeof align_bits, &align_bits, NULL), CL_SUCCESS);
  size_t align = align_bits / 8 ? align_bits / 8 : 1, shift = (f->bytes / 2 + align - 1) / align * align;
  cl_int rc = CL_SUCCESS;
  cl_mem parent = clCreateBuffer(nabla_context_cl_context(f->ctx), CL_MEM_READ_WRITE, 2 * f->bytes + align, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_buffer_region whole = {0, f->bytes}, shifted = {shift, f->bytes};
  cl_mem a = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &whole, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem b = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &whole, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  cl_mem c = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &shifted, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, a, f->k, f->v, b);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->q, c, f->v, a);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, f->q, f->k, parent, c);
  clReleaseMemObject(a), clReleaseMemObject(b), clReleaseMemObject(c), clReleaseMemObject(parent);
}

static void test_foreign_objects(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  int nb = nabla_shape_blocks(s);
  size_t cells = (size_t)s->batch * s->heads * nb * nb;
  uint8_t *bitmap = malloc(cells);
  memset(bitmap, 1, cells);

  /* A mask of another shape (same element count, another grid). */
  nabla_shape other = {1, 2, 192, 16, 1, 12, 16};
  int onb = nabla_shape_blocks(&other);
  uint8_t *obitmap = malloc((size_t)2 * onb * onb);
  memset(obitmap, 1, (size_t)2 * onb * onb);
  nabla_mask *wrong_shape = NULL;
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, &other, obitmap, &wrong_shape), NABLA_OK);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, wrong_shape, f->q, f->k, f->v, f->o);
  nabla_shape batch2 = *s;
  batch2.heads = 1;
  batch2.batch = 2;
  nabla_mask *wrong_bh = NULL;
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, &batch2, bitmap, &wrong_bh), NABLA_OK);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, wrong_bh, f->q, f->k, f->v, f->o);

  /* A mask and a buffer of another context. */
  nabla_context *c2 = tu_context();
  assert_non_null(c2);
  nabla_mask *foreign = NULL;
  assert_int_equal(nabla_mask_from_bitmap(c2, s, bitmap, &foreign), NABLA_OK);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, foreign, f->q, f->k, f->v, f->o);
  cl_int rc = CL_SUCCESS;
  cl_mem foreign_buf = clCreateBuffer(nabla_context_cl_context(c2), CL_MEM_READ_WRITE, f->bytes, NULL, &rc);
  assert_int_equal(rc, CL_SUCCESS);
  EXPECT_ATTEND(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NULL, foreign_buf, f->k, f->v, f->o);
  EXPECT_REORDER(NABLA_INVALID_ARGUMENT, s, NABLA_F32, NABLA_RASTER_TO_TILE, foreign_buf, f->o);
  int64_t kept = 0;
  assert_int_equal(nabla_mask_stats(f->ctx, foreign, &kept, NULL), NABLA_INVALID_ARGUMENT);
  assert_true(strlen(nabla_last_error(f->ctx)) > 0);

  /* A bitmap with values other than 0/1. */
  bitmap[cells - 1] = 7;
  nabla_mask *m = NULL;
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, s, bitmap, &m), NABLA_INVALID_ARGUMENT);
  assert_null(m);
  assert_true(strlen(nabla_last_error(f->ctx)) > 0);
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, s, NULL, &m), NABLA_INVALID_ARGUMENT);
  assert_null(m);
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, s, bitmap, NULL), NABLA_INVALID_ARGUMENT);

  clReleaseMemObject(foreign_buf);
  nabla_mask_release(foreign);
  nabla_mask_release(wrong_bh);
  nabla_mask_release(wrong_shape);
  nabla_context_destroy(c2);
  free(bitmap);
  free(obitmap);
}

static void test_mask_reads_too_small(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  int nb = nabla_shape_blocks(s);
  size_t rows = (size_t)s->batch * s->heads * nb, cells = rows * nb;
  uint8_t *bitmap = calloc(cells, 1);
  for (size_t r = 0; r < rows; r++) bitmap[r * nb + r % nb] = 1; /* one block per row */
  nabla_mask *m = NULL;
  assert_int_equal(nabla_mask_from_bitmap(f->ctx, s, bitmap, &m), NABLA_OK);

  /* Host outputs pre-filled with a sentinel must come back untouched. */
  int32_t *row_ptr = malloc((rows + 1) * sizeof *row_ptr), *col_idx = malloc(cells * sizeof *col_idx);
  int32_t *num = malloc(rows * sizeof *num);
  uint8_t *bits = malloc(cells);
#define RESET()                                             \
  do {                                                      \
    memset(row_ptr, SENTINEL, (rows + 1) * sizeof *row_ptr); \
    memset(col_idx, SENTINEL, cells * sizeof *col_idx);      \
    memset(num, SENTINEL, rows * sizeof *num);               \
    memset(bits, SENTINEL, cells);                           \
  } while (0)
#define UNTOUCHED(ptr, bytes)                                                              \
  do {                                                                                     \
    const unsigned char *p_ = (const unsigned char *)(ptr);                                \
    for (size_t i_ = 0; i_ < (bytes); i_++)                                                \
      if (p_[i_] != SENTINEL) fail_msg("line %d: %s byte %zu written", __LINE__, #ptr, i_); \
  } while (0)
#define EXPECT_READ(want, call)                                                                    \
  do {                                                                                             \
    RESET();                                                                                       \
    nabla_status st_ = (call);                                                                     \
    if (st_ != (want)) fail_msg("line %d: %s: got %d want %d (%s)", __LINE__, #call, (int)st_, (int)(want), \
                                nabla_last_error(f->ctx));                                        \
    if (!nabla_last_error(f->ctx)[0]) fail_msg("line %d: empty last error", __LINE__);            \
    UNTOUCHED(row_ptr, (rows + 1) * sizeof *row_ptr);                                              \
    UNTOUCHED(col_idx, cells * sizeof *col_idx);                                                   \
    UNTOUCHED(num, rows * sizeof *num);                                                            \
    UNTOUCHED(bits, cells);                                                                        \
  } while (0)

  EXPECT_READ(NABLA_BUFFER_TOO_SMALL, nabla_mask_read_bitmap(f->ctx, m, bits, cells - 1));
  EXPECT_READ(NABLA_BUFFER_TOO_SMALL, nabla_mask_read_bitmap(f->ctx, m, bits, 0));
  EXPECT_READ(NABLA_INVALID_ARGUMENT, nabla_mask_read_bitmap(f->ctx, m, NULL, cells));
  EXPECT_READ(NABLA_BUFFER_TOO_SMALL, nabla_mask_read_csr(f->ctx, m, row_ptr, rows, col_idx, cells));
  EXPECT_READ(NABLA_INVALID_ARGUMENT, nabla_mask_read_csr(f->ctx, m, NULL, rows + 1, col_idx, cells));
  /* col_idx too small for the kept blocks (rows kept in all). */
  EXPECT_READ(NABLA_BUFFER_TOO_SMALL, nabla_mask_read_csr(f->ctx, m, row_ptr, rows + 1, col_idx, rows - 1));
  EXPECT_READ(NABLA_INVALID_ARGUMENT, nabla_mask_read_csr(f->ctx, m, row_ptr, rows + 1, NULL, rows));
  EXPECT_READ(NABLA_BUFFER_TOO_SMALL, nabla_mask_read_flex(f->ctx, m, num, rows - 1, col_idx, cells));
  EXPECT_READ(NABLA_BUFFER_TOO_SMALL, nabla_mask_read_flex(f->ctx, m, num, rows, col_idx, cells - 1));
  EXPECT_READ(NABLA_INVALID_ARGUMENT, nabla_mask_read_flex(f->ctx, m, NULL, rows, col_idx, cells));
  EXPECT_READ(NABLA_INVALID_ARGUMENT, nabla_mask_read_flex(f->ctx, m, num, rows, NULL, cells));
  EXPECT_READ(NABLA_INVALID_ARGUMENT, nabla_mask_read_bitmap(f->ctx, NULL, bits, cells));
  EXPECT_READ(NABLA_INVALID_ARGUMENT, nabla_mask_stats(f->ctx, NULL, NULL, NULL));
  assert_int_equal(nabla_mask_read_bitmap(NULL, m, bits, cells), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_mask_stats(NULL, m, NULL, NULL), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_mask_buffers(NULL, NULL, NULL), NABLA_INVALID_ARGUMENT);

  /* The right sizes work, and give what went in. */
  int64_t kept = -1;
  assert_int_equal(nabla_mask_stats(f->ctx, m, &kept, NULL), NABLA_OK);
  assert_int_equal(kept, (int64_t)rows);
  assert_int_equal(nabla_mask_read_csr(f->ctx, m, row_ptr, rows + 1, col_idx, rows), NABLA_OK);
  for (size_t r = 0; r < rows; r++) assert_int_equal(col_idx[r], (int32_t)(r % nb));
  assert_int_equal(nabla_mask_read_bitmap(f->ctx, m, bits, cells), NABLA_OK);
  assert_memory_equal(bits, bitmap, cells);
#undef EXPECT_READ
#undef UNTOUCHED
#undef RESET
  nabla_mask_release(m);
  free(bitmap), free(row_ptr), free(col_idx), free(num), free(bits);
}

/* ---- algorithm strings -------------------------------------------------------------------- */

static void test_algo_parse_errors(void **state) {
  (void)state;
  struct {
    const char *text, *names; /* `names` must appear quoted in the message */
  } cases[] = {
      {"nabla-abc", "\"abc\""},
      {"nabla-1.5", "\"1.5\""},
      {"nabla-0", "\"0\""},
      {"nabla-", "\"\""},
      {"nabla-0.5x", "\"0.5x\""},
      {"sta-1-2", "\"sta-1-2\""},
      {"sta-3-x-3", "\"x\""},
      {"sta-3-0-3", "\"0\""},
      {"sta-3-3-3-3", "\"sta-3-3-3-3\""},
      {"foo", "\"foo\""},
      {"NABLA-0.5", "\"NABLA-0.5\""},
      {"nabla-0.7_bogus", "\"bogus\""},
      {"nabla-0.5_sta-3-3-3_x", "\"x\""},
      {"sta-3-3-3_nabla-0.5", "\"nabla-0.5\""},
      {"nabla-0.5_nabla-0.6", "\"nabla-0.6\""},
      {"dense_sta-1-1-1", "\"dense\""},
      {"nabla-0.5_", "empty part"},
      {" nabla-0.5", "whitespace"},
      {"nabla-inf", "\"inf\""},
      {"nabla-0x0.8p0", "\"0x0.8p0\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    nabla_algo a = {7, 7.0, 7, 7, 7, 7};
    char err[512];
    memset(err, 0, sizeof err);
    nabla_status st = nabla_algo_parse(cases[i].text, &a, err, sizeof err);
    if (st != NABLA_INVALID_ARGUMENT) fail_msg("\"%s\" parsed (status %d)", cases[i].text, (int)st);
    if (!strstr(err, cases[i].names))
      fail_msg("\"%s\": message does not name %s: %s", cases[i].text, cases[i].names, err);
    /* The output is untouched on failure. */
    assert_int_equal(a.nabla, 7);
    assert_true(a.thr == 7.0);
    assert_int_equal(a.sta_w, 7);
  }
  nabla_algo a;
  char err[64];
  assert_int_equal(nabla_algo_parse(NULL, &a, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_true(strlen(err) > 0);
  assert_int_equal(nabla_algo_parse("dense", NULL, err, sizeof err), NABLA_INVALID_ARGUMENT);
  assert_int_equal(nabla_algo_parse("foo", &a, NULL, 0), NABLA_INVALID_ARGUMENT);
  /* A short err buffer is truncated, not overrun. */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  assert_int_equal(nabla_algo_parse("nabla-abc", &a, tiny, 4), NABLA_INVALID_ARGUMENT);
  assert_true(strlen(tiny) == 3);
  for (size_t i = 4; i < sizeof tiny; i++) assert_int_equal(tiny[i], 'x');
}

/* The context keeps working after all of the above. */
static void test_context_still_usable(void **state) {
  FIX_OR_SKIP(state);
  nabla_shape *s = &f->shape;
  cl_mem out = clCreateBuffer(nabla_context_cl_context(f->ctx), CL_MEM_READ_WRITE, f->bytes, NULL, NULL);
  assert_non_null(out);
  if (nabla_attention(f->ctx, &kSta, s, NABLA_F32, f->q, f->k, f->v, out, 0, NULL, NULL) != NABLA_OK)
    fail_msg("attention after errors: %s", nabla_last_error(f->ctx));
  assert_int_equal(clFinish(nabla_context_queue(f->ctx)), CL_SUCCESS);
  assert_string_equal(nabla_last_error(f->ctx), "");
  clReleaseMemObject(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_algo_parse_errors),
      cmocka_unit_test(test_gate_detects_enqueue),
      cmocka_unit_test(test_null_context),
      cmocka_unit_test(test_null_shape_and_tensors),
      cmocka_unit_test(test_buffer_too_small),
      cmocka_unit_test(test_bad_dtype),
      cmocka_unit_test(test_bad_shapes),
      cmocka_unit_test(test_bad_algo_values),
      cmocka_unit_test(test_wait_list_inconsistent),
      cmocka_unit_test(test_aliasing),
      cmocka_unit_test(test_foreign_objects),
      cmocka_unit_test(test_mask_reads_too_small),
      cmocka_unit_test(test_context_still_usable),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
