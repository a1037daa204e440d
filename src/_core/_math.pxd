# Precision-matched libm calls for the fused float type.
from cython cimport floating
from libc.math cimport exp, expf, log, logf, log1p, log1pf, expm1, expm1f, tanh, tanhf, sqrt, sqrtf, fabs, fabsf


cdef inline floating fexp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating flog(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating flog1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating fexpm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef inline floating ftanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating fabs_(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating sigmoid(floating x) noexcept nogil:
    """1 / (1 + e^-x), evaluated so that neither branch overflows."""
    cdef floating e
    if x >= 0:
        return 1 / (1 + fexp(-x))
    e = fexp(x)
    return e / (1 + e)


cdef inline floating log1p_exp(floating x) noexcept nogil:
    """softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), stable for any x."""
    return (x if x > 0 else 0) + flog1p(fexp(-fabs_(x)))


cdef extern from "vmath.h":
    const int VMATH "FNN_VMATH"   # the AVX-512 vector kernels are compiled in
    float exp_shifted_f32 "fnn_exp_shifted_f32"(const float* z, float* e, Py_ssize_t k,
                                                float* row_max) noexcept nogil
    double exp_shifted_f64 "fnn_exp_shifted_f64"(const double* z, double* e, Py_ssize_t k,
                                                 double* row_max) noexcept nogil
    double bce_row_f32 "fnn_bce_row_f32"(const float* z, const float* t, float* g, Py_ssize_t k,
                                         float scale) noexcept nogil
    double bce_row_f64 "fnn_bce_row_f64"(const double* z, const double* t, double* g, Py_ssize_t k,
                                         double scale) noexcept nogil


cdef inline floating exp_shifted(const floating* z, floating* e, Py_ssize_t k,
                                 floating* row_max) noexcept nogil:
    """e[j] = exp(z[j] - max z) for one row of k values; returns their sum and stores max z.
    Subtracting the maximum keeps every exponent <= 0, so nothing overflows (softmax, LSE).
    With AVX-512: vmath.h, a vector at a time."""
    cdef Py_ssize_t j
    cdef floating m = z[0], s = 0
    if VMATH:
        if floating is float:
            return exp_shifted_f32(z, e, k, row_max)
        else:
            return exp_shifted_f64(z, e, k, row_max)
    for j in range(1, k):
        if z[j] > m:
            m = z[j]
    for j in range(k):
        e[j] = fexp(z[j] - m)
        s = s + e[j]
    row_max[0] = m
    return s


cdef inline double bce_row(const floating* z, const floating* t, floating* g, Py_ssize_t k,
                           floating scale) noexcept nogil:
    """Binary cross-entropy on logits over one row with AVX-512 (vmath.h; callers check
    VMATH): g[j] = scale (sigmoid(z[j]) - t[j]), returns the row's summed loss."""
    if floating is float:
        return bce_row_f32(z, t, g, k, scale)
    else:
        return bce_row_f64(z, t, g, k, scale)
