/* Status text and the per-context last-error message. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *nabla_status_str(nabla_status status) {
  switch (status) {
#define NABLA_STATUS_CASE_(name, code, text) \
  case NABLA_##name:                         \
    return text;
    NABLA_STATUS_MAP(NABLA_STATUS_CASE_)
#undef NABLA_STATUS_CASE_
  }
  return "unknown status";
}

unsigned nabla_version(void) { return NABLA_VERSION_NUMBER; }

#define NABLA_STR2_(x) #x
#define NABLA_STR_(x) NABLA_STR2_(x)
const char *nabla_version_string(void) {
  return NABLA_STR_(NABLA_VERSION_MAJOR) "." NABLA_STR_(NABLA_VERSION_MINOR) "." NABLA_STR_(
      NABLA_VERSION_PATCH);
}

nabla_status nabla_fail(nabla_context *ctx, nabla_status st, const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
  }
  return st;
}

void nabla_clear_error(nabla_context *ctx) {
  if (ctx) ctx->error[0] = '\0';
}

const char *nabla_last_error(const nabla_context *ctx) { return ctx ? ctx->error : ""; }

const char *nabla_cl_error_name(cl_int err) {
  switch (err) {
#define E(x) \
  case x:    \
    return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_MEM_COPY_OVERLAP) E(CL_BUILD_PROGRAM_FAILURE)
    E(CL_MAP_FAILURE) E(CL_MISALIGNED_SUB_BUFFER_OFFSET) E(CL_COMPILE_PROGRAM_FAILURE)
    E(CL_LINKER_NOT_AVAILABLE) E(CL_LINK_PROGRAM_FAILURE) E(CL_INVALID_VALUE)
    E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_QUEUE_PROPERTIES) E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_HOST_PTR)
    E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS)
    E(CL_INVALID_PROGRAM) E(CL_INVALID_PROGRAM_EXECUTABLE) E(CL_INVALID_KERNEL_NAME)
    E(CL_INVALID_KERNEL_DEFINITION) E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX)
    E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS)
    E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE) E(CL_INVALID_WORK_ITEM_SIZE)
    E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_EVENT_WAIT_LIST) E(CL_INVALID_EVENT)
    E(CL_INVALID_OPERATION) E(CL_INVALID_BUFFER_SIZE) E(CL_INVALID_GLOBAL_WORK_SIZE)
#undef E
    default:
      return "unknown OpenCL error";
  }
}
