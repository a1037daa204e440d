# Row-major GEMM: fastnn's own AVX-512 kernels (gemm.h) where they are faster, else scipy's
# BLAS (scipy.linalg.cython_blas), float32 and float64.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm
from ._openmp cimport block_start, column_start


cdef extern from "gemm.h":
    int fastnn_gemm_f32(int trans_a, int trans_b, int m, int n, int k, const float* a, int lda,
                        const float* b, int ldb, float* c, int ldc, const float* bias,
                        int relu, int* nonfinite) noexcept nogil
    int fastnn_gemm_f64(int trans_a, int trans_b, int m, int n, int k, const double* a, int lda,
                        const double* b, int ldb, double* c, int ldc, const double* bias,
                        int relu, int* nonfinite) noexcept nogil
    int fastnn_gemm_applies(int trans_a, int trans_b, int m, int n, int k) noexcept nogil
    int FNN_MATCH_KEYS


cdef inline void blas_gemm(bint trans_a, bint trans_b, int m, int n, int k,
                           floating alpha, const floating* a, int lda,
                           const floating* b, int ldb,
                           floating beta, floating* c, int ldc) noexcept nogil:
    """C (m x n) = alpha * op(A) @ op(B) + beta * C by BLAS, all arrays row-major.

    A row-major matrix is the column-major transpose, so this computes
    C^T = op(B)^T @ op(A)^T with the column-major BLAS: B and A swap places.
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef inline bint gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc,
                      const floating* bias=NULL, bint relu=False, int* nonfinite=NULL) noexcept nogil:
    """C (m x n) = alpha * op(A) @ op(B) + beta * C, all arrays row-major: fastnn's kernel
    for C = op(A) op(B) where it applies and is faster, BLAS otherwise.

    bias / relu ask fastnn's kernel to finish C as C + bias, or max(C + bias, 0), in
    registers, and nonfinite to set it to 1 if op(A) op(B) holds NaN or infinity; returns
    whether that was done (False: BLAS computed the bare product)."""
    cdef bint done = False
    if m <= 0 or n <= 0:
        return True
    if alpha == 1 and beta == 0:
        if floating is float:
            done = fastnn_gemm_f32(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, bias, relu, nonfinite)
        else:
            done = fastnn_gemm_f64(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, bias, relu, nonfinite)
    if done:
        return True
    blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return bias == NULL and not relu and nonfinite == NULL


# Smallest useful GEMM block: below this many rows or columns a split costs more in
# BLAS packing than the second thread gains.
cdef enum:
    MIN_SPLIT = 16


# A product is split over threads only when each thread gets about 20 us of work or more: a
# smaller split gains a few microseconds and loses more when the next pass reads the results
# from the other core's cache (measured: a 64-128-128-10 step at batch 64 took 0.70x the
# speed on 2 threads as on 1). Work is counted at the speed of fastnn's GEMM in a training
# step: 4 MFLOP in 20 us (200 GFLOP/s), and 1.1 MFLOP (55 GFLOP/s) for thin products, C or
# the inner dimension under 16 wide (the 10-class layer's products took 44-52 us for 2.6
# MFLOP in mnist-256 steps; split over 2 threads, its forward and backward passes took 0.125
# instead of 0.195 ms).
cdef enum:
    MIN_FLOPS_PER_THREAD = 4000000
    THIN_MIN_FLOPS_PER_THREAD = 1100000
    THIN = 16


cdef inline int gemm_threads(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int n_threads) noexcept nogil:
    """Threads worth giving C (m x n) = op(A) op(B) with inner size k: at most n_threads."""
    cdef Py_ssize_t worth = 2 * m * n * k // (THIN_MIN_FLOPS_PER_THREAD if n < THIN or k < THIN
                                              else MIN_FLOPS_PER_THREAD)
    if worth < 1:
        return 1
    return <int>worth if worth < n_threads else n_threads


cdef inline bint split_rows(int rows, int cols) noexcept nogil:
    """Split C = A B (rows x cols) by rows iff B (inner x cols) is no larger than A."""
    return cols <= rows


cdef inline void split_bounds(bint by_rows, int M, int N, int part, int parts, int* lo, int* hi) noexcept nogil:
    """[lo, hi): the rows (by_rows) or columns of part `part` of `parts` of an M x N product,
    the one rule for the product and for any pass over the same block after it."""
    if by_rows:
        lo[0] = <int>block_start(M, parts, part)
        hi[0] = <int>block_start(M, parts, part + 1)
    else:
        lo[0] = <int>column_start(N, parts, part)
        hi[0] = <int>column_start(N, parts, part + 1)


cdef inline bint gemm_block(bint ta, bint tb, int M, int N, int K, const floating* A, int lda,
                             const floating* B, int ldb, floating* C, int ldc,
                             bint by_rows, int part, int parts,
                             const floating* bias=NULL, bint relu=False, int* nonfinite=NULL) noexcept nogil:
    """Block `part` of `parts` of C = op(A) op(B): a range of C's rows or of its columns
    (split_bounds; bias, relu, nonfinite and the result as for gemm)."""
    cdef int lo, hi
    split_bounds(by_rows, M, N, part, parts, &lo, &hi)
    if by_rows:
        return gemm(ta, tb, hi - lo, N, K, 1, A + (lo if ta else <Py_ssize_t>lo * lda), lda, B, ldb,
                    0, C + <Py_ssize_t>lo * ldc, ldc, bias, relu, nonfinite)
    return gemm(ta, tb, M, hi - lo, K, 1, A, lda, B + (<Py_ssize_t>lo * ldb if tb else lo), ldb,
                0, C + lo, ldc, bias + lo if bias != NULL else NULL, relu, nonfinite)
