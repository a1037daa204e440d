"""One dense layer forward + backward (784 -> 512, ReLU, batch 256, float32): fastnn's fused
kernels vs the same math in NumPy, and vs the layer's bare GEMMs (the faster of fastnn's GEMM
split over the threads as the layer splits it and OpenBLAS threaded by itself). fastnn's
layer and its own-GEMM products take turns round by round (the machine's drift touches both
alike); NumPy and OpenBLAS run afterwards, after a pause: their threads, spinning between
calls, slowed fastnn's 2-thread layer 5x when interleaved with it.

    python bench/dense.py [--threads 1,2] [--rounds 25]
"""
import argparse
import os
import sys

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(__file__))
from common import median_time, per_round  # noqa: E402

from fastnn._buffers import aligned_zeros  # noqa: E402
from fastnn._core import activations, dense  # noqa: E402
from fastnn._core._blas import gemm_rowmajor  # noqa: E402

RELU = activations.KINDS["relu"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    n, k, m = args.batch, 784, 512
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k)).astype(np.float32)
    W = (rng.standard_normal((k, m)) * 0.05).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    dy0 = rng.standard_normal((n, m)).astype(np.float32)
    # 64-byte aligned, as a model's workspaces and parameters are (fastnn._buffers)
    y, dy, dW, db, dx = (aligned_zeros(shape, np.float32) for shape in ((n, m), (n, m), W.shape, b.shape, x.shape))

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

    print(f"dense {k} -> {m}, ReLU, batch {n}, float32, forward + backward")
    print(f"{'threads':>7} {'fastnn ms':>9} {'numpy ms':>9} {'gemm ms':>8} {'numpy/fastnn':>12} {'fastnn/gemm':>11}")
    for threads in (int(t) for t in args.threads.split(",")):
        fns = [lambda: fastnn_step(threads), lambda: np.copyto(dy, dy0), lambda: gemms(n_threads=threads)]
        with threadpool_limits(1, user_api="blas"):
            per_round(fns, 3, 5)           # warm-up
            fast, copy, own = (np.array(t) for t in per_round(fns, args.rounds, 10))
        fast = fast - copy                 # the step refills dy, which the backward overwrites
        with threadpool_limits(threads, user_api="blas"):
            t_np = median_time(numpy_step, args.rounds)
            t_blas = median_time(lambda: gemms(blas=True), args.rounds)
        t_fast, t_gemm = np.median(fast), min(np.median(own), t_blas)
        print(f"{threads:>7} {t_fast * 1e3:>9.3f} {t_np * 1e3:>9.3f} {t_gemm * 1e3:>8.3f} "
              f"{t_np / t_fast:>12.2f} {t_fast / t_gemm:>11.3f}")


if __name__ == "__main__":
    main()
