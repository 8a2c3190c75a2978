/*
 * synth — video-like synthetic Q/K/V for `demo` and `bench`.
 *
 * Each (b, h) slice is a smooth latent field over (t, h, w) (random Fourier features with a
 * per-head length scale) projected to D dims, plus noise; K's projection is Q's plus noise, so
 * attention is local and NABLA masks are non-trivial (white noise keeps almost every block).
 */
#ifndef NABLACL_TOOLS_SYNTH_H
#define NABLACL_TOOLS_SYNTH_H

#include "nablacl.h"

/**
 * Fills q, k, v ([B,H,S,D] of `dtype`, raster order; a plain sequence is a 1 x 1 x S grid)
 * deterministically from `seed`. Returns 0, or -1 when out of memory.
 */
int synth_video_qkv(const nabla_shape *shape, nabla_dtype dtype, uint64_t seed, void *q, void *k,
                    void *v);

/** Fills `n` elements of `dtype` with approximately N(0, scale²) noise from `seed`. */
void synth_noise(void *dst, size_t n, nabla_dtype dtype, uint64_t seed, float scale);

#endif
