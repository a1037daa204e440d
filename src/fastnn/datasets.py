"""Datasets: the embedded digits, Fashion-MNIST from IDX files, and user files (.npz/.csv).

Every loader returns (X_train, y_train), (X_test, y_test) with X float32 in [0, 1]
(one row per sample, images flattened) and y int64.
"""
import gzip
import os

import numpy as np

__all__ = ["load_digits", "load_fashion_mnist", "load_idx", "load_file", "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_digits(test_fraction=0.2, seed=0):
    """UCI optical digits (1,797 images 8x8, 10 classes), embedded in the package
    (CC BY 4.0, see fastnn/data/README.md); a seeded stratified train/test split."""
    with np.load(os.path.join(os.path.dirname(__file__), "data", "digits.npz")) as data:
        X = data["images"].astype(np.float32) / 16.0
        y = data["labels"].astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        test[members[:int(round(test_fraction * len(members)))]] = True
    return (X[~test], y[~test]), (X[test], y[test])


def load_idx(path):
    """Read an IDX file (gzipped when its name ends in .gz) into an ndarray of its shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != header + count * dtype.itemsize:
        raise ValueError(f"{path} is truncated or corrupt: header says shape {shape}, "
                         f"file has {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory, stem):
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    return None


def load_fashion_mnist(path=None):
    """Fashion-MNIST (60,000 train / 10,000 test images 28x28, 10 classes) from IDX files in
    `path` (default: the Debian package's location)."""
    directory = FASHION_MNIST_DIR if path is None else str(path)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    files = [_find(directory, s) for s in stems]
    if None in files:
        missing = stems[files.index(None)]
        hint = (" Install it with: apt-get install dataset-fashion-mnist" if path is None
                else " Download the four IDX files from https://github.com/zalandoresearch/fashion-mnist")
        raise FileNotFoundError(f"Fashion-MNIST not found: no {missing}[.gz] in {directory}.{hint}")
    Xtr, ytr, Xte, yte = (load_idx(f) for f in files)
    scale = np.float32(1 / 255)
    return ((Xtr.reshape(len(Xtr), -1).astype(np.float32) * scale, ytr.astype(np.int64)),
            (Xte.reshape(len(Xte), -1).astype(np.float32) * scale, yte.astype(np.int64)))


def load_file(path, test_fraction=0.2, seed=0):
    """A user data set: .npz with X_train, y_train, X_test, y_test (or X, y, split here), or
    a .csv of numbers whose last column is the integer label (split here). X is used as is."""
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if {"X_train", "y_train", "X_test", "y_test"} <= keys:
                return (data["X_train"], data["y_train"]), (data["X_test"], data["y_test"])
            if {"X", "y"} <= keys:
                X, y = data["X"], data["y"]
            else:
                raise ValueError(f"{path} must hold arrays X_train, y_train, X_test, y_test or X, y; "
                                 f"it holds {sorted(keys)}")
    elif path.endswith(".csv"):
        table = np.loadtxt(path, delimiter=",", ndmin=2)
        X, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)
    else:
        raise ValueError(f"unsupported data file {path!r}: use .npz or .csv")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    n_test = max(1, int(round(test_fraction * len(X))))
    test, train = perm[:n_test], perm[n_test:]
    return (X[train], y[train]), (X[test], y[test])
