/*
 * Tensor maps for the wgmma kernel's tensor copies (WG_BULK 2, cl/attention_wgmma.cl).
 *
 * A tensor map is the 128-byte descriptor Hopper's copy engine reads to fetch a box of a
 * tensor and swizzle it into local memory. Its format is private to NVIDIA's driver, so it is
 * encoded by the CUDA driver library (cuTensorMapEncodeTiled in libcuda.so.1, which every
 * NVIDIA OpenCL installation carries, opened at run time: nothing links against it). The encoder
 * wants a current CUDA context: the device's primary context is retained on first use (shared
 * with any CUDA user in the process, such as PyTorch; otherwise it costs its own device memory)
 * and released with the nablacl context. The map is encoded with a placeholder address; the
 * device fills in the buffers' addresses (tmap_bind), since OpenCL does not tell the host where a
 * buffer lives.
 */
#ifndef NABLA_TENSORMAP_H
#define NABLA_TENSORMAP_H

#include <stdint.h>

#include "internal.h"

#define NABLA_TMAP_BYTES 128

/* The map of a [rows][head_dim] matrix of 16-bit values (row-major, rows of head_dim x 2
 * bytes) read in 64 x 64 boxes with the 128-byte swizzle, rows past the end as zeros. The CUDA
 * driver is opened on first use and kept by the context. NABLA_UNSUPPORTED (with the reason)
 * when there is no CUDA driver or it refuses the map; map is then untouched. */
nabla_status nabla_tensor_map_encode(nabla_context *ctx, uint64_t rows, int head_dim,
                                     unsigned char map[NABLA_TMAP_BYTES]);

/* Releases the primary CUDA context and closes the driver library if the context opened them. */
void nabla_cuda_driver_release(nabla_context *ctx);

#endif
