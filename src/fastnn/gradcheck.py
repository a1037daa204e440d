"""Gradient checking: compare a model's analytic gradients with central differences."""
import numpy as np

__all__ = ["numerical_gradients", "check_gradients"]


def numerical_gradients(model, X, y, eps=1e-6, sample_weight=None):
    """dL/dw_i ~ (L(w + eps e_i) - L(w - eps e_i)) / (2 eps) for every parameter, in
    get_weights() order. Costs two loss evaluations per parameter: use small models, float64."""
    flat = model.parameters
    saved = flat.copy()
    grad = np.empty(flat.size)
    try:
        for i in range(flat.size):
            flat[i] = saved[i] + eps
            plus, _ = model.loss_and_gradients(X, y, sample_weight)
            flat[i] = saved[i] - eps
            minus, _ = model.loss_and_gradients(X, y, sample_weight)
            flat[i] = saved[i]
            grad[i] = (plus - minus) / (2 * eps)
    finally:
        flat[...] = saved
    return [grad[start:stop].reshape(layer.params[name].shape) for layer, name, start, stop, _ in model._specs]


def check_gradients(model, X, y, eps=1e-6, sample_weight=None):
    """Largest relative difference |g - g_num| / max(|g| + |g_num|, 1e-8) over all parameters."""
    _, analytic = model.loss_and_gradients(X, y, sample_weight)
    numeric = numerical_gradients(model, X, y, eps, sample_weight)
    worst = 0.0
    for a, b in zip(analytic, numeric):
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-8))))
    return worst
