"""Fashion-MNIST with normalization and dropout layers: 784-512-BatchNorm-ReLU-Dropout(0.2)
-256-ReLU-10, Adam lr 1e-3, batch 128, standardized inputs. Reports test accuracy, seconds
per epoch, and the share of a training step spent in the BatchNorm and Dropout kernels
(forward + backward, timed inside real steps).

    python bench/norm_layers.py [--epochs 10] [--threads 1] [--seeds 1]
"""
import argparse
import time

import numpy as np

import fastnn as fnn


def network(seed):
    return fnn.Sequential([fnn.Dense(784, 512, init="he_normal"), fnn.BatchNorm(512), fnn.Activation("relu"),
                           fnn.Dropout(0.2), fnn.Dense(512, 256, activation="relu", init="he_normal"),
                           fnn.Dense(256, 10)], optimizer=fnn.optim.Adam(lr=1e-3), seed=seed)


def layer_share(model, X, y, steps=200, batch=128):
    """Fraction of train_step time spent in the BatchNorm and Dropout layers' forward/backward."""
    spent = {"layers": 0.0}
    for layer in model.layers:
        if isinstance(layer, (fnn.BatchNorm, fnn.Dropout)):
            for name in ("forward", "backward"):
                original = getattr(layer, name)

                def timed(*args, _original=original, **kwargs):
                    t0 = time.perf_counter()
                    out = _original(*args, **kwargs)
                    spent["layers"] += time.perf_counter() - t0
                    return out
                setattr(layer, name, timed)
    rng = np.random.default_rng(0)
    for _ in range(10):
        rows = rng.integers(0, len(X), batch)
        model.train_step(X[rows], y[rows])
    spent["layers"] = 0.0
    total = 0.0
    for _ in range(steps):
        rows = rng.integers(0, len(X), batch)
        xb, yb = X[rows], y[rows]
        t0 = time.perf_counter()
        model.train_step(xb, yb)
        total += time.perf_counter() - t0
    for layer in model.layers:  # drop the timing wrappers
        layer.__dict__.pop("forward", None)
        layer.__dict__.pop("backward", None)
    return spent["layers"] / total, total / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    fnn.set_num_threads(args.threads)
    (X, y), (Xt, yt) = fnn.datasets.load_fashion_mnist()
    scaler = fnn.Standardizer().fit(X)
    X, Xt = scaler.transform(X), scaler.transform(Xt)
    share, step = layer_share(network(0), X, y)
    print(f"BatchNorm + Dropout kernels: {100 * share:.1f}% of a training step ({step * 1e3:.2f} ms/step, "
          f"batch 128, {args.threads} thread(s)); target <= 10%")
    for seed in range(args.seeds):
        model = network(seed)
        t0 = time.perf_counter()
        model.fit(X, y, epochs=args.epochs, batch_size=128, verbose=0)
        per_epoch = (time.perf_counter() - t0) / args.epochs
        acc = model.evaluate(Xt, yt)["accuracy"]
        print(f"seed {seed}: test accuracy {acc:.4f} (target >= 0.889), {per_epoch:.2f} s/epoch")


if __name__ == "__main__":
    main()
