# Per-element activation functions f(z) and derivatives f'(z), fused float type.
# `a` is the activation's parameter: alpha (leaky_relu, elu) or beta (softplus, swish).
from cython cimport floating
from ._math cimport fexp, fexpm1, ftanh, sigmoid, log1p_exp

cdef extern from "vmath.h":
    cdef enum:
        IDENTITY "FNN_IDENTITY"
        SIGMOID "FNN_SIGMOID"
        TANH "FNN_TANH"
        RELU "FNN_RELU"
        LEAKY_RELU "FNN_LEAKY_RELU"
        ELU "FNN_ELU"
        SOFTPLUS "FNN_SOFTPLUS"
        SWISH "FNN_SWISH"
        HARD_TANH "FNN_HARD_TANH"
    # vector loops for the kinds that need exp/expm1/log1p; 0 = not handled here
    int act_forward_f32 "fnn_act_forward_f32"(const float* z, float* y, const float* b, Py_ssize_t n,
                                              int kind, float a) noexcept nogil
    int act_forward_f64 "fnn_act_forward_f64"(const double* z, double* y, const double* b, Py_ssize_t n,
                                              int kind, double a) noexcept nogil
    int act_backward_f32 "fnn_act_backward_f32"(const float* z, const float* y, const float* dy,
                                                float* dz, Py_ssize_t n, int kind, float a) noexcept nogil
    int act_backward_f64 "fnn_act_backward_f64"(const double* z, const double* y, const double* dy,
                                                double* dz, Py_ssize_t n, int kind, double a) noexcept nogil


cdef inline int vector_forward(const floating* z, floating* y, const floating* b, Py_ssize_t n,
                               int kind, floating a) noexcept nogil:
    """y = f(z (+ b)) by vmath.h's vector loop; 0 when it does not handle this kind."""
    if floating is float:
        return act_forward_f32(z, y, b, n, kind, a)
    else:
        return act_forward_f64(z, y, b, n, kind, a)


cdef inline int vector_backward(const floating* z, const floating* y, const floating* dy,
                                floating* dz, Py_ssize_t n, int kind, floating a) noexcept nogil:
    """dz = dy f'(z) by vmath.h's vector loop; 0 when it does not handle this kind."""
    if floating is float:
        return act_backward_f32(z, y, dy, dz, n, kind, a)
    else:
        return act_backward_f64(z, y, dy, dz, n, kind, a)


cdef inline floating act_forward(floating z, int kind, floating a) noexcept nogil:
    """y = f(z)."""
    if kind == RELU:
        return z if z > 0 else 0
    elif kind == SIGMOID:
        return sigmoid(z)
    elif kind == TANH:
        return ftanh(z)
    elif kind == LEAKY_RELU:
        return z if z > 0 else a * z
    elif kind == ELU:
        return z if z > 0 else a * fexpm1(z)
    elif kind == SOFTPLUS:
        return log1p_exp(a * z) / a
    elif kind == SWISH:
        return z * sigmoid(a * z)
    elif kind == HARD_TANH:
        return 1 if z > 1 else (-1 if z < -1 else z)
    return z


cdef inline floating act_derivative(floating z, floating y, int kind, floating a) noexcept nogil:
    """f'(z), given z and y = f(z) (whichever is cheaper and stable)."""
    if kind == RELU:
        return 1 if z > 0 else 0
    elif kind == SIGMOID:
        return y * (1 - y)
    elif kind == TANH:
        return 1 - y * y
    elif kind == LEAKY_RELU:
        return 1 if z > 0 else a
    elif kind == ELU:
        return 1 if z > 0 else a * fexp(z)
    elif kind == SOFTPLUS:
        return sigmoid(a * z)
    elif kind == SWISH:
        # 1 - s as sigmoid(-a z): no cancellation where s is near 1
        return sigmoid(a * z) * (1 + a * z * sigmoid(-a * z))
    elif kind == HARD_TANH:
        return 1 if (z > -1 and z < 1) else 0
    return 1


cdef inline bint needs_input(int kind, double a) noexcept nogil:
    """True when f'(z) cannot be recovered from y = f(z) alone (swish; negative slopes)."""
    return kind == SWISH or ((kind == LEAKY_RELU or kind == ELU) and a < 0)


cdef inline floating act_derivative_from_output(floating y, int kind, floating a) noexcept nogil:
    """f'(z) written in terms of y = f(z), for every kind where needs_input() is False:
    relu/leaky_relu/elu: z > 0 iff y > 0 (slope >= 0), elu' = y + alpha for z <= 0;
    softplus' = sigmoid(beta z) = 1 - exp(-beta y); hard_tanh' = 1 iff -1 < y < 1."""
    if kind == RELU:
        return 1 if y > 0 else 0
    elif kind == SIGMOID:
        return y * (1 - y)
    elif kind == TANH:
        return 1 - y * y
    elif kind == LEAKY_RELU:
        return 1 if y > 0 else a
    elif kind == ELU:
        return 1 if y > 0 else y + a
    elif kind == SOFTPLUS:
        return -fexpm1(-a * y)
    elif kind == HARD_TANH:
        return 1 if (y > -1 and y < 1) else 0
    return 1


cdef inline void act_forward_n(const floating* z, floating* y, Py_ssize_t n,
                               int kind, floating a) noexcept nogil:
    """y[i] = f(z[i]); y may be z. The common kinds get their own branch-free loops."""
    cdef Py_ssize_t i
    if vector_forward(z, y, NULL, n, kind, a):
        return
    if kind == IDENTITY:
        if y != z:
            for i in range(n):
                y[i] = z[i]
    elif kind == RELU:
        for i in range(n):
            y[i] = z[i] if z[i] > 0 else 0
    else:
        for i in range(n):
            y[i] = act_forward(z[i], kind, a)


cdef inline void bias_act_n(floating* z, floating* y, const floating* b, Py_ssize_t rows,
                            Py_ssize_t cols, Py_ssize_t ld, int kind, floating a) noexcept nogil:
    """One pass over a rows x cols block of row-major matrices with row stride ld:
    z[i, j] += b[j] (when z is kept) and y[i, j] = f(z[i, j] + b[j]); with z == y the block
    is transformed in place."""
    cdef Py_ssize_t i, j
    cdef floating* zi
    cdef floating* yi
    cdef floating t
    for i in range(rows):
        zi = z + i * ld
        yi = y + i * ld
        if z != y:
            for j in range(cols):
                zi[j] = zi[j] + b[j]
            act_forward_n(zi, yi, cols, kind, a)
        elif kind == IDENTITY:
            for j in range(cols):
                yi[j] = yi[j] + b[j]
        elif kind == RELU:
            for j in range(cols):
                t = yi[j] + b[j]
                yi[j] = t if t > 0 else 0
        else:
            if vector_forward(yi, yi, b, cols, kind, a):
                continue
            for j in range(cols):
                yi[j] = act_forward(yi[j] + b[j], kind, a)


cdef inline void act_backward_n(const floating* z, const floating* y, const floating* dy,
                                floating* dz, Py_ssize_t n, int kind, floating a) noexcept nogil:
    """dz[i] = dy[i] * f'(z[i]); dz may alias dy. z may be NULL when not needs_input(kind, a):
    the derivative then comes from y alone."""
    cdef Py_ssize_t i
    if vector_backward(z, y, dy, dz, n, kind, a):
        return
    if kind == IDENTITY:
        if dz != dy:
            for i in range(n):
                dz[i] = dy[i]
    elif kind == RELU:
        for i in range(n):
            dz[i] = dy[i] if y[i] > 0 else 0
    elif z == NULL:
        for i in range(n):
            dz[i] = dy[i] * act_derivative_from_output(y[i], kind, a)
    else:
        for i in range(n):
            dz[i] = dy[i] * act_derivative(z[i], y[i], kind, a)
