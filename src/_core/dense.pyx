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


cdef extern from "gemm_adam.h":
    int FNN_ADAM_MAX_K
    ctypedef struct fnn_adam_scalars:
        float b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale, clip, wd
    int gemm_tn_adam_f32 "fastnn_gemm_tn_adam_f32"(int m, int n, int k, const float* a, int lda,
                                                   const float* b, int ldb, float* p, float* mo, float* vo,
                                                   float* vmax, int ldp, const fnn_adam_scalars* h) noexcept nogil
    void adam_rows_f32 "fnn_adam_rows"(float* p, float* mo, float* vo, float* vmax, Py_ssize_t ldp,
                                       const float* g, Py_ssize_t ldg, int rows, int cols,
                                       const fnn_adam_scalars* h) noexcept nogil


ctypedef struct adam_update:   # a weight matrix's fused Adam update: its weights, state, scalars
    float* p
    float* m
    float* v
    float* vmax
    fnn_adam_scalars h

cdef bint _forward(const floating* x, const floating* w, const floating* b, floating* z, floating* y,
                   int n, int k, int m, int kind, floating a, int n_threads, bint check_x) noexcept nogil:
    """dense_forward on pointers (x n x k, w k x m, z and y n x m; z NULL: y in place)."""
    cdef bint by_rows = split_rows(n, m), done
    cdef int nb = n_blocks(n if by_rows else m, gemm_threads(n, m, k, n_threads), MIN_SPLIT), blk, lo, hi
    cdef unsigned int csr
    cdef floating* z_ptr = z if z != NULL else y
    cdef bint in_gemm = z_ptr == y and (kind == RELU or kind == IDENTITY)
    cdef int nonfinite
    cdef int unproven = 0   # blocks whose product was not seen finite
    for blk in prange(nb, schedule='static', num_threads=nb):
        csr = flush_denormals()
        nonfinite = 0
        if in_gemm:
            done = gemm_block(False, False, n, m, k, x, k, w, m, z_ptr, m, by_rows, blk, nb,
                              b, kind == RELU, &nonfinite if check_x else NULL)
        else:
            gemm_block(False, False, n, m, k, x, k, w, m, z_ptr, m, by_rows, blk, nb)
            done = False
        unproven += nonfinite != 0 or not done
        if not done:
            split_bounds(by_rows, n, m, blk, nb, &lo, &hi)
            if by_rows:
                bias_act_n(z_ptr + <Py_ssize_t>lo * m, y + <Py_ssize_t>lo * m, b, hi - lo, m, m, kind, a)
            else:
                bias_act_n(z_ptr + lo, y + lo, b + lo, n, hi - lo, m, kind, a)
        restore_denormals(csr)
    return check_x and unproven == 0


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
    cdef floating* z_ptr = &z[0, 0] if z is not None else NULL
    cdef bint proven
    with nogil:
        proven = _forward(&x[0, 0], &w[0, 0], &b[0], z_ptr, &y[0, 0], x.shape[0], x.shape[1], w.shape[1],
                          kind, <floating>a, n_threads, check_x)
    return proven


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


# The largest batch whose weight gradient dense_backward(adam=...) fuses with the update (0:
# never, this build has no AVX-512); beyond it, the gradient goes to dw and the update follows.
FUSED_ADAM_MAX_BATCH = FNN_ADAM_MAX_K


cdef void _dw_adam_block(int k, int m, int n, const float* x, const float* dz, float* dw,
                         const adam_update* u, bint by_rows, int part, int parts) noexcept nogil:
    """Block `part` of dW = X^T dZ (k x m, inner size n; split_bounds) and the Adam update of
    that block of W from it: fused (gemm_adam.h, dW never stored) where that applies, else
    dW into dw and the update after it."""
    cdef int lo, hi
    split_bounds(by_rows, k, m, part, parts, &lo, &hi)
    cdef Py_ssize_t off = <Py_ssize_t>lo * m if by_rows else lo
    cdef float* vmax = u.vmax + off if u.vmax != NULL else NULL
    if by_rows:
        if gemm_tn_adam_f32(hi - lo, m, n, x + lo, k, dz, m, u.p + off, u.m + off, u.v + off, vmax, m, &u.h):
            return
    elif gemm_tn_adam_f32(k, hi - lo, n, x, k, dz + lo, m, u.p + off, u.m + off, u.v + off, vmax, m, &u.h):
        return
    gemm_block(True, False, k, m, n, x, k, dz, m, dw, m, by_rows, part, parts)
    adam_rows_f32(u.p + off, u.m + off, u.v + off, vmax, m, dw + off, m, hi - lo if by_rows else k,
                  m if by_rows else hi - lo, &u.h)


cdef void _backward(const floating* x, const floating* w, const floating* z, const floating* y, floating* dy,
                    floating* dw, floating* db, floating* dx, floating* colsums, const adam_update* adam,
                    int n, int k, int m, int kind, floating a, int n_threads) noexcept nogil:
    """dense_backward on pointers (NULL for what is not given), colsums a workspace of
    chunk_count(n) * m elements (given when db is), adam float32 only."""
    cdef bint dx_by_rows = split_rows(n, k), dw_by_rows = split_rows(k, m)
    cdef int threads = gemm_threads(n, m, k, n_threads)    # both products take 2 n m k flops
    cdef int nb_dx = n_blocks(n if dx_by_rows else k, threads, MIN_SPLIT)
    cdef int nb_dw = n_blocks(k if dw_by_rows else m, threads, MIN_SPLIT)
    cdef int nb_db = n_blocks(m, threads, MIN_SPLIT)
    cdef Py_ssize_t n_chunks = chunk_count(n)
    cdef int nt = max(nb_db, max(nb_dx, nb_dw)), blk, ch, c0, c1
    cdef unsigned int csr
    with parallel(num_threads=nt):
        csr = flush_denormals()
        # dZ = dY * f'(Z) and each chunk's column sums, by chunks of rows
        for ch in prange(n_chunks, schedule='static'):
            _dz_chunk(z, y, dy, colsums + ch * m if db != NULL else NULL, ch * ROW_CHUNK, chunk_end(n, ch), m,
                      kind, a)
        barrier()    # every chunk of dZ is ready before the products and db read it
        if db != NULL:
            for blk in prange(nb_db, schedule='static'):
                c0 = column_start(m, nb_db, blk)
                c1 = column_start(m, nb_db, blk + 1)
                sum_chunks(colsums, db, n_chunks, m, c0, c1)
        if dx != NULL:
            for blk in prange(nb_dx, schedule='static'):
                gemm_block(False, True, n, k, m, dy, m, w, m, dx, k, dx_by_rows, blk, nb_dx)
        if dw != NULL:
            for blk in prange(nb_dw, schedule='static'):
                if adam != NULL:
                    _dw_adam_block(k, m, n, <const float*>x, <const float*>dy, <float*>dw, adam, dw_by_rows,
                                   blk, nb_dw)
                else:
                    gemm_block(True, False, k, m, n, x, k, dy, m, dw, m, dw_by_rows, blk, nb_dw)
        restore_denormals(csr)


cdef int _adam_target(adam_update* u, tuple adam, Py_ssize_t size) except -1:
    """u from (m, v, v_max or None, (b1, b2, eps, step_size, inv_bc2_sqrt, shrink, grad_scale,
    clip_value, wd)): the flat float32 Adam state of a weight matrix of `size` entries."""
    cdef float[::1] m_, v_, vmax_ = None
    m_, v_, vmax_, scalars = adam
    if m_.shape[0] != size or v_.shape[0] != size or (vmax_ is not None and vmax_.shape[0] != size):
        raise ValueError(f"adam's state arrays must be flat, of w's size {size}")
    u.m, u.v, u.vmax = &m_[0], &v_[0], &vmax_[0] if vmax_ is not None else NULL
    h = &u.h
    h.b1, h.b2, h.eps, h.step_size, h.inv_bc2_sqrt, h.shrink, h.scale, h.clip, h.wd = scalars
    return 0


def dense_backward(const floating[:, ::1] x, const floating[:, ::1] w,
                   const floating[:, ::1] z, const floating[:, ::1] y,
                   floating[:, ::1] dy, floating[:, ::1] dw, floating[::1] db,
                   floating[:, ::1] dx, int kind, double a, int n_threads, tuple adam=None):
    """Gradients of a dense layer given dy = dL/dy; dy is overwritten by dL/dz.

    z (the pre-activation) may be None when the derivative follows from y alone.
    dx may be None (first layer: the input gradient is not needed); dw and db may be None
    (frozen layer: only the input gradient is needed).
    adam (float32 only) = (w, m, v, v_max or None, (b1, b2, eps, step_size, inv_bc2_sqrt,
    shrink, grad_scale, clip_value, wd)): instead of leaving dW in dw, apply the Adam update
    of optim.pyx's adam_step (its scalars: adam_scalars) to w (the layer's weights, the same
    array as the w argument) and its flat state m, v, v_max from dW, computed after dx (which
    uses w before the update). dw's contents are then unspecified.
    """
    cdef int n = x.shape[0], k = x.shape[1], m = w.shape[1]
    cdef adam_update u
    cdef float[:, ::1] adam_w
    if adam is not None and floating is not float:
        raise TypeError("the fused Adam update is float32 only")
    if adam is not None:
        adam_w = adam[0]
        if <const void*>&adam_w[0, 0] != <const void*>&w[0, 0]:
            raise ValueError("adam's first array must be the layer's weights w")
        u.p = &adam_w[0, 0]
        _adam_target(&u, adam[1:], <Py_ssize_t>k * m)
    cdef floating* colsums = NULL
    if db is not None:
        colsums = <floating*>malloc(chunk_count(n) * m * sizeof(floating))
        if colsums == NULL:
            raise MemoryError("no memory for the bias gradient's partial sums")
    cdef const floating* z_ptr = &z[0, 0] if z is not None else NULL
    cdef floating* dw_ptr = &dw[0, 0] if dw is not None else NULL
    cdef floating* db_ptr = &db[0] if db is not None else NULL
    cdef floating* dx_ptr = &dx[0, 0] if dx is not None else NULL
    try:
        with nogil:
            _backward(&x[0, 0], &w[0, 0], z_ptr, &y[0, 0], &dy[0, 0], dw_ptr, db_ptr, dx_ptr, colsums,
                      &u if adam is not None else NULL, n, k, m, kind, <floating>a, n_threads)
    finally:
        free(colsums)
