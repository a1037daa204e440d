/* Adam/AdamW update for float32, the formula of optim.pyx's _adam_block:
 *   g' = clip(g * scale, -clip, clip) + wd * p
 *   m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  (amsgrad: vmax = max(vmax, v), v = vmax)
 *   p = shrink * p - step_size * m / (sqrt(v) * inv_bc2_sqrt + eps)
 * With AVX-512 the square root and the division use the hardware estimates (relative
 * error < 2^-14) refined by one Newton step (error < 1e-8, below float32 rounding):
 * vsqrtps and vdivps share one port and made the update compute-bound on 2 threads. */
#ifndef FASTNN_ADAM_F32_H
#define FASTNN_ADAM_F32_H
#include <math.h>
#include <stddef.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
/* plain = 1 (a compile-time constant): scale 1, no clipping, no weight decay, no AMSGrad,
 * where those steps would leave every finite value unchanged; 5 of the ~22 vector
 * operations per 16 parameters saved where the update is compute-bound (in cache). */
static inline __attribute__((always_inline)) void
fnn_adam_f32_body(float *p, const float *g, float *m, float *v, float *vmax, ptrdiff_t n, float b1,
                  float b2, float eps, float step_size, float inv_bc2_sqrt, float shrink,
                  float scale, float clip, float wd, const int plain)
{
    ptrdiff_t i = 0;
    const __m512 vb1 = _mm512_set1_ps(b1), vb1c = _mm512_set1_ps(1 - b1);
    const __m512 vb2 = _mm512_set1_ps(b2), vb2c = _mm512_set1_ps(1 - b2);
    const __m512 veps = _mm512_set1_ps(eps), vstep = _mm512_set1_ps(step_size);
    const __m512 vc = _mm512_set1_ps(inv_bc2_sqrt), vshrink = _mm512_set1_ps(shrink);
    const __m512 vscale = _mm512_set1_ps(scale), vclip = _mm512_set1_ps(clip);
    const __m512 vnclip = _mm512_set1_ps(-clip), vwd = _mm512_set1_ps(wd);
    const __m512 half = _mm512_set1_ps(0.5f), three_halves = _mm512_set1_ps(1.5f);
    const __m512 two = _mm512_set1_ps(2.0f), zero = _mm512_setzero_ps();
    for (; i < n; i += 16) {
        __mmask16 k = (n - i >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        _mm_prefetch((const char *)(p + i + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(g + i + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(m + i + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(v + i + 512), _MM_HINT_T0);
        __m512 pv = _mm512_maskz_loadu_ps(k, p + i);
        __m512 gv = _mm512_maskz_loadu_ps(k, g + i);
        if (!plain) {
            gv = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(gv, vscale), vnclip), vclip);
            gv = _mm512_fmadd_ps(vwd, pv, gv);
        }
        __m512 mv = _mm512_fmadd_ps(vb1, _mm512_maskz_loadu_ps(k, m + i), _mm512_mul_ps(vb1c, gv));
        __m512 vv = _mm512_fmadd_ps(vb2, _mm512_maskz_loadu_ps(k, v + i), _mm512_mul_ps(_mm512_mul_ps(vb2c, gv), gv));
        _mm512_mask_storeu_ps(m + i, k, mv);
        _mm512_mask_storeu_ps(v + i, k, vv);
        if (!plain && vmax) {
            vv = _mm512_max_ps(vv, _mm512_maskz_loadu_ps(k, vmax + i));
            _mm512_mask_storeu_ps(vmax + i, k, vv);
        }
        /* sqrt(v) = v * rsqrt(v), rsqrt refined by y (1.5 - 0.5 v y^2); 0 where v = 0 */
        __mmask16 pos = _mm512_cmp_ps_mask(vv, zero, _CMP_GT_OQ);
        __m512 y = _mm512_rsqrt14_ps(vv);
        y = _mm512_mul_ps(y, _mm512_fnmadd_ps(_mm512_mul_ps(half, vv), _mm512_mul_ps(y, y), three_halves));
        __m512 root = _mm512_maskz_mul_ps(pos, vv, y);
        __m512 d = _mm512_fmadd_ps(root, vc, veps);
        /* 1 / d refined by r (2 - d r) */
        __m512 r = _mm512_rcp14_ps(d);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, two));
        pv = _mm512_fnmadd_ps(_mm512_mul_ps(vstep, mv), r, plain ? pv : _mm512_mul_ps(pv, vshrink));
        _mm512_mask_storeu_ps(p + i, k, pv);
    }
}
#endif

static void fastnn_adam_f32(float *p, const float *g, float *m, float *v, float *vmax, ptrdiff_t n,
                            float b1, float b2, float eps, float step_size, float inv_bc2_sqrt,
                            float shrink, float scale, float clip, float wd)
{
#if defined(__AVX512F__)
    if (scale == 1.0f && isinf(clip) && wd == 0.0f && shrink == 1.0f && !vmax)
        fnn_adam_f32_body(p, g, m, v, vmax, n, b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale, clip, wd, 1);
    else
        fnn_adam_f32_body(p, g, m, v, vmax, n, b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale, clip, wd, 0);
#else
    for (ptrdiff_t i = 0; i < n; i++) {
        float gi = g[i] * scale;
        gi = gi > clip ? clip : gi;
        gi = gi < -clip ? -clip : gi;
        gi += wd * p[i];
        float mi = b1 * m[i] + (1 - b1) * gi;
        float vi = b2 * v[i] + (1 - b2) * gi * gi;
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
#endif
