"""Losses: target validation/encoding, the fused value-and-gradient kernel, the output link.

Reductions follow torch.nn.functional with reduction="mean": softmax cross-entropy
averages over samples; binary cross-entropy, mse, mae, huber and binary hinge over
every element (samples x outputs); multiclass hinge is torch.nn.MultiMarginLoss.
"""
import numpy as np

from ._core import activations as _act
from ._core import losses as _kernels
from ._core.arrays import labels_in_range
from .threads import get_num_threads
from ._validation import check_number

__all__ = ["get", "NAMES", "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MSE", "MAE", "Huber", "Hinge"]


def _as_label_vector(y, name="y"):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels, got shape {y.shape}")
    if y.dtype == object or y.dtype.kind == "c":
        if y.dtype.kind == "c" or not all(isinstance(v, str) for v in y):
            raise TypeError(f"{name} labels must be integers or strings, got dtype {y.dtype}")
        y = y.astype(str)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name} contains NaN or infinity")
        if np.any(y != np.round(y)):
            raise ValueError(f"{name} holds non-integer class labels; for regression use loss='mse'")
    return y


def encode_labels(y, classes, n_classes, name="y"):
    """Map labels to 0..n_classes-1. Returns (int64 codes, classes); classes is created from
    y when None (range(n_classes) if y already holds such indices, else np.unique(y))."""
    if (classes is not None and isinstance(y, np.ndarray) and y.dtype == np.int64 and y.ndim == 1
            and y.flags.c_contiguous and len(classes) == n_classes and classes.dtype == np.int64
            and classes[-1] == n_classes - 1 and classes[0] == 0
            and labels_in_range(y, n_classes)):
        return y, classes  # the training loop's common case: already codes 0..n-1
    y = _as_label_vector(y, name)
    if classes is None:
        if y.dtype.kind in "iuf" and y.min() >= 0 and y.max() < n_classes:
            classes = np.arange(n_classes)
        else:
            classes = np.unique(y)
            if len(classes) != n_classes:
                raise ValueError(f"{name} has {len(classes)} distinct labels but the model has "
                                 f"{n_classes} outputs; make the last layer's out_features "
                                 f"{len(classes)}, or use labels 0..{n_classes - 1}")
    if classes.dtype.kind in "iu" and classes[0] == 0 and classes[-1] == len(classes) - 1 \
            and y.dtype.kind in "iuf":
        if y.min() < 0 or y.max() >= len(classes):
            bad = y[(y < 0) | (y >= len(classes))][0].item()
            raise ValueError(f"{name} holds label {bad!r}, outside the model's classes 0..{len(classes) - 1}")
        return y.astype(np.int64, copy=False), classes
    try:
        idx = np.searchsorted(classes, y)
    except TypeError:
        raise TypeError(f"{name} labels have a different type ({y.dtype}) than the model's "
                        f"classes ({classes.dtype})") from None
    idx = np.minimum(idx, len(classes) - 1)
    unknown = classes[idx] != y
    if np.any(unknown):
        raise ValueError(f"{name} holds label {y[unknown][0].item()!r}, not among the model's classes "
                         f"{classes.tolist()[:20]}")
    return idx.astype(np.int64), classes


def _as_target_matrix(y, n_outputs, dtype, name="y"):
    y = np.asarray(y)
    if y.dtype == object or y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {y.dtype}")
    if y.ndim == 1 and n_outputs == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != n_outputs:
        raise ValueError(f"{name} must have shape (n_samples, {n_outputs}) to match the model's "
                         f"outputs, got {y.shape}")
    y = np.ascontiguousarray(y, dtype=dtype)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or infinity")
    return y


class Loss:
    """A loss: `prepare` validates and encodes targets, `__call__` returns the mean loss
    and writes dL/d(outputs) into grad, `link` maps raw outputs to predictions."""

    name = None
    classification = False

    def prepare(self, y, n_outputs, classes, dtype, name="y"):
        """(targets ready for the kernel, classes)."""
        return _as_target_matrix(y, n_outputs, dtype, name), classes

    def link(self, out):
        return out

    def correct(self, out, targets):
        """Number of correct predictions in a batch (classification losses), else None."""
        return None

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class SoftmaxCrossEntropy(Loss):
    """L = mean_i [logsumexp(z_i) - sum_c q_ic z_ic] with q' = (1 - a) q + a / C for
    label_smoothing = a (PyTorch's convention). Targets: integer labels (any integers or
    strings, mapped through classes_) or (n, C) probability rows."""

    name = "softmax_cross_entropy"
    classification = True

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = check_number(label_smoothing, "label_smoothing", 0.0, 1.0)

    def prepare(self, y, n_outputs, classes, dtype, name="y"):
        y_arr = np.asarray(y)
        if y_arr.ndim == 2 and y_arr.shape[1] == n_outputs and n_outputs > 1:
            q = _as_target_matrix(y_arr, n_outputs, dtype, name)
            if np.any(q < 0):
                raise ValueError(f"{name} probability targets must be >= 0")
            return q, classes if classes is not None else np.arange(n_outputs)
        return encode_labels(y_arr, classes, n_outputs, name)

    def __call__(self, out, targets, grad, row_loss, sample_weight, n_threads):
        labels, probs = (targets, None) if targets.ndim == 1 else (None, targets)
        return _kernels.softmax_cross_entropy(out, labels, probs, grad, row_loss, sample_weight,
                                              self.label_smoothing, n_threads)

    def link(self, out):
        p = np.empty_like(out)
        _act.softmax(np.ascontiguousarray(out), p, get_num_threads())
        return p

    def correct(self, out, targets):
        truth = targets if targets.ndim == 1 else targets.argmax(axis=1)
        return int(np.count_nonzero(out.argmax(axis=1) == truth))

    def get_config(self):
        return {"name": self.name, "label_smoothing": self.label_smoothing}


class _Elementwise(Loss):
    _kind = None
    delta = 1.0

    def __call__(self, out, targets, grad, row_loss, sample_weight, n_threads):
        return _kernels.elementwise_loss(out, targets, grad, row_loss, sample_weight,
                                         self._kind, self.delta, n_threads)


class BinaryCrossEntropy(_Elementwise):
    """L = mean over elements of  max(z, 0) - z t + log(1 + e^-|z|)  (BCE on logits,
    torch's binary_cross_entropy_with_logits); targets in [0, 1], one column per label."""

    name = "binary_cross_entropy"
    classification = True
    _kind = _kernels.ELEMENTWISE["binary_cross_entropy"]

    def prepare(self, y, n_outputs, classes, dtype, name="y"):
        t = _as_target_matrix(y, n_outputs, dtype, name)
        if np.any((t < 0) | (t > 1)):
            raise ValueError(f"{name} targets for binary_cross_entropy must lie in [0, 1]")
        return t, classes

    def link(self, out):
        return 0.5 * (1.0 + np.tanh(0.5 * out))  # sigmoid without overflow

    def correct(self, out, targets):
        return np.count_nonzero((out > 0) == (targets > 0.5)) / out.shape[1]


class MSE(_Elementwise):
    """L = mean (z - t)^2."""

    name = "mse"
    _kind = _kernels.ELEMENTWISE["mse"]


class MAE(_Elementwise):
    """L = mean |z - t|."""

    name = "mae"
    _kind = _kernels.ELEMENTWISE["mae"]


class Huber(_Elementwise):
    """L = mean of 0.5 d^2 if |d| <= delta else delta (|d| - delta / 2), d = z - t."""

    name = "huber"
    _kind = _kernels.ELEMENTWISE["huber"]

    def __init__(self, delta=1.0):
        self.delta = check_number(delta, "delta", low=0, low_open=True)

    def get_config(self):
        return {"name": self.name, "delta": self.delta}


class Hinge(Loss):
    """Binary: L = mean max(0, 1 - t z) with t in {-1, +1} (0/1 targets are mapped to -1/+1),
    one column per output. Multiclass (integer labels with C > 1 outputs):
    torch.nn.MultiMarginLoss, L_i = sum_{c != y} max(0, 1 - z_y + z_c) / C."""

    name = "hinge"
    classification = True
    _kind = _kernels.ELEMENTWISE["hinge"]

    def prepare(self, y, n_outputs, classes, dtype, name="y"):
        y_arr = np.asarray(y)
        if n_outputs > 1 and (y_arr.ndim == 1 or y_arr.shape[1:] == (1,)):
            return encode_labels(y_arr, classes, n_outputs, name)
        t = _as_target_matrix(y_arr, n_outputs, dtype, name)
        values = np.unique(t)
        if np.all(np.isin(values, [0, 1])):
            t = 2 * t - 1
        elif not np.all(np.isin(values, [-1, 1])):
            raise ValueError(f"{name} targets for binary hinge must be -1/+1 (or 0/1), "
                             f"got values {values[:5].tolist()}")
        return t, classes

    def __call__(self, out, targets, grad, row_loss, sample_weight, n_threads):
        if targets.ndim == 1:
            return _kernels.multiclass_hinge(out, targets, grad, row_loss, sample_weight, n_threads)
        return _kernels.elementwise_loss(out, targets, grad, row_loss, sample_weight,
                                         self._kind, 1.0, n_threads)

    def correct(self, out, targets):
        if targets.ndim == 1:
            return int(np.count_nonzero(out.argmax(axis=1) == targets))
        return np.count_nonzero(np.where(out > 0, 1, -1) == targets) / out.shape[1]


_BY_NAME = {cls.name: cls for cls in (SoftmaxCrossEntropy, BinaryCrossEntropy, MSE, MAE, Huber, Hinge)}
NAMES = sorted(_BY_NAME)


def get(loss, **kwargs):
    """A Loss from a name (with its keyword arguments) or a Loss instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, dict):
        kwargs = {k: v for k, v in loss.items() if k != "name"}
        loss = loss.get("name")
    if not isinstance(loss, str) or loss not in _BY_NAME:
        raise ValueError(f"unknown loss {loss!r}; choose one of {NAMES}")
    return _BY_NAME[loss](**kwargs)
