/*
 * Tensor maps for the wgmma kernel's tensor copies (WG_BULK 2, cl/attention_wgmma.cl).
 *
 * A tensor map is the 128-byte descriptor Hopper's copy engine reads to fetch a box of a
 * tensor and swizzle it into local memory. Its format is private to NVIDIA's driver, so it is
 * encoded by the CUDA driver library (cuTensorMapEncodeTiled in libcuda.so.1, which every
 * NVIDIA OpenCL installation carries, opened at run time: nothing links against it). What is
 * encoded is a template per head dim, with a placeholder address and NABLA_TMAP_TEMPLATE_ROWS
 * rows; the device writes in the buffers' addresses (OpenCL does not tell the host where a
 * buffer lives) and the problem's row count (tmap_bind), so one template serves every shape.
 *
 * The encoder wants a current CUDA context: the device's primary context is retained around the
 * one call and released right after (on an H200 the first CUDA use costs about 0.35 s, and the
 * context 0.5 GB of device memory while held, unless a CUDA user in the process, such as
 * PyTorch, holds it anyway). A template is kept by the nablacl context and in the disk cache
 * ("tensormaps", keyed by the device description, which carries the OpenCL driver's version),
 * so once cached, a process never touches CUDA at all (with NABLACL_CACHE_DIR=off, once per
 * context and head dim). A forward-compatible libcuda.so.1 newer than the OpenCL driver would
 * encode under the same key; the map is read by the copy engine, whose format such a library
 * must keep.
 */
#ifndef NABLA_TENSORMAP_H
#define NABLA_TENSORMAP_H

#include <stdint.h>

#include "internal.h"

#define NABLA_TMAP_BYTES 128
#define NABLA_TMAP_TEMPLATE_ROWS 64 /* one box; tmap_bind replaces it */
#define NABLA_TMAP_NS "tensormaps" /* disk cache namespace */

/* The map template of a [rows][head_dim] matrix of 16-bit values (row-major, rows of
 * head_dim x 2 bytes) read in 64 x 64 boxes with the 128-byte swizzle, rows past the end as
 * zeros, for head_dim 64 or 128. From the context, else the disk cache, else the CUDA driver
 * (opened on first use, kept open by the context). NABLA_UNSUPPORTED (with the reason) when
 * there is no CUDA driver or it refuses the map; map is then untouched. */
nabla_status nabla_tensor_map_template(nabla_context *ctx, int head_dim, unsigned char map[NABLA_TMAP_BYTES]);

/* Closes the driver library if the context opened it. */
void nabla_cuda_driver_release(nabla_context *ctx);

#endif
