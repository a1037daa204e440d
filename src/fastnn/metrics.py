"""Evaluation metrics on predictions (NumPy)."""
import numpy as np

__all__ = ["accuracy", "confusion_matrix"]


def accuracy(y_true, y_pred):
    """Fraction of equal labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and of the same shape, got "
                         f"{y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, n_classes=None):
    """C[i, j] = number of samples of class i predicted as j (integer labels 0..n_classes-1)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    n = n_classes or int(max(y_true.max(), y_pred.max())) + 1
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
