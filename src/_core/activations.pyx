"""Activation kernels over arrays: forward y = f(z), backward dz = dy * f'(z), softmax."""
from cython cimport floating
from cython.parallel cimport parallel, prange
from ._math cimport exp_shifted
from ._openmp cimport n_blocks, block_start, flush_denormals, restore_denormals

# name -> kernel code; also the list of activations the Python API accepts.
KINDS = {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4,
         "elu": 5, "softplus": 6, "swish": 7, "hard_tanh": 8}

cdef Py_ssize_t MIN_BLOCK = 4096


def input_needed(int kind, double a):
    """True when the backward pass needs the activation's input, not only its output."""
    return needs_input(kind, a)


def activation_forward(const floating[::1] z, floating[::1] y, int kind, double a, int n_threads):
    """y = f(z) elementwise over flat (contiguous) arrays; y may be z."""
    cdef Py_ssize_t n = z.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_BLOCK), blk
    cdef unsigned int csr
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        act_forward_n(&z[lo], &y[lo], hi - lo, kind, <floating>a)
        restore_denormals(csr)


def activation_backward(const floating[::1] y, const floating[::1] dy, floating[::1] dz,
                        const floating[::1] z, int kind, double a, int n_threads):
    """dz = dy * f'(z) elementwise (y = f(z) from the forward pass); dz may be dy.
    z may be None when needs_input(kind, a) is False."""
    cdef Py_ssize_t n = y.shape[0], lo, hi
    cdef int nb = n_blocks(n, n_threads, MIN_BLOCK), blk
    cdef const floating* z_ptr = &z[0] if z is not None else NULL
    cdef unsigned int csr
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        lo = block_start(n, nb, blk)
        hi = block_start(n, nb, blk + 1)
        csr = flush_denormals()
        act_backward_n(z_ptr + lo if z_ptr != NULL else NULL, &y[lo], &dy[lo], &dz[lo],
                       hi - lo, kind, <floating>a)
        restore_denormals(csr)


cdef inline void softmax_row(const floating* z, floating* p, Py_ssize_t k) noexcept nogil:
    """p = exp(z - max z) / sum exp(z - max z)."""
    cdef Py_ssize_t j
    cdef floating m
    cdef floating s = exp_shifted(z, p, k, &m)
    for j in range(k):
        p[j] = p[j] / s


def softmax(const floating[:, ::1] z, floating[:, ::1] p, int n_threads):
    """Row-wise softmax, max-shifted so that no exponent overflows."""
    cdef Py_ssize_t i, n = z.shape[0], k = z.shape[1]
    cdef int nt = n_blocks(n * k, n_threads, MIN_BLOCK)
    cdef unsigned int csr
    with nogil, parallel(num_threads=nt):
        csr = flush_denormals()
        for i in prange(n, schedule='static'):
            softmax_row(&z[i, 0], &p[i, 0], k)
        restore_denormals(csr)
