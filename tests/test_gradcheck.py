"""Float64 central-difference gradient checks for every activation and loss."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn.gradcheck import check_gradients, numerical_gradients


def assert_gradients_match(model, X, y, sample_weight=None):
    _, analytic = model.loss_and_gradients(X, y, sample_weight)
    numeric = numerical_gradients(model, X, y, 1e-6, sample_weight)
    for a, b in zip(analytic, numeric):
        # central differences are exact to O(h^2) ~ 1e-12 plus rounding ~ 1e-16 / h ~ 1e-10
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)

ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "swish",
               "silu", "hard_tanh"]


def _model(activation, loss="softmax_cross_entropy", n_out=3, **kw):
    layers = [fnn.Dense(4, 6, activation=activation, init="normal", std=0.8),
              fnn.Dense(6, 5, activation=activation, init="normal", std=0.8, **kw),
              fnn.Dense(5, n_out)]
    return fnn.Sequential(layers, loss=loss, dtype="float64", seed=3)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation(activation):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    assert_gradients_match(_model(activation), X, y)


TARGETS = {
    "softmax_cross_entropy": lambda rng: rng.integers(0, 3, 9),
    "binary_cross_entropy": lambda rng: rng.integers(0, 2, (9, 3)),
    "mse": lambda rng: rng.standard_normal((9, 3)),
    "mae": lambda rng: rng.standard_normal((9, 3)),
    "huber": lambda rng: rng.standard_normal((9, 3)) * 3,
    "hinge": lambda rng: rng.choice([-1, 1], (9, 3)),
}


@pytest.mark.parametrize("loss", sorted(TARGETS))
def test_every_loss(loss):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((9, 4)), TARGETS[loss](rng)
    assert_gradients_match(_model("tanh", loss), X, y)


@pytest.mark.parametrize("loss,y", [
    ({"name": "softmax_cross_entropy", "label_smoothing": 0.2}, np.arange(9) % 3),
    ("softmax_cross_entropy", np.random.default_rng(2).dirichlet(np.ones(3), 9)),
    ("hinge", np.arange(9) % 3),
])
def test_loss_variants(loss, y):
    X = np.random.default_rng(3).standard_normal((9, 4))
    assert_gradients_match(_model("elu", loss), X, y)


def test_weight_penalties_and_sample_weights():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    model = _model("softplus", l1=0.01, l2=0.1)
    assert_gradients_match(model, X, y, sample_weight=rng.uniform(0.5, 2, 9))


def test_numerical_gradients_leave_the_weights_unchanged():
    model = _model("tanh")
    before = model.get_weights()
    numerical_gradients(model, np.ones((2, 4)), [0, 1])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_check_gradients_reports_a_wrong_gradient():
    """check_gradients is small for the true gradient and large when the loss is tampered with."""
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    model = _model("tanh")
    assert check_gradients(model, X, y) < 1e-4
    model.layers[0].l2 = 5.0  # penalty value changes, but Dense.backward also adds its gradient
    assert check_gradients(model, X, y) < 1e-4
    original = model.loss_and_gradients
    model.loss_and_gradients = lambda *a: (original(*a)[0], [2 * g for g in original(*a)[1]])
    assert check_gradients(model, X, y) > 0.1
