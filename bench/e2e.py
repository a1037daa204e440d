"""End-to-end Fashion-MNIST: 784-512-256-10 ReLU MLP, batch 128, Adam lr 1e-3, 10 epochs,
1 thread, inputs in [0, 1]; fastnn vs PyTorch eager (fused Adam) vs scikit-learn's
MLPClassifier. Reports seconds per epoch, test accuracy, predict throughput (batch 1024)
and peak RSS. Each library runs in its own worker process (so that its peak memory is its
own); the workers train one epoch each in turn, and the epoch-time ratios are medians of
per-epoch ratios, so the machine's drift cancels.

    python bench/e2e.py [--epochs 10] [--threads 1]
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from common import target, torch_mlp, verdict

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


def fastnn_trainer(threads):
    """(train one epoch, then: (test accuracy, predict samples/s)) for fastnn."""
    import fastnn as fnn

    fnn.set_num_threads(threads)
    (X, y), (Xt, yt) = _data()
    sizes = [784, *HIDDEN]
    layers = [fnn.Dense(a, b, activation="relu", init="he_uniform") for a, b in zip(sizes[:-1], sizes[1:])]
    model = fnn.Sequential(layers + [fnn.Dense(sizes[-1], 10)], optimizer=fnn.optim.Adam(lr=1e-3), seed=0)

    def epoch():   # each fit call shuffles with a new permutation (seeded by the call count)
        model.fit(X, y, epochs=1, batch_size=128, verbose=0)

    def finish():
        return model.evaluate(Xt, yt)["accuracy"], _throughput(model.predict, Xt)
    return epoch, finish


def torch_trainer(threads):
    import torch

    torch.manual_seed(0)
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
            acc = float((net(Xt).argmax(1).numpy() == yt).mean())
            return acc, _throughput(lambda batch: torch.softmax(net(batch), dim=1), Xt)
    return epoch, finish


def sklearn_trainer(threads):
    import numpy as np
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    (X, y), (Xt, yt) = _data()
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, batch_size=128, learning_rate_init=1e-3, alpha=0.0,
                        random_state=0)
    classes = np.unique(y)

    def epoch():   # partial_fit: one shuffled pass, Adam's state kept between calls
        clf.partial_fit(X, y, classes=classes)

    def finish():
        return clf.score(Xt, yt), _throughput(clf.predict_proba, Xt)
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


WORKERS = {"fastnn": fastnn_trainer, "torch": torch_trainer, "sklearn": sklearn_trainer}


def serve(name, threads):
    """Worker process: build the trainer, print "ready"; train one epoch per "run" line on
    stdin and print its seconds; on "finish" print the results as JSON."""
    epoch, finish = WORKERS[name](threads)
    print("ready", flush=True)
    times = []
    for line in sys.stdin:
        if line.strip() == "run":
            t0 = time.perf_counter()
            epoch()
            times.append(time.perf_counter() - t0)
            print(times[-1], flush=True)
        else:
            acc, throughput = finish()
            print(json.dumps({"s_per_epoch": sum(times) / len(times), "epoch_times": times, "accuracy": acc,
                              "predict_per_s": throughput, "peak_rss_mb": _peak_rss_mb()}), flush=True)
            return


def run_e2e(epochs=10, threads=1, quick=False):
    """Every library in its own worker process (so that its peak memory is its own), the
    workers training one epoch each in turn, so the machine's drift touches all alike;
    return {library: {s_per_epoch, epoch_times, accuracy, predict_per_s, peak_rss_mb}}."""
    epochs = 2 if quick else epochs
    workers = {name: subprocess.Popen([sys.executable, __file__, "--worker", name, "--threads", str(threads)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for name in WORKERS}
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
        print(f"e2e {name}: {results[name]}", file=sys.stderr, flush=True)
    return results


def _epoch_ratio(a, b):
    """Median over epochs of a's epoch time over b's (the epochs ran side by side)."""
    return statistics.median(x / y for x, y in zip(a["epoch_times"], b["epoch_times"]))


def report(results):
    lines = [f"{'library':<8} {'s/epoch':>8} {'test acc':>8} {'predict samples/s':>17} {'peak RSS MB':>11}"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<8} error: {r['error']}")
            continue
        lines.append(f"{name:<8} {r['s_per_epoch']:>8.3f} {r['accuracy']:>8.4f} {r['predict_per_s']:>17.0f} "
                     f"{r['peak_rss_mb']:>11.0f}")
    lines += [f"{t['target']}: {t['value']:.4f} ({verdict(t)})" for t in targets(results)]
    return "\n".join(lines)


def targets(results):
    """The performance issue's end-to-end targets, judged on the libraries that ran: epoch
    time <= 0.75x PyTorch's and <= 0.35x scikit-learn's, test accuracy within 0.005 of
    each, predict throughput >= 1.2x PyTorch's, peak RSS no more than PyTorch's."""
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
    parser.add_argument("--worker", choices=sorted(WORKERS))
    args = parser.parse_args(argv)
    if args.worker:
        serve(args.worker, args.threads)
        return
    print(report(run_e2e(args.epochs, args.threads)))


if __name__ == "__main__":
    main()
