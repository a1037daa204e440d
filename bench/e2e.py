"""End-to-end Fashion-MNIST: 784-512-256-10 ReLU MLP, batch 128, Adam lr 1e-3, 10 epochs,
1 thread, inputs in [0, 1]; fastnn vs PyTorch eager (fused Adam) vs scikit-learn's
MLPClassifier. Reports seconds per epoch, test accuracy, predict throughput (batch 1024)
and peak RSS. Each library runs in its own subprocess so that its peak memory is its own.

    python bench/e2e.py [--epochs 10] [--threads 1]
"""
import argparse
import json
import resource
import subprocess
import sys
import time


HIDDEN = (512, 256)


def _data():
    import fastnn as fnn

    return fnn.datasets.load_fashion_mnist()


def _throughput(predict, X, batch=1024, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for start in range(0, len(X), batch):
            predict(X[start:start + batch])
        best = min(best, time.perf_counter() - t0)
    return len(X) / best


def run_fastnn(epochs, threads):
    import fastnn as fnn

    fnn.set_num_threads(threads)
    (X, y), (Xt, yt) = _data()
    sizes = [784, *HIDDEN]
    layers = [fnn.Dense(a, b, activation="relu", init="he_uniform") for a, b in zip(sizes[:-1], sizes[1:])]
    model = fnn.Sequential(layers + [fnn.Dense(sizes[-1], 10)], optimizer=fnn.optim.Adam(lr=1e-3), seed=0)
    t0 = time.perf_counter()
    model.fit(X, y, epochs=epochs, batch_size=128, verbose=0)
    elapsed = time.perf_counter() - t0
    acc = model.evaluate(Xt, yt)["accuracy"]
    return elapsed / epochs, acc, _throughput(model.predict, Xt)


def run_torch(epochs, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    (X, y), (Xt, yt) = _data()
    X, y, Xt = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(Xt)
    sizes = [784, *HIDDEN]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(X))
        for start in range(0, len(X), 128):
            idx = perm[start:start + 128]
            opt.zero_grad(set_to_none=False)
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((net(Xt).argmax(1).numpy() == yt).mean())

        def predict(batch):
            return torch.softmax(net(batch), dim=1)
        throughput = _throughput(predict, Xt)
    return elapsed / epochs, acc, throughput


def run_sklearn(epochs, threads):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    (X, y), (Xt, yt) = _data()
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, batch_size=128, learning_rate_init=1e-3,
                        max_iter=epochs, alpha=0.0, tol=0.0, n_iter_no_change=epochs + 1, random_state=0)
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(X, y)
        elapsed = time.perf_counter() - t0
        acc = clf.score(Xt, yt)
        throughput = _throughput(clf.predict_proba, Xt)
    return elapsed / epochs, acc, throughput


def _peak_rss_mb():
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from the
    parent across fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


WORKERS = {"fastnn": run_fastnn, "torch": run_torch, "sklearn": run_sklearn}


def run_e2e(epochs=10, threads=1, quick=False):
    """Run every library in a subprocess; return {library: {s_per_epoch, accuracy, ...}}."""
    epochs = 2 if quick else epochs
    results = {}
    for name in WORKERS:
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--epochs", str(epochs),
                               "--threads", str(threads)], capture_output=True, text=True)
        if proc.returncode != 0:
            results[name] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
        else:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"e2e {name}: {results[name]}", file=sys.stderr, flush=True)
    return results


def report(results):
    f = results.get("fastnn", {})
    lines = [f"{'library':<8} {'s/epoch':>8} {'test acc':>8} {'predict samples/s':>17} {'peak RSS MB':>11}"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<8} error: {r['error']}")
            continue
        lines.append(f"{name:<8} {r['s_per_epoch']:>8.3f} {r['accuracy']:>8.4f} {r['predict_per_s']:>17.0f} "
                     f"{r['peak_rss_mb']:>11.0f}")
    t, s = results.get("torch", {}), results.get("sklearn", {})
    if "s_per_epoch" in f and "s_per_epoch" in t:
        lines.append(f"fastnn/torch epoch time {f['s_per_epoch'] / t['s_per_epoch']:.2f} (target <= 0.75), "
                     f"predict throughput fastnn/torch {f['predict_per_s'] / t['predict_per_s']:.2f} (>= 1.2), "
                     f"peak RSS fastnn/torch {f['peak_rss_mb'] / t['peak_rss_mb']:.2f} (<= 1), "
                     f"accuracy fastnn - torch {f['accuracy'] - t['accuracy']:+.4f}")
    if "s_per_epoch" in f and "s_per_epoch" in s:
        lines.append(f"fastnn/sklearn epoch time {f['s_per_epoch'] / s['s_per_epoch']:.2f} (target <= 0.35), "
                     f"accuracy fastnn - sklearn {f['accuracy'] - s['accuracy']:+.4f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", choices=sorted(WORKERS))
    args = parser.parse_args(argv)
    if args.worker:
        s_per_epoch, acc, throughput = WORKERS[args.worker](args.epochs, args.threads)
        peak = _peak_rss_mb()
        print(json.dumps({"s_per_epoch": s_per_epoch, "accuracy": acc, "predict_per_s": throughput,
                          "peak_rss_mb": peak}))
        return
    print(report(run_e2e(args.epochs, args.threads)))


if __name__ == "__main__":
    main()
