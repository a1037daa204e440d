"""One optimizer step over 10 M float32 parameters: fastnn's fused Adam vs the memory-bandwidth
floor (a pass that reads p, g, m, v and writes p, m, v) and torch.optim.Adam(fused=True).

    python bench/optim.py [--size 10000000] [--threads 1,2]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import median_time  # noqa: E402

import fastnn as fnn  # noqa: E402
from fastnn._buffers import aligned_zeros  # noqa: E402
from fastnn._core.arrays import bandwidth_probe  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    # 64-byte aligned, as fastnn's models allocate them and as PyTorch's allocator does
    p, g, m, v = (aligned_zeros(args.size, np.float32) for _ in range(4))
    p[...] = rng.standard_normal(args.size)
    g[...] = rng.standard_normal(args.size)
    try:
        import torch
    except ImportError:
        torch = None
    print(f"{'threads':>7} {'fastnn Adam ms':>14} {'floor ms':>9} {'torch fused ms':>14} "
          f"{'fastnn/floor':>12} {'torch/fastnn':>12}")
    for threads in (int(t) for t in args.threads.split(",")):
        opt = fnn.optim.Adam(lr=1e-3)
        with fnn.threads(threads):
            t_fastnn = median_time(lambda: opt.step([p], [g]), args.repeat)
        t_floor = median_time(lambda: bandwidth_probe(p, g, m, v, threads), args.repeat)
        t_torch = None
        if torch is not None:
            torch.set_num_threads(threads)
            tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
            tp.grad = torch.from_numpy(g)
            topt = torch.optim.Adam([tp], lr=1e-3, fused=True)
            t_torch = median_time(topt.step, args.repeat)
        print(f"{threads:>7} {t_fastnn * 1e3:>14.2f} {t_floor * 1e3:>9.2f} "
              f"{(t_torch or float('nan')) * 1e3:>14.2f} {t_fastnn / t_floor:>12.2f} "
              f"{(t_torch / t_fastnn) if t_torch else float('nan'):>12.2f}")


if __name__ == "__main__":
    main()
