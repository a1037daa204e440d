/* Vector math: AVX-512 versions of exp, expm1 and log1p, and the kernels built on them
 * (activations, softmax exponentials, the logistic loss), for float32 (16 lanes, names
 * ending _f32) and float64 (8 lanes, _f64); the activation kinds.
 *
 * libm's exp/tanh/log1p are scalar calls: a sigmoid or tanh layer spent more time in them
 * than in its GEMM (float64: 3-7x PyTorch's time, bench/saturated.py). Here a vector at a time:
 *   exp(x)   = 2^n (1 + q(r)),  n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts,
 *              Cody-Waite), q(r) = e^r - 1 by its Taylor polynomial on |r| <= ln(2)/2, of
 *              degree 8 (float32) or 13 (float64);
 *   expm1(x) = 2^n q(r) + (2^n - 1), so that n = 0 (|x| < ln(2)/2) keeps full relative
 *              precision near 0;
 *   log1p(u) = e ln 2 + 2 atanh(s), 1 + u = m 2^e with m in [0.75, 1.5), s = (m-1)/(m+1),
 *              atanh's series to s^11 (float32) or s^21 (float64), plus the rounding error
 *              of 1 + u, (u - ((1 + u) - 1)) / (1 + u);
 * then sigmoid(x) = 1 / (1 + e^-|x|) (times e^-|x| for x < 0), tanh|x| = -t / (t + 2) with
 * t = expm1(-2|x|), elu = alpha expm1(x) for x <= 0, softplus(x) = (max(bx, 0) +
 * log1p(e^-|bx|)) / b and swish(x) = x sigmoid(bx); leaky relu and hard tanh are a compare
 * and a select. Errors stay within 4 ulps of the type (tests/test_kernels.py checks float32
 * against float64 and float64 against long double); NaN stays NaN.
 * vmath_impl.h holds the code, written once for both types; this file includes it per type.
 * The fnn_* entry points return 0 when they do not handle a kind (or without AVX-512):
 * the caller's scalar loop (libm) does. */
#ifndef FASTNN_VMATH_H
#define FASTNN_VMATH_H
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
#define FNN_VMATH 1   /* the vector kernels exist (else their callers loop over libm) */
#else
#define FNN_VMATH 0
#endif

/* float32: 16 lanes; its logistic-loss terms are summed in double, 8 at a time */
#define FNN_T float
#define FNN_SFX _ps
#define FNN_NAME(f) f##_f32
#define FNN_EXP_MIN -104.0f
#define FNN_EXP_MAX 89.0f
#define FNN_LN2_HI 0.693145751953125f
#define FNN_LN2_LO 1.428606820309417232e-6f
#define FNN_EXPM1_COEFFS 1.0f / 40320, 1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f
#define FNN_ATANH_COEFFS 2.0f / 11, 2.0f / 9, 2.0f / 7, 2.0f / 5, 2.0f / 3
#if defined(__AVX512F__)
#define FNN_VEC __m512
#define FNN_MASK __mmask16
#define FNN_LANES 16
#define FNN_BITS(x) _mm512_castps_si512(x)
#define FNN_FROM_BITS(i) _mm512_castsi512_ps(i)
#define FNN_SIGN_BITS _mm512_set1_epi32((int)0x80000000u)
static inline __m512d fnn_add_pd_f32(__m512d total, __m512 x)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    return _mm512_add_pd(total, _mm512_add_pd(lo, hi));
}
#endif
#include "vmath_impl.h"

/* float64: 8 lanes; ln 2 split as in fdlibm (its high part ends in 21 zero bits) */
#define FNN_T double
#define FNN_SFX _pd
#define FNN_NAME(f) f##_f64
#define FNN_EXP_MIN -746.0
#define FNN_EXP_MAX 710.0
#define FNN_LN2_HI 6.93147180369123816490e-01
#define FNN_LN2_LO 1.90821492927058770002e-10
#define FNN_EXPM1_COEFFS 1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, \
    1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5
#define FNN_ATANH_COEFFS 2.0 / 21, 2.0 / 19, 2.0 / 17, 2.0 / 15, 2.0 / 13, 2.0 / 11, 2.0 / 9, 2.0 / 7, \
    2.0 / 5, 2.0 / 3
#if defined(__AVX512F__)
#define FNN_VEC __m512d
#define FNN_MASK __mmask8
#define FNN_LANES 8
#define FNN_BITS(x) _mm512_castpd_si512(x)
#define FNN_FROM_BITS(i) _mm512_castsi512_pd(i)
#define FNN_SIGN_BITS _mm512_set1_epi64((long long)0x8000000000000000ull)
static inline __m512d fnn_add_pd_f64(__m512d total, __m512d x)
{
    return _mm512_add_pd(total, x);
}
#endif
#include "vmath_impl.h"
#endif
