"""Parity with PyTorch (skipped when torch is not installed): optimizers against torch.optim,
model loss and gradients against torch.autograd for every activation and loss."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn._core.dense import FUSED_ADAM_MAX_BATCH

torch = pytest.importorskip("torch")

OPTIMIZERS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, betas=(0.8, 0.99))),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, weight_decay=0.01)),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
def test_optimizer_matches_torch_over_50_steps(name, kwargs):
    rng = np.random.default_rng(0)
    shapes = [(13, 7), (7,), (1,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) * (1 + t % 3) for s in shapes] for t in range(50)]
    ours = [p.copy() for p in start]
    opt = getattr(fnn.optim, name)(**kwargs)
    theirs = [torch.tensor(p, requires_grad=True) for p in start]
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    for step in grads:
        opt.step(ours, step)
        for tp, g in zip(theirs, step):
            tp.grad = torch.tensor(g)
        topt.step()
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-5)


ACTIVATIONS = [("identity", {}), ("sigmoid", {}), ("tanh", {}), ("relu", {}),
               ("leaky_relu", {"alpha": 0.1}), ("elu", {"alpha": 0.7}), ("softplus", {"beta": 1.5}),
               ("swish", {"beta": 1.0}), ("hard_tanh", {})]


def _torch_activation(name, kw):
    F = torch.nn.functional
    return {"identity": lambda z: z, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu,
            "leaky_relu": lambda z: F.leaky_relu(z, kw.get("alpha")),
            "elu": lambda z: F.elu(z, kw.get("alpha")),
            "softplus": lambda z: F.softplus(z, beta=kw.get("beta"), threshold=1e9),
            "swish": F.silu, "hard_tanh": F.hardtanh}[name]


LOSSES = {
    "softmax_cross_entropy": lambda out, y: torch.nn.functional.cross_entropy(out, y),
    "smoothed_cross_entropy": lambda out, y: torch.nn.functional.cross_entropy(out, y, label_smoothing=0.1),
    "binary_cross_entropy": lambda out, y: torch.nn.functional.binary_cross_entropy_with_logits(out, y),
    "mse": lambda out, y: torch.nn.functional.mse_loss(out, y),
    "mae": lambda out, y: torch.nn.functional.l1_loss(out, y),
    "huber": lambda out, y: torch.nn.functional.huber_loss(out, y, delta=0.5),
    "hinge": lambda out, y: torch.clamp(1 - y * out, min=0).mean(),
    "multiclass_hinge": lambda out, y: torch.nn.functional.multi_margin_loss(out, y),
}


def _loss_and_targets(name, rng, n, k):
    if name in ("softmax_cross_entropy", "multiclass_hinge"):
        return ("hinge" if name == "multiclass_hinge" else name), rng.integers(0, k, n)
    if name == "smoothed_cross_entropy":
        return {"name": "softmax_cross_entropy", "label_smoothing": 0.1}, rng.integers(0, k, n)
    if name == "binary_cross_entropy":
        return name, rng.integers(0, 2, (n, k)).astype(np.float64)
    if name == "hinge":
        return name, rng.choice([-1.0, 1.0], (n, k))
    if name == "huber":
        return {"name": "huber", "delta": 0.5}, rng.standard_normal((n, k))
    return name, rng.standard_normal((n, k))


def _compare_with_autograd(activation, kw, loss_name, l1=0.0, l2=0.0):
    rng = np.random.default_rng(0)
    n, sizes = 17, [5, 8, 6, 4]
    layers = [fnn.Dense(a, b, activation=activation, l1=l1, l2=l2, **kw) for a, b in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fnn.Dense(sizes[-2], sizes[-1]))
    loss, y = _loss_and_targets(loss_name, rng, n, sizes[-1])
    model = fnn.Sequential(layers, loss=loss, dtype="float64", seed=1)
    X = rng.standard_normal((n, sizes[0]))
    value, grads = model.loss_and_gradients(X, y)

    weights = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    h = torch.tensor(X)
    f = _torch_activation(activation, kw)
    for i in range(len(layers)):
        h = h @ weights[2 * i] + weights[2 * i + 1]
        if i < len(layers) - 1:
            h = f(h)
    target = torch.tensor(y)
    t_loss = LOSSES[loss_name](h, target)
    for W in weights[0:-2:2]:
        t_loss = t_loss + l1 * W.abs().sum() + 0.5 * l2 * (W ** 2).sum()
    t_loss.backward()
    np.testing.assert_allclose(value, t_loss.item(), rtol=1e-10)
    for g, w in zip(grads, weights):
        np.testing.assert_allclose(g, w.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation,kw", ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
def test_model_gradients_match_autograd_for_each_activation(activation, kw):
    _compare_with_autograd(activation, kw, "softmax_cross_entropy", l1=0.01, l2=0.1)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_model_gradients_match_autograd_for_each_loss(loss_name):
    _compare_with_autograd("tanh", {}, loss_name)


def test_normalization_network_matches_torch_over_five_steps():
    """Dense-BatchNorm-ReLU-Dense-LayerNorm-PReLU-Dense: forward, loss, gradients and running
    statistics equal PyTorch's over 5 SGD steps."""
    rng = np.random.default_rng(0)
    model = fnn.Sequential([fnn.Dense(6, 10), fnn.BatchNorm(10, momentum=0.2), fnn.Activation("relu"),
                            fnn.Dense(10, 8), fnn.LayerNorm(8), fnn.PReLU(8), fnn.Dense(8, 4)],
                           optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9), dtype="float64", seed=3)
    # non-trivial affine parameters
    for layer in (model.layers[1], model.layers[4]):
        layer.params["gamma"][...] = rng.uniform(0.5, 1.5, layer.num_features)
        layer.params["beta"][...] = rng.standard_normal(layer.num_features) * 0.1
    model.layers[5].params["alpha"][...] = rng.uniform(0, 0.5, 8)
    torch.set_default_dtype(torch.float64)
    try:
        net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.BatchNorm1d(10, momentum=0.2),
                                  torch.nn.ReLU(), torch.nn.Linear(10, 8), torch.nn.LayerNorm(8),
                                  torch.nn.PReLU(8), torch.nn.Linear(8, 4))
    finally:
        torch.set_default_dtype(torch.float32)
    W = model.get_weights()
    with torch.no_grad():
        for param, value in [(net[0].weight, W[0].T), (net[0].bias, W[1]), (net[1].weight, W[2]),
                             (net[1].bias, W[3]), (net[3].weight, W[4].T), (net[3].bias, W[5]),
                             (net[4].weight, W[6]), (net[4].bias, W[7]), (net[5].weight, W[8]),
                             (net[6].weight, W[9].T), (net[6].bias, W[10])]:
            param.copy_(torch.tensor(value))
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    order = [(0, "weight", True), (0, "bias", False), (1, "weight", False), (1, "bias", False),
             (3, "weight", True), (3, "bias", False), (4, "weight", False), (4, "bias", False),
             (5, "weight", False), (6, "weight", True), (6, "bias", False)]
    for step in range(5):
        X, y = rng.standard_normal((16, 6)), rng.integers(0, 4, 16)
        loss, grads = model.loss_and_gradients(X, y)
        out = net(torch.tensor(X))
        t_loss = torch.nn.functional.cross_entropy(out, torch.tensor(y))
        topt.zero_grad()
        t_loss.backward()
        np.testing.assert_allclose(model.forward(X, training=True), out.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-12)
        for g, (i, name, transpose) in zip(grads, order):
            tg = getattr(net[i], name).grad.numpy()
            np.testing.assert_allclose(g, tg.T if transpose else tg, rtol=1e-9, atol=1e-12)
        model.train_step(X, y)
        topt.step()
        np.testing.assert_allclose(model.layers[1].running_mean, net[1].running_mean.numpy(), rtol=1e-10)
        np.testing.assert_allclose(model.layers[1].running_var, net[1].running_var.numpy(), rtol=1e-10)
    net.eval()
    X = rng.standard_normal((5, 6))
    np.testing.assert_allclose(model.forward(X), net(torch.tensor(X)).detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=1e-3)), ("AdamW", dict(lr=1e-3, amsgrad=True))])
def test_fused_weight_update_matches_torch_over_five_steps(name, kwargs):
    """A float32 network whose parameters are updated inside its backward pass (Adam fused
    into the 300 x 256 weight gradient's product, the others' after theirs) trains as PyTorch does. (Over more steps
    or at larger rates float32 rounding sends the two apart, fused or not: Adam normalizes the
    tiny gradients of units near ReLU's kink.)"""
    rng = np.random.default_rng(5)
    model = fnn.Sequential([fnn.Dense(300, 256, activation="relu"), fnn.Dense(256, 10)],
                           optimizer=getattr(fnn.optim, name)(**kwargs), seed=2)
    net = torch.nn.Sequential(torch.nn.Linear(300, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    W = model.get_weights()
    with torch.no_grad():
        for param, value in zip(net.parameters(), [W[0].T, W[1], W[2].T, W[3]]):
            param.copy_(torch.tensor(value))
    topt = getattr(torch.optim, name)(net.parameters(), **kwargs)
    for _ in range(5):
        X, y = rng.standard_normal((64, 300)).astype(np.float32), rng.integers(0, 10, 64)
        model.train_step(X, y)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.tensor(X)), torch.tensor(y)).backward()
        topt.step()
    if FUSED_ADAM_MAX_BATCH:                         # this build fuses: every parameter's update did
        assert len(model._fused_context(64)[1]) == 4
    np.testing.assert_allclose(model.layers[0].params["W"], net[0].weight.detach().numpy().T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.layers[1].params["W"], net[2].weight.detach().numpy().T, rtol=1e-4, atol=1e-5)
