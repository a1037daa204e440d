"""Training steps with each kind of hidden layer: fastnn against PyTorch eager (fused Adam).

The mnist network (784-512-512-10, batch 256, Adam) with every hidden activation swapped,
then 784-512-10 with a BatchNorm, LayerNorm or Dropout layer after the first product, and
784-512-100 with 100 independent labels (binary cross-entropy on logits).
Both libraries take turns in one process (round by round, so the machine's drift touches
both alike) and each ratio is the median of the per-round ratios.

    python bench/layer_kinds.py [--threads 1] [--batch 256] [--rounds 9] [--dtype float32]
"""
import argparse
import statistics

import numpy as np

import fastnn as fnn
from common import TORCH_ACTIVATIONS, per_round

SIZES = [784, 512, 512, 10]


def activation_networks(activation):
    import torch

    ours = [fnn.Dense(a, b, activation=activation) for a, b in zip(SIZES[:-2], SIZES[1:-1])]
    ours.append(fnn.Dense(SIZES[-2], SIZES[-1]))
    theirs = []
    for a, b in zip(SIZES[:-2], SIZES[1:-1]):
        theirs += [torch.nn.Linear(a, b), getattr(torch.nn, TORCH_ACTIVATIONS[activation])()]
    theirs.append(torch.nn.Linear(SIZES[-2], SIZES[-1]))
    return ours, theirs


def normalization_networks(kind):
    import torch

    ours = {"batchnorm": fnn.BatchNorm(512), "layernorm": fnn.LayerNorm(512), "dropout": fnn.Dropout(0.2)}[kind]
    theirs = {"batchnorm": torch.nn.BatchNorm1d(512), "layernorm": torch.nn.LayerNorm(512),
              "dropout": torch.nn.Dropout(0.2)}[kind]
    return ([fnn.Dense(784, 512), ours, fnn.Activation("relu"), fnn.Dense(512, 10)],
            [torch.nn.Linear(784, 512), theirs, torch.nn.ReLU(), torch.nn.Linear(512, 10)])


def multilabel_networks():
    import torch

    return ([fnn.Dense(784, 512, activation="relu"), fnn.Dense(512, 100)],
            [torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 100)])


def steps(ours, theirs, X, y):
    import torch

    multilabel = y.ndim == 2
    model = fnn.Sequential(ours, loss="binary_cross_entropy" if multilabel else "softmax_cross_entropy",
                           optimizer=fnn.optim.Adam(lr=1e-3), seed=0, dtype=X.dtype.name)
    net = torch.nn.Sequential(*theirs).to(torch.from_numpy(X).dtype)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def torch_step():
        opt.zero_grad(set_to_none=False)
        loss_fn(net(Xt), yt).backward()
        opt.step()
    return (lambda: model.train_step(X, y)), torch_step


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)
    fnn.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch, SIZES[0])).astype(args.dtype)
    y = rng.integers(0, SIZES[-1], args.batch)
    labels = (rng.random((args.batch, 100)) < 0.1).astype(args.dtype)
    cases = [(a, activation_networks(a), y) for a in TORCH_ACTIVATIONS]
    cases += [(k, normalization_networks(k), y) for k in ("batchnorm", "layernorm", "dropout")]
    cases.append(("bce-100", multilabel_networks(), labels))
    print(f"{args.dtype}, batch {args.batch}, {args.threads} thread(s), Adam; ms per training step")
    print(f"{'hidden layer':12s} {'fastnn':>8s} {'torch':>8s} {'torch/fastnn':>13s}")
    for name, (ours, theirs), targets in cases:
        fns = steps(ours, theirs, X, targets)
        for fn in fns:          # warm-up
            for _ in range(10):
                fn()
        ours_t, theirs_t = per_round(fns, args.rounds, calls=20)
        ratio = statistics.median(t / o for o, t in zip(ours_t, theirs_t))
        print(f"{name:12s} {statistics.median(ours_t) * 1e3:8.2f} {statistics.median(theirs_t) * 1e3:8.2f} "
              f"{ratio:13.2f}")


if __name__ == "__main__":
    main()
