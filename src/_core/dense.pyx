"""Dense layer kernels: blocked GEMM with fused bias + activation epilogue, and backward.

Forward  Z = X W + b,  A = f(Z)           X (n, k), W (k, m), b (m,)
Backward dZ = dA * f'(Z)                  (in place in dA)
         dX = dZ W^T,  dW = X^T dZ,  db = sum_rows dZ

The batch is split into one row block per thread; each thread runs a
single-threaded BLAS call on its block and applies the epilogue while the block
is in cache, so only one thread pool (OpenMP) is active at a time. dW splits
over its columns, so every element of dW and db is summed over the whole batch
in one fixed order, whatever the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from ._blas cimport gemm
from ._openmp cimport n_blocks, block_start, flush_denormals, restore_denormals
from .activations cimport bias_act_n, act_backward_n

# Smallest useful GEMM block: below this many rows (or dW columns) a split costs
# more in BLAS packing than the second thread gains.
cdef Py_ssize_t MIN_ROWS = 16
cdef Py_ssize_t MIN_COLS = 32


cdef inline void _forward_block(const floating* x, const floating* w, const floating* b,
                                floating* z, floating* y, int rows, int k, int m,
                                int kind, floating a) noexcept nogil:
    gemm(False, False, rows, m, k, 1, x, k, w, m, 0, z, m)
    bias_act_n(z, y, b, rows, m, kind, a)


def dense_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                  floating[:, ::1] z, floating[:, ::1] y, int kind, double a, int n_threads):
    """y = f(x @ w + b). z receives the pre-activation x @ w + b when given (needed by the
    backward pass only when needs_input(kind, a)); z=None computes y in place."""
    cdef int n = x.shape[0], k = x.shape[1], m = w.shape[1], blk, r0, r1
    cdef int nb = n_blocks(n, n_threads, MIN_ROWS)
    cdef unsigned int csr
    cdef floating* z_ptr = &z[0, 0] if z is not None else &y[0, 0]
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        r0 = block_start(n, nb, blk)
        r1 = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        _forward_block(&x[r0, 0], &w[0, 0], &b[0], z_ptr + <Py_ssize_t>r0 * m, &y[r0, 0],
                       r1 - r0, k, m, kind, <floating>a)
        restore_denormals(csr)


cdef inline void _column_sums(const floating* d, floating* out, int n, int m,
                              int c0, int c1) noexcept nogil:
    """out[c] = sum_i d[i, c] for c in [c0, c1), rows summed in order."""
    cdef Py_ssize_t i, c
    for c in range(c0, c1):
        out[c] = 0
    for i in range(n):
        for c in range(c0, c1):
            out[c] = out[c] + d[i * m + c]


def dense_backward(const floating[:, ::1] x, const floating[:, ::1] w,
                   const floating[:, ::1] z, const floating[:, ::1] y,
                   floating[:, ::1] dy, floating[:, ::1] dw, floating[::1] db,
                   floating[:, ::1] dx, int kind, double a, int n_threads):
    """Gradients of a dense layer given dy = dL/dy; dy is overwritten by dL/dz.

    z (the pre-activation) may be None when the derivative follows from y alone.
    dx may be None (first layer: the input gradient is not needed); dw and db may be None
    (frozen layer: only the input gradient is needed).
    """
    cdef int n = x.shape[0], k = x.shape[1], m = w.shape[1], blk, r0, r1, c0, c1
    cdef bint want_dx = dx is not None
    cdef int nb = n_blocks(n, n_threads, MIN_ROWS)
    cdef unsigned int csr
    cdef floating* dx_ptr = &dx[0, 0] if want_dx else NULL
    cdef const floating* z_ptr = &z[0, 0] if z is not None else NULL
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        r0 = block_start(n, nb, blk)
        r1 = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        act_backward_n(z_ptr + <Py_ssize_t>r0 * m if z_ptr != NULL else NULL, &y[r0, 0], &dy[r0, 0], &dy[r0, 0],
                       <Py_ssize_t>(r1 - r0) * m, kind, <floating>a)
        if want_dx:
            gemm(False, True, r1 - r0, k, m, 1, &dy[r0, 0], m, &w[0, 0], m,
                 0, dx_ptr + <Py_ssize_t>r0 * k, k)
        restore_denormals(csr)
    if dw is None:
        return
    nb = n_blocks(m, n_threads, MIN_COLS)
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        c0 = block_start(m, nb, blk)
        c1 = block_start(m, nb, blk + 1)
        csr = flush_denormals()
        gemm(True, False, k, c1 - c0, n, 1, &x[0, 0], k, &dy[0, c0], m, 0, &dw[0, c0], m)
        _column_sums(&dy[0, 0], &db[0], n, m, c0, c1)
        restore_denormals(csr)
