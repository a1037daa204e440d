/* float32 vector math: AVX-512 versions of exp, expm1 and log1p, and the kernels built on
 * them (activations, softmax exponentials, the logistic loss); the activation kinds.
 *
 * libm's expf/tanhf/log1pf are scalar calls: a sigmoid or tanh layer spent more time in them
 * than in its GEMM. Here 16 values at a time:
 *   exp(x)   = 2^n (1 + q(r)),  n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts,
 *              Cody-Waite), q(r) = e^r - 1 by its degree-8 Taylor polynomial on |r| <= ln(2)/2;
 *   expm1(x) = 2^n q(r) + (2^n - 1), so that n = 0 (|x| < ln(2)/2) keeps full relative
 *              precision near 0;
 *   log1p(u) = e ln 2 + 2 atanh(s), 1 + u = m 2^e with m in [0.75, 1.5), s = (m-1)/(m+1),
 *              plus the rounding error of 1 + u, (u - ((1 + u) - 1)) / (1 + u);
 * then sigmoid(x) = 1 / (1 + e^-|x|) (times e^-|x| for x < 0), tanh|x| = -t / (t + 2) with
 * t = expm1(-2|x|), elu = alpha expm1(x) for x <= 0, softplus(x) = (max(bx, 0) +
 * log1p(e^-|bx|)) / b and swish(x) = x sigmoid(bx); leaky relu and hard tanh are a compare
 * and a select. Errors stay within 4 float32 ulps (tests/test_kernels.py checks them against
 * float64 over [-100, 100]); NaN stays NaN.
 * The fnn_* entry points return 0 when they do not handle a kind (or without AVX-512):
 * the caller's scalar loop (libm) does. */
#ifndef FASTNN_VMATH_F32_H
#define FASTNN_VMATH_F32_H
#include <math.h>   /* INFINITY */
#include <stddef.h>

enum {
    FNN_IDENTITY = 0,
    FNN_SIGMOID = 1,
    FNN_TANH = 2,
    FNN_RELU = 3,
    FNN_LEAKY_RELU = 4,
    FNN_ELU = 5,
    FNN_SOFTPLUS = 6,
    FNN_SWISH = 7,
    FNN_HARD_TANH = 8
};

#if defined(__AVX512F__)
#include <immintrin.h>
#define FNN_VMATH 1   /* the vector kernels below exist (else their callers loop over libm) */

#define FNN_V(x) _mm512_set1_ps(x)

/* the lanes of a 16-wide step over `left` remaining elements */
static inline __mmask16 fnn_mask16(ptrdiff_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* x clamped to [lo, hi], NaN kept (max/min return their second operand on NaN) */
static inline __m512 fnn_clamp16(__m512 x, float lo, float hi)
{
    return _mm512_min_ps(FNN_V(hi), _mm512_max_ps(FNN_V(lo), x));
}

/* n = round(x / ln 2) and r = x - n ln 2 */
static inline __m512 fnn_reduce16(__m512 x, __m512 *r)
{
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, FNN_V(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 t = _mm512_fnmadd_ps(n, FNN_V(0.693145751953125f), x);
    *r = _mm512_fnmadd_ps(n, FNN_V(1.428606820309417232e-6f), t);
    return n;
}

/* e^r - 1 for |r| <= ln(2)/2 by its Taylor polynomial: r + r^2 (1/2 + r/6 + ... + r^6/8!) */
static inline __m512 fnn_expm1_reduced16(__m512 r)
{
    __m512 q = FNN_V(1.0f / 40320);
    q = _mm512_fmadd_ps(q, r, FNN_V(1.0f / 5040));
    q = _mm512_fmadd_ps(q, r, FNN_V(1.0f / 720));
    q = _mm512_fmadd_ps(q, r, FNN_V(1.0f / 120));
    q = _mm512_fmadd_ps(q, r, FNN_V(1.0f / 24));
    q = _mm512_fmadd_ps(q, r, FNN_V(1.0f / 6));
    q = _mm512_fmadd_ps(q, r, FNN_V(0.5f));
    return _mm512_fmadd_ps(_mm512_mul_ps(q, r), r, r);
}

static inline __m512 fnn_exp16(__m512 x)
{
    __m512 r, n = fnn_reduce16(fnn_clamp16(x, -104.0f, 89.0f), &r);
    return _mm512_scalef_ps(_mm512_add_ps(fnn_expm1_reduced16(r), FNN_V(1.0f)), n);
}

/* 2^n (e^r - 1) + (2^n - 1): n = 0 (|x| < ln(2)/2) keeps full relative precision near 0 */
static inline __m512 fnn_expm1_16(__m512 x)
{
    __m512 r, n = fnn_reduce16(fnn_clamp16(x, -104.0f, 89.0f), &r);
    __m512 t = _mm512_scalef_ps(FNN_V(1.0f), n);            /* 2^n, exact */
    return _mm512_fmadd_ps(t, fnn_expm1_reduced16(r), _mm512_sub_ps(t, FNN_V(1.0f)));
}

/* log(1 + u) for u > -1 */
static inline __m512 fnn_log1p16(__m512 u)
{
    __m512 w = _mm512_add_ps(FNN_V(1.0f), u);
    __m512 m = _mm512_getmant_ps(w, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);  /* w = m 2^e */
    __m512 e = _mm512_getexp_ps(w);
    __mmask16 big = _mm512_cmp_ps_mask(m, FNN_V(1.5f), _CMP_GE_OQ);
    m = _mm512_mask_mul_ps(m, big, m, FNN_V(0.5f));
    e = _mm512_mask_add_ps(e, big, e, FNN_V(1.0f));
    __m512 s = _mm512_div_ps(_mm512_sub_ps(m, FNN_V(1.0f)), _mm512_add_ps(m, FNN_V(1.0f)));
    __m512 s2 = _mm512_mul_ps(s, s);
    __m512 p = FNN_V(2.0f / 11);
    p = _mm512_fmadd_ps(p, s2, FNN_V(2.0f / 9));
    p = _mm512_fmadd_ps(p, s2, FNN_V(2.0f / 7));
    p = _mm512_fmadd_ps(p, s2, FNN_V(2.0f / 5));
    p = _mm512_fmadd_ps(p, s2, FNN_V(2.0f / 3));
    __m512 log_m = _mm512_fmadd_ps(_mm512_mul_ps(p, s2), s, _mm512_add_ps(s, s));
    __m512 rounding = _mm512_div_ps(_mm512_sub_ps(u, _mm512_sub_ps(w, FNN_V(1.0f))), w);
    __m512 low = _mm512_fmadd_ps(e, FNN_V(1.428606820309417232e-6f), _mm512_add_ps(log_m, rounding));
    return _mm512_fmadd_ps(e, FNN_V(0.693145751953125f), low);
}

/* sigmoid(x) and 1 - sigmoid(x) = sigmoid(-x), each accurate: with e = e^-|x| and
 * r = 1 / (1 + e), one of them is r and the other e r (no overflow, tiny values kept) */
static inline __m512 fnn_sigmoid_pair16(__m512 x, __m512 *complement)
{
    __m512 e = fnn_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    __m512 r = _mm512_div_ps(FNN_V(1.0f), _mm512_add_ps(FNN_V(1.0f), e));
    __m512 er = _mm512_mul_ps(e, r);
    __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    *complement = _mm512_mask_mov_ps(er, neg, r);
    return _mm512_mask_mov_ps(r, neg, er);
}

static inline __m512 fnn_sigmoid16(__m512 x)
{
    __m512 complement;
    return fnn_sigmoid_pair16(x, &complement);
}

static inline __m512 fnn_tanh16(__m512 x)
{
    __m512 ax = _mm512_abs_ps(x);
    __m512 t = fnn_expm1_16(_mm512_mul_ps(ax, FNN_V(-2.0f)));        /* in (-1, 0] */
    __m512 th = _mm512_div_ps(_mm512_sub_ps(_mm512_setzero_ps(), t), _mm512_add_ps(t, FNN_V(2.0f)));
    /* sign of x back on |tanh x| */
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(th),
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u))));
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|), NaN kept */
static inline __m512 fnn_softplus16(__m512 x)
{
    __m512 tail = fnn_log1p16(fnn_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x))));
    return _mm512_add_ps(_mm512_max_ps(_mm512_setzero_ps(), x), tail);
}

static inline __m512 fnn_act16(__m512 z, int kind, float a)
{
    switch (kind) {
    case FNN_SIGMOID:
        return fnn_sigmoid16(z);
    case FNN_TANH:
        return fnn_tanh16(z);
    case FNN_ELU: {
        __mmask16 pos = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ);
        return _mm512_mask_mov_ps(_mm512_mul_ps(FNN_V(a), fnn_expm1_16(z)), pos, z);
    }
    case FNN_SOFTPLUS:
        return _mm512_div_ps(fnn_softplus16(_mm512_mul_ps(FNN_V(a), z)), FNN_V(a));
    case FNN_LEAKY_RELU:
        return _mm512_mask_mov_ps(_mm512_mul_ps(FNN_V(a), z),
                                  _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ), z);
    case FNN_HARD_TANH:
        return fnn_clamp16(z, -1.0f, 1.0f);
    default: /* FNN_SWISH */
        return _mm512_mul_ps(z, fnn_sigmoid16(_mm512_mul_ps(FNN_V(a), z)));
    }
}

/* f'(z) from z, or from y = f(z) where it follows from y alone (all but swish) */
static inline __m512 fnn_act_derivative16(__m512 z, __m512 y, int from_z, int kind, float a)
{
    const __m512 one = FNN_V(1.0f), zero = _mm512_setzero_ps();
    __m512 x = from_z ? z : y;   /* leaky relu and hard tanh: same test on either */
    switch (kind) {
    case FNN_LEAKY_RELU:
        return _mm512_mask_mov_ps(FNN_V(a), _mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), one);
    case FNN_HARD_TANH:
        return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, FNN_V(-1.0f), _CMP_GT_OQ)
                                   & _mm512_cmp_ps_mask(x, one, _CMP_LT_OQ), one);
    case FNN_SIGMOID:
        return _mm512_mul_ps(y, _mm512_sub_ps(one, y));
    case FNN_TANH:
        return _mm512_fnmadd_ps(y, y, one);
    case FNN_ELU:
        if (from_z)
            return _mm512_mask_mov_ps(_mm512_mul_ps(FNN_V(a), fnn_exp16(z)),
                                      _mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ), one);
        return _mm512_mask_mov_ps(_mm512_add_ps(y, FNN_V(a)), _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ), one);
    case FNN_SOFTPLUS:
        if (from_z)
            return fnn_sigmoid16(_mm512_mul_ps(FNN_V(a), z));
        return _mm512_sub_ps(zero, fnn_expm1_16(_mm512_mul_ps(FNN_V(-a), y)));
    default: { /* FNN_SWISH: s (1 + a z (1 - s)), s = sigmoid(a z) */
        __m512 az = _mm512_mul_ps(FNN_V(a), z), complement;
        __m512 s = fnn_sigmoid_pair16(az, &complement);
        return _mm512_mul_ps(s, _mm512_fmadd_ps(az, complement, one));
    }
    }
}

/* identity and relu have their own loops (and relu its place in the GEMM) */
static inline int fnn_act_vectorized(int kind)
{
    return kind != FNN_IDENTITY && kind != FNN_RELU;
}

/* e[j] = exp(z[j] - max z) for one row of k values (softmax, log-sum-exp); returns their
 * sum and stores max z */
static float fnn_exp_shifted_f32(const float *z, float *e, ptrdiff_t k, float *row_max)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
    for (ptrdiff_t j = 0; j < k; j += 16) {
        __mmask16 mask = fnn_mask16(k - j);
        vmax = _mm512_mask_max_ps(vmax, mask, _mm512_maskz_loadu_ps(mask, z + j), vmax);
    }
    float m = _mm512_reduce_max_ps(vmax);
    for (ptrdiff_t j = 0; j < k; j += 16) {
        __mmask16 mask = fnn_mask16(k - j);
        __m512 ej = fnn_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, z + j), _mm512_set1_ps(m)));
        _mm512_mask_storeu_ps(e + j, mask, ej);
        sum = _mm512_mask_add_ps(sum, mask, sum, ej);
    }
    *row_max = m;
    return _mm512_reduce_add_ps(sum);
}

/* Binary cross-entropy on logits over one row: g[j] = scale (sigmoid(z[j]) - t[j]); returns
 * sum_j max(z, 0) + log1p(e^-|z|) - z t, each term in float32, summed in double */
static double fnn_bce_row_f32(const float *z, const float *t, float *g, ptrdiff_t k, float scale)
{
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    for (ptrdiff_t j = 0; j < k; j += 16) {
        __mmask16 mask = fnn_mask16(k - j);
        __m512 zv = _mm512_maskz_loadu_ps(mask, z + j), tv = _mm512_maskz_loadu_ps(mask, t + j);
        _mm512_mask_storeu_ps(g + j, mask, _mm512_mul_ps(FNN_V(scale), _mm512_sub_ps(fnn_sigmoid16(zv), tv)));
        __m512 loss = _mm512_maskz_sub_ps(mask, fnn_softplus16(zv), _mm512_mul_ps(zv, tv));
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(loss)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(loss), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

/* y[i] = f(z[i]) + ... (y may be z); bias b[i] added first when b is not NULL */
static int fnn_act_forward_f32(const float *z, float *y, const float *b, ptrdiff_t n, int kind, float a)
{
    if (!fnn_act_vectorized(kind))
        return 0;
    for (ptrdiff_t i = 0; i < n; i += 16) {
        __mmask16 k = fnn_mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, z + i);
        if (b)
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
        _mm512_mask_storeu_ps(y + i, k, fnn_act16(v, kind, a));
    }
    return 1;
}

/* dz[i] = dy[i] f'(z[i]) (dz may be dy); z NULL: the derivative from y */
static int fnn_act_backward_f32(const float *z, const float *y, const float *dy, float *dz, ptrdiff_t n,
                                int kind, float a)
{
    if (!fnn_act_vectorized(kind) || (kind == FNN_SWISH && !z))
        return 0;
    for (ptrdiff_t i = 0; i < n; i += 16) {
        __mmask16 k = fnn_mask16(n - i);
        __m512 zv = z ? _mm512_maskz_loadu_ps(k, z + i) : _mm512_setzero_ps();
        __m512 d = fnn_act_derivative16(zv, _mm512_maskz_loadu_ps(k, y + i), z != NULL, kind, a);
        _mm512_mask_storeu_ps(dz + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + i), d));
    }
    return 1;
}
#else
/* Without AVX-512 the callers check FNN_VMATH (or the 0 returned) and loop over libm. */
#define FNN_VMATH 0

static double fnn_bce_row_f32(const float *z, const float *t, float *g, ptrdiff_t k, float scale)
{
    (void)z; (void)t; (void)g; (void)k; (void)scale;
    return 0.0;
}

static float fnn_exp_shifted_f32(const float *z, float *e, ptrdiff_t k, float *row_max)
{
    (void)z; (void)e; (void)k; (void)row_max;
    return 0.0f;
}

static int fnn_act_forward_f32(const float *z, float *y, const float *b, ptrdiff_t n, int kind, float a)
{
    (void)z; (void)y; (void)b; (void)n; (void)kind; (void)a;
    return 0;
}

static int fnn_act_backward_f32(const float *z, const float *y, const float *dy, float *dz, ptrdiff_t n,
                                int kind, float a)
{
    (void)z; (void)y; (void)dy; (void)dz; (void)n; (void)kind; (void)a;
    return 0;
}
#endif
#endif
