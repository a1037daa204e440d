"""Facts about the compiled core's threading, for tests and `fastnn.threads`."""
from cython.parallel cimport prange
from ._openmp cimport FASTNN_HAVE_OPENMP, omp_get_thread_num, omp_get_max_threads


def openmp_enabled():
    """True when the core was compiled with OpenMP."""
    return bool(FASTNN_HAVE_OPENMP)


def max_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS)."""
    return omp_get_max_threads()


def threads_used(int n_threads):
    """Run a prange over n_threads iterations and count the distinct threads that ran it."""
    cdef int i, count = 0
    cdef int ids[256]
    if n_threads < 1 or n_threads > 256:
        raise ValueError(f"n_threads must be in [1, 256], got {n_threads}")
    for i in range(n_threads):
        ids[i] = -1
    for i in prange(n_threads, nogil=True, schedule='static', num_threads=n_threads, chunksize=1):
        ids[i] = omp_get_thread_num()
    return len({ids[i] for i in range(n_threads)})
