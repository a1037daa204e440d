"""First-order optimizers with torch.optim's argument names, defaults and update rules.

Each step is one fused Cython pass over parameters, gradients and state (see
fastnn._core.optim for the exact formulas). A model binds its optimizer to its flat
parameter/gradient buffers, so a step is one kernel call per parameter group; the same
optimizer also updates any list of arrays in place: `opt.step(params, grads)`. Adam and
AdamW let a float32 model's backward pass apply their update instead (_fused_state,
_fused_scalars; same results): to every parameter of a network of Dense layers, else to the
large Dense weight matrices, those fused with their gradient's product.

Lecture vs torch conventions (both are implemented as torch does):
- Momentum: the lecture writes v = mu v - lr g, w += v; torch writes b = mu b + g,
  w -= lr b. With a constant lr these are the same iteration (v = -lr b); they differ
  only when lr changes, where torch's form applies the new lr to the whole velocity.
- Nesterov: the lecture evaluates the gradient at the look-ahead point w + mu v; torch
  (Sutskever et al. 2013 rewritten) uses d = g + mu b at the current point, an
  equivalent reparametrization of the same sequence.
- AdaGrad/RMSProp/Adam: the lecture sometimes puts eps inside the square root,
  sqrt(s + eps); torch adds it outside, sqrt(s) + eps. They differ only when s is
  comparable to eps (the first steps of rarely-updated weights).
- Adam's bias correction: torch folds 1/(1 - b1^t) into the step size and divides
  sqrt(v) by sqrt(1 - b2^t) before adding eps, which equals the textbook
  m_hat / (sqrt(v_hat) + eps).
"""
import math
from abc import ABC, abstractmethod

import numpy as np

from . import threads as _threads
from ._buffers import aligned_zeros
from ._core import optim as _k
from ._validation import check_number

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "RAdam", "Adan", "get", "NAMES",
           "minimize", "MinimizeResult"]


def _check_betas(betas, count):
    if not isinstance(betas, (tuple, list)) or len(betas) != count:
        raise ValueError(f"betas must be a tuple of {count} numbers in [0, 1), got {betas!r}")
    return tuple(check_number(b, f"betas[{i}]", 0.0, 1.0, high_open=True) for i, b in enumerate(betas))


class _Slot:
    """One contiguous range updated by one kernel call: views of params, grads and state;
    start is the range's offset in the bound flat vector."""

    __slots__ = ("param", "grad", "state", "lr_scale", "decay", "start")

    def __init__(self, param, grad, state, lr_scale=1.0, decay=True, start=0):
        self.param, self.grad, self.state = param, grad, state
        self.lr_scale, self.decay, self.start = lr_scale, decay, start

    def part(self, start, stop):
        """The slot of the flat range [start, stop) (inside this one)."""
        lo, hi = start - self.start, stop - self.start
        return _Slot(self.param[lo:hi], self.grad[lo:hi], {k: v[lo:hi] for k, v in self.state.items()},
                     self.lr_scale, self.decay, start)


class Optimizer(ABC):
    """Base class: learning rate (a float or a schedule t -> lr), weight decay, clipping.

    clip_norm rescales all gradients together so their global L2 norm is at most clip_norm
    (torch.nn.utils.clip_grad_norm_); clip_value clamps each gradient element to
    [-clip_value, clip_value]. decay_all=False exempts biases and normalization parameters
    from weight decay (the usual "no decay on biases" group) when bound to a model.
    """

    name = None
    _state_names = ()

    def __init__(self, lr, weight_decay=0.0, clip_norm=None, clip_value=None, decay_all=True):
        if callable(lr):
            self.lr = lr
        else:
            self.lr = check_number(lr, "lr", low=0.0)
        self.weight_decay = check_number(weight_decay, "weight_decay", low=0.0)
        self.clip_norm = None if clip_norm is None else check_number(clip_norm, "clip_norm", 0, low_open=True)
        self.clip_value = None if clip_value is None else check_number(clip_value, "clip_value", 0, low_open=True)
        self.decay_all = bool(decay_all)
        self.t = 0
        self._buffers = []   # storage: one {state name: array} per bound buffer
        self._slots = []     # the ranges each step updates (views into params and _buffers)
        self._bound = None   # "model" or "arrays"
        self._split = {}     # ranges -> (their slots, the slots of the rest): see _split_slots

    # -- hyperparameters --------------------------------------------------------------------
    def current_lr(self):
        """The learning rate of the next step (a schedule is evaluated at k = steps taken)."""
        return self._lr_at(self.t)

    def _lr_at(self, t):
        """The learning rate of the step after t steps."""
        return float(self.lr(t)) if callable(self.lr) else self.lr

    def hyperparameters(self):
        """Constructor arguments (JSON-serializable) that rebuild this optimizer."""
        return {"lr": self.lr if not callable(self.lr) else self.current_lr(),
                "weight_decay": self.weight_decay, "clip_norm": self.clip_norm,
                "clip_value": self.clip_value, "decay_all": self.decay_all}

    # -- state --------------------------------------------------------------------------------
    def _new_state(self, like):
        return {name: aligned_zeros(like.shape, like.dtype) for name in self._state_names}

    def bind(self, params, grads, segments):
        """Attach to flat buffers; segments are (start, stop, lr_scale, decay) ranges."""
        state = self._new_state(params)
        self._buffers = [state]
        self._slots = [_Slot(params[a:b], grads[a:b], {k: v[a:b] for k, v in state.items()},
                             lr_scale, decay, a) for a, b, lr_scale, decay in segments]
        self._bound = "model"
        self._split = {}
        self.t = 0

    def state_dict(self):
        """{"t": steps taken, "buffers": [{state name: array}]} (arrays are copies)."""
        return {"t": self.t, "buffers": [{k: v.copy() for k, v in b.items()} for b in self._buffers]}

    def load_state_dict(self, state):
        """Restore state saved by state_dict() from an optimizer bound to the same shapes."""
        buffers = state["buffers"]
        if len(buffers) != len(self._buffers):
            raise ValueError(f"state holds {len(buffers)} buffers, this optimizer has {len(self._buffers)}")
        for mine, theirs in zip(self._buffers, buffers):
            if set(mine) != set(theirs):
                raise ValueError(f"state has arrays {sorted(theirs)}, expected {sorted(mine)}")
            for k, v in theirs.items():
                if np.shape(v) != mine[k].shape:
                    raise ValueError(f"state array {k!r} has shape {np.shape(v)}, expected {mine[k].shape}")
        for mine, theirs in zip(self._buffers, buffers):
            for k, v in theirs.items():
                mine[k][...] = v
        self.t = int(state["t"])

    # -- stepping -----------------------------------------------------------------------------
    def step(self, params, grads):
        """Update a list of float32/float64 arrays in place from their gradients."""
        if isinstance(params, np.ndarray):
            params, grads = [params], [grads]
        params, grads = list(params), list(grads)
        if len(params) != len(grads):
            raise ValueError(f"got {len(params)} params but {len(grads)} grads; pass one gradient per parameter")
        flat_grads = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"params[{i}] must be a float32 or float64 ndarray, got "
                                f"{getattr(p, 'dtype', type(p).__name__)}")
            if not p.flags.c_contiguous or not p.flags.writeable:
                raise ValueError(f"params[{i}] must be a writeable C-contiguous array (it is updated in place)")
            g = np.asarray(g)
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"grads[{i}] has shape {g.shape} and dtype {g.dtype}; it must match "
                                 f"params[{i}] ({p.shape}, {p.dtype})")
            flat_grads.append(np.ascontiguousarray(g).reshape(-1))
        if self._bound == "model":
            raise ValueError("this optimizer belongs to a model; create a new optimizer for plain arrays")
        layout = [(p.size, p.dtype) for p in params]
        if self._bound != "arrays" or layout != self._layout:
            self._buffers = [self._new_state(p.reshape(-1)) for p in params]
            self._slots = [_Slot(None, None, b) for b in self._buffers]
            self._bound, self._layout = "arrays", layout
            self.t = 0
        for slot, p, g in zip(self._slots, params, flat_grads):
            slot.param, slot.grad = p.reshape(-1), g
        self._step()

    def _step(self, fused=(), steps=1):
        """One update of every slot (the model calls this after bind), but for the flat ranges
        in `fused`, whose updates the backward pass applied (_fused_state); or, where that was
        all of them, `steps` such steps counted."""
        rest = self._split_slots(fused)[1] if fused else self._slots
        if not rest:   # all applied already (a network of Dense layers under Adam): only count the steps
            self.t += steps
            return
        if steps != 1:
            raise ValueError("several steps at once are for updates the backward passes applied")
        n_threads = _threads.get_num_threads()
        grad_scale = 1.0
        if self.clip_norm is not None:
            norm = math.sqrt(sum(_k.sum_squares(s.grad, n_threads) for s in self._slots))
            grad_scale = min(1.0, self.clip_norm / (norm + 1e-6))
        clip = math.inf if self.clip_value is None else self.clip_value
        lr = self.current_lr()
        self.t += 1
        for s in rest:
            self._update(s, lr * s.lr_scale, self._decay_of(s), grad_scale, clip, n_threads)

    def _decay_of(self, slot):
        return self.weight_decay if (slot.decay or self.decay_all) else 0.0

    def _split_slots(self, ranges):
        """(per flat range [start, stop) in `ranges`, in that order, (its slot, the index of the
        bound slot holding it); the slots of everything else), cached per ranges."""
        split = self._split.get(ranges)
        if split is None:
            inside, rest = {}, []
            for group, s in enumerate(self._slots):
                lo, hi = s.start, s.start + s.param.shape[0]
                for start, stop in sorted(r for r in ranges if lo <= r[0] < hi):
                    if stop > hi:
                        raise ValueError(f"range [{start}, {stop}) spans two parameter groups")
                    inside[start, stop] = (s.part(start, stop), group)
                    if start > lo:
                        rest.append(s.part(lo, start))
                    lo = stop
                if lo < hi:
                    rest.append(s.part(lo, hi))
            if len(inside) != len(ranges):
                raise ValueError(f"ranges {ranges} are not all inside the trainable parameters")
            split = self._split[ranges] = ([inside[r] for r in ranges], rest)
        return split

    def _fused_state(self, ranges):
        """For a model's backward pass, which updates the flat ranges [start, stop) in `ranges`
        (a tuple) as their gradients are computed: per range, (m, v, v_max or None, group), its
        flat Adam state and the index of its scalars in _fused_scalars(); None where this
        optimizer cannot update ranges apart from the rest. The model then calls _step(ranges)."""
        return None

    def _fused_scalars(self, ahead=0):
        """This step's scalars (or those of the step `ahead` steps later) of the updates of
        _fused_state, per group (fastnn._core.dense: dense_backward's and DenseStack's Adam
        scalars); None when this step cannot update ranges apart from the rest (the model then
        calls _step())."""
        return None

    def _fused_scalars_ahead(self, ranges, steps):
        """The _fused_scalars of the next `steps` steps, as one float64 array (steps, groups, 9),
        where the ranges hold every parameter (the backward passes then apply every update:
        DenseStack.train_batches); else None."""
        if not ranges or self._split_slots(ranges)[1]:
            return None
        per_step = [self._fused_scalars(ahead) for ahead in range(steps)]
        return None if per_step[0] is None else np.array(per_step, dtype=np.float64)

    @abstractmethod
    def _update(self, slot, lr, weight_decay, grad_scale, clip_value, n_threads):
        """Apply the update kernel to one slot."""

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """torch.optim.SGD: b = mu b + (1 - dampening) g (b = g at the first step);
    g = g + mu b if nesterov else b;  p -= lr g."""

    name = "sgd"

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, **kw):
        super().__init__(lr, weight_decay, **kw)
        self.momentum = check_number(momentum, "momentum", low=0.0)
        self.dampening = check_number(dampening, "dampening")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (as in torch.optim.SGD)")
        self._state_names = ("momentum_buffer",) if self.momentum else ()

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum,
                "dampening": self.dampening, "nesterov": self.nesterov}

    def _update(self, s, lr, wd, grad_scale, clip, n_threads):
        _k.sgd_step(s.param, s.grad, s.state.get("momentum_buffer"), lr, self.momentum,
                    self.dampening, self.nesterov, wd, self.t == 1, grad_scale, clip, n_threads)


class Adagrad(Optimizer):
    """torch.optim.Adagrad: clr = lr / (1 + (t - 1) lr_decay); s += g^2; p -= clr g / (sqrt(s) + eps)."""

    name = "adagrad"

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, **kw):
        super().__init__(lr, weight_decay, **kw)
        self.lr_decay = check_number(lr_decay, "lr_decay", low=0.0)
        self.initial_accumulator_value = check_number(initial_accumulator_value,
                                                      "initial_accumulator_value", low=0.0)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self._state_names = ("sum",)

    def _new_state(self, like):
        state = aligned_zeros(like.shape, like.dtype)
        state[...] = self.initial_accumulator_value
        return {"sum": state}

    def hyperparameters(self):
        return {**super().hyperparameters(), "lr_decay": self.lr_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}

    def _update(self, s, lr, wd, grad_scale, clip, n_threads):
        clr = lr / (1 + (self.t - 1) * self.lr_decay)
        _k.adagrad_step(s.param, s.grad, s.state["sum"], clr, self.eps, wd, grad_scale, clip, n_threads)


class RMSprop(Optimizer):
    """torch.optim.RMSprop: v = alpha v + (1 - alpha) g^2 (centered: minus the squared running
    mean of g); d = g / (sqrt(v) + eps); with momentum b = mu b + d, p -= lr b, else p -= lr d."""

    name = "rmsprop"

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, **kw):
        super().__init__(lr, weight_decay, **kw)
        self.alpha = check_number(alpha, "alpha", 0.0, 1.0)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self.momentum = check_number(momentum, "momentum", low=0.0)
        self.centered = bool(centered)
        self._state_names = (("square_avg",) + (("grad_avg",) if self.centered else ())
                             + (("momentum_buffer",) if self.momentum else ()))

    def hyperparameters(self):
        return {**super().hyperparameters(), "alpha": self.alpha, "eps": self.eps,
                "momentum": self.momentum, "centered": self.centered}

    def _update(self, s, lr, wd, grad_scale, clip, n_threads):
        _k.rmsprop_step(s.param, s.grad, s.state["square_avg"], s.state.get("grad_avg"),
                        s.state.get("momentum_buffer"), lr, self.alpha, self.eps, wd,
                        self.momentum, grad_scale, clip, n_threads)


class Adam(Optimizer):
    """torch.optim.Adam: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr m_hat / (sqrt(v_hat) + eps), hats = bias-corrected; amsgrad uses max(v) so far.
    weight_decay adds wd * p to g (L2 regularization); see AdamW for decoupled decay."""

    name = "adam"
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, **kw):
        super().__init__(lr, weight_decay, **kw)
        self.betas = _check_betas(betas, 2)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self.amsgrad = bool(amsgrad)
        self._state_names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": list(self.betas), "eps": self.eps,
                "amsgrad": self.amsgrad}

    def _update(self, s, lr, wd, grad_scale, clip, n_threads):
        _k.adam_step(s.param, s.grad, s.state["exp_avg"], s.state["exp_avg_sq"],
                     s.state.get("max_exp_avg_sq"), lr, self.betas[0], self.betas[1], self.eps,
                     wd, self._decoupled, self.t, grad_scale, clip, n_threads)

    def _fused_state(self, ranges):
        if self._bound != "model":
            return None
        return [(s.state["exp_avg"], s.state["exp_avg_sq"], s.state.get("max_exp_avg_sq"), group)
                for s, group in self._split_slots(ranges)[0]]

    def _fused_scalars(self, ahead=0):
        # clip_norm scales every gradient by their global norm, known only after the backward pass
        if self._bound != "model" or self.clip_norm is not None:
            return None
        lr, t = self._lr_at(self.t + ahead), self.t + ahead + 1
        clip = math.inf if self.clip_value is None else self.clip_value
        b1, b2 = self.betas
        scalars = []
        for s in self._slots:
            step_size, inv_bc2_sqrt, shrink, wd = _k.adam_scalars(lr * s.lr_scale, b1, b2, self._decay_of(s),
                                                                  self._decoupled, t)
            scalars.append((b1, b2, self.eps, step_size, inv_bc2_sqrt, shrink, 1.0, clip, wd))
        return scalars


class AdamW(Adam):
    """torch.optim.AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay,
    p *= 1 - lr * weight_decay before the Adam update; weight_decay defaults to 1e-2."""

    name = "adamw"
    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, **kw):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, **kw)


class RAdam(Optimizer):
    """torch.optim.RAdam (Liu et al. 2020): Adam whose adaptive step is switched on, and
    rectified, only once the variance of the adaptive learning rate is tractable (rho_t > 5)."""

    name = "radam"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
        super().__init__(lr, weight_decay, **kw)
        self.betas = _check_betas(betas, 2)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self._state_names = ("exp_avg", "exp_avg_sq")

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": list(self.betas), "eps": self.eps}

    def _update(self, s, lr, wd, grad_scale, clip, n_threads):
        _k.radam_step(s.param, s.grad, s.state["exp_avg"], s.state["exp_avg_sq"], lr,
                      self.betas[0], self.betas[1], self.eps, wd, self.t, grad_scale, clip, n_threads)


class Adan(Optimizer):
    """Adan (Xie et al. 2022, "Adaptive Nesterov momentum"), as in its reference
    implementation: moments of g, of the gradient difference g - g_prev and of
    (g + b2 (g - g_prev))^2, with proximal weight decay p = (p - lr u) / (1 + lr wd).
    Not in torch.optim; defaults are the reference's."""

    name = "adan"

    def __init__(self, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, **kw):
        super().__init__(lr, weight_decay, **kw)
        self.betas = _check_betas(betas, 3)
        self.eps = check_number(eps, "eps", low=0.0, low_open=True)
        self._state_names = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad")

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": list(self.betas), "eps": self.eps}

    def _update(self, s, lr, wd, grad_scale, clip, n_threads):
        b1, b2, b3 = self.betas
        _k.adan_step(s.param, s.grad, s.state["exp_avg"], s.state["exp_avg_diff"],
                     s.state["exp_avg_sq"], s.state["prev_grad"], lr, b1, b2, b3, self.eps, wd,
                     self.t, grad_scale, clip, n_threads)


_BY_NAME = {cls.name: cls for cls in (SGD, Adagrad, RMSprop, Adam, AdamW, RAdam, Adan)}
NAMES = sorted(_BY_NAME)


def get(optimizer, **kwargs):
    """An optimizer from a name (with keyword arguments) or an Optimizer instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str) or optimizer.lower() not in _BY_NAME:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {NAMES}")
    return _BY_NAME[optimizer.lower()](**kwargs)


def from_config(config):
    """Rebuild an optimizer from {"name": ..., **hyperparameters()}."""
    config = dict(config)
    name = config.pop("name")
    if "betas" in config:
        config["betas"] = tuple(config["betas"])
    return get(name, **config)


# Second- and zero-order methods work on a model's full-batch loss rather than per step.
from .minimize import METHODS as MINIMIZE_METHODS, MinimizeResult, minimize  # noqa: E402,F401
