"""Sequential: a stack of layers over one flat parameter buffer, with fit/predict/evaluate."""
import contextlib
import functools
import math
import signal
import threading
import time

import numpy as np

from . import losses as _losses
from ._buffers import aligned_zeros
from . import optim as _optim
from .callbacks import History
from .layers import BatchNorm, Dense, Layer
from .threads import blas_single_threaded, get_num_threads
from ._core import dense as _dense
from ._core.arrays import all_finite, gather_rows
from ._validation import check_dtype, check_matrix, check_number, require_finite

__all__ = ["Sequential"]

_INFERENCE_CHUNK = 4096  # rows per forward call in predict/evaluate (bounds workspace memory)
_NO_GUARD = contextlib.nullcontext()


# In a network with layers other than Dense (no DenseStack), the fewest weights whose update
# is fused into their Dense layer's own backward pass: it saves the gradient's trip through
# memory, worth it once the weights and their state outgrow L2; measured before the stack, on
# a 64-128-128-10 network at batch 64, fusing every layer cost 18% of the step (the Python
# work of one more optimizer call per layer, and the small products' buffers). A DenseStack
# updates every parameter; which products it fuses is dense.pyx's FUSED_PRODUCT_MIN.
FUSED_UPDATE_MIN = 1 << 16
# fit's training steps run several to a call where they can (Sequential._train_batches): as many
# as take about this long (the progress bar's and Ctrl-C's latency), at most this many
_CALL_SECONDS = 0.05
_MAX_STEPS_PER_CALL = 256


class _Context:
    """What a forward/backward pass needs besides the data."""

    __slots__ = ("n_threads", "training", "update_stats", "penalty", "seed", "step", "scalars", "updates")

    def __init__(self, n_threads, training, update_stats, seed, step):
        self.n_threads, self.training, self.update_stats = n_threads, training, update_stats
        self.seed, self.step, self.penalty = seed, step, 0.0
        self.scalars = None   # this step's scalars of the updates applied in the backward pass (_fusion)
        self.updates = None   # {layer: its weights' optimizer update, applied in its backward pass}


class _Fusion:
    """Sequential._fusion's result: the flat ranges updated in the backward pass, the (layer,
    parameter name) and optimizer state (Optimizer._fused_state) of each, whether any layer
    is penalized; key: the parameter groups it was made for."""

    __slots__ = ("key", "ranges", "owners", "states", "penalized")

    def __init__(self, key=None, ranges=(), owners=(), states=None, penalized=False):
        self.key, self.ranges, self.owners, self.states, self.penalized = key, ranges, owners, states, penalized


def _progress_bar(n, epoch, epochs):
    """An epoch's progress bar over its n samples. tqdm is imported here, for verbose=1 only:
    tqdm.auto imports asyncio (30-45 ms, paid by a process's first fit)."""
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=f"Epoch {epoch + 1}/{epochs}", unit="sample", unit_scale=True, leave=True,
                dynamic_ncols=True)


class Sequential:
    """A feed-forward network: layers applied in order, one loss, one optimizer.

    All trainable arrays live in one contiguous vector (`model.parameters`) with a twin
    gradient vector; each layer's weights are views into them, and an optimizer step is
    one fused kernel call over the vector.
    """

    def __init__(self, layers, loss="softmax_cross_entropy", optimizer=None, dtype="float32",
                 seed=0, input_dim=None):
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError("layers must be a non-empty list of fastnn layers")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] is {type(layer).__name__}, not a fastnn layer "
                                f"(e.g. fnn.Dense, fnn.Activation)")
        if len({id(layer) for layer in layers}) != len(layers):
            raise ValueError("the same layer object appears twice in layers; create separate layers")
        self.dtype = check_dtype(dtype)
        self.seed = check_number(seed, "seed", low=0, integer=True)
        self.loss = _losses.get(loss)
        self.optimizer = _optim.get(optimizer) if optimizer is not None else _optim.Adam()
        self.layers = layers
        if input_dim is None:
            input_dim = getattr(layers[0], "in_features", None) or getattr(layers[0], "num_features", None)
            if input_dim is None:
                raise ValueError(f"cannot infer the input width from {type(layers[0]).__name__}; "
                                 f"pass input_dim=")
        self.input_dim = check_number(input_dim, "input_dim", low=1, integer=True)
        self.classes_ = None
        self.stop_training = False
        self._steps = 0          # optimizer steps taken: the dropout RNG's counter
        self._fits = 0           # fit calls: seeds each fit's shuffling
        self._loss_ws = {}
        self._guards = {}        # batch size -> BLAS thread guard (see _blas_guard)
        self._fused = _Fusion()  # see _fusion
        self._updates_by_layer = {}   # layer -> its weights' update in this step: see _fused_context
        self._stacks = {}        # (batch size, _fusion's key) -> DenseStack: see _dense_stack
        self._build()

    # -- construction ---------------------------------------------------------------------------
    def _build(self):
        dim = self.input_dim
        specs = []
        for position, layer in enumerate(self.layers):
            dim = layer.build(dim, self.dtype)
            layer.output_dim = dim
            layer.stream = position      # the layer's random stream (dropout masks, noise)
            specs.extend((layer, name, shape, decay) for name, shape, decay in layer.param_specs())
        self.output_dim = dim
        self._all_dense = all(type(layer) is Dense for layer in self.layers)   # see _dense_stack
        sizes = [int(np.prod(shape)) for _, _, shape, _ in specs]
        total = int(sum(sizes))
        self.parameters = aligned_zeros(total, self.dtype)
        self.gradients = aligned_zeros(total, self.dtype)
        self._specs = []
        offset = 0
        for (layer, name, shape, decay), size in zip(specs, sizes):
            layer.params[name] = self.parameters[offset:offset + size].reshape(shape)
            layer.grads[name] = self.gradients[offset:offset + size].reshape(shape)
            self._specs.append((layer, name, offset, offset + size, decay))
            offset += size
        rng = np.random.default_rng(self.seed)
        for layer in self.layers:
            layer.init_params(rng)
        self._bound_version = None

    def _bind_optimizer(self):
        """(Re)attach the optimizer to the trainable ranges when trainable flags or lr multipliers change."""
        if self._bound_version == Layer.groups_version:
            return
        segments = []
        for layer, _, start, stop, decay in self._specs:
            if not layer.trainable:
                continue
            seg = [start, stop, layer.lr_multiplier, decay or self.optimizer.decay_all]
            if segments and segments[-1][1] == start and segments[-1][2:] == seg[2:]:
                segments[-1][1] = stop
            else:
                segments.append(seg)
        state = self.optimizer.state_dict() if self._bound_version is not None else None
        self.optimizer.bind(self.parameters, self.gradients, [tuple(s) for s in segments])
        if state is not None:
            self.optimizer.load_state_dict(state)
        self._bound_version = Layer.groups_version

    def _fusion(self):
        """The parameters whose optimizer update runs inside the backward pass, as their
        gradients are computed (Optimizer._fused_state), cached per parameter groups: float32
        and no layer penalized (a fused update changes the weights before the penalties,
        summed in the backward pass, show the loss finite); then with a DenseStack (every
        layer a Dense layer) every trainable parameter, else the Dense weights
        (Layer.fused_update) of at least FUSED_UPDATE_MIN entries."""
        key = (Layer.groups_version, self._bound_version)
        if self._fused.key != key:
            penalized = any(layer.penalized for layer in self.layers)
            chosen = [((start, stop), (layer, name)) for layer, name, start, stop, _ in self._specs
                      if self.dtype == np.float32 and not penalized and layer.trainable and (
                          self._all_dense or (name == layer.fused_update and stop - start >= FUSED_UPDATE_MIN))]
            ranges = tuple(r for r, _ in chosen)
            states = self.optimizer._fused_state(ranges) if ranges else None
            self._fused = _Fusion(key, ranges if states else (), tuple(o for _, o in chosen), states, penalized)
        return self._fused

    @staticmethod
    def _fuses(fusion, batch):
        """Whether a step on `batch` rows fuses the updates of fusion.ranges into its backward
        pass (none beyond the batches the fused kernel takes)."""
        return bool(fusion.ranges) and batch <= _dense.FUSED_ADAM_MAX_BATCH

    def _stack_takes_loss(self, stack, targets):
        """Whether the DenseStack `stack` computes the loss between its passes itself (softmax
        cross-entropy on labels: DenseStack.softmax_ce_backward, train_batches)."""
        return stack is not None and type(self.loss) is _losses.SoftmaxCrossEntropy and targets.ndim == 1

    def _fused_context(self, batch):
        """The training context of a step on `batch` rows, and the flat ranges whose updates it
        fuses (none beyond the batches the fused kernel takes: there the separate update is as
        fast, and one pass over all the state)."""
        self._bind_optimizer()
        return self._step_context(self._fusion(), batch)

    def _step_context(self, fusion, batch):
        """_fused_context, the optimizer bound and the fusion (_fusion) known."""
        scalars = self.optimizer._fused_scalars() if self._fuses(fusion, batch) else None
        ctx = self._context(True, True)
        if scalars is None:
            return ctx, ()
        ctx.scalars = scalars
        if not self._all_dense:   # each layer applies its update (Dense.backward: ctx.updates)
            by_layer = self._updates_by_layer   # one dict, refilled each step (a new one per step counts as an allocation)
            by_layer.clear()
            by_layer.update((layer, (m, v, v_max, scalars[group]))
                            for (layer, _), (m, v, v_max, group) in zip(fusion.owners, fusion.states))
            ctx.updates = by_layer
        return ctx, fusion.ranges

    def _blas_guard(self, *row_counts):
        """blas_single_threaded if a pass over any of these numbers of rows calls BLAS
        (products that fastnn's own kernels leave to BLAS), else a no-op
        context: limiting BLAS's threads and restoring them around every train_step cost 2%
        of a 2-thread step (the restored OpenBLAS workers spin on the cores fastnn's threads
        need)."""
        guard = self._guards.get(row_counts)
        if guard is None:
            if len(self._guards) >= 8:
                self._guards.clear()
            uses_blas = any(layer.calls_blas(n) for n in row_counts for layer in self.layers)
            guard = self._guards[row_counts] = blas_single_threaded if uses_blas else _NO_GUARD
        return guard

    def _inference_guard(self, n):
        """The BLAS guard of _inference over n rows (chunks of _INFERENCE_CHUNK and the rest)."""
        return self._blas_guard(min(n, _INFERENCE_CHUNK), n % _INFERENCE_CHUNK or min(n, _INFERENCE_CHUNK))

    # -- passes ---------------------------------------------------------------------------------
    def _context(self, training, update_stats):
        return _Context(get_num_threads(), training, update_stats, self.seed, self._steps)

    def _forward(self, x, ctx, unchecked=None):
        """unchecked (from _check_X_deferred): x's name when the first layer, a Dense layer,
        is to check x for NaN and infinity on the way."""
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, ctx, unchecked) if i == 0 and unchecked else layer.forward(x, ctx)
        return x

    def _backward(self, grad, ctx):
        first_trainable = next((i for i, layer in enumerate(self.layers) if layer.trainable), len(self.layers))
        for i in range(len(self.layers) - 1, first_trainable - 1, -1):
            grad = self.layers[i].backward(grad, ctx, need_dx=i > first_trainable)

    def _loss_buffers(self, n):
        """(gradient w.r.t. the outputs, per-row losses) for a batch of n, reused across steps."""
        bufs = self._loss_ws.get(n)
        if bufs is None:
            if len(self._loss_ws) >= 4:
                self._loss_ws.clear()
            bufs = self._loss_ws[n] = (np.empty((n, self.output_dim), dtype=self.dtype),
                                       np.empty(n, dtype=np.float64))
        return bufs

    def _dense_stack(self, n):
        """A DenseStack (fastnn._core.dense) of the layers for training passes over n rows when
        every layer is a Dense layer, else None: each pass one call instead of one per layer
        (the Python work between the layers' kernels was 6-7% of a 784-512-512-10 step at
        batch 32, its interpreter's data evicted from the caches by the weights' update).
        It holds the optimizer state of the parameters _fusion() names (none before the
        optimizer is bound), and is rebuilt when they change."""
        if not self._all_dense:
            return None
        fusion = self._fusion()
        key = (n, fusion.key)
        stack = self._stacks.get(key)
        if stack is None:
            if len(self._stacks) >= 4:
                self._stacks.clear()
            for stale in [k for k in self._stacks if k[1] != fusion.key]:   # made for other parameter groups
                del self._stacks[stale]
            states = {layer: {} for layer in self.layers}
            for (layer, name), state in zip(fusion.owners, fusion.states or ()):
                states[layer][name] = state
            first = next((i for i, layer in enumerate(self.layers) if layer.trainable), len(self.layers))
            stack = self._stacks[key] = _dense.DenseStack(
                [layer.stack_arrays(n, i > first, states[layer]) for i, layer in enumerate(self.layers)], n, first)
        return stack

    def _loss_and_backward(self, x, targets, sample_weight, ctx, unchecked=None):
        """Training-mode forward, loss, backward. Returns (loss with penalties, outputs, the rows
        predicted right where the loss kernel counted them (DenseStack.softmax_ce_backward),
        else None)."""
        stack = self._dense_stack(x.shape[0])
        if stack is None:
            out = self._forward(x, ctx, unchecked)
        else:
            proven = stack.forward(x, ctx.n_threads, unchecked is not None)
            if unchecked is not None:
                require_finite(x, unchecked, proven)
            out = stack.output
        if self._stack_takes_loss(stack, targets):
            # the loss between the stack's passes, in the same call as the backward pass
            loss, hits = stack.softmax_ce_backward(targets, sample_weight, self.loss.label_smoothing,
                                                   ctx.n_threads, ctx.scalars)
        else:
            hits = None
            grad, row_loss = self._loss_buffers(x.shape[0])
            loss = self.loss(out, targets, grad, row_loss, sample_weight, ctx.n_threads)
            if ctx.scalars is None or math.isfinite(loss):   # a backward pass with updates needs a finite loss
                if stack is None:
                    self._backward(grad, ctx)
                else:
                    stack.backward(grad, ctx.n_threads, ctx.scalars)
        if ctx.scalars is not None and not math.isfinite(loss):
            return loss, out, hits   # nothing updated
        if stack is not None and self._fused.penalized:
            for layer in self.layers:
                layer.add_penalty(ctx)
        return loss + ctx.penalty, out, hits

    def _apply_step(self, fused=(), steps=1):
        """The optimizer's step, but for the ranges `fused` (_fused_context), updated already;
        after _fused_context, which bound the optimizer to this step's parameter groups. Several
        steps: counted, where `fused` was every update."""
        if steps:
            self.optimizer._step(fused, steps)
            self._steps += steps

    # -- input checks ---------------------------------------------------------------------------
    def _check_X(self, X, name="X"):
        return check_matrix(X, name, self.dtype, n_features=self.input_dim)

    def _check_X_deferred(self, X, name="X"):
        """(X, unchecked): X checked as _check_X does, except that when the first layer is a
        Dense layer, NaN and infinity are left to it (unchecked = name, for _forward): its
        product finds them on the way instead of a pass over X of its own (up to 0.7-2.3% of
        a 784-512-512-10 step at batch 256: X has left the caches by the time the step
        starts). None: all checked."""
        deferred = isinstance(self.layers[0], Dense)
        X = check_matrix(X, name, self.dtype, n_features=self.input_dim, finite=not deferred)
        return X, (name if deferred else None)

    def _check_targets(self, y, n, name="y"):
        """(targets, classes) validated against n samples; does not change the model."""
        if y is None:
            raise ValueError(f"{name} is required")
        targets, classes = self.loss.prepare(y, self.output_dim, self.classes_, self.dtype, name)
        if len(targets) != n:
            raise ValueError(f"{name} has {len(targets)} samples but X has {n}; pass one target per row of X")
        return targets, classes

    def _check_sample_weight(self, sample_weight, n):
        if sample_weight is None:
            return None
        w = np.ascontiguousarray(sample_weight, dtype=self.dtype)
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("sample_weight must be finite, >= 0 and not all zero")
        return w

    # -- public API -------------------------------------------------------------------------------
    def forward(self, X, training=False):
        """Raw outputs (logits) for X; training=True uses batch statistics and dropout
        without changing any state."""
        X, unchecked = self._check_X_deferred(X)
        with self._blas_guard(X.shape[0]) if training else self._inference_guard(X.shape[0]):
            if training:
                return self._forward(X, self._context(True, False), unchecked).copy()
            return self._inference(X, unchecked)

    def _inference(self, X, unchecked=None):
        out = np.empty((X.shape[0], self.output_dim), dtype=self.dtype)
        ctx = self._context(False, False)
        for start in range(0, X.shape[0], _INFERENCE_CHUNK):
            out[start:start + _INFERENCE_CHUNK] = self._forward(X[start:start + _INFERENCE_CHUNK], ctx, unchecked)
        return out

    def predict(self, X):
        """Outputs through the loss's link: class probabilities (softmax), sigmoid
        probabilities (binary cross-entropy) or the raw values (regression, hinge)."""
        return self.loss.link(self.forward(X))

    def predict_classes(self, X):
        """Predicted labels (in the label space of the y given to fit) for classification."""
        if not self.loss.classification:
            raise ValueError(f"predict_classes needs a classification loss, not {self.loss.name!r}")
        out = self.forward(X)
        if isinstance(self.loss, _losses.BinaryCrossEntropy) or (
                isinstance(self.loss, _losses.Hinge) and self.output_dim == 1):
            return (out > 0).astype(np.int64)
        idx = out.argmax(axis=1)
        return self.classes_[idx] if self.classes_ is not None else idx

    def evaluate(self, X, y, sample_weight=None):
        """{"loss": mean loss (with weight penalties), "accuracy": ...} in inference mode."""
        X, unchecked = self._check_X_deferred(X)
        targets, _ = self._check_targets(y, X.shape[0])
        w = self._check_sample_weight(sample_weight, X.shape[0])
        return self._evaluate(X, targets, w, unchecked)

    def _evaluate(self, X, targets, w, unchecked=None):
        n = X.shape[0]
        with self._inference_guard(n):
            out = self._inference(X, unchecked)
        grad = np.empty_like(out)
        loss = self.loss(out, targets, grad, np.empty(n), w, get_num_threads())
        loss += sum(layer.penalty() for layer in self.layers)
        result = {"loss": float(loss)}
        if self.loss.classification:
            result["accuracy"] = float(self.loss.correct(out, targets) / n)
        return result

    def loss_and_gradients(self, X, y, sample_weight=None):
        """(loss, gradients) in training mode with penalties, gradients in get_weights() order.
        No side effects: weights, optimizer state and running statistics are unchanged."""
        X, unchecked = self._check_X_deferred(X)
        targets, _ = self._check_targets(y, X.shape[0])
        w = self._check_sample_weight(sample_weight, X.shape[0])
        with self._blas_guard(X.shape[0]):
            loss, *_ = self._loss_and_backward(X, targets, w, self._context(True, False), unchecked)
        return float(loss), [layer.grads[name].copy() if layer.trainable else np.zeros_like(layer.grads[name])
                             for layer, name, *_ in self._specs]

    def train_step(self, X, y, sample_weight=None):
        """One optimizer update on one batch; returns the batch loss (before the update)."""
        X, unchecked = self._check_X_deferred(X)
        targets, classes = self._check_targets(y, X.shape[0])
        w = self._check_sample_weight(sample_weight, X.shape[0])
        with self._blas_guard(X.shape[0]):
            ctx, fused = self._fused_context(X.shape[0])
            loss, *_ = self._loss_and_backward(X, targets, w, ctx, unchecked)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss}: training diverged; the weights were not "
                                         f"updated. Lower the learning rate or standardize the inputs")
            self.classes_ = classes
            self._apply_step(fused)
        return float(loss)

    def fit(self, X, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, callbacks=None, verbose=1, sample_weight=None):
        """Minibatch gradient descent: each epoch visits every training sample once in
        batches of batch_size (the last one may be smaller), shuffled per epoch from the
        model's seed. batch_size >= len(X) is full-batch gradient descent, 1 is pure SGD.
        Returns a History whose .history holds per-epoch loss, accuracy, val_*, lr."""
        X = self._check_X(X)
        n = X.shape[0]
        targets, classes = self._check_targets(y, n)
        w = self._check_sample_weight(sample_weight, n)
        epochs = check_number(epochs, "epochs", low=0, integer=True)
        batch_size = check_number(batch_size, "batch_size", low=1, integer=True)
        validation_split = check_number(validation_split, "validation_split", 0.0, 1.0, high_open=True)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (a line per epoch), got {verbose!r}")
        callbacks = list(callbacks or [])
        for i, cb in enumerate(callbacks):
            if not callable(getattr(cb, "on_epoch_end", None)):
                raise TypeError(f"callbacks[{i}] ({type(cb).__name__}) has no on_epoch_end(epoch, logs) method")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight)")
            Xv = self._check_X(validation_data[0], "validation_data X")
            tv, _ = self.loss.prepare(validation_data[1], self.output_dim, classes, self.dtype, "validation_data y")
            if len(tv) != Xv.shape[0]:
                raise ValueError("validation_data X and y have different numbers of samples")
            wv = self._check_sample_weight(validation_data[2], Xv.shape[0]) if len(validation_data) == 3 else None
            val = (Xv, tv, wv)
        elif validation_split > 0:
            n_train = int(n * (1 - validation_split))
            if n_train < 1 or n_train >= n:
                raise ValueError(f"validation_split={validation_split} leaves {n_train} training and "
                                 f"{n - n_train} validation samples out of {n}; both must be >= 1")
            val = (X[n_train:], targets[n_train:], None if w is None else w[n_train:])
            X, targets, w = X[:n_train], targets[:n_train], None if w is None else w[:n_train]
        n_train = X.shape[0]
        if n_train % batch_size == 1 and any(isinstance(layer, BatchNorm) for layer in self.layers):
            raise ValueError(f"{n_train} training samples in batches of {batch_size} leave a last batch of "
                             f"1 sample, which BatchNorm cannot normalize; choose another batch_size")
        self.classes_ = classes
        return self._fit_loop(X, targets, w, val, epochs, batch_size, shuffle, callbacks, verbose)

    def _fit_loop(self, X, targets, w, val, epochs, batch_size, shuffle, callbacks, verbose):
        n = X.shape[0]
        history = History()
        callbacks = callbacks + [history]
        self.stop_training = False
        for cb in callbacks:
            if hasattr(cb, "set_model"):
                cb.set_model(self)
            if hasattr(cb, "on_train_begin"):
                cb.on_train_begin({})
        rng = np.random.default_rng([self.seed, self._fits])
        self._fits += 1
        batches = _Batches(X, targets, w, batch_size)
        interrupted = _InterruptFlag()
        with interrupted, self._blas_guard(min(batch_size, n), n % batch_size or min(batch_size, n)):
            for epoch in range(epochs):
                for cb in callbacks:
                    if hasattr(cb, "on_epoch_begin"):
                        cb.on_epoch_begin(epoch, {})
                order = rng.permutation(n) if shuffle else None
                snapshot = self.parameters.copy()
                bar = _progress_bar(n, epoch, epochs) if verbose == 1 else None
                loss_sum, correct, seen = 0.0, 0.0, 0
                started = time.perf_counter()
                start, steps = 0, 1
                while start < n:
                    called = time.perf_counter()
                    taken, rows, losses, hits, loss = self._train_batches(batches, order, start, steps)
                    if not math.isfinite(loss):
                        self._diverged(loss, epoch, start // batch_size + taken, snapshot, bar)
                    # the next call: as many steps as take about _CALL_SECONDS (one where they go one by one)
                    per_step = (time.perf_counter() - called) / max(taken, 1)
                    steps = max(1, min(_MAX_STEPS_PER_CALL, int(_CALL_SECONDS / per_step)))
                    correct += hits
                    loss_sum += losses
                    seen += rows
                    start += rows
                    if bar is not None:
                        bar.update(rows)
                        if bar.n == n or time.perf_counter() - bar.last_print_t > bar.mininterval:
                            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
                    if interrupted.flag:
                        break
                logs = {"loss": loss_sum / seen}
                if self.loss.classification:
                    logs["accuracy"] = correct / seen
                if val is not None:
                    for key, value in self._evaluate(*val).items():
                        logs["val_" + key] = value
                logs["lr"] = self.optimizer.current_lr()
                logs["time"] = time.perf_counter() - started
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k not in ("lr", "time")})
                    bar.close()
                elif verbose == 2:
                    print(f"Epoch {epoch + 1}/{epochs} - {logs['time']:.2f}s - "
                          + " - ".join(f"{k}: {v:.4g}" for k, v in logs.items() if k != "time"), flush=True)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training or interrupted.flag:
                    break
        for cb in callbacks:
            if hasattr(cb, "on_train_end"):
                cb.on_train_end({})
        return history

    def _train_batches(self, batches, order, start, steps):
        """Training steps from row `start` of the epoch's batches (batches.get): up to `steps`
        of them in one DenseStack.train_batches call where that applies (every layer Dense,
        softmax cross-entropy on labels, shuffled batches, every update fused into the backward
        passes), else one step. Returns (the steps taken, the rows they saw, the sum of their
        losses times their rows, the rows predicted right (0 for a regression loss), the last
        step's loss: not finite where training diverged, that step changing nothing)."""
        n, batch_size = len(batches.arrays[0]), batches.batch_size
        size = min(batch_size, n - start)
        steps = min(steps, (n - start) // batch_size) if size == batch_size else 1
        self._bind_optimizer()
        stack, fusion = self._dense_stack(size), self._fusion()
        if order is not None and self._stack_takes_loss(stack, batches.arrays[1]) and self._fuses(fusion, size):
            fused = fusion.ranges
            scalars = self.optimizer._fused_scalars_ahead(fused, steps)
            if scalars is not None:
                _, batch = batches._plan(size)
                taken, total, hits, loss = stack.train_batches(batches.sources, batch, order, start, scalars,
                                                               self.loss.label_smoothing, get_num_threads())
                self._apply_step(fused, taken)
                return taken, taken * size, total * size, hits, loss
        xb, tb, wb = batches.get(order, start, get_num_threads())
        ctx, fused = self._step_context(fusion, size)
        loss, out, hits = self._loss_and_backward(xb, tb, wb, ctx)
        if not math.isfinite(loss):
            return 0, 0, 0.0, 0, loss
        if hits is None:
            hits = self.loss.correct(out, tb) if self.loss.classification else 0
        self._apply_step(fused)
        return 1, size, loss * size, hits, loss

    def _diverged(self, loss, epoch, step, snapshot, bar):
        if bar is not None:
            bar.close()
        if not all_finite(self.parameters):
            self.parameters[...] = snapshot
        raise FloatingPointError(
            f"the training loss became {loss} at epoch {epoch + 1}, step {step + 1}: training diverged. "
            f"The model keeps its last finite weights. Lower the learning rate "
            f"(now {self.optimizer.current_lr():g}), clip gradients (clip_norm=) or standardize the "
            f"inputs (fnn.Standardizer)")

    # -- weights ----------------------------------------------------------------------------------
    def get_weights(self):
        """Copies of the trainable arrays in layer order (Dense: W (in, out), then b)."""
        return [layer.params[name].copy() for layer, name, *_ in self._specs]

    def set_weights(self, weights):
        """Copy arrays in (same order, shapes as get_weights()); all are checked first."""
        weights = list(weights)
        if len(weights) != len(self._specs):
            raise ValueError(f"set_weights needs {len(self._specs)} arrays, got {len(weights)}")
        checked = []
        for i, (arr, (layer, name, *_)) in enumerate(zip(weights, self._specs)):
            a = np.asarray(arr)
            if a.dtype == object or a.dtype.kind not in "biuf":
                raise TypeError(f"weights[{i}] ({type(layer).__name__}.{name}) must be a real array, got {a.dtype}")
            if a.shape != layer.params[name].shape:
                raise ValueError(f"weights[{i}] ({type(layer).__name__}.{name}) has shape {a.shape}, "
                                 f"expected {layer.params[name].shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"weights[{i}] ({type(layer).__name__}.{name}) contains NaN or infinity")
            checked.append(a)
        for a, (layer, name, *_) in zip(checked, self._specs):
            layer.params[name][...] = a

    def count_params(self):
        return int(self.parameters.size)

    def summary(self, print_fn=print):
        """Print (and return) a table: layer, output shape, trainable and frozen parameters."""
        rows = [("Layer", "Output shape", "Params")]
        trainable = frozen = 0
        for i, layer in enumerate(self.layers):
            count = sum(int(np.prod(shape)) for _, shape, _ in layer.param_specs())
            if layer.trainable:
                trainable += count
            else:
                frozen += count
            rows.append((f"{i}: {layer.describe()}" + ("" if layer.trainable else " [frozen]"),
                         f"(None, {layer.output_dim})", f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        line = "-" * (sum(widths) + 4)
        text = [line] + [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
        text.insert(2, line)
        text += [line, f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
                 f"Frozen params: {frozen:,}",
                 f"Loss: {self.loss.name}, optimizer: {type(self.optimizer).__name__}"
                 f"(lr={self.optimizer.current_lr():g}), dtype: {np.dtype(self.dtype).name}"]
        text = "\n".join(text)
        if print_fn is not None:
            print_fn(text)
        return text

    def get_config(self):
        """JSON-serializable description that rebuilds this model (without its numbers)."""
        return {"layers": [{"class": type(layer).__name__, "config": layer.get_config(),
                            "trainable": layer.trainable} for layer in self.layers],
                "loss": self.loss.get_config(),
                "optimizer": {"name": self.optimizer.name, **self.optimizer.hyperparameters()},
                "dtype": np.dtype(self.dtype).name, "seed": self.seed, "input_dim": self.input_dim}

    def __reduce__(self):
        """Pickle through the same arrays + JSON config as fnn.save (views are rebuilt on load)."""
        from .io import from_arrays, to_arrays

        return from_arrays, (to_arrays(self),)

    def __repr__(self):
        return f"Sequential({len(self.layers)} layers, {self.count_params():,} parameters, loss={self.loss.name!r})"


def _byte_rows(a):
    """A C-contiguous array's rows as those of a uint8 matrix (gather_rows's operands)."""
    return a.reshape(len(a), -1).view(np.uint8)


class _Batches:
    """Minibatches of (X, targets, sample_weight) in a given order, gathered into reused buffers
    (one row copy per sample per epoch, no allocation per step); without an order, the batches
    are views of consecutive rows."""

    def __init__(self, X, targets, w, batch_size):
        self.arrays, self.batch_size = (X, targets, w), batch_size
        self._plans = {}

    @functools.cached_property
    def sources(self):
        """Per array of (X, targets, sample_weight) (None where absent), its rows as gather_rows
        takes them."""
        return tuple(None if a is None else _byte_rows(np.ascontiguousarray(a)) for a in self.arrays)

    def _plan(self, size):
        """For batches of `size` rows, per array of (X, targets, sample_weight) (None where
        absent): (its batch buffer's rows as gather_rows takes them; the buffers)."""
        plan = self._plans.get(size)
        if plan is None:
            buffers = tuple(None if a is None else np.empty((size,) + a.shape[1:], a.dtype) for a in self.arrays)
            plan = self._plans[size] = (tuple(None if buf is None else _byte_rows(buf) for buf in buffers), buffers)
        return plan

    def get(self, order, start, n_threads):
        stop = start + self.batch_size
        if order is None:
            return tuple(None if a is None else a[start:stop] for a in self.arrays)
        rows = order[start:stop]
        destinations, batch = self._plan(len(rows))
        for src, dst in zip(self.sources, destinations):
            if src is not None:
                gather_rows(src, rows, dst, n_threads)
        return batch


class _InterruptFlag:
    """Turns Ctrl-C during fit into a flag checked after each step (main thread only)."""

    def __init__(self):
        self.flag = False
        self._previous = None

    def _handler(self, signum, frame):
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
