"""Whole-array helpers that would otherwise allocate temporaries in NumPy."""
from cython cimport floating
from cython.parallel cimport prange
from ._openmp cimport block_start
from libc.math cimport isfinite
from libc.string cimport memcpy


def all_finite(const floating[::1] x):
    """True when no element is NaN or infinite (no temporary array, unlike np.isfinite).

    x - x is 0 for finite x and NaN otherwise; the comparison vectorizes, and each block
    of 4096 elements is checked before the next is read."""
    cdef Py_ssize_t i, lo, n = x.shape[0]
    cdef bint bad = False
    with nogil:
        for lo in range(0, n, 4096):
            for i in range(lo, min(lo + 4096, n)):
                bad = bad | (not (x[i] - x[i] == 0))
            if bad:
                break
    return not bad


cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* address) noexcept nogil


cdef void _probe_block(floating* p, const floating* g, floating* m, floating* v,
                       Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, j, ahead = 2048 // sizeof(floating)
    cdef floating gi
    for i in range(lo, hi, 16):
        # software prefetch, as the fused Adam kernel does: the floor should be the fastest
        # pass over these bytes, not the one the hardware prefetcher alone manages
        prefetch(p + i + ahead)
        prefetch(g + i + ahead)
        prefetch(m + i + ahead)
        prefetch(v + i + ahead)
        for j in range(i, min(i + 16, hi)):
            gi = g[j]
            p[j] = p[j] + gi
            m[j] = m[j] + gi
            v[j] = v[j] + gi


def bandwidth_probe(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
                    int n_threads):
    """p += g, m += g, v += g in one parallel pass: the memory traffic of a fused Adam step
    (read p, g, m, v; write p, m, v) with no arithmetic to speak of. The benchmarks use it as
    the memory-bandwidth floor of an optimizer step."""
    cdef Py_ssize_t n = p.shape[0]
    cdef int blk
    for blk in prange(n_threads, nogil=True, schedule='static', num_threads=n_threads):
        _probe_block(&p[0], &g[0], &m[0], &v[0], block_start(n, n_threads, blk),
                     block_start(n, n_threads, blk + 1))


# Rows ahead whose first two cache lines gather_rows prefetches: a row's first misses wait on
# memory, and the hardware prefetcher follows a row only once it has seen them. 128 random rows
# of Fashion-MNIST's 60000 x 784 float32 images, 8 MiB written between batches (C harness):
# 93-99 us a batch without, 73-76 with 2 lines 4 rows ahead; 2 to 16 rows ahead gained about as
# much, 8 lines less (79-82), the whole row least (87-92).
cdef Py_ssize_t GATHER_AHEAD = 4


def gather_rows(const unsigned char[:, ::1] src, const long long[::1] rows, unsigned char[:, ::1] dst,
                int n_threads):
    """dst[i] = src[rows[i]]: a minibatch of rows copied into a reused buffer (row memcpy), the
    start of the row GATHER_AHEAD rows later prefetched. The rows are bytes: arrays of any
    dtype go as their uint8 views (labels and sample weights as n x 1 matrices), one
    signature and no dispatch on dtype (a NumPy or fused-type call costs 10-20 us where a
    training step has just left the caches)."""
    cdef Py_ssize_t i, n = rows.shape[0], width = src.shape[1]
    cdef int nt = n_threads if n * width >= 262144 else 1
    cdef const unsigned char* ahead
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        if i + GATHER_AHEAD < n:
            ahead = &src[rows[i + GATHER_AHEAD], 0]
            prefetch(ahead)
            prefetch(ahead + 64)
        memcpy(&dst[i, 0], &src[rows[i], 0], width)


def labels_in_range(const long long[::1] labels, long long n_classes):
    """True when every label is in [0, n_classes) (one pass, no temporaries)."""
    cdef Py_ssize_t i
    cdef bint bad = False
    with nogil:
        for i in range(labels.shape[0]):
            bad = bad | (labels[i] < 0) | (labels[i] >= n_classes)
    return not bad
