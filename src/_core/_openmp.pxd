from cython cimport floating

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


# An explicit barrier between two prange loops of one parallel block: Cython emits each as
# `omp for nowait`, so the OpenMP spec gives no barrier between them (GCC happens to put one
# at the start of a loop with firstprivate + lastprivate variables; that is not a promise).
# The pragma lands inside the parallel region where the call is written; without OpenMP it
# is ignored.
cdef extern from *:
    """
    #define fastnn_barrier() _Pragma("omp barrier")
    """
    void barrier "fastnn_barrier"() noexcept nogil


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


cdef inline Py_ssize_t column_start(Py_ssize_t n_cols, int n_blocks, int block) noexcept nogil:
    """First column of block `block` when a row-major array's n_cols columns are split over
    threads: block_start rounded to a multiple of 16 (64 bytes of float32, 128 of float64), so that
    with 64-byte aligned rows no cache line holds columns of two threads (with NumPy's 16-byte
    alignment every row had one line both threads wrote; together with aligned workspaces the
    2-thread mnist-256 forward pass went from 0.05-0.12 to 0.01-0.03 ms over its products).
    Blocks of 16 columns or more stay nonempty."""
    cdef Py_ssize_t c
    if block >= n_blocks:
        return n_cols
    c = (block_start(n_cols, n_blocks, block) + 8) // 16 * 16
    return c if c < n_cols else n_cols


# Sums over the rows of a row-major array, per column, split between threads by chunks of
# ROW_CHUNK consecutive rows (each thread's rows contiguous): each chunk sums its rows into
# its own line of a (n_chunks x d) buffer, then the chunks' sums are added in chunk order.
# The result is the same on any thread count. Split by columns instead, every thread touches
# part of every row, which ran 2-4x slower on 2 threads than on 1 (dense layer's dZ pass,
# 256 x 512: 42 us against 20; by chunks: 14).
cdef enum:
    ROW_CHUNK = 64


cdef inline Py_ssize_t chunk_count(Py_ssize_t n_rows) noexcept nogil:
    """Chunks of ROW_CHUNK rows covering n_rows (the last one may be partial)."""
    return (n_rows + ROW_CHUNK - 1) // ROW_CHUNK


cdef inline Py_ssize_t chunk_end(Py_ssize_t n_rows, Py_ssize_t chunk) noexcept nogil:
    """One past the last row of chunk `chunk`, whose first row is chunk * ROW_CHUNK."""
    cdef Py_ssize_t end = (chunk + 1) * ROW_CHUNK
    return end if end < n_rows else n_rows


cdef inline void sum_chunks(const floating* partial, floating* out, Py_ssize_t n_chunks, Py_ssize_t d,
                            Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """out[c] = sum over chunks of partial[chunk * d + c], in chunk order, for c in [c0, c1);
    out may be partial itself (the sums land in chunk 0's line)."""
    cdef Py_ssize_t ch, c
    if out != partial:
        for c in range(c0, c1):
            out[c] = partial[c]
    for ch in range(1, n_chunks):
        for c in range(c0, c1):
            out[c] = out[c] + partial[ch * d + c]


# Denormal floats (below ~1e-38 in float32) cost x86 CPUs a microcode assist per operation.
# Adam's first moment of a weight whose gradient stays 0 (a pixel that is always 0) decays
# into that range within a few hundred steps and slowed whole epochs by 70% (measured on
# Fashion-MNIST). The kernels therefore run with flush-to-zero and denormals-are-zero set in
# each of their threads (what torch.set_flush_denormal(True) does), and restore the caller's
# mode afterwards. Elsewhere than x86 these are no-ops.
cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64)
    #include <xmmintrin.h>
    static inline unsigned int fastnn_flush_denormals(void) {
        unsigned int old = _mm_getcsr();
        _mm_setcsr(old | 0x8040u);  /* FTZ (bit 15) | DAZ (bit 6) */
        return old;
    }
    static inline void fastnn_restore_denormals(unsigned int old) { _mm_setcsr(old); }
    #else
    static inline unsigned int fastnn_flush_denormals(void) { return 0; }
    static inline void fastnn_restore_denormals(unsigned int old) { (void)old; }
    #endif
    """
    unsigned int flush_denormals "fastnn_flush_denormals"() noexcept nogil
    void restore_denormals "fastnn_restore_denormals"(unsigned int old) noexcept nogil
