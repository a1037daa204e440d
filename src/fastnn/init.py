"""Weight initializers: each fills a (fan_in, fan_out) matrix from a NumPy Generator.

Glorot/Xavier (Glorot & Bengio 2010): Var = 2 / (fan_in + fan_out);
He/Kaiming (He et al. 2015): Var = 2 / fan_in (for ReLU);
LeCun: Var = 1 / fan_in (for SELU/tanh); "normal": N(0, std^2), the lecture's
"small random" weights. PyTorch's kaiming_* use the same variances.
"""
import numpy as np

__all__ = ["get", "NAMES"]


def glorot_uniform(rng, shape):
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, shape)


def glorot_normal(rng, shape):
    return rng.normal(0.0, np.sqrt(2.0 / (shape[0] + shape[1])), shape)


def he_normal(rng, shape):
    return rng.normal(0.0, np.sqrt(2.0 / shape[0]), shape)


def he_uniform(rng, shape):
    limit = np.sqrt(6.0 / shape[0])
    return rng.uniform(-limit, limit, shape)


def lecun_normal(rng, shape):
    return rng.normal(0.0, np.sqrt(1.0 / shape[0]), shape)


def zeros(rng, shape):
    return np.zeros(shape)


class Normal:
    """N(0, std^2) for every weight."""

    def __init__(self, std=0.01):
        if not (isinstance(std, (int, float)) and np.isfinite(std) and std > 0):
            raise ValueError(f"init 'normal' needs std > 0, got {std!r}")
        self.std = float(std)

    def __call__(self, rng, shape):
        return rng.normal(0.0, self.std, shape)


_BY_NAME = {"glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
            "he_normal": he_normal, "he_uniform": he_uniform,
            "lecun_normal": lecun_normal, "zeros": zeros}
NAMES = sorted(_BY_NAME) + ["normal"]


def get(init, std=0.01):
    """Initializer for a name (or a callable rng, shape -> array, returned as is)."""
    if callable(init):
        return init
    if init == "normal":
        return Normal(std)
    if not isinstance(init, str) or init not in _BY_NAME:
        raise ValueError(f"unknown init {init!r}; choose one of {NAMES}")
    return _BY_NAME[init]
