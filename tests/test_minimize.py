"""Second- and zero-order full-batch minimization (fnn.optim.minimize)."""
import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

import fastnn as fnn


def logistic_problem(seed=0, n=80):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = (X @ [1.0, -2.0, 0.5] + 0.2 * rng.standard_normal(n) > 0).astype(np.float64)
    return X, y


def logistic_model():
    return fnn.Sequential([fnn.Dense(3, 1, l2=0.05)], loss="binary_cross_entropy", dtype="float64")


def scipy_optimum(X, y, l2=0.05):
    def f(theta):
        z = X @ theta[:3] + theta[3]
        s = 1 / (1 + np.exp(-z))
        loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * theta[:3] @ theta[:3]
        return loss, np.concatenate([X.T @ (s - y) / len(y) + l2 * theta[:3], [np.mean(s - y)]])
    result = scipy_minimize(f, np.zeros(4), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
    return result.x, result.fun


@pytest.mark.parametrize("method", ["newton", "lbfgs"])
def test_second_order_methods_reach_the_optimum(method):
    X, y = logistic_problem()
    model = logistic_model()
    result = fnn.optim.minimize(model, X, y, method=method, max_iter=200, tol=1e-9)
    theta_star, loss_star = scipy_optimum(X, y)
    W, b = model.get_weights()
    np.testing.assert_allclose(np.concatenate([W[:, 0], b]), theta_star, atol=1e-6)
    assert result.loss == pytest.approx(loss_star, abs=1e-10) and result.converged
    if method == "newton":
        assert result.n_iter <= 10          # quadratic convergence


@pytest.mark.parametrize("method", ["random", "es"])
def test_zero_order_methods_decrease_the_loss(method):
    X, y = logistic_problem(1)
    model = logistic_model()
    start = model.evaluate(X, y)["loss"]
    result = fnn.optim.minimize(model, X, y, method=method, max_iter=60, sigma=0.3, population=10, seed=0)
    assert result.loss < 0.7 * start
    assert result.loss == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-9)
    assert all(b <= a + 1e-12 for a, b in zip(result.history, result.history[1:])) or method == "es"


def test_newton_on_a_small_network_and_guards():
    X, y = logistic_problem(2)
    net = fnn.Sequential([fnn.Dense(3, 4, activation="tanh"), fnn.Dense(4, 2)], dtype="float64", seed=1)
    labels = y.astype(int)
    before = net.evaluate(X, labels)["loss"]
    result = fnn.optim.minimize(net, X, labels, method="newton", max_iter=15)
    assert result.loss < before
    big = fnn.Sequential([fnn.Dense(3, 1000), fnn.Dense(1000, 2)])
    with pytest.raises(ValueError, match="max_params"):
        fnn.optim.minimize(big, X, labels, method="newton")
    with pytest.raises(ValueError, match="unknown method"):
        fnn.optim.minimize(net, X, labels, method="bfgs")
