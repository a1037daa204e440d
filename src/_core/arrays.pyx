"""Whole-array helpers that would otherwise allocate temporaries in NumPy."""
from cython cimport floating
from cython.parallel cimport prange
from ._openmp cimport block_start
from libc.math cimport isfinite


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


def gather_rows(const unsigned char[:, ::1] src, const long long[::1] rows, unsigned char[:, ::1] dst,
                int n_threads):
    """dst[i] = src[rows[i]]: a minibatch of rows copied into a reused buffer (gather_bytes).
    The rows are bytes: arrays of any dtype go as their uint8 views (labels and sample weights
    as n x 1 matrices), one signature and no dispatch on dtype (a NumPy or fused-type call
    costs 10-20 us where a training step has just left the caches)."""
    if dst.shape[0] != rows.shape[0] or dst.shape[1] != src.shape[1]:
        raise ValueError(f"dst must have shape ({rows.shape[0]}, {src.shape[1]})")
    if rows.shape[0] == 0:
        return
    if not in_range(&rows[0], rows.shape[0], src.shape[0]):
        raise IndexError(f"rows must lie in [0, {src.shape[0]})")
    with nogil:
        gather_bytes(&src[0, 0], src.shape[1], &rows[0], rows.shape[0], &dst[0, 0], n_threads)


def labels_in_range(const long long[::1] labels, long long n_classes):
    """True when every label is in [0, n_classes) (one pass, no temporaries)."""
    cdef bint inside = True
    if labels.shape[0]:
        with nogil:
            inside = in_range(&labels[0], labels.shape[0], n_classes)
    return inside
