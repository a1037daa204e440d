"""Optimizers: fused kernels equal the NumPy references over 50 steps; torch.optim parity;
convergence on problems with known optima; bad hyperparameters and inputs."""
import numpy as np
import pytest

import fastnn as fnn
import reference as ref
from conftest import assert_close

CASES = {
    "sgd": (fnn.optim.SGD, ref.sgd, dict(lr=0.05)),
    "sgd_momentum": (fnn.optim.SGD, ref.sgd, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd_nesterov": (fnn.optim.SGD, ref.sgd, dict(lr=0.05, momentum=0.9, nesterov=True)),
    "adagrad": (fnn.optim.Adagrad, lambda p, g, s, t, lr, initial_accumulator_value=0.0, **kw:
                ref.adagrad(p, g, s, t, lr, initial=initial_accumulator_value, **kw),
                dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    "rmsprop": (fnn.optim.RMSprop, ref.rmsprop, dict(lr=0.01)),
    "rmsprop_centered_momentum": (fnn.optim.RMSprop, ref.rmsprop,
                                  dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)),
    "adam": (fnn.optim.Adam, ref.adam, dict(lr=0.01, weight_decay=0.01)),
    "adam_amsgrad": (fnn.optim.Adam, ref.adam, dict(lr=0.01, amsgrad=True)),
    "adamw": (fnn.optim.AdamW, lambda *a, **kw: ref.adam(*a, decoupled=True, **kw), dict(lr=0.01, weight_decay=0.1)),
    "radam": (fnn.optim.RAdam, ref.radam, dict(lr=0.01, weight_decay=0.01)),
    "adan": (fnn.optim.Adan, ref.adan, dict(lr=0.01, weight_decay=0.02)),
}


def _grad_sequence(rng, shape, steps):
    return [rng.standard_normal(shape) * (1 + 0.5 * np.sin(t)) for t in range(steps)]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("size", [1, 7, 100003])
def test_kernel_matches_reference_over_50_steps(case, size, dtype, n_threads):
    cls, reference, kwargs = CASES[case]
    rng = np.random.default_rng(size)
    p0 = rng.standard_normal(size)
    grads = _grad_sequence(rng, size, 50)
    p = p0.astype(dtype)
    opt = cls(**kwargs)
    expected, state = p0.copy(), {}
    with fnn.threads(n_threads):
        for t, g in enumerate(grads, start=1):
            opt.step([p], [g.astype(dtype)])
            expected = reference(expected, g.astype(dtype).astype(np.float64), state, t, **kwargs)
    # float32 error accumulates over 50 steps of an adaptive method: compare relative to the path length
    tol = 2e-4 if dtype == np.float32 else 1e-9
    assert_close(p, expected, dtype, scale=float(np.abs(expected - p0).max()) + 1e-3, rtol=tol)


def test_step_on_a_list_of_arrays_keeps_state_per_position(dtype):
    a, b = np.ones(3, dtype), np.ones((2, 2), dtype)
    opt = fnn.optim.SGD(lr=0.1, momentum=0.5)
    for _ in range(2):
        opt.step([a, b], [np.ones(3, dtype), 2 * np.ones((2, 2), dtype)])
    # buffers: g, then 0.5 g + g = 1.5 g -> p = 1 - 0.1 (g + 1.5 g)
    assert_close(a, np.full(3, 1 - 0.25), dtype)
    assert_close(b, np.full((2, 2), 1 - 0.5), dtype)


def test_clip_norm_and_clip_value():
    p = np.zeros(4)
    fnn.optim.SGD(lr=1.0, clip_norm=1.0).step([p], [np.array([3.0, 4.0, 0.0, 0.0])])
    assert_close(p, -np.array([0.6, 0.8, 0, 0]), np.float64, rtol=1e-5)
    p = np.zeros(3)
    fnn.optim.SGD(lr=1.0, clip_value=0.5).step([p], [np.array([3.0, -4.0, 0.1])])
    assert_close(p, -np.array([0.5, -0.5, 0.1]), np.float64)


def test_schedule_as_learning_rate():
    p = np.zeros(1)
    opt = fnn.optim.SGD(lr=fnn.schedules.StepDecay(1.0, step_size=2, gamma=0.5))
    lrs = []
    for _ in range(5):
        lrs.append(opt.current_lr())
        opt.step([p], [np.ones(1)])
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert_close(p, [-sum(lrs)], np.float64)


def test_state_dict_round_trip_resumes_exactly():
    rng = np.random.default_rng(0)
    grads = _grad_sequence(rng, 10, 20)
    p1 = np.ones(10)
    opt1 = fnn.optim.Adam(lr=0.1, amsgrad=True)
    for g in grads[:10]:
        opt1.step([p1], [g])
    p2 = p1.copy()
    opt2 = fnn.optim.Adam(lr=0.1, amsgrad=True)
    opt2.step([p2.copy()], [grads[0]])          # creates state of the right layout
    opt2.load_state_dict(opt1.state_dict())
    for g in grads[10:]:
        opt1.step([p1], [g])
        opt2.step([p2], [g])
    np.testing.assert_array_equal(p1, p2)


# ---- convergence ----------------------------------------------------------------------


def test_gradient_descent_solves_a_convex_quadratic():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((5, 5))
    A = M @ M.T + 5 * np.eye(5)
    b = rng.standard_normal(5)
    x_star = np.linalg.solve(A, b)
    x = np.zeros(5)
    opt = fnn.optim.SGD(lr=1 / np.linalg.eigvalsh(A).max(), momentum=0.5)
    for _ in range(2000):
        opt.step([x], [A @ x - b])
    np.testing.assert_allclose(x, x_star, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad"])
def test_logistic_regression_reaches_the_optimum(name):
    """A Sequential with one Dense layer and BCE is logistic regression; compare with the
    optimum found by scipy's L-BFGS on the same (L2-regularized, strictly convex) objective."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 3))
    y = (X @ [1.5, -2.0, 0.5] + 0.3 + rng.standard_normal(200) > 0).astype(np.float64)
    l2 = 0.1

    def objective(theta):
        z = X @ theta[:3] + theta[3]
        loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * theta[:3] @ theta[:3]
        s = 1 / (1 + np.exp(-z))
        grad = np.concatenate([X.T @ (s - y) / len(y) + l2 * theta[:3], [np.mean(s - y)]])
        return loss, grad

    theta_star = minimize(objective, np.zeros(4), jac=True, method="L-BFGS-B",
                          options={"gtol": 1e-12, "ftol": 1e-15}).x
    lr = {"sgd": 1.0, "adam": 0.05, "rmsprop": 0.01, "adagrad": 0.5}[name]
    model = fnn.Sequential([fnn.Dense(3, 1, l2=l2)], loss="binary_cross_entropy",
                           optimizer=fnn.optim.get(name, lr=lr), dtype="float64")
    steps = 3000 if name == "sgd" else 6000
    for _ in range(steps):
        model.train_step(X, y)
    if name != "sgd":  # adaptive methods hover around the optimum; finish with plain GD
        model.optimizer = fnn.optim.SGD(lr=1.0)
        model._bound_version = None
        for _ in range(2000):
            model.train_step(X, y)
    W, b = model.get_weights()
    np.testing.assert_allclose(np.concatenate([W[:, 0], b]), theta_star, atol=1e-6)


def test_rosenbrock_improves_monotonically_with_small_lr():
    def grad(v):
        x, y = v
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])

    def f(v):
        return (1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2

    v = np.array([-1.2, 1.0])
    opt = fnn.optim.SGD(lr=1e-3)
    values = [f(v)]
    for _ in range(20000):
        opt.step([v], [grad(v)])
        values.append(f(v))
    assert np.all(np.diff(values) <= 0)
    assert values[-1] < 1e-3 * values[0]


# ---- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: fnn.optim.SGD(lr=-0.1), "lr"),
    (lambda: fnn.optim.SGD(lr=0.1, nesterov=True), "nesterov"),
    (lambda: fnn.optim.SGD(lr=0.1, momentum=0.9, dampening=0.5, nesterov=True), "nesterov"),
    (lambda: fnn.optim.SGD(lr=0.1, momentum=-1), "momentum"),
    (lambda: fnn.optim.Adam(betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda: fnn.optim.Adam(betas=(-0.1, 0.9)), r"betas\[0\]"),
    (lambda: fnn.optim.Adam(betas=(0.9,)), "betas"),
    (lambda: fnn.optim.Adam(eps=0.0), "eps"),
    (lambda: fnn.optim.RMSprop(eps=-1e-8), "eps"),
    (lambda: fnn.optim.Adagrad(eps=0), "eps"),
    (lambda: fnn.optim.AdamW(weight_decay=-1), "weight_decay"),
    (lambda: fnn.optim.Adan(betas=(0.9, 0.9)), "betas"),
    (lambda: fnn.optim.Adam(clip_norm=0), "clip_norm"),
    (lambda: fnn.optim.get("adamx"), "unknown optimizer"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_params_and_grads_must_match():
    opt = fnn.optim.Adam()
    p = np.zeros(3)
    with pytest.raises(ValueError, match="grads\\[0\\] has shape"):
        opt.step([p], [np.zeros(4)])
    with pytest.raises(ValueError, match="grads\\[0\\] has shape .* dtype"):
        opt.step([p], [np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match="1 params but 2 grads"):
        opt.step([p], [np.zeros(3), np.zeros(3)])
    with pytest.raises(TypeError, match="params\\[0\\]"):
        opt.step([np.zeros(3, np.int64)], [np.zeros(3, np.int64)])
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step([np.zeros((3, 4))[:, ::2]], [np.zeros((3, 2))])
    np.testing.assert_array_equal(p, 0)


def test_denormal_state_is_flushed_and_the_callers_mode_restored():
    """Kernels run with flush-to-zero (denormals cost a microcode assist per operation);
    the calling thread's floating-point mode is left as it was."""
    tiny = np.float32(1e-39)                     # a float32 denormal
    p = np.ones(100_000, np.float32)
    m = np.full_like(p, tiny)
    v = np.ones_like(p)
    from fastnn._core import optim as kernels
    kernels.adam_step(p, np.zeros_like(p), m, v, None, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 1000,
                      1.0, np.inf, 1)
    assert not m.any()                           # 0.9 * denormal flushed to 0
    assert np.float32(1e-39) * np.float32(1.0) != 0   # numpy still sees denormals


@pytest.mark.parametrize("size", [1, 15, 17, 1000])
def test_adam_float32_with_value_clipping_matches_reference(size):
    """The float32 Adam path (AVX-512 estimates + Newton steps where available) with clipping,
    weight decay and amsgrad, over sizes that leave vector tails."""
    rng = np.random.default_rng(size)
    p0 = rng.standard_normal(size)
    p = p0.astype(np.float32)
    opt = fnn.optim.Adam(lr=0.01, weight_decay=0.1, amsgrad=True, clip_value=0.5)
    expected, state = p0.copy(), {}
    for t in range(1, 31):
        g = (rng.standard_normal(size) * 2).astype(np.float32)
        g[::3] = 0.0                       # v stays 0 for some entries: sqrt(0) must give 0
        opt.step([p], [g])
        clipped = np.clip(g.astype(np.float64), -0.5, 0.5)
        expected = ref.adam(expected, clipped, state, t, lr=0.01, weight_decay=0.1, amsgrad=True)
    assert_close(p, expected, np.float32, scale=float(np.abs(expected - p0).max()) + 1e-3, rtol=2e-4)


@pytest.mark.parametrize("size", [1, 17, 1000])
def test_adam_float32_plain_update_matches_the_general_one(size):
    """Without scaling, clipping, weight decay or amsgrad the float32 kernel skips those steps;
    a clip no gradient reaches takes the general path: both must agree bit for bit."""
    rng = np.random.default_rng(size)
    start = rng.standard_normal(size).astype(np.float32)
    plain, general = start.copy(), start.copy()
    plain_opt, general_opt = fnn.optim.Adam(lr=0.01), fnn.optim.Adam(lr=0.01, clip_value=1e30)
    for _ in range(5):
        g = rng.standard_normal(size).astype(np.float32)
        plain_opt.step([plain], [g])
        general_opt.step([general], [g])
    np.testing.assert_array_equal(plain, general)
    assert np.all(plain != start)


def test_adam_float32_zero_gradient_leaves_parameters_unchanged():
    p = np.linspace(-1, 1, 37).astype(np.float32)
    before = p.copy()
    opt = fnn.optim.Adam(lr=0.1)
    for _ in range(3):
        opt.step([p], [np.zeros_like(p)])
    np.testing.assert_array_equal(p, before)   # m = v = 0: sqrt(0) = 0, no NaN
