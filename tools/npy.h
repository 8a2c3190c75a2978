/*
 * npy — reads and writes NumPy .npy files, the CLI's tensor interchange format.
 *
 * Reads format versions 1.0, 2.0 and 3.0 (3.0 differs only in allowing a UTF-8 header);
 * writes 1.0, or 2.0 when the header would not fit a 16-bit length. Only C-order
 * (fortran_order False), little-endian arrays of the dtypes below are accepted; anything else
 * is rejected with a message saying why. Data is kept in host byte order in memory.
 *
 * Writes are atomic: the file is written under a temporary name next to the target and renamed
 * into place only when complete, so a failed write never leaves a partial file behind.
 * npy_write_temp exposes the first half so a caller producing several files can rename them all
 * only after every one was written.
 *
 * No function here prints or exits; failures return -1 with a message in err[0..err_len).
 */
#ifndef NABLACL_TOOLS_NPY_H
#define NABLACL_TOOLS_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
  NPY_F32 = 0,   /* '<f4' */
  NPY_F16 = 1,   /* '<f2' */
  NPY_U16 = 2,   /* '<u2' (the CLI's carrier for bf16 bits) */
  NPY_U8 = 3,    /* '|u1' (block bitmaps) */
  NPY_I32 = 4    /* '<i4' (CSR / FlexAttention indices) */
} npy_dtype;

#define NPY_MAX_DIMS 8

/** npy_read's and npy_parse_header's result for a well-formed file of a dtype not listed in
 * npy_dtype (little-endian or byte-order-free), so a caller can say which dtypes it takes;
 * every other failure is -1. */
#define NPY_EDTYPE (-2)

typedef struct {
  npy_dtype dtype;
  int ndim;
  size_t shape[NPY_MAX_DIMS];
  size_t count;   /* number of elements: the product of shape (1 for ndim 0) */
  void *data;     /* count * npy_dtype_size(dtype) bytes, host byte order; owned */
} npy_array;

/** The descr string of a dtype, e.g. "<f4"; "?" for an unknown value. */
const char *npy_dtype_descr(npy_dtype dtype);
/** Bytes per element (1, 2 or 4); 0 for an unknown value. */
size_t npy_dtype_size(npy_dtype dtype);

/**
 * Reads a whole .npy file into *out (zeroed first; release with npy_free): npy_open, then
 * npy_read_data. The header's shape is checked against the file size before the data is
 * allocated (a stream of unknown size is read in bounded chunks). Returns 0,
 * NPY_EDTYPE for a dtype not in npy_dtype, or -1 for any other failure (bad magic, unsupported
 * version, Fortran order, big-endian data, malformed header, truncated or oversized data), with
 * the reason in err.
 */
int npy_read(const char *path, npy_array *out, char *err, size_t err_len);

/** An opened .npy file whose header is read and checked (npy_open): `array` has the dtype,
 * shape and count, no data yet. */
typedef struct {
  FILE *file;
  npy_array array;
} npy_reader;

/**
 * Opens a .npy file and reads its header: magic, version, dictionary, and, for a regular file,
 * that the file holds exactly the bytes the shape needs. Nothing is allocated for the data, so
 * a caller can check the shape before npy_read_data. Returns as npy_read; on failure nothing
 * stays open.
 */
int npy_open(const char *path, npy_reader *r, char *err, size_t err_len);

/** Reads the data of an opened file into *out (release with npy_free) and closes the reader,
 * on success and on failure. Returns 0 or -1 with the reason in err. */
int npy_read_data(npy_reader *r, npy_array *out, char *err, size_t err_len);

/** Closes a reader without reading its data (a zeroed reader is fine). */
void npy_close(npy_reader *r);

/** Parses a header dictionary (the text after the length field); exposed for tests. Returns as
 * npy_read does. */
int npy_parse_header(const char *text, size_t len, npy_array *out, char *err, size_t err_len);

/** Frees the data of an array (NULL allowed) and zeroes it. */
void npy_free(npy_array *array);

/**
 * Writes an array to a new temporary file in the directory of `path` and returns its
 * malloc'd name in *temp_path; the caller renames it onto `path` (or unlinks it). On failure
 * nothing is left on disk and *temp_path is NULL.
 */
int npy_write_temp(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
                   const void *data, char **temp_path, char *err, size_t err_len);

/** npy_write_temp followed by the rename: `path` is either complete or untouched. */
int npy_write(const char *path, npy_dtype dtype, int ndim, const size_t *shape,
              const void *data, char *err, size_t err_len);

#endif
