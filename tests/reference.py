"""The NumPy oracle: a plain transcription of every formula fastnn's kernels compute.

Everything here is computed in float64 from the textbook formula, written for clarity,
not speed. Tests compare the fused kernels against these functions.
"""
import numpy as np

# ---- activations: f(z) and f'(z) --------------------------------------------------------


def _real(z):
    """z in float64, or in long double when given in long double (the float64 kernels' oracle)."""
    z = np.asarray(z)
    return z.astype(np.promote_types(z.dtype, np.float64), copy=False)


def sigmoid(z):
    z = _real(z)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1 / (1 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1 + e)
    return out


def softplus(z):
    """log(1 + e^z), stable."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def activation(name, z, a=None):
    z = _real(z)
    if name == "identity":
        return z.copy()
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, a * z)
    if name == "elu":
        return np.where(z > 0, z, a * np.expm1(np.minimum(z, 0)))
    if name == "softplus":
        return softplus(a * z) / a
    if name in ("swish", "silu"):
        return z * sigmoid(a * z)
    if name == "hard_tanh":
        return np.clip(z, -1, 1)
    raise ValueError(name)


def activation_derivative(name, z, a=None):
    z = _real(z)
    if name == "identity":
        return np.ones_like(z)
    if name == "sigmoid":
        s = sigmoid(z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, a)
    if name == "elu":
        return np.where(z > 0, 1.0, a * np.exp(np.minimum(z, 0)))
    if name == "softplus":
        return sigmoid(a * z)
    if name in ("swish", "silu"):
        s = sigmoid(a * z)
        return s + a * z * s * (1 - s)
    if name == "hard_tanh":
        return ((z > -1) & (z < 1)).astype(np.float64)
    raise ValueError(name)


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(z):
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


# ---- dense layer ------------------------------------------------------------------------


def dense_forward(x, W, b, name="identity", a=None):
    z = x.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    return z, activation(name, z, a)


def dense_backward(x, W, z, dy, name="identity", a=None):
    """(dz, dW, db, dx) for y = f(x W + b) given dy = dL/dy."""
    dz = dy.astype(np.float64) * activation_derivative(name, z, a)
    x = x.astype(np.float64)
    return dz, x.T @ dz, dz.sum(axis=0), dz @ W.astype(np.float64).T


# ---- losses: (mean loss, dL/dz) ----------------------------------------------------------


def _weights(n, sample_weight):
    return np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)


def softmax_cross_entropy(z, labels=None, targets=None, label_smoothing=0.0, sample_weight=None):
    """mean_i w_i [-sum_c q_ic log softmax(z_i)_c] / mean w, q = (1 - a) onehot + a / C."""
    z = np.asarray(z, dtype=np.float64)
    n, k = z.shape
    q = np.eye(k)[labels] if labels is not None else np.asarray(targets, dtype=np.float64)
    q = (1 - label_smoothing) * q + label_smoothing / k
    w = _weights(n, sample_weight)
    log_p = z - logsumexp(z)[:, None]
    per_row = -(q * log_p).sum(axis=1)
    p = softmax(z)
    grad = (p * q.sum(axis=1, keepdims=True) - q) * (w / w.sum())[:, None]
    return float((w * per_row).sum() / w.sum()), grad


def binary_cross_entropy(z, t, sample_weight=None):
    """mean over elements of -[t log s(z) + (1 - t) log(1 - s(z))], written on logits."""
    z, t = np.asarray(z, np.float64), np.asarray(t, np.float64)
    per = softplus(z) - z * t
    return _elementwise_mean(per, sigmoid(z) - t, sample_weight)


def _elementwise_mean(per_element, d_per_element, sample_weight):
    n, k = per_element.shape
    w = _weights(n, sample_weight)
    scale = w / (w.sum() * k)
    return float((per_element.sum(axis=1) * w).sum() / (w.sum() * k)), d_per_element * scale[:, None]


def mse(z, t, sample_weight=None):
    d = np.asarray(z, np.float64) - np.asarray(t, np.float64)
    return _elementwise_mean(d ** 2, 2 * d, sample_weight)


def mae(z, t, sample_weight=None):
    d = np.asarray(z, np.float64) - np.asarray(t, np.float64)
    return _elementwise_mean(np.abs(d), np.sign(d), sample_weight)


def huber(z, t, delta=1.0, sample_weight=None):
    d = np.asarray(z, np.float64) - np.asarray(t, np.float64)
    small = np.abs(d) <= delta
    per = np.where(small, 0.5 * d ** 2, delta * (np.abs(d) - 0.5 * delta))
    return _elementwise_mean(per, np.where(small, d, delta * np.sign(d)), sample_weight)


def binary_hinge(z, t, sample_weight=None):
    z, t = np.asarray(z, np.float64), np.asarray(t, np.float64)
    margin = 1 - t * z
    return _elementwise_mean(np.maximum(margin, 0), np.where(margin > 0, -t, 0.0), sample_weight)


def multiclass_hinge(z, labels, sample_weight=None):
    """torch.nn.MultiMarginLoss(p=1, margin=1): sum_{c != y} max(0, 1 - z_y + z_c) / C."""
    z = np.asarray(z, np.float64)
    n, k = z.shape
    w = _weights(n, sample_weight)
    zy = z[np.arange(n), labels][:, None]
    margin = 1 - zy + z
    margin[np.arange(n), labels] = 0
    active = margin > 0
    per_row = np.where(active, margin, 0).sum(axis=1) / k
    grad = active / k
    grad[np.arange(n), labels] = -active.sum(axis=1) / k
    grad *= (w / w.sum())[:, None]
    return float((w * per_row).sum() / w.sum()), grad


def penalty(W, l1, l2):
    """(l1 sum|W| + l2/2 sum W^2, its gradient)."""
    W = np.asarray(W, np.float64)
    return float(l1 * np.abs(W).sum() + 0.5 * l2 * (W ** 2).sum()), l1 * np.sign(W) + l2 * W


# ---- optimizers: one step, state dicts updated in place ----------------------------------


def _condition(g, p, grad_scale=1.0, clip_value=np.inf, weight_decay=0.0):
    return np.clip(g * grad_scale, -clip_value, clip_value) + weight_decay * p


def sgd(p, g, state, t, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    g = _condition(g, p, weight_decay=weight_decay)
    if momentum:
        b = g.copy() if t == 1 else momentum * state["b"] + (1 - dampening) * g
        state["b"] = b
        g = g + momentum * b if nesterov else b
    return p - lr * g


def adagrad(p, g, state, t, lr, lr_decay=0.0, eps=1e-10, weight_decay=0.0, initial=0.0):
    g = _condition(g, p, weight_decay=weight_decay)
    state["s"] = state.get("s", np.full_like(p, initial)) + g * g
    return p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(state["s"]) + eps)


def rmsprop(p, g, state, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    g = _condition(g, p, weight_decay=weight_decay)
    state["v"] = alpha * state.get("v", 0 * p) + (1 - alpha) * g * g
    v = state["v"]
    if centered:
        state["gbar"] = alpha * state.get("gbar", 0 * p) + (1 - alpha) * g
        v = v - state["gbar"] ** 2
    d = g / (np.sqrt(v) + eps)
    if momentum:
        state["b"] = momentum * state.get("b", 0 * p) + d
        return p - lr * state["b"]
    return p - lr * d


def adam(p, g, state, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
         decoupled=False):
    """Textbook Adam: m_hat / (sqrt(v_hat) + eps); AdamW when decoupled."""
    b1, b2 = betas
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    state["m"] = b1 * state.get("m", 0 * p) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0 * p) + (1 - b2) * g * g
    v = state["v"]
    if amsgrad:
        state["vmax"] = np.maximum(state.get("vmax", 0 * p), v)
        v = state["vmax"]
    m_hat = state["m"] / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def radam(p, g, state, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    g = g + weight_decay * p
    state["m"] = b1 * state.get("m", 0 * p) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0 * p) + (1 - b2) * g * g
    m_hat = state["m"] / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho_t > 5:
        r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        # torch: the adaptive rate is sqrt(1 - b2^t) / (sqrt(v) + eps), eps outside the correction
        return p - lr * m_hat * r * np.sqrt(1 - b2 ** t) / (np.sqrt(state["v"]) + eps)
    return p - lr * m_hat


def adan(p, g, state, t, lr, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0):
    b1, b2, b3 = betas
    d = 0 * g if t == 1 else g - state["prev"]
    state["prev"] = g.copy()
    state["m"] = b1 * state.get("m", 0 * p) + (1 - b1) * g
    state["n"] = b2 * state.get("n", 0 * p) + (1 - b2) * d
    state["v"] = b3 * state.get("v", 0 * p) + (1 - b3) * (g + b2 * d) ** 2
    u = (state["m"] / (1 - b1 ** t) + b2 * state["n"] / (1 - b2 ** t)) / (
        np.sqrt(state["v"] / (1 - b3 ** t)) + eps)
    return (p - lr * u) / (1 + lr * weight_decay)


# ---- normalization, PReLU, dropout -------------------------------------------------------


def batch_norm(x, gamma, beta, eps):
    """(y, mean, biased var) over the batch axis."""
    x = np.asarray(x, np.float64)
    mean, var = x.mean(axis=0), x.var(axis=0)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, mean, var


def batch_norm_backward(x, gamma, dy, eps):
    """(dx, dgamma, dbeta), from the chain rule written out term by term."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    dxhat = dy * gamma
    dvar = np.sum(dxhat * (x - mean), axis=0) * -0.5 * inv ** 3
    dmean = -np.sum(dxhat * inv, axis=0) + dvar * np.mean(-2 * (x - mean), axis=0)
    dx = dxhat * inv + dvar * 2 * (x - mean) / n + dmean / n
    return dx, np.sum(dy * xhat, axis=0), dy.sum(axis=0)


def group_norm(x, gamma, beta, groups, eps):
    x = np.asarray(x, np.float64)
    n, d = x.shape
    g = x.reshape(n, groups, d // groups)
    xhat = ((g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + eps)).reshape(n, d)
    return gamma * xhat + beta


def group_norm_backward(x, gamma, dy, groups, eps):
    """Batch-norm's backward applied to each (sample, group) block, transposed."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    n, d = x.shape
    m = d // groups
    dx = np.empty_like(x)
    for i in range(n):
        for g in range(groups):
            cols = slice(g * m, (g + 1) * m)
            block_dx, _, _ = batch_norm_backward(x[i, cols][:, None], gamma[cols][:, None], dy[i, cols][:, None], eps)
            dx[i, cols] = block_dx[:, 0]
    xhat = (group_norm(x, np.ones(d), np.zeros(d), groups, eps))
    return dx, np.sum(dy * xhat, axis=0), dy.sum(axis=0)


def prelu(x, a):
    return np.where(x > 0, x, a * x)


def prelu_backward(x, a, dy):
    return np.where(x > 0, dy, a * dy), np.sum(np.where(x > 0, 0, dy * x), axis=0)
