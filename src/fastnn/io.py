"""Save and load models as one .npz file: arrays plus a JSON config, never pickle."""
import json
import os
import tempfile
import zipfile

import numpy as np

from . import __version__
from . import layers as _layers
from . import optim as _optim

__all__ = ["save", "load", "to_arrays", "from_arrays"]

_FORMAT = "fastnn-model"
_FORMAT_VERSION = 1


def _layer_classes():
    return {cls.__name__: cls for cls in vars(_layers).values()
            if isinstance(cls, type) and issubclass(cls, _layers.Layer) and cls is not _layers.Layer}


def to_arrays(model):
    """Everything that defines the model as a dict of arrays (the JSON config as bytes)."""
    arrays = {"parameters": model.parameters.copy()}
    state = model.optimizer.state_dict()
    for i, buffer in enumerate(state["buffers"]):
        for name, value in buffer.items():
            arrays[f"optimizer/{i}/{name}"] = value
    for i, layer in enumerate(model.layers):
        for name, value in layer.state_arrays().items():
            arrays[f"layers/{i}/{name}"] = value
    if model.classes_ is not None:
        arrays["classes"] = np.asarray(model.classes_)
    config = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "fastnn_version": __version__,
              "model": model.get_config(), "optimizer_steps": state["t"],
              "optimizer_buffers": len(state["buffers"]), "steps": model._steps, "fits": model._fits}
    arrays["config"] = np.frombuffer(json.dumps(config).encode("utf-8"), dtype=np.uint8)
    return arrays


def save(model, path):
    """Write the model (architecture, weights, layer state, loss, optimizer and its state,
    classes) to `path` atomically: a temporary file in the same directory, then a rename."""
    path = os.fspath(path)
    arrays = to_arrays(model)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fastnn-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """Rebuild a model saved by save(): identical predictions, and training resumes with the
    same optimizer state. Raises ValueError for truncated, tampered or foreign files."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable fastnn model file (truncated or not an .npz): {exc}") from None
    try:
        return from_arrays(arrays)
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid fastnn model file: {exc}") from None


def from_arrays(arrays):
    """Rebuild a model from to_arrays() output (raises ValueError when it is inconsistent)."""
    from .model import Sequential

    arrays = dict(arrays)
    try:
        config = json.loads(arrays.pop("config").tobytes().decode("utf-8"))
        if config.get("format") != _FORMAT:
            raise ValueError("no fastnn model config")
        if config["format_version"] > _FORMAT_VERSION:
            raise ValueError(f"file format version {config['format_version']} is newer than this "
                             f"fastnn ({__version__}) reads; upgrade fastnn")
        spec = config["model"]
        classes = _layer_classes()
        layers = []
        for entry in spec["layers"]:
            if entry["class"] not in classes:
                raise ValueError(f"unknown layer class {entry['class']!r}")
            layer = classes[entry["class"]](**entry["config"])
            layer.trainable = bool(entry["trainable"])
            layers.append(layer)
        model = Sequential(layers, loss=spec["loss"], optimizer=_optim.from_config(spec["optimizer"]),
                           dtype=spec["dtype"], seed=spec["seed"], input_dim=spec["input_dim"])
        params = arrays.pop("parameters")
        if params.shape != model.parameters.shape or params.dtype != model.parameters.dtype:
            raise ValueError(f"parameters have shape {params.shape} and dtype {params.dtype}, the "
                             f"architecture needs {model.parameters.shape} {model.parameters.dtype}")
        model.parameters[...] = params
        for i, layer in enumerate(model.layers):
            expected = layer.state_arrays()
            stored = {name: arrays.pop(f"layers/{i}/{name}") for name in expected}
            for name, value in stored.items():
                if value.shape != expected[name].shape:
                    raise ValueError(f"layer {i} state {name!r} has shape {value.shape}, "
                                     f"expected {expected[name].shape}")
            layer.load_state_arrays(stored)
        model.classes_ = arrays.pop("classes", None)
        model._bind_optimizer()
        buffers = [{} for _ in range(config["optimizer_buffers"])]
        for key in [k for k in arrays if k.startswith("optimizer/")]:
            _, i, name = key.split("/", 2)
            buffers[int(i)][name] = arrays.pop(key)
        model.optimizer.load_state_dict({"t": config["optimizer_steps"], "buffers": buffers})
        model._steps, model._fits = int(config["steps"]), int(config["fits"])
        if arrays:
            raise ValueError(f"unexpected arrays {sorted(arrays)}")
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    return model
