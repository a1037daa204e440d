"""Loss kernels: the value and the gradient with respect to the outputs in one pass.

Every kernel returns the mean loss and writes dL/dz into `grad`:
  softmax cross-entropy   mean over samples of  lse(z_i) - sum_c q_ic z_ic
  elementwise losses      mean over samples x outputs (torch's reduction="mean")
  multiclass hinge        torch.nn.MultiMarginLoss(p=1, margin=1)
With sample weights w the mean becomes sum_i w_i L_i / sum_i w_i.
Per-row losses go to `row_loss` and are summed in row order, so the result does
not depend on the thread count.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport fabs
from libc.stdlib cimport malloc, free
from ._math cimport fabs_, sigmoid, log1p_exp, VMATH, bce_row
from ._openmp cimport n_blocks, block_start, flush_denormals, restore_denormals

cdef enum:
    BCE = 0
    MSE = 1
    MAE = 2
    HUBER = 3
    HINGE = 4

ELEMENTWISE = {"binary_cross_entropy": BCE, "mse": MSE, "mae": MAE, "huber": HUBER, "hinge": HINGE}

def softmax_cross_entropy(const floating[:, ::1] z, const int64[::1] labels,
                          const floating[:, ::1] targets, floating[:, ::1] grad,
                          double[::1] row_loss, const floating[::1] sample_weight,
                          double label_smoothing, int n_threads):
    """Softmax cross-entropy on logits z (n, k) against integer labels or probability targets.

    Exactly one of labels (n,) and targets (n, k) is given. label_smoothing=a mixes
    the target with the uniform distribution: q' = (1 - a) q + a / k (PyTorch's rule).
    """
    cdef const int64* labels_ptr = &labels[0] if labels is not None else NULL
    cdef const floating* targets_ptr = &targets[0, 0] if targets is not None else NULL
    cdef const floating* weights_ptr = &sample_weight[0] if sample_weight is not None else NULL
    cdef double total_weight = weight_total(weights_ptr, z.shape[0])
    cdef double loss
    with nogil:
        loss = softmax_ce(&z[0, 0], z.shape[0], z.shape[1], labels_ptr, targets_ptr, weights_ptr, total_weight,
                          label_smoothing, &grad[0, 0], &row_loss[0], n_threads)
    return loss


cdef inline double _elementwise(int kind, floating z, floating t, floating delta,
                                floating* g) noexcept nogil:
    """Loss of one element and its derivative (written to g[0]). Huber's is written with
    min/max so that it compiles without branches (5.0 -> 1.3 ns per element on residuals of
    random sign); gcc turns MAE's sign into a branch however it is spelled (4.9 ns)."""
    cdef floating d = z - t, a = fabs_(d), c, clip, margin
    if kind == BCE:
        g[0] = sigmoid(z) - t
        return log1p_exp(z) - z * t
    elif kind == MSE:
        g[0] = 2 * d
        return d * d
    elif kind == MAE:
        g[0] = 1 if d > 0 else (-1 if d < 0 else 0)
        return a
    elif kind == HUBER:
        # the derivative is d clipped to [-delta, delta]; with c = min(|d|, delta) the loss
        # c (|d| - c / 2) is d^2 / 2 inside delta and delta (|d| - delta / 2) beyond
        clip = d if d < delta else delta
        g[0] = clip if clip > -delta else -delta
        c = a if a < delta else delta
        return c * (a - 0.5 * c)
    else:  # HINGE, targets in {-1, +1}
        margin = 1 - t * z
        g[0] = -t if margin > 0 else 0
        return margin if margin > 0 else 0


def elementwise_loss(const floating[:, ::1] z, const floating[:, ::1] t, floating[:, ::1] grad,
                     double[::1] row_loss, const floating[::1] sample_weight,
                     int kind, double delta, int n_threads):
    """binary_cross_entropy (on logits), mse, mae, huber(delta) or binary hinge, averaged
    over all n x k elements."""
    cdef Py_ssize_t i, j, n = z.shape[0], k = z.shape[1]
    cdef bint weighted = sample_weight is not None
    cdef double total_weight = weight_total(&sample_weight[0] if weighted else NULL, n) * k
    cdef double acc
    cdef floating scale, gij
    cdef int nt = n_blocks(n * k, n_threads, MIN_ELEMENTS)
    cdef bint vector_bce = kind == BCE and VMATH
    cdef unsigned int csr
    with nogil, parallel(num_threads=nt):
        csr = flush_denormals()
        for i in prange(n, schedule='static'):
            scale = <floating>((sample_weight[i] if weighted else 1.0) / total_weight)
            acc = 0
            if vector_bce:
                acc = bce_row(&z[i, 0], &t[i, 0], &grad[i, 0], k, scale)
            else:
                for j in range(k):
                    acc = acc + _elementwise(kind, z[i, j], t[i, j], <floating>delta, &gij)
                    grad[i, j] = scale * gij
            row_loss[i] = (sample_weight[i] if weighted else 1.0) * acc
        restore_denormals(csr)
    return ordered_sum(&row_loss[0], row_loss.shape[0]) / total_weight


def multiclass_hinge(const floating[:, ::1] z, const int64[::1] labels, floating[:, ::1] grad,
                     double[::1] row_loss, const floating[::1] sample_weight, int n_threads):
    """torch.nn.MultiMarginLoss: L_i = sum_{c != y_i} max(0, 1 - z_{i,y_i} + z_{i,c}) / k."""
    cdef Py_ssize_t i, j, n = z.shape[0], k = z.shape[1]
    cdef bint weighted = sample_weight is not None
    cdef double total_weight = weight_total(&sample_weight[0] if weighted else NULL, n)
    cdef double acc
    cdef floating scale, margin, zy, violations
    cdef int64 y
    cdef int nt = n_blocks(n * k, n_threads, MIN_ELEMENTS)
    for i in prange(n, nogil=True, schedule='static', num_threads=nt):
        scale = <floating>((sample_weight[i] if weighted else 1.0) / total_weight / k)
        y = labels[i]
        zy = z[i, y]
        acc = 0
        violations = 0
        for j in range(k):
            margin = 1 - zy + z[i, j]
            if j != y and margin > 0:
                acc = acc + margin
                violations = violations + 1
                grad[i, j] = scale
            else:
                grad[i, j] = 0
        grad[i, y] = -scale * violations
        row_loss[i] = (sample_weight[i] if weighted else 1.0) * acc / k
    return ordered_sum(&row_loss[0], row_loss.shape[0]) / total_weight


cdef Py_ssize_t CHUNK = 8192


def penalty(const floating[::1] w, floating[::1] g, double l1, double l2, int n_threads):
    """Add l1 * sign(w) + l2 * w to g and return l1 * sum|w| + l2 / 2 * sum w^2.

    The sum is taken over fixed chunks of CHUNK elements, then over chunks in order,
    so it is the same for every thread count.
    """
    cdef Py_ssize_t n = w.shape[0], n_chunks = (n + CHUNK - 1) // CHUNK, c, i, lo, hi
    cdef double total = 0, acc
    cdef floating wi, fl1 = <floating>l1, fl2 = <floating>l2
    cdef double* partial = <double*>malloc(max(n_chunks, 1) * sizeof(double))
    cdef int nt = n_blocks(n, n_threads, CHUNK)
    if partial == NULL:
        raise MemoryError()
    for c in prange(n_chunks, nogil=True, schedule='static', num_threads=nt):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        acc = 0
        for i in range(lo, hi):
            wi = w[i]
            acc = acc + l1 * fabs(wi) + 0.5 * l2 * wi * wi
            g[i] = g[i] + fl2 * wi + (fl1 if wi > 0 else (-fl1 if wi < 0 else 0))
        partial[c] = acc
    for c in range(n_chunks):
        total += partial[c]
    free(partial)
    return total
