/* The vector math of vmath.h for one float type; vmath.h includes this file once per type
 * after defining:
 *   FNN_T             float or double            FNN_VEC / FNN_MASK   __m512(d) / __mmask16(8)
 *   FNN_LANES         16 or 8                    FNN_SFX              _ps or _pd (intrinsic suffix)
 *   FNN_NAME(f)       f##_f32 or f##_f64         FNN_BITS(x) / FNN_FROM_BITS(i)  casts to/from __m512i
 *   FNN_SIGN_BITS     the sign bit of each lane, as __m512i
 *   FNN_EXP_MIN/MAX   where e^x is 0 / infinite in this type (inputs are clamped there)
 *   FNN_LN2_HI/LO     ln 2 in two parts, HI with enough trailing zero bits that n HI is exact
 *   FNN_EXPM1_COEFFS  1/D!, ..., 1/3!, 1/2! (Taylor coefficients of (e^r - 1 - r) / r^2)
 *   FNN_ATANH_COEFFS  2/(2K+1), ..., 2/5, 2/3 (of (2 atanh(s) - 2s) / s^3)
 * (and, with AVX-512, fnn_add_pd: the lanes of a vector added into a double accumulator).
 * It undefines them at its end. Without AVX-512 the entry points return 0 and the callers
 * loop over libm. */
#define FNN_PASTE3(a, b, c) a##b##c
#define FNN_EXPAND3(a, b, c) FNN_PASTE3(a, b, c)
#define FNN_OP(op) FNN_EXPAND3(_mm512_, op, FNN_SFX)       /* FNN_OP(fmadd) = _mm512_fmadd_ps / _pd */
#define FNN_CMP(a, b, pred) FNN_EXPAND3(_mm512_cmp, FNN_SFX, _mask)(a, b, pred)
#define FNN_SET1(x) FNN_OP(set1)((FNN_T)(x))

#if defined(__AVX512F__)
/* the lanes of one step over `left` remaining elements */
static inline FNN_MASK FNN_NAME(fnn_mask)(ptrdiff_t left)
{
    return left >= FNN_LANES ? (FNN_MASK)~0u : (FNN_MASK)((1u << left) - 1u);
}

/* x clamped to [lo, hi], NaN kept (max/min return their second operand on NaN) */
static inline FNN_VEC FNN_NAME(fnn_clamp)(FNN_VEC x, FNN_T lo, FNN_T hi)
{
    return FNN_OP(min)(FNN_SET1(hi), FNN_OP(max)(FNN_SET1(lo), x));
}

/* n = round(x / ln 2) and r = x - n ln 2 */
static inline FNN_VEC FNN_NAME(fnn_reduce)(FNN_VEC x, FNN_VEC *r)
{
    FNN_VEC n = FNN_OP(roundscale)(FNN_OP(mul)(x, FNN_SET1(1.44269504088896340736)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    *r = FNN_OP(fnmadd)(n, FNN_SET1(FNN_LN2_LO), FNN_OP(fnmadd)(n, FNN_SET1(FNN_LN2_HI), x));
    return n;
}

/* e^r - 1 for |r| <= ln(2)/2 by its Taylor polynomial: r + r^2 (1/2! + r/3! + ... ) */
static inline FNN_VEC FNN_NAME(fnn_expm1_reduced)(FNN_VEC r)
{
    static const FNN_T coeffs[] = {FNN_EXPM1_COEFFS};
    FNN_VEC q = FNN_SET1(coeffs[0]);
    for (size_t i = 1; i < sizeof coeffs / sizeof coeffs[0]; i++)
        q = FNN_OP(fmadd)(q, r, FNN_SET1(coeffs[i]));
    return FNN_OP(fmadd)(FNN_OP(mul)(q, r), r, r);
}

static inline FNN_VEC FNN_NAME(fnn_exp)(FNN_VEC x)
{
    FNN_VEC r, n = FNN_NAME(fnn_reduce)(FNN_NAME(fnn_clamp)(x, FNN_EXP_MIN, FNN_EXP_MAX), &r);
    return FNN_OP(scalef)(FNN_OP(add)(FNN_NAME(fnn_expm1_reduced)(r), FNN_SET1(1)), n);
}

/* 2^n (e^r - 1) + (2^n - 1): n = 0 (|x| < ln(2)/2) keeps full relative precision near 0 */
static inline FNN_VEC FNN_NAME(fnn_expm1)(FNN_VEC x)
{
    FNN_VEC r, n = FNN_NAME(fnn_reduce)(FNN_NAME(fnn_clamp)(x, FNN_EXP_MIN, FNN_EXP_MAX), &r);
    FNN_VEC t = FNN_OP(scalef)(FNN_SET1(1), n);            /* 2^n, exact */
    return FNN_OP(fmadd)(t, FNN_NAME(fnn_expm1_reduced)(r), FNN_OP(sub)(t, FNN_SET1(1)));
}

/* log(1 + u) for u > -1 */
static inline FNN_VEC FNN_NAME(fnn_log1p)(FNN_VEC u)
{
    static const FNN_T coeffs[] = {FNN_ATANH_COEFFS};
    FNN_VEC w = FNN_OP(add)(FNN_SET1(1), u);
    FNN_VEC m = FNN_OP(getmant)(w, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);  /* w = m 2^e */
    FNN_VEC e = FNN_OP(getexp)(w);
    FNN_MASK big = FNN_CMP(m, FNN_SET1(1.5), _CMP_GE_OQ);
    m = FNN_OP(mask_mul)(m, big, m, FNN_SET1(0.5));
    e = FNN_OP(mask_add)(e, big, e, FNN_SET1(1));
    FNN_VEC s = FNN_OP(div)(FNN_OP(sub)(m, FNN_SET1(1)), FNN_OP(add)(m, FNN_SET1(1)));
    FNN_VEC s2 = FNN_OP(mul)(s, s);
    FNN_VEC p = FNN_SET1(coeffs[0]);
    for (size_t i = 1; i < sizeof coeffs / sizeof coeffs[0]; i++)
        p = FNN_OP(fmadd)(p, s2, FNN_SET1(coeffs[i]));
    FNN_VEC log_m = FNN_OP(fmadd)(FNN_OP(mul)(p, s2), s, FNN_OP(add)(s, s));
    FNN_VEC rounding = FNN_OP(div)(FNN_OP(sub)(u, FNN_OP(sub)(w, FNN_SET1(1))), w);
    FNN_VEC low = FNN_OP(fmadd)(e, FNN_SET1(FNN_LN2_LO), FNN_OP(add)(log_m, rounding));
    return FNN_OP(fmadd)(e, FNN_SET1(FNN_LN2_HI), low);
}

/* sigmoid(x) and 1 - sigmoid(x) = sigmoid(-x), each accurate: with e = e^-|x| and
 * r = 1 / (1 + e), one of them is r and the other e r (no overflow, tiny values kept) */
static inline FNN_VEC FNN_NAME(fnn_sigmoid_pair)(FNN_VEC x, FNN_VEC *complement)
{
    FNN_VEC e = FNN_NAME(fnn_exp)(FNN_OP(sub)(FNN_OP(setzero)(), FNN_OP(abs)(x)));
    FNN_VEC r = FNN_OP(div)(FNN_SET1(1), FNN_OP(add)(FNN_SET1(1), e));
    FNN_VEC er = FNN_OP(mul)(e, r);
    FNN_MASK neg = FNN_CMP(x, FNN_OP(setzero)(), _CMP_LT_OQ);
    *complement = FNN_OP(mask_mov)(er, neg, r);
    return FNN_OP(mask_mov)(r, neg, er);
}

static inline FNN_VEC FNN_NAME(fnn_sigmoid)(FNN_VEC x)
{
    FNN_VEC complement;
    return FNN_NAME(fnn_sigmoid_pair)(x, &complement);
}

static inline FNN_VEC FNN_NAME(fnn_tanh)(FNN_VEC x)
{
    FNN_VEC t = FNN_NAME(fnn_expm1)(FNN_OP(mul)(FNN_OP(abs)(x), FNN_SET1(-2)));        /* in (-1, 0] */
    FNN_VEC th = FNN_OP(div)(FNN_OP(sub)(FNN_OP(setzero)(), t), FNN_OP(add)(t, FNN_SET1(2)));
    /* sign of x back on |tanh x| */
    return FNN_FROM_BITS(_mm512_or_si512(FNN_BITS(th), _mm512_and_si512(FNN_BITS(x), FNN_SIGN_BITS)));
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|), NaN kept */
static inline FNN_VEC FNN_NAME(fnn_softplus)(FNN_VEC x)
{
    FNN_VEC tail = FNN_NAME(fnn_log1p)(FNN_NAME(fnn_exp)(FNN_OP(sub)(FNN_OP(setzero)(), FNN_OP(abs)(x))));
    return FNN_OP(add)(FNN_OP(max)(FNN_OP(setzero)(), x), tail);
}

static inline FNN_VEC FNN_NAME(fnn_act)(FNN_VEC z, int kind, FNN_T a)
{
    switch (kind) {
    case FNN_SIGMOID:
        return FNN_NAME(fnn_sigmoid)(z);
    case FNN_TANH:
        return FNN_NAME(fnn_tanh)(z);
    case FNN_ELU:
        return FNN_OP(mask_mov)(FNN_OP(mul)(FNN_SET1(a), FNN_NAME(fnn_expm1)(z)),
                                FNN_CMP(z, FNN_OP(setzero)(), _CMP_GT_OQ), z);
    case FNN_SOFTPLUS:
        return FNN_OP(div)(FNN_NAME(fnn_softplus)(FNN_OP(mul)(FNN_SET1(a), z)), FNN_SET1(a));
    case FNN_LEAKY_RELU:
        return FNN_OP(mask_mov)(FNN_OP(mul)(FNN_SET1(a), z), FNN_CMP(z, FNN_OP(setzero)(), _CMP_GT_OQ), z);
    case FNN_HARD_TANH:
        return FNN_NAME(fnn_clamp)(z, -1, 1);
    default: /* FNN_SWISH */
        return FNN_OP(mul)(z, FNN_NAME(fnn_sigmoid)(FNN_OP(mul)(FNN_SET1(a), z)));
    }
}

/* f'(z) from z, or from y = f(z) where it follows from y alone (all but swish) */
static inline FNN_VEC FNN_NAME(fnn_act_derivative)(FNN_VEC z, FNN_VEC y, int from_z, int kind, FNN_T a)
{
    const FNN_VEC one = FNN_SET1(1), zero = FNN_OP(setzero)();
    FNN_VEC x = from_z ? z : y;   /* leaky relu and hard tanh: same test on either */
    switch (kind) {
    case FNN_LEAKY_RELU:
        return FNN_OP(mask_mov)(FNN_SET1(a), FNN_CMP(x, zero, _CMP_GT_OQ), one);
    case FNN_HARD_TANH:
        return FNN_OP(maskz_mov)(FNN_CMP(x, FNN_SET1(-1), _CMP_GT_OQ) & FNN_CMP(x, one, _CMP_LT_OQ), one);
    case FNN_SIGMOID:
        return FNN_OP(mul)(y, FNN_OP(sub)(one, y));
    case FNN_TANH:
        return FNN_OP(fnmadd)(y, y, one);
    case FNN_ELU:
        if (from_z)
            return FNN_OP(mask_mov)(FNN_OP(mul)(FNN_SET1(a), FNN_NAME(fnn_exp)(z)), FNN_CMP(z, zero, _CMP_GT_OQ), one);
        return FNN_OP(mask_mov)(FNN_OP(add)(y, FNN_SET1(a)), FNN_CMP(y, zero, _CMP_GT_OQ), one);
    case FNN_SOFTPLUS:
        if (from_z)
            return FNN_NAME(fnn_sigmoid)(FNN_OP(mul)(FNN_SET1(a), z));
        return FNN_OP(sub)(zero, FNN_NAME(fnn_expm1)(FNN_OP(mul)(FNN_SET1(-a), y)));
    default: { /* FNN_SWISH: s (1 + a z (1 - s)), s = sigmoid(a z) */
        FNN_VEC az = FNN_OP(mul)(FNN_SET1(a), z), complement;
        FNN_VEC s = FNN_NAME(fnn_sigmoid_pair)(az, &complement);
        return FNN_OP(mul)(s, FNN_OP(fmadd)(az, complement, one));
    }
    }
}

/* e[j] = exp(z[j] - max z) for one row of k values (softmax, log-sum-exp); returns their
 * sum and stores max z */
static FNN_T FNN_NAME(fnn_exp_shifted)(const FNN_T *z, FNN_T *e, ptrdiff_t k, FNN_T *row_max)
{
    FNN_VEC vmax = FNN_SET1(-INFINITY), sum = FNN_OP(setzero)();
    for (ptrdiff_t j = 0; j < k; j += FNN_LANES) {
        FNN_MASK mask = FNN_NAME(fnn_mask)(k - j);
        vmax = FNN_OP(mask_max)(vmax, mask, FNN_OP(maskz_loadu)(mask, z + j), vmax);
    }
    FNN_T m = FNN_OP(reduce_max)(vmax);
    for (ptrdiff_t j = 0; j < k; j += FNN_LANES) {
        FNN_MASK mask = FNN_NAME(fnn_mask)(k - j);
        FNN_VEC ej = FNN_NAME(fnn_exp)(FNN_OP(sub)(FNN_OP(maskz_loadu)(mask, z + j), FNN_SET1(m)));
        FNN_OP(mask_storeu)(e + j, mask, ej);
        sum = FNN_OP(mask_add)(sum, mask, sum, ej);
    }
    *row_max = m;
    return FNN_OP(reduce_add)(sum);
}

/* Binary cross-entropy on logits over one row: g[j] = scale (sigmoid(z[j]) - t[j]); returns
 * sum_j max(z, 0) + log1p(e^-|z|) - z t, each term in this type, summed in double */
static double FNN_NAME(fnn_bce_row)(const FNN_T *z, const FNN_T *t, FNN_T *g, ptrdiff_t k, FNN_T scale)
{
    __m512d total = _mm512_setzero_pd();
    for (ptrdiff_t j = 0; j < k; j += FNN_LANES) {
        FNN_MASK mask = FNN_NAME(fnn_mask)(k - j);
        FNN_VEC zv = FNN_OP(maskz_loadu)(mask, z + j), tv = FNN_OP(maskz_loadu)(mask, t + j);
        FNN_OP(mask_storeu)(g + j, mask, FNN_OP(mul)(FNN_SET1(scale), FNN_OP(sub)(FNN_NAME(fnn_sigmoid)(zv), tv)));
        total = FNN_NAME(fnn_add_pd)(total, FNN_OP(maskz_sub)(mask, FNN_NAME(fnn_softplus)(zv), FNN_OP(mul)(zv, tv)));
    }
    return _mm512_reduce_add_pd(total);
}

/* identity and relu have their own loops (and relu its place in the GEMM) */
static inline int FNN_NAME(fnn_act_vectorized)(int kind)
{
    return kind != FNN_IDENTITY && kind != FNN_RELU;
}

/* y[i] = f(z[i] (+ b[i] when b is not NULL)); y may be z */
static int FNN_NAME(fnn_act_forward)(const FNN_T *z, FNN_T *y, const FNN_T *b, ptrdiff_t n, int kind, FNN_T a)
{
    if (!FNN_NAME(fnn_act_vectorized)(kind))
        return 0;
    for (ptrdiff_t i = 0; i < n; i += FNN_LANES) {
        FNN_MASK k = FNN_NAME(fnn_mask)(n - i);
        FNN_VEC v = FNN_OP(maskz_loadu)(k, z + i);
        if (b)
            v = FNN_OP(add)(v, FNN_OP(maskz_loadu)(k, b + i));
        FNN_OP(mask_storeu)(y + i, k, FNN_NAME(fnn_act)(v, kind, a));
    }
    return 1;
}

/* dz[i] = dy[i] f'(z[i]) (dz may be dy); z NULL: the derivative from y */
static int FNN_NAME(fnn_act_backward)(const FNN_T *z, const FNN_T *y, const FNN_T *dy, FNN_T *dz, ptrdiff_t n,
                                      int kind, FNN_T a)
{
    if (!FNN_NAME(fnn_act_vectorized)(kind) || (kind == FNN_SWISH && !z))
        return 0;
    for (ptrdiff_t i = 0; i < n; i += FNN_LANES) {
        FNN_MASK k = FNN_NAME(fnn_mask)(n - i);
        FNN_VEC zv = z ? FNN_OP(maskz_loadu)(k, z + i) : FNN_OP(setzero)();
        FNN_VEC d = FNN_NAME(fnn_act_derivative)(zv, FNN_OP(maskz_loadu)(k, y + i), z != NULL, kind, a);
        FNN_OP(mask_storeu)(dz + i, k, FNN_OP(mul)(FNN_OP(maskz_loadu)(k, dy + i), d));
    }
    return 1;
}
#else
static double FNN_NAME(fnn_bce_row)(const FNN_T *z, const FNN_T *t, FNN_T *g, ptrdiff_t k, FNN_T scale)
{
    (void)z; (void)t; (void)g; (void)k; (void)scale;
    return 0.0;
}

static FNN_T FNN_NAME(fnn_exp_shifted)(const FNN_T *z, FNN_T *e, ptrdiff_t k, FNN_T *row_max)
{
    (void)z; (void)e; (void)k; (void)row_max;
    return 0;
}

static int FNN_NAME(fnn_act_forward)(const FNN_T *z, FNN_T *y, const FNN_T *b, ptrdiff_t n, int kind, FNN_T a)
{
    (void)z; (void)y; (void)b; (void)n; (void)kind; (void)a;
    return 0;
}

static int FNN_NAME(fnn_act_backward)(const FNN_T *z, const FNN_T *y, const FNN_T *dy, FNN_T *dz, ptrdiff_t n,
                                      int kind, FNN_T a)
{
    (void)z; (void)y; (void)dy; (void)dz; (void)n; (void)kind; (void)a;
    return 0;
}
#endif
#undef FNN_SET1
#undef FNN_CMP
#undef FNN_OP
#undef FNN_EXPAND3
#undef FNN_PASTE3
#undef FNN_T
#undef FNN_SFX
#undef FNN_NAME
#undef FNN_EXP_MIN
#undef FNN_EXP_MAX
#undef FNN_LN2_HI
#undef FNN_LN2_LO
#undef FNN_EXPM1_COEFFS
#undef FNN_ATANH_COEFFS
#undef FNN_VEC
#undef FNN_MASK
#undef FNN_LANES
#undef FNN_BITS
#undef FNN_FROM_BITS
#undef FNN_SIGN_BITS
