"""Normalization and regularization layers: kernels against the NumPy reference, gradient
checks in training mode, PyTorch parity, Dropout statistics, freezing, and bad input."""
import numpy as np
import pytest

import fastnn as fnn
import reference as ref
from conftest import RTOL, assert_close, readonly
from fastnn._core import norm, random
from fastnn.gradcheck import numerical_gradients

SHAPES = [(n, d) for n in (2, 7, 129) for d in (1, 3, 257)]


@pytest.mark.parametrize("n,d", SHAPES)
def test_batch_norm_kernels(n, d, dtype, n_threads):
    rng = np.random.default_rng(n * d)
    x = readonly((rng.standard_normal((n, d)) * 3 + 5).astype(dtype))
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    y, mean, inv_std = np.empty_like(x), np.empty(d), np.empty(d)
    norm.batch_norm_forward(x, gamma, beta, y, mean, inv_std, 1e-5, None, None, 0.1, n_threads)
    y_ref, mean_ref, var_ref = ref.batch_norm(x, gamma, beta, 1e-5)
    scale = float(np.abs(gamma).max() * 3 + np.abs(beta).max())
    tol = RTOL[dtype] * (10 if dtype == np.float32 else 1e3)  # 1/sqrt(var + eps) amplifies rounding
    assert_close(y, y_ref, dtype, scale=scale, rtol=tol)
    assert_close(mean, mean_ref, dtype, scale=5.0)
    assert_close(1 / inv_std ** 2 - 1e-5, var_ref, dtype, scale=float(var_ref.max()) + 1e-5, rtol=tol)
    running_mean, running_var = np.full(d, 0.5, dtype), np.full(d, 2.0, dtype)
    norm.batch_norm_forward(x, gamma, beta, y, mean, inv_std, 1e-5, running_mean, running_var, 0.3, n_threads)
    assert_close(running_mean, 0.7 * 0.5 + 0.3 * mean_ref, dtype, scale=5.0)
    assert_close(running_var, 0.7 * 2.0 + 0.3 * var_ref * n / (n - 1), dtype,
                 scale=float(var_ref.max()) * 2 + 2, rtol=tol)
    dy = rng.standard_normal((n, d)).astype(dtype)
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
    norm.batch_norm_backward(x, gamma, mean, inv_std, readonly(dy), dx, dgamma, dbeta, n_threads)
    dx_ref, dg_ref, db_ref = ref.batch_norm_backward(x, gamma, dy, 1e-5)
    gscale = float(np.abs(dy).max()) * n * float(np.abs(gamma).max() * inv_std.max())
    assert_close(dx, dx_ref, dtype, scale=gscale, rtol=tol)
    assert_close(dgamma, dg_ref, dtype, scale=float(np.abs(dy).max()) * n, rtol=tol)
    assert_close(dbeta, db_ref, dtype, scale=float(np.abs(dy).max()) * n)


# (5, 96, 3) and (9, 1000, 8): on 2 threads the feature blocks of the backward pass split a group
@pytest.mark.parametrize("n,d,groups", [(1, 1, 1), (1, 6, 3), (7, 3, 1), (129, 256, 8), (2, 257, 1),
                                        (5, 96, 3), (9, 1000, 8)])
def test_group_norm_kernels(n, d, groups, dtype, n_threads):
    rng = np.random.default_rng(n + d)
    x = readonly((rng.standard_normal((n, d)) * 2 + 1).astype(dtype))
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    y, mean, inv_std = np.empty_like(x), np.empty((n, groups)), np.empty((n, groups))
    norm.group_norm_forward(x, gamma, beta, y, mean, inv_std, groups, 1e-5, n_threads)
    tol = RTOL[dtype] * (10 if dtype == np.float32 else 1e3)
    scale = float(np.abs(gamma).max() * 3 + np.abs(beta).max())
    assert_close(y, ref.group_norm(x, gamma, beta, groups, 1e-5), dtype, scale=scale, rtol=tol)
    dy = rng.standard_normal((n, d)).astype(dtype)
    dx_ref, dg_ref, db_ref = ref.group_norm_backward(x, gamma, dy, groups, 1e-5)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(beta)
    dx = dy.copy()
    norm.group_norm_backward(x, gamma, mean, inv_std, dx, dx, dgamma, dbeta, groups, n_threads)
    gscale = float(np.abs(dy).max()) * d * float(np.abs(gamma).max() * inv_std.max())
    assert_close(dx, dx_ref, dtype, scale=gscale, rtol=tol)
    assert_close(dgamma, dg_ref, dtype, scale=float(np.abs(dy).max()) * n * 3, rtol=tol)
    assert_close(dbeta, db_ref, dtype, scale=float(np.abs(dy).max()) * n)


@pytest.mark.parametrize("n,d", SHAPES + [(1, 5)])
def test_prelu_kernels(n, d, dtype, n_threads):
    rng = np.random.default_rng(d)
    x = readonly(rng.standard_normal((n, d)).astype(dtype))
    a = rng.uniform(0, 0.5, d).astype(dtype)
    y = np.empty_like(x)
    norm.prelu_forward(x, a, y, n_threads)
    assert_close(y, ref.prelu(x, a), dtype, scale=1.0)
    dy = rng.standard_normal((n, d)).astype(dtype)
    dx, da = np.empty_like(x), np.empty_like(a)
    norm.prelu_backward(x, a, dy, dx, da, n_threads)
    dx_ref, da_ref = ref.prelu_backward(x, a, dy)
    assert_close(dx, dx_ref, dtype, scale=1.0)
    assert_close(da, da_ref, dtype, scale=float(n) * 3)


def test_batch_norm_inference_kernel(dtype, n_threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 4)).astype(dtype)
    a, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    y = np.empty_like(x)
    norm.scale_shift(x, a, b, y, n_threads)
    assert_close(y, x.astype(np.float64) * a + b, dtype, scale=10.0)


# ---- dropout and the counter-based RNG ------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keep_rate_and_scale(p, dtype, n_threads):
    n = 200_000
    x = np.ones(n, dtype)
    y, mask = np.empty_like(x), np.empty(n, np.uint8)
    random.dropout_forward(x, y, mask, p, 1, 2, 3, n_threads)
    keep = mask.astype(bool)
    assert abs(keep.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)
    assert_close(y[keep], np.full(keep.sum(), 1 / (1 - p)), dtype)
    assert not y[~keep].any()
    assert abs(y.mean() - 1) < 0.02  # inverted dropout keeps the expectation
    dx = np.ones_like(x)
    random.dropout_backward(dx, mask, dx, p, n_threads)
    np.testing.assert_array_equal(dx, y)


def test_random_draws_are_independent_of_threads_and_distinct_per_stream_and_step():
    draws = {}
    for threads in (1, 2):
        out = np.empty(100_003)
        random.uniform(5, 1, 7, out, threads)
        draws[threads] = out
    np.testing.assert_array_equal(draws[1], draws[2])
    other_stream, other_step = np.empty(100_003), np.empty(100_003)
    random.uniform(5, 2, 7, other_stream, 1)
    random.uniform(5, 1, 8, other_step, 1)
    assert abs(np.corrcoef(draws[1], other_stream)[0, 1]) < 0.02
    assert abs(np.corrcoef(draws[1], other_step)[0, 1]) < 0.02
    assert 0 <= draws[1].min() and draws[1].max() < 1 and abs(draws[1].mean() - 0.5) < 0.01


def test_gaussian_noise_moments():
    x = np.zeros(200_000)
    y = np.empty_like(x)
    random.gaussian_noise(x, y, 0.5, 0, 0, 0, 2)
    assert abs(y.mean()) < 0.01 and abs(y.std() - 0.5) < 0.01


# ---- layers in a model ------------------------------------------------------------------------


def _net(*middle, dtype="float64", loss="softmax_cross_entropy"):
    return fnn.Sequential([fnn.Dense(5, 8, init="normal", std=0.7), *middle, fnn.Dense(8, 3)],
                          loss=loss, dtype=dtype, seed=2)


@pytest.mark.parametrize("make", [
    lambda: [fnn.BatchNorm(8), fnn.Activation("tanh")],
    lambda: [fnn.Activation("tanh"), fnn.BatchNorm(8, affine=False)],
    lambda: [fnn.LayerNorm(8), fnn.Activation("elu")],
    lambda: [fnn.GroupNorm(4, 8), fnn.Activation("swish")],
    lambda: [fnn.PReLU(8, init=0.1)],
    lambda: [fnn.Activation("tanh"), fnn.Dropout(0.3)],
    lambda: [fnn.GaussianNoise(0.3), fnn.Activation("tanh")],
], ids=["batchnorm", "batchnorm-noaffine", "layernorm", "groupnorm", "prelu", "dropout", "noise"])
def test_gradient_check_in_training_mode(make):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((11, 5)), rng.integers(0, 3, 11)
    model = _net(*make())
    _, analytic = model.loss_and_gradients(X, y)
    numeric = numerical_gradients(model, X, y)
    for a, b in zip(analytic, numeric):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_dropout_and_batchnorm_switch_between_training_and_inference():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 5))
    model = _net(fnn.BatchNorm(8), fnn.Dropout(0.5))
    a, b = model.forward(X, training=True), model.forward(X, training=True)
    np.testing.assert_array_equal(a, b)                 # same step: same mask, no state change
    assert not np.allclose(a, model.forward(X))          # inference differs
    np.testing.assert_array_equal(model.forward(X), model.forward(X))
    bn = model.layers[1]
    np.testing.assert_array_equal(bn.running_mean, 0)   # forward(training=True) changes nothing
    model.train_step(X, rng.integers(0, 3, 50))
    assert np.any(bn.running_mean != 0)
    c = model.forward(X, training=True)
    assert not np.array_equal(a, c)                     # a new step draws a new mask


def test_dropout_masks_do_not_depend_on_thread_count():
    X, y = np.random.default_rng(2).standard_normal((64, 5)), np.arange(64) % 3
    runs = []
    for threads in (1, 2):
        with fnn.threads(threads):
            model = _net(fnn.Activation("relu"), fnn.Dropout(0.5))
            for _ in range(3):
                model.train_step(X, y)
            runs.append(model.layers[2]._mask.copy())
    np.testing.assert_array_equal(*runs)


def test_frozen_layer_is_not_updated_and_summary_counts_it():
    X, y = np.random.default_rng(3).standard_normal((20, 5)), np.arange(20) % 3
    model = _net(fnn.Activation("relu"))
    model.layers[0].trainable = False
    frozen = model.get_weights()[0].copy()
    for _ in range(3):
        model.train_step(X, y)
    np.testing.assert_array_equal(model.get_weights()[0], frozen)
    _, grads = model.loss_and_gradients(X, y)
    assert not grads[0].any() and grads[2].any()
    text = model.summary(print_fn=None)
    assert "Frozen params: 48" in text and "Trainable params: 27" in text and "[frozen]" in text
    model.layers[0].trainable = True
    model.train_step(X, y)
    assert not np.array_equal(model.get_weights()[0], frozen)


def test_lr_multiplier_scales_a_layers_updates():
    X, y = np.random.default_rng(4).standard_normal((20, 5)), np.arange(20) % 3
    model = _net(fnn.Activation("relu"))
    model.optimizer = fnn.optim.SGD(lr=0.1)
    model._bound_version = None
    model.layers[0].lr_multiplier = 0.5
    w0 = model.get_weights()
    _, grads = model.loss_and_gradients(X, y)
    model.train_step(X, y)
    np.testing.assert_allclose(model.get_weights()[0], w0[0] - 0.05 * grads[0], rtol=1e-12)
    np.testing.assert_allclose(model.get_weights()[2], w0[2] - 0.1 * grads[2], rtol=1e-12)


def test_no_weight_decay_on_biases_and_norm_parameters():
    X, y = np.random.default_rng(5).standard_normal((20, 5)), np.arange(20) % 3
    model = _net(fnn.BatchNorm(8))
    model.optimizer = fnn.optim.SGD(lr=0.1, weight_decay=0.5, decay_all=False)
    model._bound_version = None
    w0 = model.get_weights()
    _, grads = model.loss_and_gradients(X, y)
    model.train_step(X, y)
    w1 = model.get_weights()
    np.testing.assert_allclose(w1[0], w0[0] - 0.1 * (grads[0] + 0.5 * w0[0]), rtol=1e-12)   # W
    for i in (1, 2, 3):                                                                     # b, gamma, beta
        np.testing.assert_allclose(w1[i], w0[i] - 0.1 * grads[i], rtol=1e-12, atol=1e-15)


def test_save_load_keeps_running_statistics_and_flags(tmp_path):
    X, y = np.random.default_rng(6).standard_normal((40, 5)), np.arange(40) % 3
    model = _net(fnn.BatchNorm(8, momentum=0.3), fnn.PReLU(8), fnn.Dropout(0.2), dtype="float32")
    model.layers[0].trainable = False
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    fnn.save(model, tmp_path / "m.npz")
    loaded = fnn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.layers[1].running_var, model.layers[1].running_var)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.layers[0].trainable is False


@pytest.mark.parametrize("make,match", [
    (lambda: fnn.Dropout(1.0), "p must be in"),
    (lambda: fnn.Dropout(-0.1), "p must be in"),
    (lambda: fnn.GroupNorm(3, 8), "must divide"),
    (lambda: fnn.BatchNorm(8, momentum=2), "momentum"),
    (lambda: fnn.LayerNorm(8, eps=0), "eps"),
    (lambda: _net(fnn.BatchNorm(7)), "BatchNorm\\(7\\) receives 8 features"),
])
def test_bad_layer_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_batchnorm_rejects_a_single_sample_in_training():
    model = _net(fnn.BatchNorm(8))
    before = model.parameters.copy()
    with pytest.raises(ValueError, match="at least 2 samples"):
        model.train_step(np.ones((1, 5)), [0])
    np.testing.assert_array_equal(model.layers[1].running_mean, 0)
    np.testing.assert_array_equal(model.parameters, before)
    with pytest.raises(ValueError, match="last batch of 1 sample"):
        model.fit(np.ones((9, 5)), np.arange(9) % 3, batch_size=4, verbose=0)
    assert model.predict(np.ones((1, 5))).shape == (1, 3)   # inference is fine


def test_norm_kernels_agree_across_thread_counts(dtype):
    """Per-feature sums over the batch run by fixed chunks of rows, added in chunk order:
    1, 2 and 3 threads give the same bits (200 rows: four chunks, the last partial)."""
    rng = np.random.default_rng(11)
    n, d, groups = 200, 100, 4
    x = (rng.standard_normal((n, d)) * 2 + 1).astype(dtype)
    dy = rng.standard_normal((n, d)).astype(dtype)
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    slope = np.full(d, 0.25, dtype)
    results = []
    for threads in (1, 2, 3):
        out = {}
        y, mean, inv_std = np.empty_like(x), np.empty(d), np.empty(d)
        running = np.zeros(d, dtype), np.ones(d, dtype)
        norm.batch_norm_forward(x, gamma, beta, y, mean, inv_std, 1e-5, *running, 0.1, threads)
        dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(beta)
        norm.batch_norm_backward(x, gamma, mean, inv_std, dy, dx, dgamma, dbeta, threads)
        out["bn"] = (y, mean, inv_std, *running, dx, dgamma, dbeta)
        y, mean, inv_std = np.empty_like(x), np.empty((n, groups)), np.empty((n, groups))
        norm.group_norm_forward(x, gamma, beta, y, mean, inv_std, groups, 1e-5, threads)
        dx, dgamma, dbeta = dy.copy(), np.empty_like(gamma), np.empty_like(beta)
        norm.group_norm_backward(x, gamma, mean, inv_std, dx, dx, dgamma, dbeta, groups, threads)
        out["gn"] = (y, dx, dgamma, dbeta)
        dx, dslope = np.empty_like(x), np.empty_like(slope)
        norm.prelu_backward(x, slope, dy, dx, dslope, threads)
        out["prelu"] = (dx, dslope)
        results.append(out)
    for other in results[1:]:
        for kernel, arrays in results[0].items():
            for one, many in zip(arrays, other[kernel]):
                np.testing.assert_array_equal(one, many, err_msg=kernel)
