"""Fused optimizer updates: one pass reads param, grad and state and writes param and state.

The formulas are torch.optim's (see fastnn.optim for the lecture's variants).
Every kernel first conditions the raw gradient g in the same pass:
    g <- clip(g * grad_scale, -clip_value, clip_value) + weight_decay * p
(grad_scale < 1 implements clipping by global norm, clip_value = inf disables
value clipping; decoupled weight decay is applied to p instead, as in AdamW).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, sqrt
from libc.stdlib cimport malloc, free
from ._math cimport fsqrt
from ._openmp cimport n_blocks

cdef Py_ssize_t MIN_ELEMENTS = 16384
cdef Py_ssize_t CHUNK = 8192


cdef inline floating _condition(floating g, floating p, floating scale, floating clip,
                                floating wd) noexcept nogil:
    g = g * scale
    if g > clip:
        g = clip
    elif g < -clip:
        g = -clip
    return g + wd * p


def sum_squares(const floating[::1] g, int n_threads):
    """sum g_i^2 in double, over fixed chunks then in chunk order (thread-count independent)."""
    cdef Py_ssize_t n = g.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, c, i, hi
    cdef double total = 0, acc
    cdef double* partial = <double*>malloc(max(n_chunks, 1) * sizeof(double))
    cdef int nt = n_blocks(n, n_threads, CHUNK)
    if partial == NULL:
        raise MemoryError()
    for c in prange(n_chunks, nogil=True, schedule='static', num_threads=nt):
        hi = min((c + 1) * CHUNK, n)
        acc = 0
        for i in range(c * CHUNK, hi):
            acc = acc + <double>g[i] * g[i]
        partial[c] = acc
    for c in range(n_chunks):
        total += partial[c]
    free(partial)
    return total


def sgd_step(floating[::1] p, const floating[::1] g, floating[::1] buf,
             double lr, double momentum, double dampening, bint nesterov,
             double weight_decay, bint first_step, double grad_scale, double clip_value,
             int n_threads):
    """torch.optim.SGD: b = g (first step) or mu b + (1 - dampening) g;
    d = g + mu b (nesterov) or b; p -= lr d. Without momentum p -= lr g (buf may be None)."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating gi, bi
    cdef floating flr = <floating>lr, mu = <floating>momentum, damp = <floating>(1 - dampening)
    cdef floating scale = <floating>grad_scale, clip = <floating>clip_value, wd = <floating>weight_decay
    cdef bint use_momentum = momentum != 0
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        gi = _condition(g[i], p[i], scale, clip, wd)
        if use_momentum:
            if first_step:
                bi = gi
            else:
                bi = mu * buf[i] + damp * gi
            buf[i] = bi
            if nesterov:
                gi = gi + mu * bi
            else:
                gi = bi
        p[i] = p[i] - flr * gi


def adagrad_step(floating[::1] p, const floating[::1] g, floating[::1] acc,
                 double clr, double eps, double weight_decay,
                 double grad_scale, double clip_value, int n_threads):
    """torch.optim.Adagrad: s += g^2; p -= clr * g / (sqrt(s) + eps),
    clr = lr / (1 + (t - 1) * lr_decay) computed by the caller."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating gi, si
    cdef floating flr = <floating>clr, feps = <floating>eps
    cdef floating scale = <floating>grad_scale, clip = <floating>clip_value, wd = <floating>weight_decay
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        gi = _condition(g[i], p[i], scale, clip, wd)
        si = acc[i] + gi * gi
        acc[i] = si
        p[i] = p[i] - flr * gi / (fsqrt(si) + feps)


def rmsprop_step(floating[::1] p, const floating[::1] g, floating[::1] square_avg,
                 floating[::1] grad_avg, floating[::1] buf,
                 double lr, double alpha, double eps, double weight_decay, double momentum,
                 double grad_scale, double clip_value, int n_threads):
    """torch.optim.RMSprop: v = a v + (1 - a) g^2; centered: gbar = a gbar + (1 - a) g,
    v~ = v - gbar^2; d = g / (sqrt(v~) + eps); momentum: b = mu b + d, p -= lr b; else p -= lr d.
    grad_avg is None unless centered, buf is None unless momentum > 0."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating gi, vi, ga, denom, bi
    cdef floating flr = <floating>lr, a = <floating>alpha, feps = <floating>eps, mu = <floating>momentum
    cdef floating scale = <floating>grad_scale, clip = <floating>clip_value, wd = <floating>weight_decay
    cdef bint centered = grad_avg is not None, use_momentum = buf is not None
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        gi = _condition(g[i], p[i], scale, clip, wd)
        vi = a * square_avg[i] + (1 - a) * gi * gi
        square_avg[i] = vi
        if centered:
            ga = a * grad_avg[i] + (1 - a) * gi
            grad_avg[i] = ga
            vi = vi - ga * ga
        denom = fsqrt(vi) + feps
        if use_momentum:
            bi = mu * buf[i] + gi / denom
            buf[i] = bi
            p[i] = p[i] - flr * bi
        else:
            p[i] = p[i] - flr * gi / denom


def adam_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
              floating[::1] v_max, double lr, double beta1, double beta2, double eps,
              double weight_decay, bint decoupled, long step,
              double grad_scale, double clip_value, int n_threads):
    """torch.optim.Adam / AdamW at step t (1-based):
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  (amsgrad: v_max = max(v_max, v))
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    decoupled=True (AdamW) shrinks p by (1 - lr * weight_decay) instead of adding wd * p to g.
    v_max is None unless amsgrad."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating gi, mi, vi, pi
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, feps = <floating>eps
    cdef floating step_size = <floating>(lr / (1 - beta1 ** step))
    cdef floating inv_bc2_sqrt = <floating>(1 / sqrt(1 - beta2 ** step))
    cdef floating shrink = <floating>(1 - lr * weight_decay) if decoupled else 1
    cdef floating scale = <floating>grad_scale, clip = <floating>clip_value
    cdef floating wd = 0 if decoupled else <floating>weight_decay
    cdef bint amsgrad = v_max is not None
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        pi = p[i]
        gi = _condition(g[i], pi, scale, clip, wd)
        mi = b1 * m[i] + (1 - b1) * gi
        vi = b2 * v[i] + (1 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            if v_max[i] > vi:
                vi = v_max[i]
            v_max[i] = vi
        p[i] = pi * shrink - step_size * mi / (fsqrt(vi) * inv_bc2_sqrt + feps)


def radam_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               long step, double grad_scale, double clip_value, int n_threads):
    """torch.optim.RAdam (Liu et al. 2020): m, v as Adam; rho_inf = 2 / (1 - b2) - 1,
    rho_t = rho_inf - 2 t b2^t / (1 - b2^t). If rho_t > 5:
    p -= lr * m / (1 - b1^t) * r_t * sqrt(1 - b2^t) / (sqrt(v) + eps), with the rectifier
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t));
    otherwise p -= lr * m / (1 - b1^t)."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating gi, mi, vi
    cdef double bc1 = 1 - beta1 ** step, bc2 = 1 - beta2 ** step
    cdef double rho_inf = 2 / (1 - beta2) - 1
    cdef double rho_t = rho_inf - 2 * step * beta2 ** step / bc2
    cdef bint rectify = rho_t > 5
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, feps = <floating>eps
    cdef floating step_size = <floating>(lr / bc1)
    cdef floating adapt = 0
    cdef floating scale = <floating>grad_scale, clip = <floating>clip_value, wd = <floating>weight_decay
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    if rectify:
        step_size = <floating>(lr / bc1 * sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                                               / ((rho_inf - 4) * (rho_inf - 2) * rho_t)))
        adapt = <floating>sqrt(bc2)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        gi = _condition(g[i], p[i], scale, clip, wd)
        mi = b1 * m[i] + (1 - b1) * gi
        vi = b2 * v[i] + (1 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        if rectify:
            p[i] = p[i] - step_size * mi * adapt / (fsqrt(vi) + feps)
        else:
            p[i] = p[i] - step_size * mi


def adan_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] n_diff,
              floating[::1] v, floating[::1] prev_g, double lr, double beta1, double beta2,
              double beta3, double eps, double weight_decay, long step,
              double grad_scale, double clip_value, int n_threads):
    """Adan (Xie et al. 2022), in the reference implementation's convention
    (betas weigh the old state): with d = g - g_prev (0 at the first step),
    m = b1 m + (1 - b1) g;  n = b2 n + (1 - b2) d;  v = b3 v + (1 - b3) (g + b2 d)^2;
    u = (m / (1 - b1^t) + b2 n / (1 - b2^t)) / (sqrt(v / (1 - b3^t)) + eps);
    p = (p - lr u) / (1 + lr wd)   (the reference's default proximal weight decay)."""
    cdef Py_ssize_t i, nn = p.shape[0]
    cdef floating gi, di, mi, ni, vi, ui
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, b3 = <floating>beta3, feps = <floating>eps
    cdef floating inv_bc1 = <floating>(1 / (1 - beta1 ** step))
    cdef floating inv_bc2 = <floating>(1 / (1 - beta2 ** step))
    cdef floating inv_bc3_sqrt = <floating>(1 / sqrt(1 - beta3 ** step))
    cdef floating flr = <floating>lr, prox = <floating>(1 / (1 + lr * weight_decay))
    cdef floating scale = <floating>grad_scale, clip = <floating>clip_value
    cdef bint first = step == 1
    cdef int nt = n_blocks(nn, n_threads, MIN_ELEMENTS)
    for i in prange(nn, nogil=True, schedule='static', num_threads=nt):
        gi = _condition(g[i], p[i], scale, clip, 0)
        di = 0 if first else gi - prev_g[i]
        prev_g[i] = gi
        mi = b1 * m[i] + (1 - b1) * gi
        ni = b2 * n_diff[i] + (1 - b2) * di
        ui = gi + b2 * di
        vi = b3 * v[i] + (1 - b3) * ui * ui
        m[i] = mi
        n_diff[i] = ni
        v[i] = vi
        p[i] = prox * (p[i] - flr * (mi * inv_bc1 + b2 * ni * inv_bc2) / (fsqrt(vi) * inv_bc3_sqrt + feps))
