# Thread helpers that compile with or without OpenMP (without it, one thread).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTNN_HAVE_OPENMP 1
    #else
    #define FASTNN_HAVE_OPENMP 0
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    const bint FASTNN_HAVE_OPENMP
    int omp_get_thread_num() noexcept nogil
    int omp_get_max_threads() noexcept nogil


cdef inline int n_blocks(Py_ssize_t n_items, int n_threads, Py_ssize_t min_items) noexcept nogil:
    """Number of equal blocks to split n_items over: at most n_threads, each >= min_items."""
    cdef Py_ssize_t blocks = n_items // min_items if min_items > 0 else n_items
    if blocks > n_threads:
        blocks = n_threads
    if blocks < 1:
        blocks = 1
    return <int>blocks


cdef inline Py_ssize_t block_start(Py_ssize_t n_items, int n_blocks, int block) noexcept nogil:
    """First item of block `block` when n_items are split into n_blocks near-equal parts."""
    return (n_items * block) // n_blocks
