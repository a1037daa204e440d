"""Layers. Each owns views into its model's flat parameter and gradient buffers and
reuses its workspaces across steps of the same batch size (no allocation per step)."""
from abc import ABC, abstractmethod

import numpy as np

from . import init as _init
from ._core import activations as _act
from ._core import dense as _dense
from ._core import losses as _losses
from ._validation import check_number

__all__ = ["Layer", "Dense", "Activation", "ACTIVATIONS"]

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


class Layer(ABC):
    """Base class. Subclasses define build, forward and backward; parameters are declared
    by param_specs() as (name, shape, decay) and arrive as views in self.params/self.grads.

    `trainable = False` freezes the layer (its parameters get no gradient and no update);
    `lr_multiplier` scales the optimizer's learning rate for this layer's parameters.
    """

    # Bumped whenever any layer's trainable flag or lr multiplier changes, so a model can
    # tell in O(1) that its optimizer's parameter groups need rebuilding.
    groups_version = 0

    def __init__(self):
        self.params = {}
        self.grads = {}
        self._workspace = {}
        self._trainable = True
        self._lr_multiplier = 1.0

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        Layer.groups_version += 1

    @property
    def lr_multiplier(self):
        return self._lr_multiplier

    @lr_multiplier.setter
    def lr_multiplier(self, value):
        self._lr_multiplier = check_number(value, "lr_multiplier", low=0.0)
        Layer.groups_version += 1

    # -- construction -------------------------------------------------------------------
    def build(self, input_dim, dtype):
        """Check the input width, remember dtype and return the output width."""
        self.dtype = dtype
        self.input_dim = input_dim
        return input_dim

    def param_specs(self):
        """[(name, shape, decay)] of trainable arrays; decay=False for biases/norm params."""
        return []

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

    def state_arrays(self):
        """Non-trainable arrays saved with the model (e.g. BatchNorm running statistics)."""
        return {}

    def load_state_arrays(self, arrays):
        """Restore what state_arrays() returned (shapes already checked by the caller)."""
        for name, value in arrays.items():
            getattr(self, name)[...] = value

    def _buffer(self, name, shape):
        """A workspace array, allocated once per (name, shape) and reused afterwards.

        fit alternates between two batch shapes (full and last partial batch), so a few
        shapes are kept; beyond _MAX_SHAPES the workspace starts over.
        """
        key = (name, shape)
        buf = self._workspace.get(key)
        if buf is None:
            if len(self._workspace) >= _MAX_SHAPES:
                self._workspace.clear()
            buf = self._workspace[key] = np.empty(shape, dtype=self.dtype)
        return buf

    def clear_workspace(self):
        self._workspace = {}

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
        self._init = _init.get(init, std)
        self.init = init if isinstance(init, str) else getattr(init, "__name__", "custom")
        self.std = std
        self.l1 = check_number(l1, "l1", low=0)
        self.l2 = check_number(l2, "l2", low=0)

    def build(self, input_dim, dtype):
        if input_dim != self.in_features:
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) receives "
                             f"{input_dim} features from the previous layer; set in_features={input_dim}")
        super().build(input_dim, dtype)
        return self.out_features

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

    def forward(self, x, ctx):
        n = x.shape[0]
        z = self._buffer("z", (n, self.out_features))
        y = z if self._kind == 0 else self._buffer("y", (n, self.out_features))
        _dense.dense_forward(x, self.params["W"], self.params["b"], z, y,
                             self._kind, self._a, ctx.n_threads)
        self._x, self._z, self._y = x, z, y
        return y

    def backward(self, dy, ctx, need_dx):
        dx = self._buffer("dx", self._x.shape) if need_dx else None
        _dense.dense_backward(self._x, self.params["W"], self._z, self._y, dy,
                              self.grads["W"], self.grads["b"], dx, self._kind, self._a,
                              ctx.n_threads)
        if self.l1 or self.l2:
            ctx.penalty += _losses.penalty(self.params["W"].reshape(-1), self.grads["W"].reshape(-1),
                                           self.l1, self.l2, ctx.n_threads)
        return dx

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
            _act.activation_backward(self._x.reshape(-1), self._y.reshape(-1), dy.reshape(-1),
                                     dy.reshape(-1), self._kind, self._a, ctx.n_threads)
        return dy if need_dx else None
