"""Dense layer kernels: GEMMs split over threads, fused bias + activation epilogue, backward.

Forward  Z = X W + b,  A = f(Z)           X (n, k), W (k, m), b (m,)
Backward dZ = dA * f'(Z)                  (in place in dA)
         dX = dZ W^T,  dW = X^T dZ,  db = sum_rows dZ

Each GEMM is split into one block per OpenMP thread (a product too small to repay a
second thread, under about 20 us of work each: _blas.pxd, gemm_threads, stays whole), and
each thread runs a single-threaded GEMM on its block (fastnn's own kernel where it
applies, else BLAS: see _blas.pxd), so only one thread pool is ever active (OpenBLAS's
own threads and libgomp's spin against each other when they alternate).
A block is a range of rows or of columns of the product, whichever makes the threads
share the smaller operand: a row split makes every thread pack all of the right-hand
matrix, a column split all of the left-hand one (measured: splitting the forward GEMM
by rows cost mnist-256 on 2 threads 29% over OpenBLAS's own threading). The bias and
activation are applied inside fastnn's GEMM for ReLU and identity, else to each block
right after its GEMM. dZ comes from one pass over dY by chunks of ROW_CHUNK rows, each of
which also sums its rows of dZ per column; db adds those chunk sums in chunk order. Every
element of dW and db is thus summed over the whole batch in one fixed order, whatever the
thread count.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport malloc, free
from ._blas cimport MIN_SPLIT, split_rows, split_bounds, gemm_block, gemm_threads
from ._openmp cimport (n_blocks, column_start, flush_denormals, restore_denormals, barrier,
                      ROW_CHUNK, chunk_count, chunk_end, sum_chunks)
from .activations cimport bias_act_n, act_backward_n, RELU, IDENTITY

def dense_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                  floating[:, ::1] z, floating[:, ::1] y, int kind, double a, int n_threads,
                  bint check_x=False):
    """y = f(x @ w + b). z receives the pre-activation x @ w + b when given (needed by the
    backward pass only when needs_input(kind, a)); z=None computes y in place.
    ReLU and identity layers get bias and activation from fastnn's GEMM as it stores each
    tile (no second pass over y), where that GEMM computes the product.

    Returns True when check_x asked and the GEMM's epilogue found x @ w finite, which proves
    x finite: a NaN or infinity in a row of x makes every element of that row of x @ w NaN or
    infinite (inf * 0 is NaN). False means not known (not asked, the epilogue did not run,
    or x @ w holds NaN or infinity, e.g. from huge x or from w): the caller checks x."""
    cdef int n = x.shape[0], k = x.shape[1], m = w.shape[1], blk, lo, hi
    cdef bint by_rows = split_rows(n, m), done
    cdef int nb = n_blocks(n if by_rows else m, gemm_threads(n, m, k, n_threads), MIN_SPLIT)
    cdef unsigned int csr
    cdef floating* z_ptr = &z[0, 0] if z is not None else &y[0, 0]
    cdef bint in_gemm = z_ptr == &y[0, 0] and (kind == RELU or kind == IDENTITY)
    cdef int nonfinite
    cdef int unproven = 0   # blocks whose product was not seen finite
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        csr = flush_denormals()
        nonfinite = 0
        if in_gemm:
            done = gemm_block(False, False, n, m, k, &x[0, 0], k, &w[0, 0], m, z_ptr, m, by_rows, blk, nb,
                              &b[0], kind == RELU, &nonfinite if check_x else NULL)
        else:
            gemm_block(False, False, n, m, k, &x[0, 0], k, &w[0, 0], m, z_ptr, m, by_rows, blk, nb)
            done = False
        unproven += nonfinite != 0 or not done
        if not done:
            split_bounds(by_rows, n, m, blk, nb, &lo, &hi)
            if by_rows:
                bias_act_n(z_ptr + <Py_ssize_t>lo * m, &y[lo, 0], &b[0], hi - lo, m, m, kind, <floating>a)
            else:
                bias_act_n(z_ptr + lo, &y[0, lo], &b[lo], n, hi - lo, m, kind, <floating>a)
        restore_denormals(csr)
    return check_x and unproven == 0


cdef inline void _dz_chunk(const floating* z, const floating* y, floating* dy, floating* colsum,
                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t m, int kind, floating a) noexcept nogil:
    """Rows [r0, r1) of dZ = dY * f'(Z) (in place in dY) and colsum[c] = sum_i dZ[i, c] over
    those rows, in order (colsum may be NULL: frozen layer)."""
    cdef Py_ssize_t i, c, row
    if colsum != NULL:
        for c in range(m):
            colsum[c] = 0
    for i in range(r0, r1):
        row = i * m
        act_backward_n(z + row if z != NULL else NULL, y + row, dy + row, dy + row, m, kind, a)
        if colsum != NULL:
            for c in range(m):
                colsum[c] = colsum[c] + dy[row + c]


def dense_backward(const floating[:, ::1] x, const floating[:, ::1] w,
                   const floating[:, ::1] z, const floating[:, ::1] y,
                   floating[:, ::1] dy, floating[:, ::1] dw, floating[::1] db,
                   floating[:, ::1] dx, int kind, double a, int n_threads):
    """Gradients of a dense layer given dy = dL/dy; dy is overwritten by dL/dz.

    z (the pre-activation) may be None when the derivative follows from y alone.
    dx may be None (first layer: the input gradient is not needed); dw and db may be None
    (frozen layer: only the input gradient is needed).
    """
    cdef int n = x.shape[0], k = x.shape[1], m = w.shape[1], blk, ch, c0, c1
    cdef bint want_dx = dx is not None, want_dw = dw is not None
    cdef bint dx_by_rows = split_rows(n, k), dw_by_rows = split_rows(k, m)
    cdef int threads = gemm_threads(n, m, k, n_threads)    # both products take 2 n m k flops
    cdef int nb_dx = n_blocks(n if dx_by_rows else k, threads, MIN_SPLIT)
    cdef int nb_dw = n_blocks(k if dw_by_rows else m, threads, MIN_SPLIT)
    cdef int nb_db = n_blocks(m, threads, MIN_SPLIT)
    cdef Py_ssize_t n_chunks = chunk_count(n)
    cdef int nt = max(nb_db, max(nb_dx, nb_dw))
    cdef unsigned int csr
    cdef floating* dx_ptr = &dx[0, 0] if want_dx else NULL
    cdef const floating* z_ptr = &z[0, 0] if z is not None else NULL
    cdef floating* db_ptr = &db[0] if db is not None else NULL
    cdef floating* colsums = NULL
    if db_ptr != NULL:
        colsums = <floating*>malloc(n_chunks * m * sizeof(floating))
        if colsums == NULL:
            raise MemoryError("no memory for the bias gradient's partial sums")
    try:
        with nogil, parallel(num_threads=nt):
            csr = flush_denormals()
            # dZ = dY * f'(Z) and each chunk's column sums, by chunks of rows
            for ch in prange(n_chunks, schedule='static'):
                _dz_chunk(z_ptr, &y[0, 0], &dy[0, 0], colsums + ch * m if colsums != NULL else NULL,
                          ch * ROW_CHUNK, chunk_end(n, ch), m, kind, <floating>a)
            barrier()    # every chunk of dZ is ready before the products and db read it
            if colsums != NULL:
                for blk in prange(nb_db, schedule='static'):
                    c0 = column_start(m, nb_db, blk)
                    c1 = column_start(m, nb_db, blk + 1)
                    sum_chunks(colsums, db_ptr, n_chunks, m, c0, c1)
            if want_dx:
                for blk in prange(nb_dx, schedule='static'):
                    gemm_block(False, True, n, k, m, &dy[0, 0], m, &w[0, 0], m, dx_ptr, k,
                                dx_by_rows, blk, nb_dx)
            if want_dw:
                for blk in prange(nb_dw, schedule='static'):
                    gemm_block(True, False, k, m, n, &x[0, 0], k, &dy[0, 0], m, &dw[0, 0], m,
                                dw_by_rows, blk, nb_dw)
            restore_denormals(csr)
    finally:
        free(colsums)
