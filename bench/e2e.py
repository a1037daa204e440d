"""End-to-end Fashion-MNIST: 784-512-256-10 ReLU MLP, batch 128, Adam lr 1e-3, 10 epochs,
1 thread, inputs in [0, 1]; fastnn vs PyTorch eager (fused Adam) vs scikit-learn's
MLPClassifier. Reports seconds per epoch, test accuracy, predict throughput (batch 1024)
and peak RSS; and the time of the epoch's matrix products alone, through fastnn's GEMM (the
floor of fastnn's epoch time, hence of its ratios to the others) and through OpenBLAS (what
scikit-learn's float32 products take). Each library runs in its own worker process (so
that its peak memory is its own); the workers train one epoch each in turn, so the
machine's drift touches all alike; an epoch-time ratio is that of the epochs' total times
(the ratio of seconds per epoch), with the per-epoch ratios printed beside it.

Test accuracy is the mean over --seeds training runs (initialization and shuffling seeded
0, 1, ...): one run's accuracy has a standard deviation of 0.002-0.004 over seeds (5 seeds
of each library), so the difference of two single runs is too noisy to judge a 0.005
target. Seed 0 is the timed run; the others only train and score.

    python bench/e2e.py [--epochs 10] [--threads 1] [--seeds 5]
"""
import argparse
import concurrent.futures
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from common import step_products, target, torch_mlp, verdict

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


def _fastnn_model(seed):
    import fastnn as fnn

    sizes = [784, *HIDDEN]
    layers = [fnn.Dense(a, b, activation="relu", init="he_uniform") for a, b in zip(sizes[:-1], sizes[1:])]
    return fnn.Sequential(layers + [fnn.Dense(sizes[-1], 10)], optimizer=fnn.optim.Adam(lr=1e-3), seed=seed)


def fastnn_trainer(threads, seed):
    """(train one epoch, then: {accuracy, predict_per_s}) for fastnn."""
    import fastnn as fnn

    fnn.set_num_threads(threads)
    (X, y), (Xt, yt) = _data()
    model = _fastnn_model(seed)

    def epoch():   # each fit call shuffles with a new permutation (seeded by the call count)
        model.fit(X, y, epochs=1, batch_size=128, verbose=0)

    def finish():
        return {"accuracy": model.evaluate(Xt, yt)["accuracy"], "predict_per_s": _throughput(model.predict, Xt)}
    return epoch, finish


def products_trainer(threads, seed, blas=False):
    """(one epoch of fastnn's training-step products alone, nothing else; finish): the floor
    of fastnn's epoch time. The products are the step's (per layer X W, X^T dZ and, but for
    the first, dZ W^T) through fastnn's GEMM (or OpenBLAS's with blas=True), on the epoch's
    shuffled batches with the activations and gradients dZ of a network trained one epoch
    (the zeros its GEMM skips are the real ones: blank pixels, ReLU outputs and their
    gradients)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    import fastnn as fnn

    fnn.set_num_threads(threads)
    threadpool_limits(threads)
    kw = {"blas": True} if blas else {"n_threads": threads}
    (X, y), _ = _data()
    model = _fastnn_model(seed)
    model.fit(X, y, epochs=1, batch_size=128, verbose=0)
    Ws = [layer.params["W"] for layer in model.layers]
    biases = [layer.params["b"] for layer in model.layers]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    batches = []   # per batch: each layer's input and dL/dZ (softmax cross-entropy, mean over the batch)
    for start in range(0, len(X), 128):
        rows = order[start:start + 128]
        acts = [X[rows]]
        for W, b in zip(Ws[:-1], biases[:-1]):
            acts.append(np.maximum(acts[-1] @ W + b, 0))
        logits = acts[-1] @ Ws[-1] + biases[-1]
        dz = np.exp(logits - logits.max(axis=1, keepdims=True))
        dz /= dz.sum(axis=1, keepdims=True)
        dz[np.arange(len(rows)), y[rows]] -= 1
        dZs = [dz / len(rows)]
        for W, a in zip(Ws[:0:-1], acts[:0:-1]):
            dZs.insert(0, (dZs[0] @ W.T) * (a > 0))
        batches.append(acts + dZs)
    xs = [np.empty((128, W.shape[0]), W.dtype) for W in Ws]
    dZs = [np.empty((128, W.shape[1]), W.dtype) for W in Ws]
    outs, dWs = [np.empty((128, W.shape[1]), W.dtype) for W in Ws], [np.empty_like(W) for W in Ws]
    dXs = [np.empty((128, W.shape[0]), W.dtype) for W in Ws]

    def epoch():
        """Seconds in the products: each batch's activations and gradients are first copied,
        untimed, into buffers the products then find in cache, as a step's backward pass finds
        what its forward pass wrote."""
        seconds = 0.0
        for arrays in batches:
            m = arrays[0].shape[0]
            batch = [a[:m] for a in xs + dZs]
            for buffer, a in zip(batch, arrays):
                buffer[...] = a
            t0 = time.perf_counter()
            step_products(batch[:len(Ws)], Ws, [a[:m] for a in outs], batch[len(Ws):], dWs, [a[:m] for a in dXs],
                          **kw)
            seconds += time.perf_counter() - t0
        return seconds

    return epoch, dict


def torch_trainer(threads, seed):
    import torch

    torch.manual_seed(seed)
    (X, y), (Xt, yt) = _data()
    X, y, Xt = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(Xt)
    net, step = torch_mlp([784, *HIDDEN, 10], threads, fused=True)

    def epoch():
        perm = torch.randperm(len(X))
        for start in range(0, len(X), 128):
            idx = perm[start:start + 128]
            step(X[idx], y[idx])

    def finish():
        with torch.no_grad():
            return {"accuracy": float((net(Xt).argmax(1).numpy() == yt).mean()),
                    "predict_per_s": _throughput(lambda batch: torch.softmax(net(batch), dim=1), Xt)}
    return epoch, finish


def sklearn_trainer(threads, seed):
    import numpy as np
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    (X, y), (Xt, yt) = _data()
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, batch_size=128, learning_rate_init=1e-3, alpha=0.0,
                        random_state=seed)
    classes = np.unique(y)

    def epoch():   # partial_fit: one shuffled pass, Adam's state kept between calls
        clf.partial_fit(X, y, classes=classes)

    def finish():
        return {"accuracy": clf.score(Xt, yt), "predict_per_s": _throughput(clf.predict_proba, Xt)}
    return epoch, finish


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


WORKERS = {"fastnn": fastnn_trainer, "torch": torch_trainer, "sklearn": sklearn_trainer,
           "products": products_trainer, "openblas": functools.partial(products_trainer, blas=True)}
PRODUCTS_ONLY = {"products": "fastnn's products alone", "openblas": "the same products through OpenBLAS"}


def serve(name, threads, seed=0):
    """Worker process: build the trainer, print "ready"; train one epoch per "run" line on
    stdin and print its seconds (those the epoch returns, if it times itself); on "finish"
    print the results as JSON."""
    epoch, finish = WORKERS[name](threads, seed)
    print("ready", flush=True)
    times = []
    for line in sys.stdin:
        if line.strip() == "run":
            t0 = time.perf_counter()
            counted = epoch()   # the seconds to count, where an epoch times itself
            times.append(time.perf_counter() - t0 if counted is None else counted)
            print(times[-1], flush=True)
        else:
            print(json.dumps({"s_per_epoch": sum(times) / len(times), "epoch_times": times, **finish(),
                              "peak_rss_mb": _peak_rss_mb()}), flush=True)
            return


def _worker(name, threads, seed):
    return subprocess.Popen([sys.executable, __file__, "--worker", name, "--threads", str(threads),
                             "--seed", str(seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _accuracy(name, threads, seed, epochs):
    """Test accuracy of one untimed run (None if its worker failed)."""
    proc = _worker(name, threads, seed)
    out, _ = proc.communicate("run\n" * epochs + "finish\n")
    return json.loads(out.strip().splitlines()[-1])["accuracy"] if proc.returncode == 0 else None


def run_e2e(epochs=10, threads=1, quick=False, seeds=5):
    """Every library in its own worker process (so that its peak memory is its own), the
    workers training one epoch each in turn, so the machine's drift touches all alike;
    then seeds 1.. of each library, untimed, as many at once as there are cores per run.
    Return {library: {s_per_epoch, epoch_times, accuracy (mean over seeds), accuracies,
    predict_per_s, peak_rss_mb}}; "products" and "openblas" (the products alone) have the
    times and RSS."""
    epochs, seeds = (2, 2) if quick else (epochs, seeds)
    workers = {name: _worker(name, threads, 0) for name in WORKERS}
    results = {}
    for name, proc in workers.items():
        if proc.stdout.readline().strip() != "ready":
            results[name] = {"error": f"worker exited with {proc.wait()}"}
    for _ in range(epochs):
        for name, proc in workers.items():
            if name not in results:
                proc.stdin.write("run\n")
                proc.stdin.flush()
                if not proc.stdout.readline():
                    results[name] = {"error": f"worker exited with {proc.wait()}"}
    for name, proc in workers.items():
        if name not in results:
            out, _ = proc.communicate("finish\n")
            results[name] = json.loads(out.strip().splitlines()[-1]) if proc.returncode == 0 else {
                "error": f"worker exited with {proc.returncode}"}
    ok = [name for name in WORKERS if "accuracy" in results[name]]
    with concurrent.futures.ThreadPoolExecutor(max(1, (os.cpu_count() or 1) // threads)) as pool:
        futures = {name: [pool.submit(_accuracy, name, threads, seed, epochs) for seed in range(1, seeds)]
                   for name in ok}
    average_seeds(results, {name: [f.result() for f in fs] for name, fs in futures.items()})
    for name in WORKERS:
        print(f"e2e {name}: {results[name]}", file=sys.stderr, flush=True)
    return results


def average_seeds(results, extra):
    """Give each library in `extra` its accuracies over seeds (seed 0's from results, then
    extra[library]) and their mean as its accuracy; a failed run (None) makes it an error."""
    for name, more in extra.items():
        accs = [results[name]["accuracy"], *more]
        if None in accs:
            results[name] = {"error": f"the seed {accs.index(None)} run failed"}
        else:
            results[name].update(accuracies=accs, accuracy=statistics.fmean(accs))


def _epoch_ratio(a, b):
    """a's seconds per epoch over b's: the ratio of their epochs' total times. The epochs
    ran in turns, so the machine's slow drift touches both alike. Not the median of the
    per-epoch ratios: fastnn's epochs get faster as training makes more ReLU outputs zero
    (about 1.8 s to 1.0 s over 10 epochs, the others' by far less), and that median is the
    middle epochs' ratio, up to 0.03 below the whole run's."""
    return sum(a["epoch_times"]) / sum(b["epoch_times"])


def _per_epoch_ratios(a, b):
    """a's epoch time over b's, epoch by epoch, and their median (the run's trend and spread)"""
    ratios = [x / y for x, y in zip(a["epoch_times"], b["epoch_times"])]
    return " ".join(f"{r:.3f}" for r in ratios) + f" (median {statistics.median(ratios):.4f})"


def report(results):
    lines = [f"{'library':<8} {'s/epoch':>8} {'test acc':>8} {'predict samples/s':>17} {'peak RSS MB':>11}  "
             f"test acc per seed"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<8} error: {r['error']}")
        elif "accuracy" in r:
            lines.append(f"{name:<8} {r['s_per_epoch']:>8.3f} {r['accuracy']:>8.4f} {r['predict_per_s']:>17.0f} "
                         f"{r['peak_rss_mb']:>11.0f}  " + " ".join(f"{a:.4f}" for a in r.get("accuracies", [])))
        else:
            lines.append(f"{name:<8} {r['s_per_epoch']:>8.3f}  ({PRODUCTS_ONLY[name]})")
    f, p = results.get("fastnn", {}), results.get("products", {})
    timed = {name for name, r in results.items() if "s_per_epoch" in r}
    if {"fastnn", "products"} <= timed:
        lines.append(f"epoch time fastnn/its products: {_epoch_ratio(f, p):.4f}")
    for name in [name for name in ("torch", "sklearn") if name in timed]:
        if "products" in timed:
            lines.append(f"epoch time products/{name}: {_epoch_ratio(p, results[name]):.4f} "
                         f"(the least fastnn/{name} its GEMM allows)")
        if "fastnn" in timed:
            lines.append(f"per epoch fastnn/{name}: {_per_epoch_ratios(f, results[name])}")
    lines += [f"{t['target']}: {t['value']:.4f} ({verdict(t)})" for t in targets(results)]
    return "\n".join(lines)


def targets(results):
    """The performance issue's end-to-end targets, judged on the libraries that ran: epoch
    time <= 0.75x PyTorch's and <= 0.35x scikit-learn's, mean test accuracy within 0.005
    of each, predict throughput >= 1.2x PyTorch's, peak RSS no more than PyTorch's."""
    f, t, s = (results.get(k, {}) for k in ("fastnn", "torch", "sklearn"))
    if "s_per_epoch" not in f:
        return []
    out = []
    if "s_per_epoch" in t:
        out += [target("epoch time fastnn/torch", _epoch_ratio(f, t), 0.75),
                target("accuracy |fastnn - torch|", abs(f["accuracy"] - t["accuracy"]), 0.005),
                target("predict throughput fastnn/torch", f["predict_per_s"] / t["predict_per_s"], 1.2,
                       at_most=False),
                target("peak RSS fastnn/torch", f["peak_rss_mb"] / t["peak_rss_mb"], 1.0)]
    if "s_per_epoch" in s:
        out += [target("epoch time fastnn/sklearn", _epoch_ratio(f, s), 0.35),
                target("accuracy |fastnn - sklearn|", abs(f["accuracy"] - s["accuracy"]), 0.005)]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=5, help="training runs averaged for test accuracy")
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        serve(args.worker, args.threads, args.seed)
        return
    print(report(run_e2e(args.epochs, args.threads, seeds=args.seeds)))


if __name__ == "__main__":
    main()
