"""One dense layer forward + backward (784 -> 512, ReLU, batch 256, float32): fastnn's fused
kernels vs the same math in NumPy, and vs the layer's bare GEMMs (the faster of fastnn's GEMM
split over the threads as the layer splits it and OpenBLAS threaded by itself), in one run.

    python bench/dense.py [--threads 1,2]
"""
import argparse
import os
import sys

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(__file__))
from common import median_time  # noqa: E402

from fastnn._core import activations, dense  # noqa: E402
from fastnn._core._blas import gemm_rowmajor  # noqa: E402

RELU = activations.KINDS["relu"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args(argv)
    n, k, m = args.batch, 784, 512
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k)).astype(np.float32)
    W = (rng.standard_normal((k, m)) * 0.05).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    dy0 = rng.standard_normal((n, m)).astype(np.float32)
    y, dy, dW, db, dx = (np.empty((n, m), np.float32), np.empty((n, m), np.float32),
                         np.empty_like(W), np.empty_like(b), np.empty_like(x))

    def fastnn_step(threads):
        dense.dense_forward(x, W, b, None, y, RELU, 0.0, threads)
        dy[...] = dy0
        dense.dense_backward(x, W, None, y, dy, dW, db, dx, RELU, 0.0, threads)

    def numpy_step():
        z = x @ W + b
        out = np.maximum(z, 0)
        dz = dy0 * (out > 0)
        return x.T @ dz, dz.sum(axis=0), dz @ W.T

    def gemms(**kw):
        gemm_rowmajor(x, W, y, **kw)
        gemm_rowmajor(x, dy, dW, True, False, **kw)
        gemm_rowmajor(dy, W, dx, False, True, **kw)

    copy = median_time(lambda: np.copyto(dy, dy0), args.repeat)
    print(f"dense {k} -> {m}, ReLU, batch {n}, float32, forward + backward")
    print(f"{'threads':>7} {'fastnn ms':>9} {'numpy ms':>9} {'gemm ms':>8} {'numpy/fastnn':>12} {'fastnn/gemm':>11}")
    for threads in (int(t) for t in args.threads.split(",")):
        with threadpool_limits(1, user_api="blas"):
            t_fast = median_time(lambda: fastnn_step(threads), args.repeat) - copy
            t_own = median_time(lambda: gemms(n_threads=threads), args.repeat)
        with threadpool_limits(threads, user_api="blas"):
            t_np = median_time(numpy_step, args.repeat)
            t_gemm = min(t_own, median_time(lambda: gemms(blas=True), args.repeat))
        print(f"{threads:>7} {t_fast * 1e3:>9.3f} {t_np * 1e3:>9.3f} {t_gemm * 1e3:>8.3f} "
              f"{t_np / t_fast:>12.2f} {t_fast / t_gemm:>11.3f}")


if __name__ == "__main__":
    main()
