/* PNG output of RGB pictures (libpng, optional at build time: NABLACL_HAVE_PNG). */
#ifndef NABLACL_PNG_OUT_H
#define NABLACL_PNG_OUT_H

#include <stddef.h>
#include <stdint.h>

#include "nablacl.h"

/** 1 when this build can write PNG files. */
int png_available(void);

/**
 * Writes `rgb` (width x height pixels, 3 bytes each, rows top to bottom) as an 8-bit RGB PNG to
 * a new temporary file next to `path`; on success `*temp_path` is its name (the caller renames
 * it into place and frees the name). Returns 0, or -1 with the reason in err (also when this
 * build has no libpng).
 */
int png_write_temp(const char *path, const uint8_t *rgb, int width, int height, char **temp_path,
                   char *err, size_t err_len);

/**
 * Draws (batch, head) of a host block bitmap [B,H,Nb,Nb] with nabla_mask_picture (`cell` 0:
 * automatic) and writes it like png_write_temp. 0, or -1 with the reason in err.
 */
int mask_png_temp(const char *path, const nabla_shape *shape, const uint8_t *bitmap, int batch,
                  int head, int cell, char **temp_path, char *err, size_t err_len);

#endif
