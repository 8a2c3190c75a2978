/*
 * cli_inputs — the .npy attention inputs and mask exports that `nablacl run` and `nablacl mask`
 * share: reading and validating Q/K(/V), uploading them in tile order, reading a built mask
 * back and adding its exports to an atomic output set.
 *
 * Every function prints its own one-line error ("nablacl: <opt> <path>: <why>") and returns 0,
 * CLI_EXIT_USAGE (bad input) or CLI_EXIT_RUNTIME (device or memory).
 */
#ifndef NABLACL_TOOLS_CLI_INPUTS_H
#define NABLACL_TOOLS_CLI_INPUTS_H

#include "cli_common.h"

/** What the command line says about the inputs (NULL strings: option absent). */
typedef struct {
  const char *q_path, *k_path, *v_path; /* v_path NULL: the command takes no V */
  const char *grid_text;                /* --grid as given; `grid` holds it parsed */
  int grid[3];
  const char *dtype_text;               /* --dtype as given; `dtype` holds it parsed */
  nabla_dtype dtype;
} cli_input_spec;

typedef struct {
  npy_array q, k, v;    /* v empty without spec->v_path */
  nabla_shape shape;
  nabla_dtype dtype;
  size_t elems, bytes;  /* of one of Q, K, V */
} cli_inputs;

/**
 * The options that describe the inputs, as given (NULL: absent): --algo (required) into
 * `algo`, --grid into `grid`, --dtype into `dtype`, --order ("tile" by default) into `raster`;
 * STA needs a grid.
 */
int cli_parse_input_options(const char *algo_text, const char *grid_text, const char *dtype_text,
                            const char *order_text, nabla_algo *algo, int grid[3],
                            nabla_dtype *dtype, int *raster);

/** Reads a 4-D [B,H,S,D] .npy for option `opt` (every dimension 1 .. 2^31 - 1). */
int cli_load_tensor(const char *opt, const char *path, npy_array *out);

/**
 * Reads Q, K (and V) and checks that they agree in shape and dtype, that the dtype is a
 * storage type ('<u2' only with --dtype bf16), and that the shape (with --grid) is one the
 * library takes.
 */
int cli_inputs_load(const cli_input_spec *spec, cli_inputs *in);
void cli_inputs_free(cli_inputs *in);

/**
 * A device buffer of one input in tile order, from `host` (in raster order when `raster`:
 * uploaded, then reordered on the device). Enqueues only; the caller finishes the queue.
 */
int cli_upload_tile(nabla_context *ctx, const cli_inputs *in, int raster, const void *host,
                    const char *name, cl_mem *out);

/** Storage -> double in tile order (from raster order when `raster`); NULL without memory. */
double *cli_tile_doubles(const cli_inputs *in, int raster, const void *data);

/** A built mask on the host: its counts, and the layouts that were asked for. */
typedef struct {
  int64_t kept;
  double density;
  uint8_t *bitmap;           /* [B,H,Nb,Nb] 0/1, or NULL */
  int32_t *kv_num, *kv_idx;  /* FlexAttention's kv_num_blocks / kv_indices, or NULL */
} cli_mask_host;

/** Reads `mask` back: always the counts, the bitmap when `bitmap`, the Flex layout when `flex`. */
int cli_mask_read(nabla_context *ctx, const nabla_shape *shape, const nabla_mask *mask,
                  int bitmap, int flex, cli_mask_host *out);
void cli_mask_host_free(cli_mask_host *m);

/** The two --csr-out files of PREFIX, checked writable; the caller frees both paths. */
int cli_csr_paths(const char *prefix, char **num_path, char **idx_path);

/**
 * Adds the mask's exports to `set`: --mask-out (bitmap '|u1' [B,H,Nb,Nb]) when `mask_out`,
 * and the two --csr-out files ('<i4' [B,H,Nb] and [B,H,Nb,Nb]) when `num_path`.
 */
int cli_mask_outputs_add(cli_outputs *set, const nabla_shape *shape, const char *mask_out,
                         const char *num_path, const char *idx_path, const cli_mask_host *m);

/**
 * What every command that builds a mask reports first, as a new JSON object: device, algo,
 * dtype, order, shape, density, blocks_kept, blocks_total.
 */
cJSON *cli_mask_report_json(const char *device, const char *algo, const cli_inputs *in,
                            int raster, const cli_mask_host *m);
/** The same as text, one "label        value" line each (labels in a 13-character column). */
void cli_mask_report_human(const char *device, const char *algo, const cli_inputs *in,
                           int raster, const cli_mask_host *m);

/** Adds mask_rows, mask_rows_equal, mask_rows_near_threshold, mask_rows_unexplained to `o`. */
void cli_json_add_mask_compare(cJSON *o, const cli_mask_compare *m);

/** Prints "<lead>mask rows identical E / R, N near threshold, U unexplained: ok|FAILED". */
void cli_print_mask_compare(const char *lead, const cli_mask_compare *m, int ok);

#endif
