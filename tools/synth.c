/* Video-like synthetic inputs (see synth.h). */
#include "synth.h"

#include <math.h>
#include <stdlib.h>

#include "cli_common.h"

#define SYNTH_FEATURES 16 /* random Fourier features of the latent field */

typedef struct {
  uint64_t state;
} synth_rng;

static uint64_t rng_next(synth_rng *r) { /* splitmix64 */
  uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double rng_uniform(synth_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Approximately N(0, 1): four 16-bit uniforms summed (Irwin-Hall), cheap enough for 10^9. */
static float rng_noise(synth_rng *r) {
  uint64_t x = rng_next(r);
  double sum = (double)(x & 0xffff) + (double)(x >> 16 & 0xffff) + (double)(x >> 32 & 0xffff) +
               (double)(x >> 48);
  return (float)((sum * (1.0 / 65536.0) - 2.0) * 1.7320508075688772);
}

typedef struct {
  double omega[SYNTH_FEATURES][3], phase[SYNTH_FEATURES];
  float *wq, *wk, *wv; /* [SYNTH_FEATURES][D] */
  float amp;
} synth_head;

static void head_init(synth_head *hd, int d, synth_rng *r) {
  /* Heads differ in reach: spatial length scale 3..12 tokens, temporal 1..4 frames. */
  double ls = 3.0 + 9.0 * rng_uniform(r), lt = 1.0 + 3.0 * rng_uniform(r);
  for (int c = 0; c < SYNTH_FEATURES; c++) {
    hd->omega[c][0] = rng_noise(r) / lt;
    hd->omega[c][1] = rng_noise(r) / ls;
    hd->omega[c][2] = rng_noise(r) / ls;
    hd->phase[c] = 6.283185307179586 * rng_uniform(r);
  }
  for (int i = 0; i < SYNTH_FEATURES * d; i++) {
    hd->wq[i] = rng_noise(r);
    hd->wk[i] = hd->wq[i] + 0.5f * rng_noise(r); /* K sees what Q sees, roughly */
    hd->wv[i] = rng_noise(r);
  }
  hd->amp = (float)(2.5 / pow((double)d, 0.25)); /* reduced logits of order 6 for any D */
}

static void token_row(const synth_head *hd, int d, double t, double h, double w, float *q, float *k,
                      float *v, synth_rng *r) {
  float f[SYNTH_FEATURES];
  const float norm = (float)sqrt(2.0 / SYNTH_FEATURES);
  for (int c = 0; c < SYNTH_FEATURES; c++)
    f[c] = norm * (float)cos(hd->omega[c][0] * t + hd->omega[c][1] * h + hd->omega[c][2] * w + hd->phase[c]);
  for (int j = 0; j < d; j++) {
    float sq = 0, sk = 0, sv = 0;
    for (int c = 0; c < SYNTH_FEATURES; c++) {
      sq += f[c] * hd->wq[c * d + j];
      sk += f[c] * hd->wk[c * d + j];
      sv += f[c] * hd->wv[c * d + j];
    }
    q[j] = hd->amp * sq + 0.3f * rng_noise(r);
    k[j] = hd->amp * sk + 0.3f * rng_noise(r);
    v[j] = sv + 0.3f * rng_noise(r);
  }
}

int synth_video_qkv(const nabla_shape *s, nabla_dtype dtype, uint64_t seed, void *q, void *k, void *v) {
  int T = s->grid_t ? s->grid_t : 1, Ht = s->grid_t ? s->grid_h : 1, Wt = s->grid_t ? s->grid_w : s->seq;
  int D = s->head_dim;
  size_t n = (size_t)s->seq * D, w = (size_t)SYNTH_FEATURES * D, esize = nabla_dtype_size(dtype);
  float *tmp[3] = {malloc(n * sizeof(float)), malloc(n * sizeof(float)), malloc(n * sizeof(float))};
  synth_head hd = {.wq = malloc(w * sizeof(float)), .wk = malloc(w * sizeof(float)), .wv = malloc(w * sizeof(float))};
  synth_rng r = {seed * 0x2545F4914F6CDD1Dull + 1};
  void *dst[3] = {q, k, v};
  int rc = 0;
  if (!tmp[0] || !tmp[1] || !tmp[2] || !hd.wq || !hd.wk || !hd.wv) {
    rc = -1;
    goto done;
  }
  for (size_t bh = 0; bh < (size_t)s->batch * s->heads; bh++) {
    head_init(&hd, D, &r);
    for (int t = 0; t < T; t++)
      for (int h = 0; h < Ht; h++)
        for (int x = 0; x < Wt; x++) {
          size_t off = (((size_t)t * Ht + h) * Wt + x) * D;
          token_row(&hd, D, t, h, x, tmp[0] + off, tmp[1] + off, tmp[2] + off, &r);
        }
    for (int i = 0; i < 3; i++) cli_from_float(tmp[i], n, dtype, (char *)dst[i] + bh * n * esize);
  }
done:
  for (int i = 0; i < 3; i++) free(tmp[i]);
  free(hd.wq);
  free(hd.wk);
  free(hd.wv);
  return rc;
}

void synth_noise(void *dst, size_t n, nabla_dtype dtype, uint64_t seed, float scale) {
  synth_rng r = {seed * 0x9E3779B97F4A7C15ull + 7};
  float chunk[4096];
  size_t esize = nabla_dtype_size(dtype);
  for (size_t i = 0; i < n; i += 4096) {
    size_t m = n - i < 4096 ? n - i : 4096;
    for (size_t j = 0; j < m; j++) chunk[j] = scale * rng_noise(&r);
    cli_from_float(chunk, m, dtype, (char *)dst + i * esize);
  }
}
