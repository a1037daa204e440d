"""Where a training step's time goes: validation, forward, loss, backward, optimizer, timed
inside real consecutive steps (so caches are as cold as in training), next to the bare
GEMMs of each layer (fastnn's GEMM, split over the threads as the layers split it). The
network's Dense layers run as train_step runs them, as one DenseStack, whose backward pass
applies Adam's update (float32): that update is timed in "backward", "optimizer" times
what is left of the step (the step counter; updates of any parameters not updated there).

    python bench/profile_step.py --sizes 784,512,512,10 --batch 256 --threads 2
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastnn as fnn
from fastnn._core._blas import gemm_rowmajor
from fastnn.threads import blas_single_threaded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="784,512,512,10")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], args.batch)
    layers = [fnn.Dense(a, b, activation="relu") for a, b in zip(sizes[:-2], sizes[1:-1])]
    model = fnn.Sequential(layers + [fnn.Dense(sizes[-2], sizes[-1])])
    parts = {}

    def tick(name, t0):
        t = time.perf_counter()
        parts[name] = parts.get(name, 0.0) + t - t0
        return t

    with fnn.threads(args.threads):
        for step in range(args.steps + 5):
            if step == 5:
                parts.clear()
            t = start = time.perf_counter()
            Xc, unchecked = model._check_X_deferred(X)   # as train_step: X's NaN/inf check in layer 1
            targets, _ = model._check_targets(y, args.batch)
            t = tick("validate", t)
            with blas_single_threaded:
                ctx, fused = model._fused_context(args.batch)   # as train_step: updates in the backward pass
                stack = model._dense_stack(args.batch)          # as train_step: a network of Dense layers
                stack.forward(Xc, args.threads, unchecked is not None)
                t = tick("forward", t)
                grad, row_loss = model._loss_buffers(args.batch)
                model.loss(stack.output, targets, grad, row_loss, None, args.threads)
                t = tick("loss", t)
                stack.backward(grad, args.threads, ctx.scalars)
                t = tick("backward", t)
                model._apply_step(fused)
                t = tick("optimizer", t)
            parts["total"] = parts.get("total", 0.0) + time.perf_counter() - start
    gemm = {"forward": 0.0, "backward": 0.0}
    with threadpool_limits(1, user_api="blas"):
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            A = rng.standard_normal((args.batch, a)).astype(np.float32)
            W = rng.standard_normal((a, b)).astype(np.float32)
            Z, dW, dX = np.empty((args.batch, b), np.float32), np.empty_like(W), np.empty_like(A)
            calls = [("forward", lambda: gemm_rowmajor(A, W, Z, n_threads=args.threads)),
                     ("backward", lambda: gemm_rowmajor(A, Z, dW, True, False, n_threads=args.threads))]
            if i:
                calls.append(("backward", lambda: gemm_rowmajor(Z, W, dX, False, True, n_threads=args.threads)))
            for phase, call in calls:
                for _ in range(3):
                    call()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    call()
                gemm[phase] += (time.perf_counter() - t0) / args.steps
    for name, seconds in parts.items():
        extra = f"   of which GEMMs alone {gemm[name] * 1e3:.3f} ms" if name in gemm else ""
        print(f"{name:10s} {seconds / args.steps * 1e3:8.3f} ms{extra}")
    print(f"{'gemms':10s} {sum(gemm.values()) * 1e3:8.3f} ms  (the same products alone, fastnn's GEMM split over "
          f"{args.threads} thread(s) as the layers split it)")


if __name__ == "__main__":
    main()
