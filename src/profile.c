/* Per-stage kernel profiling of a context (nabla_profile_enable / nabla_profile_report). */
#include <stdio.h>
#include <string.h>

#include "internal.h"

cl_event *nabla_profile_slot(nabla_context *ctx, const char *stage) {
  nabla_profile *p = &ctx->profile;
  if (!p->on || p->count == NABLA_PROFILE_MAX) return NULL;
  p->stage[p->count] = stage;
  p->event[p->count] = NULL;
  return &p->event[p->count++];
}

void nabla_profile_share(cl_event *slot, cl_event *done) {
  if (slot && done && *done) {
    *slot = *done;
    clRetainEvent(*slot);
  }
}

void nabla_profile_release(nabla_context *ctx) {
  nabla_profile *p = &ctx->profile;
  for (int i = 0; i < p->count; i++)
    if (p->event[i]) clReleaseEvent(p->event[i]);
  p->count = 0;
}

nabla_status nabla_profile_enable(nabla_context *ctx, int on) {
  cl_command_queue_properties props = 0;
  if (!ctx) return NABLA_INVALID_ARGUMENT;
  if (on && (clGetCommandQueueInfo(ctx->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL) != CL_SUCCESS ||
             !(props & CL_QUEUE_PROFILING_ENABLE)))
    return nabla_fail(ctx, NABLA_UNSUPPORTED,
                      "profiling needs a queue made with CL_QUEUE_PROFILING_ENABLE (this context's has none)");
  nabla_profile_release(ctx);
  ctx->profile.on = on != 0;
  return NABLA_OK;
}

nabla_status nabla_profile_report(nabla_context *ctx, char *buf, size_t len) {
  if (!ctx || !buf || !len) return NABLA_INVALID_ARGUMENT;
  nabla_profile *p = &ctx->profile;
  const char *names[NABLA_PROFILE_MAX];
  double ms[NABLA_PROFILE_MAX];
  int n = 0;
  buf[0] = '\0';
  clFinish(ctx->queue);
  for (int i = 0; i < p->count; i++) {
    cl_ulong t0 = 0, t1 = 0;
    if (!p->event[i] ||
        clGetEventProfilingInfo(p->event[i], CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL) != CL_SUCCESS ||
        clGetEventProfilingInfo(p->event[i], CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) != CL_SUCCESS)
      continue;
    int j = 0;
    while (j < n && strcmp(names[j], p->stage[i]) != 0) j++;
    if (j == n) {
      names[n] = p->stage[i];
      ms[n++] = 0.0;
    }
    ms[j] += (double)(t1 - t0) * 1e-6;
  }
  size_t off = 0;
  for (int j = 0; j < n && off < len; j++) {
    int w = snprintf(buf + off, len - off, "%s %.3f\n", names[j], ms[j]);
    if (w < 0) break;
    off += (size_t)w;
  }
  nabla_profile_release(ctx);
  return NABLA_OK;
}
