"""Normalization kernels: batch norm (statistics over the batch, per feature) and group
norm (statistics per sample over groups of features; layer norm is one group).

Forward  x_hat = (x - mean) / sqrt(var + eps),  y = gamma * x_hat + beta,
         var the biased (1/m) variance, computed in two passes (mean first).
Backward with g = dy * gamma and m values per statistic:
         dx = inv_std / m * (m g - sum g - x_hat * sum(g x_hat)),
         dgamma = sum over the batch of dy * x_hat,  dbeta = sum of dy.
Per-feature sums run over the rows in order, whatever the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from ._openmp cimport n_blocks, column_start

cdef Py_ssize_t MIN_COLS = 16
cdef Py_ssize_t MIN_ROWS = 8


cdef void _column_stats(const floating* x, int n, int d, int c0, int c1, double eps,
                        double* mean, double* inv_std, floating* running_mean,
                        floating* running_var, double momentum) noexcept nogil:
    """Batch mean and 1/sqrt(var + eps) of columns [c0, c1), two-pass; when running_mean is
    not NULL also running = (1 - momentum) running + momentum * batch, with the unbiased
    variance for running_var (torch.nn.BatchNorm1d)."""
    cdef Py_ssize_t i, j
    cdef double diff, var
    for j in range(c0, c1):
        mean[j] = 0
        inv_std[j] = 0
    for i in range(n):
        for j in range(c0, c1):
            mean[j] += x[i * d + j]
    for j in range(c0, c1):
        mean[j] /= n
    for i in range(n):
        for j in range(c0, c1):
            diff = x[i * d + j] - mean[j]
            inv_std[j] += diff * diff
    for j in range(c0, c1):
        var = inv_std[j] / n                      # biased (1/n) variance normalizes
        inv_std[j] = 1.0 / sqrt(var + eps)
        if running_mean != NULL:
            running_mean[j] = <floating>((1 - momentum) * running_mean[j] + momentum * mean[j])
            running_var[j] = <floating>((1 - momentum) * running_var[j] + momentum * var * n / (n - 1))


def batch_norm_forward(const floating[:, ::1] x, const floating[::1] gamma,
                       const floating[::1] beta, floating[:, ::1] y,
                       double[::1] mean, double[::1] inv_std, double eps,
                       floating[::1] running_mean, floating[::1] running_var, double momentum,
                       int n_threads):
    """Training-mode batch norm; writes the batch mean and 1/sqrt(var + eps) per feature and,
    when running_mean/running_var are given (not None), updates them in the same pass."""
    cdef int n = x.shape[0], d = x.shape[1], blk, c0, c1
    cdef Py_ssize_t i, j
    cdef floating* rm = &running_mean[0] if running_mean is not None else NULL
    cdef floating* rv = &running_var[0] if running_var is not None else NULL
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        c0 = column_start(d, nb, blk)
        c1 = column_start(d, nb, blk + 1)
        _column_stats(&x[0, 0], n, d, c0, c1, eps, &mean[0], &inv_std[0], rm, rv, momentum)
        for i in range(n):
            for j in range(c0, c1):
                y[i, j] = <floating>((x[i, j] - mean[j]) * inv_std[j]) * gamma[j] + beta[j]


def batch_norm_backward(const floating[:, ::1] x, const floating[::1] gamma,
                        const double[::1] mean, const double[::1] inv_std,
                        const floating[:, ::1] dy, floating[:, ::1] dx,
                        floating[::1] dgamma, floating[::1] dbeta, int n_threads):
    """Gradients of training-mode batch norm; dx may alias dy."""
    cdef int n = x.shape[0], d = x.shape[1], blk, c0, c1
    cdef Py_ssize_t i, j
    cdef double xh
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        c0 = column_start(d, nb, blk)
        c1 = column_start(d, nb, blk + 1)
        for j in range(c0, c1):
            dgamma[j] = 0
            dbeta[j] = 0
        for i in range(n):
            for j in range(c0, c1):
                xh = (x[i, j] - mean[j]) * inv_std[j]
                dbeta[j] = dbeta[j] + dy[i, j]
                dgamma[j] = dgamma[j] + <floating>(dy[i, j] * xh)
        for i in range(n):
            for j in range(c0, c1):
                xh = (x[i, j] - mean[j]) * inv_std[j]
                # sum g = gamma * dbeta, sum g x_hat = gamma * dgamma
                dx[i, j] = <floating>(gamma[j] * inv_std[j] / n
                                      * (n * dy[i, j] - dbeta[j] - xh * dgamma[j]))


def scale_shift(const floating[:, ::1] x, const floating[::1] a, const floating[::1] b,
                floating[:, ::1] y, int n_threads):
    """y = x * a + b per feature (inference-mode batch norm with folded statistics)."""
    cdef Py_ssize_t i, j, n = x.shape[0], d = x.shape[1]
    cdef int nt = n_blocks(n, n_threads, MIN_ROWS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        for j in range(d):
            y[i, j] = x[i, j] * a[j] + b[j]


def group_norm_forward(const floating[:, ::1] x, const floating[::1] gamma,
                       const floating[::1] beta, floating[:, ::1] y,
                       double[:, ::1] mean, double[:, ::1] inv_std, int groups, double eps,
                       int n_threads):
    """Per sample and group of d / groups consecutive features (groups = 1: layer norm)."""
    cdef Py_ssize_t i, j, g, lo
    cdef int n = x.shape[0], d = x.shape[1], m = d // groups
    cdef double s, diff
    cdef int nt = n_blocks(n, n_threads, MIN_ROWS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        for g in range(groups):
            lo = g * m
            s = 0
            for j in range(lo, lo + m):
                s = s + x[i, j]
            s = s / m
            mean[i, g] = s
            diff = 0
            for j in range(lo, lo + m):
                diff = diff + (x[i, j] - s) * (x[i, j] - s)
            inv_std[i, g] = 1.0 / sqrt(diff / m + eps)
            for j in range(lo, lo + m):
                y[i, j] = <floating>((x[i, j] - s) * inv_std[i, g]) * gamma[j] + beta[j]


def group_norm_backward(const floating[:, ::1] x, const floating[::1] gamma,
                        const double[:, ::1] mean, const double[:, ::1] inv_std,
                        floating[:, ::1] dy, floating[:, ::1] dx,
                        floating[::1] dgamma, floating[::1] dbeta, int groups, int n_threads):
    """Gradients of group norm. dgamma/dbeta first (parallel over features, rows in order),
    then dx (parallel over rows); dx may alias dy."""
    cdef int n = x.shape[0], d = x.shape[1], m = d // groups, blk, c0, c1
    cdef Py_ssize_t i, j, g, lo, hi
    cdef double xh, sg, sgx, gj, mu, s
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    cdef int nt = n_blocks(n, n_threads, MIN_ROWS)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        c0 = column_start(d, nb, blk)
        c1 = column_start(d, nb, blk + 1)
        for j in range(c0, c1):
            dgamma[j] = 0
            dbeta[j] = 0
        for i in range(n):
            g = c0 // m
            while g * m < c1:   # the groups this block of features overlaps
                lo = max(c0, g * m)
                hi = min(c1, g * m + m)
                mu = mean[i, g]
                s = inv_std[i, g]
                for j in range(lo, hi):
                    dbeta[j] = dbeta[j] + dy[i, j]
                    dgamma[j] = dgamma[j] + <floating>(dy[i, j] * ((x[i, j] - mu) * s))
                g = g + 1
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        for g in range(groups):
            lo = g * m
            sg = 0
            sgx = 0
            for j in range(lo, lo + m):
                gj = dy[i, j] * gamma[j]
                xh = (x[i, j] - mean[i, g]) * inv_std[i, g]
                sg = sg + gj
                sgx = sgx + gj * xh
            for j in range(lo, lo + m):
                xh = (x[i, j] - mean[i, g]) * inv_std[i, g]
                dx[i, j] = <floating>(inv_std[i, g] / m * (m * dy[i, j] * gamma[j] - sg - xh * sgx))


def prelu_forward(const floating[:, ::1] x, const floating[::1] a, floating[:, ::1] y, int n_threads):
    """y = x if x > 0 else a_j x (one learnable slope per feature)."""
    cdef Py_ssize_t i, j, n = x.shape[0], d = x.shape[1]
    cdef int nt = n_blocks(n, n_threads, MIN_ROWS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        for j in range(d):
            y[i, j] = x[i, j] if x[i, j] > 0 else a[j] * x[i, j]


def prelu_backward(const floating[:, ::1] x, const floating[::1] a, const floating[:, ::1] dy,
                   floating[:, ::1] dx, floating[::1] da, int n_threads):
    """da_j = sum_i dy * x [x <= 0] (rows in order); dx = dy if x > 0 else a_j dy (may alias dy)."""
    cdef int n = x.shape[0], d = x.shape[1], blk, c0, c1
    cdef Py_ssize_t i, j
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        c0 = column_start(d, nb, blk)
        c1 = column_start(d, nb, blk + 1)
        for j in range(c0, c1):
            da[j] = 0
        for i in range(n):
            for j in range(c0, c1):
                if x[i, j] <= 0:
                    da[j] = da[j] + dy[i, j] * x[i, j]
                    dx[i, j] = a[j] * dy[i, j]
                else:
                    dx[i, j] = dy[i, j]
