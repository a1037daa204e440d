"""fastnn: fast CPU training of multilayer perceptrons.

A typed Cython + OpenMP core (fastnn._core) under a small Keras/PyTorch-like API:

    import fastnn as fnn
    model = fnn.Sequential([fnn.Dense(64, 128, activation="relu"), fnn.Dense(128, 10)],
                           loss="softmax_cross_entropy", optimizer=fnn.optim.Adam(lr=1e-3))
    model.fit(X, y, epochs=10, batch_size=128)
"""
__version__ = "0.1.0"

from . import callbacks, datasets, ensemble, gradcheck, init, losses, metrics, model_selection, optim, schedules  # noqa: E402,E501
from .io import load, save  # noqa: E402
from .layers import (Activation, BatchNorm, Dense, Dropout, GaussianNoise, GroupNorm, Layer,  # noqa: E402
                     LayerNorm, PReLU)
from .model import Sequential  # noqa: E402
from .preprocessing import Standardizer  # noqa: E402
from .threads import available_cpus, get_num_threads, openmp_enabled, set_num_threads, threads  # noqa: E402

__all__ = ["Sequential", "Dense", "Activation", "Layer", "Dropout", "GaussianNoise", "BatchNorm",
           "LayerNorm", "GroupNorm", "PReLU", "Standardizer", "save", "load",
           "set_num_threads", "get_num_threads", "threads", "available_cpus", "openmp_enabled",
           "callbacks", "datasets", "ensemble", "gradcheck", "init", "model_selection", "losses", "metrics",
           "optim", "schedules", "__version__"]
