"""Layers. Each owns views into its model's flat parameter and gradient buffers and
reuses its workspaces across steps of the same batch size (no allocation per step)."""
from abc import ABC, abstractmethod

import numpy as np

from . import init as _init
from ._core import _blas
from ._core import activations as _act
from ._core import dense as _dense
from ._core import losses as _losses
from ._core import norm as _norm
from ._core import random as _random
from ._buffers import aligned_zeros
from ._validation import check_number, require_finite

__all__ = ["Layer", "Dense", "Activation", "Dropout", "GaussianNoise", "BatchNorm", "LayerNorm",
           "GroupNorm", "PReLU", "ACTIVATIONS"]

_MAX_SHAPES = 16

# activation name -> (kernel code, name of its parameter, default value, torch default)
ACTIVATIONS = {
    "identity": ("identity", None, 0.0),
    "sigmoid": ("sigmoid", None, 0.0),
    "tanh": ("tanh", None, 0.0),
    "relu": ("relu", None, 0.0),
    "leaky_relu": ("leaky_relu", "alpha", 0.01),
    "elu": ("elu", "alpha", 1.0),
    "softplus": ("softplus", "beta", 1.0),
    "swish": ("swish", "beta", 1.0),
    "silu": ("swish", "beta", 1.0),
    "hard_tanh": ("hard_tanh", None, 0.0),
}


def resolve_activation(name, kwargs):
    """(canonical name, kernel code, parameter value, config dict) for an activation name."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    kernel, pname, default = ACTIVATIONS[name]
    unknown = set(kwargs) - ({pname} if pname else set())
    if unknown:
        allowed = f"only {pname!r}" if pname else "no parameters"
        raise ValueError(f"activation {name!r} takes {allowed}, got {sorted(unknown)}")
    value = default
    if pname:
        value = check_number(kwargs.get(pname, default), f"{name} {pname}")
        if pname == "beta" and value <= 0:
            raise ValueError(f"{name} beta must be > 0, got {value}")
    config = {pname: value} if pname else {}
    return name, _act.KINDS[kernel], value, config


def _nonnegative(value, name):
    return check_number(value, name, low=0.0)


class _GroupSetting:
    """A layer attribute that shapes its model's parameter groups (trainable, lr_multiplier,
    l1, l2), stored as `_name` after convert(value, name) checks it: setting it bumps
    Layer.groups_version, so that models rebuild their optimizer's groups and what their
    backward pass updates."""

    def __init__(self, convert):
        self.convert = convert

    def __set_name__(self, owner, name):
        self.name, self.attr = name, "_" + name

    def __get__(self, layer, owner=None):
        return self if layer is None else getattr(layer, self.attr)

    def __set__(self, layer, value):
        self.initialize(layer, value)
        Layer.groups_version += 1

    def initialize(self, layer, value):
        """Set without the bump: a layer under construction is in no model yet."""
        setattr(layer, self.attr, self.convert(value, self.name))


class Layer(ABC):
    """Base class. Subclasses define build, forward and backward; parameters are declared
    by param_specs() as (name, shape, decay) and arrive as views in self.params/self.grads.

    `trainable = False` freezes the layer (its parameters get no gradient and no update);
    `lr_multiplier` scales the optimizer's learning rate for this layer's parameters.
    """

    # Bumped whenever any layer's trainable flag, lr multiplier or penalty changes, so a model
    # can tell in O(1) that its optimizer's parameter groups, or which of their updates its
    # backward pass applies (no layer penalized), need rebuilding.
    groups_version = 0

    def __init__(self):
        self.params = {}
        self.grads = {}
        self._workspace = {}
        self._trainable = True
        self._lr_multiplier = 1.0

    trainable = _GroupSetting(lambda value, name: bool(value))
    lr_multiplier = _GroupSetting(_nonnegative)

    # -- construction -------------------------------------------------------------------
    def build(self, input_dim, dtype):
        """Check the input width, remember dtype and return the output width."""
        self.dtype = dtype
        self.input_dim = input_dim
        return input_dim

    def param_specs(self):
        """[(name, shape, decay)] of trainable arrays; decay=False for biases/norm params."""
        return []

    def calls_blas(self, batch):
        """Whether a forward or backward pass over `batch` rows calls BLAS."""
        return False

    def init_params(self, rng):
        """Fill self.params from the model's generator."""

    @abstractmethod
    def get_config(self):
        """Constructor arguments that rebuild this layer (JSON-serializable)."""

    # -- computation --------------------------------------------------------------------
    @abstractmethod
    def forward(self, x, ctx):
        """Output for input x (n, input_dim); keeps what backward needs."""

    @abstractmethod
    def backward(self, dy, ctx, need_dx):
        """Given dL/dy, write parameter gradients into self.grads; return dL/dx (or None)."""

    def penalty(self):
        """Weight-penalty value added to the loss (0 for layers without one)."""
        return 0.0

    @property
    def penalized(self):
        """Whether penalty() can be nonzero."""
        return False

    # the trainable array whose optimizer update backward() can apply itself (ctx.updates)
    fused_update = None

    def state_arrays(self):
        """Non-trainable arrays saved with the model (e.g. BatchNorm running statistics)."""
        return {}

    def load_state_arrays(self, arrays):
        """Restore what state_arrays() returned (shapes already checked by the caller)."""
        for name, value in arrays.items():
            getattr(self, name)[...] = value

    def _buffer(self, name, shape, dtype=None):
        """A workspace array (the layer's dtype unless given), allocated once per (name, shape)
        and reused afterwards.

        fit alternates between two batch shapes (full and last partial batch), so a few
        shapes are kept; beyond _MAX_SHAPES the workspace starts over. 64-byte aligned, so
        that threads splitting its rows' columns at multiples of 16 share no cache line.
        """
        key = (name, shape)
        buf = self._workspace.get(key)
        if buf is None:
            if len(self._workspace) >= _MAX_SHAPES:
                self._workspace.clear()
            buf = self._workspace[key] = aligned_zeros(shape, self.dtype if dtype is None else dtype)
        return buf

    def describe(self):
        """Short description for model.summary()."""
        return type(self).__name__

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer: y = f(x W + b), W stored (in_features, out_features).

    l1 and l2 add l1 * sum|W| + (l2 / 2) * sum W^2 to the loss (weights only, not b).
    """

    def __init__(self, in_features, out_features, activation="identity", init="glorot_uniform",
                 l1=0.0, l2=0.0, std=0.01, **activation_kwargs):
        super().__init__()
        self.in_features = check_number(in_features, "in_features", low=1, integer=True)
        self.out_features = check_number(out_features, "out_features", low=1, integer=True)
        self.activation, self._kind, self._a, self._act_config = resolve_activation(
            activation, activation_kwargs)
        # the pre-activation z = x W + b is kept only when f' cannot be computed from f
        self._keep_z = _act.input_needed(self._kind, self._a)
        self._init = _init.get(init, std)
        self.init = init if isinstance(init, str) else getattr(init, "__name__", "custom")
        self.std = std
        Dense.l1.initialize(self, l1)
        Dense.l2.initialize(self, l2)

    def build(self, input_dim, dtype):
        if input_dim != self.in_features:
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) receives "
                             f"{input_dim} features from the previous layer; set in_features={input_dim}")
        super().build(input_dim, dtype)
        return self.out_features

    def calls_blas(self, batch):
        # the products X W, X^T dZ and dZ W^T (the ones BLAS does not get go to fastnn's kernels)
        n, k, m = batch, self.in_features, self.out_features
        return any(_blas.calls_blas(self.dtype, ta, tb, rows, cols, inner)
                   for ta, tb, rows, cols, inner in ((False, False, n, m, k), (True, False, k, m, n),
                                                     (False, True, n, k, m)))

    def param_specs(self):
        return [("W", (self.in_features, self.out_features), True),
                ("b", (self.out_features,), False)]

    def init_params(self, rng):
        self.params["W"][...] = self._init(rng, (self.in_features, self.out_features))
        self.params["b"][...] = 0

    def describe(self):
        return f"Dense({self.in_features} -> {self.out_features}, {self.activation})"

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "init": self.init, "l1": self.l1, "l2": self.l2,
                "std": self.std, **self._act_config}

    def forward(self, x, ctx, unchecked=None):
        """unchecked: x's name when x is not yet checked for NaN and infinity; the product's
        epilogue does that on the way (no pass over x of its own where it proves x finite)."""
        n = x.shape[0]
        y = self._buffer("y", (n, self.out_features))
        z = self._buffer("z", (n, self.out_features)) if self._keep_z else None
        params = self.params
        proven = _dense.dense_forward(x, params["W"], params["b"], z, y, self._kind, self._a, ctx.n_threads,
                                      unchecked is not None)
        if unchecked is not None:
            require_finite(x, unchecked, proven)
        self._x, self._z, self._y = x, z, y
        return y

    def stack_arrays(self, n, need_dx, states=None):
        """This layer's entry of a fastnn._core.dense.DenseStack over batches of n rows (its
        workspace, weights and gradients, as forward and backward use them); states:
        {"W" or "b": the Adam state the stack's backward pass updates it with}."""
        trainable, states = self.trainable, states or {}
        return (self.params["W"], self.params["b"],
                self._buffer("z", (n, self.out_features)) if self._keep_z else None,
                self._buffer("y", (n, self.out_features)),
                self.grads["W"] if trainable else None, self.grads["b"] if trainable else None,
                self._buffer("dx", (n, self.in_features)) if need_dx else None, self._kind, self._a,
                states.get("W"), states.get("b"))

    fused_update = "W"

    l1 = _GroupSetting(_nonnegative)
    l2 = _GroupSetting(_nonnegative)

    @property
    def penalized(self):
        return bool(self._l1 or self._l2)

    def backward(self, dy, ctx, need_dx):
        """With ctx.updates[self] (the optimizer's update of W, Sequential._fused_context), W is
        updated from its gradient as the gradient is computed (grads["W"] is not written)."""
        dx = self._buffer("dx", self._x.shape) if need_dx else None
        dW, db = (self.grads["W"], self.grads["b"]) if self.trainable else (None, None)
        update = ctx.updates.get(self) if ctx.updates else None
        W = self.params["W"]
        _dense.dense_backward(self._x, W, self._z, self._y, dy, dW, db, dx, self._kind, self._a,
                              ctx.n_threads, None if update is None else (W,) + update)
        self.add_penalty(ctx)
        return dx

    def add_penalty(self, ctx):
        """With l1 or l2 (trainable): their gradient added to grads["W"], their value to ctx.penalty."""
        if self.trainable and self.penalized:
            ctx.penalty += _losses.penalty(self.params["W"].reshape(-1), self.grads["W"].reshape(-1),
                                           self.l1, self.l2, ctx.n_threads)

    def penalty(self):
        if not (self.l1 or self.l2):
            return 0.0
        W = self.params["W"].astype(np.float64)
        return float(self.l1 * np.abs(W).sum() + 0.5 * self.l2 * np.square(W).sum())


class Activation(Layer):
    """y = f(x) elementwise; `Activation("leaky_relu", alpha=0.1)`."""

    def __init__(self, activation, **kwargs):
        super().__init__()
        self.activation, self._kind, self._a, self._act_config = resolve_activation(activation, kwargs)

    def get_config(self):
        return {"activation": self.activation, **self._act_config}

    def describe(self):
        return f"Activation({self.activation})"

    def forward(self, x, ctx):
        if self._kind == 0:
            self._x = self._y = x
            return x
        y = self._buffer("y", x.shape)
        _act.activation_forward(x.reshape(-1), y.reshape(-1), self._kind, self._a, ctx.n_threads)
        self._x, self._y = x, y
        return y

    def backward(self, dy, ctx, need_dx):
        if need_dx and self._kind != 0:
            x = self._x.reshape(-1) if _act.input_needed(self._kind, self._a) else None
            _act.activation_backward(self._y.reshape(-1), dy.reshape(-1), dy.reshape(-1), x,
                                     self._kind, self._a, ctx.n_threads)
        return dy if need_dx else None


class Dropout(Layer):
    """Inverted dropout: in training each input is kept with probability 1 - p and scaled by
    1 / (1 - p); at inference the layer is the identity. Masks come from a counter-based
    RNG keyed by (model seed, layer position, step), so they do not depend on threads.
    Placed first, it drops inputs (the lecture's p_keep = 0.8 is Dropout(0.2))."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = check_number(p, "p", 0.0, 1.0, high_open=True)

    def get_config(self):
        return {"p": self.p}

    def describe(self):
        return f"Dropout({self.p:g})"

    def forward(self, x, ctx):
        if not ctx.training or self.p == 0:
            self._mask = None
            return x
        y = self._buffer("y", x.shape)
        mask = self._buffer("mask", x.shape, np.uint8)
        _random.dropout_forward(x.reshape(-1), y.reshape(-1), mask.reshape(-1), self.p,
                                ctx.seed, self.stream, ctx.step, ctx.n_threads)
        self._mask = mask
        return y

    def backward(self, dy, ctx, need_dx):
        if need_dx and self._mask is not None:
            _random.dropout_backward(dy.reshape(-1), self._mask.reshape(-1), dy.reshape(-1),
                                     self.p, ctx.n_threads)
        return dy if need_dx else None


class GaussianNoise(Layer):
    """Adds N(0, std^2) noise to its input in training (data augmentation); identity at inference."""

    def __init__(self, std):
        super().__init__()
        self.std = check_number(std, "std", low=0.0)

    def get_config(self):
        return {"std": self.std}

    def describe(self):
        return f"GaussianNoise({self.std:g})"

    def forward(self, x, ctx):
        if not ctx.training or self.std == 0:
            return x
        y = self._buffer("y", x.shape)
        _random.gaussian_noise(x.reshape(-1), y.reshape(-1), self.std, ctx.seed, self.stream,
                               ctx.step, ctx.n_threads)
        return y

    def backward(self, dy, ctx, need_dx):
        return dy if need_dx else None


class _Normalization(Layer):
    """Shared parts of the normalization layers: width check, gamma/beta parameters."""

    def __init__(self, num_features, eps, affine=True):
        super().__init__()
        self.num_features = check_number(num_features, "num_features", low=1, integer=True)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self.affine = bool(affine)

    def build(self, input_dim, dtype):
        if input_dim != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) receives {input_dim} "
                             f"features from the previous layer; use {type(self).__name__}({input_dim})")
        if not self.affine:
            self._gamma = np.ones(self.num_features, dtype)
            self._beta = np.zeros(self.num_features, dtype)
        return super().build(input_dim, dtype)

    def param_specs(self):
        if not self.affine:
            return []
        return [("gamma", (self.num_features,), False), ("beta", (self.num_features,), False)]

    def init_params(self, rng):
        if self.affine:
            self.params["gamma"][...] = 1
            self.params["beta"][...] = 0

    def _affine(self):
        if self.affine:
            return self.params["gamma"], self.params["beta"]
        return self._gamma, self._beta

    def _affine_grads(self):
        if self.affine:
            return self.grads["gamma"], self.grads["beta"]
        return self._buffer("dgamma", (self.num_features,)), self._buffer("dbeta", (self.num_features,))


class BatchNorm(_Normalization):
    """Batch normalization (Ioffe & Szegedy 2015) over the batch, per feature.

    Training: normalize with the batch mean and biased variance, and update
    running = (1 - momentum) running + momentum * batch (with the unbiased variance),
    as torch.nn.BatchNorm1d does. Inference: normalize with the running statistics.
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, affine=True):
        super().__init__(num_features, eps, affine)
        self.momentum = check_number(momentum, "momentum", 0.0, 1.0)
        self.running_mean = np.zeros(self.num_features)
        self.running_var = np.ones(self.num_features)

    def build(self, input_dim, dtype):
        out = super().build(input_dim, dtype)
        self.running_mean = self.running_mean.astype(dtype)
        self.running_var = self.running_var.astype(dtype)
        return out

    def get_config(self):
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps,
                "affine": self.affine}

    def describe(self):
        return f"BatchNorm({self.num_features})"

    def state_arrays(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def forward(self, x, ctx):
        n, d = x.shape
        y = self._buffer("y", x.shape)
        gamma, beta = self._affine()
        if not ctx.training:
            scale = (gamma / np.sqrt(self.running_var + self.eps)).astype(self.dtype)
            shift = (beta - self.running_mean * scale).astype(self.dtype)
            _norm.scale_shift(x, scale, shift, y, ctx.n_threads)
            return y
        if n < 2:
            raise ValueError("BatchNorm needs at least 2 samples per batch in training (the batch "
                             "variance of 1 sample is undefined); use a larger batch_size")
        mean, inv_std = self._buffer("mean", (d,), np.float64), self._buffer("inv_std", (d,), np.float64)
        running = (self.running_mean, self.running_var) if ctx.update_stats else (None, None)
        _norm.batch_norm_forward(x, gamma, beta, y, mean, inv_std, self.eps, *running, self.momentum,
                                 ctx.n_threads)
        self._x, self._mean, self._inv_std = x, mean, inv_std
        return y

    def backward(self, dy, ctx, need_dx):
        gamma, _ = self._affine()
        dgamma, dbeta = self._affine_grads()
        _norm.batch_norm_backward(self._x, gamma, self._mean, self._inv_std, dy, dy, dgamma, dbeta,
                                  ctx.n_threads)
        return dy if need_dx else None


class GroupNorm(_Normalization):
    """Group normalization (Wu & He 2018): per sample, over `num_groups` groups of
    consecutive features, with a per-feature affine transform (torch.nn.GroupNorm on (N, C))."""

    def __init__(self, num_groups, num_features, eps=1e-5, affine=True):
        super().__init__(num_features, eps, affine)
        self.num_groups = check_number(num_groups, "num_groups", low=1, integer=True)
        if self.num_features % self.num_groups:
            raise ValueError(f"num_groups={self.num_groups} must divide num_features={self.num_features}")

    def get_config(self):
        return {"num_groups": self.num_groups, "num_features": self.num_features, "eps": self.eps,
                "affine": self.affine}

    def describe(self):
        return f"GroupNorm({self.num_groups}, {self.num_features})"

    def forward(self, x, ctx):
        n = x.shape[0]
        y = self._buffer("y", x.shape)
        gamma, beta = self._affine()
        mean = self._buffer("mean", (n, self.num_groups), np.float64)
        inv_std = self._buffer("inv_std", (n, self.num_groups), np.float64)
        _norm.group_norm_forward(x, gamma, beta, y, mean, inv_std, self.num_groups, self.eps, ctx.n_threads)
        self._x, self._mean, self._inv_std = x, mean, inv_std
        return y

    def backward(self, dy, ctx, need_dx):
        gamma, _ = self._affine()
        dgamma, dbeta = self._affine_grads()
        _norm.group_norm_backward(self._x, gamma, self._mean, self._inv_std, dy, dy, dgamma, dbeta,
                                  self.num_groups, ctx.n_threads)
        return dy if need_dx else None


class LayerNorm(GroupNorm):
    """Layer normalization (Ba et al. 2016): per sample over all features (torch.nn.LayerNorm(n))."""

    def __init__(self, num_features, eps=1e-5, affine=True):
        super().__init__(1, num_features, eps, affine)

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "affine": self.affine}

    def describe(self):
        return f"LayerNorm({self.num_features})"


class PReLU(Layer):
    """Leaky ReLU with a learnable slope per feature (He et al. 2015), initialized to `init`
    (torch.nn.PReLU(num_parameters=n), default 0.25)."""

    def __init__(self, num_features, init=0.25):
        super().__init__()
        self.num_features = check_number(num_features, "num_features", low=1, integer=True)
        self.init = check_number(init, "init")

    def build(self, input_dim, dtype):
        if input_dim != self.num_features:
            raise ValueError(f"PReLU({self.num_features}) receives {input_dim} features; use PReLU({input_dim})")
        return super().build(input_dim, dtype)

    def param_specs(self):
        return [("alpha", (self.num_features,), False)]

    def init_params(self, rng):
        self.params["alpha"][...] = self.init

    def get_config(self):
        return {"num_features": self.num_features, "init": self.init}

    def describe(self):
        return f"PReLU({self.num_features})"

    def forward(self, x, ctx):
        y = self._buffer("y", x.shape)
        _norm.prelu_forward(x, self.params["alpha"], y, ctx.n_threads)
        self._x = x
        return y

    def backward(self, dy, ctx, need_dx):
        _norm.prelu_backward(self._x, self.params["alpha"], dy, dy, self.grads["alpha"], ctx.n_threads)
        return dy if need_dx else None
