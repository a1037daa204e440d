"""scikit-learn's cross_val_score on digits (5 folds): fastnn.sklearn.MLPClassifier vs
sklearn.neural_network.MLPClassifier with the same settings, in one run.

    python bench/sklearn_cv.py [--threads 1] [--max-iter 200]
"""
import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.neural_network import MLPClassifier as SklearnMLP
from threadpoolctl import threadpool_limits

from fastnn.sklearn import MLPClassifier as FastnnMLP


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    settings = dict(hidden_layer_sizes=(100,), max_iter=args.max_iter, batch_size=200, learning_rate_init=1e-3)
    rows = {}
    for name, cls, extra in [("fastnn", FastnnMLP, {"n_threads": args.threads}), ("sklearn", SklearnMLP, {})]:
        times, scores = [], []
        for seed in range(args.seeds):
            with threadpool_limits(args.threads), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                scores.append(cross_val_score(cls(random_state=seed, **settings, **extra), X, y, cv=5).mean())
                times.append(time.perf_counter() - t0)
        rows[name] = (float(np.median(times)), float(np.mean(scores)))
    print(f"digits, 5-fold cross_val_score, MLPClassifier{settings}, {args.threads} thread(s), "
          f"{args.seeds} seeds")
    print(f"{'library':<8} {'seconds':>8} {'accuracy':>9}")
    for name, (t, acc) in rows.items():
        print(f"{name:<8} {t:>8.2f} {acc:>9.4f}")
    print(f"speedup sklearn/fastnn {rows['sklearn'][0] / rows['fastnn'][0]:.2f} (target >= 2), "
          f"accuracy fastnn - sklearn {rows['fastnn'][1] - rows['sklearn'][1]:+.4f} (target >= 0)")


if __name__ == "__main__":
    main()
