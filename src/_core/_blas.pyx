"""Python access to the row-major GEMM wrapper (used by tests and benchmarks)."""
from cython cimport floating


def gemm_rowmajor(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
         bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0):
    """c = alpha * op(a) @ op(b) + beta * c in place; shapes must already agree."""
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = a.shape[1]
    cdef int ldb = b.shape[1]
    cdef int ldc = c.shape[1]
    if (a.shape[1] if trans_a else a.shape[0]) != m or (b.shape[0] if trans_b else b.shape[1]) != n \
            or (b.shape[1] if trans_b else b.shape[0]) != k:
        raise ValueError("gemm: shapes of a, b and c do not agree")
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating>alpha, &a[0, 0] if a.shape[0] * a.shape[1] else NULL,
              lda if lda > 0 else 1, &b[0, 0] if b.shape[0] * b.shape[1] else NULL,
              ldb if ldb > 0 else 1, <floating>beta, &c[0, 0], ldc)
