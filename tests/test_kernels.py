"""Each kernel equals its NumPy reference (tests/reference.py) for float32 and float64,
1 and 2 threads, odd sizes, read-only inputs and extreme values."""
import numpy as np
import pytest

import reference as ref
from conftest import RTOL, assert_close, readonly
from fastnn._core import activations as act
from fastnn._core import _blas, dense, losses
from fastnn.layers import ACTIVATIONS

PARAM = {"leaky_relu": 0.1, "elu": 0.7, "softplus": 1.5, "swish": 1.3, "silu": 1.0}
ACT_NAMES = sorted(ACTIVATIONS)


def kind(name):
    return act.KINDS[ACTIVATIONS[name][0]]


def _inputs(rng, shape, dtype, extreme=False):
    z = rng.standard_normal(shape) * 3
    if extreme:
        z.flat[: min(z.size, 6)] = [1e4, -1e4, 0.0, 1.0, -1.0, 30.0][: min(z.size, 6)]
    return z.astype(dtype)


@pytest.mark.parametrize("name", ACT_NAMES)
@pytest.mark.parametrize("n", [1, 7, 129, 10007])
def test_activation_forward_backward(name, n, dtype, n_threads):
    rng = np.random.default_rng(n)
    a = PARAM.get(name, 0.0)
    z = readonly(_inputs(rng, n, dtype, extreme=True))
    dy = readonly(rng.standard_normal(n).astype(dtype))
    y = np.empty_like(z)
    act.activation_forward(z, y, kind(name), a, n_threads)
    assert np.all(np.isfinite(y))
    expected = ref.activation(name, z.astype(np.float64), a)
    assert_close(y, expected, dtype, scale=1.0)
    expected = dy * ref.activation_derivative(name, z.astype(np.float64), a)
    # with the input, and (where the derivative follows from y alone) without it
    for z_arg in [z] + ([None] if not act.input_needed(kind(name), a) else []):
        dz = np.empty_like(z)
        act.activation_backward(y, dy, dz, z_arg, kind(name), a, n_threads)
        assert np.all(np.isfinite(dz))
        # derivatives computed from y inherit y's rounding (float32); allow for it
        assert_close(dz, expected, dtype, scale=1.0, rtol=RTOL[dtype] * (10 if dtype == np.float32 else 1e3))


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu", "softplus", "swish"])
def test_activations_are_accurate_to_a_few_ulps(name, dtype):
    """The kernels evaluate exp, expm1 and log1p themselves (vectorized where AVX-512 is
    available): within 4 ulps of a wider type's result (float32 against float64, float64
    against long double) on [-100, 100], near 0 and at the extremes (a = 1, so a * z adds no
    rounding of its own), wherever the result is normal and not subnormal-adjacent (swish's
    sigmoid factor is flushed below the normal range)."""
    wide = np.float64 if dtype == np.float32 else np.longdouble
    if np.finfo(wide).eps >= np.finfo(dtype).eps:
        pytest.skip("long double is float64 on this platform: no wider type to count float64 ulps "
                    "against (test_activation_forward_backward still checks float64 against the reference)")
    tiny = 1e-30 if dtype == np.float32 else 1e-290
    z = np.concatenate([np.linspace(-100, 100, 400_001), np.linspace(-1e-3, 1e-3, 4001),
                        [0.0, -0.0, 1e-30, -1e-30, 87.0, 89.0, -89.0, -104.0, 700.0, -700.0, 710.0,
                         -745.0, 1e4, -1e4]]).astype(dtype)
    y = np.empty_like(z)
    act.activation_forward(z, y, kind(name), 1.0, 1)
    expected = ref.activation(name, z.astype(wide), 1.0)
    normal = np.abs(expected) >= tiny
    ulp = np.spacing(np.abs(expected[normal]).astype(dtype)).astype(wide)
    assert np.max(np.abs(y[normal] - expected[normal]) / ulp) <= 4
    # derivatives computed from z: a few ulps of f'(z), or of its scale near its zeros
    dz = np.empty_like(z)
    act.activation_backward(y, np.ones_like(z), dz, z, kind(name), 1.0, 1)
    slope = ref.activation_derivative(name, z.astype(wide), 1.0)
    unit = np.finfo(dtype).eps / 2
    if name in ("sigmoid", "tanh"):   # from y = f(z): y's own rounding enters, twice for tanh
        assert np.max(np.abs(dz - slope)) <= 8 * unit
    else:
        assert np.max(np.abs(dz - slope) / (np.abs(slope) + 1)) <= 4 * unit


@pytest.mark.parametrize("name", ACT_NAMES)
def test_activations_keep_nan(name, dtype):
    """NaN in, NaN out (so a diverged network's loss is NaN, not a plausible number),
    except ReLU and hard tanh, whose comparisons send NaN to 0 or pass it (as before)."""
    z = np.array([np.nan, 1.0, -1.0] * 11, dtype)
    y = np.empty_like(z)
    act.activation_forward(z, y, kind(name), PARAM.get(name, 1.0), 1)
    if name != "relu":
        assert np.all(np.isnan(y[::3]))
    assert np.all(np.isfinite(y[1::3])) and np.all(np.isfinite(y[2::3]))


@pytest.mark.parametrize("name,a,needed", [("swish", 1.0, True), ("leaky_relu", -0.2, True),
                                           ("elu", -0.5, True), ("leaky_relu", 0.2, False),
                                           ("elu", 1.0, False), ("softplus", 2.0, False), ("tanh", 0.0, False)])
def test_input_needed(name, a, needed):
    assert act.input_needed(kind(name), a) is needed


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (129, 257), (3, 1)])
def test_softmax(shape, dtype, n_threads):
    z = _inputs(np.random.default_rng(1), shape, dtype, extreme=True)
    p = np.empty_like(z)
    act.softmax(readonly(z), p, n_threads)
    assert_close(p, ref.softmax(z), dtype, scale=1.0)


DENSE_ACTS = ["identity", "relu", "tanh", "swish", "sigmoid"]


@pytest.mark.parametrize("batch", [1, 7, 129, 1000])
@pytest.mark.parametrize("n_in,n_out", [(1, 3), (3, 257), (257, 1), (64, 33)])
@pytest.mark.parametrize("name", DENSE_ACTS)
def test_dense_forward_backward(batch, n_in, n_out, name, dtype, n_threads):
    rng = np.random.default_rng(batch * 1000 + n_in)
    a = PARAM.get(name, 0.0)
    x = readonly(rng.standard_normal((batch, n_in)).astype(dtype))
    W = readonly((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype))
    b = readonly(rng.standard_normal(n_out).astype(dtype))
    z = np.empty((batch, n_out), dtype)
    y = np.empty_like(z)
    dense.dense_forward(x, W, b, z, y, kind(name), a, n_threads)
    y_inplace = np.empty_like(z)
    dense.dense_forward(x, W, b, None, y_inplace, kind(name), a, n_threads)
    np.testing.assert_array_equal(y_inplace, y)
    z_ref, y_ref = ref.dense_forward(x, W, b, name, a)
    scale = float((np.abs(x) @ np.abs(W)).max() + np.abs(b).max())
    assert_close(z, z_ref, dtype, scale=scale)
    assert_close(y, y_ref, dtype, scale=scale)

    dy = rng.standard_normal((batch, n_out)).astype(dtype)
    dz_ref, dW_ref, db_ref, dx_ref = ref.dense_backward(x, W, z.astype(np.float64), dy, name, a)
    if not act.input_needed(kind(name), a):
        dy_copy, dW2, db2, dx2 = dy.copy(), np.empty_like(W), np.empty_like(b), np.empty_like(x)
        dense.dense_backward(x, W, None, y, dy_copy, dW2, db2, dx2, kind(name), a, n_threads)
    dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)
    dense.dense_backward(x, W, z, y, dy, dW, db, dx, kind(name), a, n_threads)
    if not act.input_needed(kind(name), a):
        assert_close(dx2, dx, dtype, scale=float(np.abs(dx).max()), rtol=RTOL[dtype] * 10)
        assert_close(dW2, dW, dtype, scale=float(np.abs(dW).max()), rtol=RTOL[dtype] * 10)
    gscale = float(np.abs(dy).max()) * max(batch, n_in, n_out)
    assert_close(dy, dz_ref, dtype, scale=1.0, rtol=RTOL[dtype] * (10 if dtype == np.float32 else 1e3))
    assert_close(dW, dW_ref, dtype, scale=gscale)
    assert_close(db, db_ref, dtype, scale=gscale)
    assert_close(dx, dx_ref, dtype, scale=gscale)


@pytest.mark.parametrize("name", ["relu", "identity", "tanh"])
def test_dense_forward_large_product(name, n_threads):
    """float32 products with C of 2^19 elements or more are blocked by up to 784 KiB of B's
    columns (here two blocks) and k blocks of up to 448 (here three); bias and ReLU (or
    identity) are added in registers after the last k block, other activations after."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((600, 1100)).astype(np.float32)
    W = (rng.standard_normal((1100, 900)) / np.sqrt(1100)).astype(np.float32)
    b = rng.standard_normal(900).astype(np.float32)
    y = np.full((600, 900), np.nan, np.float32)
    dense.dense_forward(x, W, b, None, y, kind(name), 0.0, n_threads)
    _, y_ref = ref.dense_forward(x, W, b, name, 0.0)
    assert_close(y, y_ref, np.float32, scale=float((np.abs(x) @ np.abs(W)).max()))


@pytest.mark.parametrize("name", ["relu", "identity"])
def test_dense_forward_large_product_of_sparse_rows(name, dtype, n_threads):
    """A product of the large blocking's size whose rows of x pair up over zeros (here each
    pair of rows shares ~60% of zero columns, as images do) is computed by the small
    blocking's pairs in chunks of rows whose output fits 512 KiB (218 rows: on one thread
    the 1001 rows end in a chunk of 129, on two each thread's half of them in one of 64 or
    65, odd rows left over); the same values as the dense product."""
    rng = np.random.default_rng(8)
    n_out = 600 if dtype == np.float32 else 300   # C of 2^19 (float32), 2^18 (float64) elements or more
    x = rng.standard_normal((1001, 700)).astype(dtype)
    x[rng.random((1001 // 2 + 1, 700)).repeat(2, axis=0)[:1001] < 0.6] = 0
    W = (rng.standard_normal((700, n_out)) / 26).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    y = np.full((1001, n_out), np.nan, dtype)
    dense.dense_forward(readonly(x), readonly(W), b, None, y, kind(name), 0.0, n_threads)
    _, y_ref = ref.dense_forward(x, W, b, name, 0.0)
    assert_close(y, y_ref, dtype, scale=float((np.abs(x) @ np.abs(W)).max()))


def test_dense_forward_skips_zero_steps_and_still_proves_x_finite(n_threads):
    """The large product skips the input columns that are zero in all six rows of a tile
    (here half of them, as blank pixels): y is unchanged, and a NaN in such a column is a
    nonzero step, so x is not proven finite."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1024, 784)).astype(np.float32)
    blank = rng.random(784) < 0.5
    x[:, blank] = 0
    W = (rng.standard_normal((784, 512)) / 28).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    y = np.empty((1024, 512), np.float32)
    own_gemm = not _blas.calls_blas(np.float32, False, False, 1024, 512, 784)   # (BLAS: never proven)
    assert dense.dense_forward(x, W, b, None, y, kind("relu"), 0.0, n_threads, True) == own_gemm
    _, y_ref = ref.dense_forward(x, W, b, "relu", 0.0)
    assert_close(y, y_ref, np.float32, scale=float((np.abs(x) @ np.abs(W)).max()))
    x[500, np.flatnonzero(blank)[3]] = np.nan
    assert not dense.dense_forward(x, W, b, None, y, kind("relu"), 0.0, n_threads, True)


@pytest.mark.parametrize("batch", [2, 37, 300])
@pytest.mark.parametrize("name", ["relu", "identity", "tanh"])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf, "huge"])
def test_dense_forward_proves_its_input_finite(batch, name, bad, dtype, n_threads):
    """check_x: True only where fastnn's GEMM ran the epilogue on every block and found x @ w
    finite, which proves x finite; a NaN or infinity anywhere in x (here its last element,
    whose row of x @ w falls in the last row tile, 90 columns ending in a masked
    vector) or an overflow of finite x is never reported as finite. The outputs are the same
    as without the check."""
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 70)).astype(dtype)
    W = (rng.standard_normal((70, 90)) / 8).astype(dtype)
    b = rng.standard_normal(90).astype(dtype)
    if bad == "huge":   # finite x whose products overflow
        x[-1], W[:, 0] = np.finfo(dtype).max / 2, 1
    elif bad is not None:
        x[-1, -1] = bad
    y, y_plain = np.empty((batch, 90), dtype), np.empty((batch, 90), dtype)
    proven = dense.dense_forward(readonly(x), W, b, None, y, kind(name), 0.0, n_threads, True)
    dense.dense_forward(x, W, b, None, y_plain, kind(name), 0.0, n_threads)
    np.testing.assert_array_equal(y, y_plain)
    in_epilogue = name != "tanh" and not _blas.calls_blas(dtype, False, False, batch, 90, 70)
    assert proven == (bad is None and in_epilogue)
    assert dense.dense_forward(x, W, b, None, y, kind(name), 0.0, n_threads) is False   # not asked


def test_dense_backward_without_input_gradient(dtype):
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal((5, 4)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
    z = x @ W
    dy = np.ones((5, 2), dtype)
    dW, db = np.empty_like(W), np.empty(2, dtype)
    dense.dense_backward(x, W, z, z, dy, dW, db, None, kind("identity"), 0.0, 2)
    assert_close(dW, x.astype(np.float64).T @ np.ones((5, 2)), dtype, scale=10.0)


@pytest.mark.parametrize("batch,n_in,n_out", [(300, 160, 90), (40, 160, 700)])
def test_dense_thread_counts_agree(batch, n_in, n_out, dtype):
    """Row splits (300 x 160 -> 90) and column splits (40 x 160 -> 700), each product above the
    flops worth a second thread: no sum changes its order, 1, 2 and 3 threads give the same
    bits (3: the column blocks' starts rounded to multiples of 16, the bias gradient's row
    chunks) where fastnn's own GEMM computes the products; BLAS's blocking may follow the split."""
    from fastnn._core import parallel

    rng = np.random.default_rng(4)
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    dy_in = rng.standard_normal((batch, n_out)).astype(dtype)
    outs = []
    for threads in (1, 2, 3):
        z = np.empty((batch, n_out), dtype)
        y = np.empty_like(z)
        dense.dense_forward(x, W, b, None, y, kind("relu"), 0.0, threads)
        z = np.abs(x @ W + b)  # same activation pattern for both runs
        dy = dy_in.copy()
        dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)
        dense.dense_backward(x, W, z, y, dy, dW, db, dx, kind("relu"), 0.0, threads)
        outs.append((y, dW, db, dx))
    own_gemm = not any(_blas.calls_blas(dtype, ta, tb, rows, cols, inner) for ta, tb, rows, cols, inner in
                       ((False, False, batch, n_out, n_in), (True, False, n_in, n_out, batch),
                        (False, True, batch, n_in, n_out)))
    for other in outs[1:]:
        for one, many in zip(outs[0], other):
            if own_gemm:
                np.testing.assert_array_equal(one, many)
            else:
                np.testing.assert_allclose(one, many, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)
        np.testing.assert_array_equal(outs[0][2], other[2])  # db: same chunks, same order
    if parallel.threads_used(2) == 2:   # (not in a build without OpenMP)
        assert _blas.threads_for(batch, n_in, n_out, 2) == 2


def test_small_products_stay_on_one_thread():
    """Below MIN_FLOPS_PER_THREAD per thread a layer's products are not split (the split cost
    more than it saved in a 64-128-128-10 step at batch 64), nor thin ones (10 outputs or
    inputs) below THIN_MIN_FLOPS_PER_THREAD, counted at their lower speed."""
    assert _blas.threads_for(64, 128, 128, 2) == 1
    assert _blas.threads_for(256, 784, 512, 2) == 2
    assert _blas.threads_for(256, 784, 512, 1) == 1
    assert _blas.threads_for(256, 512, 10, 2) == _blas.threads_for(256, 10, 512, 2) == 2   # mnist-256's last layer
    assert _blas.threads_for(64, 128, 10, 2) == _blas.threads_for(128, 256, 10, 2) == 1


# ---- losses ---------------------------------------------------------------------------


def _run(kernel_call, n, k, dtype):
    grad = np.full((n, k), np.nan, dtype)
    row_loss = np.empty(n)
    value = kernel_call(grad, row_loss)
    assert np.all(np.isfinite(grad))
    return value, grad


@pytest.mark.parametrize("n", [1, 7, 129, 1000])
@pytest.mark.parametrize("k", [1, 3, 257])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_labels(n, k, smoothing, weighted, dtype, n_threads):
    rng = np.random.default_rng(n + k)
    z = readonly(_inputs(rng, (n, k), dtype))
    labels = readonly(rng.integers(0, k, n).astype(np.int64))
    w = readonly(rng.uniform(0.1, 2, n).astype(dtype)) if weighted else None
    value, grad = _run(lambda g, r: losses.softmax_cross_entropy(z, labels, None, g, r, w, smoothing, n_threads),
                       n, k, dtype)
    v_ref, g_ref = ref.softmax_cross_entropy(z, labels=labels, label_smoothing=smoothing, sample_weight=w)
    assert_close(value, v_ref, dtype, scale=float(np.abs(z).max()) + 1)
    assert_close(grad, g_ref, dtype, scale=1.0 / n)


@pytest.mark.parametrize("n,k", [(1, 3), (7, 1), (129, 10), (1000, 257)])
def test_softmax_cross_entropy_probabilities(n, k, dtype, n_threads):
    rng = np.random.default_rng(k)
    z = _inputs(rng, (n, k), dtype)
    q = rng.dirichlet(np.ones(k), n).astype(dtype)
    value, grad = _run(lambda g, r: losses.softmax_cross_entropy(z, None, q, g, r, None, 0.05, n_threads),
                       n, k, dtype)
    v_ref, g_ref = ref.softmax_cross_entropy(z, targets=q, label_smoothing=0.05)
    assert_close(value, v_ref, dtype, scale=float(np.abs(z).max()) + 1)
    assert_close(grad, g_ref, dtype, scale=1.0 / n)


ELEMENTWISE = {
    "binary_cross_entropy": (lambda z, t, w, d: ref.binary_cross_entropy(z, t, w), "prob"),
    "mse": (lambda z, t, w, d: ref.mse(z, t, w), "real"),
    "mae": (lambda z, t, w, d: ref.mae(z, t, w), "real"),
    "huber": (lambda z, t, w, d: ref.huber(z, t, d, w), "real"),
    "hinge": (lambda z, t, w, d: ref.binary_hinge(z, t, w), "sign"),
}


def _targets(rng, kind_, shape, dtype):
    if kind_ == "prob":
        t = rng.uniform(0, 1, shape)
        t.flat[:2] = [0.0, 1.0][: min(2, t.size)]
    elif kind_ == "sign":
        t = rng.choice([-1.0, 1.0], shape)
    else:
        t = rng.standard_normal(shape) * 2
    return t.astype(dtype)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("n", [1, 7, 129, 1000])
@pytest.mark.parametrize("k", [1, 3, 257])
@pytest.mark.parametrize("weighted", [False, True])
def test_elementwise_losses(name, n, k, weighted, dtype, n_threads):
    rng = np.random.default_rng(n * 7 + k)
    reference, target_kind = ELEMENTWISE[name]
    z = readonly(_inputs(rng, (n, k), dtype, extreme=True))
    t = readonly(_targets(rng, target_kind, (n, k), dtype))
    w = rng.uniform(0.1, 2, n).astype(dtype) if weighted else None
    delta = 0.8
    value, grad = _run(lambda g, r: losses.elementwise_loss(z, t, g, r, w, losses.ELEMENTWISE[name], delta, n_threads),
                       n, k, dtype)
    v_ref, g_ref = reference(z, t, w, delta)
    assert_close(value, v_ref, dtype, scale=float(np.abs(z).max()) ** (2 if name == "mse" else 1) + 1)
    assert_close(grad, g_ref, dtype, scale=float(np.abs(g_ref).max()) + 1e-30)


@pytest.mark.parametrize("n", [1, 7, 129, 1000])
@pytest.mark.parametrize("k", [1, 3, 257])
@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_hinge(n, k, weighted, dtype, n_threads):
    rng = np.random.default_rng(n + 3 * k)
    z = readonly(_inputs(rng, (n, k), dtype) * 0.2)
    labels = readonly(rng.integers(0, k, n).astype(np.int64))
    w = rng.uniform(0.1, 2, n).astype(dtype) if weighted else None
    value, grad = _run(lambda g, r: losses.multiclass_hinge(z, labels, g, r, w, n_threads), n, k, dtype)
    v_ref, g_ref = ref.multiclass_hinge(z, labels, w)
    assert_close(value, v_ref, dtype, scale=float(np.abs(z).max()) + 1)
    assert_close(grad, g_ref, dtype, scale=1.0 / n)


@pytest.mark.parametrize("n", [1, 7, 100003])
def test_penalty(n, dtype, n_threads):
    rng = np.random.default_rng(n)
    W = readonly(rng.standard_normal(n).astype(dtype))
    g = rng.standard_normal(n).astype(dtype)
    g_before = g.astype(np.float64)
    value = losses.penalty(W, g, 0.01, 0.3, n_threads)
    v_ref, dg_ref = ref.penalty(W, 0.01, 0.3)
    assert_close(value, v_ref, dtype, scale=v_ref)
    assert_close(g, g_before + dg_ref, dtype, scale=2.0)


def test_penalty_sum_is_independent_of_thread_count():
    W = np.random.default_rng(0).standard_normal(300001).astype(np.float32)
    values = {losses.penalty(W, np.zeros_like(W), 0.1, 0.2, t) for t in (1, 2)}
    assert len(values) == 1


# ---- extreme inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("z_row", [[1e4, -1e4, 0.0], [5.0, 5.0, 5.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])
def test_softmax_cross_entropy_extreme_logits(z_row, dtype):
    z = np.array([z_row, z_row], dtype)
    labels = np.array([0, 1], np.int64)
    value, grad = _run(lambda g, r: losses.softmax_cross_entropy(z, labels, None, g, r, None, 0.0, 1), 2, 3, dtype)
    v_ref, g_ref = ref.softmax_cross_entropy(z, labels=labels)
    assert np.isfinite(value)
    assert_close(value, v_ref, dtype, scale=1e4 if dtype == np.float32 else 1.0)
    assert_close(grad, g_ref, dtype, scale=1.0)


def test_softmax_cross_entropy_single_class_is_zero(dtype):
    z = np.array([[3.0], [-1e4]], dtype)
    value, grad = _run(lambda g, r: losses.softmax_cross_entropy(z, np.zeros(2, np.int64), None, g, r, None, 0.0, 1),
                       2, 1, dtype)
    assert value == 0.0
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("name", ["binary_cross_entropy", "mse", "mae", "huber", "hinge"])
def test_elementwise_extreme_logits(name, dtype):
    z = np.array([[1e4, -1e4, 0.0, 1e4, -1e4]], dtype)
    t = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]], dtype)
    if name == "hinge":
        t = 2 * t - 1
    value, grad = _run(lambda g, r: losses.elementwise_loss(z, t, g, r, None, losses.ELEMENTWISE[name], 1.0, 1),
                       1, 5, dtype)
    v_ref, g_ref = ELEMENTWISE[name][0](z, t, None, 1.0)
    assert np.isfinite(value)
    assert_close(value, v_ref, dtype, scale=max(abs(v_ref), 1.0))
    assert_close(grad, g_ref, dtype, scale=float(np.abs(g_ref).max()))


def _no_subnormals(a):
    tiny = np.finfo(a.dtype).tiny
    return bool(np.all((a == 0) | (np.abs(a) >= tiny)))


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "swish"])
def test_activation_results_below_the_normal_range_are_flushed(name, dtype, n_threads):
    """Activations whose results would be subnormal (e^z for z far below 0) give 0 instead, as
    the dense and optimizer kernels do: each operation on a subnormal costs a microcode
    assist (a float32 sigmoid layer of saturated units ran 19x slower). The caller's
    floating-point mode is left as it was."""
    z = np.linspace(-100, -88, 20_000) if dtype == np.float32 else np.linspace(-740, -709, 20_000)
    z = z.astype(dtype)
    y, dz = np.empty_like(z), np.empty_like(z)
    act.activation_forward(z, y, kind(name), 1.0, n_threads)
    act.activation_backward(y, np.ones_like(z), dz, z, kind(name), 1.0, n_threads)
    assert _no_subnormals(y) and _no_subnormals(dz)
    # swish = z sigmoid(z) loses its (normal but tiny) value with the flushed sigmoid factor
    np.testing.assert_allclose(y, ref.activation(name, z.astype(np.float64), 1.0), rtol=0,
                               atol=float(np.abs(z).max()) * np.finfo(dtype).tiny)
    assert dtype(np.finfo(dtype).tiny) / dtype(2) != 0       # numpy still sees subnormals


def test_loss_gradients_below_the_normal_range_are_flushed(dtype, n_threads):
    """Softmax cross-entropy, softmax and binary cross-entropy likewise flush gradients and
    probabilities that would be subnormal."""
    far = -95.0 if dtype == np.float32 else -720.0
    z = np.tile(np.array([[0.0, far, far / 2, 2 * far]], dtype), (5000, 1))
    labels = np.zeros(len(z), np.int64)
    value, grad = _run(lambda g, r: losses.softmax_cross_entropy(z, labels, None, g, r, None, 0.0, n_threads),
                       *z.shape, dtype)
    assert _no_subnormals(grad)
    assert_close(value, ref.softmax_cross_entropy(z, labels=labels)[0], dtype, scale=1.0)
    p = np.empty_like(z)
    act.softmax(z, p, n_threads)
    assert _no_subnormals(p)
    t, bce = np.zeros_like(z), losses.ELEMENTWISE["binary_cross_entropy"]
    value, grad = _run(lambda g, r: losses.elementwise_loss(z, t, g, r, None, bce, 1.0, n_threads), *z.shape, dtype)
    assert _no_subnormals(grad)
    assert_close(value, ELEMENTWISE["binary_cross_entropy"][0](z, t, None, 1.0)[0], dtype, scale=1.0)


# ---- array helpers ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 4096, 4097, 100003])
def test_all_finite(n, dtype):
    from fastnn._core.arrays import all_finite

    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert all_finite(readonly(x))
    for bad in (np.nan, np.inf, -np.inf):
        for pos in {0, n // 2, n - 1}:
            y = x.copy()
            y[pos] = bad
            assert not all_finite(y)
    big = np.full(n, np.finfo(dtype).max, dtype)
    assert all_finite(big)


@pytest.mark.parametrize("n_rows,width", [(1, 1), (7, 3), (300, 257)])
def test_gather_rows(n_rows, width, dtype, n_threads):
    """Rows of bytes: a float matrix, and labels as an n x 1 int64 matrix, by their uint8 views
    (read-only sources); rows repeat and come in any order."""
    from fastnn._core.arrays import gather_rows

    rng = np.random.default_rng(width)
    rows = rng.integers(0, 500, n_rows).astype(np.int64)
    for src in (rng.standard_normal((500, width)).astype(dtype), rng.integers(0, 10, (500, 1))):
        dst = np.empty((n_rows, src.shape[1]), src.dtype)
        gather_rows(readonly(src.view(np.uint8)), rows, dst.view(np.uint8), n_threads)
        np.testing.assert_array_equal(dst, src[rows])


def test_gather_rows_bad_arguments():
    from fastnn._core.arrays import gather_rows

    src, dst = np.zeros((5, 8), np.uint8), np.zeros((2, 8), np.uint8)
    with pytest.raises(ValueError, match=r"dst must have shape \(3, 8\)"):
        gather_rows(src, np.array([0, 1, 2]), dst, 1)
    with pytest.raises(ValueError, match=r"dst must have shape \(2, 8\)"):
        gather_rows(src, np.array([0, 1]), np.zeros((2, 4), np.uint8), 1)
    for bad in (5, -1):
        with pytest.raises(IndexError, match=r"rows must lie in \[0, 5\)"):
            gather_rows(src, np.array([0, bad]), dst, 1)
    gather_rows(src, np.array([], np.int64), dst[:0], 1)     # an empty batch: nothing to do


def test_labels_in_range():
    from fastnn._core.arrays import labels_in_range

    assert labels_in_range(np.array([0, 3, 9], np.int64), 10)
    assert not labels_in_range(np.array([0, 10], np.int64), 10)
    assert not labels_in_range(np.array([-1, 2], np.int64), 10)
    assert labels_in_range(np.array([], np.int64), 1)


# (batch, in, out): weights of 2^16 or more go through the fused product (odd shapes, tall, wide,
# skinny; batches of two k blocks of the pairs of rows, an odd row, edge strips); the smaller
# ones and batches beyond FUSED_ADAM_MAX_BATCH through the product, then Adam
FUSED_SHAPES = [(32, 784, 512), (7, 200, 331), (5, 1031, 67), (37, 257, 257), (129, 13, 5100), (300, 70, 1000),
                (64, 6600, 10), (500, 400, 170), (37, 65, 17), (129, 13, 129), (128, 551, 130), (100, 96, 731)]


def _adam_case(rng, batch, n_in, n_out, sparse=True):
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    if sparse:   # all-zero steps of X^T, which the fused product skips, and zeros of single features
        x[rng.random(batch) < 0.5] = 0
        x[rng.random(x.shape) < 0.4] = 0
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    y = np.empty((batch, n_out), np.float32)
    dense.dense_forward(readonly(x), W, b, None, y, kind("relu"), 0.0, 1)
    dy = rng.standard_normal((batch, n_out)).astype(np.float32)
    state = [rng.standard_normal(W.size).astype(np.float32) * 0.1,
             np.abs(rng.standard_normal(W.size)).astype(np.float32) * 0.01,
             np.abs(rng.standard_normal(W.size)).astype(np.float32) * 0.02]
    state[1][::7] = 0                        # sqrt(0) must give 0
    return readonly(x), W, y, dy, state


@pytest.mark.parametrize("batch,n_in,n_out", FUSED_SHAPES)
@pytest.mark.parametrize("general", [False, True], ids=["plain", "amsgrad-clip-decay"])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse-x", "dense-x"])
def test_dense_backward_with_adam_equals_gradient_then_adam_step(batch, n_in, n_out, general, sparse, n_threads):
    """dense_backward(adam=...) updates W and its state exactly as dW followed by adam_step
    would (the weight gradient's product fused with the update where gemm_adam.h applies, else
    the two passes: sparse x at batches up to 128 among them), computes dx with W before the
    update, and leaves db as it was."""
    from fastnn._core import optim
    rng = np.random.default_rng(batch * 7 + n_in)
    x, W, y, dy, state = _adam_case(rng, batch, n_in, n_out, sparse)
    lr, b1, b2, eps, step = 3e-3, 0.9, 0.999, 1e-8, 7
    wd, decoupled, clip = (0.05, True, 0.02) if general else (0.0, False, np.inf)
    vmax = state[2] if general else None

    W1, m1, v1 = W.copy(), state[0].copy(), state[1].copy()
    vmax1 = None if vmax is None else vmax.copy()
    dW, db1, dx1 = np.empty_like(W), np.empty(n_out, np.float32), np.empty_like(x)
    dense.dense_backward(x, W1, None, y, dy.copy(), dW, db1, dx1, kind("relu"), 0.0, n_threads)
    optim.adam_step(W1.reshape(-1), dW.reshape(-1), m1, v1, vmax1, lr, b1, b2, eps, wd, decoupled, step,
                    1.0, clip, n_threads)

    W2, m2, v2 = W.copy(), state[0].copy(), state[1].copy()
    vmax2 = None if vmax is None else vmax.copy()
    db2, dx2 = np.empty(n_out, np.float32), np.empty_like(x)
    step_size, inv_bc2_sqrt, shrink, wd_g = optim.adam_scalars(lr, b1, b2, wd, decoupled, step)
    adam = (W2, m2, v2, vmax2, (b1, b2, eps, step_size, inv_bc2_sqrt, shrink, 1.0, clip, wd_g))
    dense.dense_backward(x, W2, None, y, dy.copy(), np.empty_like(W), db2, dx2, kind("relu"), 0.0, n_threads,
                         adam)
    for fused, separate in [(W2, W1), (m2, m1), (v2, v1), (vmax2, vmax1), (dx2, dx1), (db2, db1)]:
        np.testing.assert_array_equal(fused, separate)
    assert (W2 != W).mean() > 0.5

    # and the textbook update (float64) from that gradient (dW: test_dense_forward_backward)
    moments = {"m": state[0].astype(np.float64), "v": state[1].astype(np.float64)}
    if general:
        moments["vmax"] = vmax.astype(np.float64)
    expected = ref.adam(W.reshape(-1).astype(np.float64), np.clip(dW.reshape(-1).astype(np.float64), -clip, clip),
                        moments, step, lr, (b1, b2), eps, wd, amsgrad=general, decoupled=decoupled)
    assert_close(W2.reshape(-1), expected, np.float32, scale=float(np.abs(expected - W.reshape(-1)).max()))


def test_dense_backward_adam_bad_arguments():
    rng = np.random.default_rng(0)
    x, W, y, dy, (m, v, _) = _adam_case(rng, 8, 20, 30)
    scalars = (0.9, 0.999, 1e-8, 1e-3, 1.0, 1.0, 1.0, np.inf, 0.0)
    args = (x, W, None, y, dy, np.empty_like(W), np.empty(30, np.float32), None, kind("relu"), 0.0, 1)
    with pytest.raises(ValueError, match="layer's weights"):
        dense.dense_backward(*args, (W.copy(), m, v, None, scalars))      # not the w being differentiated
    with pytest.raises(ValueError, match="w.s state arrays"):
        dense.dense_backward(*args, (W, m[:-1], v, None, scalars))
    with pytest.raises(ValueError, match="w.s state arrays"):
        dense.dense_backward(*args, (W, m, v, v[:-1], scalars))
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    with pytest.raises(TypeError, match="float32 only"):
        dense.dense_backward(x64, W64, None, y.astype(np.float64), dy.astype(np.float64), np.empty_like(W64),
                             None, None, kind("relu"), 0.0, 1, (W64, m, v, None, scalars))


STACK_WIDTHS, STACK_ACTS = [13, 29, 18, 40, 5], ["relu", "swish", "tanh", "identity"]   # swish keeps z


def _stack_case(rng, n, dtype, first, frozen, widths=STACK_WIDTHS, acts=STACK_ACTS):
    """Per layer (x's width k, out width m): W, b, activation kind and parameter, whether z is
    kept, whether the layer is trainable (from `first` on, but `frozen`)."""
    layers = []
    for i, (k, m, name) in enumerate(zip(widths[:-1], widths[1:], acts)):
        W = (rng.standard_normal((k, m)) / np.sqrt(k)).astype(dtype)
        b = rng.standard_normal(m).astype(dtype)
        a = PARAM.get(name, 0.0)
        layers.append((W, b, kind(name), a, act.input_needed(kind(name), a), i >= first and i not in frozen))
    x = rng.standard_normal((n, widths[0])).astype(dtype)
    x[::3] = 0                                # all-zero rows: steps the fused product skips
    return readonly(x), layers, rng.standard_normal((n, widths[-1])).astype(dtype)


def _stack_entries(layers, n, first, states=None):
    """DenseStack entries with fresh output and gradient buffers (NaN, so that anything not
    written shows); states: per layer (W's, b's) Adam state or None."""
    entries = []
    for i, (W, b, k_, a, keep_z, trainable) in enumerate(layers):
        full = lambda *shape: np.full(shape, np.nan, W.dtype)  # noqa: E731
        k, m = W.shape
        w_state, b_state = states[i] if states else (None, None)
        entries.append((W, b, full(n, m) if keep_z else None, full(n, m), full(k, m) if trainable else None,
                        full(m) if trainable else None, full(n, k) if i > first else None, k_, a, w_state, b_state))
    return entries


@pytest.mark.parametrize("first,frozen", [(0, ()), (1, ()), (0, (2,)), (4, ())],
                         ids=["all", "first-frozen", "middle-frozen", "none-trainable"])
def test_dense_stack_equals_its_layers_kernels(first, frozen, dtype, n_threads):
    """A DenseStack's passes give each layer's dense_forward and dense_backward results bit for
    bit: outputs, kept pre-activations, parameter gradients (none for frozen layers) and input
    gradients (none before `first`), and the first layer's proof that x is finite."""
    rng = np.random.default_rng(11)
    n = 37
    x, layers, dy = _stack_case(rng, n, dtype, first, frozen)
    stack_entries, own = _stack_entries(layers, n, first), _stack_entries(layers, n, first)
    inp, proofs = x, []
    for (W, b, z, y, *_), (_, _, k_, a, _, _) in zip(own, layers):
        proofs.append(dense.dense_forward(inp, W, b, z, y, k_, a, n_threads, True))
        inp = y
    grad = own_dy = dy.copy()
    for i in range(len(layers) - 1, first - 1, -1):
        W, b, z, y, dW, db, dx, k_, a, _, _ = own[i]
        dense.dense_backward(x if i == 0 else own[i - 1][3], W, z, y, grad, dW, db, dx, k_, a, n_threads)
        grad = dx

    stack = dense.DenseStack(stack_entries, n, first)
    assert stack.forward(x, n_threads, True) == proofs[0]
    assert stack.output is stack_entries[-1][3]
    stack_grad = dy.copy()
    stack.backward(stack_grad, n_threads)
    for mine, theirs in zip(stack_entries, own):
        for a, b in zip(mine[2:7], theirs[2:7]):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(stack_grad, own_dy)     # dL/dz of the last layer (dy itself: no pass)


@pytest.mark.parametrize("n,widths,acts", [(41, STACK_WIDTHS, STACK_ACTS), (256, [200, 600, 10], ["relu", "identity"])],
                         ids=["small", "split-over-threads"])
def test_dense_stack_updates_parameters_as_the_optimizer_step(n, widths, acts, n_threads):
    """With Adam state for its parameters, a DenseStack's backward pass leaves weights, biases and
    state as the gradients followed by adam_step (each group's scalars) would, bit for bit;
    without scalars it only computes the gradients. (The larger case splits each product, and
    the bias gradient with its update, over 2 threads.)"""
    from fastnn._core import optim
    rng = np.random.default_rng(12)
    first = 0
    x, layers, dy = _stack_case(rng, n, np.float32, first, (), widths, acts)

    def state(size):
        return [rng.standard_normal(size).astype(np.float32) * 0.1,
                np.abs(rng.standard_normal(size)).astype(np.float32) * 0.01, None]

    states = [(state(W.size) + [i % 2], state(b.size) + [1]) for i, (W, b, *_) in enumerate(layers)]
    hyper = [(3e-3, 0.0, False), (1e-3, 0.02, True)]                     # per group: lr, weight decay, AdamW
    scalars = [(0.9, 0.999, 1e-8, *optim.adam_scalars(lr, 0.9, 0.999, wd, dec, 5)[:3], 1.0, np.inf,
                optim.adam_scalars(lr, 0.9, 0.999, wd, dec, 5)[3]) for lr, wd, dec in hyper]

    def copies():
        return ([(W.copy(), b.copy(), *rest) for W, b, *rest in layers],
                [tuple([a.copy() for a in s[:2]] + [None, s[3]]) for pair in states for s in pair])

    fused_layers, fused_states = copies()
    entries = _stack_entries(fused_layers, n, first, list(zip(fused_states[::2], fused_states[1::2])))
    stack = dense.DenseStack(entries, n, first)
    stack.forward(x, n_threads)
    stack.backward(dy.copy(), n_threads, scalars)

    plain_layers, plain_states = copies()
    plain = _stack_entries(plain_layers, n, first)
    stack = dense.DenseStack(plain, n, first)
    stack.forward(x, n_threads)
    stack.backward(dy.copy(), n_threads)          # no scalars: gradients only, parameters unchanged
    for (W, b, *_), (W0, b0, *_) in zip(plain_layers, layers):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    for i, (W, b, *_) in enumerate(plain_layers):
        for p, g, (m, v, _, group) in [(W, plain[i][4], plain_states[2 * i]), (b, plain[i][5], plain_states[2 * i + 1])]:
            lr, wd, dec = hyper[group]
            optim.adam_step(p.reshape(-1), g.reshape(-1), m, v, None, lr, 0.9, 0.999, 1e-8, wd, dec, 5, 1.0,
                            np.inf, n_threads)
    for (W, b, *_), (W2, b2, *_) in zip(fused_layers, plain_layers):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    for s, s2 in zip(fused_states, plain_states):
        np.testing.assert_array_equal(s[0], s2[0])
        np.testing.assert_array_equal(s[1], s2[1])
    assert not np.array_equal(fused_layers[0][0], layers[0][0])


def test_dense_stack_bad_arguments():
    rng = np.random.default_rng(13)
    n = 6
    x, layers, dy = _stack_case(rng, n, np.float32, 0, ())
    entries = _stack_entries(layers, n, 0)
    with pytest.raises(ValueError, match="layer 1 takes 18 inputs but layer 0 gives 29"):
        dense.DenseStack([entries[0], entries[2]], n, 0)
    with pytest.raises(ValueError, match="layer 1's y must be a writeable C-contiguous float32 array"):
        dense.DenseStack(entries[:1] + [entries[1][:3] + (np.empty((n, 18)),) + entries[1][4:]] + entries[2:], n, 0)
    with pytest.raises(ValueError, match="layer 0's w must be"):
        dense.DenseStack([(readonly(entries[0][0].copy()),) + entries[0][1:]] + entries[1:], n, 0)
    with pytest.raises(ValueError, match="needs dw and db together, and dx"):
        dense.DenseStack(entries[:2] + [entries[2][:6] + (None,) + entries[2][7:]] + entries[3:], n, 0)
    state = (np.zeros(13 * 18, np.float32), np.zeros(13 * 18, np.float32), None, 0)
    with pytest.raises(ValueError, match="layer 0's w's state arrays must be flat, of 377 entries"):
        dense.DenseStack([entries[0][:9] + (state, None)] + entries[1:], n, 0)
    x64, layers64, _ = _stack_case(rng, n, np.float64, 0, ())
    e64 = _stack_entries(layers64, n, 0)
    with pytest.raises(ValueError, match="float32 only"):
        dense.DenseStack([e64[0][:9] + (None, (np.zeros(29), np.zeros(29), None, 0))] + e64[1:], n, 0)
    frozen = _stack_entries(_stack_case(rng, n, np.float32, 1, ())[1], n, 1)
    with pytest.raises(ValueError, match="frozen"):
        dense.DenseStack([frozen[0][:9] + (None, (np.zeros(29, np.float32),) * 2 + (None, 0))] + frozen[1:], n, 1)
    with pytest.raises(ValueError, match="0 <= first"):
        dense.DenseStack(entries, n, 5)
    stack = dense.DenseStack(entries, n, 0)
    with pytest.raises(ValueError, match="forward pass first"):
        stack.backward(dy, 1)
    with pytest.raises(ValueError, match=r"x must have shape \(6, 13\)"):
        stack.forward(x[:5], 1)
    with pytest.raises(ValueError):
        stack.forward(x.astype(np.float64), 1)
    stack.forward(x, 1)
    with pytest.raises(ValueError, match=r"dy must have shape \(6, 5\)"):
        stack.backward(dy[:, :4].copy(), 1)
    with pytest.raises(ValueError, match="dy must be writeable"):
        stack.backward(readonly(dy.copy()), 1)
    with_state = dense.DenseStack([entries[0][:9] + (None, (np.zeros(29, np.float32),) * 2 + (None, 1))]
                                  + entries[1:], n, 0)
    with_state.forward(x, 1)
    with pytest.raises(ValueError, match="one tuple per group"):
        with_state.backward(dy, 1, [(0.9, 0.999, 1e-8, 1e-3, 1.0, 1.0, 1.0, np.inf, 0.0)])
    with pytest.raises(ValueError, match="Adam's scalars are 9 values, not 8"):
        with_state.backward(dy, 1, [(0.9, 0.999, 1e-8, 1e-3, 1.0, 1.0, 1.0, np.inf)] * 2)


@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.1)])
def test_dense_stack_softmax_ce_backward_equals_the_loss_then_backward(weighted, smoothing, dtype, n_threads):
    """softmax_ce_backward gives losses.softmax_cross_entropy's loss and then backward's results
    from its gradient, bit for bit (with Adam updates in float32); with a non-finite loss and
    updates asked, it changes no parameter."""
    from fastnn._core import optim
    rng = np.random.default_rng(14)
    n = 256 if n_threads == 2 else 45
    x, layers, _ = _stack_case(rng, n, dtype, 0, ())
    labels = rng.integers(0, STACK_WIDTHS[-1], n)
    weights = rng.random(n).astype(dtype) if weighted else None
    fused = dtype == np.float32

    def run(combined, poison=False):
        copies = [(W.copy(), b.copy(), *rest) for W, b, *rest in layers]
        if poison:
            copies[-1][1][0] = np.inf     # the first logit infinite: the loss is NaN
        states = [((np.full(W.size, 0.01, np.float32), np.full(W.size, 1e-4, np.float32), None, 0),
                   (np.full(b.size, 0.01, np.float32), np.full(b.size, 1e-4, np.float32), None, 0))
                  for W, b, *_ in copies] if fused else None
        entries = _stack_entries(copies, n, 0, states)
        stack = dense.DenseStack(entries, n, 0)
        scalars = [(0.9, 0.999, 1e-8, *optim.adam_scalars(1e-3, 0.9, 0.999, 0.0, False, 3)[:3], 1.0, np.inf, 0.0)]
        stack.forward(x, n_threads)
        if combined:
            loss, hits = stack.softmax_ce_backward(labels, weights, smoothing, n_threads, scalars if fused else None)
            assert hits == np.count_nonzero(stack.output.argmax(axis=1) == labels)
        else:
            grad, row_loss = np.empty_like(stack.output), np.empty(n)
            loss = losses.softmax_cross_entropy(stack.output, labels, None, grad, row_loss, weights, smoothing,
                                                n_threads)
            stack.backward(grad, n_threads, scalars if fused else None)
        return loss, entries, states

    (loss, entries, states), (loss2, entries2, states2) = run(True), run(False)
    assert loss == loss2 and np.isfinite(loss)
    for mine, theirs in zip(entries, entries2):
        for a, b in zip(mine[:7], theirs[:7]):
            if a is not None:
                np.testing.assert_array_equal(a, b)
    for mine, theirs in zip(states or (), states2 or ()):
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    if fused:    # a non-finite loss: the parameters stay as they were
        loss, entries, _ = run(True, poison=True)
        assert not np.isfinite(loss)
        for (W, b, *_), (W0, b0, *_) in zip(entries, layers):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b[1:], b0[1:])


def test_dense_stack_softmax_ce_backward_counts_hits_as_argmax_does(dtype):
    """The rows predicted right that softmax_ce_backward returns are those whose numpy.argmax
    of the logits is the label: ties go to the first largest logit, a NaN counts as the largest.
    One identity layer, so the logits are x plus the bias (a NaN bias: that column NaN in every
    row)."""
    k = 4
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [0, 1, 5, 7], [-1, -3, -2, -1], [4, 0, 0, 9]], dtype)
    labels = np.array([1, 0, 3, 3, 3], np.int64)
    for bias in (np.zeros(k, dtype), np.array([0, 0, np.nan, 0], dtype), np.full(k, np.nan, dtype)):
        layers = [(np.eye(k, dtype=dtype), bias, kind("identity"), 0.0, False, True)]
        stack = dense.DenseStack(_stack_entries(layers, len(x), 0), len(x), 0)
        stack.forward(x, 1)
        _, hits = stack.softmax_ce_backward(labels, None, 0.0, 1)
        expected = np.count_nonzero(stack.output.argmax(axis=1) == labels)
        assert hits == expected
    assert hits == np.count_nonzero(labels == 0)     # all NaN: every argmax is 0


def test_dense_stack_train_batches_bad_arguments():
    """train_batches checks its scalars, the batches' place in `order`, its sources and buffers
    and the rows it gathers before it runs a step."""
    rng = np.random.default_rng(16)
    n, rows = 6, 20
    x, layers, _ = _stack_case(rng, n, np.float32, 0, ())
    states = [tuple((np.zeros(a.size, np.float32), np.zeros(a.size, np.float32), None, 0) for a in (W, b))
              for W, b, *_ in layers]
    stack = dense.DenseStack(_stack_entries(layers, n, 0, states), n, 0)
    X = rng.standard_normal((rows, x.shape[1])).astype(np.float32)
    labels = rng.integers(0, STACK_WIDTHS[-1], (rows, 1))
    sources = (X.view(np.uint8), labels.view(np.uint8), None)
    batch = (np.empty((n, x.shape[1]), np.float32), np.empty(n, np.int64), None)
    order = rng.permutation(rows)
    scalars = np.zeros((2, 1, 9))
    scalars[:, 0] = (0.9, 0.999, 1e-8, 1e-3, 1.0, 1.0, 1.0, np.inf, 0.0)
    assert stack.train_batches(sources, batch, order, 0, scalars[:0], 0.0, 1) == (0, 0.0, 0, 0.0)
    with pytest.raises(ValueError, match="scalars must be"):
        stack.train_batches(sources, batch, order, 0, np.zeros((2, 1, 8)), 0.0, 1)
    with pytest.raises(ValueError, match="must lie in order"):
        stack.train_batches(sources, batch, order, 10, scalars, 0.0, 1)      # 10 + 2 x 6 > 20 rows
    with pytest.raises(ValueError, match="sources must be"):
        stack.train_batches((X[:, :-1].copy().view(np.uint8), *sources[1:]), batch, order, 0, scalars, 0.0, 1)
    with pytest.raises(ValueError, match="batch must hold"):
        stack.train_batches(sources, (batch[0], np.empty(n + 1, np.int64), None), order, 0, scalars, 0.0, 1)
    for bad in (rows, -1):
        wrong = order.copy()
        wrong[2 * n - 1] = bad      # in the second step's batch
        with pytest.raises(IndexError, match=r"order's rows must lie in \[0, 20\)"):
            stack.train_batches(sources, batch, wrong, 0, scalars, 0.0, 1)
    before = [W.copy() for W, *_ in layers]
    taken, total, hits, loss = stack.train_batches(sources, batch, order, 0, scalars, 0.0, 1)
    assert taken == 2 and np.isfinite(total) and 0 <= hits <= 2 * n and loss > 0
    assert all(not np.array_equal(W, W0) for (W, *_), W0 in zip(layers, before))


def test_dense_stack_softmax_ce_backward_bad_arguments():
    rng = np.random.default_rng(15)
    n = 6
    x, layers, _ = _stack_case(rng, n, np.float32, 0, ())
    stack = dense.DenseStack(_stack_entries(layers, n, 0), n, 0)
    labels = np.zeros(n, np.int64)
    with pytest.raises(ValueError, match="forward pass first"):
        stack.softmax_ce_backward(labels, None, 0.0, 1)
    stack.forward(x, 1)
    with pytest.raises(ValueError, match="labels must have 6 entries"):
        stack.softmax_ce_backward(labels[:5], None, 0.0, 1)
    with pytest.raises(ValueError, match="sample_weight must have 6 entries"):
        stack.softmax_ce_backward(labels, np.ones(5, np.float32), 0.0, 1)
    with pytest.raises(ValueError):
        stack.softmax_ce_backward(labels.astype(np.int32), None, 0.0, 1)
    with pytest.raises(ValueError):
        stack.softmax_ce_backward(labels, np.ones(n), 0.0, 1)          # float64 weights, float32 stack
