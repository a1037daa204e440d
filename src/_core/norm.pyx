"""Normalization kernels: batch norm (statistics over the batch, per feature) and group
norm (statistics per sample over groups of features; layer norm is one group).

Forward  x_hat = (x - mean) / sqrt(var + eps),  y = gamma * x_hat + beta,
         var the biased (1/m) variance, computed in two passes (mean first).
Backward with g = dy * gamma and m values per statistic:
         dx = inv_std / m * (m g - sum g - x_hat * sum(g x_hat)),
         dgamma = sum over the batch of dy * x_hat,  dbeta = sum of dy.
Sums over the batch per feature (batch norm's statistics, dgamma, dbeta, PReLU's slope
gradient) run over chunks of rows, added in chunk order (_openmp.pxd): each thread works on
whole rows, and the sums are the same on any thread count.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free
from libc.math cimport sqrt
from ._openmp cimport n_blocks, column_start, barrier, ROW_CHUNK, chunk_count, chunk_end, sum_chunks

cdef Py_ssize_t MIN_COLS = 16
cdef Py_ssize_t MIN_ROWS = 8


cdef void _chunk_sums(const floating* x, const double* center, double* out, Py_ssize_t r0,
                      Py_ssize_t r1, Py_ssize_t d) noexcept nogil:
    """out[j] = sum over rows [r0, r1) of x[i, j] (center NULL) or of (x[i, j] - center[j])^2."""
    cdef Py_ssize_t i, j
    cdef double diff
    for j in range(d):
        out[j] = 0
    for i in range(r0, r1):
        if center == NULL:
            for j in range(d):
                out[j] += x[i * d + j]
        else:
            for j in range(d):
                diff = x[i * d + j] - center[j]
                out[j] += diff * diff


cdef double* _chunk_buffer(Py_ssize_t n_chunks, Py_ssize_t d, int lines) except NULL:
    """`lines` zeroed (n_chunks x d) buffers of per-chunk feature sums, one after the other."""
    cdef double* buf = <double*>calloc(n_chunks * d * lines, sizeof(double))
    if buf == NULL:
        raise MemoryError("no memory for the per-chunk feature sums")
    return buf


cdef inline int _team(Py_ssize_t n_chunks, int nb, int n_threads) noexcept nogil:
    """Threads for a kernel whose passes run over n_chunks row chunks and nb feature blocks."""
    return max(nb, n_blocks(n_chunks, n_threads, 1))


cdef inline void _store_sums(double* sums, floating* out, Py_ssize_t n_chunks, Py_ssize_t d,
                             int nb, int blk) noexcept nogil:
    """out[c] = the chunks' sums[chunk, c] added in chunk order, for the columns c of feature
    block blk of nb."""
    cdef Py_ssize_t c, c0 = column_start(d, nb, blk), c1 = column_start(d, nb, blk + 1)
    sum_chunks(sums, sums, n_chunks, d, c0, c1)
    for c in range(c0, c1):
        out[c] = <floating>sums[c]


def batch_norm_forward(const floating[:, ::1] x, const floating[::1] gamma,
                       const floating[::1] beta, floating[:, ::1] y,
                       double[::1] mean, double[::1] inv_std, double eps,
                       floating[::1] running_mean, floating[::1] running_var, double momentum,
                       int n_threads):
    """Training-mode batch norm; writes the batch mean and 1/sqrt(var + eps) per feature and,
    when running_mean/running_var are given (not None), updates them with the unbiased
    variance: running = (1 - momentum) running + momentum * batch (torch.nn.BatchNorm1d).
    Three passes by chunks of rows (sums, squared deviations, output), the per-feature sums
    added across chunks by feature blocks."""
    cdef int n = x.shape[0], d = x.shape[1], blk, c0, c1
    cdef Py_ssize_t i, j, ch, n_chunks = chunk_count(n)
    cdef double var
    cdef floating* rm = &running_mean[0] if running_mean is not None else NULL
    cdef floating* rv = &running_var[0] if running_var is not None else NULL
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    cdef int nt = _team(n_chunks, nb, n_threads)
    cdef double* sums = _chunk_buffer(n_chunks, d, 1)
    try:
        with nogil, parallel(num_threads=nt):
            for ch in prange(n_chunks, schedule='static'):
                _chunk_sums(&x[0, 0], NULL, sums + ch * d, ch * ROW_CHUNK, chunk_end(n, ch), d)
            barrier()
            for blk in prange(nb, schedule='static'):
                c0 = column_start(d, nb, blk)
                c1 = column_start(d, nb, blk + 1)
                sum_chunks(sums, &mean[0], n_chunks, d, c0, c1)
                for j in range(c0, c1):
                    mean[j] = mean[j] / n
            barrier()
            for ch in prange(n_chunks, schedule='static'):
                _chunk_sums(&x[0, 0], &mean[0], sums + ch * d, ch * ROW_CHUNK, chunk_end(n, ch), d)
            barrier()
            for blk in prange(nb, schedule='static'):
                c0 = column_start(d, nb, blk)
                c1 = column_start(d, nb, blk + 1)
                sum_chunks(sums, &inv_std[0], n_chunks, d, c0, c1)
                for j in range(c0, c1):
                    var = inv_std[j] / n                      # biased (1/n) variance normalizes
                    inv_std[j] = 1.0 / sqrt(var + eps)
                    if rm != NULL:
                        rm[j] = <floating>((1 - momentum) * rm[j] + momentum * mean[j])
                        rv[j] = <floating>((1 - momentum) * rv[j] + momentum * var * n / (n - 1))
            barrier()
            for ch in prange(n_chunks, schedule='static'):
                for i in range(ch * ROW_CHUNK, chunk_end(n, ch)):
                    for j in range(d):
                        y[i, j] = <floating>((x[i, j] - mean[j]) * inv_std[j]) * gamma[j] + beta[j]
    finally:
        free(sums)


def batch_norm_backward(const floating[:, ::1] x, const floating[::1] gamma,
                        const double[::1] mean, const double[::1] inv_std,
                        const floating[:, ::1] dy, floating[:, ::1] dx,
                        floating[::1] dgamma, floating[::1] dbeta, int n_threads):
    """Gradients of training-mode batch norm; dx may alias dy. sum dy and sum dy x_hat per
    feature by chunks of rows (added across chunks in chunk order), then dx by chunks."""
    cdef int n = x.shape[0], d = x.shape[1], blk
    cdef Py_ssize_t i, j, ch, n_chunks = chunk_count(n)
    cdef double xh
    cdef double* sb
    cdef double* sg
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    cdef int nt = _team(n_chunks, nb, n_threads)
    cdef double* sums = _chunk_buffer(n_chunks, d, 2)    # sum dy | sum dy x_hat
    sb = sums
    sg = sums + n_chunks * d
    try:
        with nogil, parallel(num_threads=nt):
            for ch in prange(n_chunks, schedule='static'):
                for i in range(ch * ROW_CHUNK, chunk_end(n, ch)):
                    for j in range(d):
                        xh = (x[i, j] - mean[j]) * inv_std[j]
                        sb[ch * d + j] += dy[i, j]
                        sg[ch * d + j] += dy[i, j] * xh
            barrier()
            for blk in prange(nb, schedule='static'):
                _store_sums(sb, &dbeta[0], n_chunks, d, nb, blk)
                _store_sums(sg, &dgamma[0], n_chunks, d, nb, blk)
            barrier()
            for ch in prange(n_chunks, schedule='static'):
                for i in range(ch * ROW_CHUNK, chunk_end(n, ch)):
                    for j in range(d):
                        xh = (x[i, j] - mean[j]) * inv_std[j]
                        # sum g = gamma * sum dy, sum g x_hat = gamma * sum dy x_hat
                        dx[i, j] = <floating>(gamma[j] * inv_std[j] / n * (n * dy[i, j] - sb[j] - xh * sg[j]))
    finally:
        free(sums)


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
    """Gradients of group norm; dx may alias dy. One pass by chunks of rows computes dx and
    each chunk's per-feature sums of dy and dy x_hat; dgamma and dbeta add those in chunk
    order."""
    cdef int n = x.shape[0], d = x.shape[1], m = d // groups, blk
    cdef Py_ssize_t i, j, g, lo, ch, n_chunks = chunk_count(n)
    cdef double xh, sg, sgx, dyij, mu, s
    cdef double* sb
    cdef double* sgm
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    cdef int nt = _team(n_chunks, nb, n_threads)
    cdef double* sums = _chunk_buffer(n_chunks, d, 2)    # sum dy | sum dy x_hat
    sb = sums
    sgm = sums + n_chunks * d
    try:
        with nogil, parallel(num_threads=nt):
            for ch in prange(n_chunks, schedule='static'):
                for i in range(ch * ROW_CHUNK, chunk_end(n, ch)):
                    for g in range(groups):
                        lo = g * m
                        mu = mean[i, g]
                        s = inv_std[i, g]
                        sg = 0
                        sgx = 0
                        for j in range(lo, lo + m):
                            xh = (x[i, j] - mu) * s
                            sg = sg + dy[i, j] * gamma[j]
                            sgx = sgx + dy[i, j] * gamma[j] * xh
                        for j in range(lo, lo + m):
                            xh = (x[i, j] - mu) * s
                            dyij = dy[i, j]
                            sb[ch * d + j] += dyij
                            sgm[ch * d + j] += dyij * xh
                            dx[i, j] = <floating>(s / m * (m * dyij * gamma[j] - sg - xh * sgx))
            barrier()
            for blk in prange(nb, schedule='static'):
                _store_sums(sb, &dbeta[0], n_chunks, d, nb, blk)
                _store_sums(sgm, &dgamma[0], n_chunks, d, nb, blk)
    finally:
        free(sums)


def prelu_forward(const floating[:, ::1] x, const floating[::1] a, floating[:, ::1] y, int n_threads):
    """y = x if x > 0 else a_j x (one learnable slope per feature)."""
    cdef Py_ssize_t i, j, n = x.shape[0], d = x.shape[1]
    cdef int nt = n_blocks(n, n_threads, MIN_ROWS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        for j in range(d):
            y[i, j] = x[i, j] if x[i, j] > 0 else a[j] * x[i, j]


def prelu_backward(const floating[:, ::1] x, const floating[::1] a, const floating[:, ::1] dy,
                   floating[:, ::1] dx, floating[::1] da, int n_threads):
    """da_j = sum_i dy * x [x <= 0] (by chunks of rows, added in chunk order);
    dx = dy if x > 0 else a_j dy (may alias dy)."""
    cdef int n = x.shape[0], d = x.shape[1], blk
    cdef Py_ssize_t i, j, ch, n_chunks = chunk_count(n)
    cdef int nb = n_blocks(d, n_threads, MIN_COLS)
    cdef int nt = _team(n_chunks, nb, n_threads)
    cdef double* sums = _chunk_buffer(n_chunks, d, 1)
    try:
        with nogil, parallel(num_threads=nt):
            for ch in prange(n_chunks, schedule='static'):
                for i in range(ch * ROW_CHUNK, chunk_end(n, ch)):
                    for j in range(d):    # x [x <= 0] = min(x, 0); the sums before dx may overwrite dy
                        sums[ch * d + j] += dy[i, j] * (x[i, j] if x[i, j] < 0 else 0)
                    for j in range(d):
                        dx[i, j] = dy[i, j] * (a[j] if x[i, j] <= 0 else 1)
            barrier()
            for blk in prange(nb, schedule='static'):
                _store_sums(sums, &da[0], n_chunks, d, nb, blk)
    finally:
        free(sums)
