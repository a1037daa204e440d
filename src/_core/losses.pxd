# The softmax cross-entropy kernel, shared with dense.pyx's DenseStack (which computes it
# between its forward and backward passes).
from cython cimport floating
from cython.parallel cimport parallel, prange
from ._math cimport exp_shifted, flog
from ._openmp cimport n_blocks, flush_denormals, restore_denormals

ctypedef long long int64

cdef enum:
    MIN_ELEMENTS = 8192   # elements per thread


cdef inline double weight_total(const floating* sample_weight, Py_ssize_t n) noexcept nogil:
    """sum_i w_i in order (in double), or n without weights (NULL): the mean's denominator."""
    cdef Py_ssize_t i
    cdef double total = 0
    if sample_weight == NULL:
        return <double>n
    for i in range(n):
        total += sample_weight[i]
    return total


cdef inline double ordered_sum(const double* row_loss, Py_ssize_t n) noexcept nogil:
    """sum_i row_loss[i] in row order (the same for any thread count)."""
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(n):
        total += row_loss[i]
    return total


cdef inline double softmax_ce_row(const floating* z, Py_ssize_t k, int64 label,
                                   const floating* q, double smoothing, floating scale,
                                   floating* g) noexcept nogil:
    """Loss of one row; g = scale * (softmax(z) * sum(q') - q'), q' the smoothed target.

    With a label, q' = a/k + (1 - a) [j = label] sums to 1 and the loss is
    lse - (a/k) sum_j z_j - (1 - a) z_label: no per-class target in the loops."""
    cdef Py_ssize_t j
    cdef floating m, lse, qj, inv_s, qsum = 0
    cdef floating off = <floating>(smoothing / k), on = <floating>(1 - smoothing)
    cdef double loss = 0, zsum = 0
    cdef floating s = exp_shifted(z, g, k, &m)
    lse = m + flog(s)
    inv_s = 1 / s
    if label >= 0:
        for j in range(k):
            zsum += z[j]
            g[j] = scale * (g[j] * inv_s - off)
        g[label] = g[label] - scale * on
        return lse - off * zsum - on * z[label]
    for j in range(k):
        qj = off + on * q[j]
        qsum = qsum + qj
        loss += qj * (lse - z[j])
    for j in range(k):
        g[j] = scale * (g[j] * inv_s * qsum - (off + on * q[j]))
    return loss


cdef inline double softmax_ce(const floating* z, Py_ssize_t n, Py_ssize_t k, const int64* labels,
                              const floating* targets, const floating* sample_weight, double total_weight,
                              double label_smoothing, floating* grad, double* row_loss,
                              int n_threads) noexcept nogil:
    """The mean loss over the n rows of z (n x k) against labels (or, NULL, the probability rows
    of targets), weighted by sample_weight (or NULL) over total_weight; grad = its gradient.
    Per-row losses go to row_loss and are summed in row order: the same for any thread count."""
    cdef Py_ssize_t i
    cdef double loss_i
    cdef floating scale
    cdef int nt = n_blocks(n * k, n_threads, MIN_ELEMENTS)
    cdef unsigned int csr
    with parallel(num_threads=nt):
        csr = flush_denormals()
        for i in prange(n, schedule='static'):
            scale = <floating>((sample_weight[i] if sample_weight != NULL else 1.0) / total_weight)
            if labels != NULL:
                loss_i = softmax_ce_row(z + i * k, k, labels[i], NULL, label_smoothing, scale, grad + i * k)
            else:
                loss_i = softmax_ce_row(z + i * k, k, -1, targets + i * k, label_smoothing, scale, grad + i * k)
            row_loss[i] = (sample_weight[i] if sample_weight != NULL else 1.0) * loss_i
        restore_denormals(csr)
    return ordered_sum(row_loss, n) / total_weight
