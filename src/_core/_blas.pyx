"""Python access to the row-major GEMM (used by tests and benchmarks)."""
import numpy as np
from cython cimport floating
from cython.parallel cimport prange
from ._openmp cimport n_blocks


# Whether the pairs of rows are matched through vectors of bit counts (gemm.h), else by the
# scalar search that gives the same pairs (CPUs without VPOPCNTDQ, or -DFNN_NO_MATCH_KEYS)
MATCH_KEYS = bool(FNN_MATCH_KEYS)


def gemm_rowmajor(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
                  bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0,
                  bint blas=False, int n_threads=1):
    """c = alpha * op(a) @ op(b) + beta * c in place; shapes must already agree.

    The GEMM fastnn's layers call (its own kernels where they apply, else BLAS);
    blas=True calls BLAS alone. n_threads > 1 splits c = op(a) @ op(b) (alpha 1, beta 0)
    into row or column blocks over OpenMP threads, as the dense layers do.
    """
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = a.shape[1] if a.shape[1] > 0 else 1
    cdef int ldb = b.shape[1] if b.shape[1] > 0 else 1
    cdef int ldc = c.shape[1]
    cdef bint by_rows = split_rows(m, n)
    cdef int blk, nb = n_blocks(m if by_rows else n, gemm_threads(m, n, k, n_threads), MIN_SPLIT)
    cdef const floating* pa = &a[0, 0] if a.shape[0] * a.shape[1] else NULL
    cdef const floating* pb = &b[0, 0] if b.shape[0] * b.shape[1] else NULL
    if (a.shape[1] if trans_a else a.shape[0]) != m or (b.shape[0] if trans_b else b.shape[1]) != n \
            or (b.shape[1] if trans_b else b.shape[0]) != k:
        raise ValueError("gemm: shapes of a, b and c do not agree")
    if m * n == 0:
        return
    if n_threads > 1:
        if alpha != 1 or beta != 0 or blas:
            raise ValueError("gemm: n_threads > 1 needs alpha=1, beta=0 and blas=False")
        for blk in prange(nb, nogil=True, schedule='static', num_threads=nb):
            gemm_block(trans_a, trans_b, m, n, k, pa, lda, pb, ldb, &c[0, 0], ldc, by_rows, blk, nb)
        return
    with nogil:
        if blas:
            blas_gemm(trans_a, trans_b, m, n, k, <floating>alpha, pa, lda, pb, ldb, <floating>beta, &c[0, 0], ldc)
        else:
            gemm(trans_a, trans_b, m, n, k, <floating>alpha, pa, lda, pb, ldb, <floating>beta, &c[0, 0], ldc)


def calls_blas(dtype, bint trans_a, bint trans_b, int m, int n, int k):
    """Whether C = op(A) op(B) (m x n, inner size k) goes to BLAS rather than to fastnn's own
    kernels (the same for float32 and float64), also when a dense layer splits it over threads
    (the split keeps at least 16 rows per block, and a smaller dimension never moves a product
    to BLAS)."""
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"calls_blas: dtype must be float32 or float64, got {dtype}")
    return not fastnn_gemm_applies(trans_a, trans_b, m, n, k)


def threads_for(int m, int n, int k, int n_threads):
    """Threads the layers and gemm_rowmajor give C (m x n) = op(A) op(B) with inner size k:
    n_threads when each gets at least MIN_FLOPS_PER_THREAD of its 2 m n k flops
    (THIN_MIN_FLOPS_PER_THREAD when n or k is under THIN), fewer else."""
    return gemm_threads(m, n, k, n_threads)
