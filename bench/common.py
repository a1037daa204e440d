"""Shared helpers for the benchmarks: timing, networks in NumPy and PyTorch, environment."""
import json
import os
import platform
import statistics
import time

import numpy as np


def step_products(xs, Ws, outs, dZs, dWs, dXs, **kw):
    """The matrix products of a Dense network's training step, nothing else: per layer i the
    forward X_i W_i into outs[i], then from the last layer back the weight gradient
    X_i^T dZ_i into dWs[i] and, but for the first layer, the input gradient dZ_i W_i^T into
    dXs[i]; through fastnn's GEMM (kw: n_threads) or BLAS alone (kw: blas=True)."""
    from fastnn._core._blas import gemm_rowmajor

    for i, W in enumerate(Ws):
        gemm_rowmajor(xs[i], W, outs[i], **kw)
    for i in range(len(Ws) - 1, -1, -1):
        gemm_rowmajor(xs[i], dZs[i], dWs[i], True, False, **kw)
        if i:
            gemm_rowmajor(dZs[i], Ws[i], dXs[i], False, True, **kw)


def median_time(fn, repeat, warmup=3, min_time=0.2):
    """Median seconds per call over `repeat` batches of calls (each batch lasts >= min_time / repeat).

    Sleeps first, so that another library's spinning worker threads (OpenBLAS, torch's
    OpenMP) have gone idle and do not compete with the code being timed.
    """
    time.sleep(0.3)
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / repeat / one))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def per_round(fns, rounds, calls):
    """Seconds per call of each function, round by round, the functions taking turns (so the
    machine's drift touches all alike)."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[i].append((time.perf_counter() - t0) / calls)
    return times


def target(name, value, bound, at_most=True):
    """One target of the performance issue, judged: value <= bound (or >= with at_most=False)."""
    met = value <= bound if at_most else value >= bound
    return {"target": name, "value": value, "bound": f"{'<=' if at_most else '>='} {bound}", "met": bool(met)}


def verdict(t):
    return "met" if t["met"] else f"MISSED ({t['bound']})"


def environment():
    import scipy
    import threadpoolctl

    import fastnn

    info = {"machine": platform.machine(), "processor": platform.processor() or _cpu_model(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "fastnn": fastnn.__version__,
            "blas": [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
                     for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]}
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def write_json(path, payload):
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


class NumpyMLP:
    """A plain float32 NumPy training step (forward, softmax cross-entropy, backward, Adam),
    written the way a careful NumPy user would: in-place where NumPy allows it."""

    def __init__(self, sizes, batch, rng, lr=1e-3):
        self.W = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32)
                  for a, b in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(b, np.float32) for b in sizes[1:]]
        self.params = self.W + self.b
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t, self.lr = 0, lr

    def step(self, X, y):
        acts = [X]
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = acts[-1] @ W
            z += b
            if i < len(self.W) - 1:
                np.maximum(z, 0, out=z)
            acts.append(z)
        z = acts[-1]
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        n = len(y)
        z[np.arange(n), y] -= 1
        z /= n
        dz = z
        grads_W, grads_b = [None] * len(self.W), [None] * len(self.W)
        for i in range(len(self.W) - 1, -1, -1):
            grads_W[i] = acts[i].T @ dz
            grads_b[i] = dz.sum(axis=0)
            if i:
                dz = dz @ self.W[i].T
                dz *= acts[i] > 0
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        step = self.lr / (1 - b1 ** self.t)
        bc2 = np.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(self.params, grads_W + grads_b, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= step * m / (np.sqrt(v) / bc2 + eps)


# fastnn activation name -> the PyTorch module with the same formula (default parameters)
TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "elu": "ELU",
                     "softplus": "Softplus", "silu": "SiLU", "leaky_relu": "LeakyReLU"}


def torch_mlp(sizes, threads, fused):
    import torch

    torch.set_num_threads(threads)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(X, y):
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(net(X), y)
        loss.backward()
        opt.step()
        return loss
    return net, step
