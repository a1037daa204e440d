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
from libc.stdlib cimport calloc, malloc, free
from ._blas cimport MIN_SPLIT, split_rows, split_bounds, gemm_block, gemm_threads
from ._openmp cimport (n_blocks, column_start, flush_denormals, restore_denormals, barrier,
                      ROW_CHUNK, chunk_count, chunk_end, sum_chunks)
from .activations cimport bias_act_n, act_backward_n, RELU, IDENTITY
from .losses cimport int64, softmax_ce, weight_total
from .arrays cimport gather_bytes, in_range
from libc.math cimport isfinite


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


# Fewest weights whose gradient's product is fused with their update (gemm_adam.h): below, the
# product's buffers cost more than the gradient's trip through memory saves (with every update
# of a 64-128-128-10 network at batch 64 in its backward pass: 3.4-4.8% of the step fused,
# 0.1% faster than no update there when only the products of 2^16 weights or more are).
cdef Py_ssize_t FUSED_PRODUCT_MIN = 1 << 16


cdef void _dw_adam_block(int k, int m, int n, const float* x, const float* dz, float* dw,
                         const adam_update* u, bint by_rows, int part, int parts) noexcept nogil:
    """Block `part` of dW = X^T dZ (k x m, inner size n; split_bounds) and the Adam update of
    that block of W from it: fused (gemm_adam.h, dW never stored) where that applies and W has
    FUSED_PRODUCT_MIN entries or more, else dW into dw and the update after it."""
    cdef int lo, hi
    split_bounds(by_rows, k, m, part, parts, &lo, &hi)
    cdef Py_ssize_t off = <Py_ssize_t>lo * m if by_rows else lo
    cdef float* vmax = u.vmax + off if u.vmax != NULL else NULL
    cdef bint large = <Py_ssize_t>k * m >= FUSED_PRODUCT_MIN
    if large and by_rows:
        if gemm_tn_adam_f32(hi - lo, m, n, x + lo, k, dz, m, u.p + off, u.m + off, u.v + off, vmax, m, &u.h):
            return
    elif large and gemm_tn_adam_f32(k, hi - lo, n, x, k, dz + lo, m, u.p + off, u.m + off, u.v + off, vmax, m,
                                    &u.h):
        return
    gemm_block(True, False, k, m, n, x, k, dz, m, dw, m, by_rows, part, parts)
    adam_rows_f32(u.p + off, u.m + off, u.v + off, vmax, m, dw + off, m, hi - lo if by_rows else k,
                  m if by_rows else hi - lo, &u.h)


cdef void _backward(const floating* x, const floating* w, const floating* z, const floating* y, floating* dy,
                    floating* dw, floating* db, floating* dx, floating* colsums, const adam_update* adam,
                    const adam_update* adam_b, int n, int k, int m, int kind, floating a,
                    int n_threads) noexcept nogil:
    """dense_backward on pointers (NULL for what is not given), colsums a workspace of
    chunk_count(n) * m elements (given when db is); adam and adam_b (float32 only): the
    updates of w and of b (its p) from their gradients, applied as each block of them is
    computed."""
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
                if adam_b != NULL and c1 > c0:
                    adam_rows_f32(adam_b.p + c0, adam_b.m + c0, adam_b.v + c0,
                                  adam_b.vmax + c0 if adam_b.vmax != NULL else NULL, m, <const float*>db + c0,
                                  m, 1, c1 - c0, &adam_b.h)
        if dx != NULL:
            for blk in prange(nb_dx, schedule='static'):
                gemm_block(False, True, n, k, m, dy, m, w, m, dx, k, dx_by_rows, blk, nb_dx)
            if adam != NULL:
                barrier()    # every block of dx has read w before any block of w is updated
        if dw != NULL:
            for blk in prange(nb_dw, schedule='static'):
                if adam != NULL:
                    _dw_adam_block(k, m, n, <const float*>x, <const float*>dy, <float*>dw, adam, dw_by_rows,
                                   blk, nb_dw)
                else:
                    gemm_block(True, False, k, m, n, x, k, dy, m, dw, m, dw_by_rows, blk, nb_dw)
        restore_denormals(csr)


cdef int _adam_state(adam_update* u, m, v, v_max, Py_ssize_t size, str what) except -1:
    """u's state from the flat float32 arrays m, v and v_max (or None) of `size` entries."""
    cdef float[::1] m_ = m, v_ = v, vmax_ = v_max
    if m_.shape[0] != size or v_.shape[0] != size or (vmax_ is not None and vmax_.shape[0] != size):
        raise ValueError(f"{what}'s state arrays must be flat, of {size} entries")
    u.m, u.v, u.vmax = &m_[0], &v_[0], &vmax_[0] if vmax_ is not None else NULL
    return 0


cdef inline void _adam_scalars_at(adam_update* u, const double* r) noexcept nogil:
    """u's scalars from the 9 values at r: b1, b2, eps, step_size, inv_bc2_sqrt, shrink,
    grad_scale, clip_value, wd."""
    h = &u.h
    h.b1, h.b2, h.eps, h.step_size, h.inv_bc2_sqrt = r[0], r[1], r[2], r[3], r[4]
    h.shrink, h.scale, h.clip, h.wd = r[5], r[6], r[7], r[8]


cdef int _adam_scalars(adam_update* u, scalars) except -1:
    """_adam_scalars_at from a tuple of those 9 values."""
    cdef double r[9]
    cdef int i
    if len(scalars) != 9:
        raise ValueError(f"Adam's scalars are 9 values, not {len(scalars)}")
    for i in range(9):
        r[i] = scalars[i]
    _adam_scalars_at(u, r)
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
        _adam_state(&u, adam[1], adam[2], adam[3], <Py_ssize_t>k * m, "w")
        _adam_scalars(&u, adam[4])
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
                      &u if adam is not None else NULL, NULL, n, k, m, kind, <floating>a, n_threads)
    finally:
        free(colsums)


cdef Py_ssize_t _argmax_hits(const floating* z, Py_ssize_t n, Py_ssize_t k, const int64* labels) noexcept nogil:
    """The rows i of z (n x k) whose argmax is labels[i]: the first largest element, a NaN
    counting as larger than any number (numpy.argmax's rule)."""
    cdef Py_ssize_t i, j, best, hits = 0
    cdef const floating* row
    for i in range(n):
        row = z + i * k
        best = 0
        for j in range(1, k):
            if row[best] == row[best] and not (row[j] <= row[best]):   # row[j] larger, or NaN
                best = j
        hits += best == labels[i]
    return hits


ctypedef struct stack_layer:    # one layer of a DenseStack: its arrays' data, NULL where absent
    void* w
    void* b
    void* z          # NULL: the pre-activation is not kept
    void* y
    void* dw         # dw, db NULL: a frozen layer
    void* db
    void* dx         # NULL: its input gradient is not needed
    int k, m, kind
    double a
    int w_group, b_group       # which of a step's Adam scalars update w and b (-1: not here)
    adam_update w_adam, b_adam


cdef bint _stack_forward(const floating* x, stack_layer* layers, int depth, int n, int n_threads,
                         bint check_x) noexcept nogil:
    cdef bint proven = False, layer_proven
    cdef stack_layer* L
    cdef int i
    for i in range(depth):
        L = &layers[i]
        layer_proven = _forward(x if i == 0 else <const floating*>layers[i - 1].y, <const floating*>L.w,
                                <const floating*>L.b, <floating*>L.z, <floating*>L.y, n, L.k, L.m, L.kind,
                                <floating>L.a, n_threads, check_x and i == 0)
        if i == 0:
            proven = layer_proven
    return proven


cdef void _stack_backward(const floating* x, floating* dy, stack_layer* layers, int first, int depth, int n,
                          int n_threads, floating* colsums, bint update) noexcept nogil:
    cdef stack_layer* L
    cdef int i
    for i in range(depth - 1, first - 1, -1):
        L = &layers[i]
        _backward(x if i == 0 else <const floating*>layers[i - 1].y, <const floating*>L.w, <const floating*>L.z,
                  <const floating*>L.y, dy, <floating*>L.dw, <floating*>L.db, <floating*>L.dx, colsums,
                  &L.w_adam if update and L.w_group >= 0 else NULL,
                  &L.b_adam if update and L.b_group >= 0 else NULL, n, L.k, L.m, L.kind, <floating>L.a, n_threads)
        dy = <floating*>L.dx


cdef void* _data(a, shape, dtype, str what) except NULL:
    """The data of `a`, a writeable C-contiguous array of this shape and dtype."""
    if (type(a).__name__ != "ndarray" or a.shape != shape or a.dtype != dtype or not a.flags.c_contiguous
            or not a.flags.writeable):
        raise ValueError(f"{what} must be a writeable C-contiguous {dtype} array of shape {shape}")
    return <void*><size_t>a.ctypes.data


cdef int _bind_update(adam_update* u, int* group, void* p, state, Py_ssize_t size, bint single,
                      str what) except -1:
    """A parameter's Adam state (m, v, v_max or None, group) in u, or group -1 (state None)."""
    group[0] = -1
    if state is None:
        return 0
    if not single:
        raise ValueError(f"{what}: updates in the backward pass are float32 only")
    m, v, v_max, g = state
    _adam_state(u, m, v, v_max, size, what)
    u.p = <float*>p
    group[0] = g
    return 0


cdef class DenseStack:
    """Dense layers applied in turn (each one's y the next one's x) to batches of n rows, each
    training pass over all of them one call: forward, then backward (after the loss has
    written dL/dy of the last layer), the layers' own kernels (dense_forward, dense_backward)
    run one after the other without returning to Python. The backward pass may also apply
    Adam's update to weights and biases from their gradients as it computes them.

    layers: per layer (w, b, z or None, y, dw, db, dx, kind, a, w_state, b_state), float32 or
    float64 arrays (w k x m, b and db m, z and y n x m, dx n x k); z None where the
    activation's derivative follows from y, dw and db None for a frozen layer, dx None where
    the input gradient is not needed; w_state, b_state None or (float32) the parameter's
    flat Adam state (m, v, v_max or None, group), updated by backward(..., scalars) with
    scalars[group]. first: the first layer whose backward pass runs (the first trainable)."""
    cdef stack_layer* layers
    cdef int depth, n, first, groups
    cdef bint single
    cdef void* colsums       # dense_backward's workspace for db, sized for the widest layer
    cdef void* loss_grad     # softmax_ce_backward's dL/d(output) and per-row losses
    cdef double* row_loss
    cdef list arrays         # what the pointers point into
    cdef object x                  # the input of the last forward pass, and its data
    cdef const void* x_data
    cdef bint ready                # a forward pass has run (x set)
    cdef readonly object output    # the last layer's y

    def __cinit__(self, list layers, int n, int first):
        if not layers or n < 1 or not 0 <= first <= len(layers):
            raise ValueError("a DenseStack needs layers, n >= 1 and 0 <= first <= len(layers)")
        self.depth, self.n, self.first = len(layers), n, first
        dtype = layers[0][0].dtype
        if dtype not in ("float32", "float64"):
            raise ValueError(f"the layers' arrays must be float32 or float64, not {dtype}")
        self.single = dtype == "float32"
        self.layers = <stack_layer*>calloc(self.depth, sizeof(stack_layer))
        if self.layers == NULL:
            raise MemoryError("no memory for a DenseStack")
        self.arrays = []
        cdef int i, widest = 0
        cdef stack_layer* L
        for i, (w, b, z, y, dw, db, dx, kind, a, w_state, b_state) in enumerate(layers):
            L = &self.layers[i]
            L.k, L.m = w.shape
            if i and L.k != self.layers[i - 1].m:
                raise ValueError(f"layer {i} takes {L.k} inputs but layer {i - 1} gives {self.layers[i - 1].m}")
            L.kind, L.a = kind, a
            L.w = _data(w, (L.k, L.m), dtype, f"layer {i}'s w")
            L.b = _data(b, (L.m,), dtype, f"layer {i}'s b")
            L.y = _data(y, (n, L.m), dtype, f"layer {i}'s y")
            L.z = _data(z, (n, L.m), dtype, f"layer {i}'s z") if z is not None else NULL
            L.dw = _data(dw, (L.k, L.m), dtype, f"layer {i}'s dw") if dw is not None else NULL
            L.db = _data(db, (L.m,), dtype, f"layer {i}'s db") if db is not None else NULL
            L.dx = _data(dx, (n, L.k), dtype, f"layer {i}'s dx") if dx is not None else NULL
            if (L.dw == NULL) != (L.db == NULL) or (i > first and L.dx == NULL):
                raise ValueError(f"layer {i} needs dw and db together, and dx (it is after the first)")
            if L.dw == NULL and (w_state is not None or b_state is not None):
                raise ValueError(f"layer {i} is frozen (no dw, db): it takes no update")
            _bind_update(&L.w_adam, &L.w_group, L.w, w_state, <Py_ssize_t>L.k * L.m, self.single, f"layer {i}'s w")
            _bind_update(&L.b_adam, &L.b_group, L.b, b_state, L.m, self.single, f"layer {i}'s b")
            self.groups = max(self.groups, L.w_group + 1, L.b_group + 1)
            widest = max(widest, L.m)
            self.arrays.append((w, b, z, y, dw, db, dx, w_state, b_state))
        self.output = layers[self.depth - 1][3]
        cdef size_t item = sizeof(float) if self.single else sizeof(double)
        self.colsums = malloc(chunk_count(n) * widest * item)
        self.loss_grad = malloc(n * self.layers[self.depth - 1].m * item)
        self.row_loss = <double*>malloc(n * sizeof(double))
        if self.colsums == NULL or self.loss_grad == NULL or self.row_loss == NULL:
            raise MemoryError("no memory for a DenseStack")

    def __dealloc__(self):
        free(self.layers)
        free(self.colsums)
        free(self.loss_grad)
        free(self.row_loss)

    cdef const void* _matrix(self, a, int cols, str what) except NULL:
        """The data of `a`: n x cols, C-contiguous, of this stack's dtype."""
        cdef const float[:, ::1] a32
        cdef const double[:, ::1] a64
        if self.single:
            a32 = a
            if a32.shape[0] == self.n and a32.shape[1] == cols:
                return &a32[0, 0]
        else:
            a64 = a
            if a64.shape[0] == self.n and a64.shape[1] == cols:
                return &a64[0, 0]
        raise ValueError(f"{what} must have shape ({self.n}, {cols})")

    cdef const void* _vector(self, a, str what) except NULL:
        """The data of `a`: n entries, contiguous, of this stack's dtype."""
        cdef const float[::1] a32
        cdef const double[::1] a64
        if self.single:
            a32 = a
            if a32.shape[0] == self.n:
                return &a32[0]
        else:
            a64 = a
            if a64.shape[0] == self.n:
                return &a64[0]
        raise ValueError(f"{what} must have {self.n} entries")

    cdef bint _forward_all(self, int n_threads, bint check_x) noexcept nogil:
        if self.single:
            return _stack_forward(<const float*>self.x_data, self.layers, self.depth, self.n, n_threads, check_x)
        return _stack_forward(<const double*>self.x_data, self.layers, self.depth, self.n, n_threads, check_x)

    cdef void _backward_all(self, void* dy, int n_threads, bint update) noexcept nogil:
        if self.single:
            _stack_backward(<const float*>self.x_data, <float*>dy, self.layers, self.first, self.depth, self.n,
                            n_threads, <float*>self.colsums, update)
        else:
            _stack_backward(<const double*>self.x_data, <double*>dy, self.layers, self.first, self.depth, self.n,
                            n_threads, <double*>self.colsums, update)

    cdef double _softmax_ce(self, const int64* labels, const void* weights, double label_smoothing,
                            int n_threads) noexcept nogil:
        cdef stack_layer* L = &self.layers[self.depth - 1]
        if self.single:
            return softmax_ce(<const float*>L.y, self.n, L.m, labels, NULL, <const float*>weights,
                              weight_total(<const float*>weights, self.n), label_smoothing,
                              <float*>self.loss_grad, self.row_loss, n_threads)
        return softmax_ce(<const double*>L.y, self.n, L.m, labels, NULL, <const double*>weights,
                          weight_total(<const double*>weights, self.n), label_smoothing,
                          <double*>self.loss_grad, self.row_loss, n_threads)

    def forward(self, x, int n_threads, bint check_x=False):
        """Every layer's forward pass from x (n rows, this stack's dtype); the output is in
        self.output. Returns as dense_forward does for the first layer: True when check_x
        asked and its product proved x finite."""
        cdef bint proven
        self.ready = False
        self.x_data = self._matrix(x, self.layers[0].k, "x")
        self.x = x
        with nogil:
            proven = self._forward_all(n_threads, check_x)
        self.ready = True
        return proven

    cdef int _set_scalars(self, scalars) except -1:
        """Each updated parameter's Adam scalars from scalars[its group]; 1 with scalars, else 0."""
        cdef stack_layer* L
        cdef int i
        if not self.ready:
            raise ValueError("backward needs a forward pass first")
        if scalars is None:
            return 0
        if len(scalars) < self.groups:
            raise ValueError(f"scalars must hold one tuple per group ({self.groups})")
        for i in range(self.depth):
            L = &self.layers[i]
            if L.w_group >= 0:
                _adam_scalars(&L.w_adam, scalars[L.w_group])
            if L.b_group >= 0:
                _adam_scalars(&L.b_adam, scalars[L.b_group])
        return 1

    cdef void _set_step_scalars(self, const double* groups) noexcept nogil:
        """_set_scalars from the values of group g at groups + 9 g."""
        cdef stack_layer* L
        cdef int i
        for i in range(self.depth):
            L = &self.layers[i]
            if L.w_group >= 0:
                _adam_scalars_at(&L.w_adam, groups + 9 * L.w_group)
            if L.b_group >= 0:
                _adam_scalars_at(&L.b_adam, groups + 9 * L.b_group)

    def backward(self, dy, int n_threads, scalars=None):
        """The backward pass of every layer from `first` on, from dy = dL/d(output) (overwritten),
        after forward. With scalars (per group, Adam's (b1, b2, eps, step_size, inv_bc2_sqrt,
        shrink, grad_scale, clip_value, wd): optim.pyx's adam_scalars), the parameters given a
        state are updated from their gradients instead of leaving them in dw and db."""
        cdef bint update = self._set_scalars(scalars)
        cdef void* dy_data = <void*>self._matrix(dy, self.layers[self.depth - 1].m, "dy")
        if not dy.flags.writeable:
            raise ValueError("dy must be writeable (it is overwritten by dL/dz)")
        with nogil:
            self._backward_all(dy_data, n_threads, update)

    cdef double _loss_step(self, const int64* labels, const void* weights, double label_smoothing, int n_threads,
                           bint update, Py_ssize_t* hits) noexcept nogil:
        """After the forward pass: the rows predicted right into hits, the softmax cross-entropy,
        then the backward pass from its gradient (with updates only if the loss is finite)."""
        cdef stack_layer* L = &self.layers[self.depth - 1]
        if self.single:
            hits[0] = _argmax_hits(<const float*>L.y, self.n, L.m, labels)
        else:
            hits[0] = _argmax_hits(<const double*>L.y, self.n, L.m, labels)
        cdef double loss = self._softmax_ce(labels, weights, label_smoothing, n_threads)
        if isfinite(loss) or not update:
            self._backward_all(self.loss_grad, n_threads, update)
        return loss

    def softmax_ce_backward(self, labels, sample_weight, double label_smoothing, int n_threads, scalars=None):
        """After forward: the softmax cross-entropy of the output (logits) against labels (int64,
        in [0, width of the output)), with sample weights (or None) and label smoothing, as
        losses.softmax_cross_entropy computes it; then the backward pass from its gradient (as
        backward), but with scalars only if the loss is finite (a diverged step changes nothing).
        Returns (the loss, the rows whose largest logit is at their label: Loss.correct's count,
        without its NumPy calls, 40-50 us a step where the step has just left the caches)."""
        cdef const int64[::1] lab = labels
        cdef bint update = self._set_scalars(scalars)
        cdef const void* weights = self._vector(sample_weight, "sample_weight") if sample_weight is not None else NULL
        cdef double loss
        cdef Py_ssize_t hits
        if lab.shape[0] != self.n:
            raise ValueError(f"labels must have {self.n} entries")
        with nogil:
            loss = self._loss_step(&lab[0], weights, label_smoothing, n_threads, update, &hits)
        return loss, hits

    def train_batches(self, sources, batch, const long long[::1] order, Py_ssize_t start, scalars,
                      double label_smoothing, int n_threads):
        """len(scalars) training steps, each what forward and then softmax_ce_backward with its
        scalars (scalars[s, group]: the 9 values of a group's tuple) compute, on consecutive
        batches: step s on the rows order[start + s n : start + (s + 1) n] of `sources` (X,
        labels, sample weights or None, as gather_rows takes them), gathered into `batch` (the
        same three's buffers of n rows: X this stack's dtype, labels int64). One call for the
        steps instead of Python between them (about 100 us of it a step, interpreted where the
        step has just left the caches). Stops after a step whose loss is not finite, which
        changes nothing. Returns (the steps taken, the sum of their losses, the rows they
        predicted right, the last step's loss)."""
        cdef const double[:, :, ::1] sc = scalars
        x_src, label_src, weight_src = sources
        x, labels, weights = batch
        cdef const unsigned char[:, ::1] xs = x_src, ls = label_src, ws = weight_src
        cdef int64[::1] lab = labels
        cdef Py_ssize_t steps = sc.shape[0], n = self.n, s, step_hits, hits = 0, taken = 0
        cdef Py_ssize_t w_bytes = sizeof(float) if self.single else sizeof(double)   # one element, a row's weight
        cdef Py_ssize_t x_bytes = self.layers[0].k * w_bytes
        cdef double loss = 0, total = 0
        cdef const long long* rows
        if self.groups == 0 or sc.shape[1] < self.groups or sc.shape[2] != 9:
            raise ValueError(f"scalars must be (steps, {self.groups} groups, 9) and the stack must update")
        if start < 0 or start + steps * n > order.shape[0]:
            raise ValueError(f"the steps' batches must lie in order (start {start}, {steps} x {n} rows)")
        if xs.shape[1] != x_bytes or ls.shape[1] != sizeof(int64) or (ws is None) != (weights is None) or (
                ws is not None and ws.shape[1] != w_bytes) or ls.shape[0] != xs.shape[0] or (
                ws is not None and ws.shape[0] != xs.shape[0]):
            raise ValueError("sources must be the uint8 rows of X, the labels and the weights, as many of each")
        if lab.shape[0] != n or not x.flags.writeable or (weights is not None and not weights.flags.writeable):
            raise ValueError(f"batch must hold writeable buffers of {n} rows")
        if steps == 0:
            return 0, 0.0, 0, 0.0
        cdef unsigned char* x_data = <unsigned char*>self._matrix(x, self.layers[0].k, "batch's x")
        cdef const void* w_data = self._vector(weights, "batch's weights") if weights is not None else NULL
        if not in_range(&order[start], steps * n, xs.shape[0]):
            raise IndexError(f"order's rows must lie in [0, {xs.shape[0]})")
        self.ready = False
        self.x, self.x_data = x, x_data
        with nogil:
            for s in range(steps):
                rows = &order[start + s * n]
                gather_bytes(&xs[0, 0], x_bytes, rows, n, x_data, n_threads)
                gather_bytes(&ls[0, 0], sizeof(int64), rows, n, <unsigned char*>&lab[0], n_threads)
                if w_data != NULL:
                    gather_bytes(&ws[0, 0], w_bytes, rows, n, <unsigned char*>w_data, n_threads)
                self._set_step_scalars(&sc[s, 0, 0])
                self._forward_all(n_threads, False)
                loss = self._loss_step(&lab[0], w_data, label_smoothing, n_threads, True, &step_hits)
                if not isfinite(loss):
                    break
                total += loss
                hits += step_hits
                taken += 1
        self.ready = True
        return taken, total, hits, loss
