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
from ._openmp cimport n_blocks, block_start, flush_denormals, restore_denormals

cdef Py_ssize_t MIN_ELEMENTS = 16384
cdef Py_ssize_t CHUNK = 8192


cdef inline floating _condition(floating g, floating p, floating scale, floating clip,
                                floating wd) noexcept nogil:
    g = g * scale
    g = clip if g > clip else g
    g = -clip if g < -clip else g
    return g + wd * p


# Every kernel splits [0, n) into one contiguous block per thread and runs a plain C loop
# over each block (the *_block functions). Loops written directly in prange carry OpenMP
# lastprivate clauses that keep gcc from vectorizing them.


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



cdef void _sgd_block(floating* p, const floating* g, floating* buf, Py_ssize_t n,
                     floating lr, floating mu, floating damp, bint nesterov, bint first,
                     floating scale, floating clip, floating wd) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, bi
    if buf == NULL:
        for i in range(n):
            p[i] = p[i] - lr * _condition(g[i], p[i], scale, clip, wd)
        return
    for i in range(n):
        gi = _condition(g[i], p[i], scale, clip, wd)
        bi = gi if first else mu * buf[i] + damp * gi
        buf[i] = bi
        p[i] = p[i] - lr * (gi + mu * bi if nesterov else bi)


def sgd_step(floating[::1] p, const floating[::1] g, floating[::1] buf,
             double lr, double momentum, double dampening, bint nesterov,
             double weight_decay, bint first_step, double grad_scale, double clip_value,
             int n_threads):
    """torch.optim.SGD: b = g (first step) or mu b + (1 - dampening) g;
    d = g + mu b (nesterov) or b; p -= lr d. Without momentum p -= lr g (buf is None)."""
    cdef Py_ssize_t n = p.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_ELEMENTS), blk
    cdef unsigned int csr
    cdef floating* bp = &buf[0] if buf is not None else NULL
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        _sgd_block(&p[lo], &g[lo], bp + lo if bp != NULL else NULL, hi - lo, <floating>lr,
                   <floating>momentum, <floating>(1 - dampening), nesterov, first_step,
                   <floating>grad_scale, <floating>clip_value, <floating>weight_decay)
        restore_denormals(csr)


cdef void _adagrad_block(floating* p, const floating* g, floating* acc, Py_ssize_t n,
                         floating lr, floating eps, floating scale, floating clip,
                         floating wd) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, si
    for i in range(n):
        gi = _condition(g[i], p[i], scale, clip, wd)
        si = acc[i] + gi * gi
        acc[i] = si
        p[i] = p[i] - lr * gi / (fsqrt(si) + eps)


def adagrad_step(floating[::1] p, const floating[::1] g, floating[::1] acc,
                 double clr, double eps, double weight_decay,
                 double grad_scale, double clip_value, int n_threads):
    """torch.optim.Adagrad: s += g^2; p -= clr * g / (sqrt(s) + eps),
    clr = lr / (1 + (t - 1) * lr_decay) computed by the caller."""
    cdef Py_ssize_t n = p.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_ELEMENTS), blk
    cdef unsigned int csr
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        _adagrad_block(&p[lo], &g[lo], &acc[lo], hi - lo, <floating>clr, <floating>eps,
                       <floating>grad_scale, <floating>clip_value, <floating>weight_decay)
        restore_denormals(csr)


cdef void _rmsprop_block(floating* p, const floating* g, floating* sq, floating* gavg,
                         floating* buf, Py_ssize_t n, floating lr, floating a, floating eps,
                         floating mu, floating scale, floating clip, floating wd) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, vi, ga, d
    for i in range(n):
        gi = _condition(g[i], p[i], scale, clip, wd)
        vi = a * sq[i] + (1 - a) * gi * gi
        sq[i] = vi
        if gavg != NULL:
            ga = a * gavg[i] + (1 - a) * gi
            gavg[i] = ga
            vi = vi - ga * ga
        d = gi / (fsqrt(vi) + eps)
        if buf != NULL:
            d = mu * buf[i] + d
            buf[i] = d
        p[i] = p[i] - lr * d


def rmsprop_step(floating[::1] p, const floating[::1] g, floating[::1] square_avg,
                 floating[::1] grad_avg, floating[::1] buf,
                 double lr, double alpha, double eps, double weight_decay, double momentum,
                 double grad_scale, double clip_value, int n_threads):
    """torch.optim.RMSprop: v = a v + (1 - a) g^2; centered: gbar = a gbar + (1 - a) g,
    v~ = v - gbar^2; d = g / (sqrt(v~) + eps); momentum: b = mu b + d, p -= lr b; else p -= lr d.
    grad_avg is None unless centered, buf is None unless momentum > 0."""
    cdef Py_ssize_t n = p.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_ELEMENTS), blk
    cdef unsigned int csr
    cdef floating* ga = &grad_avg[0] if grad_avg is not None else NULL
    cdef floating* bp = &buf[0] if buf is not None else NULL
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        _rmsprop_block(&p[lo], &g[lo], &square_avg[lo], ga + lo if ga != NULL else NULL,
                       bp + lo if bp != NULL else NULL, hi - lo, <floating>lr, <floating>alpha,
                       <floating>eps, <floating>momentum, <floating>grad_scale,
                       <floating>clip_value, <floating>weight_decay)
        restore_denormals(csr)


cdef extern from "adam_f32.h":
    void adam_f32 "fastnn_adam_f32"(float* p, const float* g, float* m, float* v, float* vmax,
                                    Py_ssize_t n, float b1, float b2, float eps, float step_size,
                                    float inv_bc2_sqrt, float shrink, float scale, float clip,
                                    float wd) noexcept nogil


cdef void _adam_block(floating* p, const floating* g, floating* m, floating* v, floating* vmax,
                      Py_ssize_t n, floating b1, floating b2, floating eps, floating step_size,
                      floating inv_bc2_sqrt, floating shrink, floating scale, floating clip,
                      floating wd) noexcept nogil:
    """float32: adam_f32.h (AVX-512 estimates refined by Newton steps); float64: this loop."""
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, pi
    if floating is float:
        adam_f32(p, g, m, v, vmax, n, b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale, clip, wd)
    else:
        for i in range(n):
            pi = p[i]
            gi = _condition(g[i], pi, scale, clip, wd)
            mi = b1 * m[i] + (1 - b1) * gi
            vi = b2 * v[i] + (1 - b2) * gi * gi
            m[i] = mi
            v[i] = vi
            if vmax != NULL:
                vi = vmax[i] if vmax[i] > vi else vi
                vmax[i] = vi
            p[i] = pi * shrink - step_size * mi / (fsqrt(vi) * inv_bc2_sqrt + eps)


cpdef tuple adam_scalars(double lr, double beta1, double beta2, double weight_decay, bint decoupled,
                         long step):
    """(step_size, inv_bc2_sqrt, shrink, wd) of adam_step's update at step t: lr / (1 - b1^t),
    1 / sqrt(1 - b2^t), 1 - lr weight_decay (AdamW, else 1) and the wd added to g (Adam, else 0)."""
    return (lr / (1 - beta1 ** step), 1 / sqrt(1 - beta2 ** step), 1 - lr * weight_decay if decoupled else 1.0,
            0.0 if decoupled else weight_decay)


def adam_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
              floating[::1] v_max, double lr, double beta1, double beta2, double eps,
              double weight_decay, bint decoupled, long step,
              double grad_scale, double clip_value, int n_threads):
    """torch.optim.Adam / AdamW at step t (1-based):
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  (amsgrad: v_max = max(v_max, v))
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    decoupled=True (AdamW) shrinks p by (1 - lr * weight_decay) instead of adding wd * p to g.
    v_max is None unless amsgrad."""
    cdef Py_ssize_t n = p.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_ELEMENTS), blk
    cdef unsigned int csr
    cdef floating* vm = &v_max[0] if v_max is not None else NULL
    cdef double d_step_size, d_inv_bc2_sqrt, d_shrink, d_wd
    d_step_size, d_inv_bc2_sqrt, d_shrink, d_wd = adam_scalars(lr, beta1, beta2, weight_decay, decoupled, step)
    cdef floating step_size = <floating>d_step_size, inv_bc2_sqrt = <floating>d_inv_bc2_sqrt
    cdef floating shrink = <floating>d_shrink, wd = <floating>d_wd
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        _adam_block(&p[lo], &g[lo], &m[lo], &v[lo], vm + lo if vm != NULL else NULL, hi - lo,
                    <floating>beta1, <floating>beta2, <floating>eps, step_size, inv_bc2_sqrt,
                    shrink, <floating>grad_scale, <floating>clip_value, wd)
        restore_denormals(csr)


cdef void _radam_block(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n,
                       floating b1, floating b2, floating eps, floating step_size,
                       floating adapt, bint rectify, floating scale, floating clip,
                       floating wd) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi
    for i in range(n):
        gi = _condition(g[i], p[i], scale, clip, wd)
        mi = b1 * m[i] + (1 - b1) * gi
        vi = b2 * v[i] + (1 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        if rectify:
            p[i] = p[i] - step_size * mi * adapt / (fsqrt(vi) + eps)
        else:
            p[i] = p[i] - step_size * mi


def radam_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               long step, double grad_scale, double clip_value, int n_threads):
    """torch.optim.RAdam (Liu et al. 2020): m, v as Adam; rho_inf = 2 / (1 - b2) - 1,
    rho_t = rho_inf - 2 t b2^t / (1 - b2^t). If rho_t > 5:
    p -= lr * m / (1 - b1^t) * r_t * sqrt(1 - b2^t) / (sqrt(v) + eps), with the rectifier
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t));
    otherwise p -= lr * m / (1 - b1^t)."""
    cdef Py_ssize_t n = p.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_ELEMENTS), blk
    cdef unsigned int csr
    cdef double bc1 = 1 - beta1 ** step, bc2 = 1 - beta2 ** step
    cdef double rho_inf = 2 / (1 - beta2) - 1
    cdef double rho_t = rho_inf - 2 * step * beta2 ** step / bc2
    cdef bint rectify = rho_t > 5
    cdef floating step_size = <floating>(lr / bc1)
    cdef floating adapt = 0
    if rectify:
        step_size = <floating>(lr / bc1 * sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                                               / ((rho_inf - 4) * (rho_inf - 2) * rho_t)))
        adapt = <floating>sqrt(bc2)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        _radam_block(&p[lo], &g[lo], &m[lo], &v[lo], hi - lo, <floating>beta1, <floating>beta2,
                     <floating>eps, step_size, adapt, rectify, <floating>grad_scale,
                     <floating>clip_value, <floating>weight_decay)
        restore_denormals(csr)


cdef void _adan_block(floating* p, const floating* g, floating* m, floating* nd, floating* v,
                      floating* prev, Py_ssize_t n, floating b1, floating b2, floating b3,
                      floating eps, floating inv_bc1, floating inv_bc2, floating inv_bc3_sqrt,
                      floating lr, floating prox, bint first, floating scale,
                      floating clip) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, di, mi, ni, vi, ui
    for i in range(n):
        gi = _condition(g[i], p[i], scale, clip, 0)
        di = 0 if first else gi - prev[i]
        prev[i] = gi
        mi = b1 * m[i] + (1 - b1) * gi
        ni = b2 * nd[i] + (1 - b2) * di
        ui = gi + b2 * di
        vi = b3 * v[i] + (1 - b3) * ui * ui
        m[i] = mi
        nd[i] = ni
        v[i] = vi
        p[i] = prox * (p[i] - lr * (mi * inv_bc1 + b2 * ni * inv_bc2) / (fsqrt(vi) * inv_bc3_sqrt + eps))


def adan_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] n_diff,
              floating[::1] v, floating[::1] prev_g, double lr, double beta1, double beta2,
              double beta3, double eps, double weight_decay, long step,
              double grad_scale, double clip_value, int n_threads):
    """Adan (Xie et al. 2022), in the reference implementation's convention
    (betas weigh the old state): with d = g - g_prev (0 at the first step),
    m = b1 m + (1 - b1) g;  n = b2 n + (1 - b2) d;  v = b3 v + (1 - b3) (g + b2 d)^2;
    u = (m / (1 - b1^t) + b2 n / (1 - b2^t)) / (sqrt(v / (1 - b3^t)) + eps);
    p = (p - lr u) / (1 + lr wd)   (the reference's default proximal weight decay)."""
    cdef Py_ssize_t n = p.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_ELEMENTS), blk
    cdef unsigned int csr
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        _adan_block(&p[lo], &g[lo], &m[lo], &n_diff[lo], &v[lo], &prev_g[lo], hi - lo,
                    <floating>beta1, <floating>beta2, <floating>beta3, <floating>eps,
                    <floating>(1 / (1 - beta1 ** step)), <floating>(1 / (1 - beta2 ** step)),
                    <floating>(1 / sqrt(1 - beta3 ** step)), <floating>lr,
                    <floating>(1 / (1 + lr * weight_decay)), step == 1,
                    <floating>grad_scale, <floating>clip_value)
        restore_denormals(csr)
