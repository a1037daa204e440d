"""Whole-array helpers that would otherwise allocate temporaries in NumPy."""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport isfinite


def all_finite(const floating[::1] x):
    """True when no element is NaN or infinite (no temporary array, unlike np.isfinite)."""
    cdef Py_ssize_t i
    cdef bint ok = True
    with nogil:
        for i in range(x.shape[0]):
            if not isfinite(x[i]):
                ok = False
                break
    return ok


def bandwidth_probe(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
                    int n_threads):
    """p += g, m += g, v += g in one parallel pass: the memory traffic of a fused Adam step
    (read p, g, m, v; write p, m, v) with no arithmetic to speak of. The benchmarks use it as
    the memory-bandwidth floor of an optimizer step."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating gi
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        gi = g[i]
        p[i] = p[i] + gi
        m[i] = m[i] + gi
        v[i] = v[i] + gi
