/* Adam/AdamW update for float32, the formula of optim.pyx's _adam_block:
 *   g' = clip(g * scale, -clip, clip) + wd * p
 *   m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  (amsgrad: vmax = max(vmax, v), v = vmax)
 *   p = shrink * p - step_size * m / (sqrt(v) * inv_bc2_sqrt + eps)
 * m and v are computed as lerps, m + (1 - b1) (g' - m) (torch.optim.Adam's form) and
 * v + (1 - b2) (g'^2 - v), which take one multiplication fewer each.
 * With AVX-512 the square root and the division use the hardware estimates (relative
 * error < 2^-14) refined by one Newton step (error < 1e-8, below float32 rounding):
 * vsqrtps and vdivps share one port and made the update compute-bound on 2 threads. The
 * refinements are written to need the fewest multiplications and FMAs (the ports they
 * share are the limit in cache): 8-10% faster in L1 than the textbook Newton steps (AMD
 * Zen 5, C harness, 4096 parameters), the same from L3. */
#ifndef FASTNN_ADAM_F32_H
#define FASTNN_ADAM_F32_H
#include <math.h>
#include <stddef.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
/* How far ahead the update prefetches its arrays: 6 KiB. A weight gradient's fused update
 * (gemm_adam.h) with W, m and v in L3, a 784-512-256 network's batches of 128 on Fashion-MNIST,
 * old and new distance alternating call by call (180 calls each): X^T dZ1 with the update
 * (W1's rows, 2 KiB each) 0.92-0.95x the time with 2 KiB ahead, H1^T dZ2 (64 columns of W2's
 * 1 KiB rows) 0.98-0.99; 4 and 8 KiB gained about as much. */
#define FNN_ADAM_AHEAD 1536
/* The update of the 16 (lanes k) parameters at p, g, m, v, vmax. plain = 1 (a compile-time
 * constant): scale 1, no clipping, no weight decay, no AMSGrad, where those steps would leave
 * every finite value unchanged; 5 of the ~22 vector operations saved where the update is
 * compute-bound (in cache). prefetch: the same arrays FNN_ADAM_AHEAD floats ahead, into L1. */
static inline __attribute__((always_inline)) void
fnn_adam_f32_vector(float *p, const float *g, float *m, float *v, float *vmax, __mmask16 k, __m512 b1,
                    __m512 b2, __m512 eps, __m512 step_size, __m512 inv_bc2_sqrt, __m512 shrink, __m512 scale,
                    __m512 clip, __m512 wd, const int plain, const int prefetch)
{
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    const __m512 w1 = _mm512_sub_ps(one, b1), w2 = _mm512_sub_ps(one, b2);
    const __m512 zero = _mm512_setzero_ps();
    if (prefetch) {
        _mm_prefetch((const char *)(p + FNN_ADAM_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(g + FNN_ADAM_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(m + FNN_ADAM_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(v + FNN_ADAM_AHEAD), _MM_HINT_T0);
    }
    __m512 pv = _mm512_maskz_loadu_ps(k, p);
    __m512 gv = _mm512_maskz_loadu_ps(k, g);
    if (!plain) {
        gv = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(gv, scale), _mm512_sub_ps(zero, clip)), clip);
        gv = _mm512_fmadd_ps(wd, pv, gv);
    }
    /* m += (1 - b1) (g - m), v += (1 - b2) (g^2 - v): lerps, as torch.optim.Adam computes m */
    __m512 mv = _mm512_maskz_loadu_ps(k, m), vv = _mm512_maskz_loadu_ps(k, v);
    mv = _mm512_fmadd_ps(w1, _mm512_sub_ps(gv, mv), mv);
    vv = _mm512_fmadd_ps(w2, _mm512_fmsub_ps(gv, gv, vv), vv);
    _mm512_mask_storeu_ps(m, k, mv);
    _mm512_mask_storeu_ps(v, k, vv);
    if (!plain && vmax) {
        vv = _mm512_max_ps(vv, _mm512_maskz_loadu_ps(k, vmax));
        _mm512_mask_storeu_ps(vmax, k, vv);
    }
    /* sqrt(v) = s + s (1/2 - s y / 2), s = v y, y ~ 1 / sqrt(v); 0 where v = 0 */
    __mmask16 pos = _mm512_cmp_ps_mask(vv, zero, _CMP_GT_OQ);
    __m512 y = _mm512_rsqrt14_ps(vv);
    __m512 root = _mm512_maskz_mul_ps(pos, vv, y);
    root = _mm512_mask_fmadd_ps(root, pos, _mm512_fnmadd_ps(root, _mm512_mul_ps(half, y), half), root);
    /* q = step_size m / d = q0 + r (step_size m - d q0), q0 = step_size m r, r ~ 1 / d */
    __m512 d = _mm512_fmadd_ps(root, inv_bc2_sqrt, eps);
    __m512 r = _mm512_rcp14_ps(d);
    __m512 num = _mm512_mul_ps(step_size, mv), q0 = _mm512_mul_ps(num, r);
    __m512 q = _mm512_fmadd_ps(_mm512_fnmadd_ps(d, q0, num), r, q0);
    pv = plain ? _mm512_sub_ps(pv, q) : _mm512_fmsub_ps(pv, shrink, q);
    _mm512_mask_storeu_ps(p, k, pv);
}

/* The update over rows x n parameters (row r's at p + r ldp, m, v and vmax alike, its gradient
 * at g + r ldg): full vectors (unmasked: the mask's per-vector arithmetic made the loop
 * 13-20% slower in cache), then the rest masked; the constants set once for all rows. */
static inline __attribute__((always_inline)) void
fnn_adam_f32_body(float *p, const float *g, float *m, float *v, float *vmax, ptrdiff_t rows, ptrdiff_t n,
                  ptrdiff_t ldp, ptrdiff_t ldg, float b1, float b2, float eps, float step_size, float inv_bc2_sqrt,
                  float shrink, float scale, float clip, float wd, const int plain)
{
    const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2), veps = _mm512_set1_ps(eps);
    const __m512 vstep = _mm512_set1_ps(step_size), vc = _mm512_set1_ps(inv_bc2_sqrt);
    const __m512 vshrink = _mm512_set1_ps(shrink), vscale = _mm512_set1_ps(scale);
    const __m512 vclip = _mm512_set1_ps(clip), vwd = _mm512_set1_ps(wd);
    for (ptrdiff_t r = 0; r < rows; r++) {
        ptrdiff_t o = r * ldp, i = 0;
        float *pr = p + o, *mr = m + o, *vr = v + o, *xr = vmax ? vmax + o : NULL;
        const float *gr = g + r * ldg;
        for (; i + 16 <= n; i += 16)
            fnn_adam_f32_vector(pr + i, gr + i, mr + i, vr + i, xr ? xr + i : NULL, (__mmask16)0xFFFF, vb1, vb2,
                                veps, vstep, vc, vshrink, vscale, vclip, vwd, plain, 1);
        if (i < n)
            fnn_adam_f32_vector(pr + i, gr + i, mr + i, vr + i, xr ? xr + i : NULL,
                                (__mmask16)((1u << (n - i)) - 1u), vb1, vb2, veps, vstep, vc, vshrink, vscale, vclip,
                                vwd, plain, 0);
    }
}
#endif

/* fastnn_adam_f32 over rows x n parameters, row r's at p + r ldp (m, v and vmax alike), its
 * gradient at g + r ldg (a block of a weight matrix) */
static void fastnn_adam_rows_f32(float *p, const float *g, float *m, float *v, float *vmax, ptrdiff_t rows,
                                 ptrdiff_t n, ptrdiff_t ldp, ptrdiff_t ldg, float b1, float b2, float eps,
                                 float step_size, float inv_bc2_sqrt, float shrink, float scale, float clip,
                                 float wd)
{
#if defined(__AVX512F__)
    if (scale == 1.0f && isinf(clip) && wd == 0.0f && shrink == 1.0f && !vmax)
        fnn_adam_f32_body(p, g, m, v, vmax, rows, n, ldp, ldg, b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale,
                          clip, wd, 1);
    else
        fnn_adam_f32_body(p, g, m, v, vmax, rows, n, ldp, ldg, b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale,
                          clip, wd, 0);
#else
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t i = r * ldp, j = r * ldg; i < r * ldp + n; i++, j++) {
            float gi = g[j] * scale;
            gi = gi > clip ? clip : gi;
            gi = gi < -clip ? -clip : gi;
            gi += wd * p[i];
            float mi = m[i] + (1 - b1) * (gi - m[i]);
            float vi = v[i] + (1 - b2) * (gi * gi - v[i]);
            m[i] = mi;
            v[i] = vi;
            if (vmax) {
                vi = vmax[i] > vi ? vmax[i] : vi;
                vmax[i] = vi;
            }
            p[i] = p[i] * shrink - step_size * mi / (sqrtf(vi) * inv_bc2_sqrt + eps);
        }
#endif
}

static void fastnn_adam_f32(float *p, const float *g, float *m, float *v, float *vmax, ptrdiff_t n,
                            float b1, float b2, float eps, float step_size, float inv_bc2_sqrt,
                            float shrink, float scale, float clip, float wd)
{
    fastnn_adam_rows_f32(p, g, m, v, vmax, 1, n, n, n, b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale, clip, wd);
}
#endif
