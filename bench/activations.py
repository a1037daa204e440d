"""Training steps with each hidden activation: fastnn against PyTorch eager (fused Adam).

The mnist network (784-512-512-10, batch 256, Adam) with every hidden layer's activation
swapped; both libraries take turns in one process (round by round, so the machine's drift
touches both alike) and the ratio is the median of the per-round ratios.

    python bench/activations.py [--threads 1] [--batch 256] [--rounds 9]
"""
import argparse
import statistics
import time

import numpy as np

import fastnn as fnn
from common import TORCH_ACTIVATIONS, torch_mlp

SIZES = [784, 512, 512, 10]


def fastnn_step(activation, X, y):
    layers = [fnn.Dense(a, b, activation=activation) for a, b in zip(SIZES[:-2], SIZES[1:-1])]
    layers.append(fnn.Dense(SIZES[-2], SIZES[-1]))
    model = fnn.Sequential(layers, optimizer=fnn.optim.Adam(lr=1e-3), seed=0)
    return lambda: model.train_step(X, y)


def torch_step(activation, X, y, threads):
    import torch

    _, step = torch_mlp(SIZES, threads, fused=True, activation=activation)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    return lambda: step(Xt, yt)


def per_round(fns, rounds, calls):
    """Seconds per call of each function, round by round, the functions taking turns."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[i].append((time.perf_counter() - t0) / calls)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    fnn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], args.batch)
    print(f"784-512-512-10, batch {args.batch}, {args.threads} thread(s), Adam; ms per training step")
    print(f"{'activation':12s} {'fastnn':>8s} {'torch':>8s} {'torch/fastnn':>13s}")
    for activation in TORCH_ACTIVATIONS:
        fns = [fastnn_step(activation, X, y), torch_step(activation, X, y, args.threads)]
        for fn in fns:          # warm-up
            for _ in range(10):
                fn()
        ours, theirs = per_round(fns, args.rounds, calls=20)
        ratio = statistics.median(t / o for o, t in zip(ours, theirs))
        print(f"{activation:12s} {statistics.median(ours) * 1e3:8.2f} {statistics.median(theirs) * 1e3:8.2f} "
              f"{ratio:13.2f}")


if __name__ == "__main__":
    main()
