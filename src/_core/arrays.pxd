# The minibatch gather, shared with dense.pyx's DenseStack (whose train_batches gathers its
# batches itself).
from cython.parallel cimport prange
from libc.string cimport memcpy

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* address) noexcept nogil

cdef enum:
    # Rows ahead whose first two cache lines gather_bytes prefetches: a row's first misses wait
    # on memory, and the hardware prefetcher follows a row only once it has seen them. 128
    # random rows of Fashion-MNIST's 60000 x 784 float32 images, 8 MiB written between batches
    # (C harness): 93-99 us a batch without, 73-76 with 2 lines 4 rows ahead; 2 to 16 rows
    # ahead gained about as much, 8 lines less (79-82), the whole row least (87-92).
    GATHER_AHEAD = 4


cdef inline void gather_bytes(const unsigned char* src, Py_ssize_t width, const long long* rows, Py_ssize_t n,
                              unsigned char* dst, int n_threads) noexcept nogil:
    """Row i of dst = row rows[i] of src, rows of `width` bytes (row memcpy), the start of the
    row GATHER_AHEAD rows later prefetched; n_threads share the rows of a large batch."""
    cdef Py_ssize_t i
    cdef int nt = n_threads if n * width >= 262144 else 1
    cdef const unsigned char* ahead
    for i in prange(n, schedule='static', num_threads=nt):
        if i + GATHER_AHEAD < n:
            ahead = src + rows[i + GATHER_AHEAD] * width
            prefetch(ahead)
            prefetch(ahead + 64)
        memcpy(dst + i * width, src + rows[i] * width, width)


cdef inline bint in_range(const long long* a, Py_ssize_t n, long long stop) noexcept nogil:
    """Whether every a[i] (i < n) lies in [0, stop)."""
    cdef Py_ssize_t i
    cdef bint bad = False
    for i in range(n):
        bad = bad | (a[i] < 0) | (a[i] >= stop)
    return not bad
