"""fastnn's GEMM against OpenBLAS (and PyTorch's BLAS) on the products of a training step.

    python bench/gemm_shapes.py [--batches 32,128,256,1024] [--layers 784x512,512x512,512x10]
                                [--dtype float32]

For each batch size and layer (in x out), times the forward product X W (NN), the weight
gradient X^T dZ (TN) and the input gradient dZ W^T (NT) on one thread, each in GFLOP/s,
with the ratio fastnn / OpenBLAS in time (below 1: fastnn is faster). fastnn's GEMM runs
its own AVX-512 kernels where they apply and hands the rest to OpenBLAS (ratio ~1 there).
Each ratio is the median of interleaved pairs, so the machine's drift cancels.
"""
import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastnn._core._blas import gemm_rowmajor


def seconds(fn, flop):
    repeat = max(3, int(2e8 / flop))
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="32,128,256,1024")
    parser.add_argument("--layers", default="784x512,512x512,512x10,784x2048,2048x2048")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"{'batch':>5} {'layer':>10} {'product':>8} {'fastnn GF/s':>12} {'OpenBLAS GF/s':>14} "
          f"{'torch GF/s':>11} {'fastnn/OpenBLAS':>16}")
    with threadpool_limits(1, user_api="blas"):
        for batch in (int(b) for b in args.batches.split(",")):
            for layer in args.layers.split(","):
                k, m = (int(v) for v in layer.split("x"))
                X = rng.standard_normal((batch, k)).astype(dtype)
                W = rng.standard_normal((k, m)).astype(dtype)
                dZ = rng.standard_normal((batch, m)).astype(dtype)
                outs = {"NN": np.empty((batch, m), dtype), "TN": np.empty((k, m), dtype),
                        "NT": np.empty((batch, k), dtype)}
                operands = {"NN": (X, W, False, False), "TN": (X, dZ, True, False), "NT": (dZ, W, False, True)}
                flop = 2.0 * batch * k * m
                for name, (a, b, ta, tb) in operands.items():
                    c = outs[name]
                    ours = lambda: gemm_rowmajor(a, b, c, ta, tb)  # noqa: E731
                    blas = lambda: gemm_rowmajor(a, b, c, ta, tb, blas=True)  # noqa: E731
                    pairs = [(seconds(ours, flop), seconds(blas, flop)) for _ in range(5)]
                    t_ours = statistics.median(p[0] for p in pairs)
                    t_blas = statistics.median(p[1] for p in pairs)
                    ratio = statistics.median(p[0] / p[1] for p in pairs)
                    t_torch = None
                    if torch is not None:
                        ta_, tb_, tc = (torch.from_numpy(v) for v in (a, b, c))
                        ta_ = ta_.t() if ta else ta_
                        tb_ = tb_.t() if tb else tb_
                        t_torch = seconds(lambda: torch.mm(ta_, tb_, out=tc), flop)
                    torch_gf = f"{flop / t_torch / 1e9:11.1f}" if t_torch else f"{'-':>11}"
                    print(f"{batch:>5} {layer:>10} {name:>8} {flop / t_ours / 1e9:12.1f} {flop / t_blas / 1e9:14.1f} "
                          f"{torch_gf} {ratio:16.2f}", flush=True)


if __name__ == "__main__":
    main()
