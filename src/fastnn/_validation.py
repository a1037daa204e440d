"""Input checks at the API boundary: each error names the argument, the problem and the fix."""
import numbers

import numpy as np

from ._core import arrays as _arrays

DTYPES = {"float32": np.float32, "float64": np.float64}


def check_dtype(dtype):
    """Return np.float32 or np.float64 for a dtype-like, or raise."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return DTYPES[name]


def nonfinite_error(name):
    return ValueError(f"{name} contains NaN or infinity; remove or impute those values first")


def require_finite(X, name, proven=False):
    """Raise nonfinite_error(name) unless X is finite (already proven, or by a pass over X)."""
    if not proven and not _arrays.all_finite(X.reshape(-1)):
        raise nonfinite_error(name)


def check_matrix(X, name, dtype, n_features=None, allow_1d=False, finite=True):
    """X as a C-contiguous 2-D array of `dtype` (copied only if needed) with finite values,
    unless finite=False leaves that check to the caller."""
    if (type(X) is np.ndarray and X.dtype == dtype and X.ndim == 2 and X.flags.c_contiguous and X.shape[0]
            and (n_features is None or X.shape[1] == n_features)):
        arr = X   # already what the kernels take (a training loop's batches): no conversion to look for
    else:
        arr = _as_matrix(X, name, dtype, n_features, allow_1d)
    if finite:
        require_finite(arr, name)
    return arr


def _as_matrix(X, name, dtype, n_features, allow_1d):
    """X as a C-contiguous 2-D array of `dtype`, or the error that says why it cannot be."""
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TypeError(f"{name} is a sparse matrix; fastnn needs dense input: pass {name}.toarray()")
    arr = np.asarray(X)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}"
                        + (" (complex values are not supported)" if arr.dtype.kind == "c" else ""))
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}"
                         + ("; reshape 1-D data with X.reshape(-1, 1) (one feature) or "
                            "X.reshape(1, -1) (one sample)" if arr.ndim == 1 else ""))
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples); pass at least one sample")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features but the model expects {n_features}")
    return np.ascontiguousarray(arr, dtype=dtype)


def check_number(value, name, low=None, high=None, low_open=False, high_open=False, integer=False):
    """A real (or integer) scalar inside [low, high] (open ends when asked)."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a real number'}, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        interval = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return int(value) if integer else float(value)


def check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value
