/*
 * Knobs: developer settings of the kernels, one table (knobs.c) of name, environment variable,
 * range, default, the variants that read them and one line of help. A context reads the
 * environment once, when it is created (a value out of range, or an unknown variant name, fails
 * the creation with the valid values); nabla_knob_set changes a context's value later. Readers
 * take ctx->knobs[NABLA_KNOB_*], where NABLA_KNOB_UNSET means "not set: the reader's default".
 */
#ifndef NABLA_KNOBS_H
#define NABLA_KNOBS_H

#include "internal.h"

/* Reads every knob's environment variable into ctx->knobs; on a bad value NABLA_INVALID_ARGUMENT
 * with the message in err. */
nabla_status nabla_knobs_from_env(nabla_context *ctx, char *err, size_t err_len);

#endif
