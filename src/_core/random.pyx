"""Counter-based random numbers: element i of draw (seed, stream, step) is a pure function
of those four integers (SplitMix64 finalizer), so masks do not depend on the thread count
or on the order in which threads run.

Used for dropout masks and Gaussian input noise.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, log, cos, ceil, M_PI
from libc.stdint cimport uint64_t, uint8_t
from ._openmp cimport n_blocks, block_start

cdef Py_ssize_t MIN_ELEMENTS = 16384


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """SplitMix64's finalizer (Steele, Lea & Flood 2014): a bijective 64-bit avalanche."""
    z = (z ^ (z >> 30)) * <uint64_t>0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef inline uint64_t _key(uint64_t seed, uint64_t stream, uint64_t step) noexcept nogil:
    return _mix(seed ^ _mix(stream ^ _mix(step + <uint64_t>0x9e3779b97f4a7c15ULL)))


cdef inline double _uniform(uint64_t key, uint64_t i) noexcept nogil:
    """Uniform in [0, 1) with 53 random bits."""
    return (_mix(key + i * <uint64_t>0x9e3779b97f4a7c15ULL) >> 11) * (1.0 / 9007199254740992.0)


def uniform(uint64_t seed, uint64_t stream, uint64_t step, double[::1] out, int n_threads):
    """out[i] = U[0, 1) number i of the draw (seed, stream, step)."""
    cdef Py_ssize_t i, n = out.shape[0]
    cdef uint64_t key = _key(seed, stream, step)
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        out[i] = _uniform(key, i)


cdef void _dropout_block(const floating* x, floating* y, uint8_t* mask, Py_ssize_t lo, Py_ssize_t hi,
                         uint64_t key, uint64_t threshold, floating scale) noexcept nogil:
    """Element i is kept when its 53-bit uniform integer is >= threshold = ceil(p 2^53),
    i.e. with probability 1 - p; compared as integers, so the loop vectorizes."""
    cdef Py_ssize_t i
    cdef uint8_t keep
    for i in range(lo, hi):
        keep = (_mix(key + <uint64_t>i * <uint64_t>0x9e3779b97f4a7c15ULL) >> 11) >= threshold
        mask[i] = keep
        y[i] = x[i] * scale if keep else 0


def dropout_forward(const floating[::1] x, floating[::1] y, uint8_t[::1] mask, double p,
                    uint64_t seed, uint64_t stream, uint64_t step, int n_threads):
    """Inverted dropout: keep x[i] with probability 1 - p (when u_i >= p) and scale it by
    1 / (1 - p); mask[i] = 1 where kept."""
    cdef Py_ssize_t n = x.shape[0]
    cdef uint64_t key = _key(seed, stream, step)
    cdef uint64_t threshold = <uint64_t>ceil(p * 9007199254740992.0)
    cdef floating scale = <floating>(1.0 / (1.0 - p))
    cdef int nb = n_blocks(n, n_threads, MIN_ELEMENTS), blk
    for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
        _dropout_block(&x[0], &y[0], &mask[0], block_start(n, nb, blk), block_start(n, nb, blk + 1),
                       key, threshold, scale)


def dropout_backward(const floating[::1] dy, const uint8_t[::1] mask, floating[::1] dx,
                     double p, int n_threads):
    """dx = dy * mask / (1 - p); dx may be dy."""
    cdef Py_ssize_t i, n = dy.shape[0]
    cdef floating scale = <floating>(1.0 / (1.0 - p))
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        dx[i] = dy[i] * scale if mask[i] else 0


def gaussian_noise(const floating[::1] x, floating[::1] y, double std,
                   uint64_t seed, uint64_t stream, uint64_t step, int n_threads):
    """y = x + std * N(0, 1), the normal from two uniforms by Box-Muller."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef uint64_t key = _key(seed, stream, step)
    cdef double u1, u2
    cdef int nt = n_blocks(n, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        u1 = 1.0 - _uniform(key, 2 * i)          # in (0, 1]: log is finite
        u2 = _uniform(key, 2 * i + 1)
        y[i] = x[i] + <floating>(std * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2))
