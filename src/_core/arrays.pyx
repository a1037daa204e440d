"""Whole-array helpers that would otherwise allocate temporaries in NumPy."""
from cython cimport floating
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
